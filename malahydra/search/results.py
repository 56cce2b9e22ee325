"""Results of a study written into the sweep directory after every batch.

`optimization_results.yaml` summarizes the study (best trial, counts, settings) and
`trials.csv` has one row per trial with the columns of Optuna's `trials_dataframe()`
(`number`, `value`, `datetime_start`, ..., `params_<key>`, `user_attrs_<key>`, `state`)
plus `trial_dir`. The CSV is written without pandas, which Optuna needs for the
dataframe itself.
"""

import csv
import io
import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

# libyaml's emitter, where PyYAML was built with it: the summary of a 512-candidate NASWOT
# search took 0.3 s to write with the pure-Python SafeDumper. Both write the same YAML.
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
from optuna.trial import FrozenTrial, TrialState

RESULTS_FILE = "optimization_results.yaml"
TRIALS_FILE = "trials.csv"


def best_trial(trials: Sequence[FrozenTrial], direction: str) -> FrozenTrial | None:
    """The COMPLETE trial with the best value (lowest number on ties), or None."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    sign = 1.0 if direction == "minimize" else -1.0
    return min(complete, key=lambda t: (sign * t.value, t.number))


def summarize(trials: Sequence[FrozenTrial], *, direction: str, study_name: str, sweep_dir: Path, storage: str) -> dict:
    """Summary of the study for `optimization_results.yaml`."""
    best = best_trial(trials, direction)
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    return {
        "study_name": study_name,
        "direction": direction,
        "storage": storage,
        "best_value": None if best is None else float(best.value),
        "best_params": None if best is None else dict(best.params),
        "best_trial_number": None if best is None else best.number,
        "best_trial_dir": None if best is None else trial_dir(best, sweep_dir),
        "n_complete": counts[TrialState.COMPLETE],
        "n_failed": counts[TrialState.FAIL],
        "n_pruned": counts[TrialState.PRUNED],
        "n_running": counts[TrialState.RUNNING],
        "n_waiting": counts[TrialState.WAITING],
    }


def trial_dir(trial: FrozenTrial, sweep_dir: Path) -> str | None:
    subdir = trial.user_attrs.get("trial_dir")
    return None if subdir is None else str(Path(sweep_dir).resolve() / subdir)


def trial_rows(
    trials: Sequence[FrozenTrial], sweep_dir: Path, extra_columns: Mapping[int, Mapping[str, Any]] | None = None
) -> tuple[list[str], list[dict]]:
    """Columns and rows of `trials.csv`, named as in Optuna's `trials_dataframe()`.

    `extra_columns` maps a trial number to method-specific values (e.g. a NASWOT
    candidate's trained objective). New keys become columns after `trial_dir`; a key
    that is already a column replaces that trial's value (NASWOT's `trial_dir`).
    """
    extra_columns = extra_columns or {}
    param_keys = sorted({k for t in trials for k in t.params})
    attr_keys = sorted({k for t in trials for k in t.user_attrs})
    columns = ["number", "value", "datetime_start", "datetime_complete", "duration"]
    columns += [f"params_{k}" for k in param_keys] + [f"user_attrs_{k}" for k in attr_keys]
    columns += ["state", "trial_dir"]
    columns += sorted({k for values in extra_columns.values() for k in values} - set(columns))

    rows = []
    for trial in sorted(trials, key=lambda t: t.number):
        duration = None
        if trial.datetime_start and trial.datetime_complete:
            duration = trial.datetime_complete - trial.datetime_start
        row: dict[str, Any] = {
            "number": trial.number,
            "value": trial.value,
            "datetime_start": trial.datetime_start,
            "datetime_complete": trial.datetime_complete,
            "duration": duration,
            "state": trial.state.name,
            "trial_dir": trial_dir(trial, sweep_dir),
        }
        row.update({f"params_{k}": v for k, v in trial.params.items()})
        for key, value in trial.user_attrs.items():
            row[f"user_attrs_{key}"] = value if isinstance(value, (str, int, float)) else json.dumps(value)
        row.update(extra_columns.get(trial.number, {}))
        rows.append(row)
    return columns, rows


def write_results(
    summary: dict,
    trials: Sequence[FrozenTrial],
    sweep_dir: Path,
    extra_columns: Mapping[int, Mapping[str, Any]] | None = None,
) -> None:
    """Write both result files atomically, so a killed driver leaves the previous ones intact."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    replace_text(sweep_dir / RESULTS_FILE, yaml.dump(_plain(summary), Dumper=_YAML_DUMPER, sort_keys=False))

    columns, rows = trial_rows(trials, sweep_dir, extra_columns)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    replace_text(sweep_dir / TRIALS_FILE, table.getvalue())


def replace_text(path: Path, text: str) -> None:
    """Write `text` into `path` through a temporary file of this process and thread.

    Several drivers of one search, and `malahydra report`, write the same files. The
    last rename wins, and a reader always finds a whole file.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.write_text(text, newline="")
    os.replace(temporary, path)


def _plain(value: Any) -> Any:
    """Make a value safe for yaml.safe_dump (numpy scalars, tuples, inf)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return value
