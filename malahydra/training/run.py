"""One training run from a composed config: data, network, training, metrics.json.

`train(cfg, output_dir)` is the whole run and needs no Hydra; `run_training(cfg)` is the
glue that `train.py` calls inside a Hydra job.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from malahydra.data.dataset import load_split
from malahydra.errors import CheckpointError, MalahydraError
from malahydra.model.network import describe, network_from_config
from malahydra.training import checkpoint
from malahydra.training.metric_keys import METRIC_KEYS
from malahydra.training.trainer import EpochCallback, Trainer, TrainingSettings

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def write_json_atomically(data: dict[str, Any], path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    os.replace(temporary, path)


def read_finished_metrics(output_dir: Path, max_epochs: int) -> dict[str, Any] | None:
    """Return metrics.json of a run that is complete for `max_epochs`, else None.

    A run that stopped early is complete whatever `max_epochs` is; one that ran all its
    epochs continues from its checkpoint when `max_epochs` has grown since.
    """
    path = output_dir / METRICS_FILE
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if metrics.get("stopped_early") or metrics.get("epochs_completed", 0) >= max_epochs:
        return metrics
    return None


def check_finished_network(cfg: DictConfig, finished: dict[str, Any], output_dir: Path) -> None:
    """Raise CheckpointError when the finished run in `output_dir` trained another network than `cfg.model`.

    metrics.json names the network by its layer output widths and activations (see
    `describe`), so the configured network is built with the same output width to compare.
    """
    trained = finished.get("network")
    widths = [token for token in str(trained).split(" -> ") if token.isdigit()]
    if not widths:
        return
    configured = describe(network_from_config(cfg.model, 1, int(widths[-1])))
    if configured != trained:
        raise CheckpointError(
            f"The finished run in {output_dir} trained the network {trained}, not the configured {configured}: "
            "restore the model settings it was trained with, or use a new output directory."
        )


@torch.no_grad()
def scaled_mse(network: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, device: torch.device) -> float:
    network.eval()
    squared_error = 0.0
    for start in range(0, inputs.shape[0], 1 << 16):
        predicted = network(inputs[start : start + (1 << 16)].to(device)).cpu()
        squared_error += float(((predicted - targets[start : start + (1 << 16)]) ** 2).sum(dtype=torch.float64))
    return squared_error / targets.numel()


def build_trainer(
    cfg: DictConfig, output_dir: Path, epoch_callback: EpochCallback | None = None, job_index: int | None = None
) -> Trainer:
    """Seed, load the data and build the network and trainer of the run in `output_dir`."""
    settings = TrainingSettings.from_config(cfg.training)
    if settings.num_threads is not None:
        torch.set_num_threads(settings.num_threads)
    seed_everything(settings.seed)
    split = load_split(cfg.data)
    network = network_from_config(cfg.model, split.input_width, split.output_width)
    architecture = describe(network)
    log.info("Network %s, %s", architecture, OmegaConf.to_container(cfg.training))
    return Trainer(
        network=network,
        split=split,
        settings=settings,
        checkpoint_dir=Path(output_dir) / checkpoint.CHECKPOINT_DIR,
        architecture=architecture,
        epoch_callback=epoch_callback,
        job_index=job_index,
    )


def train(
    cfg: DictConfig, output_dir: Path, epoch_callback: EpochCallback | None = None, job_index: int | None = None
) -> dict[str, Any]:
    """Train (or resume) the run in `output_dir` and return the metrics written to metrics.json."""
    output_dir = Path(output_dir)
    settings = TrainingSettings.from_config(cfg.training)
    finished = read_finished_metrics(output_dir, settings.max_epochs)
    if finished is not None:
        check_finished_network(cfg, finished, output_dir)
        log.info("Run in %s already finished; objective %.6g (not retrained)", output_dir, finished["objective"])
        return finished

    trainer = build_trainer(cfg, output_dir, epoch_callback, job_index)
    trainer.resume()
    result = trainer.fit()
    settings, split, network, architecture = trainer.settings, trainer.split, trainer.network, trainer.architecture

    best_state = torch.load(output_dir / checkpoint.CHECKPOINT_DIR / checkpoint.BEST, map_location="cpu", weights_only=False) if result.best_epoch else None
    if best_state is not None:
        network.load_state_dict(best_state["model"])
    best = result.best_metrics or (result.history[-1] if result.history else {})
    objective = best.get(METRIC_KEYS[settings.metric], math.inf) if result.best_epoch else math.inf

    metrics: dict[str, Any] = {
        "objective": objective,
        "metric": settings.metric,
        "ldos_mse": best.get("ldos_mse", math.inf),
        "band_energy_mev_per_atom": best.get("band_energy_mev_per_atom", math.inf),
        "fermi_energy_ev": best.get("fermi_energy_ev", math.inf),
        "best_epoch": result.best_epoch,
        "epochs_completed": result.epochs_completed,
        "stopped_early": result.stopped_early,
        "seed": settings.seed,
        "network": architecture,
        "history": result.history,
    }
    if not split.lazy:
        metrics["training_ldos_mse"] = scaled_mse(network, *split.tensors["training"], trainer.device)
    write_json_atomically(metrics, output_dir / METRICS_FILE)
    log.info(
        "Best epoch %d of %d: objective (%s) %.6g, LDOS MSE %.4g, band energy %.4g meV/atom, Fermi energy %.4g eV",
        result.best_epoch,
        result.epochs_completed,
        settings.metric,
        objective,
        metrics["ldos_mse"],
        metrics["band_energy_mev_per_atom"],
        metrics["fermi_energy_ev"],
    )
    return metrics


def _epoch_callback(cfg: DictConfig) -> EpochCallback | None:
    """Return the search's per-epoch hook (pruning) when this run is a trial of a search."""
    try:
        from malahydra.search.trial_context import epoch_callback_from_config
    except ImportError:
        return None
    return epoch_callback_from_config(cfg)


def run_training(cfg: DictConfig) -> float:
    """Run inside a Hydra job: train in the job's output directory and return the objective.

    In a single run, a MalahydraError ends the program with its one-line message (the full
    traceback only with HYDRA_FULL_ERROR=1). In a multirun it propagates, so the sweeper
    records the trial as failed with the message.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    trial_cfg = cfg.get("trial")
    if trial_cfg and trial_cfg.get("mode") == "naswot":
        from malahydra.search.naswot_job import run_naswot_job

        return run_naswot_job(cfg)

    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir)
    log.info("Output directory: %s", output_dir)
    try:
        job_index = hydra_config.job.num if hydra_config.mode == RunMode.MULTIRUN else None
        metrics = train(cfg, output_dir, epoch_callback=_epoch_callback(cfg), job_index=job_index)
    except MalahydraError as error:
        if hydra_config.mode == RunMode.MULTIRUN or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", error)
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)
    if hydra_config.mode != RunMode.MULTIRUN:
        # A search logs each trial's outcome itself; a single run shows its metrics here.
        print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    return float(metrics["objective"])
