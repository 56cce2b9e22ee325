"""`malahydra study status|requeue` on SQLite and journal studies, and on PostgreSQL."""

import json
import time

import optuna
import pytest
from optuna.trial import TrialState

from db_helpers import postgresql_url  # noqa: F401 -- fixture
from malahydra.cli import main
from malahydra.search.heartbeat import HEARTBEAT_ATTR
from malahydra.search.storage import load_or_create_study


def stale_study(reference: str) -> optuna.Study:
    """A study with one COMPLETE trial, one live RUNNING trial and one RUNNING trial silent for 10 min."""
    study = load_or_create_study(reference, "cli", "minimize", None, None)
    x = optuna.distributions.FloatDistribution(0, 1)
    done = study.ask({"x": x})
    study.tell(done, 1.0)
    for age in (1.0, 600.0):
        trial = study.ask({"x": x})
        trial.set_user_attr("driver", "remote-node:77:1")
        trial.set_user_attr("trial_dir", str(trial.number))
        study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - age)
    return study


@pytest.fixture(params=["sqlite", "journal"])
def storage_arguments(request, tmp_path):
    if request.param == "sqlite":
        path = tmp_path / "optuna.db"
        stale_study(f"sqlite:{path}")
        return ["--storage", f"sqlite:///{path}"]
    path = tmp_path / "optuna.journal"
    stale_study(f"journal:{path}")
    return ["--journal", str(path)]


def test_status_counts_and_stale(storage_arguments, capsys):
    assert main(["study", "status", *storage_arguments, "--study", "cli", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)

    assert status["counts"]["COMPLETE"] == 1
    assert status["counts"]["RUNNING"] == 2
    assert [t["stale"] for t in status["running"]] == [False, True]
    assert status["running"][1]["heartbeat_age_s"] >= 600


def test_status_table_marks_stale(storage_arguments, capsys):
    assert main(["study", "status", *storage_arguments, "--study", "cli"]) == 0
    output = capsys.readouterr().out

    assert "COMPLETE: 1" in output
    assert "RUNNING trial 2: heartbeat 600 s ago" in output
    assert output.count("STALE") == 1


def test_requeue_only_stale(storage_arguments, capsys):
    assert main(["study", "requeue", *storage_arguments, "--study", "cli"]) == 0
    assert "trial 2: no heartbeat for 600 s, requeued as trial 3" in capsys.readouterr().out

    main(["study", "status", *storage_arguments, "--study", "cli", "--json"])
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert (counts["COMPLETE"], counts["RUNNING"], counts["FAIL"], counts["WAITING"]) == (1, 1, 1, 1)


def test_requeue_twice_repairs_once(storage_arguments, capsys):
    main(["study", "requeue", *storage_arguments, "--study", "cli"])
    main(["study", "requeue", *storage_arguments, "--study", "cli"])

    assert capsys.readouterr().out.splitlines()[-1] == "0 stale trial(s) repaired in study 'cli'."


def test_requeue_postgresql(monkeypatch, capsys, postgresql_url):  # noqa: F811 -- fixture
    monkeypatch.setenv("MALAHYDRA_POSTGRESQL_URL", postgresql_url)
    study = stale_study("env:MALAHYDRA_POSTGRESQL_URL")
    assert main(["study", "requeue", "--url-env", "MALAHYDRA_POSTGRESQL_URL", "--study", "cli"]) == 0

    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING]
    assert trials[3].user_attrs["trial_dir"] == "2"
    assert trials[3].system_attrs["fixed_params"] == trials[2].params


def test_unknown_study_one_line(tmp_path, capsys):
    stale_study(f"sqlite:{tmp_path / 'optuna.db'}")
    assert main(["study", "status", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--study", "nope"]) == 1

    error = capsys.readouterr().err
    assert error.startswith("Error: Study 'nope' not found")
    assert "studies there: cli" in error


def test_missing_file_one_line(tmp_path, capsys):
    assert main(["study", "status", "--journal", str(tmp_path / "absent.journal")]) == 1
    assert "does not exist; check --journal" in capsys.readouterr().err
