"""Strength-2 orthogonal arrays for Orthogonal Array Tuning (OAT) of hyperparameters.

An orthogonal array OA(N, s_1 x ... x s_k, 2) has N runs (rows) and k factors
(columns). Column j takes the levels 0..s_j-1, and for every pair of columns
every pair of levels occurs equally often. ``orthogonal_array([3, 3, 2])``
returns 18 runs: each (level, level) pair of the two 3-level columns occurs
twice, and each pair of a 3-level level and a 2-level level occurs three times.

Construction
------------
Every level count is split into prime powers, s_j = prod_p p**e_j(p), and one
array is built per prime p:

* Subspace construction (Rao-Hamming / Bose over GF(p)): the runs are all
  vectors x of GF(p)**n, so there are p**n of them. A factor with p-part p**e is
  an e-dimensional subspace U of GF(p)**n with basis u_1..u_e, and its p-part
  level in run x is the base-p number with digits x.u_1, ..., x.u_e (mod p).
  Two factors are orthogonal exactly when their subspaces meet only in 0,
  because then the e+f functionals are linearly independent and the map from x
  to both digit tuples is onto with equal fibres. With only one-dimensional
  subspaces this is the classical OA(p**n, (p**n-1)/(p-1), p, 2). A 4-level
  factor is a plane of GF(2)**n, that is three mutually orthogonal 2-level
  columns {a, b, a+b} replaced by one 4-level column, so no GF(4) polynomial
  arithmetic is needed. A deterministic depth-first search packs the subspaces,
  and n grows from its counting bound until the packing succeeds.
* Paley construction, for the prime 2 when every factor has at most a 2-part of
  2: the Plackett-Burman array with q+1 runs for a prime q = 3 (mod 4), used
  when it needs fewer runs than the power of 2 (12, 20, 24, 44, 48 runs, ...).

The per-prime arrays are crossed (every run of one with every run of the
others) and the prime parts of each factor are combined as mixed-radix digits.
Pairs of columns stay balanced across primes because the crossed arrays are
independent and each is balanced. Collapsing levels (for example 3 to 2) is
never used, because it only gives proportional frequencies.

Run counts
----------
``run_count_lower_bound`` is the smallest multiple of lcm(s_i * s_j) that is
also at least the Rao bound 1 + sum(s_j - 1). The construction reaches it for
[2]*4 (8), [2]*7 (8), [3]*3 (9), [3,2,2,2] (12), [3,3,2] (18), [4,3,2] (24),
[3,3,3,3,2] (18), [4,4,4,3] (48), [5] (5) and [2,2] (4). It needs more runs
where the smallest known array is not a product of prime-power arrays. For
example, [3] + [2]*4 gets 24 runs although OA(12, 3 x 2**4) exists. [6]*4 gets
72 runs against a bound of 36, but no OA(36, 6**4) exists, because there is no
pair of orthogonal Latin squares of order 6. The subspace search has a fixed
step budget, so for large mixed 2**e-level sets it can miss a packing: [8]*8 +
[4]*2 gets 128 runs against a bound of 64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np

__all__ = [
    "DEFAULT_MAX_RUNS",
    "is_orthogonal",
    "orthogonal_array",
    "run_count_lower_bound",
]

DEFAULT_MAX_RUNS = 1024

# Largest GF(p)**n searched for one prime, as a number of vectors. Beyond it the
# error message reports the run count as "more than" this limit.
_MAX_SEARCH_VECTORS = 2**16

# Candidate checks allowed per attempted dimension n. A count, not a clock, so
# that the result does not depend on machine speed.
_SEARCH_BUDGET = 20_000


def orthogonal_array(levels: Sequence[int], max_runs: int = DEFAULT_MAX_RUNS) -> np.ndarray:
    """Build a strength-2 orthogonal array with the given level counts.

    Args:
        levels: Number of levels of each factor, at least 2 each. Column j of
            the result belongs to ``levels[j]``, so factors keep their order.
        max_runs: Largest acceptable number of runs.

    Returns:
        An integer array of shape (runs, len(levels)), rows sorted
        lexicographically. The same input always gives the same array.

    Raises:
        ValueError: If a level count or ``max_runs`` is invalid, or if this
            construction needs more than ``max_runs`` runs.
    """
    levels = _validate_levels(levels)
    if isinstance(max_runs, bool) or not isinstance(max_runs, (int, np.integer)) or max_runs < 1:
        raise ValueError(f"max_runs must be a positive integer, got {max_runs!r}")

    components = []
    for prime in sorted({p for s in levels for p in _factorize(s)}):
        exponents = [_factorize(s).get(prime, 0) for s in levels]
        component = _prime_component(prime, exponents)
        if component is None:
            raise _too_many_runs_error(levels, max_runs, needed=None)
        components.append((prime, exponents, component))

    runs = math.prod(component.shape[0] for _, _, component in components)
    if runs > max_runs:
        raise _too_many_runs_error(levels, max_runs, needed=runs)

    array = _cross_components(components, len(levels))
    order = np.lexsort(array.T[::-1])
    return array[order]


def run_count_lower_bound(levels: Sequence[int]) -> int:
    """Return the smallest run count that any strength-2 array for ``levels`` can have.

    Equal pair counts need N to be a multiple of s_i * s_j for every pair (of
    s_j for a single factor), and Rao's bound needs N >= 1 + sum(s_j - 1).
    """
    levels = _validate_levels(levels)
    if len(levels) == 1:
        multiple = levels[0]
    else:
        multiple = math.lcm(*(a * b for a, b in combinations(levels, 2)))
    rao_bound = 1 + sum(s - 1 for s in levels)
    return multiple * math.ceil(rao_bound / multiple)


def is_orthogonal(array: np.ndarray, levels: Sequence[int]) -> bool:
    """Check that ``array`` is an orthogonal array of strength 2 for ``levels``.

    Every column must hold only levels 0..levels[j]-1, each equally often, and
    every pair of columns every pair of levels equally often.

    Raises:
        ValueError: If the number of columns differs from ``len(levels)``.
    """
    levels = _validate_levels(levels)
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] != len(levels):
        raise ValueError(
            f"array of shape {array.shape} does not match {len(levels)} factors; "
            "pass one level count per column"
        )
    if array.shape[0] == 0 or not np.issubdtype(array.dtype, np.integer):
        return False

    for column, count in zip(array.T, levels):
        if column.min() < 0 or column.max() >= count:
            return False
        if not _all_equal(np.bincount(column, minlength=count)):
            return False

    for i, j in combinations(range(len(levels)), 2):
        pairs = array[:, i] * levels[j] + array[:, j]
        if not _all_equal(np.bincount(pairs, minlength=levels[i] * levels[j])):
            return False
    return True


def _all_equal(counts: np.ndarray) -> bool:
    return bool(np.all(counts == counts[0]))


def _validate_levels(levels: Sequence[int]) -> list[int]:
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence | np.ndarray):
        raise ValueError(f"levels must be a sequence of level counts, got {levels!r}")
    if len(levels) == 0:
        raise ValueError("levels is empty; give the level count of at least one factor")
    checked = []
    for position, count in enumerate(levels):
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 2:
            raise ValueError(
                f"levels[{position}] = {count!r} is invalid; every factor needs an integer "
                "level count of at least 2"
            )
        checked.append(int(count))
    return checked


def _factorize(number: int) -> dict[int, int]:
    """Return the prime factorization of ``number`` as {prime: exponent}."""
    factors: dict[int, int] = {}
    divisor = 2
    while divisor * divisor <= number:
        while number % divisor == 0:
            factors[divisor] = factors.get(divisor, 0) + 1
            number //= divisor
        divisor += 1
    if number > 1:
        factors[number] = factors.get(number, 0) + 1
    return factors


def _too_many_runs_error(levels: list[int], max_runs: int, needed: int | None) -> ValueError:
    if needed is None:
        amount = f"more than {_MAX_SEARCH_VECTORS} runs"
    else:
        amount = f"{needed} runs"
    return ValueError(
        f"the orthogonal array for levels {_describe_levels(levels)} needs {amount}, more than "
        f"max_runs={max_runs}; use fewer factors or fewer levels per factor, or raise max_runs"
    )


def _describe_levels(levels: list[int]) -> str:
    """Return ``levels`` as a list, or as counts per level number when the list is long."""
    if len(levels) <= 12:
        return str(levels)
    counts = {s: levels.count(s) for s in sorted(set(levels))}
    groups = ", ".join(f"{count} with {s} levels" for s, count in counts.items())
    return f"of {len(levels)} factors ({groups})"


def _prime_component(prime: int, exponents: list[int]) -> np.ndarray | None:
    """Build the smallest array found for the ``prime``-parts of all factors.

    Entry [run, j] is the p-part level of factor j (0 where exponents[j] is 0).
    Returns None if no array within ``_MAX_SEARCH_VECTORS`` runs was found.
    """
    active = [e for e in exponents if e > 0]
    dimension = _min_dimension(prime, active)
    subspace_array = None
    while prime**dimension <= _MAX_SEARCH_VECTORS:
        bases = _pack_subspaces(prime, dimension, exponents)
        if bases is not None:
            subspace_array = _subspace_array(prime, dimension, bases)
            break
        dimension += 1

    if prime == 2 and max(active) == 1:
        paley = _paley_array(len(active), limit=_MAX_SEARCH_VECTORS)
        if paley is not None and (subspace_array is None or paley.shape[0] < subspace_array.shape[0]):
            component = np.zeros((paley.shape[0], len(exponents)), dtype=np.int64)
            component[:, [j for j, e in enumerate(exponents) if e > 0]] = paley
            return component
    return subspace_array


def _min_dimension(prime: int, dims: list[int]) -> int:
    """Return the smallest n that passes the pairwise and counting bounds for packing ``dims``."""
    dimension = max(dims)
    if len(dims) > 1:
        largest = sorted(dims, reverse=True)
        dimension = largest[0] + largest[1]
    points_needed = sum(prime**e - 1 for e in dims)
    while prime**dimension - 1 < points_needed:
        dimension += 1
    return dimension


def _pack_subspaces(prime: int, dimension: int, exponents: list[int]) -> list[np.ndarray] | None:
    """Find pairwise trivially intersecting subspaces of GF(prime)**dimension.

    Factor j gets a subspace of dimension exponents[j], returned as an
    (exponents[j], dimension) array of basis vectors in base-p digits. Returns
    None if the search budget runs out or no packing exists.
    """
    size = prime**dimension
    powers = prime ** np.arange(dimension, dtype=np.int64)
    digits = (np.arange(size)[:, None] // powers) % prime
    used = np.zeros(size, dtype=bool)
    used[0] = True
    # A vector is a representative of its line when its last nonzero digit is 1,
    # so each one-dimensional subspace is tried once.
    last_nonzero = np.where(digits[1:] != 0, np.arange(dimension), -1).max(axis=1)
    representative = np.zeros(size, dtype=bool)
    representative[1:] = digits[np.arange(1, size), last_nonzero] == 1

    bases: list[np.ndarray | None] = [None] * len(exponents)
    planes = sorted((j for j, e in enumerate(exponents) if e >= 2), key=lambda j: -exponents[j])
    if not _search_planes(prime, digits, powers, used, representative, exponents, planes, bases):
        return None

    # A line that meets a packed subspace outside 0 lies inside it, so the unused
    # points form whole lines and any of them fits without backtracking.
    free_lines = np.flatnonzero(representative & ~used)
    lines = [j for j, e in enumerate(exponents) if e == 1]
    if len(free_lines) < len(lines):
        return None
    for j, vector in zip(lines, free_lines):
        bases[j] = digits[vector][None, :]
    for j, e in enumerate(exponents):
        if e == 0:
            bases[j] = np.zeros((0, dimension), dtype=np.int64)
    return bases  # type: ignore[return-value]


def _search_planes(
    prime: int,
    digits: np.ndarray,
    powers: np.ndarray,
    used: np.ndarray,
    representative: np.ndarray,
    exponents: list[int],
    planes: list[int],
    bases: list[np.ndarray | None],
) -> bool:
    """Place the subspaces of dimension >= 2 by depth-first search with an explicit stack.

    Each step adds one basis vector to the current factor's subspace. Basis
    vectors increase within a subspace, and the first basis vectors increase
    between subspaces of equal dimension, which removes reorderings of the
    same packing from the search.
    """
    if not planes:
        return True
    steps = [(j, k) for j in planes for k in range(exponents[j])]
    spans: dict[int, np.ndarray] = {j: np.zeros(1, dtype=np.int64) for j in planes}
    chosen: list[int] = []
    marked: list[np.ndarray] = []
    next_candidate = [1] * len(steps)
    budget = _SEARCH_BUDGET

    depth = 0
    while depth < len(steps):
        factor, k = steps[depth]
        start = next_candidate[depth]
        candidates = np.flatnonzero(representative[start:] & ~used[start:]) + start
        placed = False
        for vector in candidates:
            budget -= 1
            if budget < 0:
                return False
            span = spans[factor]
            multiples = (np.arange(1, prime)[:, None, None] * digits[vector] + digits[span][None]) % prime
            new_points = (multiples.reshape(-1, digits.shape[1]) @ powers).astype(np.int64)
            if used[new_points].any():
                continue
            used[new_points] = True
            spans[factor] = np.concatenate([span, new_points])
            chosen.append(int(vector))
            marked.append(new_points)
            next_candidate[depth] = int(vector) + 1
            placed = True
            break

        if placed:
            depth += 1
            if depth < len(steps):
                next_factor, next_k = steps[depth]
                if next_k > 0:
                    next_candidate[depth] = chosen[-1] + 1
                elif exponents[next_factor] == exponents[factor]:
                    next_candidate[depth] = chosen[-exponents[factor]] + 1
                else:
                    next_candidate[depth] = 1
            continue

        # Backtrack: undo the previous step and resume after its vector.
        if depth == 0:
            return False
        depth -= 1
        previous_factor, _ = steps[depth]
        undone = marked.pop()
        chosen.pop()
        used[undone] = False
        spans[previous_factor] = spans[previous_factor][: -len(undone)]

    for j in planes:
        first = sum(exponents[i] for i in planes[: planes.index(j)])
        bases[j] = digits[chosen[first : first + exponents[j]]]
    return True


def _subspace_array(prime: int, dimension: int, bases: list[np.ndarray]) -> np.ndarray:
    """Evaluate every factor's functionals on all p**n vectors of GF(p)**n."""
    size = prime**dimension
    powers = prime ** np.arange(dimension, dtype=np.int64)
    runs = (np.arange(size)[:, None] // powers) % prime
    columns = []
    for basis in bases:
        digit_values = (runs @ basis.T) % prime
        columns.append(digit_values @ (prime ** np.arange(basis.shape[0], dtype=np.int64)))
    return np.stack(columns, axis=1).astype(np.int64)


def _paley_array(factors: int, limit: int) -> np.ndarray | None:
    """Return the Plackett-Burman OA(q+1, 2**factors, 2) for the smallest prime q = 3 mod 4 that fits.

    Row r, column c is 1 when (r + c) mod q is a nonzero quadratic residue or
    zero, else 0. One extra row of zeros completes the array.
    Returns None when q+1 would exceed ``limit``.
    """
    q = 3
    while q < factors or q % 4 != 3 or _factorize(q) != {q: 1}:
        q += 1
        if q + 1 > limit:
            return None
    residues = np.zeros(q, dtype=bool)
    residues[(np.arange(1, q) ** 2) % q] = True
    residues[0] = True
    shifts = (np.arange(q)[:, None] + np.arange(factors)[None, :]) % q
    array = residues[shifts].astype(np.int64)
    return np.vstack([array, np.zeros((1, factors), dtype=np.int64)])


def _cross_components(components: list[tuple[int, list[int], np.ndarray]], factors: int) -> np.ndarray:
    """Cross the per-prime arrays and combine each factor's prime parts as mixed-radix digits."""
    array = np.zeros((1, factors), dtype=np.int64)
    radix = np.ones(factors, dtype=np.int64)
    for prime, exponents, component in components:
        outer = np.repeat(array, component.shape[0], axis=0)
        inner = np.tile(component, (array.shape[0], 1))
        array = outer + inner * radix
        radix = radix * prime ** np.asarray(exponents, dtype=np.int64)
    return array
