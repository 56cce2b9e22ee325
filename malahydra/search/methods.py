"""Samplers and pruners by name: the part in which TPE, random and grid search differ.

The search core asks the sampler for every new trial; methods that evaluate fixed
configurations (one-at-a-time scans, NASWOT ranking) enqueue them instead and use the
same core.
"""

from typing import Any, Callable, Mapping, Sequence

import optuna

from .errors import SearchConfigError
from .space import SearchParameter, grid_search_space

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median", "hyperband")


class MethodConfigError(SearchConfigError):
    """An unknown sampler or pruner, or options it does not accept."""


def make_sampler(
    name: str, options: Mapping[str, Any], seed: int | None, space: Sequence[SearchParameter]
) -> optuna.samplers.BaseSampler:
    """Build the named sampler with `seed`; `options` are its constructor's keyword arguments."""
    factories: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "grid": lambda **kw: GridSamplerWithoutStop(grid_search_space(space), **kw),
    }
    if name not in factories:
        raise MethodConfigError(
            f"Unknown sampler {name!r}; use one of {', '.join(SAMPLERS)} (hydra.sweeper.sampler)."
        )
    try:
        return factories[name](seed=seed, **dict(options))
    except TypeError as error:
        raise MethodConfigError(f"Invalid hydra.sweeper.sampler_options for {name}: {error}.") from None


class GridSamplerWithoutStop(optuna.samplers.GridSampler):
    """GridSampler that leaves ending the search to the sweeper's budget.

    Optuna's GridSampler calls `Study.stop()` after the last grid point, which raises
    outside of `Study.optimize`; the sweeper caps its budget at the grid size instead.
    """

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001 -- Optuna's signature
        return None


def make_pruner(name: str, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """Build the named pruner; `none` never prunes."""
    factories: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }
    if name not in factories:
        raise MethodConfigError(
            f"Unknown pruner {name!r}; use one of {', '.join(PRUNERS)} (hydra.sweeper.pruner)."
        )
    try:
        return factories[name](**dict(options))
    except TypeError as error:
        raise MethodConfigError(f"Invalid hydra.sweeper.pruner_options for {name}: {error}.") from None


def derived_seed(*parts: int) -> int:
    """Derive a 31-bit seed from integers, e.g. (study seed, trial number, repeat index)."""
    import numpy as np

    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0] >> 1)
