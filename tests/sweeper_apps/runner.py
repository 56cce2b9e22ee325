"""Run Hydra apps as `-m` subprocesses and read back their studies, for sweeper tests."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from malahydra.search.storage import open_storage

REPO = Path(__file__).resolve().parents[2]
QUADRATIC_APP = Path(__file__).with_name("quadratic_app.py")
TRAIN_SCRIPT = REPO / "train.py"

# Storage config option -> environment variable with its URL (None: a file in the sweep dir).
URL_VARIABLES = {"postgresql": "MALAHYDRA_POSTGRESQL_URL", "mysql": "MALAHYDRA_MYSQL_URL"}
STORAGE_FILES = {"sqlite": "optuna.db", "journal": "optuna.journal"}


def app_env(extra: dict | None = None) -> dict:
    """Environment of a sweep subprocess: the repository first on PYTHONPATH.

    The subprocess then runs this checkout's sweeper and search code even when another
    copy of malahydra is installed.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("HYDRA_FULL_ERROR", None)
    env.update(extra or {})
    return env


def run_sweep(app: Path, sweep_dir: Path, *overrides: str, env: dict | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python app -m hydra.sweep.dir=<sweep_dir> overrides...` to its end."""
    command = [sys.executable, str(app), "-m", f"hydra.sweep.dir={sweep_dir}", *overrides]
    return subprocess.run(command, cwd=sweep_dir.parent, env=app_env(env), capture_output=True,
                          text=True, timeout=timeout)


def run_sweep_until(app: Path, sweep_dir: Path, stop_when: Callable[[], bool], *overrides: str,
                    env: dict | None = None, timeout: float = 600) -> int:
    """Run a sweep and SIGKILL its driver once `stop_when()` is true; return the exit code."""
    command = [sys.executable, str(app), "-m", f"hydra.sweep.dir={sweep_dir}", *overrides]
    process = subprocess.Popen(command, cwd=sweep_dir.parent, env=app_env(env),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if stop_when():
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    return process.wait(timeout=60)


def storage_reference(storage: str, sweep_dir: Path, study_name: str = "malahydra") -> str:
    if storage in STORAGE_FILES:
        return f"{storage if storage == 'journal' else 'sqlite'}:{sweep_dir.resolve() / STORAGE_FILES[storage]}"
    if storage == "memory":
        return f"memory:{study_name}"
    return f"env:{URL_VARIABLES[storage]}"


def load_trials(storage: str, sweep_dir: Path, study_name: str = "malahydra") -> list[FrozenTrial]:
    """Trials of a study after its driver has stopped (URLs come from os.environ)."""
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_reference(storage, sweep_dir, study_name)))
    return study.get_trials(deepcopy=False)


def states(trials: list[FrozenTrial]) -> dict[str, int]:
    return {state.name: sum(t.state == state for t in trials) for state in TrialState if any(t.state == state for t in trials)}
