"""Helpers for tests that submit jobs to a real SLURM cluster.

Start the single-node test cluster with ``bash scripts/local-slurm.sh start`` (as root).
A test calls :func:`require_slurm` first. It skips when no cluster responds, but fails when
the environment sets ``MALAHYDRA_REQUIRE_SLURM=1``, as CI does, so that no SLURM test can
pass by skipping.

Accounting is off on the test cluster, so ``sacct`` fails. Job states come from
``scontrol show job``, which keeps a finished job for MinJobAge (300 s on that cluster).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Collection, Sequence
from functools import cache

import pytest

REQUIRE_SLURM_ENV = "MALAHYDRA_REQUIRE_SLURM"
START_HINT = "start one with `bash scripts/local-slurm.sh start`"
# Node states in which the node accepts jobs. sinfo appends *, ~ or # to the states of nodes
# that do not respond, are powered down or are powering up.
UP_NODE_STATES = frozenset({"idle", "mixed", "allocated", "completing"})
TERMINAL_JOB_STATES = frozenset(
    {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)
COMMAND_TIMEOUT_S = 30


@cache
def slurm_unavailable_reason() -> str | None:
    """Return why no SLURM cluster can run jobs here, or None when one can.

    The result is cached for the test session, because sinfo retries for about 10 s
    before it reports that no controller responds.
    """
    if shutil.which("sbatch") is None:
        return f"sbatch not found on PATH; {START_HINT}"
    try:
        sinfo = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%T"],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
    except FileNotFoundError:
        return f"sinfo not found on PATH; {START_HINT}"
    except subprocess.TimeoutExpired:
        return f"sinfo timed out after {COMMAND_TIMEOUT_S} s; {START_HINT}"
    if sinfo.returncode != 0:
        message = sinfo.stderr.strip().splitlines()[-1:] or ["no output"]
        return f"sinfo failed with exit code {sinfo.returncode} ({message[0]}); {START_HINT}"

    states = set(sinfo.stdout.split())
    if not states & UP_NODE_STATES:
        return f"no SLURM node is up (sinfo node states: {sorted(states) or 'none'}); {START_HINT}"
    return None


def require_slurm() -> None:
    """Skip the calling test when no SLURM cluster responds, or fail when CI requires one."""
    reason = slurm_unavailable_reason()
    if reason is None:
        return
    if os.environ.get(REQUIRE_SLURM_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_SLURM_ENV}=1 forbids skipping SLURM tests)", pytrace=False)
    pytest.skip(reason)


def run_slurm_command(args: Sequence[str]) -> str:
    """Run a SLURM client command and return its stdout, raising RuntimeError when it fails."""
    completed = subprocess.run(list(args), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed with exit code {completed.returncode}: {completed.stderr.strip()}"
        )
    return completed.stdout


def submit_batch(args: Sequence[str]) -> str:
    """Submit a batch job with ``sbatch --parsable`` and return its job id (the array id for arrays)."""
    output = run_slurm_command(["sbatch", "--parsable", *args]).strip()
    # --parsable prints "jobid" or "jobid;cluster".
    return output.split(";")[0]


def default_partition() -> str:
    """Return the name of the cluster's default partition (sinfo marks it with a trailing *)."""
    for name in run_slurm_command(["sinfo", "--noheader", "--format=%P"]).split():
        if name.endswith("*"):
            return name[:-1]
    raise RuntimeError("sinfo lists no default partition; set Default=YES on one partition in slurm.conf")


def job_fields(job_id: str) -> dict[str, str]:
    """Return the fields of ``scontrol show job --oneliner`` for one job, such as JobState.

    A value that contains spaces (Command, WorkDir, Reason) is cut at its first space.
    For an array id, the fields of the first task listed are returned.
    """
    output = run_slurm_command(["scontrol", "--oneliner", "show", "job", job_id])
    first_line = output.strip().splitlines()[0]
    return dict(re.findall(r"(\S+?)=(\S*)", first_line))


def job_state(job_id: str) -> str:
    """Return the JobState of a job as scontrol reports it, for example RUNNING or CANCELLED."""
    return job_fields(job_id)["JobState"]


def wait_for_job_state(job_id: str, states: Collection[str], timeout_s: float) -> str:
    """Poll scontrol until the job reaches one of ``states``, and return that state.

    Raises RuntimeError when the job ends in another state, and TimeoutError with the last
    state seen when ``timeout_s`` seconds pass first.
    """
    deadline = time.monotonic() + timeout_s
    state = job_state(job_id)
    while state not in states:
        if state in TERMINAL_JOB_STATES:
            raise RuntimeError(f"job {job_id} ended as {state}; expected one of {sorted(states)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {state} after {timeout_s} s; expected one of {sorted(states)}")
        time.sleep(0.5)
        state = job_state(job_id)
    return state
