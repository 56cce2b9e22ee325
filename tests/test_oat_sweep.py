"""OAT searches through `-m hyper_opt_method=oat`: the quadratic app and `sweeps=mala_oat` on Be2."""

import datetime
import itertools

import pytest
import yaml

from malahydra.search.fixed_configs import params_key
from malahydra.search.orthogonal_array import orthogonal_array
from sweeper_apps.runner import QUADRATIC_APP, TRAIN_SCRIPT, load_trials, run_sweep, run_sweep_until, states

EPOCH_LINE = "Epoch {epoch}/{epochs}:"
MALA_OAT_FACTORS = ["training.optimizer", "model.activations.0", "model.activations.1", "model.output_activation"]
# Levels written so that the minimizing optimum (x=0.5, y=2, ReLU) is not a row of OA(4, 2^3).
CONFIRMATION_SPACE = ["x=choice(0.5, 0.0)", "y=choice(2, 0)", "activation=choice(Sigmoid, ReLU)"]


def results_of(sweep_dir):
    return yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())


def epochs_run(job_dir):
    return [int(line) for line in (job_dir / "epochs.log").read_text().split()]


def be2_epoch_counts(job_dir, epochs):
    text = (job_dir / "train.log").read_text()
    return [text.count(EPOCH_LINE.format(epoch=e, epochs=epochs)) for e in range(1, epochs + 1)]


def log_span(job_dir):
    """First and last timestamp of a job's Hydra log."""
    stamps = [line[1:24] for line in (job_dir / "train.log").read_text().splitlines() if line.startswith("[")]
    times = [datetime.datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in stamps]
    return min(times), max(times)


@pytest.mark.parametrize("levels", [[3, 3, 2], [4, 3, 2]], ids=["3-3-2", "4-3-2"])
def test_every_row_once(tmp_path, levels):
    values = {"x": [-0.5, 0.0, 0.5, 1.0], "y": [0, 1, 2, 3], "activation": ["ReLU", "Sigmoid"]}
    names = ["x", "y", "activation"]
    space = [f"{name}=choice({', '.join(map(str, values[name][:count]))})" for name, count in zip(names, levels)]
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, "hyper_opt_method=oat", "hydra.sweeper.oat.confirm=false",
                    "hydra.sweeper.n_jobs=4", *space)
    assert run.returncode == 0, run.stderr

    array = orthogonal_array(levels)
    expected = sorted(params_key({n: values[n][level] for n, level in zip(names, row)}) for row in array)
    trials = load_trials("sqlite", sweep_dir)
    assert states(trials) == {"COMPLETE": len(array)}
    assert sorted(params_key(t.params) for t in trials) == expected
    assert sorted(t.user_attrs["oat_row"] for t in trials) == list(range(len(array)))
    for trial in trials:
        assert epochs_run(sweep_dir / str(trial.number)) == [0, 1, 2]


def test_non_choice_rejected(tmp_path):
    run = run_sweep(QUADRATIC_APP, tmp_path / "sweep", "hyper_opt_method=oat", "activation=choice(ReLU, Sigmoid)")

    assert run.returncode == 1
    assert "The OAT method needs choice(...) for every parameter, but 'x' is an interval from -1 to 1" in run.stderr
    assert "Traceback" not in run.stderr


def test_confirmation_runs_once(tmp_path):
    sweep_dir = tmp_path / "sweep"
    for _ in range(2):
        run = run_sweep(QUADRATIC_APP, sweep_dir, "hyper_opt_method=oat", *CONFIRMATION_SPACE)
        assert run.returncode == 0, run.stderr

    trials = load_trials("sqlite", sweep_dir)
    assert states(trials) == {"COMPLETE": 5}
    confirmations = [t for t in trials if t.user_attrs.get("oat_confirmation")]
    assert len(confirmations) == 1
    assert confirmations[0].params == {"x": 0.5, "y": 2, "activation": "ReLU"}
    oat = results_of(sweep_dir)["oat"]
    assert oat["predicted_optimum"] == {"x": 0.5, "y": 2, "activation": "ReLU"}
    assert oat["confirmation"]["trial_number"] == confirmations[0].number
    assert oat["confirmation"]["value"] == confirmations[0].value
    assert oat["confirmation"]["row"] is None
    assert oat["best_row"]["value"] == min(t.value for t in trials if "oat_row" in t.user_attrs)
    assert oat["importance"][0] == "y"


def test_optimum_in_array_no_confirmation(tmp_path):
    # Levels written so that the minimizing optimum (x=0.5, y=2, ReLU) is row [0, 0, 0] of OA(4, 2^3).
    assert [0, 0, 0] in orthogonal_array([2, 2, 2]).tolist()
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, "hyper_opt_method=oat", "x=choice(0.5, 0.0)", "y=choice(2, 0)",
                    "activation=choice(ReLU, Sigmoid)")
    assert run.returncode == 0, run.stderr

    trials = load_trials("sqlite", sweep_dir)
    assert states(trials) == {"COMPLETE": 4}
    assert not any(t.user_attrs.get("oat_confirmation") for t in trials)
    assert "the predicted optimum is a row of the array, which has run, so no confirmation trial runs" in run.stdout
    # The budget shrinks to the rows, so the counts do not read as an unfinished study.
    assert "4/4 COMPLETE" in run.stdout
    assert "/5 COMPLETE" not in run.stdout.split("OAT: predicted optimum")[-1]
    assert results_of(sweep_dir)["oat"]["confirmation"]["row"] == 0


def test_maximize_uses_best_level(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, "hyper_opt_method=oat", "hydra.sweeper.direction=maximize",
                    *CONFIRMATION_SPACE)
    assert run.returncode == 0, run.stderr

    oat = results_of(sweep_dir)["oat"]
    assert oat["predicted_optimum"] == {"x": 0.0, "y": 0, "activation": "Sigmoid"}
    means = oat["level_means"]["y"]
    assert means[1]["level"] == 0
    assert means[1]["mean"] > means[0]["mean"]
    rows = [t for t in load_trials("sqlite", sweep_dir) if "oat_row" in t.user_attrs]
    assert oat["best_row"]["value"] == max(t.value for t in rows)


def test_be2_interrupted_resumes_missing_rows(tmp_path, be2_dir):
    sweep_dir = tmp_path / "sweep"
    options = [f"data.dir={be2_dir}", "hyper_opt_method=oat", "sweeps=mala_oat", "training.max_epochs=2",
               "training.physics_every_epoch=false"]
    # Kill the driver once row 3 has a checkpoint: rows 0-2 are done and row 3 is RUNNING.
    row_3_started = lambda: (sweep_dir / "3" / "checkpoints" / "latest.pt").exists()  # noqa: E731
    assert run_sweep_until(TRAIN_SCRIPT, sweep_dir, row_3_started, *options) == -9
    before = load_trials("sqlite", sweep_dir)
    assert states(before)["RUNNING"] == 1
    assert states(before)["COMPLETE"] >= 3
    finished = {t.number: (sweep_dir / str(t.number) / "metrics.json").read_bytes()
                for t in before if t.state.name == "COMPLETE"}
    (interrupted,) = [t.number for t in before if t.state.name == "RUNNING"]
    checkpointed = (sweep_dir / str(interrupted) / "checkpoints" / "latest.pt").exists()

    resumed = run_sweep(TRAIN_SCRIPT, sweep_dir, *options)
    assert resumed.returncode == 0, resumed.stderr
    trials = load_trials("sqlite", sweep_dir)
    rows = [t for t in trials if "oat_row" in t.user_attrs]
    assert sorted(t.user_attrs["oat_row"] for t in rows) == list(range(8))
    for number, metrics in finished.items():
        assert (sweep_dir / str(number) / "metrics.json").read_bytes() == metrics, number
    for trial in trials:
        counts = be2_epoch_counts(sweep_dir / str(trial.number), 2)
        if trial.number != interrupted:
            assert counts == [1, 1], trial.number
        elif checkpointed:
            # The kill may land after epoch 2 was logged but before its checkpoint.
            assert counts[0] == 1
    oat = results_of(sweep_dir)["oat"]
    assert oat["factors"] == MALA_OAT_FACTORS
    assert len(oat["array"]) == 8
    assert sorted(oat["importance"]) == sorted(MALA_OAT_FACTORS)
    confirmation_is_row = oat["confirmation"]["row"] is not None
    assert len(trials) == (8 if confirmation_is_row else 9)
    assert oat["confirmation"]["params"] == oat["predicted_optimum"]


def test_be2_submitit_rows_parallel(tmp_path, be2_dir):
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(TRAIN_SCRIPT, sweep_dir, f"data.dir={be2_dir}", "hyper_opt_method=oat", "sweeps=mala_oat",
                    "training.max_epochs=1", "training.physics_every_epoch=false", "training.num_threads=1",
                    "hydra.sweeper.oat.confirm=false", "hydra/launcher=submitit_local",
                    "hydra.launcher.timeout_min=5", "hydra.sweeper.n_jobs=4")
    assert run.returncode == 0, run.stderr

    trials = load_trials("sqlite", sweep_dir)
    assert states(trials) == {"COMPLETE": 8}
    spans = [log_span(sweep_dir / str(number)) for number in range(4)]
    overlapping = [a[0] < b[1] and b[0] < a[1] for a, b in itertools.combinations(spans, 2)]
    assert any(overlapping)
    oat = results_of(sweep_dir)["oat"]
    assert set(oat["level_means"]) == set(MALA_OAT_FACTORS)
    assert oat["best_row"]["value"] == min(t.value for t in trials)
