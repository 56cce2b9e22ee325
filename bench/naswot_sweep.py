"""Throughput and predictive value of the NASWOT search on Be2.

1. Time per candidate of a NASWOT search over 512 candidates (two hidden widths from 8
   values each, ReLU or Sigmoid after each of the 3 Linear layers), through
   `train.py -m hyper_opt_method=naswot` with the in-process launcher and each of the
   SQLite (default), journal and in-memory storages. Where `mala`
   (materials-learning-algorithms 1.4.0) is importable, MALA's HyperOptNASWOT scores the
   same space on the same data (snapshot 0 trains). Two rows per storage:
   - search time, the one with the target: malahydra from the sweeper's first log line
     to its "Study ... finished" line (data loading, study, scoring jobs, storage writes
     and result files; no interpreter start, imports, or the report and plots after it) against MALA from `DataHandler` construction (data
     loading) to the end of `perform_study`, in this process with `mala` imported;
   - whole process, for information: the wall time of the `train.py -m` command against
     a fresh interpreter that imports mala, loads the data and runs `perform_study`.
   Both score with one torch thread, because NASWOT's small matrix products run slower
   with more threads on a busy machine. MALA keeps its trials in memory only, so the
   target applies to the row with the in-memory storage. The SQLite and journal rows
   are for information: their search time also contains the import of the database
   libraries, the creation of the study file and the writes of every trial to disk,
   which MALA does not do.
2. Kendall's tau between the NASWOT score and the validation band-energy error after a
   short training (5 epochs) of each of 27 architectures, through `naswot.train_top_k`.
   The first hidden width is 25, 50 or 100, and ReLU, Sigmoid or Tanh follows each
   hidden layer.
   MALA keeps the largest score, so a useful score gives a negative tau.

    MALAHYDRA_DATA_DIR=/path/to/Be2 /path/to/mala-venv/bin/python bench/naswot_sweep.py
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import statistics
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
# Interleaved MALA / malahydra pairs per storage; one pair takes about 12 s here.
RATE_PAIRS = 3


def choice(values) -> str:
    return f"choice({', '.join(map(str, values))})"


def sweep_command(data_dir: Path, sweep_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(common.REPO / "train.py"), "-m", f"data.dir={data_dir}",
            f"hydra.sweep.dir={sweep_dir}", "hyper_opt_method=naswot", "training.num_threads=1", *overrides]


def run_command(command: list[str], cwd: Path) -> tuple[float, str]:
    """Run a command to its end; return its wall time in seconds and its standard output."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"Command `{' '.join(command[1:3])} ...` failed with exit code {result.returncode}: "
            f"{result.stderr.strip()[-2000:]}"
        )
    return elapsed, result.stdout


def rate_space(widths: tuple) -> list[str]:
    return [
        "model.hidden_widths=[100,100]", "model.activations=[ReLU,ReLU]", "model.output_activation=ReLU",
        f"model.hidden_widths.0={choice(widths)}", f"model.hidden_widths.1={choice(widths)}",
        f"model.activations.0={choice(ACTIVATIONS)}", f"model.activations.1={choice(ACTIVATIONS)}",
        f"model.output_activation={choice(ACTIVATIONS)}",
    ]


def malahydra_seconds(data_dir: Path, widths: tuple, work: Path, storage: str, run: int) -> tuple[float, float, dict]:
    """Run the sweep in a new sweep directory; return its search time, its whole-process time and its summary."""
    sweep_dir = work / f"rate_{storage}_{run}"
    process_seconds, output = run_command(
        sweep_command(data_dir, sweep_dir, f"storage={storage}", *rate_space(widths)), work)
    summary = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    return log_span_seconds(output), process_seconds, summary


def log_span_seconds(text: str) -> float:
    """Seconds from the first line of a sweep's Hydra log to its "Study ... finished" line.

    The study report and plots that follow that line are left out, because MALA makes none.
    """
    lines = [line for line in text.splitlines() if line.startswith("[20")]
    end = next((line for line in lines if "] Study " in line and " finished: " in line), None)
    if not lines or end is None:
        return math.nan
    first, last = (datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f") for line in (lines[0], end))
    return (last - first).total_seconds()


# MALA's NASWOT search as one script: `search_seconds` starts before the data handler, so
# it covers data loading and perform_study; the caller times the whole process.
MALA_SCRIPT = """
import contextlib, io, json, sys, time
import mala, torch
torch.set_num_threads(1)
data_dir, widths, activations, seed, batch_size = sys.argv[1], *json.loads(sys.argv[2])
parameters = mala.Parameters()
parameters.verbosity = 0
parameters.manual_seed = seed
parameters.data.data_splitting_type = "by_snapshot"
parameters.data.input_rescaling_type = "feature-wise-standard"
parameters.data.output_rescaling_type = "normal"
parameters.running.mini_batch_size = batch_size
parameters.hyperparameters.hyper_opt_method = "naswot"
search_started = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):  # MALA prints one line per trial
    data_handler = mala.DataHandler(parameters)
    data_handler.add_snapshot("Be_snapshot0.in.npy", data_dir, "Be_snapshot0.out.npy", data_dir, "tr")
    data_handler.add_snapshot("Be_snapshot1.in.npy", data_dir, "Be_snapshot1.out.npy", data_dir, "va")
    data_handler.prepare_data()
    optimizer = mala.HyperOptNASWOT(parameters, data_handler)
    for layer in range(2):
        optimizer.add_hyperparameter("categorical", f"ff_neurons_layer_{layer:02d}", choices=list(widths))
    for layer in range(3):
        optimizer.add_hyperparameter("categorical", f"layer_activation_{layer:02d}", choices=list(activations))
    optimizer.perform_study()
print("search_seconds", time.perf_counter() - search_started, "trials", len(optimizer._trial_list))
"""


def mala_seconds(data_dir: Path, widths: tuple, work: Path) -> tuple[float, float, int]:
    """Run MALA's HyperOptNASWOT search on the same space in a fresh interpreter.

    Returns the search time (data loading and perform_study), the whole-process time and
    the number of trials.
    """
    arguments = json.dumps([list(widths), list(ACTIVATIONS), SEED, BATCH_SIZE])
    command = [sys.executable, "-c", MALA_SCRIPT, str(data_dir), arguments]
    process_seconds, output = run_command(command, work)
    fields = output.split()[-4:]
    return float(fields[1]), process_seconds, int(fields[3])


def rate_rows(data_dir: Path, quick: bool, work: Path) -> list[dict]:
    """Time the sweep with each storage and MALA in `RATE_PAIRS` interleaved pairs; two rows per storage.

    Each row reports the median time per candidate of each side and the median of the
    pairs' ratios, with their range.
    """
    widths = WIDTHS[:2] if quick else WIDTHS
    candidates = len(widths) ** 2 * len(ACTIVATIONS) ** 3
    has_mala = common.mala_version() is not None
    pairs = 1 if quick else RATE_PAIRS

    rows = []
    for storage in STORAGES:
        measured = []
        for run in range(pairs):
            # MALA runs right before the sweep, so both sides of a pair see the same machine load.
            mala = mala_seconds(data_dir, widths, work) if has_mala else None
            measured.append((malahydra_seconds(data_dir, widths, work, storage, run), mala))
        summary = measured[-1][0][2]
        mala_trials = measured[-1][1][2] if has_mala else None
        common_raw = dict(
            candidates=candidates, scored=summary["n_complete"] + summary["n_failed"], failed=summary["n_failed"],
            mala_trials=mala_trials, mala_version=common.mala_version(), storage=storage, pairs=pairs,
            launcher="in-process (basic)", candidates_per_job=summary["naswot"]["candidates_per_job"],
        )
        for label, side, target in (
            ("search time (from the sweep's first log line to its end; data loading included)", 0, storage == "memory"),
            ("whole process (interpreter start, imports, data, search)", 1, False),
        ):
            ours = [sweep[side] / candidates for sweep, _ in measured]
            reference = [mala[side] / mala[2] for _, mala in measured] if has_mala else None
            ratios = None if reference is None else [o / r for o, r in zip(ours, reference)]
            rows.append(common.make_row(
                f"NASWOT search, {candidates} candidates, {storage} storage, {label}: "
                "time per candidate vs MALA HyperOptNASWOT",
                statistics.median(ours), None if reference is None else statistics.median(reference),
                None if ratios is None else statistics.median(ratios),
                "<= 0.2 (at least 5x MALA's rate)" if target else None, RATE_TARGET if target else None,
                "s per candidate", ratio_range=None if ratios is None else [min(ratios), max(ratios)],
                pair_seconds=[[round(o * candidates, 3), None if r is None else round(r * mala_trials, 3)]
                              for o, r in zip(ours, reference or [None] * len(ours))],
                malahydra_candidates_per_s=1 / statistics.median(ours),
                mala_candidates_per_s=None if reference is None else 1 / statistics.median(reference), **common_raw,
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
    seconds, _ = run_command(command, work)
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
