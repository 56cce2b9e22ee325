"""Band energy, Fermi energy and their analytic integrals against independent references."""

from __future__ import annotations

import json

import mpmath
import numpy as np
import pytest
from scipy.integrate import quad

from malahydra.cli import observables_of_file
from malahydra.data.snapshots import load_calculation_data
from malahydra.physics.fermi_dirac import fermi_weights, polylog3_of_negative
from malahydra.physics.observables import (
    EnergyGrid,
    FermiEnergyNotFoundError,
    band_energy_from_dos,
    dos_from_ldos,
    self_consistent_fermi_energy,
)

BE2_GRID = EnergyGrid(offset=-5.0, spacing=2.5, count=11)

# Self-consistent Fermi energy and band energy (eV) of each target LDOS in the Be2 data.
BE2_REFERENCE = {
    "Be_snapshot0": (10.24074, 12.44708),
    "Be_snapshot1": (10.14921, 12.27948),
    "Be_snapshot2": (10.22530, 12.41771),
    "Be_snapshot3": (10.22853, 12.42425),
}


def test_polylog3_matches_mpmath():
    t = np.concatenate([np.linspace(0.0, 1.0, 201), [1e-300, 1e-12, 0.3678, 0.3679, 1 - 1e-12]])
    expected = np.array([float(mpmath.polylog(3, -x)) for x in t])
    np.testing.assert_allclose(polylog3_of_negative(t), expected, rtol=1e-14, atol=1e-300)


def _hat_dos(energies: np.ndarray, values: np.ndarray):
    """The piecewise-linear DOS that falls to zero one spacing beyond each end."""
    spacing = energies[1] - energies[0]
    nodes = np.concatenate(([energies[0] - spacing], energies, [energies[-1] + spacing]))
    padded = np.concatenate(([0.0], values, [0.0]))
    return lambda e: np.interp(e, nodes, padded, left=0.0, right=0.0)


@pytest.mark.parametrize("mu, kT", [(0.3, 0.0259), (2.0, 0.3), (-1.2, 0.01), (5.9, 0.05)])
def test_fermi_weights_match_quadrature(mu, kT):
    energies = np.linspace(-2.0, 6.0, 17)
    values = np.random.default_rng(7).uniform(0.1, 2.0, energies.size)
    dos = _hat_dos(energies, values)

    def fermi(e):
        return 1.0 / (1.0 + np.exp(np.clip((e - mu) / kT, -700, 700)))

    breakpoints = list(np.concatenate(([energies[0] - 0.5], energies, [energies[-1] + 0.5], [mu])))
    low, high = energies[0] - 0.5, energies[-1] + 0.5
    count = quad(lambda e: dos(e) * fermi(e), low, high, points=breakpoints, limit=400, epsabs=1e-13)[0]
    energy = quad(lambda e: e * dos(e) * fermi(e), low, high, points=breakpoints, limit=400, epsabs=1e-13)[0]

    w_count, w_energy = fermi_weights(energies, mu, kT)
    assert w_count @ values == pytest.approx(count, rel=1e-10, abs=1e-12)
    assert w_energy @ values == pytest.approx(energy, rel=1e-10, abs=1e-12)


def test_weights_far_from_mu_are_stable():
    # 1000 kT below and above the chemical potential: fully occupied and empty states.
    energies = np.linspace(-30.0, 30.0, 25)
    w_count, w_energy = fermi_weights(energies, 0.0, 0.0259)
    spacing = energies[1] - energies[0]
    assert w_count[0] == pytest.approx(spacing, rel=1e-12)
    assert w_count[-1] == pytest.approx(0.0, abs=1e-300)
    assert w_energy[0] == pytest.approx(energies[0] * spacing, rel=1e-12)


def _target_dos(be2_dir, name):
    calculation = load_calculation_data(be2_dir / f"{name}.info.json", (18, 18, 27))
    ldos = np.load(be2_dir / f"{name}.out.npy")
    return dos_from_ldos(ldos, calculation.voxel_volume), calculation


@pytest.mark.parametrize("name", sorted(BE2_REFERENCE))
def test_be2_band_energy_matches_reference(be2_dir, name):
    dos, calculation = _target_dos(be2_dir, name)
    result = band_energy_from_dos(dos, BE2_GRID, calculation.number_of_electrons, calculation.temperature)
    fermi_energy, band_energy = BE2_REFERENCE[name]
    assert result.fermi_energy == pytest.approx(fermi_energy, abs=1e-5)
    assert result.band_energy == pytest.approx(band_energy, abs=1e-5)
    assert result.number_of_electrons == pytest.approx(calculation.number_of_electrons, abs=1e-10)


def test_qe_output_gives_same_observables(be2_copy):
    for name in BE2_REFERENCE:
        from_json = observables_of_file(be2_copy / f"{name}.out.npy", -5.0, 2.5)
        (be2_copy / f"{name}.info.json").unlink()
        from_qe = observables_of_file(be2_copy / f"{name}.out.npy", -5.0, 2.5)
        assert from_qe["fermi_energy_ev"] == pytest.approx(from_json["fermi_energy_ev"], abs=1e-5)
        assert from_qe["band_energy_ev"] == pytest.approx(from_json["band_energy_ev"], abs=1e-5)
        assert from_qe["number_of_electrons"] == pytest.approx(4.0, abs=1e-10)


def test_qe_calculation_data_matches_json(be2_dir):
    from_json = load_calculation_data(be2_dir / "Be_snapshot0.info.json", (18, 18, 27))
    from_qe = load_calculation_data(be2_dir / "Be_snapshot0.out", (18, 18, 27))
    assert from_qe.temperature == pytest.approx(from_json.temperature, rel=1e-9)
    assert from_qe.number_of_electrons == from_json.number_of_electrons
    assert from_qe.voxel_volume == pytest.approx(from_json.voxel_volume, rel=1e-9)
    assert from_qe.number_of_atoms == from_json.number_of_atoms == 2


def _band_energy_error(be2_dir, name, predicted_ldos):
    dos, calculation = _target_dos(be2_dir, name)
    target = band_energy_from_dos(dos, BE2_GRID, calculation.number_of_electrons, calculation.temperature)
    predicted_dos = dos_from_ldos(np.clip(predicted_ldos, 0.0, None), calculation.voxel_volume)
    predicted = band_energy_from_dos(predicted_dos, BE2_GRID, calculation.number_of_electrons, calculation.temperature)
    return abs(predicted.band_energy - target.band_energy) * 1000.0 / calculation.number_of_atoms


def test_five_percent_more_electrons_is_large_error(be2_dir):
    ldos = np.load(be2_dir / "Be_snapshot1.out.npy").astype(np.float64)
    error = _band_energy_error(be2_dir, "Be_snapshot1", 1.05 * ldos)
    assert error > 200.0


def test_one_percent_noise_is_small_error(be2_dir):
    ldos = np.load(be2_dir / "Be_snapshot1.out.npy").astype(np.float64)
    noise = np.random.default_rng(0).normal(0.0, 0.01, ldos.shape)
    error = _band_energy_error(be2_dir, "Be_snapshot1", ldos * (1.0 + noise))
    assert error < 1.0


def test_fermi_energy_outside_window_raises():
    dos = np.full(BE2_GRID.count, 1e-3)
    with pytest.raises(FermiEnergyNotFoundError, match="no Fermi energy"):
        self_consistent_fermi_energy(dos, BE2_GRID, electrons=4.0, temperature=300.0)


def test_fermi_energy_of_flat_dos():
    # A flat DOS of 1 state/eV holds 4 electrons from its lower edge up to mu; the hat at the
    # lower end adds spacing / 2 below E_0, so mu = E_0 - spacing/2 + 4 at low temperature.
    grid = EnergyGrid(offset=0.0, spacing=0.1, count=201)
    mu = self_consistent_fermi_energy(np.ones(grid.count), grid, electrons=4.0, temperature=10.0)
    assert mu == pytest.approx(-0.05 + 4.0, abs=1e-6)


def test_observables_json_of_info_file(be2_dir):
    row = observables_of_file(be2_dir / "Be_snapshot2.out.npy", -5.0, 2.5)
    assert json.loads(json.dumps(row))["name"] == "Be_snapshot2"
    assert row["band_energy_ev"] == pytest.approx(BE2_REFERENCE["Be_snapshot2"][1], abs=1e-5)
