"""Job-side setup of the launcher: runs inside each cluster job, around the training task.

`JobInfoTask` writes JOB_INFO_FILE (job id and log paths) into the job's output directory,
so a search can show where a trial's log is. `prepare_slurm_signals` makes the
training's step-boundary checkpoint come before submitit's requeue and before the
exit on SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Written by each job into its output directory at every start (a requeued job rewrites it
# with its restart count). The launcher adds `state` and `error` for a job that failed.
JOB_INFO_FILE = "cluster_job.json"


def current_job_info(hydra_job_num: int | None = None) -> dict[str, Any] | None:
    """Describe the submitit job this process runs in, or return None outside of one."""
    import submitit

    try:
        environment = submitit.JobEnvironment()
    except RuntimeError:
        return None
    paths = environment.paths
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    return {
        "cluster": environment.cluster,
        "job_id": environment.job_id,
        "array_job_id": environment.array_job_id,
        "array_task_id": environment.array_task_id,
        "hydra_job_num": hydra_job_num,
        "stdout": str(paths.stdout),
        "stderr": str(paths.stderr),
        "restarts": int(restarts) if restarts.isdigit() else 0,
        "hostname": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_job_info(output_dir: Path, info: dict[str, Any]) -> None:
    """Merge `info` into JOB_INFO_FILE of `output_dir`, replacing the file atomically."""
    path = Path(output_dir) / JOB_INFO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = read_job_info(path.parent) or {}
    merged.update(info)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(merged, indent=2) + "\n")
    os.replace(temporary, path)


def read_job_info(output_dir: Path) -> dict[str, Any] | None:
    """Return the JOB_INFO_FILE of a job's output directory, or None when it has none."""
    try:
        return json.loads((Path(output_dir) / JOB_INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


class JobInfoTask:
    """Wrap a Hydra task function so that each job records its cluster job first."""

    def __init__(self, task_function: Callable[[Any], Any]):
        self.task_function = task_function

    def __call__(self, cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig

        hydra_config = HydraConfig.get()
        info = current_job_info(hydra_config.job.get("num"))
        if info is not None:
            write_job_info(Path(hydra_config.runtime.output_dir), info)
            log.info("Cluster job %s (restart %d); log %s", info["job_id"], info["restarts"], info["stderr"])
        return self.task_function(cfg)


def prepare_slurm_signals() -> None:
    """Make SLURM's stop signals end the job only after the training's checkpoint.

    The training defers SIGUSR1, SIGTERM and SIGINT (malahydra.training.preemption) to the
    next optimizer step, writes its checkpoint there, then calls the handler set before.

    - submitit 1.5 requests USR2 from SLURM before the time limit and on preemption, and binds
      its checkpoint-and-requeue handler to it. Here that handler moves to SIGUSR1 and USR2
      re-raises itself as SIGUSR1, so the training checkpoints before submitit requeues.
    - SIGTERM comes from scancel, `scontrol requeue`, the time limit and preemption without
      a user signal, always followed by SIGKILL after KillWait seconds. submitit ignores it,
      so the job would train on until killed; here it ends the job after the checkpoint.

    Outside training (data loading, the final metrics) the handlers act at once.
    """
    import submitit

    from malahydra.training.preemption import STOP_SIGNALS

    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    preemption_signal = getattr(signal, f"SIG{submitit.JobEnvironment.USR_SIG}", None)
    if preemption_signal is None or preemption_signal in STOP_SIGNALS:
        return
    requeue_handler = signal.getsignal(preemption_signal)
    if not callable(requeue_handler):
        return
    signal.signal(signal.SIGUSR1, requeue_handler)
    signal.signal(preemption_signal, _relay_as_sigusr1)


def _relay_as_sigusr1(signum: int, frame: Any) -> None:
    log.warning("Received %s; handling it as SIGUSR1 after the current optimizer step", signal.Signals(signum).name)
    os.kill(os.getpid(), signal.SIGUSR1)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    log.warning("Received SIGTERM: SLURM ends this job (scancel, requeue, time limit or preemption); exiting")
    raise SystemExit(128 + signum)
