"""Snapshot roles, input validation, scaling and the point-wise training arrays.

Snapshots are assigned whole to training, validation or test. Files stay memory-mapped;
validation and scaler fitting read them in chunks of `CHUNK_POINTS` grid points. The
training and validation points are then either preloaded as scaled float32 tensors (the
fast path) or, with `data.lazy_loading: true`, gathered batch by batch from the files,
which keeps memory near one batch for snapshots larger than RAM.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from malahydra.data.scaling import Scaler
from malahydra.data.snapshots import (
    GRID_INDEX_COLUMNS,
    CalculationData,
    calculation_data_path,
    descriptor_path,
    ldos_path,
    load_calculation_data,
    open_array,
    resolve_data_dir,
)
from malahydra.errors import ConfigurationError, DataError
from malahydra.physics.observables import EnergyGrid

log = logging.getLogger(__name__)

CHUNK_POINTS = 1 << 16


@dataclass
class Snapshot:
    """One snapshot's memory-mapped arrays, flattened to (points, values), and its metadata."""

    name: str
    descriptors: np.ndarray  # (points, features) view of the file, grid indices dropped
    ldos: np.ndarray  # (points, energies)
    grid_shape: tuple[int, int, int]
    calculation: CalculationData

    @property
    def points(self) -> int:
        return self.ldos.shape[0]

    def chunks(self, which: str) -> Iterator[np.ndarray]:
        array = self.descriptors if which == "descriptors" else self.ldos
        for start in range(0, self.points, CHUNK_POINTS):
            yield array[start : start + CHUNK_POINTS]


@dataclass
class DataSplit:
    training: list[Snapshot]
    validation: list[Snapshot]
    test: list[Snapshot]
    energy_grid: EnergyGrid
    input_scaler: Scaler
    output_scaler: Scaler
    lazy: bool = False
    # Preloaded, scaled float32 tensors (empty in lazy mode).
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def input_width(self) -> int:
        return self.training[0].descriptors.shape[1]

    @property
    def output_width(self) -> int:
        return self.training[0].ldos.shape[1]

    @property
    def training_points(self) -> int:
        return sum(snapshot.points for snapshot in self.training)


def energy_grid_from_config(data_cfg) -> EnergyGrid:
    grid = data_cfg.energy_grid
    if int(grid.count) < 2 or not float(grid.spacing) > 0.0:
        raise ConfigurationError(
            f"Invalid data.energy_grid (count={grid.count}, spacing={grid.spacing}): "
            f"the grid needs at least 2 energies and a positive spacing in eV."
        )
    return EnergyGrid(offset=float(grid.offset), spacing=float(grid.spacing), count=int(grid.count))


def open_snapshot(
    data_dir: Path, name: str, energy_grid: EnergyGrid, has_grid_indices: bool
) -> Snapshot:
    """Open one snapshot and check that its files agree with each other and with the config."""
    descriptor_file = descriptor_path(data_dir, name)
    ldos_file = ldos_path(data_dir, name)
    descriptors = open_array(descriptor_file)
    ldos = open_array(ldos_file)

    if descriptors.shape[:3] != ldos.shape[:3]:
        raise DataError(
            f"Snapshot {name}: the descriptor grid {descriptors.shape[:3]} in {descriptor_file.name} "
            f"differs from the LDOS grid {ldos.shape[:3]} in {ldos_file.name}; both files must "
            f"come from the same calculation."
        )
    if ldos.shape[3] != energy_grid.count:
        raise DataError(
            f"Snapshot {name}: {ldos_file.name} has {ldos.shape[3]} LDOS energies but "
            f"data.energy_grid.count is {energy_grid.count}; set data.energy_grid to the "
            f"grid the LDOS was computed on."
        )
    first_feature = GRID_INDEX_COLUMNS if has_grid_indices else 0
    if descriptors.shape[3] <= first_feature:
        raise DataError(
            f"Snapshot {name}: {descriptor_file.name} has only {descriptors.shape[3]} columns; "
            f"set data.descriptors_have_grid_indices=false if it has no grid-index columns."
        )

    grid_shape = tuple(int(n) for n in ldos.shape[:3])
    points = int(np.prod(grid_shape))
    calculation = load_calculation_data(calculation_data_path(data_dir, name), grid_shape)
    return Snapshot(
        name=name,
        descriptors=descriptors.reshape(points, -1)[:, first_feature:],
        ldos=ldos.reshape(points, -1),
        grid_shape=grid_shape,
        calculation=calculation,
    )


def check_finite(snapshot: Snapshot) -> None:
    for which in ("descriptors", "ldos"):
        for index, chunk in enumerate(snapshot.chunks(which)):
            if not np.isfinite(chunk).all():
                bad = index * CHUNK_POINTS + int(np.argwhere(~np.isfinite(chunk))[0, 0])
                kind = "descriptor" if which == "descriptors" else "LDOS"
                raise DataError(
                    f"Snapshot {snapshot.name}: the {kind} values contain NaN or infinity "
                    f"(first at grid point {bad}); regenerate or repair the file."
                )


def _names(data_cfg, role: str) -> list[str]:
    names = data_cfg.get(role) or []
    if isinstance(names, str):
        names = [names]
    return [str(name) for name in names]


def load_split(data_cfg, preload: bool | None = None) -> DataSplit:
    """Open, check and scale the snapshots that the data config assigns to each role."""
    data_dir = resolve_data_dir(data_cfg.get("dir"))
    energy_grid = energy_grid_from_config(data_cfg)
    has_grid_indices = bool(data_cfg.get("descriptors_have_grid_indices", True))

    roles = {role: _names(data_cfg, role) for role in ("training", "validation", "test")}
    if not roles["training"]:
        raise ConfigurationError("data.training lists no snapshot: name at least one training snapshot.")
    if not roles["validation"]:
        raise ConfigurationError(
            "data.validation lists no snapshot: name at least one validation snapshot, "
            "for example data.validation=[Be_snapshot1]."
        )

    opened = {
        role: [open_snapshot(data_dir, name, energy_grid, has_grid_indices) for name in names]
        for role, names in roles.items()
    }
    widths = {(s.descriptors.shape[1], s.ldos.shape[1]) for group in opened.values() for s in group}
    if len(widths) > 1:
        raise DataError(
            f"The snapshots disagree in (descriptor features, LDOS energies): {sorted(widths)}; "
            f"use snapshots computed with the same descriptor and LDOS settings."
        )
    for snapshot in opened["training"] + opened["validation"]:
        check_finite(snapshot)

    input_scaler = Scaler(str(data_cfg.get("input_scaling", "feature-wise-standard")))
    output_scaler = Scaler(str(data_cfg.get("output_scaling", "minmax")))
    input_scaler.fit(chunk for s in opened["training"] for chunk in s.chunks("descriptors"))
    output_scaler.fit(chunk for s in opened["training"] for chunk in s.chunks("ldos"))

    lazy = bool(data_cfg.get("lazy_loading", False)) if preload is None else not preload
    split = DataSplit(
        training=opened["training"],
        validation=opened["validation"],
        test=opened["test"],
        energy_grid=energy_grid,
        input_scaler=input_scaler,
        output_scaler=output_scaler,
        lazy=lazy,
    )
    if not lazy:
        for role in ("training", "validation"):
            split.tensors[role] = scaled_tensors(split, opened[role])
    log.info(
        "Data from %s: %d training, %d validation, %d test snapshots; %d features, %d energies%s",
        data_dir,
        len(roles["training"]),
        len(roles["validation"]),
        len(roles["test"]),
        split.input_width,
        split.output_width,
        " (lazy loading)" if lazy else "",
    )
    return split


def scaled_tensors(split: DataSplit, snapshots: Sequence[Snapshot]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the snapshots' points into scaled float32 (inputs, outputs) tensors."""
    inputs = [split.input_scaler.transform(chunk) for s in snapshots for chunk in s.chunks("descriptors")]
    outputs = [split.output_scaler.transform(chunk) for s in snapshots for chunk in s.chunks("ldos")]
    return torch.from_numpy(np.concatenate(inputs)), torch.from_numpy(np.concatenate(outputs))


def training_inputs(split: DataSplit, indices: torch.Tensor) -> torch.Tensor:
    """Return the scaled inputs of the training points `indices`, numbered snapshot after snapshot.

    Preloaded data gives the rows in the order of `indices`. Lazy data reads them from
    the memory-mapped files in ascending order per snapshot, as `lazy_batches` does.
    """
    if split.tensors:
        return split.tensors["training"][0][indices]
    inputs, _ = next(lazy_batches(split, indices, len(indices)))
    return inputs


def lazy_batches(
    split: DataSplit, order: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield scaled training batches read from the memory-mapped files in `order`.

    `order` is a permutation of all training points, numbered snapshot after snapshot.
    Rows of one batch are read in ascending order per snapshot, which keeps the reads
    local; the order of points inside a batch does not change its mean loss.
    """
    offsets = np.cumsum([0] + [s.points for s in split.training])
    order_np = order.numpy()
    for start in range(0, order_np.size, batch_size):
        batch = np.sort(order_np[start : start + batch_size])
        owners = np.searchsorted(offsets, batch, side="right") - 1
        inputs, outputs = [], []
        for owner in np.unique(owners):
            rows = batch[owners == owner] - offsets[owner]
            snapshot = split.training[owner]
            inputs.append(split.input_scaler.transform(snapshot.descriptors[rows]))
            outputs.append(split.output_scaler.transform(snapshot.ldos[rows]))
        yield torch.from_numpy(np.concatenate(inputs)), torch.from_numpy(np.concatenate(outputs))
