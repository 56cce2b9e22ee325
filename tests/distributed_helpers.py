"""Several search drivers on one study: a near-instant Hydra app and helpers to run it.

Run as a script, this file is the Hydra app (`python distributed_helpers.py -m ...`).
Its objective takes `epochs` steps of `step_s` seconds, keeps a checkpoint in the job's
directory and resumes from it, and appends one line per evaluation to `log_file`, a
log outside the sweep directory: `<trial dir> <x> <pid> <Unix time at the end>`. A
finished job that runs again returns its stored value without appending, as a finished
training does. bench/distributed.py times the driver loop from these end times.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APP = Path(__file__).resolve()


@dataclass
class Evaluation:
    trial_dir: str
    x: float
    pid: int
    finished: float


def read_log(path: Path) -> list[Evaluation]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        trial_dir, x, pid, finished = line.split()
        rows.append(Evaluation(trial_dir, float(x), int(pid), float(finished)))
    return rows


def log_counts(path: Path) -> Counter:
    return Counter(row.x for row in read_log(path))


def fixed_configs(count: int) -> list[dict]:
    """Distinct configurations, like the rows of an OAT design: x on a grid, y cycling."""
    return [{"x": round(-1 + 2 * i / count, 6), "y": i % 5} for i in range(count)]


def driver_command(sweep_dir: Path, log_file: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(APP), "-m", f"hydra.sweep.dir={sweep_dir}", f"log_file={log_file}", *overrides]


def driver_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("HYDRA_FULL_ERROR", None)
    env.update(extra or {})
    return env


def start_drivers(count: int, sweep_dir: Path, log_file: Path, *overrides: str,
                  envs: list[dict] | None = None) -> list[subprocess.Popen]:
    """Start `count` drivers of the same command; stdout and stderr go to files in the sweep's parent."""
    sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    processes = []
    for index in range(count):
        output = open(sweep_dir.parent / f"driver_{index}.log", "w")
        processes.append(subprocess.Popen(
            driver_command(sweep_dir, log_file, *overrides), cwd=sweep_dir.parent,
            env=driver_env((envs or [{}] * count)[index]), stdout=output, stderr=subprocess.STDOUT,
        ))
    return processes


def wait_all(processes: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


def failed_index(codes: list[int], first: int = 0) -> int:
    """Return the number of the first driver with a nonzero exit code.

    `codes` are the exit codes of drivers `first`, `first` + 1, and so on.
    """
    return first + next((i for i, code in enumerate(codes) if code), 0)


def driver_output(sweep_dir: Path, index: int) -> str:
    return (sweep_dir.parent / f"driver_{index}.log").read_text()


def unique_name(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


# -- databases -------------------------------------------------------------------------


def fresh_database(service: str) -> tuple[str, callable]:
    """Create an empty database (no schema) on the local server; return its URL and a dropper."""
    import sqlalchemy

    from db_helpers import MYSQL_ADMIN_URL, POSTGRESQL_ADMIN_URL, _admin_engine

    name = unique_name("malahydra_fresh")
    if service == "postgresql":
        engine = _admin_engine(POSTGRESQL_ADMIN_URL, "PostgreSQL")
        create, drop = f"CREATE DATABASE {name}", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        url = f"postgresql+psycopg2://root@127.0.0.1:5432/{name}"
    else:
        engine = _admin_engine(MYSQL_ADMIN_URL, "MariaDB/MySQL")
        create, drop = f"CREATE DATABASE {name}", f"DROP DATABASE IF EXISTS {name}"
        url = f"mysql+pymysql://root:@127.0.0.1:3306/{name}"
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(create))

    def dropper() -> None:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(drop))
        engine.dispose()

    return url, dropper


# -- the app ---------------------------------------------------------------------------


def _register_app_config() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="distributed_app", node={
        "defaults": [{"hyper_opt_method": "tpe"}, {"storage": "sqlite"}, "_self_"],
        "x": 0.0, "y": 0, "seed": 0, "metric": "ldos",
        "epochs": 2, "step_s": 0.0, "log_file": "???",
        "hydra": {
            "searchpath": ["pkg://malahydra.conf"],
            "sweeper": {"seed_key": "seed", "metric_key": "metric", "n_trials": 6,
                        "params": {"x": "interval(-1, 1)", "y": "range(0, 5)"}},
        },
    })


def objective(cfg) -> float:
    from hydra.core.hydra_config import HydraConfig

    out = Path(HydraConfig.get().runtime.output_dir)
    result = out / "result.json"
    if result.exists():
        return json.loads(result.read_text())["value"]
    checkpoint = out / "checkpoint.json"
    first = json.loads(checkpoint.read_text())["epoch"] + 1 if checkpoint.exists() else 0
    for epoch in range(first, cfg.epochs):
        time.sleep(cfg.step_s)
        _write_atomically(checkpoint, json.dumps({"epoch": epoch}))
    value = (cfg.x - 0.3) ** 2 + (cfg.y - 2) ** 2
    with open(cfg.log_file, "a") as log:
        log.write(f"{out.name} {cfg.x!r} {os.getpid()} {time.time()!r}\n")
    _write_atomically(result, json.dumps({"value": value}))
    return value


def _write_atomically(path: Path, text: str) -> None:
    # A driver killed mid-write leaves the old file or none, as with the training's checkpoints.
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def create_study_at(reference: str, study_name: str, start_at: float) -> None:
    """Open the study at the Unix time `start_at`, then run one trial (for the start-up race test)."""
    sys.path.insert(0, str(REPO))
    from malahydra.search.storage import load_or_create_study

    time.sleep(max(0.0, start_at - time.time()))
    study = load_or_create_study(reference, study_name, "minimize", None, None)
    trial = study.ask()
    study.tell(trial, 1.0)


if __name__ == "__main__":
    import faulthandler
    import signal

    import hydra

    # `kill -USR1 <pid>` prints every thread's stack into the driver log, for a hung driver.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    _register_app_config()
    hydra.main(config_path=None, config_name="distributed_app", version_base="1.3")(objective)()
