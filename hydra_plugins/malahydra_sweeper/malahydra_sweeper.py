"""Hydra entry point of the malahydra sweeper; the search itself is `malahydra.search`.

Optuna and the search core are imported in `setup`, so Hydra's plugin scan stays fast
and does not need Optuna to be importable.
"""

from contextlib import contextmanager
from typing import Any, Iterator, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import MalahydraSweeperConf  # noqa: F401  (registers hydra/sweeper=malahydra)


class MalahydraSweeper(Sweeper):
    """Sweeper that runs an Optuna study with the settings of `MalahydraSweeperConf`."""

    def __init__(self, **settings: Any) -> None:
        # Hydra passes the settings of `hydra.sweeper` here; the core reads them again from
        # the full config in `setup`, where `${hydra.sweep.dir}` and the like resolve.
        self._core: Optional[Any] = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        from malahydra.search.sweeper import SearchSweeper

        self._core = SearchSweeper()
        with _one_line_errors():
            self._core.setup(
                hydra_context=hydra_context, task_function=task_function, config=config
            )

    def sweep(self, arguments: List[str]) -> Any:
        assert self._core is not None, "setup() must run before sweep()"
        with _one_line_errors():
            return self._core.sweep(arguments)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Print malahydra's own errors as one line "Error: ..." and exit 1.

    Without this, Hydra prints a traceback for them, or for its compact exceptions the
    message followed by a hint. HYDRA_FULL_ERROR=1 still shows the traceback.
    """
    from hydra.errors import InstantiationException

    from malahydra.errors import MalahydraError, exit_with_message
    from malahydra.search.errors import SearchConfigError, SweepStopped

    own_errors = (MalahydraError, SearchConfigError, SweepStopped)
    try:
        yield
    except own_errors as error:
        exit_with_message(error)
    except InstantiationException as error:
        # A launcher that rejects its settings is raised through Hydra's instantiate.
        if not isinstance(error.__cause__, own_errors):
            raise
        exit_with_message(error.__cause__)
