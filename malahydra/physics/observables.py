"""Physical observables from an LDOS: DOS, self-consistent Fermi energy, band energy.

Units: energies in eV, LDOS in 1/(eV * Angstrom^3), voxel volume in Angstrom^3, DOS in 1/eV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.units import kB
from scipy.optimize import brentq

from malahydra.physics.fermi_dirac import fermi_weights


class FermiEnergyNotFoundError(ValueError):
    """The electron count has no root inside the energy window of the DOS."""


@dataclass(frozen=True)
class EnergyGrid:
    """Equidistant LDOS energy grid E_i = offset + i * spacing (eV), i = 0 .. count - 1."""

    offset: float
    spacing: float
    count: int

    @property
    def energies(self) -> np.ndarray:
        return self.offset + self.spacing * np.arange(self.count, dtype=np.float64)


def dos_from_ldos(ldos: np.ndarray, voxel_volume: float) -> np.ndarray:
    """Sum an LDOS of shape (..., E) over all grid points, times the voxel volume."""
    flat = np.asarray(ldos).reshape(-1, np.shape(ldos)[-1])
    return flat.sum(axis=0, dtype=np.float64) * voxel_volume


def number_of_electrons(
    dos: np.ndarray, grid: EnergyGrid, fermi_energy: float, temperature: float
) -> float:
    """Integrate DOS * Fermi-Dirac at `temperature` (K) with chemical potential `fermi_energy`."""
    w_count, _ = fermi_weights(grid.energies, fermi_energy, kB * temperature)
    return float(w_count @ dos)


def band_energy(
    dos: np.ndarray, grid: EnergyGrid, fermi_energy: float, temperature: float
) -> float:
    """Integrate E * DOS * Fermi-Dirac, the band energy in eV."""
    _, w_energy = fermi_weights(grid.energies, fermi_energy, kB * temperature)
    return float(w_energy @ dos)


def self_consistent_fermi_energy(
    dos: np.ndarray, grid: EnergyGrid, electrons: float, temperature: float
) -> float:
    """Find the chemical potential at which the DOS holds `electrons` electrons.

    The root is bracketed by the lowest and highest grid energy. Raises
    FermiEnergyNotFoundError when the electron count does not cross `electrons` there,
    as happens for a predicted DOS with far too few or too many states.
    """
    energies = grid.energies
    kT = kB * temperature

    def excess_electrons(mu: float) -> float:
        return float(fermi_weights(energies, mu, kT)[0] @ dos) - electrons

    low, high = excess_electrons(energies[0]), excess_electrons(energies[-1])
    if not (np.isfinite(low) and np.isfinite(high)) or low * high > 0.0:
        raise FermiEnergyNotFoundError(
            f"the electron count {electrons:g} lies outside [{low + electrons:.6g}, "
            f"{high + electrons:.6g}], the count of this DOS between "
            f"{energies[0]:g} eV and {energies[-1]:g} eV, so it has no Fermi energy there"
        )
    return float(brentq(excess_electrons, energies[0], energies[-1], xtol=1e-13, rtol=1e-15))


@dataclass(frozen=True)
class BandEnergyResult:
    fermi_energy: float  # eV
    band_energy: float  # eV
    number_of_electrons: float


def band_energy_from_dos(
    dos: np.ndarray, grid: EnergyGrid, electrons: float, temperature: float
) -> BandEnergyResult:
    """Compute the band energy at the DOS's own self-consistent Fermi energy."""
    fermi_energy = self_consistent_fermi_energy(dos, grid, electrons, temperature)
    w_count, w_energy = fermi_weights(grid.energies, fermi_energy, kB * temperature)
    return BandEnergyResult(
        fermi_energy=fermi_energy,
        band_energy=float(w_energy @ dos),
        number_of_electrons=float(w_count @ dos),
    )
