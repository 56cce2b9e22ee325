"""Tests for the strength-2 orthogonal arrays used by Orthogonal Array Tuning."""

from itertools import combinations, product

import numpy as np
import pytest

from malahydra.search.orthogonal_array import (
    DEFAULT_MAX_RUNS,
    is_orthogonal,
    orthogonal_array,
    run_count_lower_bound,
)

# (levels, runs this construction reaches). Every run count here equals the lower bound.
LEVEL_SETS = [
    ([2] * 4, 8),
    ([2] * 7, 8),
    ([3] * 3, 9),
    ([3, 2, 2, 2], 12),
    ([3, 3, 2], 18),
    ([4, 3, 2], 24),
    ([3, 3, 3, 3, 2], 18),
    ([4, 4, 4, 3], 48),
    ([5], 5),
    ([2, 2], 4),
    # Plackett-Burman (Paley) arrays for the 2-level part.
    ([2] * 11, 12),
    # A full spread of 2-dimensional subspaces of GF(2)**4.
    ([4] * 5, 16),
    ([8, 4, 2], 32),
    ([6, 6, 6], 36),
    ([2, 4, 3, 3], 72),
]


def _level_set_id(case):
    levels, _ = case
    return "-".join(map(str, levels))


@pytest.mark.parametrize("case", LEVEL_SETS, ids=_level_set_id)
def test_array_is_orthogonal(case):
    levels, _ = case

    array = orthogonal_array(levels)

    assert array.shape[1] == len(levels)
    assert np.issubdtype(array.dtype, np.integer)
    assert is_orthogonal(array, levels)


@pytest.mark.parametrize("case", LEVEL_SETS, ids=_level_set_id)
def test_array_run_count(case, record_property):
    levels, expected_runs = case

    runs = orthogonal_array(levels).shape[0]
    record_property("runs", runs)
    print(f"levels {levels}: {runs} runs, lower bound {run_count_lower_bound(levels)}")

    assert runs == expected_runs
    assert runs == run_count_lower_bound(levels)


@pytest.mark.parametrize("case", LEVEL_SETS, ids=_level_set_id)
def test_array_pair_counts(case):
    # Counts every level pair directly instead of trusting is_orthogonal.
    levels, _ = case
    array = orthogonal_array(levels)
    runs = array.shape[0]

    for i, j in combinations(range(len(levels)), 2):
        for a, b in product(range(levels[i]), range(levels[j])):
            count = int(np.sum((array[:, i] == a) & (array[:, j] == b)))
            assert count == runs // (levels[i] * levels[j]), f"columns {i},{j} levels {a},{b}"
    for j, count in enumerate(levels):
        assert sorted(set(array[:, j].tolist())) == list(range(count)), f"column {j}"


def test_array_keeps_factor_order():
    # A 2-level factor first must stay in column 0.
    array = orthogonal_array([2, 3, 4])

    assert array[:, 0].max() == 1
    assert array[:, 1].max() == 2
    assert array[:, 2].max() == 3


def test_array_is_deterministic():
    for levels, _ in LEVEL_SETS:
        first = orthogonal_array(levels)
        second = orthogonal_array(list(levels))
        assert np.array_equal(first, second), f"levels {levels}"


def test_array_first_row_is_all_zero():
    array = orthogonal_array([4, 4, 4, 3])

    assert array[0].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("levels", [[3, 3, 2], [4, 3, 2]], ids=["3-3-2", "4-3-2"])
def test_array_has_no_duplicate_rows(levels):
    # At the lower bound these arrays are full factorials: 18 and 24 distinct runs.
    array = orthogonal_array(levels)

    assert array.shape[0] == run_count_lower_bound(levels)
    assert len({tuple(row) for row in array.tolist()}) == array.shape[0]


# (levels, runs this construction reaches, lower bound). OA(12, 3 x 2**4) and
# OA(24, 3 x 2**12) exist, but not as products of prime-power arrays.
ABOVE_LOWER_BOUND = [
    ([3, 2, 2, 2, 2], 24, 12),
    ([3] + [2] * 11, 36, 24),
]


@pytest.mark.parametrize("case", ABOVE_LOWER_BOUND, ids=lambda case: _level_set_id(case[:2]))
def test_array_above_lower_bound(case):
    levels, expected_runs, lower_bound = case

    array = orthogonal_array(levels)

    assert is_orthogonal(array, levels)
    assert array.shape[0] == expected_runs
    assert run_count_lower_bound(levels) == lower_bound


def test_array_too_many_runs_error():
    with pytest.raises(ValueError, match=r"levels \[3, 3, 3, 3, 3\] needs 27 runs, more than max_runs=20"):
        orthogonal_array([3, 3, 3, 3, 3], max_runs=20)


def test_array_default_limit_error():
    with pytest.raises(ValueError, match=f"needs 2039 runs, more than max_runs={DEFAULT_MAX_RUNS}"):
        orthogonal_array([2039])


def test_array_error_names_fix():
    with pytest.raises(ValueError, match="use fewer factors or fewer levels per factor, or raise max_runs"):
        orthogonal_array([7, 7, 7], max_runs=48)


def test_array_max_runs_exactly_enough():
    array = orthogonal_array([3, 3, 2], max_runs=18)

    assert array.shape[0] == 18


@pytest.mark.parametrize("levels", [[], [3, 1], [2, 2.5], [True, 2], "22"], ids=["empty", "one", "float", "bool", "str"])
def test_array_invalid_levels(levels):
    with pytest.raises(ValueError, match="levels"):
        orthogonal_array(levels)


def test_array_invalid_max_runs():
    with pytest.raises(ValueError, match="max_runs must be a positive integer, got 0"):
        orthogonal_array([2, 2], max_runs=0)


def test_is_orthogonal_rejects_unbalanced_pair():
    # Collapsing a 3-level column of OA(9, 3**2) to 2 levels (2 -> 1) gives
    # proportional, not equal, pair counts.
    array = orthogonal_array([3, 3])
    array[:, 1] = np.minimum(array[:, 1], 1)

    assert not is_orthogonal(array, [3, 2])


def test_is_orthogonal_rejects_duplicated_run():
    array = orthogonal_array([2] * 3)
    array = np.vstack([array, array[:1]])

    assert not is_orthogonal(array, [2] * 3)


def test_is_orthogonal_rejects_out_of_range_level():
    array = orthogonal_array([2, 2])

    assert is_orthogonal(array, [2, 2])
    assert not is_orthogonal(array + 1, [2, 2])


def test_is_orthogonal_accepts_full_factorial():
    levels = [3, 2, 2]
    array = np.array(list(product(*(range(s) for s in levels))))

    assert is_orthogonal(array, levels)


def test_is_orthogonal_column_mismatch():
    with pytest.raises(ValueError, match="does not match 3 factors"):
        is_orthogonal(np.zeros((4, 2), dtype=int), [2, 2, 2])


def test_lower_bound_uses_rao_bound():
    # lcm(2*2) = 4, but Rao's bound 1 + 4 = 5 needs the next multiple, 8.
    assert run_count_lower_bound([2] * 4) == 8


def test_lower_bound_single_factor():
    assert run_count_lower_bound([5]) == 5
