"""Validation metrics: scaled LDOS error and the physics errors of band and Fermi energy."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from malahydra.data.dataset import CHUNK_POINTS, DataSplit, Snapshot
from malahydra.physics.observables import (
    BandEnergyResult,
    FermiEnergyNotFoundError,
    band_energy_from_dos,
    dos_from_ldos,
)

log = logging.getLogger(__name__)



def _scaled_validation(split: DataSplit) -> Iterator[tuple[Iterable[torch.Tensor], torch.Tensor]]:
    """Yield (scaled input chunks, scaled target LDOS) per validation snapshot.

    Preloaded data is sliced from the tensors built once; lazy data is read and scaled
    from the memory-mapped files chunk by chunk.
    """
    if not split.lazy:
        inputs, targets = split.tensors["validation"]
        start = 0
        for snapshot in split.validation:
            end = start + snapshot.points
            yield torch.split(inputs[start:end], CHUNK_POINTS), targets[start:end]
            start = end
        return
    for snapshot in split.validation:
        input_chunks = (torch.from_numpy(split.input_scaler.transform(c)) for c in snapshot.chunks("descriptors"))
        target = torch.cat([torch.from_numpy(split.output_scaler.transform(c)) for c in snapshot.chunks("ldos")])
        yield input_chunks, target


def _predict(network: torch.nn.Module, input_chunks: Iterable[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.cat([network(chunk.to(device)).cpu() for chunk in input_chunks])


@dataclass
class PhysicsReference:
    """The target LDOS's band-energy result per validation snapshot, computed once."""

    results: dict[str, BandEnergyResult]

    @classmethod
    def for_snapshots(cls, split: DataSplit, snapshots: list[Snapshot]) -> "PhysicsReference":
        results = {}
        for snapshot in snapshots:
            dos = sum(
                dos_from_ldos(chunk, snapshot.calculation.voxel_volume) for chunk in snapshot.chunks("ldos")
            )
            results[snapshot.name] = band_energy_from_dos(
                dos,
                split.energy_grid,
                snapshot.calculation.number_of_electrons,
                snapshot.calculation.temperature,
            )
        return cls(results)


def physics_errors(
    predicted_ldos: np.ndarray, snapshot: Snapshot, split: DataSplit, reference: BandEnergyResult
) -> tuple[float, float]:
    """Return (band-energy error in meV/atom, Fermi-energy error in eV) of one prediction.

    Each energy is taken at its own self-consistent Fermi energy. Negative predicted LDOS
    values are unphysical and set to 0 first. A prediction without a Fermi energy inside
    the energy window gives infinite errors.
    """
    calculation = snapshot.calculation
    dos = dos_from_ldos(np.clip(predicted_ldos, 0.0, None), calculation.voxel_volume)
    try:
        predicted = band_energy_from_dos(
            dos, split.energy_grid, calculation.number_of_electrons, calculation.temperature
        )
    except FermiEnergyNotFoundError as error:
        log.warning("Snapshot %s: band-energy error set to infinity because %s", snapshot.name, error)
        return math.inf, math.inf
    band_error = abs(predicted.band_energy - reference.band_energy) * 1000.0 / calculation.number_of_atoms
    return band_error, abs(predicted.fermi_energy - reference.fermi_energy)


@torch.no_grad()
def validation_metrics(
    network: torch.nn.Module,
    split: DataSplit,
    reference: PhysicsReference | None,
    device: torch.device,
) -> dict[str, float]:
    """Compute the validation metrics; physics errors only when `reference` is given.

    `ldos_mse` is the mean squared error of the scaled LDOS over all validation points;
    the physics errors are means over validation snapshots of absolute errors.
    """
    network.eval()
    squared_error = 0.0
    count = 0
    band_errors, fermi_errors = [], []
    for snapshot, (inputs, target) in zip(split.validation, _scaled_validation(split)):
        predicted = _predict(network, inputs, device)
        squared_error += float(((predicted - target) ** 2).sum(dtype=torch.float64))
        count += target.numel()
        if reference is not None:
            unscaled = split.output_scaler.inverse_transform(predicted.numpy())
            band_error, fermi_error = physics_errors(unscaled, snapshot, split, reference.results[snapshot.name])
            band_errors.append(band_error)
            fermi_errors.append(fermi_error)
    network.train()

    metrics = {"ldos_mse": squared_error / count}
    if reference is not None:
        metrics["band_energy_mev_per_atom"] = float(np.mean(band_errors))
        metrics["fermi_energy_ev"] = float(np.mean(fermi_errors))
    return metrics

