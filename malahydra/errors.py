"""Exceptions whose message is meant for the user as it is: one sentence, value and fix."""

import os
import sys
from typing import NoReturn


class MalahydraError(Exception):
    """An input or state problem the user can fix; the entry points print only its message."""

    # True for an error that every trial of a search would repeat, whatever its parameters
    # (for example a missing data directory), so the search stops at the first one.
    stops_search = False


class DataError(MalahydraError):
    """A data directory, snapshot file or its calculation data is missing or invalid."""

    stops_search = True


class ConfigurationError(MalahydraError):
    """A configuration value is invalid."""


class CheckpointError(MalahydraError):
    """A checkpoint does not fit the configured run."""


def exit_with_message(error: BaseException) -> NoReturn:
    """End the program with `error` as one line "Error: ..." and exit status 1.

    With HYDRA_FULL_ERROR=1 the error is raised again instead, so its traceback shows.
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"Error: {error}", file=sys.stderr)
    sys.exit(1)
