"""Affine scaling of descriptors and LDOS, fitted on the training snapshots only.

Every scaler maps x to (x - shift) / scale, with one shift and scale for all values
(`standard`, `minmax`) or one per feature column (`feature-wise-standard`,
`feature-wise-minmax`). Statistics are accumulated chunk by chunk in float64, so a
memory-mapped snapshot is never read whole.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from malahydra.errors import ConfigurationError

SCALING_KINDS = ("none", "standard", "minmax", "feature-wise-standard", "feature-wise-minmax")


class Scaler:
    """An affine scaling of the columns of a (points, features) array."""

    def __init__(self, kind: str):
        if kind not in SCALING_KINDS:
            raise ConfigurationError(
                f"Unknown scaling '{kind}': use one of {', '.join(SCALING_KINDS)}."
            )
        self.kind = kind
        self.shift: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    @property
    def feature_wise(self) -> bool:
        return self.kind.startswith("feature-wise")

    def fit(self, chunks: Iterable[np.ndarray]) -> "Scaler":
        """Fit on 2-D chunks (points, features); the chunks together are the training set."""
        count = 0
        mean = m2 = minimum = maximum = None
        for chunk in chunks:
            values = np.asarray(chunk, dtype=np.float64)
            if not self.feature_wise:
                values = values.reshape(-1, 1)
            n = values.shape[0]
            if n == 0:
                continue
            chunk_mean = values.mean(axis=0)
            chunk_m2 = ((values - chunk_mean) ** 2).sum(axis=0)
            if mean is None:
                mean, m2 = chunk_mean, chunk_m2
                minimum, maximum = values.min(axis=0), values.max(axis=0)
            else:
                # Chan et al.'s pairwise update keeps the variance exact across chunks.
                delta = chunk_mean - mean
                total = count + n
                mean = mean + delta * n / total
                m2 = m2 + chunk_m2 + delta**2 * count * n / total
                minimum = np.minimum(minimum, values.min(axis=0))
                maximum = np.maximum(maximum, values.max(axis=0))
            count += n

        if self.kind == "none":
            self.shift, self.scale = np.zeros(1), np.ones(1)
            return self
        if count == 0:
            raise ConfigurationError("Cannot fit a scaler on an empty training set: list at least one training snapshot.")

        if self.kind.endswith("standard"):
            shift, scale = mean, np.sqrt(m2 / count)
        else:
            shift, scale = minimum, maximum - minimum
        # A constant column has nothing to scale; dividing by 1 keeps it finite.
        self.shift = shift
        self.scale = np.where(scale > 0.0, scale, 1.0)
        return self

    def _require_fitted(self) -> None:
        if self.shift is None:
            raise RuntimeError("Scaler used before fit() or load_state_dict().")

    def transform(self, values: np.ndarray) -> np.ndarray:
        self._require_fitted()
        return ((np.asarray(values, dtype=np.float64) - self.shift) / self.scale).astype(np.float32)

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        self._require_fitted()
        return np.asarray(values, dtype=np.float64) * self.scale + self.shift

    def torch_parameters(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (shift, scale) as float32 tensors for scaling batches on `device`."""
        self._require_fitted()
        return (
            torch.as_tensor(self.shift, dtype=torch.float32, device=device),
            torch.as_tensor(self.scale, dtype=torch.float32, device=device),
        )

    def state_dict(self) -> dict:
        self._require_fitted()
        return {"kind": self.kind, "shift": self.shift.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Scaler":
        scaler = cls(state["kind"])
        scaler.shift = np.asarray(state["shift"], dtype=np.float64)
        scaler.scale = np.asarray(state["scale"], dtype=np.float64)
        return scaler
