"""Throughput of several search drivers on one study, and the storage overhead per trial.

Scaling: 1 and then 4 drivers run the same search of sleep-bound trials (each trial
sleeps 1 s in the job, so the CPU stays free) against a fresh PostgreSQL study; the row
compares the trials per second of 4 drivers with 4 times those of one driver (target:
4 drivers reach at least 3.5 times one driver, i.e. ratio = 4 x one / four <= 4 / 3.5).

Overhead: one driver runs near-instant trials on each storage (SQLite, journal file,
PostgreSQL, MariaDB), and the row gives the wall time per trial of the whole driver loop
(ask under the study lock, heartbeat, launch of the in-process Hydra job, tell, result
files), measured for information.

    python bench/distributed.py [--quick]

Needs PostgreSQL and MariaDB on 127.0.0.1 as in tests/db_helpers.py; a storage whose
server is absent is left out with a message.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import main, make_row  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "tests" / "distributed_helpers.py"
ADMIN_URLS = {
    "postgresql": ("postgresql+psycopg2://root@127.0.0.1:5432/test", "postgresql+psycopg2://root@127.0.0.1:5432/{}"),
    "mysql": ("mysql+pymysql://root:@127.0.0.1:3306/test", "mysql+pymysql://root:@127.0.0.1:3306/{}"),
}
URL_VARIABLES = {"postgresql": "MALAHYDRA_POSTGRESQL_URL", "mysql": "MALAHYDRA_MYSQL_URL"}

log = logging.getLogger(__name__)


class Database:
    """A fresh database on a local server, dropped on exit."""

    def __init__(self, service: str) -> None:
        import sqlalchemy

        admin, template = ADMIN_URLS[service]
        self.engine = sqlalchemy.create_engine(admin, isolation_level="AUTOCOMMIT")
        self.name = f"malahydra_bench_{secrets.token_hex(4)}"
        self.service = service
        with self.engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {self.name}"))
        self.url = template.format(self.name)

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc) -> None:
        import sqlalchemy

        force = " WITH (FORCE)" if self.service == "postgresql" else ""
        with self.engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {self.name}{force}"))
        self.engine.dispose()


def run_drivers(count: int, storage: str, work: Path, n_trials: int, step_s: float, env_extra: dict) -> float:
    """Run `count` drivers to a budget of `n_trials`; return the seconds from the first start to the last end."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(env_extra)
    study = f"bench_{secrets.token_hex(4)}"
    command = [sys.executable, str(APP), "-m", f"hydra.sweep.dir={work / 'sweep'}", f"log_file={work / 'eval.log'}",
               f"storage={storage}", f"hydra.sweeper.study_name={study}", f"hydra.sweeper.n_trials={n_trials}",
               "hyper_opt_method=random", "epochs=1", f"step_s={step_s}"]
    started = time.perf_counter()
    processes = [subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for _ in range(count)]
    for process in processes:
        _, error = process.communicate(timeout=1800)
        if process.returncode:
            raise SystemExit(f"A driver failed with exit code {process.returncode}: {error.strip()[-500:]}")
    return time.perf_counter() - started


def startup_seconds(storage: str, env_extra: dict) -> float:
    """Seconds of a driver that runs one trial: interpreter, Hydra and study start-up."""
    with tempfile.TemporaryDirectory() as work:
        return run_drivers(1, storage, Path(work), 1, 0.0, env_extra)


def scaling_row(quick: bool) -> dict | None:
    try:
        database = Database("postgresql")
    except Exception as error:  # noqa: BLE001 -- no server: leave the row out
        log.warning("PostgreSQL on 127.0.0.1 is not reachable (%s); no scaling row.", type(error).__name__)
        return None
    trials = 8 if quick else 24
    with database:
        env = {URL_VARIABLES["postgresql"]: database.url}
        startup = startup_seconds("postgresql", env)
        with tempfile.TemporaryDirectory() as work:
            one = trials / max(1e-9, run_drivers(1, "postgresql", Path(work), trials, 1.0, env) - startup)
        with tempfile.TemporaryDirectory() as work:
            four = trials * 4 / max(1e-9, run_drivers(4, "postgresql", Path(work), trials * 4, 1.0, env) - startup)
    # Start-up (about 2 s per driver, in parallel for four) is measured once and subtracted
    # from both runs, so the rows compare the steady state of the search loop.
    return make_row("4 drivers vs 1 driver on PostgreSQL, 1 s trials", four, 4 * one, 4 * one / four,
                    ">= 3.5x one driver", 4 / 3.5, "trials/s", one_driver_trials_per_s=one,
                    speedup=four / one, trials_one=trials, trials_four=trials * 4, startup_s=startup)


def overhead_rows(quick: bool) -> list[dict]:
    trials = 10 if quick else 40
    rows = []
    for storage in ("sqlite", "journal", "postgresql", "mysql"):
        env: dict = {}
        database = None
        if storage in URL_VARIABLES:
            try:
                database = Database(storage)
            except Exception as error:  # noqa: BLE001 -- no server: leave the row out
                log.warning("%s on 127.0.0.1 is not reachable (%s); no overhead row.", storage, type(error).__name__)
                continue
            env = {URL_VARIABLES[storage]: database.url}
        try:
            startup = startup_seconds(storage, env)
            with tempfile.TemporaryDirectory() as work:
                total = run_drivers(1, storage, Path(work), trials + 1, 0.0, env)
        finally:
            if database is not None:
                database.__exit__()
        per_trial = (total - startup) / trials
        rows.append(make_row(f"driver loop time per near-instant trial, {storage}", per_trial * 1000, None, None,
                             None, None, "ms", trials=trials, startup_s=startup))
    return rows


def run(quick: bool) -> list[dict]:
    rows = overhead_rows(quick)
    scaling = scaling_row(quick)
    return rows + ([scaling] if scaling else [])


if __name__ == "__main__":
    main(run, __doc__)
