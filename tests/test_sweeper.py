"""Sweeper runs of the near-instant quadratic app: budget, resume, failures, pruning, repeats."""

import math
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweeper_apps.runner import (
    QUADRATIC_APP, load_trials, open_storage, run_sweep, states, storage_reference,
)

SEED = "hydra.sweeper.seed=7"


def results_of(sweep_dir: Path) -> dict:
    return yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())


def epochs_run(job_dir: Path) -> list[int]:
    return [int(line) for line in (job_dir / "epochs.log").read_text().split()]


def test_sweep_completes_budget(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, SEED)
    assert run.returncode == 0, run.stderr

    trials = load_trials("sqlite", sweep_dir)
    assert states(trials) == {"COMPLETE": 6}
    summary = results_of(sweep_dir)
    best = min(trials, key=lambda t: t.value)
    assert summary["best_value"] == best.value
    assert summary["best_trial_number"] == best.number
    assert summary["best_params"] == best.params
    assert summary["best_trial_dir"] == str(sweep_dir.resolve() / str(best.number))
    assert (summary["n_complete"], summary["n_failed"], summary["n_pruned"]) == (6, 0, 0)
    assert summary["direction"] == "minimize"
    assert summary["study_name"] == "malahydra"
    assert (sweep_dir / "multirun.yaml").exists()
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == [str(n) for n in range(6)]


def test_trials_csv_rows(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra.sweeper.n_trials=3")

    lines = (sweep_dir / "trials.csv").read_text().splitlines()
    header = lines[0].split(",")
    for column in ("number", "value", "datetime_start", "duration", "params_x", "params_y", "state", "trial_dir"):
        assert column in header
    assert len(lines) == 4


def test_trial_logs_parameters_outcome_duration(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra.sweeper.n_trials=2")

    assert "Trial 1 started: x=" in run.stdout
    assert "Trial 1 COMPLETE: value" in run.stdout
    assert " s)" in run.stdout


def test_rerun_continues_to_budget(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra.sweeper.n_trials=3")
    run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra.sweeper.n_trials=6")
    rerun = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra.sweeper.n_trials=6")

    assert rerun.returncode == 0, rerun.stderr
    trials = load_trials("sqlite", sweep_dir)
    assert states(trials) == {"COMPLETE": 6}
    for number in range(6):
        assert epochs_run(sweep_dir / str(number)) == [0, 1, 2]


def test_killed_driver_resumes_trial(tmp_path):
    sweep_dir = tmp_path / "sweep"
    killed = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "behavior.kill_at_trial=3")
    assert killed.returncode == -9

    resumed = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "behavior.kill_at_trial=3")
    assert resumed.returncode == 0, resumed.stderr
    trials = load_trials("sqlite", sweep_dir)
    assert states(trials) == {"COMPLETE": 6}
    assert "Trial 3 was left RUNNING" in resumed.stdout
    # The killed trial continued from its epoch-1 checkpoint; no other trial ran twice.
    for number in range(6):
        assert epochs_run(sweep_dir / str(number)) == [0, 1, 2], number


def test_seeded_resume_matches_uninterrupted(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    options = (SEED, "hydra.sweeper.n_trials=9", "hydra.sweeper.sampler_options.n_startup_trials=3")
    run_sweep(QUADRATIC_APP, straight, *options)
    run_sweep(QUADRATIC_APP, interrupted, *options, "behavior.kill_at_trial=5")
    run_sweep(QUADRATIC_APP, interrupted, *options)

    best_straight = results_of(straight)["best_value"]
    best_interrupted = results_of(interrupted)["best_value"]
    assert abs(best_straight - best_interrupted) <= 1e-12
    params_straight = [t.params for t in load_trials("sqlite", straight)]
    params_interrupted = [t.params for t in load_trials("sqlite", interrupted)]
    assert params_straight == params_interrupted


def test_raising_trial_recorded_as_fail(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "behavior.fail_above_x=0.0", "hydra.sweeper.max_failure_rate=5")

    assert run.returncode == 0, run.stderr
    trials = load_trials("sqlite", sweep_dir)
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert states(trials)["COMPLETE"] == 6
    assert failed
    assert all("RuntimeError: x=" in t.user_attrs["fail_reason"] for t in failed)
    assert results_of(sweep_dir)["n_failed"] == len(failed)


def test_nan_trial_recorded_as_fail(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "behavior.nan_above_x=0.0", "hydra.sweeper.max_failure_rate=5")

    assert run.returncode == 0, run.stderr
    failed = [t for t in load_trials("sqlite", sweep_dir) if t.state.name == "FAIL"]
    assert failed
    assert all(t.user_attrs["fail_reason"] == "objective is nan" for t in failed)


def test_all_failing_stops_with_results(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "behavior.fail_above_x=-2", "hydra.sweeper.max_failure_rate=0.5")

    assert run.returncode == 1
    assert "max_failure_rate=0.5" in run.stderr
    summary = results_of(sweep_dir)
    assert summary["n_failed"] == 4
    assert summary["n_complete"] == 0
    assert summary["best_value"] is None


def test_rerun_after_fixed_failures_reaches_budget(tmp_path):
    sweep_dir = tmp_path / "sweep"
    broken = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "behavior.fail_above_x=-2", "hydra.sweeper.max_failure_rate=0.5")
    assert broken.returncode == 1

    fixed = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra.sweeper.max_failure_rate=0.5")

    assert fixed.returncode == 0, fixed.stderr
    summary = results_of(sweep_dir)
    assert summary["n_complete"] == 6
    assert summary["n_failed"] == 4


def test_unknown_sampler_one_line_error(tmp_path):
    run = run_sweep(QUADRATIC_APP, tmp_path / "sweep", "hydra.sweeper.sampler=cmaes")

    assert run.returncode == 1
    assert run.stderr.splitlines()[0] == "Error: Unknown sampler 'cmaes'; use one of tpe, random, grid (hydra.sweeper.sampler)."


def test_malformed_params_entry_one_line_error(tmp_path):
    run = run_sweep(QUADRATIC_APP, tmp_path / "sweep", "hydra.sweeper.params.x='interval(1)'")

    assert run.returncode == 1
    assert run.stderr.startswith("Error: Invalid sweep override 'x=interval(1)' (hydra.sweeper.params.x)")
    assert "Traceback" not in run.stderr


def test_malformed_command_line_sweep_rejected(tmp_path):
    run = run_sweep(QUADRATIC_APP, tmp_path / "sweep", "x=interval(1)")

    assert run.returncode == 1
    assert "interval(1)" in run.stderr
    assert "Traceback" not in run.stderr


def test_missing_key_keeps_study(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra.sweeper.n_trials=2")
    run = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "nope=choice(1,2)")

    assert run.returncode == 1
    assert run.stderr.splitlines()[0].startswith("Error: Search-space key(s) nope not found in the config")
    assert states(load_trials("sqlite", sweep_dir)) == {"COMPLETE": 2}


def test_command_line_sweep_replaces_params(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run_sweep(QUADRATIC_APP, sweep_dir, SEED, "x=choice(0.25,0.5)", "activation=choice(ReLU,Sigmoid)")

    trials = load_trials("sqlite", sweep_dir)
    assert {t.params["x"] for t in trials} <= {0.25, 0.5}
    assert set(trials[0].params) == {"x", "y", "activation"}


def test_grid_range_excludes_stop(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, "hyper_opt_method=grid", "hydra.sweeper.n_trials=null",
                    "x=choice(0.3)", "y=range(1,4)", "activation=choice(ReLU,Sigmoid)")

    assert run.returncode == 0, run.stderr
    trials = load_trials("sqlite", sweep_dir)
    assert sorted((t.params["y"], t.params["activation"]) for t in trials) == [
        (y, a) for y in (1, 2, 3) for a in ("ReLU", "Sigmoid")
    ]


def test_grid_rejects_interval(tmp_path):
    run = run_sweep(QUADRATIC_APP, tmp_path / "sweep", "hyper_opt_method=grid")

    assert run.returncode == 1
    assert run.stderr.startswith("Error: The grid sampler cannot enumerate 'x', an interval")


def test_random_sampler_range_values(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hyper_opt_method=random", "hydra.sweeper.n_trials=25", "y=range(1,3)")

    values = {t.params["y"] for t in load_trials("sqlite", sweep_dir)}
    assert values == {1, 2}


def test_repeats_seeds_and_mean(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra.sweeper.n_trials=2",
                    "hydra.sweeper.number_training_per_trial=3", "noise=1.0")

    assert run.returncode == 0, run.stderr
    for trial in load_trials("sqlite", sweep_dir):
        seeds, values = trial.user_attrs["seeds"], trial.user_attrs["repeat_values"]
        assert len(set(seeds)) == 3
        assert len(set(values)) == 3
        assert math.isclose(trial.value, statistics.fmean(values))
        for repeat in range(3):
            assert (sweep_dir / str(trial.number) / f"repeat_{repeat}" / "checkpoint.json").exists()


def test_repeats_median(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra.sweeper.n_trials=1",
              "hydra.sweeper.number_training_per_trial=3", "hydra.sweeper.trial_ensemble_evaluation=median",
              "noise=1.0")

    trial = load_trials("sqlite", sweep_dir)[0]
    assert trial.value == statistics.median(trial.user_attrs["repeat_values"])


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_pruner_prunes_trials(tmp_path, pruner):
    sweep_dir = tmp_path / "sweep"
    options = {"median": {"n_warmup_steps": 0, "n_startup_trials": 2}, "hyperband": {"min_resource": 1, "max_resource": 8}}
    run = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra.sweeper.n_trials=12", "epochs=8",
                    f"hydra.sweeper.pruner={pruner}",
                    *(f"+hydra.sweeper.pruner_options.{key}={value}" for key, value in options[pruner].items()))

    assert run.returncode == 0, run.stderr
    trials = load_trials("sqlite", sweep_dir)
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert states(trials)["COMPLETE"] == 12
    assert pruned
    assert results_of(sweep_dir)["n_pruned"] == len(pruned)
    assert all(t.intermediate_values for t in pruned)


def test_memory_storage_with_pruning(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "storage=memory", "hydra.sweeper.pruner=median", "epochs=5")

    assert run.returncode == 0, run.stderr
    assert results_of(sweep_dir)["n_complete"] == 6
    assert not (sweep_dir / "optuna.db").exists()


def test_batches_stop_at_budget(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra.sweeper.n_jobs=4")

    assert run.returncode == 0, run.stderr
    assert states(load_trials("sqlite", sweep_dir)) == {"COMPLETE": 6}
    assert run.stdout.count("Launching 4 jobs locally") == 1
    assert run.stdout.count("Launching 2 jobs locally") == 1


def test_empty_space_rejected(tmp_path):
    run = run_sweep(QUADRATIC_APP, tmp_path / "sweep", "~hydra.sweeper.params.x", "~hydra.sweeper.params.y",
                    "hydra.sweeper.n_trials=2")

    assert run.returncode == 1
    assert run.stderr.startswith("Error: The search space is empty, so the tpe search has nothing to vary")
    assert not (tmp_path / "sweep" / "optuna.db").exists()


def test_killed_job_fails_under_submitit(tmp_path):
    # submitit raises from launch() when one job of a batch dies; the other job's result
    # must still reach the study through the file it wrote.
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                    "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=3", "behavior.kill_at_trial=1")

    assert run.returncode == 0, run.stderr
    trials = load_trials("sqlite", sweep_dir)
    assert states(trials) == {"COMPLETE": 3, "FAIL": 1}
    assert trials[0].state.name == "COMPLETE"
    assert "without a result" in trials[1].user_attrs["fail_reason"]


def test_memory_storage_other_process_skips_pruning(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "storage=memory", "hydra.sweeper.pruner=median",
                    "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                    "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2")

    assert run.returncode == 0, run.stderr
    assert results_of(sweep_dir)["n_complete"] == 2
    assert "cannot report to its in-memory study" in (sweep_dir / "0" / "quadratic_app.log").read_text()


def test_orphan_popped_without_params_requeued(tmp_path):
    sweep_dir = tmp_path / "sweep"
    first = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra.sweeper.n_trials=1")
    assert first.returncode == 0, first.stderr
    # A driver killed inside Optuna's ask: the enqueued trial is RUNNING, its parameters unwritten.
    study = optuna.load_study(study_name="malahydra",
                              storage=open_storage(storage_reference("sqlite", sweep_dir, "malahydra")))
    study.enqueue_trial({"x": 0.25, "y": 3})
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[0]
    study._storage.set_trial_state_values(waiting._trial_id, state=TrialState.RUNNING)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    study._storage.set_trial_user_attr(waiting._trial_id, "driver", f"{socket.gethostname()}:{dead.stdout.strip()}:?")

    resumed = run_sweep(QUADRATIC_APP, sweep_dir, SEED, "hydra.sweeper.n_trials=2")

    assert resumed.returncode == 0, resumed.stderr
    trials = load_trials("sqlite", sweep_dir)
    assert states(trials) == {"COMPLETE": 2, "FAIL": 1}
    assert {"x": 0.25, "y": 3} in [t.params for t in trials if t.state == TrialState.COMPLETE]
    assert "queued again" in resumed.stdout
