"""Shared helpers of the benchmark scripts in bench/.

Every benchmark script exposes ``run(quick: bool) -> list[dict]`` and ends with
``main(run, __doc__)``, so it runs on its own as ``python bench/NAME.py [--quick]``
and a driver can also import it and call ``run``. Each row is a dict with at least

- ``figure``: what is measured, e.g. "epoch time vs naive PyTorch loop";
- ``malahydra`` and ``reference``: the two measured values (``unit`` names their unit);
- ``ratio``: the compared quantity. For timings it is malahydra / reference, for
  agreement rows the relative difference |malahydra - reference| / |reference|;
- ``target``: the target as text, and ``target_max_ratio``: the same as a number, an
  upper bound on ``ratio``. Every target here is such a bound. A row measured for
  information only has neither (both None);
- ``met``: whether ``ratio <= target_max_ratio``, None for a row without a target;
- ``machine``, ``date`` and ``command``: where, when and how the row was measured;

plus whatever raw numbers the script adds (per-epoch times, repetition counts, ...).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "Be2"

log = logging.getLogger(__name__)

RunFunction = Callable[[bool], list[dict[str, Any]]]


# -- environment ------------------------------------------------------------------------


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or platform.processor() elsewhere."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description() -> str:
    """Describe the CPU, core count, Python, torch and its thread count in one line."""
    import torch

    threads = torch.get_num_threads()
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({threads} thread{'s' if threads != 1 else ''})"
    )


def mala_version() -> str | None:
    """Return the version of the importable `mala` package, or None when it is absent."""
    try:
        import mala
    except ImportError:
        return None
    return str(getattr(mala, "__version__", "unknown version"))


def be2_data_dir() -> Path:
    """Return the Be2 data folder: $MALAHYDRA_DATA_DIR, else shared/data/Be2 beside the repo."""
    path = Path(os.environ.get("MALAHYDRA_DATA_DIR") or DEFAULT_DATA_DIR)
    if not (path / "Be_snapshot0.in.npy").is_file():
        raise SystemExit(
            f"Be2 data not found in {path}: set MALAHYDRA_DATA_DIR to the folder that "
            f"contains Be_snapshot0.in.npy."
        )
    return path


def command_line() -> str:
    """Return the command that started this process, with the interpreter's path."""
    return shlex.join([sys.executable, *sys.argv])


# -- timing -----------------------------------------------------------------------------


def time_call(function: Callable[[], Any]) -> float:
    """Return the wall time of one call of `function` in seconds."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def repeat_timing(function: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Call `function` `warmup` times untimed, then return the wall times of `repeats` calls."""
    for _ in range(warmup):
        function()
    return [time_call(function) for _ in range(repeats)]


def repeat_for_duration(
    function: Callable[[], Any], seconds: float, min_repeats: int = 5, max_repeats: int = 10_000
) -> list[float]:
    """Time calls of `function` until `seconds` of wall time or `max_repeats` calls have passed.

    One untimed call comes first. At least `min_repeats` calls are timed, so a slow
    function still gets a median of several calls.
    """
    function()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() < deadline):
        times.append(time_call(function))
    return times


def spread(values: Iterable[float]) -> dict[str, float]:
    """Return median, min and max of `values` and the relative spread (max - min) / median."""
    values = list(values)
    median = statistics.median(values)
    return {
        "median": median,
        "min": min(values),
        "max": max(values),
        "relative_spread": (max(values) - min(values)) / median if median else math.nan,
    }


def relative_difference(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference)


# -- rows -------------------------------------------------------------------------------


def target_met(ratio: float | None, target_max_ratio: float | None) -> bool | None:
    if target_max_ratio is None:
        return None
    return ratio is not None and math.isfinite(ratio) and ratio <= target_max_ratio


def make_row(
    figure: str,
    malahydra: float | None,
    reference: float | None,
    ratio: float | None,
    target: str | None,
    target_max_ratio: float | None,
    unit: str,
    **raw: Any,
) -> dict[str, Any]:
    """Build one result row; `met` is False when `ratio` is missing or not finite."""
    return {
        "figure": figure,
        "malahydra": malahydra,
        "reference": reference,
        "ratio": ratio,
        "target": target,
        "target_max_ratio": target_max_ratio,
        "met": target_met(ratio, target_max_ratio),
        "unit": unit,
        "machine": machine_description(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line(),
        **raw,
    }


def combine_runs(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Merge the rows of repeated runs into one row per figure.

    `malahydra`, `reference` and `ratio` become medians over the runs, `met` is judged
    on the median ratio, `ratio_range` is [min, max] of the runs' ratios, and `runs`
    keeps every run's three values. Other keys come from the last run.
    """
    by_figure: dict[str, list[dict[str, Any]]] = {}
    for rows in runs:
        for row in rows:
            by_figure.setdefault(row["figure"], []).append(row)

    combined = []
    for figure, rows in by_figure.items():
        row = dict(rows[-1])
        for key in ("malahydra", "reference", "ratio"):
            values = [r[key] for r in rows if r[key] is not None]
            row[key] = statistics.median(values) if values else None
        row["met"] = target_met(row["ratio"], row["target_max_ratio"])
        row["runs"] = [{key: r[key] for key in ("malahydra", "reference", "ratio")} for r in rows]
        ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
        row["ratio_range"] = [min(ratios), max(ratios)] if ratios else None
        combined.append(row)
    return combined


def update_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Merge `rows` into the JSON list in `path`: a row replaces the stored row of its figure.

    The file is replaced atomically, so an interrupted write leaves the old results.
    """
    path = Path(path)
    stored: list[dict[str, Any]] = []
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except ValueError as error:
            raise SystemExit(
                f"The results file {path} is not valid JSON ({error}): fix or delete it, "
                f"or pass another --results path."
            ) from error
    figures = {row["figure"] for row in rows}
    merged = [row for row in stored if row.get("figure") not in figures] + rows
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(merged, indent=2, allow_nan=True) + "\n")
    os.replace(temporary, path)


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "..".join(format_value(item) for item in value)
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Render the rows as a plain-text table with one line per figure."""
    header = ["figure", "malahydra", "reference", "unit", "ratio", "target", "met"]
    if any("ratio_range" in row for row in rows):
        header.insert(5, "ratio_range")
    lines = [[format_value(row.get(key)) for key in header] for row in rows]
    for line, row in zip(lines, rows):
        line[-1] = {True: "met", False: "MISSED", None: "-"}[row["met"]]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines)]
    rendered = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in [header, *lines]]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)


# -- command line -----------------------------------------------------------------------


def main(run: RunFunction, description: str | None) -> list[dict[str, Any]]:
    """Parse --quick, --runs and --results, run the benchmark, print and store its rows."""
    parser = argparse.ArgumentParser(description=(description or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke test")
    parser.add_argument(
        "--runs", type=int, default=1, help="repeat the whole benchmark this many times and report medians (default 1)"
    )
    parser.add_argument("--results", type=Path, help="JSON file to merge the rows into (created if missing)")
    arguments = parser.parse_args()
    if arguments.runs < 1:
        parser.error(f"--runs {arguments.runs} is invalid: use 1 or more.")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    runs = []
    for index in range(arguments.runs):
        log.info("Run %d of %d", index + 1, arguments.runs)
        runs.append(run(arguments.quick))
    rows = combine_runs(runs) if arguments.runs > 1 else runs[0]

    print(f"machine: {machine_description()}")
    print(format_table(rows))
    if arguments.results:
        update_results(arguments.results, rows)
        print(f"rows merged into {arguments.results}")
    return rows
