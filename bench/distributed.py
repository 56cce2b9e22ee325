"""Throughput of several search drivers on one study, and the driver loop time per trial.

Every figure comes from the end times of the trials' jobs, which the benchmark app
(tests/distributed_helpers.py) logs with its process id. So the start-up and exit of
the driver processes (interpreter, torch, Hydra, opening the study) count in none of
them. A driver's cycle is the time from the end of one of its jobs to the end of its
next one: the job itself plus the driver loop (tell, result files, ask under the study
lock, heartbeat, Hydra's job set-up).

Scaling: 1 and then 4 drivers run a random search of sleep-bound trials against a fresh
PostgreSQL database. Each trial sleeps 1 s in the job, so the CPU stays free for the
drivers. The rate of a run is the number of cycles completed per second inside the
window in which every driver is running: from the latest first job end of any driver
to the earliest last job end. A cycle that straddles a window edge counts with the
fraction inside the window. The ratio is 4 x one driver's rate / the four drivers'
rate (target: 4 drivers reach at least 3.5 times one driver, i.e. ratio <= 4 / 3.5).
The two runs alternate, 1 then 4, for `SCALING_ROUNDS` rounds, and the row gives the
medians and the range of the ratios.

Overhead: one driver runs near-instant trials on each storage (SQLite, journal file,
PostgreSQL, MariaDB). The row gives the median time of one cycle, which is then almost
all driver loop, for information.

    python bench/distributed.py [--quick]

Needs PostgreSQL and MariaDB on 127.0.0.1 as in tests/db_helpers.py; a storage whose
server is absent is left out with a message.
"""

from __future__ import annotations

import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
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
SCALING_DRIVERS = 4
SCALING_ROUNDS = 2
TRIAL_S = 1.0

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


def run_drivers(count: int, storage: str, work: Path, n_trials: int, step_s: float, env_extra: dict) -> dict:
    """Run `count` drivers to a budget of `n_trials` trials; return each driver's sorted trial end times.

    The times come from the app's evaluation log (Unix seconds at the end of each job),
    keyed by the driver's process id: the in-process launcher runs jobs in the driver.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(env_extra)
    study = f"bench_{secrets.token_hex(4)}"
    evaluations = work / "eval.log"
    command = [sys.executable, str(APP), "-m", f"hydra.sweep.dir={work / 'sweep'}", f"log_file={evaluations}",
               f"storage={storage}", f"hydra.sweeper.study_name={study}", f"hydra.sweeper.n_trials={n_trials}",
               "hyper_opt_method=random", "epochs=1", f"step_s={step_s}"]
    processes = [subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for _ in range(count)]
    for process in processes:
        _, error = process.communicate(timeout=1800)
        if process.returncode:
            raise SystemExit(f"A driver failed with exit code {process.returncode}: {error.strip()[-500:]}")

    by_driver: dict[int, list[float]] = defaultdict(list)
    rows = [line.split() for line in evaluations.read_text().splitlines()]
    for _, _, pid, finished in rows:
        by_driver[int(pid)].append(float(finished))
    if len(rows) != n_trials:
        raise SystemExit(f"The drivers evaluated {len(rows)} trials, not the budget of {n_trials}.")
    if len(by_driver) != count:
        raise SystemExit(f"Only {len(by_driver)} of {count} drivers ran a trial; raise the budget.")
    return {driver: sorted(times) for driver, times in by_driver.items()}


def steady_rate(by_driver: dict) -> tuple[float, float]:
    """Return the cycles per second while every driver runs (see the module docstring) and the window in seconds."""
    if any(len(times) < 2 for times in by_driver.values()):
        raise SystemExit("A driver completed fewer than 2 trials; raise the budget so that every driver runs.")
    start = max(times[0] for times in by_driver.values())
    end = min(times[-1] for times in by_driver.values())
    if end <= start:
        raise SystemExit("The drivers never ran at the same time; raise the budget.")
    cycles = 0.0
    for times in by_driver.values():
        for begin, finish in zip(times, times[1:]):
            overlap = min(finish, end) - max(begin, start)
            if overlap > 0:
                cycles += overlap / (finish - begin)
    return cycles / (end - start), end - start


def cycle_seconds(by_driver: dict) -> list[float]:
    """Return the times between consecutive trial ends of each driver."""
    return [finish - begin for times in by_driver.values() for begin, finish in zip(times, times[1:])]


def scaling_row(quick: bool) -> dict | None:
    try:
        database = Database("postgresql")
    except Exception as error:  # noqa: BLE001 -- no server: leave the row out
        log.warning("PostgreSQL on 127.0.0.1 is not reachable (%s); no scaling row.", type(error).__name__)
        return None
    per_driver = 6 if quick else 24
    rounds = 1 if quick else SCALING_ROUNDS
    ones, fours, ratios, windows = [], [], [], []
    with database:
        env = {URL_VARIABLES["postgresql"]: database.url}
        for _ in range(rounds):
            for count, rates in ((1, ones), (SCALING_DRIVERS, fours)):
                with tempfile.TemporaryDirectory() as work:
                    ends = run_drivers(count, "postgresql", Path(work), per_driver * count, TRIAL_S, env)
                rate, window = steady_rate(ends)
                rates.append(rate)
                windows.append(round(window, 1))
            ratios.append(SCALING_DRIVERS * ones[-1] / fours[-1])
    one, four = statistics.median(ones), statistics.median(fours)
    return make_row(f"{SCALING_DRIVERS} drivers vs 1 driver on PostgreSQL, {TRIAL_S:g} s trials",
                    four, SCALING_DRIVERS * one, statistics.median(ratios),
                    ">= 3.5x one driver", SCALING_DRIVERS / 3.5, "trials/s",
                    ratio_range=[min(ratios), max(ratios)], one_driver_trials_per_s=ones,
                    four_drivers_trials_per_s=fours, speedup=four / one, trials_per_driver=per_driver,
                    windows_s=windows)


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
            with tempfile.TemporaryDirectory() as work:
                cycles = cycle_seconds(run_drivers(1, storage, Path(work), trials, 0.0, env))
        finally:
            if database is not None:
                database.__exit__()
        rows.append(make_row(f"driver loop time per near-instant trial, {storage}", statistics.median(cycles) * 1000,
                             None, None, None, None, "ms", trials=trials,
                             cycle_ms_range=[min(cycles) * 1000, max(cycles) * 1000]))
    return rows


def run(quick: bool) -> list[dict]:
    rows = overhead_rows(quick)
    scaling = scaling_row(quick)
    return rows + ([scaling] if scaling else [])


if __name__ == "__main__":
    main(run, __doc__)
