"""Errors of cluster jobs that ended without a result, with their one-line reasons."""

from __future__ import annotations


class ClusterJobError(RuntimeError):
    """A cluster job that ended without a result, or raised outside the training task.

    `str()` is one line: the job id, what happened and the path of the job's log, which is
    what a search shows as a trial's fail reason. The fields carry the same facts for
    programs. `state` is the SLURM job state (CANCELLED, TIMEOUT, ...), LOST for a job
    the controller forgot without a result, FAILED for an error raised in the job's
    Python, or the state submitit reports for a local job.
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str,
        state: str,
        stdout: str | None = None,
        stderr: str | None = None,
        reason: str | None = None,
        exit_code: str | None = None,
    ):
        super().__init__(message)
        self.job_id = job_id
        self.state = state
        self.stdout = stdout
        self.stderr = stderr
        self.reason = reason
        self.exit_code = exit_code

    def __reduce__(self):
        # Exceptions with keyword-only fields do not survive pickling by default.
        return (_rebuild, (str(self), dict(self.__dict__)))


def _rebuild(message: str, fields: dict) -> ClusterJobError:
    return ClusterJobError(message, **fields)


class SlurmJobError(ClusterJobError):
    """A SLURM job that ended without a result, or raised outside the training task."""

    def __reduce__(self):
        return (_rebuild_slurm, (str(self), dict(self.__dict__)))


def _rebuild_slurm(message: str, fields: dict) -> SlurmJobError:
    return SlurmJobError(message, **fields)


def log_hint(stdout: str | None, stderr: str | None) -> str:
    """Name the log files of a job: the one file when stdout and stderr are the same."""
    if stderr and stdout and stderr != stdout:
        return f"logs: {stderr} (stderr), {stdout} (stdout)"
    return f"log: {stderr or stdout or 'unknown'}"


def ended_without_result(
    job_id: str,
    state: str,
    *,
    stdout: str | None,
    stderr: str | None,
    reason: str | None = None,
    exit_code: str | None = None,
) -> SlurmJobError:
    """Build the error of a SLURM job that SLURM reports ended, but left no submitit result."""
    details = [f"reason {reason}" if reason else None, f"exit code {exit_code}" if exit_code else None]
    detail = ", ".join(d for d in details if d)
    message = f"SLURM job {job_id} ended {state}{f' ({detail})' if detail else ''} without a result; {log_hint(stdout, stderr)}"
    return SlurmJobError(message, job_id=job_id, state=state, stdout=stdout, stderr=stderr, reason=reason, exit_code=exit_code)


def lost_job(job_id: str, *, stdout: str | None, stderr: str | None) -> SlurmJobError:
    """Build the error of a job that the controller no longer lists and that left no result."""
    message = (
        f"SLURM job {job_id} is unknown to the controller (purged after MinJobAge, or the "
        f"controller lost its state) and left no result; {log_hint(stdout, stderr)}"
    )
    return SlurmJobError(message, job_id=job_id, state="LOST", stdout=stdout, stderr=stderr)


def raised_in_job(error: BaseException, job_id: str, *, cluster: str, stdout: str | None, stderr: str | None) -> ClusterJobError:
    """Wrap the error submitit re-raises for a job whose Python raised outside the task.

    submitit's message starts with a generic line and ends with the job's traceback. The
    traceback's last line names the exception, so that line becomes the summary.
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    summary = lines[-1] if lines else type(error).__name__
    kind = SlurmJobError if cluster == "slurm" else ClusterJobError
    name = "SLURM job" if cluster == "slurm" else f"{cluster} job"
    message = f"{name} {job_id} raised {summary}; {log_hint(stdout, stderr)}"
    return kind(message, job_id=job_id, state="FAILED", stdout=stdout, stderr=stderr)


def local_job_ended(job_id: str, state: str, *, stdout: str | None, stderr: str | None) -> ClusterJobError:
    """Build the error of a local submitit job whose process ended without a result."""
    message = f"local job {job_id} ended {state} without a result; {log_hint(stdout, stderr)}"
    return ClusterJobError(message, job_id=job_id, state=state, stdout=stdout, stderr=stderr)
