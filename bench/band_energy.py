"""Time and cross-check the band-energy metric: malahydra against MALA 1.4.0.

The metric is the self-consistent Fermi energy of a DOS (the chemical potential at
which the DOS contains the exact electron count) followed by the band energy at that Fermi
energy. malahydra computes both in ``band_energy_from_dos`` (which also returns the
electron count); MALA in ``DOS.get_self_consistent_fermi_energy`` followed by
``DOS.get_band_energy``, both with ``integration_method="analytical"``. Both integrate
the same piecewise-linear DOS against the Fermi-Dirac function and use ase.units.kB.

Two DOS are fed, as identical float64 arrays, to both codes:

- Be2, 11 energies: the DOS of the target LDOS of Be_snapshot0 (sum over the 8,748
  grid points times the voxel volume) on E_i = -5 eV + 2.5 eV * i, with the temperature
  (about 300 K) and the electron count (4) from Be_snapshot0.info.json. The data folder is
  $MALAHYDRA_DATA_DIR (default: shared/data/Be2 beside the repository).
- Synthetic, 250 energies: E_i = -5 eV + 0.1 eV * i (the grid size of MALA's production
  LDOS), a sum of 12 Gaussians with centers drawn uniformly from [-3, 18] eV, widths
  from [0.3, 1.5] eV and heights from [0.5, 1.5] (numpy seed 1234). The DOS is scaled to
  contain 8 states on the grid, and the electron count is 4 at 300 K, so the Fermi energy
  falls inside the spectrum.

Rows per DOS: the median time of one evaluation (target: malahydra at least 20 times
faster, i.e. ratio <= 0.05) and the relative differences of the Fermi energy and of the
band energy (target <= 1e-8). Run with the interpreter of a MALA 1.4.0 install; without
``mala`` the script times malahydra alone and reports no ratios.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__:
    from . import common
else:
    import common

from malahydra.data.snapshots import load_calculation_data
from malahydra.physics.observables import EnergyGrid, band_energy_from_dos, dos_from_ldos

log = logging.getLogger(__name__)

SPEED_TARGET = 0.05  # malahydra time / MALA time: at least 20x faster
AGREEMENT_TARGET = 1e-8  # relative difference of Fermi and band energy
SYNTHETIC_SEED = 1234


@dataclass(frozen=True)
class DosCase:
    name: str
    dos: np.ndarray  # 1/eV
    grid: EnergyGrid
    electrons: float
    temperature: float  # K


def be2_case(data_dir: Path) -> DosCase:
    ldos = np.load(data_dir / "Be_snapshot0.out.npy")
    calculation = load_calculation_data(data_dir / "Be_snapshot0.info.json", ldos.shape[:3])
    return DosCase(
        name="Be2 DOS, 11 energies",
        dos=dos_from_ldos(ldos, calculation.voxel_volume),
        grid=EnergyGrid(offset=-5.0, spacing=2.5, count=ldos.shape[-1]),
        electrons=calculation.number_of_electrons,
        temperature=calculation.temperature,
    )


def synthetic_case() -> DosCase:
    grid = EnergyGrid(offset=-5.0, spacing=0.1, count=250)
    rng = np.random.default_rng(SYNTHETIC_SEED)
    centers = rng.uniform(-3.0, 18.0, 12)
    widths = rng.uniform(0.3, 1.5, 12)
    heights = rng.uniform(0.5, 1.5, 12)
    energies = grid.energies[:, None]
    dos = (heights * np.exp(-0.5 * ((energies - centers) / widths) ** 2)).sum(axis=1)
    dos *= 8.0 / (dos.sum() * grid.spacing)
    return DosCase(name="synthetic DOS, 250 energies", dos=dos, grid=grid, electrons=4.0, temperature=300.0)


# -- the two implementations ------------------------------------------------------------


def malahydra_evaluator(case: DosCase) -> Callable[[], tuple[float, float]]:
    def evaluate() -> tuple[float, float]:
        result = band_energy_from_dos(case.dos, case.grid, case.electrons, case.temperature)
        return result.fermi_energy, result.band_energy

    return evaluate


def mala_evaluator(case: DosCase) -> Callable[[], tuple[float, float]]:
    """Return a function that runs MALA's Fermi-energy search and band-energy integral."""
    import mala

    parameters = mala.Parameters()
    parameters.verbosity = 0
    parameters.targets.ldos_gridsize = case.grid.count
    parameters.targets.ldos_gridspacing_ev = float(case.grid.spacing)
    parameters.targets.ldos_gridoffset_ev = float(case.grid.offset)
    dos_calculator = mala.DOS(parameters)
    dos_calculator.temperature = case.temperature
    dos_calculator.number_of_electrons_exact = case.electrons

    def evaluate() -> tuple[float, float]:
        fermi_energy = dos_calculator.get_self_consistent_fermi_energy(case.dos, integration_method="analytical")
        band_energy = dos_calculator.get_band_energy(
            case.dos, fermi_energy=fermi_energy, integration_method="analytical"
        )
        return float(fermi_energy), float(band_energy)

    grid_difference = float(np.abs(dos_calculator.energy_grid - case.grid.energies).max())
    if grid_difference > 1e-12:
        log.warning("%s: MALA's energy grid differs from malahydra's by up to %.3g eV", case.name, grid_difference)
    return evaluate


# -- rows -------------------------------------------------------------------------------


def case_rows(case: DosCase, seconds_per_timing: float, mala_version: str | None) -> list[dict]:
    ours = malahydra_evaluator(case)
    fermi_energy, band_energy = ours()
    our_times = common.repeat_for_duration(ours, seconds_per_timing, min_repeats=20)
    our_median = common.spread(our_times)["median"]
    raw = {
        "energies": case.grid.count,
        "electrons": case.electrons,
        "temperature_k": case.temperature,
        "malahydra_repeats": len(our_times),
    }
    if mala_version is None:
        log.info("mala is not importable: timing malahydra alone on the %s.", case.name)
        row = common.make_row(
            f"band energy + Fermi energy time, {case.name}: malahydra alone",
            malahydra=our_median,
            reference=None,
            ratio=None,
            target=None,
            target_max_ratio=None,
            unit="s/evaluation",
            **raw,
        )
        return [row]

    theirs = mala_evaluator(case)
    mala_fermi, mala_band = theirs()
    mala_times = common.repeat_for_duration(theirs, seconds_per_timing, min_repeats=5)
    mala_median = common.spread(mala_times)["median"]
    raw |= {"mala_version": mala_version, "mala_repeats": len(mala_times)}
    return [
        common.make_row(
            f"band energy + Fermi energy time, {case.name}: malahydra vs MALA {mala_version} analytical",
            our_median,
            mala_median,
            our_median / mala_median,
            f"<= {SPEED_TARGET:g} (>= {1 / SPEED_TARGET:g}x faster)",
            SPEED_TARGET,
            "s/evaluation",
            speedup=mala_median / our_median,
            **raw,
        ),
        common.make_row(
            f"Fermi energy agreement, {case.name}",
            fermi_energy,
            mala_fermi,
            common.relative_difference(fermi_energy, mala_fermi),
            f"<= {AGREEMENT_TARGET:g} relative",
            AGREEMENT_TARGET,
            "eV",
            **raw,
        ),
        common.make_row(
            f"band energy agreement, {case.name}",
            band_energy,
            mala_band,
            common.relative_difference(band_energy, mala_band),
            f"<= {AGREEMENT_TARGET:g} relative",
            AGREEMENT_TARGET,
            "eV",
            **raw,
        ),
    ]


def run(quick: bool) -> list[dict]:
    seconds_per_timing = 0.5 if quick else 5.0
    version = common.mala_version()
    rows = []
    for case in (be2_case(common.be2_data_dir()), synthetic_case()):
        rows.extend(case_rows(case, seconds_per_timing, version))
    return rows


if __name__ == "__main__":
    common.main(run, __doc__)
