"""Per-run checkpoints: the latest training state and the best model, written atomically.

Layout inside a run's output directory:

    checkpoints/latest.pt   model, optimizer, scheduler, RNG states, epoch, history, ...
    checkpoints/best.pt     the model and scalers of the best epoch so far

A file is written to a temporary name in the same directory and renamed over the old
one, so a run killed while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
BEST = "best.pt"


def save_atomically(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, temporary)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load_latest(checkpoint_dir: Path) -> dict[str, Any] | None:
    """Load checkpoints/latest.pt, or return None when there is none or it cannot be read.

    An unreadable file is renamed to `latest.pt.unreadable-<time>` and kept for inspection,
    and the run starts clean.
    """
    path = checkpoint_dir / LATEST
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch.load raises many types for a damaged file
        kept = path.with_name(f"{LATEST}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, kept)
        log.error("Checkpoint %s cannot be read (%s); kept it as %s and starting from scratch", path, error, kept)
        return None


def capture_rng_states(shuffle_generator: torch.Generator) -> dict[str, Any]:
    states = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "shuffle": shuffle_generator.get_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any], shuffle_generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    shuffle_generator.set_state(states["shuffle"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
