"""Draw a sweep's plots in a helper process that imports matplotlib while the search runs.

In a new process, preparing matplotlib (imports, fonts, the first layout) took about
1.3 s on the machine in docs/benchmarks.md, and drawing the plots after that 0.4 s.
The sweeper starts this helper after a search's first batch (`SearchSweeper.
_start_plot_process`), so the preparation runs beside the later batches. At the end the
driver sends the helper the trials and the summary, and waits for it to write the
plots. When the helper cannot start or fails, the driver draws the plots itself, so
the files are the same either way.

    python -m malahydra.search.plot_process   # the helper; reads one request from stdin
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from optuna.trial import FrozenTrial

from . import plots

log = logging.getLogger(__name__)

# Seconds the driver waits for the helper to write the plots before it draws them itself.
DRAW_TIMEOUT_S = 300.0


class PlotProcess:
    """The helper process of one sweep; `write_plots` has the signature of `plots.write_plots`."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except OSError as error:
            log.info("Plot helper process not started (%s); the plots are drawn at the end of the sweep.", error)

    def write_plots(
        self, sweep_dir: Path, summary: dict, trials: Sequence[FrozenTrial], study: Any | None
    ) -> tuple[list[Path], list[str]]:
        """Write the plots through the helper; draw them here if it fails."""
        if self.process is None:
            return plots.write_plots(sweep_dir, summary, trials, study)
        process, self.process = self.process, None
        request = pickle.dumps((str(sweep_dir), summary, list(trials)))
        try:
            reply, errors = process.communicate(request, timeout=DRAW_TIMEOUT_S)
            if process.returncode != 0:
                lines = errors.decode(errors="replace").strip().splitlines()
                raise RuntimeError(f"exit code {process.returncode}: {lines[-1] if lines else 'no message'}")
            written, notes = pickle.loads(reply)
        except (OSError, RuntimeError, ValueError, pickle.UnpicklingError, subprocess.TimeoutExpired) as error:
            process.kill()
            process.wait()
            log.warning("Plot helper process failed (%s: %s); drawing the plots in the driver.", type(error).__name__, error)
            return plots.write_plots(sweep_dir, summary, trials, study)
        return [Path(path) for path in written], notes

    def close(self) -> None:
        """Stop the helper if no plots were requested from it, e.g. after an error in the sweep."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def study_from_trials(direction: str, trials: Sequence[FrozenTrial]) -> Any:
    """Build an in-memory study of the finished `trials`, for the parameter importances."""
    import optuna

    study = optuna.create_study(direction=direction)
    study.add_trials([trial for trial in trials if trial.state.is_finished()])
    return study


def warm_up() -> None:
    """Do once what the first plot of a process pays for: imports, font loading, layout code."""
    import io

    import optuna
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = plots.new_figure()
    axes = figure.add_subplot()
    axes.plot([0, 1], [1, 2], marker=".", label="warm-up")
    axes.set_yscale("log")
    axes.set_title("warm-up")
    axes.legend()
    plots.integer_ticks(axes.xaxis)
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(io.BytesIO(), format="png", dpi=plots.DPI)
    study = optuna.create_study()
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1) + trial.suggest_float("y", 0, 1), n_trials=3)
    optuna.importance.get_param_importances(study)


def main() -> None:
    # A failed plot comes back as a note, which the driver logs.
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    warm_up()
    request = sys.stdin.buffer.read()
    if not request:
        return
    sweep_dir, summary, trials = pickle.loads(request)
    study = study_from_trials(summary["direction"], trials)
    written, notes = plots.write_plots(Path(sweep_dir), summary, trials, study)
    sys.stdout.buffer.write(pickle.dumps(([str(path) for path in written], notes)))


if __name__ == "__main__":
    main()
