"""Exact integrals of a piecewise-linear DOS against the Fermi-Dirac distribution.

The DOS is known on an equidistant energy grid E_i = offset + i * spacing. Between grid
points it is taken as linear, and it falls linearly to zero one spacing beyond each end,
so D(E) = sum_i D_i * hat_i(E) with hat functions of half-width `spacing`. Any energy
integral of D times f (the Fermi-Dirac function) or E * f is then a weighted sum
sum_i D_i * w_i with weights that depend only on the grid, the chemical potential and kT.

The weights follow from the antiderivatives of x^n f(x), n = 0, 1, 2, in the reduced
energy x = (E - mu) / kT, which are closed forms in the polylogarithms Li_1, Li_2, Li_3
of -exp(-|x|). Everything is vectorised over the grid: no Python loop runs per energy.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import bernoulli, spence

# Dirichlet eta function at 3, 2, 1 and at 0, -1, -2, ...: eta(-m) = (2^(m+1) - 1) B_(m+1) / (m+1),
# with the Bernoulli number B_1 = +1/2 (the convention in which eta(0) = 1/2).
_ZETA_3 = 1.2020569031595942854
_ETA_SERIES_TERMS = 40


def _eta_at_non_positive(m: int) -> float:
    bernoulli_number = 0.5 if m == 0 else float(bernoulli(m + 1)[m + 1])
    return (2 ** (m + 1) - 1) * bernoulli_number / (m + 1)


_ETA_FROM_3 = np.array(
    [0.75 * _ZETA_3, math.pi**2 / 12, math.log(2.0)]
    + [_eta_at_non_positive(m) for m in range(_ETA_SERIES_TERMS - 3)]
)
_INVERSE_FACTORIALS = np.array([1.0 / math.factorial(n) for n in range(_ETA_SERIES_TERMS)])
_ETA_COEFFICIENTS = _ETA_FROM_3 * _INVERSE_FACTORIALS
# Li_3(-t) = -t * sum_k (-t)^(k-1) / k^3, k = 1 .. 60.
_DIRECT_COEFFICIENTS = 1.0 / np.arange(1, 61, dtype=np.float64) ** 3
# Below this t the direct series sum_k (-t)^k / k^3 reaches double precision in 60 terms.
_DIRECT_SERIES_LIMIT = math.exp(-1.0)


def polylog3_of_negative(t: np.ndarray) -> np.ndarray:
    """Compute Li_3(-t) for 0 <= t <= 1.

    Small t use the defining series. Near t = 1, with t = exp(-y) and 0 <= y < 1, the
    expansion Li_s(-exp(mu)) = -sum_n eta(s - n) mu^n / n! (radius of convergence pi)
    converges fast instead.
    """
    t = np.asarray(t, dtype=np.float64)
    result = np.empty_like(t)

    direct = t <= _DIRECT_SERIES_LIMIT
    result[direct] = _horner(-t[direct], _DIRECT_COEFFICIENTS) * -t[direct]
    result[~direct] = -_horner(np.log(t[~direct]), _ETA_COEFFICIENTS)
    return result


def _horner(x: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """Evaluate sum_n coefficients[n] * x^n."""
    total = np.full_like(x, coefficients[-1])
    for coefficient in coefficients[-2::-1]:
        total = total * x + coefficient
    return total


def fermi_moment_antiderivatives(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return antiderivatives A_n(x) of x^n / (1 + exp(x)) for n = 0, 1, 2.

    For x <= 0 they are written with Li_s(-exp(x)) and for x > 0 with Li_s(-exp(-x)); the
    constant pi^2/6 added to A_1 on the positive side makes both branches one continuous
    antiderivative. The positive branch decays to 0, so large |x| loses no precision.
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.exp(-np.abs(x))
    li1 = -np.log1p(t)
    li2 = spence(1.0 + t)  # scipy's spence(z) is Li_2(1 - z)
    li3 = polylog3_of_negative(t)

    negative = x <= 0.0
    a0 = np.where(negative, x + li1, li1)
    a1 = np.where(negative, 0.5 * x * x + x * li1 - li2, x * li1 + li2 + math.pi**2 / 6)
    a2 = np.where(
        negative,
        x**3 / 3.0 + x * x * li1 - 2.0 * x * li2 + 2.0 * li3,
        x * x * li1 + 2.0 * x * li2 + 2.0 * li3,
    )
    return a0, a1, a2


def fermi_weights(
    energies: np.ndarray, chemical_potential: float, kT: float
) -> tuple[np.ndarray, np.ndarray]:
    """Compute the weights that turn a DOS on `energies` into electron count and band energy.

    Returns (w_count, w_energy) with N = w_count @ dos and E_band = w_energy @ dos, where
    N = integral D(E) f(E) dE and E_band = integral E D(E) f(E) dE for the piecewise-linear
    D described in the module docstring. Energies, mu and kT are in eV.
    """
    energies = np.asarray(energies, dtype=np.float64)
    spacing = energies[1] - energies[0]
    nodes = np.concatenate(([energies[0] - spacing], energies, [energies[-1] + spacing]))

    a0, a1, a2 = fermi_moment_antiderivatives((nodes - chemical_potential) / kT)

    # Moments of u = E - mu over each interval between neighbouring nodes.
    m0 = kT * np.diff(a0)
    m1 = kT**2 * np.diff(a1)
    m2 = kT**3 * np.diff(a2)
    u_low = nodes[:-1] - chemical_potential
    u_high = nodes[1:] - chemical_potential

    # On interval k the hat of node k + 1 rises as (u - u_low) / spacing and the hat of
    # node k falls as (u_high - u) / spacing.
    rising_count = (m1 - u_low * m0) / spacing
    falling_count = (u_high * m0 - m1) / spacing
    rising_u = (m2 - u_low * m1) / spacing
    falling_u = (u_high * m1 - m2) / spacing

    n = energies.size
    w_count = rising_count[:n] + falling_count[1:]
    w_u = rising_u[:n] + falling_u[1:]
    return w_count, w_u + chemical_potential * w_count
