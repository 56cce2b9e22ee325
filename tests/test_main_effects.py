"""Tests for the main-effect (range) analysis of orthogonal-array runs."""

import math

import numpy as np
import pytest
import yaml

from malahydra.search.main_effects import main_effects
from malahydra.search.orthogonal_array import orthogonal_array

LEVELS = [4, 3, 2]
# Known main effects of an additive objective f = A[l0] + B[l1] + C[l2].
EFFECT_A = [3.0, 1.0, 4.0, 2.5]  # range 3.0
EFFECT_B = [0.5, -1.0, 0.0]  # range 1.5
EFFECT_C = [0.0, 5.0]  # range 5.0


def _objective(row):
    return EFFECT_A[row[0]] + EFFECT_B[row[1]] + EFFECT_C[row[2]]


@pytest.fixture
def design():
    rows = orthogonal_array(LEVELS)
    values = [_objective(row) for row in rows]
    return rows, values


def _expected_means(effect, others):
    # With balanced columns every level meets each level of the others equally often.
    return [value + sum(np.mean(other) for other in others) for value in effect]


def test_means_match_known_effects(design):
    rows, values = design

    result = main_effects(rows, values, LEVELS, "minimize")

    assert result.level_means[0] == pytest.approx(_expected_means(EFFECT_A, [EFFECT_B, EFFECT_C]))
    assert result.level_means[1] == pytest.approx(_expected_means(EFFECT_B, [EFFECT_A, EFFECT_C]))
    assert result.level_means[2] == pytest.approx(_expected_means(EFFECT_C, [EFFECT_A, EFFECT_B]))


def test_ranges_match_known_effects(design):
    rows, values = design

    result = main_effects(rows, values, LEVELS, "minimize")

    assert result.ranges == pytest.approx([3.0, 1.5, 5.0])


def test_ranking_by_range(design):
    rows, values = design

    result = main_effects(rows, values, LEVELS, "maximize")

    assert result.ranking == [2, 0, 1]


def test_best_levels_minimize(design):
    rows, values = design

    result = main_effects(rows, values, LEVELS, "minimize")

    assert result.best_levels == [1, 1, 0]


def test_best_levels_maximize(design):
    rows, values = design

    result = main_effects(rows, values, LEVELS, "maximize")

    assert result.best_levels == [2, 0, 1]


def test_counts_without_failures(design):
    rows, values = design

    result = main_effects(rows, values, LEVELS, "minimize")

    assert result.successful_runs == [[6] * 4, [8] * 3, [12] * 2]
    assert result.failed_runs == [[0] * 4, [0] * 3, [0] * 2]


def test_failed_runs_excluded_and_counted(design):
    rows, values = design
    values = list(values)
    failed = [0, 5, 17]
    values[0] = None
    values[5] = math.nan
    values[17] = math.inf

    result = main_effects(rows, values, LEVELS, "minimize")

    ok = np.ones(len(rows), dtype=bool)
    ok[failed] = False
    objective = np.array([0.0 if v is None else v for v in values])
    for factor, count in enumerate(LEVELS):
        expected_failed = [int(np.sum(rows[failed, factor] == level)) for level in range(count)]
        expected_means = [objective[ok & (rows[:, factor] == level)].mean() for level in range(count)]
        assert result.failed_runs[factor] == expected_failed, f"factor {factor}"
        assert sum(result.successful_runs[factor]) == len(rows) - len(failed), f"factor {factor}"
        assert result.level_means[factor] == pytest.approx(expected_means), f"factor {factor}"


def test_level_without_successes_is_none():
    rows = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]])
    # Level 2 of factor 0 has the lowest values, but both of its runs failed.
    values = [5.0, 6.0, 3.0, 4.0, None, None]

    result = main_effects(rows, values, [3, 2], "minimize")

    assert result.level_means[0] == [5.5, 3.5, None]
    assert result.best_levels[0] == 1
    assert result.failed_runs[0] == [0, 0, 2]
    assert result.ranges[0] == pytest.approx(2.0)


def test_level_without_successes_not_best_maximize():
    rows = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    values = [1.0, 2.0, None, None]

    result = main_effects(rows, values, [2, 2], "maximize")

    assert result.best_levels[0] == 0


def test_ties_pick_lowest_level():
    rows = np.array([[0], [1], [2]])

    result = main_effects(rows, [1.0, 0.0, 0.0], [3], "minimize")

    assert result.best_levels == [1]


def test_ranking_ties_keep_factor_order():
    rows = orthogonal_array([2, 2, 2])
    values = [float(row[1]) for row in rows]

    result = main_effects(rows, values, [2, 2, 2], "minimize")

    assert result.ranking == [1, 0, 2]


def test_all_runs_failed_error(design):
    rows, _ = design

    with pytest.raises(ValueError, match="factor 0 has no successful run at any level"):
        main_effects(rows, [None] * len(rows), LEVELS, "minimize")


def test_invalid_direction_error(design):
    rows, values = design

    with pytest.raises(ValueError, match="direction 'lower' is invalid"):
        main_effects(rows, values, LEVELS, "lower")


def test_value_count_mismatch_error(design):
    rows, values = design

    with pytest.raises(ValueError, match="got 23 objective values for 24 runs"):
        main_effects(rows, values[:-1], LEVELS, "minimize")


def test_level_out_of_range_error(design):
    rows, values = design

    with pytest.raises(ValueError, match="column 2 of rows holds levels 0..1, outside 0..0"):
        main_effects(rows, values, [4, 3, 1], "minimize")


def test_column_count_mismatch_error(design):
    rows, values = design

    with pytest.raises(ValueError, match="do not match 2 factors"):
        main_effects(rows, values, [4, 3], "minimize")


def test_non_numeric_value_error(design):
    rows, values = design
    values = list(values)
    values[2] = "0.5"

    with pytest.raises(ValueError, match="objective value '0.5' of run 2 is invalid"):
        main_effects(rows, values, LEVELS, "minimize")


def test_result_dumps_to_yaml(design):
    rows, values = design
    values = list(values)
    values[0] = None

    result = main_effects(rows, [np.float64(v) if v is not None else None for v in values], LEVELS, "minimize")
    text = yaml.safe_dump(result.to_dict())

    assert yaml.safe_load(text) == result.to_dict()
