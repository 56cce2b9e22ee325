"""Time one training epoch on Be2: malahydra against naive PyTorch loops and MALA 1.4.0.

Every variant trains the network [91, 100, 11] (ReLU after the hidden layer, linear
output) with the MSE loss, Adam at learning rate 1e-3, mini-batches of 40 points and seed
1234. Snapshot 0 (8,748 points, 219 mini-batches) trains and snapshot 1 validates.
Inputs are scaled feature-wise-standard and outputs minmax. The data folder is
$MALAHYDRA_DATA_DIR (default: shared/data/Be2 beside the repository).

Every timing figure is measured twice, with torch at 1 intra-op thread and at its default
thread count (the rows name it). Each is a median over the timed epochs after one untimed
warm-up epoch:

- malahydra ``Trainer.train_one_epoch()`` (shuffle, then one optimizer step per
  mini-batch, no validation) against two loops a user would write. Both run over the
  same preloaded float32 tensors with ``torch.optim.Adam`` and ``nn.MSELoss``. One
  indexes with ``torch.randperm`` per mini-batch, the other iterates a shuffling
  ``DataLoader`` over a ``TensorDataset``. The three are timed interleaved, epoch by epoch, so a change in the
  load of the machine hits all of them alike. Target: malahydra <= 0.5 x naive.
- With MALA importable (run this script with the interpreter of a MALA 1.4.0 install):
  malahydra ``Trainer.fit()`` with ``training.physics_every_epoch=false`` against MALA's
  ``Trainer.train_network()``, each as total wall time of N epochs / N after a one-epoch
  warm-up. Both include the per-epoch validation pass over snapshot 1 (malahydra: one
  forward pass of the whole snapshot plus the scaled MSE; MALA: forward passes in
  mini-batches of 40). malahydra's figure also includes writing checkpoints/latest.pt every
  epoch and checkpoints/best.pt on each improvement (into a temporary folder). MALA's
  checkpointing and early stopping are off and its verbosity is 0. Target: <= 0.5.

Same numerics, at torch's default thread count: the max abs difference of all weights
after 2 epochs between malahydra's training step and the naive randperm loop, started from
the same weights and fed the same permutations. Target: <= 1e-6, float32 round-off
accumulated over 438 Adam steps (malahydra's fused Adam kernel rounds differently from
the default single-tensor one).
"""

from __future__ import annotations

import copy
import logging
import statistics
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, open_dict
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

if __package__:
    from . import common
else:
    import common

from malahydra.data.dataset import DataSplit, load_split
from malahydra.model.network import describe, network_from_config
from malahydra.training.run import seed_everything
from malahydra.training.trainer import Trainer, TrainingSettings

log = logging.getLogger(__name__)

SEED = 1234
BATCH_SIZE = 40
LEARNING_RATE = 1e-3
HIDDEN_WIDTH = 100
# Max abs weight difference that still counts as float32 round-off after 2 epochs: about
# 16 units in the last place of a weight of magnitude 1 (float32 spacing there: 6e-8 to 1.2e-7).
SAME_NUMERICS_TOLERANCE = 1e-6


def compose_config(data_dir: Path, *overrides: str) -> DictConfig:
    """Compose conf/config.yaml for the benchmark setup, as `python train.py` would."""
    fixed = [
        f"data.dir={data_dir}",
        "data.training=[Be_snapshot0]",
        "data.validation=[Be_snapshot1]",
        "data.input_scaling=feature-wise-standard",
        "data.output_scaling=minmax",
        f"model.hidden_widths=[{HIDDEN_WIDTH}]",
        "model.activations=[ReLU]",
        "model.output_activation=null",
        "training.optimizer=Adam",
        f"training.learning_rate={LEARNING_RATE}",
        f"training.mini_batch_size={BATCH_SIZE}",
        f"training.seed={SEED}",
        "training.device=cpu",
        "training.early_stopping_patience=0",
        "training.lr_scheduler=null",
    ]
    with initialize_config_module(config_module="malahydra.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*fixed, *overrides])
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def make_trainer(cfg: DictConfig, split: DataSplit, checkpoint_dir: Path) -> Trainer:
    """Build malahydra's Trainer as `malahydra.training.run.train` does, on a loaded split."""
    settings = TrainingSettings.from_config(cfg.training)
    seed_everything(settings.seed)
    network = network_from_config(cfg.model, split.input_width, split.output_width)
    return Trainer(network, split, settings, checkpoint_dir, describe(network))


# -- the naive loops --------------------------------------------------------------------


class NaiveRandpermLoop:
    """The obvious loop: a fresh permutation per epoch, then index, forward, backward, step."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, generator=None):
        self.model = model
        self.inputs = inputs
        self.targets = targets
        self.optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        self.loss_function = nn.MSELoss()
        self.generator = generator

    def train_one_epoch(self) -> None:
        self.model.train()
        permutation = torch.randperm(self.inputs.shape[0], generator=self.generator)
        for start in range(0, self.inputs.shape[0], BATCH_SIZE):
            indices = permutation[start : start + BATCH_SIZE]
            self.optimizer.zero_grad()
            loss = self.loss_function(self.model(self.inputs[indices]), self.targets[indices])
            loss.backward()
            self.optimizer.step()


class NaiveDataLoaderLoop:
    """The other obvious loop: a shuffling DataLoader over a TensorDataset."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
        self.model = model
        self.loader = DataLoader(TensorDataset(inputs, targets), batch_size=BATCH_SIZE, shuffle=True)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        self.loss_function = nn.MSELoss()

    def train_one_epoch(self) -> None:
        self.model.train()
        for batch_inputs, batch_targets in self.loader:
            self.optimizer.zero_grad()
            loss = self.loss_function(self.model(batch_inputs), batch_targets)
            loss.backward()
            self.optimizer.step()


# -- measurements -----------------------------------------------------------------------


def time_training_epochs(cfg: DictConfig, split: DataSplit, epochs: int) -> dict[str, list[float]]:
    """Return the epoch times of malahydra and both naive loops, timed interleaved."""
    with tempfile.TemporaryDirectory() as checkpoint_dir:
        trainer = make_trainer(cfg, split, Path(checkpoint_dir))
        inputs, targets = split.tensors["training"]
        loops = {
            "malahydra": trainer,
            "naive_randperm": NaiveRandpermLoop(copy.deepcopy(trainer.network), inputs, targets),
            "naive_dataloader": NaiveDataLoaderLoop(copy.deepcopy(trainer.network), inputs, targets),
        }
        times: dict[str, list[float]] = {name: [] for name in loops}
        for epoch in range(epochs + 1):
            for name, loop in loops.items():
                seconds = common.time_call(loop.train_one_epoch)
                if epoch > 0:  # epoch 0 warms up allocator and kernels
                    times[name].append(seconds)
    return times


def max_weight_difference(cfg: DictConfig, split: DataSplit, epochs: int = 2) -> tuple[float, float]:
    """Train malahydra and the naive randperm loop from equal weights on equal permutations.

    Returns (max abs weight difference, max abs weight) after `epochs` epochs.
    """
    with tempfile.TemporaryDirectory() as checkpoint_dir:
        trainer = make_trainer(cfg, split, Path(checkpoint_dir))
        # The Trainer draws each epoch's permutation from a generator seeded with
        # training.seed, so an equally seeded generator repeats its permutations.
        generator = torch.Generator().manual_seed(trainer.settings.seed)
        naive = NaiveRandpermLoop(copy.deepcopy(trainer.network), *split.tensors["training"], generator=generator)
        for _ in range(epochs):
            trainer.train_one_epoch()
            naive.train_one_epoch()
        with torch.no_grad():
            pairs = list(zip(trainer.network.parameters(), naive.model.parameters()))
            difference = max(float((ours - theirs).abs().max()) for ours, theirs in pairs)
            scale = max(float(ours.abs().max()) for ours, _ in pairs)
    return difference, scale


def time_malahydra_fit(data_dir: Path, split: DataSplit, epochs: int) -> float:
    """Return malahydra's Trainer.fit() wall time per epoch, after one warm-up epoch."""
    cfg = compose_config(data_dir, "training.physics_every_epoch=false", "training.max_epochs=1")
    with tempfile.TemporaryDirectory() as checkpoint_dir:
        trainer = make_trainer(cfg, split, Path(checkpoint_dir))
        trainer.fit()
        trainer.settings.max_epochs = 1 + epochs
        return common.time_call(trainer.fit) / epochs


def time_mala_train_network(data_dir: Path, epochs: int) -> float:
    """Return MALA's Trainer.train_network() wall time per epoch, after one warm-up epoch."""
    import mala

    parameters = mala.Parameters()
    parameters.verbosity = 0
    parameters.use_gpu = False
    parameters.manual_seed = SEED
    parameters.data.data_splitting_type = "by_snapshot"
    parameters.data.input_rescaling_type = "feature-wise-standard"
    parameters.data.output_rescaling_type = "minmax"
    parameters.network.layer_activations = ["ReLU"]
    parameters.network.layer_activations_include_output_layer = False
    parameters.running.optimizer = "Adam"
    parameters.running.learning_rate = LEARNING_RATE
    parameters.running.mini_batch_size = BATCH_SIZE
    parameters.running.max_number_epochs = 1
    parameters.running.checkpoints_each_epoch = 0
    parameters.running.early_stopping_epochs = 0
    parameters.running.learning_rate_scheduler = None

    data_handler = mala.DataHandler(parameters)
    for name, role in (("Be_snapshot0", "tr"), ("Be_snapshot1", "va")):
        data_handler.add_snapshot(f"{name}.in.npy", str(data_dir), f"{name}.out.npy", str(data_dir), role)
    data_handler.prepare_data()
    parameters.network.layer_sizes = [data_handler.input_dimension, HIDDEN_WIDTH, data_handler.output_dimension]

    network = mala.Network(parameters)
    trainer = mala.Trainer(parameters, network, data_handler)
    trainer.train_network()
    # train_network() starts again at epoch 0 each call, so this runs `epochs` more epochs.
    parameters.running.max_number_epochs = epochs
    return common.time_call(trainer.train_network) / epochs


# -- rows -------------------------------------------------------------------------------


def thread_counts() -> list[int]:
    """Return 1 and torch's default intra-op thread count, without repeats."""
    return sorted({1, torch.get_num_threads()})


def epoch_rows(data_dir: Path, cfg: DictConfig, split: DataSplit, epochs: int) -> list[dict]:
    """Measure every timing figure at the current torch thread count."""
    threads = torch.get_num_threads()
    label = f"{threads} thread{'s' if threads > 1 else ''}"
    shared = {
        "torch_threads": threads,
        "epochs_timed": epochs,
        "training_points": int(split.tensors["training"][0].shape[0]),
        "batch_size": BATCH_SIZE,
    }
    times = time_training_epochs(cfg, split, epochs)
    medians = {name: statistics.median(values) for name, values in times.items()}
    rows = []
    for name, description in (
        ("naive_randperm", "naive loop (randperm + index)"),
        ("naive_dataloader", "naive loop (DataLoader, shuffle)"),
    ):
        rows.append(
            common.make_row(
                f"epoch time, training only, {label}: malahydra vs {description}",
                medians["malahydra"],
                medians[name],
                medians["malahydra"] / medians[name],
                "<= 0.5",
                0.5,
                "s/epoch",
                malahydra_epoch_seconds=times["malahydra"],
                reference_epoch_seconds=times[name],
                **shared,
            )
        )

    version = common.mala_version()
    if version is None:
        log.info("mala is not importable: skipping the comparison with MALA's trainer.")
        return rows
    fit_seconds = time_malahydra_fit(data_dir, split, epochs)
    mala_seconds = time_mala_train_network(data_dir, epochs)
    rows.append(
        common.make_row(
            f"epoch time with validation, {label}: malahydra Trainer.fit vs MALA {version} train_network",
            fit_seconds,
            mala_seconds,
            fit_seconds / mala_seconds,
            "<= 0.5",
            0.5,
            "s/epoch",
            mala_version=version,
            **shared,
        )
    )
    return rows


def run(quick: bool) -> list[dict]:
    data_dir = common.be2_data_dir()
    epochs = 3 if quick else 10
    cfg = compose_config(data_dir, "training.physics_every_epoch=false")
    split = load_split(cfg.data)

    rows = []
    default_threads = torch.get_num_threads()
    try:
        for threads in thread_counts():
            torch.set_num_threads(threads)
            rows.extend(epoch_rows(data_dir, cfg, split, epochs))
    finally:
        torch.set_num_threads(default_threads)

    difference, scale = max_weight_difference(cfg, split)
    rows.append(
        common.make_row(
            "same numerics: max |weight difference| after 2 epochs, malahydra vs naive randperm loop",
            difference,
            None,
            difference,
            f"<= {SAME_NUMERICS_TOLERANCE:g}",
            SAME_NUMERICS_TOLERANCE,
            "absolute",
            max_abs_weight=scale,
        )
    )
    return rows


if __name__ == "__main__":
    common.main(run, __doc__)
