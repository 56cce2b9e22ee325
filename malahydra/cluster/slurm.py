"""Job states from the SLURM controller, for clusters with or without accounting.

submitit 1.5 reads job states only from `sacct`. Where accounting is off, `sacct` fails,
submitit reports every job as UNKNOWN, and a job that SLURM cancelled or killed looks
unfinished forever. These helpers query the controller itself: `scontrol show job` lists a
job until MinJobAge seconds (300 by default) after it ended, and `squeue` lists the jobs
that are still queued, running or completing.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# States after which SLURM will not run the job again by itself.
TERMINAL_STATES = frozenset(
    {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT"}
)
# Final only where PreemptMode=CANCEL. With PreemptMode=REQUEUE the job turns PENDING again,
# so a watcher should wait a while before calling it final.
PREEMPTED = "PREEMPTED"
# Held jobs run again only after `scontrol release`.
HELD_STATES = frozenset({"REQUEUE_HOLD", "SPECIAL_EXIT"})
# scontrol's message for a job id the controller does not know (never existed, or purged
# MinJobAge seconds after it ended).
UNKNOWN_JOB_MESSAGE = "Invalid job id specified"
COMMAND_TIMEOUT_S = 30

_FIELD = re.compile(r"(?:^|\s)(JobId|ArrayJobId|ArrayTaskId|JobState|Reason|ExitCode|Restarts)=(\S*)")


@dataclass(frozen=True)
class SlurmJobState:
    """One job or array task as `scontrol show job` reports it."""

    # "123_4" for task 4 of array 123 (submitit's spelling), "123" for a plain job.
    job_id: str
    state: str
    reason: str | None = None
    # "exit_code:signal" of the batch script, for example "1:0" or "0:15".
    exit_code: str | None = None
    restarts: int = 0

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class ControllerReply:
    """Jobs the controller reported, or the error that kept it from replying."""

    jobs: dict[str, SlurmJobState]
    # The array or job ids the controller replied for. A job under one of them that is
    # missing from `jobs` is unknown to the controller.
    answered: frozenset[str]
    error: str | None = None


def expand_task_ids(spec: str) -> list[int]:
    """Expand an ArrayTaskId such as "3", "1-3%2", "0,4-5" or "0-15:4" into task numbers."""
    spec = spec.split("%", 1)[0]
    tasks: list[int] = []
    for part in filter(None, spec.split(",")):
        bounds, _, step = part.partition(":")
        first, _, last = bounds.partition("-")
        tasks.extend(range(int(first), int(last or first) + 1, int(step or 1)))
    return tasks


def parse_show_job(text: str) -> dict[str, SlurmJobState]:
    """Parse `scontrol --oneliner show job` output into states keyed by submitit job id.

    Array tasks that have not started share one line whose ArrayTaskId is a range; each
    task of the range gets its own entry.
    """
    jobs: dict[str, SlurmJobState] = {}
    for line in text.splitlines():
        fields = dict(_FIELD.findall(line))
        if "JobId" not in fields or "JobState" not in fields:
            continue
        reason = fields.get("Reason")
        common = {
            "state": fields["JobState"],
            "reason": None if reason in (None, "None", "(null)") else reason,
            "exit_code": fields.get("ExitCode"),
            "restarts": int(fields.get("Restarts") or 0),
        }
        array_id, task_spec = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
        if array_id and task_spec:
            for task in expand_task_ids(task_spec):
                job_id = f"{array_id}_{task}"
                jobs[job_id] = SlurmJobState(job_id=job_id, **common)
        else:
            jobs[fields["JobId"]] = SlurmJobState(job_id=fields["JobId"], **common)
    return jobs


def array_id_of(job_id: str) -> str:
    """Return the id that `scontrol show job` and `scancel` take for a whole array: "123" for "123_4"."""
    return job_id.split("_", 1)[0]


def query_jobs(job_ids: Iterable[str]) -> ControllerReply:
    """Ask the controller for the states of `job_ids` (submitit ids, "123_4" or "123").

    One `scontrol show job` runs per array. An id unknown to the controller is left out
    of `jobs`. When the controller does not reply, `error` is set instead.
    """
    jobs: dict[str, SlurmJobState] = {}
    answered: set[str] = set()
    for array_id in sorted({array_id_of(job_id) for job_id in job_ids}):
        try:
            completed = subprocess.run(
                ["scontrol", "--oneliner", "show", "job", array_id],
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return ControllerReply({}, frozenset(), f"scontrol show job {array_id} failed: {error}")
        if completed.returncode != 0:
            if UNKNOWN_JOB_MESSAGE in completed.stderr:
                answered.add(array_id)
                continue
            message = completed.stderr.strip() or f"exit code {completed.returncode}"
            return ControllerReply({}, frozenset(), f"scontrol show job {array_id} failed: {message}")
        answered.add(array_id)
        jobs.update(parse_show_job(completed.stdout))
    return ControllerReply(jobs, frozenset(answered))


def queued_job_ids(job_ids: Iterable[str]) -> set[str]:
    """Return which of `job_ids` squeue still lists (pending, running or completing).

    Raises RuntimeError when squeue fails.
    """
    wanted = set(job_ids)
    arrays = sorted({array_id_of(job_id) for job_id in wanted})
    if not arrays:
        return set()
    completed = subprocess.run(
        ["squeue", "--noheader", "--array", "--format=%i", f"--jobs={','.join(arrays)}"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    if completed.returncode != 0:
        # squeue rejects --jobs with ids it no longer lists, so none of them is queued.
        if UNKNOWN_JOB_MESSAGE in completed.stderr:
            return set()
        raise RuntimeError(f"squeue failed with exit code {completed.returncode}: {completed.stderr.strip()}")
    listed = set(completed.stdout.split())
    # A pending array part is listed as "123_[2-5]"; count its tasks as queued.
    queued = {job_id for job_id in wanted if job_id in listed or array_id_of(job_id) in listed}
    for entry in listed:
        match = re.fullmatch(r"(\d+)_\[(.+)\]", entry)
        if match:
            queued |= {f"{match[1]}_{task}" for task in expand_task_ids(match[2])} & wanted
    return queued


def cancel_jobs(job_ids: Iterable[str]) -> None:
    """Cancel the arrays or jobs of `job_ids` with one scancel; log and swallow its failure.

    Cancelling is best effort during an interrupt: an error here must not hide the
    interrupt that caused it.
    """
    arrays = sorted({array_id_of(job_id) for job_id in job_ids})
    if not arrays:
        return
    try:
        completed = subprocess.run(["scancel", *arrays], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.error("scancel %s failed: %s; cancel those jobs by hand", " ".join(arrays), error)
        return
    if completed.returncode != 0:
        log.error(
            "scancel %s failed with exit code %d: %s; cancel those jobs by hand",
            " ".join(arrays),
            completed.returncode,
            completed.stderr.strip(),
        )
