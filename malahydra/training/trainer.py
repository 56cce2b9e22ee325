"""The training loop: epochs of mini-batch steps, validation, checkpoints, early stopping."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from malahydra.data.dataset import DataSplit, lazy_batches
from malahydra.errors import CheckpointError, ConfigurationError
from malahydra.training import checkpoint
from malahydra.training.devices import select_device
from malahydra.training.metric_keys import METRIC_KEYS
from malahydra.training.metrics import PhysicsReference, validation_metrics
from malahydra.training.preemption import DeferredSignals
from malahydra.training.step import make_optimizer, make_training_step

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainingSettings:
    optimizer: str = "Adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    mini_batch_size: int = 40
    max_epochs: int = 20
    early_stopping_patience: int = 0
    early_stopping_threshold: float = 0.0
    lr_scheduler: str | None = None
    lr_scheduler_factor: float = 0.1
    lr_scheduler_patience: int = 10
    seed: int = 1234
    device: str = "auto"
    num_threads: int | None = None
    metric: str = "ldos"
    physics_every_epoch: bool = True
    checkpoint_every: int = 1
    shuffle: bool = True

    @classmethod
    def from_config(cls, training_cfg) -> "TrainingSettings":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(training_cfg) - known)
        if unknown:
            raise ConfigurationError(
                f"Unknown training setting(s) {', '.join(unknown)}: the settings are {', '.join(sorted(known))}."
            )
        settings = cls(**{key: training_cfg[key] for key in training_cfg})
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.metric not in METRIC_KEYS:
            raise ConfigurationError(
                f"Unknown training.metric '{self.metric}': use one of {', '.join(METRIC_KEYS)}."
            )
        if self.num_threads is not None and not (isinstance(self.num_threads, int) and self.num_threads >= 1):
            raise ConfigurationError(
                f"Invalid training.num_threads {self.num_threads!r}: use a positive integer, or null for torch's default."
            )
        for name in ("mini_batch_size", "max_epochs", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"Invalid training.{name} {value!r}: use a positive integer.")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ConfigurationError(
                f"Invalid training.learning_rate {self.learning_rate!r}: use a positive number."
            )
        if self.lr_scheduler not in (None, "ReduceLROnPlateau"):
            raise ConfigurationError(
                f"Unknown training.lr_scheduler '{self.lr_scheduler}': use null or ReduceLROnPlateau."
            )
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigurationError(f"Invalid training.device '{self.device}': use auto, cpu, cuda or cuda:N.")


@dataclass
class TrainingResult:
    best_metrics: dict[str, float]
    best_epoch: int
    epochs_completed: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


class Trainer:
    """Train `network` on `split`, checkpointing into `checkpoint_dir`.

    The best epoch is the one with the lowest validation `settings.metric`; its model is
    kept in checkpoints/best.pt and its metrics are the result. `architecture` is any
    JSON-like description of the network that a resumed checkpoint must match.
    `job_index` (the Hydra job number in a multirun) chooses among several visible GPUs.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        split: DataSplit,
        settings: TrainingSettings,
        checkpoint_dir: Path,
        architecture: Any,
        epoch_callback: EpochCallback | None = None,
        job_index: int | None = None,
    ):
        self.device = select_device(settings.device, job_index=job_index)
        self.network = network.to(self.device)
        self.split = split
        self.settings = settings
        self.checkpoint_dir = Path(checkpoint_dir)
        self.architecture = architecture
        self.epoch_callback = epoch_callback

        self.optimizer = make_optimizer(
            self.network.parameters(),
            settings.optimizer,
            settings.learning_rate,
            settings.momentum,
            settings.weight_decay,
            self.device,
        )
        self.scheduler = None
        if settings.lr_scheduler == "ReduceLROnPlateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=settings.lr_scheduler_factor, patience=settings.lr_scheduler_patience
            )
        self.step = make_training_step(self.network, self.optimizer)
        self.shuffle_generator = torch.Generator().manual_seed(settings.seed)

        needs_physics = settings.physics_every_epoch or settings.metric != "ldos"
        self.reference = PhysicsReference.for_snapshots(split, split.validation) if needs_physics else None

        self.epoch = 0
        self.best_value = math.inf
        self.best_epoch = 0
        self.best_metrics: dict[str, float] = {}
        self.epochs_without_improvement = 0
        self.history: list[dict[str, float]] = []
        self.stopped_early = False
        # The shuffled point order of an epoch cut short by a signal, and where to go on.
        self.epoch_progress: dict[str, Any] | None = None
        self.signals: DeferredSignals | None = None
        self.progress_bar: tqdm | None = None

    # -- checkpoints ---------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "rng": checkpoint.capture_rng_states(self.shuffle_generator),
            "epoch": self.epoch,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "epochs_without_improvement": self.epochs_without_improvement,
            "history": self.history,
            "stopped_early": self.stopped_early,
            "epoch_progress": self.epoch_progress,
            "input_scaler": self.split.input_scaler.state_dict(),
            "output_scaler": self.split.output_scaler.state_dict(),
        }

    def save_latest(self) -> None:
        checkpoint.save_atomically(self.state(), self.checkpoint_dir / checkpoint.LATEST)

    def save_best(self) -> None:
        checkpoint.save_atomically(
            {
                "architecture": self.architecture,
                "model": self.network.state_dict(),
                "epoch": self.epoch,
                "metrics": self.best_metrics,
                "input_scaler": self.split.input_scaler.state_dict(),
                "output_scaler": self.split.output_scaler.state_dict(),
            },
            self.checkpoint_dir / checkpoint.BEST,
        )

    def resume(self) -> bool:
        """Load checkpoints/latest.pt if there is one; return whether training resumed."""
        state = checkpoint.load_latest(self.checkpoint_dir)
        if state is None:
            return False
        if state.get("architecture") != self.architecture:
            raise CheckpointError(
                f"The checkpoint {self.checkpoint_dir / checkpoint.LATEST} was written for the network "
                f"{state.get('architecture')}, not the configured {self.architecture}: restore the "
                f"model settings it was trained with, or use a new output directory."
            )
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        checkpoint.restore_rng_states(state["rng"], self.shuffle_generator)
        # A run resumed with a larger max_epochs continues unless it had stopped early.
        for key in ("epoch", "best_value", "best_epoch", "best_metrics", "epochs_without_improvement", "history", "stopped_early", "epoch_progress"):
            setattr(self, key, state[key])
        within = f", step {self.epoch_progress['next_start']} points into epoch {self.epoch + 1}" if self.epoch_progress else ""
        log.info("Resumed from %s at epoch %d%s", self.checkpoint_dir / checkpoint.LATEST, self.epoch, within)
        return True

    # -- training ------------------------------------------------------------------------

    def train_one_epoch(self) -> None:
        """Run the mini-batch steps of one epoch, or of the rest of an interrupted one."""
        self.network.train()
        if self.epoch_progress is None:
            points = sum(s.points for s in self.split.training)
            self.epoch_progress = {"order": self._order(points), "next_start": 0}
        order = self.epoch_progress["order"]
        first = self.epoch_progress["next_start"]
        batch_size = self.settings.mini_batch_size

        if self.split.lazy:
            batches = lazy_batches(self.split, order[first:], batch_size)
        else:
            inputs, targets = self.split.tensors["training"]
            # One gather per epoch; the mini-batches are then contiguous slices. A resumed
            # epoch gathers the whole order again, so that every batch keeps its memory
            # alignment, which the matrix kernels' rounding depends on.
            inputs = inputs[order].to(self.device)
            targets = targets[order].to(self.device)
            batches = (
                (inputs[start : start + batch_size], targets[start : start + batch_size])
                for start in range(first, inputs.shape[0], batch_size)
            )

        for index, (batch_inputs, batch_targets) in enumerate(batches):
            self.step(batch_inputs.to(self.device), batch_targets.to(self.device))
            if self.signals is not None and self.signals.requested:
                self.epoch_progress["next_start"] = first + (index + 1) * batch_size
                self.save_latest()
                self.signals.deliver()
        self.epoch_progress = None

    def _order(self, points: int) -> torch.Tensor:
        if self.settings.shuffle:
            return torch.randperm(points, generator=self.shuffle_generator)
        return torch.arange(points)

    def _improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if not math.isfinite(self.best_value):
            return True
        # early_stopping_threshold is the relative improvement that counts as one.
        return value < self.best_value * (1.0 - self.settings.early_stopping_threshold)

    def fit(self) -> TrainingResult:
        settings = self.settings
        metric_key = METRIC_KEYS[settings.metric]
        with DeferredSignals() as self.signals, epoch_progress_bar(self.epoch, settings.max_epochs) as self.progress_bar:
            self._fit_epochs(metric_key)
        self.signals = None
        self.progress_bar = None
        return TrainingResult(
            best_metrics=self.best_metrics,
            best_epoch=self.best_epoch,
            epochs_completed=self.epoch,
            history=self.history,
            stopped_early=self.stopped_early,
        )

    def _fit_epochs(self, metric_key: str) -> None:
        settings = self.settings
        while not self.stopped_early and self.epoch < settings.max_epochs:
            started = time.perf_counter()
            self.train_one_epoch()
            self.epoch += 1
            metrics = validation_metrics(self.network, self.split, self.reference, self.device)
            value = metrics[metric_key]
            metrics = {"epoch": self.epoch, **metrics, "seconds": time.perf_counter() - started}
            self.history.append(metrics)

            if self._improved(value):
                self.best_value, self.best_epoch, self.best_metrics = value, self.epoch, metrics
                self.epochs_without_improvement = 0
                self.save_best()
            else:
                self.epochs_without_improvement += 1
            if self.scheduler is not None:
                self.scheduler.step(value if math.isfinite(value) else float("inf"))

            log.info(
                "Epoch %d/%d: %s (%.2f s)",
                self.epoch,
                settings.max_epochs,
                ", ".join(f"{k}={v:.6g}" for k, v in metrics.items() if k not in ("epoch", "seconds")),
                metrics["seconds"],
            )
            if self.progress_bar is not None:
                self.progress_bar.set_postfix_str(f"{metric_key} {value:.4g}, best {self.best_value:.4g}", refresh=False)
                self.progress_bar.update()
            patience = settings.early_stopping_patience
            self.stopped_early = patience > 0 and self.epochs_without_improvement >= patience
            last_epoch = self.stopped_early or self.epoch >= settings.max_epochs
            if last_epoch or self.epoch % settings.checkpoint_every == 0:
                self.save_latest()
            if self.stopped_early:
                log.info("Early stopping after epoch %d: no improvement for %d epochs", self.epoch, patience)
            if self.epoch_callback is not None:
                self.epoch_callback(self.epoch, metrics)
            # A signal that came during validation or saving is handled here.
            if self.signals is not None and self.signals.requested:
                self.save_latest()
                self.signals.deliver()


@contextlib.contextmanager
def epoch_progress_bar(done: int, total: int) -> Iterator[tqdm]:
    """Show a progress bar over the epochs on stderr while it is a terminal.

    tqdm's `disable=None` turns the bar off when stderr is not a TTY, so batch jobs and
    log files see only the per-epoch log lines. While the bar shows, log records to the
    console go through tqdm, so they print above the bar instead of through it.
    """
    bar = tqdm(total=total, initial=done, unit="epoch", desc="Training", file=sys.stderr, disable=None,
               leave=False, dynamic_ncols=True)
    with bar:
        if bar.disable:
            yield bar
        else:
            with logging_redirect_tqdm():
                yield bar
