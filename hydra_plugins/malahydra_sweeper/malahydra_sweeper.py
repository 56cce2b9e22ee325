"""Hydra entry point of the malahydra sweeper; the search itself is `malahydra.search`.

Optuna and the search core are imported in `setup`, so Hydra's plugin scan stays fast
and does not need Optuna to be importable.
"""

from typing import Any, List, Optional

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
        self._core.setup(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: List[str]) -> Any:
        assert self._core is not None, "setup() must run before sweep()"
        return self._core.sweep(arguments)
