"""Heartbeats of running trials, written by the driver while a batch runs.

Optuna's own heartbeat runs only inside `Study.optimize` and only for database
storages. The malahydra sweeper asks and tells trials itself, so a thread of the driver
writes the time into the system attribute `HEARTBEAT_ATTR` of each trial of the running
batch every `heartbeat_interval` seconds. This works on every storage, the journal file
included. A RUNNING trial whose last heartbeat (or, before the first one, its start) is
older than the grace period has lost its driver; `study_admin.repair_stale_trials`
then fails and requeues it.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from types import TracebackType
from typing import Iterable

from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

HEARTBEAT_ATTR = "malahydra:heartbeat"


def write_heartbeat(storage: BaseStorage, trial_id: int, now: float | None = None) -> None:
    """Record `now` (Unix time in seconds) as the last heartbeat of a trial."""
    storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time() if now is None else now)


def last_heartbeat(trial: FrozenTrial) -> float | None:
    """Return the Unix time of the trial's last heartbeat, else of its start, else None."""
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    if isinstance(beat, (int, float)):
        return float(beat)
    if trial.datetime_start is not None:
        return _unix_time(trial.datetime_start)
    return None


def heartbeat_age(trial: FrozenTrial, now: float | None = None) -> float | None:
    """Return the seconds since the trial's last heartbeat (see `last_heartbeat`)."""
    beat = last_heartbeat(trial)
    return None if beat is None else (time.time() if now is None else now) - beat


def _unix_time(moment: datetime) -> float:
    # Optuna stores naive local times (datetime.now()).
    return moment.timestamp()


class Heartbeat:
    """Context manager: a thread that writes heartbeats of `trial_ids` until the block ends.

    The first beat is written on entering, unless `beat_at_start` is False, and then one
    every `interval` seconds. A trial finished in the meantime is dropped from the set.
    Storage errors are logged and the thread goes on; the next beat may succeed.
    """

    def __init__(self, storage: BaseStorage, trial_ids: Iterable[int], interval: float,
                 beat_at_start: bool = True) -> None:
        self.storage = storage
        self.trial_ids = set(trial_ids)
        self.interval = float(interval)
        self.beat_at_start = beat_at_start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def __enter__(self) -> "Heartbeat":
        if self.interval > 0 and self.trial_ids:
            if self.beat_at_start:
                self.beat()
            self._thread = threading.Thread(target=self._run, name="malahydra-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        now = time.time()
        for trial_id in sorted(self.trial_ids):
            try:
                write_heartbeat(self.storage, trial_id, now)
            except UpdateFinishedTrialError:
                # Told by this driver a moment ago, or taken over by another process, which
                # the sweeper reports when it tells the outcome.
                self.trial_ids.discard(trial_id)
            except Exception as error:  # noqa: BLE001 -- a missed beat must not stop the batch
                self.errors += 1
                log.warning("Writing the heartbeat of trial id %d failed (%d so far): %s: %s",
                            trial_id, self.errors, type(error).__name__, str(error).splitlines()[0][:200] if str(error) else "")
