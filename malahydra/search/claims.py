"""Coordination of several drivers of one study: the study lock and driver ranks.

Several drivers (processes started by `mpirun`, `srun` or by hand) may run the same
search against one storage. Every step that reads the study and then changes it on
that basis takes the study lock: counting the budget and asking for new trials,
claiming an enqueued (WAITING) trial, and repairing trials whose driver is gone. So
no two drivers claim the same trial or repair the same trial twice, on every storage:

- SQLite file, journal file: `fcntl.flock` on `<file>.malahydra-lock` beside the storage
  file (`<file>.lock` is the lock of Optuna's journal backend).
  SQLite ignores `SELECT ... FOR UPDATE`, and Optuna's journal storage checks and
  writes a state change in two steps, so neither can pop a WAITING trial safely alone.
- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`).
- MySQL/MariaDB: a named lock (`GET_LOCK`).
- memory: a lock of this process.

The operating system or the database server releases each of these locks when the
holding process dies or loses its connection, so a killed driver never blocks the others.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
import weakref
from contextlib import nullcontext
from pathlib import Path
from types import TracebackType
from typing import Mapping

log = logging.getLogger(__name__)

# Rank variables of Open MPI, MPICH/Intel MPI (PMI), SLURM's srun and torchrun, in this order.
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID", "RANK")
LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK")
LOCAL_SIZE_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE", "LOCAL_WORLD_SIZE")

# A lock wait longer than this is reported in the log (again every period), because a
# driver that holds the lock for seconds is stuck (e.g. stopped with SIGSTOP).
LOCK_WAIT_REPORT_S = 30.0
LOCK_SUFFIX = ".malahydra-lock"
_POLL_S = (0.005, 0.2)  # first and longest pause between two attempts to take a busy lock

_PROCESS_LOCKS: dict[str, threading.Lock] = {}


class StudyLockTimeout(TimeoutError):
    """The study lock could not be taken within the timeout."""


def _lock_key(scope: str) -> str:
    return "malahydra:" + hashlib.sha1(scope.encode()).hexdigest()[:24]


class StudyLock:
    """Cross-process lock of one scope (a study name, or "schema") in one storage.

    Use it as a context manager. It is re-entrant within one thread, so a locked step may
    call another locked step.
    """

    def __init__(self, reference: str, scope: str, timeout: float | None = None) -> None:
        self.reference = reference
        self.scope = scope
        self.timeout = timeout
        self._depth = 0
        self._owner: int | None = None
        self._guard = threading.Lock()
        self._release = None
        # Connection of a database lock, kept open between two acquisitions (see _DatabaseLock).
        self._database_lock: _DatabaseLock | None = None

    def __enter__(self) -> "StudyLock":
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
            return self
        self._guard.acquire()
        try:
            self._release = self._acquire()
        except BaseException:
            self._guard.release()
            raise
        self._owner, self._depth = me, 1
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth:
            return
        release, self._release, self._owner = self._release, None, None
        try:
            if release is not None:
                release()
        finally:
            self._guard.release()

    def close(self) -> None:
        """Close the connection that a database lock keeps between acquisitions, if any."""
        if self._database_lock is not None:
            self._database_lock._close()

    # -- backends ------------------------------------------------------------------------

    def _acquire(self):
        kind, _, value = self.reference.partition(":")
        if kind in ("sqlite", "journal"):
            return self._poll(lambda: _try_file_lock(Path(f"{value}{LOCK_SUFFIX}")))
        if kind == "env":
            from .storage import database_url

            return self._acquire_url(database_url(value))
        if kind == "memory":
            lock = _PROCESS_LOCKS.setdefault(f"{value}/{self.scope}", threading.Lock())
            lock.acquire()
            return lock.release
        raise ValueError(f"Invalid storage reference {self.reference!r}.")

    def _acquire_url(self, url: str):
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            return self._poll(lambda: _try_file_lock(Path(f"{parsed.database}{LOCK_SUFFIX}")))
        if backend in ("postgresql", "mysql", "mariadb"):
            from .storage import _is_database_error, connection_error

            if self._database_lock is None:
                self._database_lock = _DatabaseLock(url, backend, _lock_key(self.scope))
            try:
                return self._poll(self._database_lock.try_acquire)
            except Exception as error:  # noqa: BLE001 -- database errors become one clear line
                if not _is_database_error(error):
                    raise
                description = parsed.render_as_string(hide_password=True)
                raise connection_error(error, url, description) from None
        log.warning("No study lock for %s databases: drivers sharing this study may claim a trial twice.", backend)
        return None

    def _poll(self, attempt):
        started = time.monotonic()
        next_report = started + LOCK_WAIT_REPORT_S
        pause = _POLL_S[0]
        while True:
            release = attempt()
            if release is not None:
                return release
            now = time.monotonic()
            if self.timeout is not None and now - started > self.timeout:
                raise StudyLockTimeout(
                    f"Timed out after {self.timeout:g} s waiting for the {self.scope!r} lock of the study storage; "
                    "another driver holds it (stopped or hung?). Stop that driver or retry later."
                )
            if now >= next_report:
                log.warning("Still waiting for the %r lock of the study storage after %.0f s.", self.scope, now - started)
                next_report = now + LOCK_WAIT_REPORT_S
            time.sleep(pause)
            pause = min(_POLL_S[1], pause * 2)


def _try_file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None

    def release() -> None:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)

    return release


_LOCK_ENGINES: dict[str, object] = {}


def _lock_engine(url: str):
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = _LOCK_ENGINES.get(url)
    if engine is None:
        # NullPool: a lock connection that fails is really closed, not returned to a pool,
        # so the server releases its lock.
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        _LOCK_ENGINES[url] = engine
    return engine


class _DatabaseLock:
    """A PostgreSQL advisory lock or a MySQL named lock on one connection kept open.

    Keeping the connection saves a connect and a login per acquisition. The server
    releases a session lock when its connection ends, so a connection that fails is
    closed and the next attempt opens a new one.
    """

    def __init__(self, url: str, backend: str, key: str) -> None:
        self.url = url
        self.backend = backend
        self.key = key
        self.connection = None

    def _statements(self):
        import sqlalchemy

        if self.backend == "postgresql":
            number = int.from_bytes(hashlib.sha1(self.key.encode()).digest()[:8], "big", signed=True)
            return (sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), sqlalchemy.text("SELECT pg_advisory_unlock(:k)"),
                    {"k": number})
        return sqlalchemy.text("SELECT GET_LOCK(:k, 0)"), sqlalchemy.text("SELECT RELEASE_LOCK(:k)"), {"k": self.key}

    def _close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception as error:  # noqa: BLE001 -- the connection is dropped either way
                log.debug("Closing a study-lock connection failed: %s", error)

    def try_acquire(self):
        """Take the lock without waiting; return its release function, or None when another holds it."""
        from .storage import retry_transient

        take, _, parameters = self._statements()

        def attempt() -> bool:
            if self.connection is None:
                self.connection = _lock_engine(self.url).connect()
            try:
                value = self.connection.execute(take, parameters).scalar()
                self.connection.commit()
            except BaseException:
                self._close()
                raise
            return bool(value) if self.backend == "postgresql" else value == 1

        if not retry_transient(attempt, "taking the study lock"):
            return None
        return self.release

    def release(self) -> None:
        _, unlock, parameters = self._statements()
        try:
            self.connection.execute(unlock, parameters)
            self.connection.commit()
        except Exception as error:  # noqa: BLE001 -- closing the connection releases the lock anyway
            log.warning("Releasing the study lock failed (%s); closing its connection releases it.", type(error).__name__)
            self._close()


_STUDY_LOCKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def register_study_lock(study, lock: StudyLock) -> None:
    """Attach the lock of its storage to an opened study, for `study_lock`."""
    _STUDY_LOCKS[study] = lock


def study_lock(study):
    """Return the lock registered for `study`, or a no-op context for a study opened otherwise."""
    return _STUDY_LOCKS.get(study) or nullcontext()


# -- driver ranks -------------------------------------------------------------------------


def _first_int(environ: Mapping[str, str], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = environ.get(name, "").split("(")[0]  # SLURM_NTASKS_PER_NODE may read "2(x3)"
        if value.isdigit():
            return int(value)
    return None


def driver_rank(environ: Mapping[str, str] | None = None) -> int:
    """Return the global rank of this driver from the MPI/SLURM/torchrun variables, else 0."""
    return _first_int(os.environ if environ is None else environ, RANK_VARIABLES) or 0


def first_job_index(batch: int, batch_size: int, environ: Mapping[str, str] | None = None) -> int:
    """Return the Hydra job number of the first job of this driver's `batch`-th batch.

    Jobs pick their GPU by job number modulo the visible GPU count. Drivers on one node
    number their jobs in interleaved blocks, (batch * local size + local rank) * batch
    size, so that concurrent jobs of distinct local ranks get distinct numbers modulo
    (local size * batch size), and so distinct GPUs when the node has that many. Without
    rank variables this is batch * batch_size, the numbering of a single driver.
    """
    environ = os.environ if environ is None else environ
    local_rank = _first_int(environ, LOCAL_RANK_VARIABLES) or 0
    local_size = max(_first_int(environ, LOCAL_SIZE_VARIABLES) or 1, local_rank + 1)
    return (batch * local_size + local_rank) * batch_size


def stagger_start(wait_time: float, environ: Mapping[str, str] | None = None) -> float:
    """Sleep `wait_time` seconds per rank, so that many drivers do not start at once; return the delay."""
    delay = max(0.0, float(wait_time)) * driver_rank(environ)
    if delay:
        log.info("Rank %d waits %.1f s before starting (hydra.sweeper.wait_time).", driver_rank(environ), delay)
        time.sleep(delay)
    return delay
