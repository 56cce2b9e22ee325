"""The sweeper's in-process launcher: the same job configs and files as Hydra's basic launcher."""

import os
from pathlib import Path

import pytest
import yaml
from hydra import initialize_config_module
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus
from hydra.types import HydraContext, RunMode
from omegaconf import OmegaConf, open_dict

from malahydra.search.inprocess import InProcessLauncher, JobConfigs, is_basic_launcher

TRIAL_JOB = [
    "data.dir=/data/Be2", "sweeps=mala_standard", "training.max_epochs=1", "training.learning_rate=0.001",
    "model.hidden_widths.0=29", "model.activations.1='Sigmoid'", "training.seed=17", "+trial.number=3",
    "+trial.repeat=0", "+trial.storage='sqlite:/runs/optuna.db'", "+trial.report=false", "hydra.sweep.subdir='3'",
]
OVERRIDE_CASES = {
    "trial job": TRIAL_JOB,
    "group choices": ["model=feedforward", "storage=journal", "training.max_epochs=2", "hydra.sweep.subdir=a"],
    "dict value for a group": ["training={max_epochs: 4, learning_rate: 0.01}", "hydra.sweep.subdir=b"],
    "delete and force add": ["~training.shuffle", "++training.extra=5", "++model.hidden_widths.0=7"],
    "no overrides": [],
    "sweep's own overrides first": ["training.max_epochs=3", "training.learning_rate=0.01", "+trial.number=1",
                                     "hydra.sweep.subdir=x"],
    "sweep's own overrides and a group": ["training.max_epochs=3", "model=feedforward", "hydra.sweep.subdir=y"],
}


@pytest.fixture
def sweep_context(tmp_path):
    """Hydra's config loader and the composed config of a `-m` run, as a sweeper receives them."""
    with initialize_config_module(config_module="malahydra.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration(
            config_name="config", run_mode=RunMode.MULTIRUN,
            overrides=[f"hydra.sweep.dir={tmp_path / 'sweep'}", "training.max_epochs=3", "hydra.sweeper.n_trials=4",
                       "training.learning_rate=interval(0.001, 0.1)"],
        )
        yield HydraContext(config_loader=loader, callbacks=Callbacks(master)), master


def full_composition(context: HydraContext, master, overrides: list[str]):
    return context.config_loader.load_sweep_config(master, list(overrides))


@pytest.mark.parametrize("overrides", OVERRIDE_CASES.values(), ids=OVERRIDE_CASES.keys())
def test_job_config_equals_full_composition(sweep_context, overrides):
    context, master = sweep_context
    configs = JobConfigs(context, master)

    fast = configs.compose(overrides)
    expected = full_composition(context, master, overrides)

    assert OmegaConf.to_container(fast, resolve=False) == OmegaConf.to_container(expected, resolve=False)


def test_job_configs_compose_once_per_group_choice(sweep_context):
    context, master = sweep_context
    configs = JobConfigs(context, master)

    first = configs.compose([*TRIAL_JOB, "training.learning_rate=0.5"])
    second = configs.compose([*TRIAL_JOB, "training.learning_rate=0.25"])
    configs.compose(["model=feedforward"])

    assert len(configs.composed) == 2
    assert first.training.learning_rate == 0.5
    assert second.training.learning_rate == 0.25
    assert second.hydra.overrides.task[-1] == "training.learning_rate=0.25"


def test_job_config_from_sweep_config_composes_nothing(sweep_context):
    context, master = sweep_context
    configs = JobConfigs(context, master)

    config = configs.compose(["training.max_epochs=3", "training.learning_rate=0.01", "hydra.sweep.subdir=x"])

    assert configs.composed == {}
    assert config.training.learning_rate == 0.01


def test_job_config_is_a_private_copy(sweep_context):
    context, master = sweep_context
    configs = JobConfigs(context, master)

    first = configs.compose(TRIAL_JOB)
    with open_dict(first):
        first.training.max_epochs = 99
        first.model.hidden_widths[0] = 1
    second = configs.compose(TRIAL_JOB)

    assert second.training.max_epochs == 1
    assert second.model.hidden_widths[0] == 29


def test_job_config_sweep_override_rejected_as_by_hydra(sweep_context):
    context, master = sweep_context
    configs = JobConfigs(context, master)

    with pytest.raises(Exception) as fast:
        configs.compose(["training.max_epochs=1,2"])
    with pytest.raises(Exception) as full:
        full_composition(context, master, ["training.max_epochs=1,2"])

    assert type(fast.value) is type(full.value)
    assert str(fast.value) == str(full.value)


class RecordingTask:
    """A task function that records the HydraConfig, config and cwd of each job, and raises for a learning rate of 0."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def __call__(self, cfg) -> float:
        hydra = HydraConfig.get()
        self.seen.append({
            "output_dir": hydra.runtime.output_dir, "num": hydra.job.num, "has_hydra": "hydra" in cfg,
            "read_only": OmegaConf.is_readonly(hydra),
            "cwd": os.getcwd(), "trial": OmegaConf.to_container(cfg.get("trial", {})),
        })
        if cfg.training.learning_rate == 0:
            raise ValueError("learning rate 0")
        return float(cfg.training.learning_rate)


def launch(sweep_context, jobs: list[list[str]], task: RecordingTask, first_index: int = 0):
    context, master = sweep_context
    launcher = InProcessLauncher()
    launcher.setup(hydra_context=context, task_function=task, config=master)
    return launcher.launch(jobs, initial_job_idx=first_index)


def job(number: int, learning_rate: float) -> list[str]:
    return [f"training.learning_rate={learning_rate}", f"+trial.number={number}", f"hydra.sweep.subdir=t{number}"]


def test_launch_runs_jobs_in_their_directories(sweep_context):
    _, master = sweep_context
    sweep_dir = Path(master.hydra.sweep.dir)
    task = RecordingTask()
    cwd = os.getcwd()

    returns = launch(sweep_context, [job(0, 0.1), job(1, 0.2)], task, first_index=5)

    assert [r.status for r in returns] == [JobStatus.COMPLETED, JobStatus.COMPLETED]
    assert [r.return_value for r in returns] == [0.1, 0.2]
    assert [seen["output_dir"] for seen in task.seen] == [str(sweep_dir / "t0"), str(sweep_dir / "t1")]
    assert [seen["num"] for seen in task.seen] == [5, 6]
    assert not any(seen["has_hydra"] for seen in task.seen)
    assert all(seen["read_only"] for seen in task.seen)
    assert [seen["trial"] for seen in task.seen] == [{"number": 0}, {"number": 1}]
    assert all(seen["cwd"] == cwd for seen in task.seen)
    assert os.getcwd() == cwd
    assert not HydraConfig.initialized()


def test_launch_records_failed_job(sweep_context):
    task = RecordingTask()

    returns = launch(sweep_context, [job(0, 0.0), job(1, 0.3)], task)

    assert returns[0].status == JobStatus.FAILED
    assert isinstance(returns[0]._return_value, ValueError)
    assert returns[1].status == JobStatus.COMPLETED
    assert returns[1].return_value == 0.3


def test_launch_writes_hydra_files_as_hydra(sweep_context):
    context, master = sweep_context
    overrides = job(2, 0.05)

    launch(sweep_context, [overrides], RecordingTask(), first_index=2)

    expected = full_composition(context, master, overrides)
    with open_dict(expected):
        expected.hydra.job.id = 2
        expected.hydra.job.num = 2
        expected.hydra.runtime.output_dir = str(Path(master.hydra.sweep.dir) / "t2")
    written = Path(master.hydra.sweep.dir) / "t2" / ".hydra"
    task_part = OmegaConf.masked_copy(expected, [key for key in expected if key != "hydra"])
    assert yaml.safe_load((written / "config.yaml").read_text()) == yaml.safe_load(OmegaConf.to_yaml(task_part))
    assert yaml.safe_load((written / "hydra.yaml").read_text()) == yaml.safe_load(
        OmegaConf.to_yaml(OmegaConf.masked_copy(expected, "hydra")))
    assert yaml.safe_load((written / "overrides.yaml").read_text()) == overrides[:2]


def test_basic_launcher_recognized():
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    class OwnLauncher(BasicLauncher):
        pass

    assert is_basic_launcher(BasicLauncher())
    assert not is_basic_launcher(OwnLauncher())
    assert not is_basic_launcher(InProcessLauncher())
