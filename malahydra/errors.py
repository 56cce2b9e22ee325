"""Exceptions whose message is meant for the user as it is: one sentence, value and fix."""


class MalahydraError(Exception):
    """An input or state problem the user can fix; the entry points print only its message."""


class DataError(MalahydraError):
    """A data directory, snapshot file or its calculation data is missing or invalid."""


class ConfigurationError(MalahydraError):
    """A configuration value is invalid."""


class CheckpointError(MalahydraError):
    """A checkpoint does not fit the configured run."""
