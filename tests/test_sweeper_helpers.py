"""Pure helpers of the search loop, tested without launching jobs."""

import math
import os
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from malahydra.search.errors import SearchConfigError
from malahydra.search.methods import derived_seed, make_pruner, make_sampler
from malahydra.search.results import RESULTS_FILE, TRIALS_FILE, best_trial, summarize, trial_rows, write_results
from malahydra.search.space import build_search_space, parse_overrides
from malahydra.search.storage import describe_storage, storage_reference
from malahydra.search.sweeper import effective_budget, validate_settings
from malahydra.search.trials import (
    JobOutcome,
    combine_values,
    driver_identity,
    driver_is_alive,
    failure_limit_exceeded,
    job_outcome_from_record,
    job_outcome_from_return,
    job_overrides,
    trial_outcome,
    trial_subdir,
    trials_to_launch,
)

SETTINGS = {"seed_key": "training.seed", "metric": "band_energy", "metric_key": "training.metric",
            "study_name": "s", "seed": 3}


def space(entries: dict):
    return build_search_space(parse_overrides(entries, [])[0])


def test_combine_mean_std_median():
    assert combine_values([1.0, 2.0, 3.0], "mean") == 2.0
    assert combine_values([1.0, 2.0, 9.0], "median") == 2.0
    assert math.isclose(combine_values([1.0, 3.0], "mean_std"), 3.0)


def test_nan_and_inf_objectives_fail():
    assert job_outcome_from_return("COMPLETED", math.nan).reason == "objective is nan"
    assert job_outcome_from_return("COMPLETED", math.inf).state == "fail"
    assert job_outcome_from_return("COMPLETED", "x").state == "fail"


def test_exception_and_pruning_outcomes():
    assert job_outcome_from_return("FAILED", RuntimeError("boom\nmore")) == JobOutcome("fail", reason="RuntimeError: boom")
    assert job_outcome_from_return("FAILED", optuna.TrialPruned("at 3")).state == "pruned"


def test_data_error_stops_search():
    from malahydra.errors import ConfigurationError, DataError

    assert job_outcome_from_return("FAILED", DataError("no data")).stops_search
    assert not job_outcome_from_return("FAILED", ConfigurationError("bad value")).stops_search
    assert not job_outcome_from_return("FAILED", ValueError("x")).stops_search
    record = {"state": "failed", "reason": "DataError: no data", "stops_search": True}
    assert job_outcome_from_record(record).stops_search
    assert not job_outcome_from_record({"state": "failed", "reason": "ValueError: x"}).stops_search


def test_job_without_record_fails():
    assert "without a result" in job_outcome_from_record(None).reason
    assert job_outcome_from_record(None, launcher_error="UncompletedJobError: killed").reason.endswith(
        "launcher error: UncompletedJobError: killed")
    assert job_outcome_from_record({"state": "returned", "value": 0.5}) == JobOutcome("complete", 0.5)
    assert job_outcome_from_record({"state": "returned", "value": "nan"}).state == "fail"


def test_trial_outcome_fail_wins():
    jobs = [JobOutcome("complete", 1.0), JobOutcome("pruned", reason="p"), JobOutcome("fail", reason="f")]
    outcome = trial_outcome(jobs, "mean")
    assert outcome.state == "fail"
    assert outcome.reason == "repeat 2: f"
    assert trial_outcome([JobOutcome("complete", 1.0), JobOutcome("complete", 3.0)], "mean").value == 2.0


def test_budget_counts_complete_and_running():
    assert trials_to_launch(6, 4, 1, 4) == 1
    assert trials_to_launch(6, 6, 0, 1) == 0
    assert trials_to_launch(6, 0, 0, 2) == 2


def test_failure_limit():
    assert not failure_limit_exceeded(3, 6, 0.5)
    assert failure_limit_exceeded(4, 6, 0.5)


def test_subdir_by_trial_number():
    assert trial_subdir(7, 0, 1) == "7"
    assert trial_subdir(7, 2, 3) == "7/repeat_2"


def test_job_overrides_carry_trial_context():
    parameters = space({"training.learning_rate": "tag(log, interval(1e-7, 1e-2))", "model.activations.0": "choice(ReLU)"})
    overrides = job_overrides(params={"training.learning_rate": 1e-3, "model.activations.0": "ReLU"}, space=parameters,
                              fixed=["data.dir=/d"], number=4, repeat=1, repeats=2, seed=99, settings=SETTINGS,
                              storage_reference="env:URL", report=False)
    assert overrides == ["data.dir=/d", "training.learning_rate=0.001", "model.activations.0='ReLU'",
                         "training.seed=99", "training.metric='band_energy'", "+trial.number=4", "+trial.repeat=1",
                         "+trial.study_name='s'", "+trial.storage='env:URL'", "+trial.report=false",
                         "hydra.sweep.subdir='4/repeat_1'"]


def test_derived_seeds_distinct():
    seeds = {derived_seed(1, trial, repeat) for trial in range(50) for repeat in range(3)}
    assert len(seeds) == 150
    assert derived_seed(1, 2, 0) == derived_seed(1, 2, 0)
    assert all(0 <= s < 2**31 for s in seeds)


def dead_driver() -> str:
    """Return the identity of a driver process on this host that has exited."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return f"{driver_identity().split(':')[0]}:{finished.stdout.strip()}:1"


def test_dead_driver_detected():
    assert not driver_is_alive(dead_driver())
    assert driver_is_alive(driver_identity())
    assert driver_is_alive("elsewhere:1:1")
    assert not driver_is_alive(None)


def test_zombie_driver_counts_as_dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        # Not reaped yet: the exited child stays a zombie until wait() below.
        while time.monotonic() < deadline and open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)
        host = driver_identity().split(":")[0]
        assert not driver_is_alive(f"{host}:{child.pid}:?")
    finally:
        child.wait()


def test_unknown_sampler_and_pruner():
    with pytest.raises(SearchConfigError, match="Unknown sampler 'cmaes'"):
        make_sampler("cmaes", {}, None, [])
    with pytest.raises(SearchConfigError, match="Unknown pruner 'asha'"):
        make_pruner("asha", {})
    with pytest.raises(SearchConfigError, match="sampler_options for tpe"):
        make_sampler("tpe", {"bogus": 1}, None, [])


def test_grid_budget_is_grid_size():
    parameters = space({"a": "range(0, 3)", "b": "choice(x, y)"})
    assert effective_budget(None, "grid", parameters) == 6
    assert effective_budget(4, "grid", parameters) == 4
    with pytest.raises(SearchConfigError, match="n_trials is null"):
        effective_budget(None, "tpe", parameters)


@pytest.mark.parametrize("key, value", [("direction", "up"), ("metric", "energy"), ("n_jobs", 0),
                                        ("trial_ensemble_evaluation", "max")])
def test_invalid_setting_rejected(key, value):
    settings = {"direction": "minimize", "metric": None, "n_jobs": 1, "number_training_per_trial": 1,
                "trial_ensemble_evaluation": "mean", "max_failure_rate": 0.5, "n_trials": 3, key: value}
    with pytest.raises(SearchConfigError, match=f"hydra.sweeper.{key}="):
        validate_settings(settings)


def test_storage_reference_hides_url(monkeypatch, tmp_path):
    monkeypatch.setenv("DB_URL", "postgresql://alice:hunter2@127.0.0.1/db")
    reference = storage_reference({"driver": "url", "url_env": "DB_URL"}, "s")
    assert reference == "env:DB_URL"
    assert "hunter2" not in describe_storage(reference)
    assert storage_reference({"driver": "sqlite", "path": str(tmp_path / "a.db")}, "s") == f"sqlite:{tmp_path / 'a.db'}"
    with pytest.raises(SearchConfigError, match="Unknown storage driver 'redis'"):
        storage_reference({"driver": "redis"}, "s")


def test_sqlite_storage_described_as_optuna_url(tmp_path):
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}", study_name="s")
    url = describe_storage(storage_reference({"driver": "sqlite", "path": str(tmp_path / "a.db")}, "s"))

    assert optuna.load_study(study_name="s", storage=url).study_name == "s"
    assert describe_storage(f"journal:{tmp_path / 'a.journal'}") == f"journal file {tmp_path / 'a.journal'}"


def test_results_best_and_rows(tmp_path):
    study = optuna.create_study()
    for value in (3.0, 1.0, 2.0):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study._storage.set_trial_user_attr(trial._trial_id, "trial_dir", str(trial.number))
        study.tell(trial, value)
    failed = study.ask()
    study.tell(failed, state=TrialState.FAIL)

    trials = study.get_trials()
    assert best_trial(trials, "minimize").number == 1
    assert best_trial(trials, "maximize").number == 0
    summary = summarize(trials, direction="minimize", study_name="s", sweep_dir=tmp_path, storage="memory:s")
    assert (summary["n_complete"], summary["n_failed"], summary["best_trial_dir"]) == (3, 1, str(tmp_path / "1"))
    columns, rows = trial_rows(trials, tmp_path)
    assert columns[-2:] == ["state", "trial_dir"]
    assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"]


def test_plugin_scan_skips_optuna():
    # Hydra imports the plugin modules on every start; they must not pull in Optuna or torch.
    code = ("import sys, hydra_plugins.malahydra_sweeper.malahydra_sweeper, hydra_plugins.malahydra_sweeper.config;"
            "print('optuna' in sys.modules, 'torch' in sys.modules)")
    from sweeper_apps.runner import app_env

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=app_env(), cwd=os.sep)
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("method", ["tpe", "random", "grid"])
@pytest.mark.parametrize("storage", ["sqlite", "journal", "postgresql", "mysql", "memory"])
def test_method_and_storage_compose(method, storage):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="malahydra.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hyper_opt_method={method}", f"storage={storage}"],
                      return_hydra_config=True)
    assert cfg.hydra.sweeper.sampler == method
    assert cfg.hydra.sweeper._target_.endswith("MalahydraSweeper")
    assert storage_reference(cfg.hydra.sweeper.storage, "s").startswith(
        {"postgresql": "env:MALAHYDRA_POSTGRESQL_URL", "mysql": "env:MALAHYDRA_MYSQL_URL"}.get(storage, "")
    )


def test_concurrent_result_writers(tmp_path):
    # Drivers of one search rewrite the same result files; none may see another's
    # temporary file disappear under it.
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    trials = study.get_trials()
    summary = summarize(trials, direction="minimize", study_name="s", sweep_dir=tmp_path, storage="memory")
    errors = []

    def write_many():
        try:
            for _ in range(200):
                write_results(summary, trials, tmp_path)
        except OSError as error:
            errors.append(error)

    writers = [threading.Thread(target=write_many) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert errors == []
    assert (tmp_path / TRIALS_FILE).read_text().startswith("number,")
    assert (tmp_path / RESULTS_FILE).is_file()


def reclaiming_sweeper(tmp_path):
    """A SearchSweeper on a fresh SQLite study, set up as far as _reclaim_orphans needs."""
    from omegaconf import OmegaConf

    from hydra_plugins.malahydra_sweeper.config import MalahydraSweeperConf
    from malahydra.search.storage import load_or_create_study
    from malahydra.search.study_admin import LivenessSettings
    from malahydra.search.sweeper import SearchSweeper

    sweeper = SearchSweeper()
    sweeper.settings = {**OmegaConf.to_container(OmegaConf.structured(MalahydraSweeperConf)), "seed": 3}
    sweeper.space = space({"x": "interval(0, 1)"})
    sweeper.fixed = []
    sweeper.storage_ref = f"sqlite:{tmp_path / 'optuna.db'}"
    sweeper.liveness = LivenessSettings.from_settings(sweeper.settings)
    sweeper.study = load_or_create_study(sweeper.storage_ref, "s", "minimize", None, None)
    return sweeper


def test_orphan_finished_meanwhile_left_alone(tmp_path):
    sweeper = reclaiming_sweeper(tmp_path)
    study = sweeper.study
    distributions = {p.name: p.distribution for p in sweeper.space}
    # Trial 2 has no parameters yet, as when its driver stopped inside Optuna's ask.
    for trial in (study.ask(distributions), study.ask(distributions), study.ask()):
        trial.set_user_attr("driver", dead_driver())
    running = study.get_trials(states=(TrialState.RUNNING,))
    # The drivers of trials 0 and 2 reported their outcomes after `running` was read, and then stopped.
    study.tell(0, 1.5)
    study.tell(2, state=TrialState.PRUNED)

    batch, touched = sweeper._reclaim_orphans(running)

    assert [pending.number for pending in batch] == [1]
    assert touched == {0, 1, 2}
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED]
    assert (trials[0].value, trials[1].user_attrs["retries"]) == (1.5, 1)
    assert "fail_reason" not in trials[2].user_attrs
