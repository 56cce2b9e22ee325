"""Wait for every job of a submitit launch, and tell which ended without a result.

A job has finished when its submitit result file exists. On SLURM it has also finished
when the controller reports a terminal state (CANCELLED, TIMEOUT, OUT_OF_MEMORY, ...) or
no longer lists the job, and then no result file turns up within `result_grace_s`: that
job failed. A requeued job (PENDING again after PREEMPTED, REQUEUED or a signal) is not
finished. A local job has finished when its process has exited.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import failures
from .slurm import HELD_STATES, PREEMPTED, ControllerReply, SlurmJobState, query_jobs

log = logging.getLogger(__name__)

# A PREEMPTED job normally turns PENDING within seconds when PreemptMode=REQUEUE; only one
# that stays PREEMPTED this long is taken as cancelled by preemption (PreemptMode=CANCEL).
PREEMPTED_FINAL_S = 60.0
# Consecutive polls in which the controller must miss a job before it counts as lost, so
# that one odd reply loses nothing.
LOST_AFTER_POLLS = 2
# At most one warning per this many seconds while the controller does not reply.
CONTROLLER_WARNING_INTERVAL_S = 60.0


@dataclass
class _Progress:
    """Poll history of one job that has no result yet."""

    # When the job was first seen in its current terminal (or PREEMPTED) state, or missing.
    ended_since: float | None = None
    missing_polls: int = 0
    held_warned: bool = False


class JobWatcher:
    """Poll submitit jobs until each has a result or has ended without one.

    `wait()` returns one entry per job, in order: None for a job with a result file (read
    it with `job.results()`), else the ClusterJobError that describes its end. Subclasses
    decide when a job without a result has ended.
    """

    cluster = "unknown"

    def __init__(
        self,
        jobs: Sequence[Any],
        poll_interval_s: float,
        result_grace_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.jobs = list(jobs)
        self.poll_interval_s = poll_interval_s
        self.result_grace_s = result_grace_s
        self.clock = clock
        self.sleep = sleep
        self.outcomes: dict[int, failures.ClusterJobError | None] = {}
        self.progress = {index: _Progress() for index in range(len(self.jobs))}

    @property
    def unfinished(self) -> list[int]:
        return [index for index in range(len(self.jobs)) if index not in self.outcomes]

    def wait(self) -> list[failures.ClusterJobError | None]:
        reported = -1
        while True:
            self.poll()
            if len(self.outcomes) != reported:
                reported = len(self.outcomes)
                log.info("%d of %d %s job(s) finished", reported, len(self.jobs), self.cluster)
            if not self.unfinished:
                return [self.outcomes[index] for index in range(len(self.jobs))]
            self.sleep(self.poll_interval_s)

    def poll(self) -> None:
        """Check every unfinished job once and record the ones that have finished."""
        for index in self.unfinished:
            if has_result(self.jobs[index]):
                self.outcomes[index] = None
        remaining = self.unfinished
        if remaining:
            self._check_ended(remaining)

    def _check_ended(self, indices: list[int]) -> None:
        raise NotImplementedError

    def _fail(self, index: int, error: failures.ClusterJobError) -> None:
        # The result file can lag behind the end of the job; look once more before failing it.
        if has_result(self.jobs[index]):
            self.outcomes[index] = None
            return
        log.error("%s", error)
        self.outcomes[index] = error


def has_result(job: Any) -> bool:
    return job.paths.result_pickle.exists()


def log_paths(job: Any) -> tuple[str, str]:
    return str(job.paths.stdout), str(job.paths.stderr)


class SlurmJobWatcher(JobWatcher):
    """JobWatcher for SLURM jobs; states come from `scontrol show job` (see `query`)."""

    cluster = "slurm"

    def __init__(self, *args: Any, query: Callable[[list[str]], ControllerReply] = query_jobs, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.query = query
        self.last_controller_warning = -CONTROLLER_WARNING_INTERVAL_S

    def _check_ended(self, indices: list[int]) -> None:
        reply = self.query([self.jobs[index].job_id for index in indices])
        if reply.error is not None:
            self._warn_controller(reply.error)
            return
        now = self.clock()
        for index in indices:
            job_id = self.jobs[index].job_id
            state = reply.jobs.get(job_id)
            if state is None and job_id.split("_", 1)[0] in reply.answered:
                self._check_missing(index, now)
            elif state is not None:
                self._check_state(index, state, now)

    def _check_state(self, index: int, state: SlurmJobState, now: float) -> None:
        progress = self.progress[index]
        progress.missing_polls = 0
        if not (state.terminal or state.state == PREEMPTED):
            progress.ended_since = None
            if state.state in HELD_STATES and not progress.held_warned:
                progress.held_warned = True
                log.warning(
                    "SLURM job %s is held (%s); it runs again after `scontrol release %s`, or cancel it with scancel",
                    state.job_id,
                    state.state,
                    state.job_id,
                )
            return
        if progress.ended_since is None:
            progress.ended_since = now
        settle_s = self.result_grace_s if state.terminal else max(self.result_grace_s, PREEMPTED_FINAL_S)
        if now - progress.ended_since >= settle_s:
            stdout, stderr = log_paths(self.jobs[index])
            error = failures.ended_without_result(
                state.job_id, state.state, stdout=stdout, stderr=stderr, reason=state.reason, exit_code=state.exit_code
            )
            self._fail(index, error)

    def _check_missing(self, index: int, now: float) -> None:
        progress = self.progress[index]
        progress.missing_polls += 1
        if progress.ended_since is None:
            progress.ended_since = now
        if progress.missing_polls >= LOST_AFTER_POLLS and now - progress.ended_since >= self.result_grace_s:
            stdout, stderr = log_paths(self.jobs[index])
            self._fail(index, failures.lost_job(self.jobs[index].job_id, stdout=stdout, stderr=stderr))

    def _warn_controller(self, error: str) -> None:
        now = self.clock()
        if now - self.last_controller_warning >= CONTROLLER_WARNING_INTERVAL_S:
            self.last_controller_warning = now
            log.warning("Cannot read job states (%s); still waiting for %d job(s)", error, len(self.unfinished))


class LocalJobWatcher(JobWatcher):
    """JobWatcher for submitit_local jobs: a job ends when its process exits."""

    cluster = "local"

    def _check_ended(self, indices: list[int]) -> None:
        now = self.clock()
        for index in indices:
            job = self.jobs[index]
            if not job.done():
                continue
            progress = self.progress[index]
            if progress.ended_since is None:
                progress.ended_since = now
            if now - progress.ended_since >= self.result_grace_s:
                stdout, stderr = log_paths(job)
                self._fail(index, failures.local_job_ended(job.job_id, job.state, stdout=stdout, stderr=stderr))
