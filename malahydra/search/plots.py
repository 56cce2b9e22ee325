"""PNG plots of a search, written into the sweep directory.

Each plot is drawn on matplotlib's Agg canvas without pyplot, so no interactive backend
or global figure state is involved. matplotlib is imported inside the functions, which
keeps Hydra's plugin scan and the `malahydra` command fast.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from optuna.trial import FrozenTrial, TrialState

from malahydra.training.metric_keys import METRIC_KEYS

log = logging.getLogger(__name__)

HISTORY_FILE = "optimization_history.png"
IMPORTANCES_FILE = "param_importances.png"
OAT_FILE = "oat_main_effects.png"
NASWOT_FILE = "naswot_score_vs_objective.png"
CURVES_FILE = "training_curves.png"
METRICS_FILE = "metrics.json"
DPI = 100


def write_plots(
    sweep_dir: Path, summary: dict, trials: Sequence[FrozenTrial], study: Any | None
) -> tuple[list[Path], list[str]]:
    """Write every plot that applies to the search; return the files and a note per skipped plot.

    A plot that cannot be drawn is skipped with a note (and a logged warning when drawing
    raised), so plotting never fails the caller. `study` is needed only for the parameter
    importances of sampler searches.
    """
    method = summary.get("method")
    plans: list[tuple[str, Callable[[], Any]]] = [
        (HISTORY_FILE, lambda: plot_history(trials, summary)),
    ]
    if method is None:
        plans.append((IMPORTANCES_FILE, lambda: plot_importances(study, trials)))
    if method == "oat":
        plans.append((OAT_FILE, lambda: plot_oat_main_effects(summary.get("oat") or {})))
    if method == "naswot":
        plans.append((NASWOT_FILE, lambda: plot_naswot_scores(summary.get("naswot") or {})))
    plans.append((CURVES_FILE, lambda: plot_training_curves(trials, summary, Path(sweep_dir))))

    written, notes = [], []
    for name, draw in plans:
        try:
            figure = draw()
            if isinstance(figure, str):
                notes.append(f"{name} not written: {figure}.")
                continue
            written.append(save_png(figure, Path(sweep_dir) / name))
        except Exception as error:  # noqa: BLE001 -- a broken plot must not stop the others or the search
            log.warning("Plot %s failed: %s: %s", name, type(error).__name__, error)
            notes.append(f"{name} not written: {type(error).__name__}: {error}.")
    return written, notes


def save_png(figure: Any, path: Path) -> Path:
    """Save a figure as PNG through a temporary file, so a reader never sees a partial image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.tight_layout()
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.png")
    figure.savefig(temporary, format="png", dpi=DPI)
    os.replace(temporary, path)
    return path


def new_figure(width: float = 7.0, height: float = 4.5) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def integer_ticks(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def use_log_scale(values: Sequence[float]) -> bool:
    """Return whether positive values spread over at least two decades, where a log axis reads better."""
    return bool(values) and min(values) > 0 and max(values) >= 100 * min(values)


def is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# -- the plots -------------------------------------------------------------------------


def plot_history(trials: Sequence[FrozenTrial], summary: dict) -> Any:
    """Value of each COMPLETE trial by trial number, with the best value so far as a step line."""
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE and is_finite(t.value)),
                      key=lambda t: t.number)
    if not complete:
        return "no COMPLETE trial yet"
    numbers = [t.number for t in complete]
    values = [t.value for t in complete]
    pick = min if summary["direction"] == "minimize" else max
    best_so_far = [pick(values[: i + 1]) for i in range(len(values))]

    figure = new_figure()
    axes = figure.add_subplot()
    axes.scatter(numbers, values, s=18, label="COMPLETE trial")
    axes.step(numbers, best_so_far, where="post", color="tab:red", label="best so far")
    others = len(trials) - len(complete)
    axes.set_title(f"Study {summary['study_name']!r}: {len(complete)} COMPLETE, {others} other trial(s)")
    axes.set_xlabel("trial number")
    integer_ticks(axes.xaxis)
    axes.set_ylabel("NASWOT score" if summary.get("method") == "naswot" else "objective")
    if use_log_scale(values):
        axes.set_yscale("log")
    axes.legend()
    return figure


def plot_importances(study: Any | None, trials: Sequence[FrozenTrial]) -> Any:
    """Parameter importances by Optuna's default evaluator (PED-ANOVA in Optuna 5.1)."""
    import optuna

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    names = {name for t in complete for name in t.params}
    if study is None:
        return "no study to compute the importances from"
    if len(complete) < 2:
        return f"{len(complete)} COMPLETE trial(s); importances need at least 2"
    if len(names) < 2:
        return f"{len(names)} search parameter(s); importances need at least 2"
    importances = optuna.importance.get_param_importances(study)
    ordered = sorted(importances.items(), key=lambda item: item[1])

    figure = new_figure(7.0, 1.2 + 0.4 * len(ordered))
    axes = figure.add_subplot()
    axes.barh([name for name, _ in ordered], [value for _, value in ordered])
    axes.set_xlabel("importance (normalized to sum 1)")
    axes.set_title(f"Parameter importances from {len(complete)} COMPLETE trials")
    return figure


def plot_oat_main_effects(oat: dict) -> Any:
    """Mean objective at each level of each OAT factor; the best level is marked."""
    level_means = oat.get("level_means")
    if not level_means:
        reason = oat.get("analysis_error") or "rows are still running"
        return f"no main-effect analysis yet ({reason})"
    factors = list(level_means)
    ranges = oat.get("ranges") or {}
    optimum = oat.get("predicted_optimum") or {}

    figure = new_figure(min(3.2 * len(factors), 16.0), 3.8)
    axes_list = figure.subplots(1, len(factors), sharey=True, squeeze=False)[0]
    for axes, factor in zip(axes_list, factors):
        rows = [row for row in level_means[factor] if row["mean"] is not None]
        # Levels sit at integer positions with their values as tick labels, so numeric
        # and text levels both keep the order of the choice(...) list.
        positions = list(range(len(rows)))
        axes.plot(positions, [row["mean"] for row in rows], marker="o")
        axes.set_xticks(positions, [str(row["level"]) for row in rows], rotation=30)
        best = [i for i, row in enumerate(rows) if row["level"] == optimum.get(factor)]
        if best:
            axes.plot([best[0]], [rows[best[0]]["mean"]], marker="*", markersize=14, color="tab:red",
                      linestyle="none", label="predicted optimum")
        title = factor if factor not in ranges else f"{factor}\nrange {ranges[factor]:.3g}"
        axes.set_title(title, fontsize=9)
    axes_list[0].set_ylabel("mean objective of the rows")
    axes_list[0].legend(fontsize=8)
    return figure


def plot_naswot_scores(naswot: dict) -> Any:
    """NASWOT score against the objective of the trained top-k candidates."""
    trained = [row for row in naswot.get("trained") or []
               if row.get("state") == "complete" and is_finite(row.get("objective")) and is_finite(row.get("score"))]
    if not trained:
        return "no trained candidate; set hydra.sweeper.naswot.train_top_k to train the best-scoring ones"
    scores = [row["score"] for row in trained]
    objectives = [row["objective"] for row in trained]

    figure = new_figure(6.0, 4.5)
    axes = figure.add_subplot()
    axes.scatter(scores, objectives)
    for row in trained:
        axes.annotate(str(row["trial_number"]), (row["score"], row["objective"]), textcoords="offset points",
                      xytext=(4, 4), fontsize=8)
    axes.set_xlabel("NASWOT score")
    axes.set_ylabel("trained objective")
    axes.set_title(f"{len(trained)} trained candidate(s), numbered by trial")
    if use_log_scale(objectives):
        axes.set_yscale("log")
    return figure


def plot_training_curves(trials: Sequence[FrozenTrial], summary: dict, sweep_dir: Path) -> Any:
    """Validation metric per epoch of every finished training, from each job's metrics.json."""
    found = [(label, read_metrics(job_dir / METRICS_FILE)) for label, job_dir in training_dirs(trials, summary, sweep_dir)]
    found = [(label, metrics) for label, metrics in found if metrics is not None]
    if not found:
        return f"no {METRICS_FILE} in the trial directories"
    curves = []
    for label, metrics in found:
        key = METRIC_KEYS.get(str(metrics.get("metric")))
        if key is None:
            continue
        points = [(row["epoch"], row[key]) for row in metrics.get("history") or [] if is_finite(row.get(key))]
        if points:
            curves.append((label, key, points))
    if not curves:
        return f"no {METRICS_FILE} with a per-epoch history in the trial directories"

    best = best_label(summary)
    figure = new_figure()
    axes = figure.add_subplot()
    labelled = False
    for label, _, points in curves:
        highlight = label == best
        axes.plot([p[0] for p in points], [p[1] for p in points], marker=".",
                  color="tab:red" if highlight else "tab:gray", alpha=1.0 if highlight else 0.5,
                  linewidth=2.0 if highlight else 1.0, zorder=3 if highlight else 2,
                  label=f"{label} (best)" if highlight and not labelled else None)
        labelled = labelled or highlight
    keys = sorted({key for _, key, _ in curves})
    axes.set_xlabel("epoch")
    integer_ticks(axes.xaxis)
    axes.set_ylabel(", ".join(keys) + " (validation)")
    axes.set_title(f"Training curves of {len(curves)} training(s)")
    if use_log_scale([value for _, _, points in curves for _, value in points]):
        axes.set_yscale("log")
    if best is not None and any(label == best for label, _, _ in curves):
        axes.legend()
    return figure


def training_dirs(trials: Sequence[FrozenTrial], summary: dict, sweep_dir: Path) -> list[tuple[str, Path]]:
    """(label, job directory) of every training of the search, repeats included."""
    if summary.get("method") == "naswot":
        rows = (summary.get("naswot") or {}).get("trained") or []
        return [(f"candidate {row['trial_number']}", Path(row["trial_dir"])) for row in rows if row.get("trial_dir")]
    found = []
    for trial in sorted(trials, key=lambda t: t.number):
        subdir = trial.user_attrs.get("trial_dir")
        if subdir is None:
            continue
        trial_dir = Path(sweep_dir) / str(subdir)
        repeats = sorted(trial_dir.glob("repeat_*"))
        for job_dir in repeats or [trial_dir]:
            found.append((f"trial {trial.number}", job_dir))
    return found


def best_label(summary: dict) -> str | None:
    if summary.get("method") == "naswot":
        best = (summary.get("naswot") or {}).get("best_trained")
        return None if not best else f"candidate {best['trial_number']}"
    number = summary.get("best_trial_number")
    return None if number is None else f"trial {number}"


def read_metrics(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
