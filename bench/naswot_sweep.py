"""Throughput and predictive value of the NASWOT search on Be2.

1. Candidates scored per second by a whole sweep, `train.py -m hyper_opt_method=naswot`
   with the in-process launcher and each of the SQLite (default), journal and in-memory
   storages, on 512 candidates: two
   hidden widths from 8 values each and ReLU or Sigmoid after each of the 3 Linear
   layers. The wall time covers the whole command (imports, data loading, the study).
   Where `mala` (materials-learning-algorithms 1.4.0) is importable, MALA's
   HyperOptNASWOT scores the same space on the same data (snapshot 0 trains) in this
   process. Its time covers `perform_study` only. Both score with one torch thread,
   because NASWOT's small matrix products run slower with more threads on a busy machine.
2. Kendall's tau between the NASWOT score and the validation band-energy error after a
   short training (5 epochs) of each of 27 architectures, through `naswot.train_top_k`.
   The first hidden width is 25, 50 or 100, and ReLU, Sigmoid or Tanh follows each
   hidden layer.
   MALA keeps the largest score, so a useful score gives a negative tau.

    MALAHYDRA_DATA_DIR=/path/to/Be2 /path/to/mala-venv/bin/python bench/naswot_sweep.py
"""

from __future__ import annotations

import contextlib
import datetime
import io
import itertools
import logging
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

if __package__:
    from . import common
else:
    import common

log = logging.getLogger(__name__)

SEED = 1234
BATCH_SIZE = 40
WIDTHS = (10, 20, 30, 40, 50, 60, 80, 100)
ACTIVATIONS = ("ReLU", "Sigmoid")
TAU_WIDTHS = (25, 50, 100)
TAU_ACTIVATIONS = ("ReLU", "Sigmoid", "Tanh")
RATE_TARGET = 0.2  # malahydra's time per candidate at most 1/5 of MALA's
STORAGES = ("sqlite", "journal", "memory")


def choice(values) -> str:
    return f"choice({', '.join(map(str, values))})"


def sweep_command(data_dir: Path, sweep_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(common.REPO / "train.py"), "-m", f"data.dir={data_dir}",
            f"hydra.sweep.dir={sweep_dir}", "hyper_opt_method=naswot", "training.num_threads=1", *overrides]


def run_command(command: list[str], cwd: Path) -> float:
    """Run a sweep to its end and return its wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"Sweep `{' '.join(command[2:])}` failed with exit code {result.returncode}: {result.stderr.strip()[-2000:]}"
        )
    return elapsed


def rate_space(widths: tuple) -> list[str]:
    return [
        "model.hidden_widths=[100,100]", "model.activations=[ReLU,ReLU]", "model.output_activation=ReLU",
        f"model.hidden_widths.0={choice(widths)}", f"model.hidden_widths.1={choice(widths)}",
        f"model.activations.0={choice(ACTIVATIONS)}", f"model.activations.1={choice(ACTIVATIONS)}",
        f"model.output_activation={choice(ACTIVATIONS)}",
    ]


def malahydra_seconds(data_dir: Path, widths: tuple, work: Path, storage: str) -> tuple[float, dict, float]:
    """Run the sweep; return its wall time, its summary and the time spent inside scoring jobs."""
    sweep_dir = work / f"rate_{storage}"
    seconds = run_command(sweep_command(data_dir, sweep_dir, f"storage={storage}", *rate_space(widths)), work)
    summary = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    return seconds, summary, sum(log_span_seconds(path) for path in sweep_dir.glob("naswot/*/train.log"))


def log_span_seconds(path: Path) -> float:
    """Seconds between the first and last timestamp of a job's Hydra log (data loading included)."""
    stamps = [line[1:24] for line in path.read_text().splitlines() if line.startswith("[")]
    times = [datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") for stamp in stamps]
    return (max(times) - min(times)).total_seconds() if times else 0.0


def mala_seconds(data_dir: Path, widths: tuple) -> tuple[float, int]:
    """Time MALA's HyperOptNASWOT.perform_study on the same space; return seconds and trials."""
    import mala
    import torch

    torch.set_num_threads(1)
    parameters = mala.Parameters()
    parameters.verbosity = 0
    parameters.manual_seed = SEED
    parameters.data.data_splitting_type = "by_snapshot"
    parameters.data.input_rescaling_type = "feature-wise-standard"
    parameters.data.output_rescaling_type = "normal"
    parameters.running.mini_batch_size = BATCH_SIZE
    parameters.hyperparameters.hyper_opt_method = "naswot"
    data_handler = mala.DataHandler(parameters)
    data_handler.add_snapshot("Be_snapshot0.in.npy", str(data_dir), "Be_snapshot0.out.npy", str(data_dir), "tr")
    data_handler.add_snapshot("Be_snapshot1.in.npy", str(data_dir), "Be_snapshot1.out.npy", str(data_dir), "va")
    data_handler.prepare_data()

    optimizer = mala.HyperOptNASWOT(parameters, data_handler)
    for layer in range(2):
        optimizer.add_hyperparameter("categorical", f"ff_neurons_layer_{layer:02d}", choices=list(widths))
    for layer in range(3):
        optimizer.add_hyperparameter("categorical", f"layer_activation_{layer:02d}", choices=list(ACTIVATIONS))
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # MALA prints one line per trial
        optimizer.perform_study()
    return time.perf_counter() - started, len(optimizer._trial_list)


def rate_rows(data_dir: Path, quick: bool, work: Path) -> list[dict]:
    """Time the sweep with each storage (SQLite, journal, memory) and MALA once; one row per storage."""
    widths = WIDTHS[:2] if quick else WIDTHS
    candidates = len(widths) ** 2 * len(ACTIVATIONS) ** 3
    reference = mala_trials = None
    if common.mala_version() is not None:
        mala_total, mala_trials = mala_seconds(data_dir, widths)
        reference = mala_total / mala_trials

    rows = []
    for storage in STORAGES:
        seconds, summary, job_seconds = malahydra_seconds(data_dir, widths, work, storage)
        ours = seconds / candidates
        rows.append(common.make_row(
            f"NASWOT sweep: time per candidate vs MALA HyperOptNASWOT ({candidates} candidates, {storage} storage)",
            ours, reference, None if reference is None else ours / reference,
            "<= 0.2 (at least 5x MALA's rate)", RATE_TARGET, "s per candidate",
            candidates=candidates, scored=summary["n_complete"] + summary["n_failed"], failed=summary["n_failed"],
            seconds=seconds, malahydra_candidates_per_s=candidates / seconds,
            scoring_job_seconds=job_seconds,
            scoring_job_candidates_per_s=candidates / job_seconds if job_seconds else None,
            mala_candidates_per_s=None if reference is None else 1.0 / reference,
            mala_trials=mala_trials, mala_version=common.mala_version(),
            storage=storage, launcher="in-process (basic)",
        ))
    return rows


def tau_row(data_dir: Path, quick: bool, work: Path) -> dict:
    from scipy.stats import kendalltau

    widths = TAU_WIDTHS[:2] if quick else TAU_WIDTHS
    activations = TAU_ACTIVATIONS[:2] if quick else TAU_ACTIVATIONS
    epochs = 1 if quick else 5
    count = len(widths) * len(activations) ** 2
    sweep_dir = work / "tau"
    command = sweep_command(
        data_dir, sweep_dir, "model.hidden_widths=[100,100]", "model.activations=[ReLU,ReLU]",
        f"model.hidden_widths.0={choice(widths)}", f"model.activations.0={choice(activations)}",
        f"model.activations.1={choice(activations)}", f"hydra.sweeper.naswot.train_top_k={count}",
        "hydra.sweeper.metric=band_energy", f"training.max_epochs={epochs}", "hydra.sweeper.max_failure_rate=1",
    )
    seconds = run_command(command, work)
    summary = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    pairs = [(row["score"], row["objective"]) for row in summary["naswot"]["trained"]
             if row["state"] == "complete" and row["score"] is not None and math.isfinite(row["objective"])]
    tau, p_value = kendalltau([p[0] for p in pairs], [p[1] for p in pairs]) if len(pairs) >= 2 else (None, None)
    best_score = summary["naswot"]["selected"]
    best_trained = summary["naswot"]["best_trained"]
    return common.make_row(
        f"Kendall tau of NASWOT score vs band-energy error, {count} architectures, {epochs} epochs",
        None if tau is None else float(tau), None, None, None, None, "tau",
        p_value=None if p_value is None else float(p_value), architectures=count, pairs=len(pairs),
        epochs=epochs, seconds=seconds,
        selected_by_score=None if best_score is None else best_score["params"],
        best_by_band_energy=None if best_trained is None else best_trained["params"],
        band_energy_of_selected_mev_per_atom=next(
            (row["objective"] for row in summary["naswot"]["trained"]
             if best_score is not None and row["trial_number"] == best_score["trial_number"]), None),
        best_band_energy_mev_per_atom=None if best_trained is None else best_trained["objective"],
    )


def run(quick: bool) -> list[dict]:
    data_dir = common.be2_data_dir()
    with tempfile.TemporaryDirectory(prefix="naswot_bench_") as temporary:
        work = Path(temporary)
        return [*rate_rows(data_dir, quick, work), tau_row(data_dir, quick, work)]


if __name__ == "__main__":
    common.main(run, __doc__)
