"""Optuna storages from `hydra.sweeper.storage`, without writing secrets anywhere.

A database URL (PostgreSQL, MySQL/MariaDB) is read from the environment variable the
config names, e.g. `url_env: MALAHYDRA_POSTGRESQL_URL`. Configs, job overrides and logs
only ever contain the variable's name or the URL with its password masked.

Jobs find the study through a storage reference, a string that is safe to write into
their config: `sqlite:<absolute path>`, `journal:<absolute path>`, `env:<VARIABLE>` or
`memory:<study name>`.
"""

import logging
import os
from pathlib import Path
from typing import Any, Mapping

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
    """Open the storage a reference names, creating files and tables as needed."""
    kind, _, value = reference.partition(":")
    if kind == "sqlite":
        Path(value).parent.mkdir(parents=True, exist_ok=True)
        return RDBStorage(f"sqlite:///{value}", engine_kwargs={"connect_args": {"timeout": 60}})
    if kind == "journal":
        Path(value).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(value))
    if kind == "env":
        url = os.environ.get(value)
        if not url:
            raise StorageConfigError(
                f"Environment variable {value} is not set; export it with the database URL, "
                f"e.g. {value}=postgresql://user:password@host/database."
            )
        return RDBStorage(url, heartbeat_interval=None)
    if kind == "memory":
        return _MEMORY_STORAGES.setdefault(value, InMemoryStorage())
    raise StorageConfigError(f"Invalid storage reference {reference!r}.")


def reaches_storage(reference: str) -> bool:
    """Return False for an in-memory study of another process, which this one cannot open."""
    kind, _, value = reference.partition(":")
    return kind != "memory" or value in _MEMORY_STORAGES


def describe_storage(reference: str) -> str:
    """Describe a storage for logs, with any password in a database URL masked."""
    kind, _, value = reference.partition(":")
    if kind != "env":
        return reference
    url = os.environ.get(value)
    if not url:
        return f"database URL from ${value} (not set)"
    from sqlalchemy.engine import make_url

    return f"{make_url(url).render_as_string(hide_password=True)} (from ${value})"


def load_or_create_study(
    reference: str, study_name: str, direction: str, sampler: Any, pruner: Any
) -> optuna.study.Study:
    """Load the named study, or create it; its direction must match the configured one."""
    study = optuna.create_study(
        storage=open_storage(reference),
        study_name=study_name,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise StorageConfigError(
            f"Study {study_name!r} in the storage optimizes {study.direction.name.lower()}, "
            f"not {direction}; set hydra.sweeper.direction={study.direction.name.lower()} "
            "or choose a new hydra.sweeper.study_name."
        )
    return study
