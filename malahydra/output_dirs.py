"""Check Hydra's output directories before a run or a search starts writing into them.

Hydra creates `hydra.run.dir` itself and prints a traceback when that fails. The
callback below reports such a path in one line that names the key to change.
"""

import os
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from malahydra.errors import ConfigurationError, exit_with_message


def check_writable_directory(path: str | os.PathLike, key: str) -> None:
    """Raise ConfigurationError when `path` cannot be created, or written as a directory."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigurationError(
            f"Cannot create the output directory {key}={path}: {existing} is a file, not a directory; "
            f"set {key} to a directory you can write to."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"Cannot create the output directory {key}={path}: {existing} is not writable; "
            f"set {key} to a directory you can write to."
        )


class OutputDirectoryCheck(Callback):
    """Hydra callback (`hydra.callbacks` in conf/config.yaml) that checks the output directory first."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")

    @staticmethod
    def _check(path: str, key: str) -> None:
        try:
            check_writable_directory(path, key)
        except ConfigurationError as error:
            exit_with_message(error)
