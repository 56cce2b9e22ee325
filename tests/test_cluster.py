"""Pure parts of the cluster launcher: scontrol parsing, job watching decisions, presets.

The watcher tests feed it controller replies and advance a clock by hand, because the
cases they cover (a job purged from the controller, a controller that does not reply)
cannot be produced on demand on a real cluster. test_slurm_launcher.py covers the same
code against SLURM itself.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from hydra_plugins.malahydra_launcher.launcher import MalahydraSlurmLauncher
from malahydra.cluster.failures import SlurmJobError, ended_without_result
from malahydra.cluster.slurm import ControllerReply, SlurmJobState, expand_task_ids, parse_show_job
from malahydra.cluster.watch import LOST_AFTER_POLLS, PREEMPTED_FINAL_S, SlurmJobWatcher
from malahydra.errors import ConfigurationError

# Shortened `scontrol --oneliner show job 55` output of SLURM 22.05 for an array with one
# finished task and three tasks that have not started.
ARRAY_OUTPUT = (
    "JobId=55 ArrayJobId=55 ArrayTaskId=1-3%1 ArrayTaskThrottle=1 JobName=wrap JobState=PENDING "
    "Reason=JobArrayTaskLimit Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 ExitCode=0:0 "
    "TRES=cpu=1,mem=512M,node=1,billing=1 StdOut=/tmp/a-55_4294967294.txt\n"
    "JobId=56 ArrayJobId=55 ArrayTaskId=0 JobName=wrap JobState=CANCELLED Reason=None Requeue=1 "
    "Restarts=2 ExitCode=0:15 StdOut=/tmp/a-55_0.txt\n"
)


@pytest.mark.parametrize(
    ("spec", "tasks"),
    [("3", [3]), ("1-3%2", [1, 2, 3]), ("0,4-5", [0, 4, 5]), ("0-8:4", [0, 4, 8])],
)
def test_expand_task_ids(spec: str, tasks: list[int]) -> None:
    assert expand_task_ids(spec) == tasks


def test_parse_show_job_array() -> None:
    jobs = parse_show_job(ARRAY_OUTPUT)

    assert sorted(jobs) == ["55_0", "55_1", "55_2", "55_3"]
    assert jobs["55_2"].state == "PENDING"
    assert jobs["55_2"].reason == "JobArrayTaskLimit"
    assert jobs["55_0"] == SlurmJobState("55_0", "CANCELLED", None, "0:15", 2)


def test_parse_show_job_plain() -> None:
    jobs = parse_show_job("JobId=70 JobName=wrap JobState=RUNNING Reason=None Restarts=0 ExitCode=0:0\n")

    assert jobs == {"70": SlurmJobState("70", "RUNNING", None, "0:0", 0)}


class ScriptedController:
    """Controller replies in order; the last one repeats."""

    def __init__(self, *replies: ControllerReply):
        self.replies = list(replies)

    def __call__(self, job_ids: list[str]) -> ControllerReply:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def reply(**states: str) -> ControllerReply:
    return ControllerReply({job_id: SlurmJobState(job_id, state) for job_id, state in states.items()}, frozenset({"9"}))


def fake_job(tmp_path: Path, task: int) -> SimpleNamespace:
    folder = tmp_path / f"9_{task}"
    folder.mkdir()
    paths = SimpleNamespace(
        result_pickle=folder / f"9_{task}_0_result.pkl", stdout=folder / f"9_{task}_0_log.out", stderr=folder / f"9_{task}_0_log.err"
    )
    return SimpleNamespace(job_id=f"9_{task}", paths=paths)


def watch(tmp_path: Path, controller: ScriptedController, jobs: int = 1, grace_s: float = 5.0, polls: int = 50):
    """Run a watcher with a clock that advances one second per poll; return it after `polls` polls or the end."""
    clock = SimpleNamespace(now=0.0)
    watcher = SlurmJobWatcher(
        [fake_job(tmp_path, task) for task in range(jobs)],
        poll_interval_s=1.0,
        result_grace_s=grace_s,
        clock=lambda: clock.now,
        sleep=lambda seconds: None,
        query=controller,
    )
    for _ in range(polls):
        watcher.poll()
        if not watcher.unfinished:
            break
        clock.now += 1.0
    return watcher, clock.now


def test_watcher_fails_cancelled_job_after_grace(tmp_path: Path) -> None:
    watcher, elapsed = watch(tmp_path, ScriptedController(reply(**{"9_0": "RUNNING"}), reply(**{"9_0": "CANCELLED"})))

    error = watcher.outcomes[0]
    assert isinstance(error, SlurmJobError)
    assert error.state == "CANCELLED"
    assert str(tmp_path / "9_0" / "9_0_0_log.err") in str(error)
    assert "SLURM job 9_0 ended CANCELLED" in str(error)
    assert elapsed == 1.0 + 5.0


def test_watcher_takes_late_result(tmp_path: Path) -> None:
    controller = ScriptedController(reply(**{"9_0": "COMPLETED"}))
    watcher, _ = watch(tmp_path, controller, polls=2)
    (tmp_path / "9_0" / "9_0_0_result.pkl").write_bytes(b"")
    watcher.poll()

    assert watcher.outcomes == {0: None}


def test_watcher_waits_through_requeue(tmp_path: Path) -> None:
    controller = ScriptedController(
        reply(**{"9_0": "RUNNING"}), reply(**{"9_0": "COMPLETING"}), reply(**{"9_0": "PENDING"}), reply(**{"9_0": "RUNNING"})
    )
    watcher, _ = watch(tmp_path, controller, polls=20)

    assert watcher.unfinished == [0]


def test_watcher_preempted_final_late(tmp_path: Path) -> None:
    watcher, elapsed = watch(tmp_path, ScriptedController(reply(**{"9_0": "PREEMPTED"})), polls=200)

    assert watcher.outcomes[0].state == "PREEMPTED"
    assert elapsed == PREEMPTED_FINAL_S


def test_watcher_lost_job(tmp_path: Path) -> None:
    watcher, elapsed = watch(tmp_path, ScriptedController(reply(**{"9_0": "RUNNING"}), reply()), grace_s=0.0)

    assert watcher.outcomes[0].state == "LOST"
    assert elapsed == LOST_AFTER_POLLS


def test_watcher_keeps_waiting_without_controller(tmp_path: Path) -> None:
    silent = ControllerReply({}, frozenset(), error="scontrol show job 9 failed: Unable to contact slurm controller")
    watcher, _ = watch(tmp_path, ScriptedController(silent), polls=20)

    assert watcher.unfinished == [0]


def test_watcher_isolates_one_failure(tmp_path: Path) -> None:
    controller = ScriptedController(reply(**{"9_0": "RUNNING", "9_1": "OUT_OF_MEMORY"}))
    watcher, _ = watch(tmp_path, controller, jobs=2, grace_s=1.0, polls=3)
    (tmp_path / "9_0" / "9_0_0_result.pkl").write_bytes(b"")
    watcher.poll()

    assert watcher.outcomes[0] is None
    assert watcher.outcomes[1].state == "OUT_OF_MEMORY"


def test_slurm_job_error_pickles() -> None:
    error = ended_without_result("9_1", "TIMEOUT", stdout="/l/out", stderr="/l/err", reason="TimeLimit", exit_code="0:15")

    copy = pickle.loads(pickle.dumps(error))

    assert str(copy) == str(error)
    assert (copy.job_id, copy.state, copy.stderr, copy.reason) == ("9_1", "TIMEOUT", "/l/err", "TimeLimit")
    assert "\n" not in str(error)


def compose_with_hydra(overrides: list[str]):
    """Compose the root config with its hydra node, and make `${hydra:...}` resolvable."""
    with initialize_config_module(config_module="malahydra.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.usefixtures("hydra_restore_singletons")
@pytest.mark.parametrize(
    ("preset", "target", "cpus", "gpus"),
    [
        ("slurm", "MalahydraSlurmLauncher", 2, None),
        ("slurm_gpu", "MalahydraSlurmLauncher", 4, 1),
        ("local", "MalahydraLocalLauncher", 1, 0),
    ],
)
def test_preset_selects_launcher(preset: str, target: str, cpus: int, gpus: int | None) -> None:
    cfg = compose_with_hydra([f"cluster={preset}"])

    assert cfg.hydra.launcher._target_.endswith(target)
    assert cfg.hydra.launcher.cpus_per_task == cpus
    assert cfg.hydra.launcher.gpus_per_node == gpus
    assert cfg.training.num_threads == cpus


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_preset_takes_site_overrides() -> None:
    cfg = compose_with_hydra(
        [
            "cluster=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.account=abc",
            "hydra.launcher.timeout_min=240",
            "hydra.launcher.cpus_per_task=8",
            "hydra.launcher.setup=[module load cuda]",
        ]
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)

    assert (launcher["partition"], launcher["account"], launcher["timeout_min"]) == ("gpu", "abc", 240)
    assert launcher["setup"] == ["module load cuda"]
    assert launcher["max_num_timeout"] == 3
    assert cfg.training.num_threads == 8


def test_launcher_rejects_poll_interval() -> None:
    with pytest.raises(ConfigurationError, match=r"hydra.launcher.poll_interval_s=0"):
        MalahydraSlurmLauncher(poll_interval_s=0, submitit_folder="/tmp/x")

