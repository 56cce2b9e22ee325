"""State of a shared study and repair of trials that lost their driver.

Used by the sweeper (at start and between batches) and by `malahydra study status|requeue`.
A RUNNING trial is stale when its last heartbeat (see `heartbeat`) is older than the
grace period and its driver is not a live process on this host. Repair marks it FAIL
with the reason and enqueues its parameters again as a new trial that keeps the user
attributes of the original, among them `trial_dir`, so the retry runs in the original's
directory and resumes from its checkpoint. After `max_retries` retries of one
configuration the trial stays FAIL.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from .heartbeat import heartbeat_age
from .trials import driver_is_alive

log = logging.getLogger(__name__)

# User attributes that describe one run of a trial, not its configuration; a retry
# does not inherit them.
RUN_ATTRS = ("driver", "repeat_values", "duration_s", "fail_reason", "pruned_reason", "seeds", "overrides")


@dataclass(frozen=True)
class Repair:
    """One stale trial and what was done: requeued as `retry_number`, or failed for good."""

    number: int
    age_s: float
    driver: str | None
    retry_number: int | None
    reason: str


def driver_alive_here(identity: str | None) -> bool:
    """Return whether `identity` names a live driver process on this host (remote: False)."""
    if not identity or identity.split(":")[0] != socket.gethostname():
        return False
    return driver_is_alive(identity)


def stale_trials(study: optuna.Study, grace_period: float, now: float | None = None,
                 running: list[FrozenTrial] | None = None) -> list[tuple[FrozenTrial, float]]:
    """Return the RUNNING trials whose heartbeat is older than `grace_period` seconds, with their age.

    `running` is the study's RUNNING trials when the caller has just read them; else they are read here.
    """
    now = time.time() if now is None else now
    stale = []
    if running is None:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in running:
        age = heartbeat_age(trial, now)
        if age is not None and age > grace_period and not driver_alive_here(trial.user_attrs.get("driver")):
            stale.append((trial, age))
    return stale


def repair_stale_trials(study: optuna.Study, lock, grace_period: float, max_retries: int,
                        running: list[FrozenTrial] | None = None) -> list[Repair]:
    """Fail every stale trial and requeue its parameters, at most `max_retries` times per configuration.

    The whole step holds the study `lock` (a `claims.StudyLock`), and each trial is read
    again under it, so drivers and `malahydra study requeue` running at the same time
    repair each trial once. A caller that already holds the lock may pass the RUNNING
    trials it read under it as `running`.
    """
    repairs = []
    with lock:
        for trial, age in stale_trials(study, grace_period, running=running):
            repair = _repair(study, trial, age, max_retries)
            if repair is not None:
                repairs.append(repair)
    return repairs


def _repair(study: optuna.Study, trial: FrozenTrial, age: float, max_retries: int) -> Repair | None:
    driver = trial.user_attrs.get("driver")
    retries = int(trial.user_attrs.get("retries", 0))
    reason = f"heartbeat lost: none for {age:.0f} s (driver {driver or 'unknown'})"
    # A driver stopped inside Optuna's ask may have written only some parameters of an
    # enqueued trial; the rest are still in its `fixed_params`.
    params = {**(trial.system_attrs.get("fixed_params") or {}), **trial.params}
    requeue = retries < max_retries
    if not requeue:
        reason += f"; not retried, max_retries={max_retries} reached"
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Its driver told the outcome after all, between our read and this write.
        log.info("Trial %d finished while being repaired; left as it is.", trial.number)
        return None
    if not requeue:
        log.warning("Trial %d FAIL for good: %s.", trial.number, reason)
        return Repair(trial.number, age, driver, None, reason)

    attrs = {key: value for key, value in trial.user_attrs.items() if key not in RUN_ATTRS}
    attrs.update(trial_dir=trial.user_attrs.get("trial_dir", str(trial.number)), retries=retries + 1,
                 retry_of=trial.number)
    # What Study.enqueue_trial does, but keeping the new trial's id.
    template = optuna.trial.create_trial(state=TrialState.WAITING, system_attrs={"fixed_params": params},
                                         user_attrs=attrs)
    retry = storage.get_trial_number_from_id(storage.create_new_trial(study._study_id, template_trial=template))
    log.warning("Trial %d FAIL: %s; requeued as trial %d (retry %d of %d) in directory %s.",
                trial.number, reason, retry, retries + 1, max_retries, attrs["trial_dir"])
    return Repair(trial.number, age, driver, retry, reason)


def study_status(study: optuna.Study, grace_period: float, now: float | None = None) -> dict:
    """Summarize a study: trial counts by state and every RUNNING trial with its heartbeat age."""
    now = time.time() if now is None else now
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(t.state == state for t in trials) for state in TrialState}
    running = []
    for trial in trials:
        if trial.state != TrialState.RUNNING:
            continue
        age = heartbeat_age(trial, now)
        driver = trial.user_attrs.get("driver")
        running.append({
            "number": trial.number,
            "heartbeat_age_s": None if age is None else round(age, 1),
            "driver": driver,
            "stale": age is not None and age > grace_period and not driver_alive_here(driver),
            "trial_dir": trial.user_attrs.get("trial_dir"),
        })
    return {"study": study.study_name, "counts": counts, "running": running, "grace_period_s": grace_period}


@dataclass(frozen=True)
class LivenessSettings:
    """Heartbeat and repair settings of the sweeper (`hydra.sweeper.*`), checked."""

    heartbeat_interval: float
    grace_period: float
    max_retries: int
    wait_time: float

    @classmethod
    def from_settings(cls, settings: dict) -> "LivenessSettings":
        from .errors import SearchConfigError

        values = cls(
            heartbeat_interval=float(settings.get("heartbeat_interval", 30.0)),
            grace_period=float(settings.get("grace_period", 120.0)),
            max_retries=int(settings.get("max_retries", 3)),
            wait_time=float(settings.get("wait_time", 0.0)),
        )
        checks = [
            (values.heartbeat_interval > 0, "heartbeat_interval", "a number of seconds > 0"),
            (values.grace_period > values.heartbeat_interval, "grace_period",
             f"a number of seconds > heartbeat_interval={values.heartbeat_interval:g} (2 to 4 times it is usual)"),
            (values.max_retries >= 0, "max_retries", "an integer >= 0"),
            (values.wait_time >= 0, "wait_time", "a number of seconds >= 0"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise SearchConfigError(f"Invalid hydra.sweeper.{key}={settings.get(key)!r}; expected {expected}.")
        return values


def retarget_trial_number(overrides: list[str], number: int) -> list[str]:
    """Point the `+trial.number` override of a job at trial `number`, keeping everything else.

    A retry's job runs in the directory and with the seeds of the original trial but
    reports its per-epoch values to the retry's own trial.
    """
    from .space import format_override

    return [format_override("+trial.number", number) if o.startswith("+trial.number=") else o for o in overrides]


# -- malahydra study status|requeue --------------------------------------------------------


def add_study_commands(commands) -> None:
    """Add `study status` and `study requeue` to the `malahydra` command's subparsers."""
    study = commands.add_parser(
        "study", help="show or repair a search study shared by several drivers",
        description="Show the trial counts of a study, or requeue its stale RUNNING trials while drivers run.",
    )
    actions = study.add_subparsers(dest="study_command", required=True)
    for name, help_text in (("status", "print trial counts by state and the heartbeat age of RUNNING trials"),
                            ("requeue", "fail stale RUNNING trials and enqueue their parameters again")):
        action = actions.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        where = action.add_mutually_exclusive_group(required=True)
        where.add_argument("--storage", metavar="URL", help="sqlite:///PATH of an SQLite study file")
        where.add_argument("--journal", metavar="PATH", help="Optuna journal file")
        where.add_argument("--url-env", metavar="VARIABLE",
                           help="environment variable with the database URL, e.g. MALAHYDRA_POSTGRESQL_URL")
        action.add_argument("--study", default="malahydra", help="study name (default malahydra)")
        action.add_argument("--grace-period", type=float, default=120.0,
                            help="seconds without a heartbeat after which a RUNNING trial is stale (default 120)")
        if name == "requeue":
            action.add_argument("--max-retries", type=int, default=3,
                                help="retries per configuration; a stale trial beyond them stays FAIL (default 3)")
        else:
            action.add_argument("--json", action="store_true", help="print JSON instead of a table")
        action.set_defaults(handler=run_study_command)


def _reference_of(args) -> str:
    from .storage import StorageConfigError

    if args.storage:
        prefix = "sqlite:///"
        if not args.storage.startswith(prefix):
            raise StorageConfigError(f"Invalid --storage {args.storage!r}; expected sqlite:///PATH, or use --url-env "
                                     "for a database server.")
        path = args.storage[len(prefix):]
        if not Path(path).is_file():
            raise StorageConfigError(f"The SQLite file {path} does not exist; check --storage.")
        return f"sqlite:{Path(path).resolve()}"
    if args.journal:
        if not Path(args.journal).is_file():
            raise StorageConfigError(f"The journal file {args.journal} does not exist; check --journal.")
        return f"journal:{Path(args.journal).resolve()}"
    return f"env:{args.url_env}"


def run_study_command(args) -> int:
    import json

    from .claims import StudyLock
    from .storage import StorageConfigError, describe_storage, open_storage

    if args.grace_period <= 0:
        raise StorageConfigError(f"Invalid --grace-period {args.grace_period:g}; expected a number of seconds > 0.")
    reference = _reference_of(args)
    storage = open_storage(reference)
    try:
        study = optuna.load_study(study_name=args.study, storage=storage)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
        raise StorageConfigError(f"Study {args.study!r} not found in {describe_storage(reference)}; "
                                 f"studies there: {names}. Check --study.") from None

    if args.study_command == "requeue":
        if args.max_retries < 0:
            raise StorageConfigError(f"Invalid --max-retries {args.max_retries}; expected an integer >= 0.")
        lock = StudyLock(reference, args.study)
        try:
            repairs = repair_stale_trials(study, lock, args.grace_period, args.max_retries)
        finally:
            lock.close()
        for repair in repairs:
            outcome = f"requeued as trial {repair.retry_number}" if repair.retry_number is not None else "FAIL for good"
            print(f"trial {repair.number}: no heartbeat for {repair.age_s:.0f} s, {outcome}")
        print(f"{len(repairs)} stale trial(s) repaired in study {args.study!r}.")
        return 0

    status = study_status(study, args.grace_period)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"study {args.study!r} in {describe_storage(reference)}")
    print("  ".join(f"{state}: {count}" for state, count in status["counts"].items()))
    for trial in status["running"]:
        age = "never" if trial["heartbeat_age_s"] is None else f"{trial['heartbeat_age_s']:.0f} s ago"
        flag = "  STALE" if trial["stale"] else ""
        print(f"RUNNING trial {trial['number']}: heartbeat {age}, driver {trial['driver']}, dir {trial['trial_dir']}{flag}")
    return 0
