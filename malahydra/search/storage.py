"""Optuna storages from `hydra.sweeper.storage`, without writing secrets anywhere.

A database URL (PostgreSQL, MySQL/MariaDB) is read from the environment variable the
config names, e.g. `url_env: MALAHYDRA_POSTGRESQL_URL`. Configs, job overrides and logs
only ever contain the variable's name or the URL with its password masked.

Jobs find the study through a storage reference, a string that is safe to write into
their config: `sqlite:<absolute path>`, `journal:<absolute path>`, `env:<VARIABLE>` or
`memory:<study name>`.

An SQLite file on a local file system is switched to write-ahead logging
(`PRAGMA journal_mode=WAL`) with `PRAGMA synchronous=NORMAL`: a commit then appends to
the `-wal` file beside the database without waiting for the disk, which saves tens of
milliseconds per trial. An operating-system crash or power loss may lose the last
commits, but not the consistency of the file; a crash of a driver loses nothing. WAL
needs memory shared by all processes that open the file, so a file on a network file
system (see `NETWORK_FILE_SYSTEMS`) keeps SQLite's default rollback journal.
"""

import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from .errors import SearchConfigError

log = logging.getLogger(__name__)

DRIVERS = ("sqlite", "journal", "url", "memory")

# In-memory studies of this process by study name; jobs that the in-process launcher
# runs in the driver's process reach their study through it.
_MEMORY_STORAGES: dict[str, InMemoryStorage] = {}


class StorageConfigError(SearchConfigError):
    """A storage setting that names no usable storage."""


class StorageConnectionError(SearchConfigError):
    """The database of a storage cannot be reached or rejects the login."""


def storage_reference(settings: Mapping[str, Any], study_name: str) -> str:
    """Build the job-safe reference of the configured storage (see the module docstring)."""
    driver = settings.get("driver")
    if driver in ("sqlite", "journal"):
        path = settings.get("path")
        if not path:
            raise StorageConfigError(f"hydra.sweeper.storage.path is empty; the {driver} driver needs a file path.")
        return f"{driver}:{Path(str(path)).expanduser().resolve()}"
    if driver == "url":
        variable = settings.get("url_env")
        if not variable:
            raise StorageConfigError(
                "hydra.sweeper.storage.url_env is empty; name the environment variable that contains the database URL."
            )
        return f"env:{variable}"
    if driver == "memory":
        return f"memory:{study_name}"
    raise StorageConfigError(
        f"Unknown storage driver {driver!r}; use one of {', '.join(DRIVERS)} (e.g. storage=sqlite)."
    )


def open_storage(reference: str) -> BaseStorage:
    """Open the storage a reference names, creating files and tables as needed.

    Database storages retry transient errors (see `retry_transient`) on every call.
    """
    kind, _, value = reference.partition(":")
    if kind == "sqlite":
        Path(value).parent.mkdir(parents=True, exist_ok=True)
        pragmas = SQLITE_LOCAL_PRAGMAS if on_local_file_system(Path(value)) else ()
        return _open_database(f"sqlite:///{value}", {"connect_args": {"timeout": 60}}, f"SQLite file {value}", pragmas)
    if kind == "journal":
        Path(value).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(value))
    if kind == "env":
        # pool_pre_ping replaces connections that the server closed while a long trial ran.
        return _open_database(database_url(value), {"pool_pre_ping": True}, describe_storage(reference))
    if kind == "memory":
        return _MEMORY_STORAGES.setdefault(value, InMemoryStorage())
    raise StorageConfigError(f"Invalid storage reference {reference!r}.")


def database_url(variable: str) -> str:
    """Return the database URL in the environment variable `variable`."""
    url = os.environ.get(variable)
    if not url:
        raise StorageConfigError(
            f"Environment variable {variable} is not set; export it with the database URL, "
            f"e.g. {variable}=postgresql+psycopg2://user:password@host/database."
        )
    check_database_url(url, variable)
    return url


def check_database_url(url: str, variable: str) -> None:
    """Reject a URL that SQLAlchemy cannot parse or whose database driver is not installed."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    examples = "postgresql+psycopg2://user:password@host/database or mysql+pymysql://user:password@host/database"
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        # The text is not shown, because it may contain a password.
        raise StorageConfigError(
            f"Environment variable {variable} does not contain a database URL; set it to e.g. {examples}."
        ) from None
    try:
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageConfigError(
            f"Unsupported database URL scheme {parsed.drivername!r} in {variable}; use e.g. {examples}."
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        raise StorageConfigError(
            f"The database driver of the URL scheme {parsed.drivername!r} in {variable} is not installed "
            f"({error}); install it, or use postgresql+psycopg2:// (pip install psycopg2-binary) or "
            "mysql+pymysql:// (pip install pymysql)."
        ) from None


def _open_database(url: str, engine_kwargs: dict, description: str, pragmas: tuple[str, ...] = ()) -> BaseStorage:
    from optuna.storages import _CachedStorage

    def connect() -> RDBStorage:
        storage = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=None)
        if pragmas:
            _run_on_connect(storage.engine, pragmas)
        return storage

    try:
        storage = retry_transient(connect, f"opening {description}")
    except Exception as error:  # noqa: BLE001 -- any failure here is reported as one line
        if not _is_database_error(error):
            raise
        raise connection_error(error, url, description) from None
    return RetryingStorage(_CachedStorage(storage))


# -- SQLite settings ----------------------------------------------------------------------

SQLITE_LOCAL_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")
# File system types (as in /proc/mounts) whose files other hosts may open too.
NETWORK_FILE_SYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "9p", "afs",
    "panfs", "pvfs2", "orangefs", "ocfs2", "gfs2",
})


def file_system_type(path: Path, mounts: str = "/proc/mounts") -> str | None:
    """Return the type of the file system that contains `path`, or None when /proc/mounts is unreadable."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    target = path.resolve()
    best, best_type = None, None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        # /proc/mounts writes a space in a mount point as \040.
        mount_point = Path(fields[1].replace("\\040", " "))
        if (target == mount_point or mount_point in target.parents) and (
                best is None or len(mount_point.parts) >= len(best.parts)):
            best, best_type = mount_point, fields[2]
    return best_type


def on_local_file_system(path: Path, mounts: str = "/proc/mounts") -> bool:
    """Return whether `path` lies on a local file system; False when /proc/mounts is unreadable."""
    kind = file_system_type(path, mounts)
    if kind is None:
        return False
    return kind not in NETWORK_FILE_SYSTEMS and not kind.startswith("fuse")


def _run_on_connect(engine: Any, statements: tuple[str, ...]) -> None:
    """Run `statements` on every new DBAPI connection of `engine`, including the pooled ones."""
    import sqlalchemy

    def configure(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()

    sqlalchemy.event.listen(engine, "connect", configure)
    # Connections that RDBStorage opened to create the tables predate the listener.
    engine.dispose()


def connection_error(error: BaseException, url: str, description: str) -> StorageConnectionError:
    """Build the one-line error of a database that cannot be opened, without the URL's password."""
    return StorageConnectionError(
        f"Cannot open the study database {description}: {_database_message(error, url)}. "
        "Check that the server runs, and the host, port, user, password and database name in the URL."
    )


# -- transient database errors ---------------------------------------------------------

# Lower-case fragments of DBAPI messages after which the same call may succeed: lost
# connections, deadlocks, lock and serialization timeouts, SQLite's busy file.
TRANSIENT_MESSAGES = (
    "database is locked",
    "deadlock",
    "lock wait timeout",
    "could not serialize",
    "lost connection",
    "server has gone away",
    "server closed the connection",
    "connection reset",
    "connection already closed",
    "terminating connection",
    "could not receive data",
    "broken pipe",
    "ssl syscall error",
)
RETRY_ATTEMPTS = 8
RETRY_FIRST_PAUSE_S = 0.05
RETRY_LONGEST_PAUSE_S = 5.0

T = TypeVar("T")


def _error_chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        orig = getattr(error, "orig", None)
        if isinstance(orig, BaseException):
            yield orig
        error = error.__cause__ or error.__context__


def _is_database_error(error: BaseException) -> bool:
    import sqlalchemy.exc

    return any(isinstance(e, (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError))
               for e in _error_chain(error))


def is_transient(error: BaseException) -> bool:
    """Return whether a storage error is one after which a retry may succeed."""
    return any(fragment in str(e).lower() for e in _error_chain(error) for fragment in TRANSIENT_MESSAGES)


def _database_message(error: BaseException, url: str) -> str:
    """Return the driver's first message line of `error` with the URL's password removed."""
    from sqlalchemy.engine import make_url

    chain = list(_error_chain(error))
    innermost = next((e for e in chain if type(e).__module__.split(".")[0] not in ("sqlalchemy", "optuna")), chain[-1])
    text = (str(innermost).strip().splitlines() or [type(innermost).__name__])[0]
    password = make_url(url).password
    return text.replace(password, "***") if password else text


def retry_transient(call: Callable[[], T], what: str) -> T:
    """Call `call`, retrying transient database errors with jittered exponential backoff.

    Each retry is logged. After RETRY_ATTEMPTS attempts the last error is raised.
    NOTE: a call whose commit reached the server before the connection broke runs twice;
    for Optuna's storage calls that at worst leaves a trial RUNNING without a driver, which
    the heartbeat repair then requeues.
    """
    pause = RETRY_FIRST_PAUSE_S
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return call()
        except Exception as error:  # noqa: BLE001 -- filtered by is_transient
            if attempt == RETRY_ATTEMPTS or not is_transient(error):
                raise
            message = next((str(e).strip().splitlines()[0] for e in _error_chain(error) if str(e).strip()), "")
            log.warning("Transient storage error while %s (attempt %d of %d, retrying in %.2f s): %s",
                        what, attempt, RETRY_ATTEMPTS, pause, message[:200])
            time.sleep(pause * (0.5 + random.random()))
            pause = min(RETRY_LONGEST_PAUSE_S, pause * 2)
    raise AssertionError("unreachable")


class RetryingStorage(BaseStorage):
    """Optuna storage that forwards every call to another one and retries transient errors."""

    def __init__(self, inner: BaseStorage) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _forwarding(name: str) -> Callable:
    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        target = getattr(self._inner, name)
        return retry_transient(lambda: target(*args, **kwargs), f"calling {name}")

    method.__name__ = name
    return method


for _name in [n for n in dir(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))]:
    setattr(RetryingStorage, _name, _forwarding(_name))
RetryingStorage.__abstractmethods__ = frozenset()


def reaches_storage(reference: str) -> bool:
    """Return False for an in-memory study of another process, which this one cannot open."""
    kind, _, value = reference.partition(":")
    return kind != "memory" or value in _MEMORY_STORAGES


def describe_storage(reference: str) -> str:
    """Describe a storage for logs and results: a URL Optuna opens, with any password masked.

    An SQLite file is shown as `sqlite:///PATH`, the form that Optuna, `optuna-dashboard`
    and `malahydra study --storage` accept. A journal is shown as `journal file PATH`.
    """
    kind, _, value = reference.partition(":")
    if kind == "sqlite":
        return f"sqlite:///{value}"
    if kind == "journal":
        return f"journal file {value}"
    if kind != "env":
        return reference
    url = os.environ.get(value)
    if not url:
        return f"database URL from ${value} (not set)"
    from sqlalchemy.engine import make_url

    return f"{make_url(url).render_as_string(hide_password=True)} (from ${value})"


def load_or_create_study(
    reference: str, study_name: str, direction: str, sampler: Any, pruner: Any,
    direction_setting: Callable[[str], str] | None = None,
) -> optuna.study.Study:
    """Load the named study, or create it; its direction must match the configured one.

    `direction_setting` turns the stored direction into the override that selects it,
    for the error message (default: `hydra.sweeper.direction=<direction>`).

    Creating the tables of a fresh database and the study is done under the storage's
    "schema" lock (see `claims.StudyLock`), so many drivers may start at the same moment.
    """
    from .claims import StudyLock, register_study_lock

    def create() -> optuna.study.Study:
        return optuna.create_study(storage=open_storage(reference), study_name=study_name, direction=direction,
                                   sampler=sampler, pruner=pruner, load_if_exists=True)

    schema_lock = StudyLock(reference, "schema")
    try:
        with schema_lock:
            study = retry_transient(create, f"loading study {study_name!r}")
    finally:
        schema_lock.close()
    register_study_lock(study, StudyLock(reference, study_name))
    stored = study.direction.name.lower()
    if stored != direction:
        setting = direction_setting(stored) if direction_setting else f"hydra.sweeper.direction={stored}"
        raise StorageConfigError(
            f"Study {study_name!r} in the storage optimizes {stored}, not {direction}; set {setting} "
            "or choose a new hydra.sweeper.study_name."
        )
    return study
