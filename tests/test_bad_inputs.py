"""Catalogue of bad inputs: each ends `train.py` with one line naming the value and the fix.

Every entry runs the real command line, checks the exact message, checks that no
traceback is printed (unless HYDRA_FULL_ERROR=1), and checks that an existing study or
checkpoint is left as it was. Errors of malahydra print "Error: <message>" on stderr and
exit with status 1; Hydra's own config-composition errors keep Hydra's message.
"""

import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from malahydra.search.trial_context import read_result_record
from sweeper_apps.runner import TRAIN_SCRIPT, app_env

REPO = TRAIN_SCRIPT.parent
STANDARD_SPACE = "sweeps=mala_standard"


def run_train(tmp_path: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python train.py overrides...` from the repository, as a user would."""
    return subprocess.run([sys.executable, str(TRAIN_SCRIPT), *overrides], cwd=REPO, env=app_env(env),
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(run: subprocess.CompletedProcess, message: str) -> None:
    """The run failed with `Error: message` as the last and only error line and printed no traceback.

    Optuna's informational log lines (e.g. "Using an existing study") may precede it on stderr.
    """
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.splitlines()[-1] == f"Error: {message}"
    assert [line for line in run.stderr.splitlines() if line.startswith("Error")] == [f"Error: {message}"]
    assert "Traceback" not in run.stdout + run.stderr


def make_study(sweep_dir: Path, direction: str = "minimize") -> list[tuple]:
    """Create the sweep's SQLite study with two COMPLETE trials and one FAIL; return its trials."""
    sweep_dir.mkdir(parents=True)
    study = optuna.create_study(storage=f"sqlite:///{sweep_dir / 'optuna.db'}", study_name="malahydra",
                                direction=direction)
    distributions = {"training.learning_rate": FloatDistribution(1e-7, 1e-2, log=True)}
    for value, rate in ((0.5, 1e-3), (0.25, 1e-4)):
        study.add_trial(create_trial(params={"training.learning_rate": rate}, distributions=distributions, value=value))
    study.add_trial(create_trial(params={"training.learning_rate": 1e-2}, distributions=distributions,
                                 state=TrialState.FAIL))
    return study_trials(sweep_dir)


def study_trials(sweep_dir: Path) -> list[tuple]:
    study = optuna.load_study(study_name="malahydra", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    return [(t.number, t.state.name, t.value, t.params) for t in study.get_trials()]


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    return tmp_path / "sweep"


@pytest.fixture
def existing_study(sweep_dir: Path):
    """A study in the sweep directory; the test's teardown checks that its trials are unchanged.

    The file's bytes may change, because opening the storage switches SQLite to WAL mode.
    """
    before = make_study(sweep_dir)
    yield before
    assert study_trials(sweep_dir) == before


# -- search method and space -----------------------------------------------------------


def test_unknown_method_hydra_message(tmp_path, sweep_dir):
    run = run_train(tmp_path, "-m", "hyper_opt_method=nope", f"hydra.sweep.dir={sweep_dir}")

    assert run.returncode == 1
    assert run.stderr.splitlines()[:7] == [
        "In 'config': Could not find 'hyper_opt_method/nope'",
        "",
        "Available options in 'hyper_opt_method':",
        "\tgrid",
        "\tnaswot",
        "\toat",
        "\trandom",
    ]
    assert run.stderr.splitlines()[7] == "\ttpe"
    assert "Traceback" not in run.stdout + run.stderr
    assert not sweep_dir.exists()


def test_unknown_sampler(tmp_path, sweep_dir, existing_study):
    run = run_train(tmp_path, "-m", "hydra.sweeper.sampler=nope", STANDARD_SPACE, f"hydra.sweep.dir={sweep_dir}")

    assert_one_line_error(run, "Unknown sampler 'nope'; use one of tpe, random, grid (hydra.sweeper.sampler).")


def test_unknown_pruner(tmp_path, sweep_dir, existing_study):
    run = run_train(tmp_path, "-m", "hydra.sweeper.pruner=nope", STANDARD_SPACE, f"hydra.sweep.dir={sweep_dir}")

    assert_one_line_error(run, "Unknown pruner 'nope'; use one of none, median, hyperband (hydra.sweeper.pruner).")


def test_naswot_rejects_range(tmp_path, sweep_dir, existing_study):
    run = run_train(tmp_path, "-m", "hyper_opt_method=naswot", "model.hidden_widths.0=range(10,50,10)",
                    f"hydra.sweep.dir={sweep_dir}")

    assert_one_line_error(
        run,
        "The NASWOT method needs choice(...) for every parameter, but 'model.hidden_widths.0' is a range "
        "from 10 to 40; write it as choice(...) with the values to try, e.g. model.hidden_widths.0=choice(10, 40).",
    )


def test_oat_rejects_interval(tmp_path, sweep_dir, existing_study):
    run = run_train(tmp_path, "-m", "hyper_opt_method=oat", "training.learning_rate=tag(log,interval(1e-4,1e-3))",
                    f"hydra.sweep.dir={sweep_dir}")

    assert_one_line_error(
        run,
        "The OAT method needs choice(...) for every parameter, but 'training.learning_rate' is an interval from "
        "0.0001 to 0.001; write it as choice(...) with the values to try, "
        "e.g. training.learning_rate=choice(0.0001, 0.001).",
    )


@pytest.mark.parametrize(("method", "ready_space"), [("tpe", "mala_standard"), ("oat", "mala_oat"),
                                                     ("naswot", "mala_activations")])
def test_empty_space(tmp_path, sweep_dir, existing_study, method, ready_space):
    run = run_train(tmp_path, "-m", f"hyper_opt_method={method}", f"hydra.sweep.dir={sweep_dir}")

    assert_one_line_error(
        run,
        f"The search space is empty, so the {method} search has nothing to vary: set hydra.sweeper.params, "
        f"pass key=choice(...) on the command line, or choose sweeps={ready_space}.",
    )


def test_space_key_missing(tmp_path, sweep_dir, existing_study):
    run = run_train(tmp_path, "-m", "training.lr=interval(1e-4,1e-3)", f"hydra.sweep.dir={sweep_dir}")

    assert_one_line_error(
        run,
        "Search-space key(s) training.lr not found in the config; check the spelling, give the list a base value "
        "long enough for the index, or prefix the key with + to add it.",
    )


# -- values and budget -----------------------------------------------------------------


def test_learning_rate_not_number(tmp_path, be2_dir):
    run_dir = tmp_path / "run"
    run = run_train(tmp_path, f"data.dir={be2_dir}", "training.learning_rate=abc", f"hydra.run.dir={run_dir}")

    assert_one_line_error(run, "Invalid training.learning_rate 'abc': use a positive number.")
    assert not (run_dir / "checkpoints").exists()


def test_n_trials_not_integer_hydra_message(tmp_path, sweep_dir, existing_study):
    run = run_train(tmp_path, "-m", "hydra.sweeper.n_trials=abc", STANDARD_SPACE, f"hydra.sweep.dir={sweep_dir}")

    assert run.returncode == 1
    assert run.stderr.splitlines()[:4] == [
        "Error merging override hydra.sweeper.n_trials=abc",
        "Value 'abc' of type 'str' could not be converted to Integer",
        "    full_key: hydra.sweeper.n_trials",
        "    object_type=MalahydraSweeperConf",
    ]
    assert "Traceback" not in run.stdout + run.stderr


@pytest.mark.parametrize("n_trials", ["0", "-3"])
def test_budget_not_positive(tmp_path, sweep_dir, existing_study, n_trials):
    run = run_train(tmp_path, "-m", f"hydra.sweeper.n_trials={n_trials}", STANDARD_SPACE,
                    f"hydra.sweep.dir={sweep_dir}")

    assert_one_line_error(run, f"Invalid hydra.sweeper.n_trials={n_trials}; expected an integer >= 1.")


# -- storage ---------------------------------------------------------------------------


def test_storage_url_bad_scheme(tmp_path, sweep_dir):
    run = run_train(tmp_path, "-m", "storage=postgresql", STANDARD_SPACE, f"hydra.sweep.dir={sweep_dir}",
                    env={"MALAHYDRA_POSTGRESQL_URL": "foo://user:Secret-7q@127.0.0.1/db"})

    assert_one_line_error(
        run,
        "Unsupported database URL scheme 'foo' in MALAHYDRA_POSTGRESQL_URL; use e.g. "
        "postgresql+psycopg2://user:password@host/database or mysql+pymysql://user:password@host/database.",
    )
    assert "Secret-7q" not in run.stdout + run.stderr


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_database_not_answering(tmp_path, sweep_dir):
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed: pip install -e '.[test]'")
    port = closed_port()
    run = run_train(tmp_path, "-m", "storage=postgresql", STANDARD_SPACE, f"hydra.sweep.dir={sweep_dir}",
                    env={"MALAHYDRA_POSTGRESQL_URL": f"postgresql+psycopg2://user:Secret-7q@127.0.0.1:{port}/db"})

    assert_one_line_error(
        run,
        f"Cannot open the study database postgresql+psycopg2://user:***@127.0.0.1:{port}/db: connection to server "
        f'at "127.0.0.1", port {port} failed: Connection refused. Check that the server runs, and the host, port, '
        "user, password and database name in the URL.",
    )
    assert "Secret-7q" not in run.stdout + run.stderr


def test_study_other_direction(tmp_path, sweep_dir, existing_study):
    run = run_train(tmp_path, "-m", "hydra.sweeper.direction=maximize", STANDARD_SPACE,
                    f"hydra.sweep.dir={sweep_dir}")

    assert_one_line_error(
        run,
        "Study 'malahydra' in the storage optimizes minimize, not maximize; set hydra.sweeper.direction=minimize "
        "or choose a new hydra.sweeper.study_name.",
    )


# -- data ------------------------------------------------------------------------------


def test_data_dir_without_snapshots(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_train(tmp_path, f"data.dir={empty}", f"hydra.run.dir={tmp_path / 'run'}")

    assert_one_line_error(
        run,
        f"The descriptor file {empty / 'Be_snapshot0.in.npy'} is missing: check the snapshot name in the data "
        "config and that the file exists in data.dir.",
    )


def test_no_validation_snapshot(tmp_path, be2_dir):
    run = run_train(tmp_path, f"data.dir={be2_dir}", "data.validation=[]", f"hydra.run.dir={tmp_path / 'run'}")

    assert_one_line_error(
        run,
        "data.validation lists no snapshot: name at least one validation snapshot, "
        "for example data.validation=[Be_snapshot1].",
    )


def test_energy_grid_mismatch(tmp_path, be2_dir):
    run = run_train(tmp_path, f"data.dir={be2_dir}", "data.energy_grid.count=12", f"hydra.run.dir={tmp_path / 'run'}")

    assert_one_line_error(
        run,
        "Snapshot Be_snapshot0: Be_snapshot0.out.npy has 11 LDOS energies but data.energy_grid.count is 12; "
        "set data.energy_grid to the grid the LDOS was computed on.",
    )


def test_search_stops_at_missing_data_dir(tmp_path, sweep_dir):
    missing = tmp_path / "missing"
    run = run_train(tmp_path, "-m", STANDARD_SPACE, "hydra.sweeper.n_trials=4", "hydra.sweeper.plots=false",
                    f"hydra.sweep.dir={sweep_dir}", f"data.dir={missing}")

    assert_one_line_error(
        run,
        f"Stopped study 'malahydra' at a failure that every trial would repeat: DataError: The data directory "
        f"{missing} does not exist: point data.dir or MALAHYDRA_DATA_DIR at the folder that contains NAME.in.npy "
        "and NAME.out.npy. Fix it and run the same command to continue.",
    )
    assert [(number, state) for number, state, _, _ in study_trials(sweep_dir)] == [(0, "FAIL")]
    # A job on a cluster reports the same through the record it leaves in its directory.
    assert read_result_record(sweep_dir / "0")["stops_search"] is True


# -- output directories and checkpoints ------------------------------------------------


def test_run_dir_under_file(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a directory\n")
    run = run_train(tmp_path, f"hydra.run.dir={blocker / 'run'}")

    assert_one_line_error(
        run,
        f"Cannot create the output directory hydra.run.dir={blocker / 'run'}: {blocker} is a file, not a "
        "directory; set hydra.run.dir to a directory you can write to.",
    )
    assert blocker.read_text() == "a file, not a directory\n"


def test_sweep_dir_under_file(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a directory\n")
    run = run_train(tmp_path, "-m", STANDARD_SPACE, f"hydra.sweep.dir={blocker / 'sweep'}")

    assert_one_line_error(
        run,
        f"Cannot create the output directory hydra.sweep.dir={blocker / 'sweep'}: {blocker} is a file, not a "
        "directory; set hydra.sweep.dir to a directory you can write to.",
    )


@pytest.mark.slow
def test_checkpoint_other_architecture(tmp_path, be2_dir):
    run_dir = tmp_path / "run"
    common = [f"data.dir={be2_dir}", f"hydra.run.dir={run_dir}", "training.physics_every_epoch=false"]
    first = run_train(tmp_path, *common, "training.max_epochs=1", "model.hidden_widths=[20]")
    assert first.returncode == 0, first.stderr
    checkpoints = sorted((run_dir / "checkpoints").iterdir())
    before = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in checkpoints}

    # The finished run and a continuation (more epochs) both reject the other network.
    finished = run_train(tmp_path, *common, "training.max_epochs=1", "model.hidden_widths=[30]")
    continued = run_train(tmp_path, *common, "training.max_epochs=2", "model.hidden_widths=[30]")

    assert_one_line_error(
        finished,
        f"The finished run in {run_dir} trained the network 20 -> ReLU -> 11, not the configured "
        "30 -> ReLU -> 11: restore the model settings it was trained with, or use a new output directory.",
    )
    assert_one_line_error(
        continued,
        f"The checkpoint {run_dir / 'checkpoints' / 'latest.pt'} was written for the network 20 -> ReLU -> 11, "
        "not the configured 30 -> ReLU -> 11: restore the model settings it was trained with, "
        "or use a new output directory.",
    )
    after = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in sorted((run_dir / "checkpoints").iterdir())}
    assert after == before


# -- HYDRA_FULL_ERROR=1 ----------------------------------------------------------------


def test_full_error_traceback_search(tmp_path, sweep_dir, existing_study):
    run = run_train(tmp_path, "-m", "hydra.sweeper.pruner=nope", STANDARD_SPACE, f"hydra.sweep.dir={sweep_dir}",
                    env={"HYDRA_FULL_ERROR": "1"})

    assert run.returncode == 1
    assert "Traceback (most recent call last)" in run.stderr
    assert run.stderr.splitlines()[-1] == (
        "malahydra.search.methods.MethodConfigError: Unknown pruner 'nope'; use one of none, median, hyperband "
        "(hydra.sweeper.pruner)."
    )


def test_full_error_traceback_run(tmp_path, be2_dir):
    run = run_train(tmp_path, f"data.dir={be2_dir}", "data.validation=[]", f"hydra.run.dir={tmp_path / 'run'}",
                    env={"HYDRA_FULL_ERROR": "1"})

    assert run.returncode == 1
    assert "Traceback (most recent call last)" in run.stderr
    assert run.stderr.splitlines()[-1] == (
        "malahydra.errors.ConfigurationError: data.validation lists no snapshot: name at least one validation "
        "snapshot, for example data.validation=[Be_snapshot1]."
    )
