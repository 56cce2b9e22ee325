"""Search quality on Be2: the best validation band-energy error that a search finds.

Every training here runs 10 epochs with mini-batches of 40 on Be2 (snapshot 0 trains,
snapshot 1 validates) and is judged by the band-energy error of the validation snapshot
in meV/atom, the search's objective. The data folder is $MALAHYDRA_DATA_DIR (default:
shared/data/Be2 beside the repository).

- TPE on MALA's standard space (learning rate 1e-7 to 1e-2, two hidden widths 10 to 100,
  ReLU or Sigmoid after both hidden layers and the output), 20 trainings, seeds 1, 2 and 3:
  ``python train.py -m hyper_opt_method=tpe sweeps=mala_standard hydra.sweeper.n_trials=20
  hydra.sweeper.metric=band_energy training.max_epochs=10 hydra.sweeper.seed=S`` against
  MALA's ``HyperOptOptuna`` (TPE, seed S) on the same space, data, epochs and batch size
  with ``final_validation_metric = "band_energy"``. The row gives the median over the
  seeds of the best error among the first 20 trainings of each search.
- NASWOT on the 8 activation choices of ``sweeps=mala_activations``, then training of the
  3 best-scoring networks (``hydra.sweeper.naswot.train_top_k=3``), and OAT on the 16
  combinations of ``sweeps=mala_oat`` (8 rows of an orthogonal array plus one confirmation
  training when the predicted optimum is no row). malahydra only, for information.

A network whose predicted LDOS has no Fermi energy inside the energy window has an
infinite band-energy error. malahydra records such a training as a FAIL trial, and MALA
1.4.0 returns infinity as the trial's value. Both count as a training that found nothing.

Differences that remain, by design of the two codes: malahydra's objective is the error
of the best of the 10 epochs (it validates the band energy every epoch and keeps the best
model), and it samples the learning rate on a log scale. MALA's is the error after the
last epoch, and MALA 1.4.0 has no log-scale float hyperparameter, so its TPE samples the
learning rate uniformly in [1e-7, 1e-2]. MALA's band-energy metric is the signed
difference (predicted - actual), which its study minimizes, so the row compares the
smallest absolute error among MALA's trainings, not MALA's own best value.

MALA 1.4.0 unscales the shared validation targets in place when it computes a band-energy
error, which made every trial after the first return infinity. The benchmark restores the
scaled targets before each MALA trial (see ``restored_validation_targets``).

Only the errors are compared, not the time, so malahydra's searches run in a background
thread while MALA's run in the main thread, each with one torch thread.

    MALAHYDRA_DATA_DIR=/path/to/Be2 /path/to/mala-venv/bin/python bench/search_quality.py
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import io
import logging
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

if __package__:
    from . import common
else:
    import common

log = logging.getLogger(__name__)

SEEDS = (1, 2, 3)
TRAININGS = 20
EPOCHS = 10
BATCH_SIZE = 40
ACTIVATIONS = ("ReLU", "Sigmoid")


def sweep(data_dir: Path, sweep_dir: Path, overrides: list[str]) -> tuple[float, dict[str, Any]]:
    """Run `train.py -m` with `overrides`; return its wall time and optimization_results.yaml."""
    command = [
        sys.executable, str(common.REPO / "train.py"), "-m", f"data.dir={data_dir}",
        f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.metric=band_energy",
        # A training with an infinite error must not stop the search: MALA goes on too.
        "hydra.sweeper.max_failure_rate=1", "training.num_threads=1", *overrides,
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=sweep_dir.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return seconds, yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())


def first_trainings_best(sweep_dir: Path, count: int) -> tuple[float, int, int]:
    """Return (best value, trainings, failed) over the first `count` trials of trials.csv.

    The sweeper's budget counts COMPLETE trials, so a search with failures trains more than
    `n_trials` networks. Cutting at the trial number keeps the budget at `count` trainings.
    """
    with open(sweep_dir / "trials.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: int(row["number"]))[:count]
    values = [float(row["value"]) for row in rows if row["state"] == "COMPLETE" and row["value"]]
    finite = [value for value in values if math.isfinite(value)]
    failed = sum(row["state"] == "FAIL" for row in rows)
    return (min(finite) if finite else math.inf), len(rows), failed


def malahydra_tpe(data_dir: Path, seed: int, trainings: int, epochs: int, work: Path) -> dict[str, Any]:
    sweep_dir = work / f"tpe_seed{seed}"
    seconds, _ = sweep(data_dir, sweep_dir, [
        "hyper_opt_method=tpe", "sweeps=mala_standard", f"hydra.sweeper.n_trials={trainings}",
        f"training.max_epochs={epochs}", f"hydra.sweeper.seed={seed}",
    ])
    best, used, failed = first_trainings_best(sweep_dir, trainings)
    return {"seed": seed, "best": best, "trainings": used, "failed": failed, "seconds": seconds}


def mala_tpe(data_dir: Path, seed: int, trainings: int, epochs: int) -> dict[str, Any]:
    """Run MALA's HyperOptOptuna on MALA's standard space; return its best absolute error."""
    import mala
    import optuna

    parameters = mala.Parameters()
    parameters.verbosity = 0
    parameters.use_gpu = False
    parameters.manual_seed = seed
    parameters.data.data_splitting_type = "by_snapshot"
    parameters.data.input_rescaling_type = "feature-wise-standard"
    parameters.data.output_rescaling_type = "minmax"
    parameters.targets.ldos_gridsize = 11
    parameters.targets.ldos_gridspacing_ev = 2.5
    parameters.targets.ldos_gridoffset_ev = -5.0
    parameters.running.max_number_epochs = epochs
    parameters.running.mini_batch_size = BATCH_SIZE
    parameters.running.optimizer = "Adam"
    parameters.running.early_stopping_epochs = 0
    parameters.running.checkpoints_each_epoch = 0
    parameters.running.learning_rate_scheduler = None
    parameters.running.final_validation_metric = "band_energy"
    parameters.hyperparameters.n_trials = trainings
    parameters.hyperparameters.hyper_opt_method = "optuna"

    data_handler = mala.DataHandler(parameters)
    for name, role in (("Be_snapshot0", "tr"), ("Be_snapshot1", "va")):
        data_handler.add_snapshot(
            f"{name}.in.npy", str(data_dir), f"{name}.out.npy", str(data_dir), role,
            calculation_output_file=str(data_dir / f"{name}.info.json"),
        )
    data_handler.prepare_data()

    optimizer = mala.HyperOptOptuna(parameters, data_handler)
    optimizer.add_hyperparameter("float", "learning_rate", 1e-7, 1e-2)
    optimizer.add_hyperparameter("int", "ff_neurons_layer_00", 10, 100)
    optimizer.add_hyperparameter("int", "ff_neurons_layer_01", 10, 100)
    for layer in range(3):
        optimizer.add_hyperparameter("categorical", f"layer_activation_{layer:02d}", choices=list(ACTIVATIONS))

    started = time.perf_counter()
    # MALA prints progress and warnings through print(); they are not results.
    with contextlib.redirect_stdout(io.StringIO()), restored_validation_targets(data_handler):
        optimizer.perform_study()
    seconds = time.perf_counter() - started

    trials = sorted(optimizer.study.trials, key=lambda trial: trial.number)[:trainings]
    values = [trial.value for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE]
    finite = [abs(value) for value in values if value is not None and math.isfinite(value)]
    return {
        "seed": seed,
        "best": min(finite) if finite else math.inf,
        "trainings": len(trials),
        "failed": len(trials) - len(finite),
        "seconds": seconds,
        "mala_best_value_signed": float(optimizer.study.best_value),
    }


@contextlib.contextmanager
def restored_validation_targets(data_handler):
    """Give every MALA trial the scaled validation LDOS that the first trial saw.

    MALA 1.4.0 computes the band-energy error of a trained network with
    ``DataScaler.inverse_transform(..., copy=False)`` on a slice of the validation
    tensor, which unscales the shared validation targets in place. Every later trial of
    the same study then saw unscaled targets, found no Fermi energy in them and returned
    infinity (19 of 20 trainings per search). Restoring the targets before each trial
    keeps MALA's study, sampler and trainer unchanged.
    """
    from mala.network import hyper_opt_optuna

    targets = [data_set.tensors[1] for data_set in data_handler.validation_data_sets]
    saved = [tensor.clone() for tensor in targets]
    original_objective = hyper_opt_optuna.ObjectiveBase

    class RestoringObjective(original_objective):
        def __call__(self, trial):
            for tensor, copy in zip(targets, saved):
                tensor.copy_(copy)
            return super().__call__(trial)

    hyper_opt_optuna.ObjectiveBase = RestoringObjective
    try:
        yield
    finally:
        hyper_opt_optuna.ObjectiveBase = original_objective


def median_best(results: list[dict[str, Any]]) -> float:
    return statistics.median(result["best"] for result in results)


def tpe_row(ours: list[dict[str, Any]], theirs: list[dict[str, Any]] | None, trainings: int, epochs: int) -> dict[str, Any]:
    version = common.mala_version()
    seeds = [result["seed"] for result in ours]
    ours_median = median_best(ours)
    reference = median_best(theirs) if theirs else None
    ratio = ours_median / reference if reference and math.isfinite(reference) else None
    return common.make_row(
        f"search quality, TPE, mala_standard, {trainings} trainings of {epochs} epochs, median of "
        f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}: best band-energy error, malahydra vs MALA "
        f"{version or ''} HyperOptOptuna".replace("  ", " "),
        ours_median, reference, ratio, None, None, "meV/atom",
        malahydra_runs=ours, mala_runs=theirs, mala_version=version, seeds=seeds, epochs=epochs,
        trainings_per_search=trainings,
    )


def naswot_row(data_dir: Path, quick: bool, work: Path) -> dict[str, Any]:
    epochs = 1 if quick else EPOCHS
    top_k = 1 if quick else 3
    seconds, summary = sweep(data_dir, work / "naswot", [
        "hyper_opt_method=naswot", "sweeps=mala_activations", f"hydra.sweeper.naswot.train_top_k={top_k}",
        f"training.max_epochs={epochs}",
    ])
    trained = summary["naswot"]["trained"]
    finite = [row["objective"] for row in trained if row["state"] == "complete" and math.isfinite(row["objective"])]
    return common.make_row(
        f"search quality, NASWOT on mala_activations ({summary['naswot']['n_candidates']} candidates scored), "
        f"top {top_k} trained for {epochs} epochs: best band-energy error",
        min(finite) if finite else math.inf, None, None, None, None, "meV/atom",
        trainings=len(trained), candidates_scored=summary["naswot"]["n_candidates"], seconds=seconds,
        trained=[{key: row[key] for key in ("params", "score", "objective", "state")} for row in trained],
    )


def oat_row(data_dir: Path, quick: bool, work: Path) -> dict[str, Any]:
    epochs = 1 if quick else EPOCHS
    seconds, summary = sweep(data_dir, work / "oat", ["hyper_opt_method=oat", "sweeps=mala_oat", f"training.max_epochs={epochs}"])
    trainings = summary["n_complete"] + summary["n_failed"] + summary["n_pruned"]
    best = summary.get("best_value")
    return common.make_row(
        f"search quality, OAT on mala_oat ({len(summary['oat']['rows'])} array rows + confirmation), "
        f"{epochs} epochs: best band-energy error",
        math.inf if best is None else float(best), None, None, None, None, "meV/atom",
        trainings=trainings, seconds=seconds, predicted_optimum=summary["oat"]["predicted_optimum"],
        confirmation=summary["oat"].get("confirmation"),
    )


def run(quick: bool) -> list[dict[str, Any]]:
    """Run malahydra's searches in a background thread while MALA's run in this one.

    Only the quality of the result is compared here, not time, so the two sides share
    the machine: each trains with one torch thread, malahydra in its `train.py -m`
    subprocesses and MALA in this process.
    """
    import torch

    data_dir = common.be2_data_dir()
    seeds = SEEDS[:1] if quick else SEEDS
    trainings = 3 if quick else TRAININGS
    epochs = 1 if quick else EPOCHS

    def malahydra_searches(work: Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        ours = [malahydra_tpe(data_dir, seed, trainings, epochs, work) for seed in seeds]
        return ours, naswot_row(data_dir, quick, work), oat_row(data_dir, quick, work)

    with tempfile.TemporaryDirectory(prefix="search_quality_") as temporary:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            ours_future = pool.submit(malahydra_searches, Path(temporary))
            theirs = None
            if common.mala_version() is not None:
                torch.set_num_threads(1)
                theirs = [mala_tpe(data_dir, seed, trainings, epochs) for seed in seeds]
            ours, naswot, oat = ours_future.result()
    return [tpe_row(ours, theirs, trainings, epochs), naswot, oat]


if __name__ == "__main__":
    common.main(run, __doc__)
