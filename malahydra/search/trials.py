"""Pure helpers of the search loop: job overrides, job outcomes, budget and failures.

None of these launch anything, so each is unit-tested on plain values.
"""

import math
import os
import socket
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .space import SearchParameter, format_override

AGGREGATIONS = ("mean", "mean_std", "median")


@dataclass(frozen=True)
class JobOutcome:
    """Result of one training job: state is complete, fail or pruned."""

    state: str
    value: float | None = None
    reason: str | None = None
    # The job failed with an error that every trial would repeat (MalahydraError.stops_search).
    stops_search: bool = False


@dataclass(frozen=True)
class TrialOutcome:
    """Result of a trial after combining its repeats."""

    state: str
    value: float | None
    reason: str | None
    repeat_values: tuple


def trial_subdir(number: int, repeat: int, repeats: int) -> str:
    """Output subdirectory of a job: the trial number, plus the repeat with several trainings."""
    return str(number) if repeats == 1 else f"{number}/repeat_{repeat}"


def job_overrides(
    *,
    params: Mapping[str, Any],
    space: Sequence[SearchParameter],
    fixed: Sequence[str],
    number: int,
    repeat: int,
    repeats: int,
    seed: int | None,
    settings: Mapping[str, Any],
    storage_reference: str,
    report: bool,
) -> list[str]:
    """Overrides of one job: fixed ones, the trial's parameters, seed, metric and trial context."""
    overrides = list(fixed)
    for parameter in space:
        overrides.append(format_override(parameter.override_key, params[parameter.name]))
    if settings.get("seed_key") and seed is not None:
        overrides.append(format_override(settings["seed_key"], seed))
    if settings.get("metric") is not None:
        overrides.append(format_override(settings["metric_key"], settings["metric"]))
    overrides += [
        format_override("+trial.number", number),
        format_override("+trial.repeat", repeat),
        format_override("+trial.study_name", settings["study_name"]),
        format_override("+trial.storage", storage_reference),
        format_override("+trial.report", report),
        format_override("hydra.sweep.subdir", trial_subdir(number, repeat, repeats)),
    ]
    return overrides


def job_outcome_from_return(status_name: str, value: Any) -> JobOutcome:
    """Classify a Hydra JobReturn by its status name and `_return_value`."""
    if status_name == "COMPLETED":
        return _outcome_from_value(value)
    if type(value).__name__ == "TrialPruned":
        return JobOutcome("pruned", reason=str(value) or "pruned")
    return JobOutcome("fail", reason=_reason(value), stops_search=bool(getattr(value, "stops_search", False)))


def job_outcome_from_record(record: Mapping[str, Any] | None, launcher_error: str | None = None) -> JobOutcome:
    """Classify the result record a job wrote (None: the job ended without writing one)."""
    if record is None:
        reason = "job ended without a result (killed or lost by the launcher)"
        return JobOutcome("fail", reason=f"{reason}; launcher error: {launcher_error}" if launcher_error else reason)
    if record.get("state") == "returned":
        return _outcome_from_value(record.get("value"))
    if record.get("state") == "pruned":
        return JobOutcome("pruned", reason=record.get("reason"))
    return JobOutcome("fail", reason=record.get("reason") or "job failed", stops_search=bool(record.get("stops_search")))


def _outcome_from_value(value: Any) -> JobOutcome:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return JobOutcome("fail", reason=f"objective {value!r} is not a number")
    if not math.isfinite(number):
        return JobOutcome("fail", reason=f"objective is {number}")
    return JobOutcome("complete", value=number)


def _reason(error: Any) -> str:
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    return text.strip().splitlines()[0][:500] if text.strip() else type(error).__name__


def combine_values(values: Sequence[float], how: str) -> float:
    """Combine the objectives of a trial's repeats by mean, mean_std (mean + std) or median."""
    if how == "mean":
        return statistics.fmean(values)
    if how == "median":
        return statistics.median(values)
    if how == "mean_std":
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        return statistics.fmean(values) + spread
    raise ValueError(f"Unknown trial_ensemble_evaluation {how!r}; use one of {', '.join(AGGREGATIONS)}.")


def trial_outcome(jobs: Sequence[JobOutcome], how: str) -> TrialOutcome:
    """Combine the jobs of one trial: any failure fails it, else any pruning prunes it."""
    values = tuple(job.value for job in jobs)
    for state in ("fail", "pruned"):
        reasons = [f"repeat {i}: {job.reason}" if len(jobs) > 1 else job.reason for i, job in enumerate(jobs) if job.state == state]
        if reasons:
            return TrialOutcome(state, None, "; ".join(str(r) for r in reasons), values)
    return TrialOutcome("complete", combine_values([v for v in values if v is not None], how), None, values)


def trials_to_launch(n_trials: int, n_complete: int, n_running: int, n_jobs: int) -> int:
    """New trials to ask for: the budget minus COMPLETE and in-flight trials, at most n_jobs."""
    return max(0, min(n_jobs, n_trials - n_complete - n_running))


def failure_limit_exceeded(n_failed: int, n_trials: int, max_failure_rate: float) -> bool:
    """True once FAIL trials exceed `max_failure_rate` times the budget."""
    return n_failed > max_failure_rate * n_trials


def driver_identity() -> str:
    """Identity of this driver process: host, pid and process start time (guards pid reuse)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def _process_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _is_zombie(pid: int) -> bool:
    """Return whether the process has exited but is not reaped yet (state Z in /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def driver_is_alive(identity: str | None, host: str | None = None, process_start: Callable[[int], str] = _process_start) -> bool:
    """Return whether a driver identity names a running process; drivers on other hosts count as alive."""
    if not identity:
        return False
    parts = identity.split(":")
    if len(parts) != 3:
        return False
    name, pid, started = parts
    if name != (host or socket.gethostname()):
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed driver whose parent has not reaped it yet still accepts signal 0.
    if _is_zombie(int(pid)):
        return False
    return started == "?" or process_start(int(pid)) == started
