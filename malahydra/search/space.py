"""Search space: Hydra sweep expressions -> Optuna distributions and grids.

Each entry maps a config key to one expression of Hydra's override grammar:

    training.learning_rate: tag(log, interval(1e-7, 1e-2))   # float, both bounds included
    model.hidden_widths.0: range(10, 101, 10)                # 10, 20, ..., 100
    model.hidden_widths.1: tag(int, interval(10, 100))       # any integer 10..100
    model.activations.0: choice(ReLU, Sigmoid, LeakyReLU)

`range(start, stop[, step])` excludes `stop`, as Python's `range` and Hydra's basic
sweeper do, for every sampler: TPE and random sample from the same values the grid
sampler enumerates. `interval(a, b)` is a closed float interval unless tagged `int`,
because Hydra parses its bounds as floats. `tag(log, ...)` samples on a log scale.
"""

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from .errors import SearchConfigError
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


class SearchSpaceError(SearchConfigError):
    """A search-space entry that cannot be parsed or turned into a distribution."""


@dataclass(frozen=True)
class SearchParameter:
    """One swept config key: `override_key` keeps Hydra's `+`/`++` prefix, `name` does not."""

    name: str
    override_key: str
    distribution: BaseDistribution
    grid_values: tuple | None


def parse_overrides(entries: Mapping[str, str], arguments: Sequence[str]) -> tuple[list[Override], list[Override]]:
    """Split `hydra.sweeper.params` plus command-line overrides into sweeps and fixed overrides.

    A sweep given on the command line replaces the `params` entry of the same key.
    """
    parser = OverridesParser.create()
    by_key: Dict[str, Override] = {}
    for key, expression in flatten_entries(entries).items():
        by_key[key] = _parse_one(parser, f"{key}={expression}", f"hydra.sweeper.params.{key}")

    fixed: List[Override] = []
    for argument in arguments:
        override = _parse_one(parser, argument, "command line")
        if override.is_sweep_override():
            by_key[override.get_key_element()] = override
        else:
            fixed.append(override)
    return list(by_key.values()), fixed


def flatten_entries(entries: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Join nested entries to dotted keys.

    `+hydra.sweeper.params.training.lr=...` on the command line nests `lr` under
    `training`, while a YAML file writes the flat key `training.lr`; both mean the same.
    """
    flat: dict[str, str] = {}
    for key, value in entries.items():
        if isinstance(value, Mapping):
            flat.update(flatten_entries(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _parse_one(parser: OverridesParser, text: str, origin: str) -> Override:
    try:
        return parser.parse_override(text)
    except HydraException as error:
        reason = str(error).splitlines()[0]
        raise SearchSpaceError(
            f"Invalid sweep override '{text}' ({origin}): {reason}. "
            "Expected e.g. key=choice(a,b), key=interval(0.1,1), key=range(1,10,2) "
            "or key=tag(log,interval(1e-5,1e-2))."
        ) from None


def build_search_space(sweeps: Sequence[Override]) -> list[SearchParameter]:
    """Turn parsed sweep overrides into search parameters, in the given order."""
    return [_to_parameter(override) for override in sweeps]


def _to_parameter(override: Override) -> SearchParameter:
    key = override.get_key_element()
    name = key.lstrip("+~")
    sweep = override.value()
    tags = getattr(sweep, "tags", set()) or set()
    unknown_tags = tags - {"log", "int"}
    if unknown_tags:
        raise SearchSpaceError(
            f"Unknown tag(s) {sorted(unknown_tags)} on '{key}'; supported tags are log and int."
        )
    log = "log" in tags

    if isinstance(sweep, ChoiceSweep):
        choices = tuple(_as_categorical(key, value) for value in sweep.list)
        return SearchParameter(name, key, CategoricalDistribution(choices), choices)
    if isinstance(sweep, RangeSweep):
        return _range_parameter(name, key, sweep, log)
    if isinstance(sweep, IntervalSweep):
        return _interval_parameter(name, key, sweep, log, integer="int" in tags)
    raise SearchSpaceError(f"Unsupported sweep '{key}={sweep}'; use choice, range or interval.")


def _as_categorical(key: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise SearchSpaceError(
        f"Choice value {value!r} of '{key}' is not a number, string or bool; "
        "sweep list entries one index at a time, e.g. model.hidden_widths.0=choice(10,20)."
    )


def range_values(start: float, stop: float, step: float) -> list:
    """Values of `range(start, stop, step)` with `stop` excluded, for ints and floats."""
    if step == 0 or (stop - start) * step <= 0:
        return []
    if all(isinstance(v, int) for v in (start, stop, step)):
        return list(range(start, stop, step))
    count = math.ceil((stop - start) / step - 1e-12)
    return [start + i * step for i in range(count)]


def _range_parameter(name: str, key: str, sweep: RangeSweep, log: bool) -> SearchParameter:
    values = range_values(sweep.start, sweep.stop, sweep.step)
    if not values:
        raise SearchSpaceError(
            f"range({sweep.start}, {sweep.stop}, {sweep.step}) of '{key}' is empty; "
            "the stop value is excluded, so use e.g. range(10, 101) for 10..100."
        )
    if sweep.step < 0:
        values = values[::-1]
    low, high, step = values[0], values[-1], abs(sweep.step)

    if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
        if log and step != 1:
            raise SearchSpaceError(
                f"'{key}': tag(log, range(...)) needs step 1 (Optuna samples integers on a log scale only with step 1)."
            )
        distribution = IntDistribution(low, high, log=log, step=step)
    else:
        if log:
            raise SearchSpaceError(
                f"'{key}': a float range cannot be log-scaled; use tag(log, interval({low}, {high}))."
            )
        distribution = FloatDistribution(low, high, step=step)
    return SearchParameter(name, key, distribution, tuple(values))


def _interval_parameter(
    name: str, key: str, sweep: IntervalSweep, log: bool, integer: bool
) -> SearchParameter:
    low, high = sweep.start, sweep.end
    if low > high or (log and low <= 0):
        raise SearchSpaceError(
            f"interval({low}, {high}) of '{key}' is invalid; it needs low <= high"
            + (" and low > 0 for a log scale." if log else ".")
        )
    if integer:
        if low != int(low) or high != int(high):
            raise SearchSpaceError(f"tag(int, interval({low}, {high})) of '{key}' needs integer bounds.")
        return SearchParameter(name, key, IntDistribution(int(low), int(high), log=log), None)
    return SearchParameter(name, key, FloatDistribution(low, high, log=log), None)


def grid_search_space(parameters: Sequence[SearchParameter]) -> dict[str, list]:
    """Search space of Optuna's GridSampler; intervals have no grid and are rejected."""
    grid: dict[str, list] = {}
    for parameter in parameters:
        if parameter.grid_values is None:
            raise SearchSpaceError(
                f"The grid sampler cannot enumerate '{parameter.override_key}', an interval; "
                "use choice(...) or range(...) for every key of a grid search."
            )
        grid[parameter.name] = list(parameter.grid_values)
    return grid


def missing_keys(config: DictConfig, parameters: Sequence[SearchParameter]) -> list[str]:
    """Keys of the search space that the composed config lacks (`+key` entries may be new)."""
    absent = object()
    missing = []
    for parameter in parameters:
        if parameter.override_key.startswith("+"):
            continue
        if OmegaConf.select(config, parameter.name, default=absent, throw_on_missing=False) is absent:
            missing.append(parameter.name)
    return missing


def format_override(key: str, value: Any) -> str:
    """Render `key=value` so that Hydra parses `value` back to the same Python value."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value) if math.isfinite(value) else {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan")
    elif isinstance(value, int):
        text = str(value)
    else:
        escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
        text = f"'{escaped}'"
    return f"{key}={text}"
