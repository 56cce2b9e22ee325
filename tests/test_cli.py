"""The `malahydra observables` command on the Be2 snapshots."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from test_physics import BE2_REFERENCE


def _observables(*arguments: str) -> subprocess.CompletedProcess:
    executable = shutil.which("malahydra")
    command = [executable] if executable else [sys.executable, "-m", "malahydra.cli"]
    return subprocess.run([*command, "observables", *arguments], capture_output=True, text=True, timeout=120)


def test_observables_json(be2_dir):
    paths = [str(be2_dir / f"{name}.out.npy") for name in sorted(BE2_REFERENCE)]
    result = _observables(*paths, "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["snapshots"]
    assert [row["name"] for row in rows] == sorted(BE2_REFERENCE)
    for row in rows:
        fermi_energy, band_energy = BE2_REFERENCE[row["name"]]
        assert row["fermi_energy_ev"] == pytest.approx(fermi_energy, abs=1e-5)
        assert row["band_energy_ev"] == pytest.approx(band_energy, abs=1e-5)
        assert row["number_of_electrons"] == pytest.approx(4.0, abs=1e-9)


def test_observables_table(be2_dir):
    result = _observables(str(be2_dir / "Be_snapshot0.out.npy"))
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.strip().splitlines()
    assert header.split()[:2] == ["snapshot", "electrons"]
    assert row.split() == ["Be_snapshot0", "4.000000", "10.240735", "12.447077"]


def test_observables_other_energy_grid_changes_result(be2_dir):
    result = _observables(str(be2_dir / "Be_snapshot0.out.npy"), "--energy-offset", "-4.0", "--json")
    row = json.loads(result.stdout)["snapshots"][0]
    assert row["fermi_energy_ev"] == pytest.approx(BE2_REFERENCE["Be_snapshot0"][0] + 1.0, abs=1e-4)


def test_observables_rejects_non_ldos_file(be2_dir):
    result = _observables(str(be2_dir / "Be_snapshot0.in.npy"))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: {be2_dir / 'Be_snapshot0.in.npy'} is not an LDOS file: expected a name ending in "
        f".out.npy, such as Be_snapshot0.out.npy."
    )
