"""Near-instant Hydra app for sweeper tests: a quadratic in (x, y) "trained" over epochs.

Like the real training it reports per-epoch metrics to the pruning callback, keeps a
checkpoint in its output directory and resumes from it, and can be told to raise, return
NaN or SIGKILL its own process (the driver too, under the in-process launcher).
"""

import json
import math
import os
import signal
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from malahydra.search.trial_context import epoch_callback_from_config


def objective(cfg: DictConfig) -> float:
    value = (cfg.x - 0.3) ** 2 + (cfg.y - 2) ** 2 + (0.5 if cfg.activation == "Sigmoid" else 0.0)
    return value + cfg.noise * (cfg.seed % 1000) / 1000.0


@hydra.main(config_path="conf", config_name="quadratic", version_base="1.3")
def main(cfg: DictConfig) -> float:
    out = Path(HydraConfig.get().runtime.output_dir)
    behavior = cfg.behavior
    trial = cfg.get("trial") or {}

    if behavior.fail_above_x is not None and cfg.x > behavior.fail_above_x:
        raise RuntimeError(f"x={cfg.x} above {behavior.fail_above_x}")
    if behavior.nan_above_x is not None and cfg.x > behavior.nan_above_x:
        return math.nan

    checkpoint = out / "checkpoint.json"
    first_epoch = json.loads(checkpoint.read_text())["epoch"] + 1 if checkpoint.exists() else 0
    callback = epoch_callback_from_config(cfg)
    final = objective(cfg)
    best = math.inf
    for epoch in range(first_epoch, cfg.epochs):
        value = final * (1.0 + 1.0 / (epoch + 1))
        best = min(best, value)
        with (out / "epochs.log").open("a") as log:
            log.write(f"{epoch}\n")
        checkpoint.write_text(json.dumps({"epoch": epoch}))
        if behavior.kill_at_trial is not None and trial.get("number") == behavior.kill_at_trial:
            marker = out / "killed_once"
            if not marker.exists() and epoch == 1:
                marker.write_text("")
                os.kill(os.getpid(), signal.SIGKILL)
        if callback is not None:
            callback(epoch, {"ldos_mse": value})
    return final * (1.0 + 1.0 / cfg.epochs)


if __name__ == "__main__":
    main()
