"""Main-effect (range) analysis of the runs of an orthogonal array.

In Orthogonal Array Tuning every run of a strength-2 array is trained once.
Because each level of a factor meets every level of every other factor equally
often, the mean objective over the runs at one level estimates that level's
main effect. The best level of each factor together form the predicted optimum,
which is usually not one of the runs. The range (max mean - min mean) of a
factor measures how much the objective depends on it. Factors with a large
range are the ones to refine first.

Failed runs (objective None, NaN or infinite) are left out of the means and
counted per factor and level. Leaving them out breaks the balance of the
array, so the means of the remaining runs are then only estimates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["MainEffects", "main_effects"]

DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class MainEffects:
    """Result of a main-effect analysis, indexed [factor][level] like the array columns.

    All fields are plain Python lists, ints, floats and None, so ``to_dict()``
    can be written with any YAML or JSON dumper.
    """

    direction: str
    # Mean objective of the successful runs at each level, or None when all failed.
    level_means: list[list[float | None]]
    # Successful runs at each level.
    successful_runs: list[list[int]]
    # Failed runs at each level, left out of level_means.
    failed_runs: list[list[int]]
    # Best level of each factor. Together they form the predicted optimum.
    best_levels: list[int]
    # max(level_means) - min(level_means) of each factor, over levels with a mean.
    ranges: list[float]
    # Factor indices by decreasing range. Equal ranges keep the column order.
    ranking: list[int]

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a dictionary of plain lists and numbers."""
        return asdict(self)


def main_effects(
    rows: Sequence[Sequence[int]] | np.ndarray,
    values: Sequence[float | None],
    levels: Sequence[int],
    direction: str,
) -> MainEffects:
    """Compute per-level mean objectives, best levels and ranges for each factor.

    Args:
        rows: Runs x factors array of level indices, as built by
            ``orthogonal_array``.
        values: Objective of each run. None, NaN or +-inf marks a failed run.
        levels: Number of levels of each factor.
        direction: "minimize" or "maximize", which decides the best mean.

    Raises:
        ValueError: If the shapes or values are inconsistent, or if every run
            failed, so that no factor has a mean at any level.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is invalid; use 'minimize' or 'maximize'")
    levels = _check_levels(levels)
    design = _check_rows(rows, levels)
    objective = _check_values(values, design.shape[0])
    succeeded = np.isfinite(objective)

    level_means: list[list[float | None]] = []
    successful_runs: list[list[int]] = []
    failed_runs: list[list[int]] = []
    best_levels: list[int] = []
    ranges: list[float] = []
    for factor, count in enumerate(levels):
        means, successes, failures = _level_statistics(design[:, factor], count, objective, succeeded)
        measured = [mean for mean in means if mean is not None]
        if not measured:
            raise ValueError(
                f"factor {factor} has no successful run at any level (all {design.shape[0]} runs "
                "failed); fix the failing trials before analysing main effects"
            )
        level_means.append(means)
        successful_runs.append(successes)
        failed_runs.append(failures)
        best_levels.append(_best_level(means, direction))
        # NOTE: a factor with only one measured level gets range 0.0 and ranks last,
        # although its effect is unknown rather than small.
        ranges.append(max(measured) - min(measured))

    # sorted() is stable, so factors with equal ranges keep their column order.
    ranking = sorted(range(len(levels)), key=lambda factor: -ranges[factor])
    return MainEffects(
        direction=direction,
        level_means=level_means,
        successful_runs=successful_runs,
        failed_runs=failed_runs,
        best_levels=best_levels,
        ranges=ranges,
        ranking=ranking,
    )


def _level_statistics(
    column: np.ndarray, count: int, objective: np.ndarray, succeeded: np.ndarray
) -> tuple[list[float | None], list[int], list[int]]:
    means: list[float | None] = []
    successes: list[int] = []
    failures: list[int] = []
    for level in range(count):
        at_level = column == level
        ok = at_level & succeeded
        successes.append(int(ok.sum()))
        failures.append(int((at_level & ~succeeded).sum()))
        means.append(float(objective[ok].mean()) if ok.any() else None)
    return means, successes, failures


def _best_level(means: list[float | None], direction: str) -> int:
    """Return the level with the best mean; ties go to the lowest level index."""
    candidates = [(mean, level) for level, mean in enumerate(means) if mean is not None]
    if direction == "minimize":
        return min(candidates)[1]
    return min((-mean, level) for mean, level in candidates)[1]


def _check_levels(levels: Sequence[int]) -> list[int]:
    checked = []
    for position, count in enumerate(levels):
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(
                f"levels[{position}] = {count!r} is invalid; give a positive integer level count"
            )
        checked.append(int(count))
    if not checked:
        raise ValueError("levels is empty; give the level count of at least one factor")
    return checked


def _check_rows(rows: Sequence[Sequence[int]] | np.ndarray, levels: list[int]) -> np.ndarray:
    design = np.asarray(rows)
    if design.ndim != 2 or design.shape[1] != len(levels) or design.shape[0] == 0:
        raise ValueError(
            f"rows of shape {design.shape} do not match {len(levels)} factors; "
            "pass a non-empty runs x factors array with one column per level count"
        )
    if not np.issubdtype(design.dtype, np.integer):
        raise ValueError(f"rows have dtype {design.dtype}; pass integer level indices")
    for factor, count in enumerate(levels):
        column = design[:, factor]
        if column.min() < 0 or column.max() >= count:
            raise ValueError(
                f"column {factor} of rows holds levels {column.min()}..{column.max()}, "
                f"outside 0..{count - 1}; check that levels matches the array"
            )
    return design


def _check_values(values: Sequence[float | None], runs: int) -> np.ndarray:
    if len(values) != runs:
        raise ValueError(f"got {len(values)} objective values for {runs} runs; pass one value per run")
    objective = np.empty(runs, dtype=float)
    for run, value in enumerate(values):
        if value is None:
            objective[run] = math.nan
        elif isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(
                f"objective value {value!r} of run {run} is invalid; pass a number, or None for a failed run"
            )
        else:
            objective[run] = float(value)
    # Failed runs are NaN from here on, so isfinite() alone marks successes.
    objective[~np.isfinite(objective)] = math.nan
    return objective
