"""NASWOT searches through `train.py -m hyper_opt_method=naswot` on Be2, and the candidate grid."""

import csv
import itertools
import math
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from malahydra.search.fixed_configs import enqueue_missing
from malahydra.search.naswot import CLAIM_PREFIX, candidate_indices, candidate_params
from malahydra.search.space import build_search_space, parse_overrides
from malahydra.search.storage import load_or_create_study, open_storage
from sweeper_apps.runner import TRAIN_SCRIPT, app_env, load_trials, run_sweep, states, storage_reference

# MALA 1.4.0's pinned NASWOT values on Be2 (seed 1234, [91, 100, 100, 11], batch 40), in
# candidate order RRR, RRS, ..., SSS; the same numbers as in test_naswot_score.py.
MALA_PINNED = [10569.71875, 10649.0361328125, 12081.2958984375, 12360.3701171875,
               33523.9375, 47565.8203125, 149152.921875, 150312.671875]
ACTIVATION_KEYS = ("model.activations.0", "model.activations.1", "model.output_activation")


def naswot_options(be2_dir, *extra):
    return [f"data.dir={be2_dir}", "hyper_opt_method=naswot", *extra]


def results_of(sweep_dir):
    return yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())


def test_candidate_order_last_fastest():
    space = build_search_space(parse_overrides({"a": "choice(1, 2)", "b": "choice(x, y, z)"}, [])[0])

    params = [candidate_params(space, i) for i in range(6)]

    assert [(p["a"], p["b"]) for p in params] == list(itertools.product([1, 2], ["x", "y", "z"]))


def test_candidate_subset_seeded_sorted():
    first = candidate_indices(1000, 10, seed=3)

    assert first == candidate_indices(1000, 10, seed=3)
    assert first == sorted(first)
    assert len(set(first)) == 10
    assert candidate_indices(8, 20, seed=3) == list(range(8))


def test_enqueue_missing_idempotent():
    study = optuna.create_study()
    configs = [{"a": 1}, {"a": 2}]

    assert enqueue_missing(study, configs) == 2
    assert enqueue_missing(study, configs) == 0
    assert enqueue_missing(study, configs + [{"a": 3}]) == 1
    assert len(study.trials) == 3


def test_be2_activations_match_mala(tmp_path, be2_dir):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(TRAIN_SCRIPT, sweep_dir, *naswot_options(be2_dir, "sweeps=mala_activations"))
    assert run.returncode == 0, run.stderr

    trials = sorted(load_trials("sqlite", sweep_dir), key=lambda t: t.number)
    assert states(trials) == {"COMPLETE": 8}
    expected_params = list(itertools.product(["ReLU", "Sigmoid"], repeat=3))
    for trial, params, pinned in zip(trials, expected_params, MALA_PINNED):
        assert tuple(trial.params[k] for k in ACTIVATION_KEYS) == params
        assert trial.value == pytest.approx(pinned, rel=1e-2), params
    summary = results_of(sweep_dir)
    assert summary["direction"] == "maximize"
    assert summary["best_params"] == dict(zip(ACTIVATION_KEYS, ["Sigmoid"] * 3))
    assert summary["naswot"]["selected"]["trial_number"] == 7
    assert (Path(summary["best_trial_dir"]) / "naswot_scores.json").is_file()
    top = summary["naswot"]["top"]
    assert [row["rank"] for row in top] == list(range(1, 9))
    assert [row["trial_number"] for row in top] == sorted(range(8), key=lambda n: -trials[n].value)
    assert top[0]["score"] == trials[7].value
    table = list(csv.DictReader((sweep_dir / "trials.csv").open()))
    assert [int(row["naswot_rank"]) for row in sorted(table, key=lambda row: float(row["value"]), reverse=True)] == \
        list(range(1, 9))

    rerun = run_sweep(TRAIN_SCRIPT, sweep_dir, *naswot_options(be2_dir, "sweeps=mala_activations"))
    assert rerun.returncode == 0, rerun.stderr
    assert len(load_trials("sqlite", sweep_dir)) == 8
    assert "Launching" not in rerun.stdout


def test_be2_submitit_local(tmp_path, be2_dir):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(TRAIN_SCRIPT, sweep_dir, *naswot_options(
        be2_dir, "sweeps=mala_activations", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
        "hydra.sweeper.n_jobs=2", "hydra.sweeper.naswot.candidates_per_job=4"))
    assert run.returncode == 0, run.stderr

    trials = sorted(load_trials("sqlite", sweep_dir), key=lambda t: t.number)
    assert [t.value for t in trials] == pytest.approx(MALA_PINNED, rel=1e-2)
    assert {t.user_attrs["naswot_job_dir"] for t in trials} == {"naswot/0-3", "naswot/4-7"}


def test_interval_parameter_rejected(tmp_path, be2_dir):
    run = run_sweep(TRAIN_SCRIPT, tmp_path / "sweep", *naswot_options(be2_dir, "sweeps=mala_standard"))

    assert run.returncode == 1
    assert "'model.hidden_widths.0' is a range from 10 to 100" in run.stderr
    assert "Traceback" not in run.stderr


def test_training_parameters_ignored_once(tmp_path, be2_dir):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(TRAIN_SCRIPT, sweep_dir, *naswot_options(
        be2_dir, "sweeps=mala_activations", "training.learning_rate=tag(log, interval(1e-5, 1e-2))",
        "training.optimizer=choice(Adam, SGD)"))
    assert run.returncode == 0, run.stderr

    warnings = [line for line in run.stdout.splitlines() if "ignores the training parameter" in line]
    assert len(warnings) == 1
    assert "training.learning_rate, training.optimizer" in warnings[0]
    assert "budget 8 candidates, each scored once (COMPLETE or FAIL)" in run.stdout
    trials = load_trials("sqlite", sweep_dir)
    assert len(trials) == 8
    assert all(set(t.params) == set(ACTIVATION_KEYS) for t in trials)


@pytest.mark.parametrize("select", ["largest", "smallest"])
def test_failed_score_never_best(tmp_path, be2_dir, select):
    # One ReLU unit is inactive for part of the batch, so those Jacobian rows are zero and
    # the correlation matrix is undefined. The single Sigmoid unit has a finite score.
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(TRAIN_SCRIPT, sweep_dir, *naswot_options(
        be2_dir, "model.hidden_widths=[1]", "model.activations.0=choice(ReLU, Sigmoid)",
        f"hydra.sweeper.naswot.select={select}", "hydra.sweeper.max_failure_rate=1"))
    assert run.returncode == 0, run.stderr

    trials = {t.params["model.activations.0"]: t for t in load_trials("sqlite", sweep_dir)}
    assert trials["ReLU"].state.name == "FAIL"
    assert "NaswotScoreError" in trials["ReLU"].user_attrs["fail_reason"]
    assert trials["Sigmoid"].state.name == "COMPLETE"
    assert math.isfinite(trials["Sigmoid"].value)
    summary = results_of(sweep_dir)
    assert summary["best_params"] == {"model.activations.0": "Sigmoid"}
    assert summary["naswot"]["selected"]["params"] == {"model.activations.0": "Sigmoid"}


def test_train_top_k_reports_objectives(tmp_path, be2_dir):
    sweep_dir = tmp_path / "sweep"
    options = naswot_options(be2_dir, "sweeps=mala_activations", "hydra.sweeper.naswot.train_top_k=2",
                             "training.max_epochs=1", "training.physics_every_epoch=false")
    run = run_sweep(TRAIN_SCRIPT, sweep_dir, *options)
    assert run.returncode == 0, run.stderr

    trained = results_of(sweep_dir)["naswot"]["trained"]
    assert [row["trial_number"] for row in trained] == [7, 6]
    for row in trained:
        assert row["state"] == "complete"
        assert math.isfinite(row["objective"])
        assert (sweep_dir / "trained" / str(row["trial_number"]) / "metrics.json").is_file()
    header = (sweep_dir / "trials.csv").read_text().splitlines()[0]
    assert "naswot_trained_objective" in header

    rerun = run_sweep(TRAIN_SCRIPT, sweep_dir, *options)
    assert rerun.returncode == 0, rerun.stderr
    assert "NASWOT: training candidate" not in rerun.stdout


def test_two_drivers_score_each_once(tmp_path, be2_dir):
    sweep_dir = tmp_path / "sweep"
    options = naswot_options(be2_dir, "sweeps=mala_activations", "hydra.sweeper.naswot.candidates_per_job=2")
    command = [sys.executable, str(TRAIN_SCRIPT), "-m", f"hydra.sweep.dir={sweep_dir}", *options]
    sweep_dir.mkdir(parents=True)
    drivers = [subprocess.Popen(command, cwd=tmp_path, env=app_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [driver.communicate(timeout=600)[0] for driver in drivers]
    assert [driver.returncode for driver in drivers] == [0, 0], outputs

    trials = load_trials("sqlite", sweep_dir)
    assert states(trials) == {"COMPLETE": 8}
    assert sorted(t.user_attrs["naswot_candidate"] for t in trials) == list(range(8))
    by_candidate = {t.user_attrs["naswot_candidate"]: t.value for t in trials}
    assert [by_candidate[i] for i in range(8)] == pytest.approx(MALA_PINNED, rel=1e-2)


def test_stale_claim_scored_again(tmp_path, be2_dir):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir(parents=True)
    study = load_or_create_study(storage_reference("sqlite", sweep_dir), "malahydra", "maximize", None, None)
    stale = {"driver": "some-other-host:4242:1", "beat": time.time() - 600, "first": 0, "last": 3, "retries": 0}
    study._storage.set_study_system_attr(study._study_id, f"{CLAIM_PREFIX}0-3", stale)

    run = run_sweep(TRAIN_SCRIPT, sweep_dir, *naswot_options(
        be2_dir, "sweeps=mala_activations", "hydra.sweeper.naswot.candidates_per_job=4",
        "hydra.sweeper.grace_period=60"))
    assert run.returncode == 0, run.stderr

    trials = load_trials("sqlite", sweep_dir)
    assert states(trials) == {"COMPLETE": 8}
    assert "left candidates 0-3 unscored" in run.stdout
    reopened = optuna.load_study(study_name="malahydra", storage=open_storage(storage_reference("sqlite", sweep_dir)))
    claims = reopened._storage.get_study_system_attrs(reopened._study_id)
    assert [value for key, value in claims.items() if key.startswith(CLAIM_PREFIX) and value] == []


def test_direction_mismatch_names_selection(tmp_path):
    from malahydra.search.naswot import NaswotMethod
    from malahydra.search.storage import StorageConfigError

    reference = f"sqlite:{tmp_path / 'optuna.db'}"
    load_or_create_study(reference, "malahydra", "minimize", optuna.samplers.RandomSampler(), optuna.pruners.NopPruner())

    with pytest.raises(StorageConfigError) as error:
        load_or_create_study(reference, "malahydra", "maximize", optuna.samplers.RandomSampler(),
                             optuna.pruners.NopPruner(), direction_setting=NaswotMethod.direction_setting)

    assert "set hydra.sweeper.naswot.select=smallest or choose a new hydra.sweeper.study_name" in str(error.value)
