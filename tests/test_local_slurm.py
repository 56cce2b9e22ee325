"""Tests of the single-node SLURM cluster that scripts/local-slurm.sh starts.

They submit real jobs with sbatch and submitit and read job states with scontrol, because
accounting (sacct) is off on that cluster.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import submitit

from slurm_helpers import (
    default_partition,
    job_fields,
    require_slurm,
    run_slurm_command,
    submit_batch,
    wait_for_job_state,
)

pytestmark = pytest.mark.slurm

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "local-slurm.sh"
# Bounds for one job to start or finish on an idle node. A requeued job also waits
# cred_expire (10 s in the slurm.conf that the script writes) before it may start again.
START_TIMEOUT_S = 30
REQUEUE_TIMEOUT_S = 60


def wait_for_files(paths: list[Path], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(path.exists() for path in paths):
        if time.monotonic() > deadline:
            missing = [str(path) for path in paths if not path.exists()]
            raise TimeoutError(f"files still missing after {timeout_s} s: {missing}")
        time.sleep(0.5)


def wait_for_line_count(path: Path, count: int, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} has {len(lines)} lines after {timeout_s} s; expected {count}")
        time.sleep(0.5)


def cancel_quietly(job_id: str) -> None:
    subprocess.run(["scancel", job_id], capture_output=True, timeout=30)


def test_status_exits_zero_when_running() -> None:
    require_slurm()

    status = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True, timeout=60)

    assert status.returncode == 0, status.stdout + status.stderr
    assert "slurmctld  running" in status.stdout
    assert "slurmd     running" in status.stdout


def test_job_array_writes_all_outputs(tmp_path: Path) -> None:
    require_slurm()
    outputs = [tmp_path / f"task_{index}.txt" for index in range(3)]

    job_id = submit_batch(
        [
            "--array=0-2",
            f"--output={tmp_path}/slurm-%A_%a.out",
            "--wrap",
            f"echo $SLURM_ARRAY_TASK_ID > {tmp_path}/task_$SLURM_ARRAY_TASK_ID.txt",
        ]
    )
    try:
        wait_for_files(outputs, START_TIMEOUT_S)
    finally:
        cancel_quietly(job_id)

    for index, path in enumerate(outputs):
        assert path.read_text().strip() == str(index)


def test_requeue_running_job_runs_again(tmp_path: Path) -> None:
    require_slurm()
    starts = tmp_path / "starts.txt"

    # Each start appends SLURM_RESTART_COUNT, which SLURM sets only after a requeue.
    job_id = submit_batch(
        [
            f"--output={tmp_path}/slurm-%j.out",
            "--wrap",
            f"echo restart=${{SLURM_RESTART_COUNT:-0}} >> {starts}; sleep 300",
        ]
    )
    try:
        wait_for_line_count(starts, 1, START_TIMEOUT_S)
        run_slurm_command(["scontrol", "requeue", job_id])
        lines = wait_for_line_count(starts, 2, REQUEUE_TIMEOUT_S)
        fields = job_fields(job_id)
    finally:
        cancel_quietly(job_id)

    assert lines == ["restart=0", "restart=1"]
    assert fields["Restarts"] == "1"
    assert fields["JobState"] == "RUNNING"


def test_scancel_running_job_is_cancelled(tmp_path: Path) -> None:
    require_slurm()
    job_id = submit_batch([f"--output={tmp_path}/slurm-%j.out", "--wrap", "sleep 300"])
    try:
        wait_for_job_state(job_id, {"RUNNING"}, START_TIMEOUT_S)
    finally:
        run_slurm_command(["scancel", job_id])

    assert wait_for_job_state(job_id, {"CANCELLED"}, START_TIMEOUT_S) == "CANCELLED"


def make_executor(folder: Path) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder / "%j")
    executor.update_parameters(timeout_min=5, slurm_partition=default_partition())
    return executor


def test_submitit_returns_result(tmp_path: Path) -> None:
    require_slurm()
    executor = make_executor(tmp_path)

    # Defined here so that cloudpickle ships it by value, because the job's Python cannot
    # import this test module by name.
    def double_in_job(value: int) -> tuple[int, str | None]:
        return 2 * value, os.environ.get("SLURM_JOB_ID")

    job = executor.submit(double_in_job, 21)
    try:
        # job.result() alone could block forever, because without sacct submitit cannot see a
        # job that died before writing its result.
        deadline = time.monotonic() + START_TIMEOUT_S
        while not job.done() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert job.done(), f"submitit job {job.job_id} wrote no result within {START_TIMEOUT_S} s"
        value, slurm_job_id = job.result()
    finally:
        cancel_quietly(job.job_id)

    assert executor.cluster == "slurm"
    assert value == 42
    assert slurm_job_id == job.job_id


def test_submitit_cancelled_state_unknown(tmp_path: Path) -> None:
    """Pin what submitit 1.5 reports for a cancelled job when sacct fails.

    submitit reads job states only from sacct. Without accounting, job.state stays UNKNOWN and
    job.done() stays False for a job that SLURM has cancelled, so job.result() would wait
    forever. Callers must query scontrol or squeue instead. This test fails once either changes.
    """
    require_slurm()
    sacct = subprocess.run(["sacct", "--noheader"], capture_output=True, timeout=30)
    if sacct.returncode == 0:
        pytest.skip("sacct works on this cluster, so submitit sees real job states")
    executor = make_executor(tmp_path)

    job = executor.submit(time.sleep, 300)
    try:
        wait_for_job_state(job.job_id, {"RUNNING"}, START_TIMEOUT_S)
    finally:
        job.cancel(check=False)
    wait_for_job_state(job.job_id, {"CANCELLED"}, START_TIMEOUT_S)

    assert job.state == "UNKNOWN"
    assert not job.done(force_check=True)
