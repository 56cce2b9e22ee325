"""Snapshots in MALA's file format and the calculation data each one carries.

A snapshot NAME in a data directory consists of
- `NAME.in.npy`: descriptors, shape (nx, ny, nz, F), optionally with three leading
  columns of grid indices;
- `NAME.out.npy`: LDOS, shape (nx, ny, nz, E), in 1/(eV * Angstrom^3);
- `NAME.info.json` (preferred) or `NAME.out`, the Quantum ESPRESSO pw.x output, for the
  temperature, the number of electrons, the voxel and the atoms.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from malahydra.errors import DataError

DATA_DIR_VARIABLE = "MALAHYDRA_DATA_DIR"
GRID_INDEX_COLUMNS = 3


@dataclass(frozen=True)
class CalculationData:
    """Calculation data of one snapshot that the band-energy physics needs."""

    temperature: float  # K
    number_of_electrons: float
    voxel_volume: float  # Angstrom^3
    number_of_atoms: int


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """Return the data directory as a Path, or raise a DataError that explains how to set it."""
    if data_dir in (None, "", "null", "None"):
        raise DataError(
            f"No data directory is set: set data.dir=/path/to/snapshots on the command line "
            f"or export {DATA_DIR_VARIABLE}=/path/to/snapshots."
        )
    path = Path(str(data_dir)).expanduser()
    if not path.is_dir():
        raise DataError(
            f"The data directory {path} does not exist: point data.dir or "
            f"{DATA_DIR_VARIABLE} at the folder that contains NAME.in.npy and NAME.out.npy."
        )
    return path


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(
            f"The {what} file {path} is missing: check the snapshot name in the data "
            f"config and that the file exists in data.dir."
        )
    return path


def descriptor_path(data_dir: Path, name: str) -> Path:
    return _require_file(data_dir / f"{name}.in.npy", "descriptor")


def ldos_path(data_dir: Path, name: str) -> Path:
    return _require_file(data_dir / f"{name}.out.npy", "LDOS")


def open_array(path: Path) -> np.ndarray:
    """Open a .npy file memory-mapped, so a snapshot larger than RAM need not fit."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise DataError(f"The array file {path} cannot be read ({error}): replace it with a valid .npy file.") from error
    if array.dtype not in (np.float32, np.float64):
        raise DataError(
            f"The array file {path} has dtype {array.dtype}: expected float32 or float64."
        )
    if array.ndim != 4:
        raise DataError(
            f"The array file {path} has shape {array.shape}: expected four axes (nx, ny, nz, values)."
        )
    return array


def calculation_data_path(data_dir: Path, name: str) -> Path:
    """Return NAME.info.json, or the Quantum ESPRESSO output NAME.out when only that exists."""
    info = data_dir / f"{name}.info.json"
    if info.is_file():
        return info
    qe_output = data_dir / f"{name}.out"
    if qe_output.is_file():
        return qe_output
    raise DataError(
        f"No calculation data for snapshot {name} in {data_dir}: expected {info.name} "
        f"or the Quantum ESPRESSO output {qe_output.name} next to the LDOS file."
    )


def load_calculation_data(path: Path, grid_shape: tuple[int, int, int]) -> CalculationData:
    """Read calculation data from a .info.json file or a pw.x output file.

    `grid_shape` is the real-space grid of the LDOS; it gives the voxel of a pw.x output,
    which stores only the cell.
    """
    if path.name.endswith(".json"):
        return _calculation_data_from_json(path)
    return _calculation_data_from_qe_output(path, grid_shape)


def _calculation_data_from_json(path: Path) -> CalculationData:
    try:
        info = json.loads(path.read_text())
        voxel = np.asarray(info["voxel"]["array"], dtype=np.float64)
        return CalculationData(
            temperature=float(info["temperature"]),
            number_of_electrons=float(info["number_of_electrons_exact"]),
            voxel_volume=abs(float(np.linalg.det(voxel))),
            number_of_atoms=len(info["atoms"]["numbers"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        detail = f"missing key {error}" if isinstance(error, KeyError) else str(error)
        raise DataError(
            f"The calculation data file {path} cannot be read ({detail}): it needs temperature, "
            f"number_of_electrons_exact, voxel.array and atoms.numbers; fix the file or delete "
            f"it so that the Quantum ESPRESSO output NAME.out is used."
        ) from error


_QE_ELECTRONS = re.compile(r"number of electrons\s*=\s*([-+0-9.eEdD]+)")
_QE_SMEARING_WIDTH = re.compile(r"smearing, width \(Ry\)\s*=\s*([-+0-9.eEdD]+)")


def _calculation_data_from_qe_output(path: Path, grid_shape: tuple[int, int, int]) -> CalculationData:
    import ase.io
    from ase.units import Ry, kB

    try:
        text = path.read_text(errors="replace")
        atoms = ase.io.read(path, format="espresso-out", index=0)
    except Exception as error:  # ASE raises many types for a malformed file
        raise DataError(f"The Quantum ESPRESSO output {path} cannot be read ({error}).") from error

    electrons = _QE_ELECTRONS.search(text)
    smearing = _QE_SMEARING_WIDTH.search(text)
    if electrons is None or smearing is None:
        missing = "number of electrons" if electrons is None else "smearing width"
        raise DataError(
            f"The Quantum ESPRESSO output {path} has no '{missing}' line: use a pw.x output "
            f"with smearing, or write NAME.info.json."
        )

    def _float(match: re.Match) -> float:
        return float(match.group(1).replace("d", "e").replace("D", "e"))

    # The electronic temperature is the Fermi-Dirac smearing width, printed in Ry.
    return CalculationData(
        temperature=_float(smearing) * Ry / kB,
        number_of_electrons=_float(electrons),
        voxel_volume=abs(float(atoms.cell.volume)) / float(np.prod(grid_shape)),
        number_of_atoms=len(atoms),
    )
