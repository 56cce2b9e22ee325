"""End-to-end searches through `train.py -m` on the Be2 snapshots with tiny trainings."""

import json
import secrets
from pathlib import Path

import pytest
import yaml

from sweeper_apps.runner import TRAIN_SCRIPT, load_trials, run_sweep, run_sweep_until, states
from db_helpers import mysql_url, postgresql_url, storage  # noqa: F401 -- fixtures

EPOCH_LINE = "Epoch {epoch}/{epochs}:"


def be2_options(be2_dir: Path, *extra: str) -> list[str]:
    return [f"data.dir={be2_dir}", "hyper_opt_method=tpe", "sweeps=mala_standard", "hydra.sweeper.seed=5", *extra]


def epoch_counts(job_dir: Path, epochs: int) -> list[int]:
    """How often each epoch was trained in a job directory, from its Hydra log."""
    text = (job_dir / "train.log").read_text()
    return [text.count(EPOCH_LINE.format(epoch=e, epochs=epochs)) for e in range(1, epochs + 1)]


def test_be2_killed_driver_resumes(tmp_path, be2_dir, storage):
    sweep_dir, study = tmp_path / "sweep", f"be2_{secrets.token_hex(4)}"
    options = be2_options(be2_dir, f"storage={storage}", f"hydra.sweeper.study_name={study}",
                          "hydra.sweeper.n_trials=6", "training.max_epochs=5", "hydra.sweeper.metric=band_energy")
    # Kill while trial 4 trains: trials 0-3 are done and trial 4 has a checkpoint. Four more
    # epochs after the first checkpoint leave the test time to kill it even on a busy machine.
    trial_4_started = lambda: (sweep_dir / "4" / "checkpoints" / "latest.pt").exists()  # noqa: E731
    assert run_sweep_until(TRAIN_SCRIPT, sweep_dir, trial_4_started, *options) == -9
    finished_before = {n: (sweep_dir / str(n) / "metrics.json").read_bytes() for n in range(4)}

    resumed = run_sweep(TRAIN_SCRIPT, sweep_dir, *options)
    assert resumed.returncode == 0, resumed.stderr
    trials = load_trials(storage, sweep_dir, study)
    # Some networks give an infinite band energy; those trials FAIL and do not count.
    assert states(trials)["COMPLETE"] == 6
    assert set(states(trials)) <= {"COMPLETE", "FAIL"}
    for trial in trials:
        # The epoch in flight when the driver was killed may be trained again, because it is
        # logged before its checkpoint is written. Every other epoch comes from the checkpoint.
        counts = epoch_counts(sweep_dir / str(trial.number), 5)
        assert min(counts) == 1, (trial.number, counts)
        assert sum(counts) <= 6, (trial.number, counts)
        metrics = json.loads((sweep_dir / str(trial.number) / "metrics.json").read_text())
        assert metrics["metric"] == "band_energy"
        if trial.state.name == "FAIL":
            assert trial.user_attrs["fail_reason"] in ("objective is inf", "objective is nan")
        else:
            assert trial.value == metrics["objective"]
    for number, metrics in finished_before.items():
        assert (sweep_dir / str(number) / "metrics.json").read_bytes() == metrics, number
    summary = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert summary["n_complete"] == 6
    assert summary["best_value"] == min(t.value for t in trials if t.value is not None)


def test_be2_seeded_resume_same_best(tmp_path, be2_dir):
    # Five epochs, so that the driver is killed while trial 5 still trains.
    options = be2_options(be2_dir, "hydra.sweeper.n_trials=9", "training.max_epochs=5",
                          "hydra.sweeper.sampler_options.n_startup_trials=4")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_sweep(TRAIN_SCRIPT, straight, *options)
    run_sweep_until(TRAIN_SCRIPT, resumed, lambda: (resumed / "5" / "checkpoints" / "latest.pt").exists(), *options)
    assert states(load_trials("sqlite", resumed)) == {"COMPLETE": 5, "RUNNING": 1}
    run_sweep(TRAIN_SCRIPT, resumed, *options)

    best = [yaml.safe_load((d / "optimization_results.yaml").read_text())["best_value"] for d in (straight, resumed)]
    assert abs(best[0] - best[1]) <= 1e-12


def test_be2_trial_failure_recorded(tmp_path, be2_dir):
    sweep_dir = tmp_path / "sweep"
    # A learning rate of 1e30 makes the training diverge. Whether the training then raises
    # or returns inf or NaN, the trial must end as FAIL with a reason.
    run = run_sweep(TRAIN_SCRIPT, sweep_dir, f"data.dir={be2_dir}", "training.max_epochs=2",
                    "training.learning_rate=choice(1e30)", "hydra.sweeper.n_trials=1",
                    "hydra.sweeper.max_failure_rate=1")

    trials = load_trials("sqlite", sweep_dir)
    assert run.returncode == 1
    assert trials[0].state.name == "FAIL"
    assert trials[0].user_attrs["fail_reason"]


@pytest.mark.slow
def test_be2_standard_space_best_beats_worst(tmp_path, be2_dir):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(TRAIN_SCRIPT, sweep_dir, *be2_options(be2_dir, "hydra.sweeper.n_trials=20", "training.max_epochs=5"))

    assert run.returncode == 0, run.stderr
    values = [t.value for t in load_trials("sqlite", sweep_dir) if t.value is not None]
    assert len(values) == 20
    assert max(values) >= 1.5 * min(values)
