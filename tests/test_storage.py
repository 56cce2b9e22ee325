"""The resume contract on every storage: SQLite, journal file, PostgreSQL and MariaDB.

Database tests create their own database and user (see db_helpers) and skip without a
server unless MALAHYDRA_REQUIRE_SERVICES=1.
"""

import secrets

import pytest
import yaml

from db_helpers import TEST_PASSWORD, files_containing, mysql_url, postgresql_url, storage  # noqa: F401 -- fixtures
from sweeper_apps.runner import QUADRATIC_APP, URL_VARIABLES, load_trials, run_sweep, states

def sweep_options(storage: str, study_name: str, *extra: str) -> list[str]:
    return [f"storage={storage}", f"hydra.sweeper.study_name={study_name}", "hydra.sweeper.seed=11", *extra]


def test_killed_driver_ends_at_budget(tmp_path, storage):
    sweep_dir, study = tmp_path / "sweep", f"kill_{secrets.token_hex(4)}"
    options = sweep_options(storage, study, "behavior.kill_at_trial=3")
    killed = run_sweep(QUADRATIC_APP, sweep_dir, *options)
    assert killed.returncode == -9, killed.stderr

    resumed = run_sweep(QUADRATIC_APP, sweep_dir, *options)
    assert resumed.returncode == 0, resumed.stderr
    trials = load_trials(storage, sweep_dir, study)
    assert states(trials) == {"COMPLETE": 6}
    assert sorted(t.number for t in trials) == list(range(6))
    for number in range(6):
        assert (sweep_dir / str(number) / "epochs.log").read_text().split() == ["0", "1", "2"]


def test_seeded_resume_same_best(tmp_path, storage):
    options = ["hydra.sweeper.n_trials=9", "hydra.sweeper.sampler_options.n_startup_trials=3"]
    straight_study, resumed_study = f"straight_{secrets.token_hex(4)}", f"resumed_{secrets.token_hex(4)}"
    run_sweep(QUADRATIC_APP, tmp_path / "straight", *sweep_options(storage, straight_study, *options))
    run_sweep(QUADRATIC_APP, tmp_path / "resumed", *sweep_options(storage, resumed_study, *options, "behavior.kill_at_trial=5"))
    run = run_sweep(QUADRATIC_APP, tmp_path / "resumed", *sweep_options(storage, resumed_study, *options))

    assert run.returncode == 0, run.stderr
    best = [yaml.safe_load((tmp_path / d / "optimization_results.yaml").read_text())["best_value"] for d in ("straight", "resumed")]
    assert abs(best[0] - best[1]) <= 1e-12


@pytest.mark.parametrize("database", [pytest.param("postgresql", marks=pytest.mark.postgresql),
                                      pytest.param("mysql", marks=pytest.mark.mysql)])
def test_password_in_no_sweep_file(tmp_path, monkeypatch, request, database):
    monkeypatch.setenv(URL_VARIABLES[database], request.getfixturevalue(f"{database}_url"))
    sweep_dir = tmp_path / "sweep"
    run = run_sweep(QUADRATIC_APP, sweep_dir, *sweep_options(database, f"secret_{secrets.token_hex(4)}",
                                                            "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=median"))

    assert run.returncode == 0, run.stderr
    assert files_containing(sweep_dir, TEST_PASSWORD) == []
    assert TEST_PASSWORD not in run.stdout + run.stderr
    assert "***" in (sweep_dir / "optimization_results.yaml").read_text()


def test_missing_url_variable_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MALAHYDRA_POSTGRESQL_URL", raising=False)
    run = run_sweep(QUADRATIC_APP, tmp_path / "sweep", "storage=postgresql")

    assert run.returncode == 1
    assert run.stderr.startswith("Error: Environment variable MALAHYDRA_POSTGRESQL_URL is not set")


def test_sqlite_local_file_uses_wal(tmp_path):
    import sqlite3

    from malahydra.search.storage import load_or_create_study

    path = tmp_path / "optuna.db"
    study = load_or_create_study(f"sqlite:{path}", "wal", "minimize", None, None)
    study.tell(study.ask(), 1.0)
    engine = study._storage._inner._backend.engine
    with engine.connect() as connection:
        synchronous = connection.exec_driver_sql("PRAGMA synchronous").scalar()

    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert synchronous == 1  # NORMAL


def test_file_system_type_from_mounts(tmp_path):
    from pathlib import Path

    from malahydra.search.storage import file_system_type, on_local_file_system

    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\n"
                      "server:/export /shared nfs4 rw 0 0\n"
                      "tmpfs /shared/scratch\\040dir tmpfs rw 0 0\n"
                      "sshfs#host: /remote fuse.sshfs rw 0 0\n")

    assert file_system_type(Path("/home/user/optuna.db"), str(mounts)) == "ext4"
    assert file_system_type(Path("/shared/sweep/optuna.db"), str(mounts)) == "nfs4"
    assert file_system_type(Path("/shared/scratch dir/optuna.db"), str(mounts)) == "tmpfs"
    assert on_local_file_system(Path("/home/user/optuna.db"), str(mounts))
    assert not on_local_file_system(Path("/shared/sweep/optuna.db"), str(mounts))
    assert not on_local_file_system(Path("/remote/optuna.db"), str(mounts))
    assert not on_local_file_system(Path("/home/user/optuna.db"), str(tmp_path / "missing"))


@pytest.mark.postgresql
def test_postgresql_lock_survives_lost_connection(monkeypatch, postgresql_url):
    import sqlalchemy

    from malahydra.search.claims import StudyLock, _DatabaseLock, _lock_key

    monkeypatch.setenv(URL_VARIABLES["postgresql"], postgresql_url)
    lock = StudyLock(f"env:{URL_VARIABLES['postgresql']}", "lost")
    rival = _DatabaseLock(postgresql_url, "postgresql", _lock_key("lost"))
    with lock:
        pid = lock._database_lock.connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        assert rival.try_acquire() is None
    release = rival.try_acquire()
    assert release is not None
    release()

    # The server ends the connection that the lock keeps between acquisitions.
    engine = sqlalchemy.create_engine(postgresql_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        assert connection.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar()
    engine.dispose()

    with lock:
        assert lock._database_lock.connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid
        assert rival.try_acquire() is None
    lock.close()
    rival._close()
