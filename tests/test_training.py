"""Training runs on Be2: accuracy, checkpoints, resume, and the train.py command."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from malahydra.errors import CheckpointError, ConfigurationError
from malahydra.training import checkpoint
from malahydra.training.run import build_trainer, train

REPO = Path(__file__).resolve().parents[1]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)["model"]


def _assert_same_weights(first: Path, second: Path) -> None:
    a, b = _weights(first), _weights(second)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_metrics_file_contents(make_config, tmp_path):
    metrics = train(make_config("training.max_epochs=2"), tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("objective", "ldos_mse", "band_energy_mev_per_atom", "fermi_energy_ev", "best_epoch", "epochs_completed", "seed"):
        assert key in written, key
    assert written["objective"] == metrics["objective"] == written["ldos_mse"]
    assert written["epochs_completed"] == 2
    assert len(written["history"]) == 2
    assert (tmp_path / "checkpoints" / "best.pt").is_file()


def test_objective_follows_configured_metric(make_config, tmp_path):
    metrics = train(make_config("training.max_epochs=2", "training.metric=band_energy"), tmp_path)
    assert metrics["objective"] == metrics["band_energy_mev_per_atom"]
    best = min(epoch["band_energy_mev_per_atom"] for epoch in metrics["history"])
    assert metrics["objective"] == best


@pytest.mark.slow
def test_twenty_epochs_fit_training_snapshot(make_config, tmp_path):
    metrics = train(make_config("training.max_epochs=20"), tmp_path)
    assert metrics["training_ldos_mse"] < 1e-4


@pytest.mark.slow
def test_three_training_snapshots_generalize(make_config, tmp_path):
    metrics = train(make_config("data=be2_three_train", "training.max_epochs=20"), tmp_path)
    assert metrics["ldos_mse"] < 5e-4
    assert math.isfinite(metrics["band_energy_mev_per_atom"])


def test_resume_equals_uninterrupted(make_config, tmp_path):
    train(make_config("training.max_epochs=3"), tmp_path / "resumed")
    train(make_config("training.max_epochs=6"), tmp_path / "resumed")
    train(make_config("training.max_epochs=6"), tmp_path / "one_go")
    _assert_same_weights(tmp_path / "resumed", tmp_path / "one_go")


def test_resume_with_sgd_scheduler_and_lazy_loading(make_config, tmp_path):
    overrides = ["training.optimizer=SGD", "training.momentum=0.9", "training.lr_scheduler=ReduceLROnPlateau",
                 "training.lr_scheduler_patience=0", "+data.lazy_loading=true", "training.physics_every_epoch=false"]
    train(make_config("training.max_epochs=2", *overrides), tmp_path / "resumed")
    train(make_config("training.max_epochs=4", *overrides), tmp_path / "resumed")
    train(make_config("training.max_epochs=4", *overrides), tmp_path / "one_go")
    _assert_same_weights(tmp_path / "resumed", tmp_path / "one_go")


def test_finished_run_not_retrained(make_config, tmp_path):
    first = train(make_config("training.max_epochs=2"), tmp_path)
    stamp = (tmp_path / "checkpoints" / "latest.pt").stat().st_mtime_ns
    second = train(make_config("training.max_epochs=2"), tmp_path)
    assert second["objective"] == first["objective"]
    assert (tmp_path / "checkpoints" / "latest.pt").stat().st_mtime_ns == stamp


def test_unreadable_checkpoint_kept_aside(make_config, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest.pt").write_bytes(b"not a checkpoint")
    metrics = train(make_config("training.max_epochs=1"), tmp_path)
    kept = list((tmp_path / "checkpoints").glob("latest.pt.unreadable-*"))
    assert len(kept) == 1
    assert kept[0].read_bytes() == b"not a checkpoint"
    assert metrics["epochs_completed"] == 1


def test_checkpoint_of_other_architecture_rejected(make_config, tmp_path):
    train(make_config("training.max_epochs=1"), tmp_path)
    (tmp_path / "metrics.json").unlink()
    before = (tmp_path / "checkpoints" / "latest.pt").read_bytes()
    with pytest.raises(CheckpointError, match="written for the network 100 -> ReLU -> 11, not the configured 50 -> ReLU -> 11"):
        train(make_config("training.max_epochs=2", "model.hidden_widths=[50]"), tmp_path)
    assert (tmp_path / "checkpoints" / "latest.pt").read_bytes() == before


def test_early_stopping(make_config, tmp_path):
    # A learning rate of 1e-9 cannot improve the metric by 50 % per epoch.
    metrics = train(
        make_config("training.max_epochs=10", "training.learning_rate=1e-9", "training.early_stopping_patience=2",
                    "training.early_stopping_threshold=0.5", "training.physics_every_epoch=false"),
        tmp_path,
    )
    assert metrics["epochs_completed"] == 3
    assert metrics["stopped_early"]


# -- the train.py command ------------------------------------------------------------


def _train_command(run_dir: Path, *overrides: str, data_dir: Path) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), f"hydra.run.dir={run_dir}", f"data.dir={data_dir}", *overrides]


def test_killed_run_resumes_from_checkpoint(be2_dir, tmp_path):
    command = _train_command(tmp_path / "killed", "training.max_epochs=30", "training.physics_every_epoch=false", data_dir=be2_dir)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed" / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + 120
    while not latest.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert latest.exists()
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed from" in (tmp_path / "killed" / "train.log").read_text()

    one_go = _train_command(tmp_path / "one_go", "training.max_epochs=30", "training.physics_every_epoch=false", data_dir=be2_dir)
    subprocess.run(one_go, check=True, capture_output=True, timeout=300)
    _assert_same_weights(tmp_path / "killed", tmp_path / "one_go")


class Preempted(Exception):
    pass


@pytest.mark.parametrize("batch_size", [40, 6])
def test_signal_mid_epoch_resumes_exactly(make_config, tmp_path, batch_size):
    # A batch of 6 rows of 91 float32 features does not keep 16-byte alignment from batch to
    # batch, so a resume that shifted the gathered rows would round differently.
    cfg = make_config("training.max_epochs=3", "training.physics_every_epoch=false", f"training.mini_batch_size={batch_size}")
    trainer = build_trainer(cfg, tmp_path / "preempted")
    steps_per_epoch = -(-trainer.split.training[0].points // batch_size)
    plain_step = trainer.step
    calls = 0

    def step_then_signal(inputs, targets):
        nonlocal calls
        plain_step(inputs, targets)
        calls += 1
        if calls == steps_per_epoch + 81:  # 81 steps into the second epoch
            os.kill(os.getpid(), signal.SIGUSR1)

    def raise_preempted(signum, frame):
        raise Preempted

    trainer.step = step_then_signal
    previous = signal.signal(signal.SIGUSR1, raise_preempted)
    try:
        with pytest.raises(Preempted):
            trainer.fit()
    finally:
        signal.signal(signal.SIGUSR1, previous)

    state = torch.load(tmp_path / "preempted" / "checkpoints" / "latest.pt", weights_only=False)
    assert state["epoch"] == 1
    assert state["epoch_progress"]["next_start"] == 81 * batch_size

    resumed = build_trainer(cfg, tmp_path / "preempted")
    assert resumed.resume()
    resumed.fit()
    one_go = build_trainer(cfg, tmp_path / "one_go")
    one_go.fit()
    _assert_same_weights(tmp_path / "preempted", tmp_path / "one_go")


def test_sigterm_ends_command_with_checkpoint(be2_dir, tmp_path):
    signum = signal.SIGTERM
    # 100 epochs, so that the signal arrives long before the run ends.
    overrides = ["training.max_epochs=100", "training.physics_every_epoch=false", "training.checkpoint_every=1000"]
    command = _train_command(tmp_path / "signalled", *overrides, data_dir=be2_dir)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log_file = tmp_path / "signalled" / "train.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if log_file.exists() and "Epoch 2/100" in log_file.read_text():
            break
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == -signum, stderr

    # checkpoint_every=1000 writes no epoch checkpoint, so this one comes from the signal.
    state = torch.load(tmp_path / "signalled" / "checkpoints" / "latest.pt", weights_only=False)
    assert 2 <= state["epoch"] < 100
    assert "checkpoint written, passing the signal on" in log_file.read_text()

    epochs = f"training.max_epochs={state['epoch'] + 2}"
    resumed = subprocess.run(_train_command(tmp_path / "signalled", epochs, *overrides[1:], data_dir=be2_dir),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    one_go = _train_command(tmp_path / "one_go", epochs, *overrides[1:], data_dir=be2_dir)
    subprocess.run(one_go, check=True, capture_output=True, timeout=300)
    _assert_same_weights(tmp_path / "signalled", tmp_path / "one_go")


def test_command_prints_metrics(be2_dir, tmp_path):
    result = subprocess.run(
        _train_command(tmp_path / "run", "training.max_epochs=1", data_dir=be2_dir), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    # The log lines come first; the metrics are the JSON object that starts on a line of its own.
    printed = json.loads(result.stdout[result.stdout.index("\n{\n") :])
    assert printed["epochs_completed"] == 1
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.dir=/nonexistent/Be2"], "Error: The data directory /nonexistent/Be2 does not exist"),
        (["model.activations=[Relu]"], "Error: Unknown activation 'Relu'"),
        (["training.optimizer=Adamw"], "Error: Unknown training.optimizer 'Adamw': use Adam or SGD."),
    ],
)
def test_command_bad_input_one_line(be2_dir, tmp_path, overrides, message):
    command = _train_command(tmp_path / "run", "training.max_epochs=1", data_dir=be2_dir) + overrides
    environment = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_num_threads_applied(make_config, tmp_path):
    before = torch.get_num_threads()
    try:
        build_trainer(make_config("training.num_threads=1"), tmp_path)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_invalid_num_threads_rejected(make_config, tmp_path):
    with pytest.raises(ConfigurationError, match="Invalid training.num_threads 0"):
        build_trainer(make_config("training.num_threads=0"), tmp_path)
