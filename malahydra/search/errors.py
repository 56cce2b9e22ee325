"""Errors of the search core.

They derive from Hydra's CompactHydraException, so `train.py -m` prints their one-line
message without a traceback; as ValueErrors they also read naturally in library use.
"""

from hydra.errors import CompactHydraException


class SearchConfigError(CompactHydraException, ValueError):
    """A sweeper setting or search-space entry that no search can run with."""


class SweepStopped(CompactHydraException, RuntimeError):
    """A sweep stopped by its own settings, e.g. after too many FAIL trials."""
