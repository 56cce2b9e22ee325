"""Run every benchmark in bench/ and write docs/benchmarks.md and docs/benchmarks.json.

    MALAHYDRA_DATA_DIR=/path/to/Be2 python bench/run.py --mala-python /path/to/mala-venv/bin/python
    python bench/run.py --quick --output /tmp/bench-smoke

Every module `bench/NAME.py` that defines a top-level `run(quick)` is a benchmark. Each
runs in its own process, `INTERPRETER bench/run.py --child NAME`, so that one benchmark's
threads, memory and imports do not leak into the next and a hanging one can be timed
out. INTERPRETER is `--mala-python` when given (it must import both `mala` and
malahydra, e.g. a virtual environment created with --system-site-packages), else this
interpreter. When it cannot `import mala`, the MALA comparisons appear as rows that read
"MALA not installed" and the malahydra side still runs.

Without `--quick`, the page and the JSON go to docs/ (or `--output DIR`); each figure
is measured as often as `REPEATS` says and reported as the median of those runs.
`--quick` is a smoke test with tiny sizes and one run per module; its numbers mean
nothing, and it writes to `--output DIR` or a new temporary folder, never to docs/.

The page is docs/benchmarks.md with the part between the two RESULTS markers replaced;
the prose around it, which explains each figure, is kept as it is. `--rewrite-page`
renders that part again from the stored benchmarks.json without measuring.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import common  # noqa: E402

log = logging.getLogger("bench.run")

DOCS = common.REPO / "docs"
PAGE = "benchmarks.md"
RAW = "benchmarks.json"
BEGIN_MARKER = "<!-- RESULTS BEGIN: written by bench/run.py -->"
END_MARKER = "<!-- RESULTS END -->"

# Order of the comparisons on the page. Modules found in bench/ but not listed here
# follow in alphabetical order; listed modules that are absent get a "not present" row.
COMPARISONS = {
    "epoch_time": "training epoch time",
    "band_energy": "band-energy metric",
    "naswot_sweep": "NASWOT sweep throughput",
    "orchestration": "orchestration overhead of train.py -m",
    "distributed": "several drivers on one PostgreSQL study",
    "search_quality": "search quality",
    "memory": "peak memory on a 2 GB snapshot",
}
# Runs per module in a full run; the rows are medians over these runs. Modules that take
# minutes run once (search_quality takes its own median over 3 seeds, orchestration over
# 5 interleaved pairs).
REPEATS = {"epoch_time": 2, "band_energy": 3}
# Seconds one module may take before it is stopped and reported as timed out.
TIMEOUT_S = {"quick": 600, "full": 1800}
# Comparisons with MALA per module: a row whose figure contains the key text. When MALA
# is not importable, a missing one is added as a "MALA not installed" row.
MALA_FIGURES = {
    "epoch_time": "epoch time with validation: malahydra Trainer.fit vs MALA train_network",
    "band_energy": "band energy + Fermi energy time and agreement: malahydra vs MALA analytical",
    "naswot_sweep": "NASWOT sweep: time per candidate vs MALA HyperOptNASWOT",
    "search_quality": "search quality, TPE: malahydra vs MALA HyperOptOptuna",
}
# Rows that a module leaves out when a service is absent: module -> (figure text, reason).
SERVICE_FIGURES = {
    "distributed": ("4 drivers vs 1 driver on PostgreSQL", "skipped: no PostgreSQL server answered on 127.0.0.1:5432"),
}


# -- discovery ----------------------------------------------------------------------------


def defines_run(path: Path) -> bool:
    """Tell whether the module at `path` defines a top-level function `run`, without importing it."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError) as error:
        log.warning("Cannot parse %s (%s): not run as a benchmark.", path, error)
        return False
    return any(isinstance(node, ast.FunctionDef) and node.name == "run" for node in tree.body)


def discover() -> list[str]:
    """Return the names of the bench/ modules that define run(), in page order."""
    found = sorted(
        path.stem for path in BENCH.glob("*.py") if path.stem not in ("run", "common") and defines_run(path)
    )
    return [name for name in COMPARISONS if name in found] + [name for name in found if name not in COMPARISONS]


# -- the child process --------------------------------------------------------------------


def run_child(name: str, quick: bool, runs: int, rows_file: Path) -> None:
    """Import bench/NAME.py, call its run() `runs` times and write the combined rows as JSON."""
    import importlib

    module = importlib.import_module(name)
    results = [module.run(quick) for _ in range(runs)]
    rows = common.combine_runs(results) if runs > 1 else results[0]
    rows_file.write_text(json.dumps(rows, indent=2, allow_nan=True, default=str))


# -- the parent ---------------------------------------------------------------------------


def mala_version_of(interpreter: str) -> str | None:
    result = subprocess.run(
        [interpreter, "-c", "import mala; print(mala.__version__)"], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else None


def check_interpreter(interpreter: str) -> None:
    result = subprocess.run([interpreter, "-c", "import malahydra, torch"], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(
            f"The interpreter {interpreter} cannot import malahydra and torch "
            f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no message'}): create its "
            f"virtual environment with --system-site-packages or install malahydra into it."
        )


def machine_summary() -> dict[str, Any]:
    memory_gib = None
    try:
        with open("/proc/meminfo") as meminfo:
            memory_gib = int(meminfo.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": common.cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }


def load_average() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def display_command(name: str, quick: bool, runs: int) -> str:
    parts = ["python", f"bench/{name}.py"] + (["--quick"] if quick else []) + (["--runs", str(runs)] if runs > 1 else [])
    return shlex.join(parts)


def placeholder_row(name: str, figure: str, status: str, command: str) -> dict[str, Any]:
    return {
        "comparison": name, "figure": figure, "malahydra": None, "reference": None, "ratio": None, "target": None,
        "target_max_ratio": None, "met": None, "unit": None, "machine": None,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "command": command,
        "status": status,
    }


def run_module(name: str, interpreter: str, quick: bool, runs: int, work: Path) -> tuple[list[dict[str, Any]], str | None, float]:
    """Run one benchmark module in a child process; return its rows, an error text and its seconds."""
    rows_file = work / f"{name}.json"
    command = [interpreter, str(BENCH / "run.py"), "--child", name, "--runs", str(runs), "--rows-file", str(rows_file)]
    command += ["--quick"] if quick else []
    timeout = TIMEOUT_S["quick" if quick else "full"]
    log.info("Running %s (%d run%s): %s", name, runs, "s" if runs > 1 else "", shlex.join(command))
    started = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=common.REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout} s", time.perf_counter() - started
    seconds = time.perf_counter() - started
    (work / f"{name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        return [], f"failed with exit code {result.returncode}: {lines[-1] if lines else 'no message'}", seconds
    return json.loads(rows_file.read_text()), None, seconds


def annotate(name: str, rows: list[dict[str, Any]], command: str, measured_by: str, mala: str | None) -> list[dict[str, Any]]:
    """Add comparison, status and the reproducing command to a module's rows, plus placeholder rows."""
    for row in rows:
        row["comparison"] = name
        row["measured_by"] = measured_by
        row["command"] = command
        if mala is None and "MALA" in row["figure"] and row.get("ratio") is None:
            row["status"] = "MALA not installed"
        elif row.get("target_max_ratio") is None:
            row["status"] = "info"
        else:
            row["status"] = "met" if row["met"] else "missed"

    if mala is None and name in MALA_FIGURES and not any("MALA" in row["figure"] for row in rows):
        rows.append(placeholder_row(name, MALA_FIGURES[name], "MALA not installed", command))
    if name in SERVICE_FIGURES:
        text, reason = SERVICE_FIGURES[name]
        if not any(text in row["figure"] for row in rows):
            rows.append(placeholder_row(name, text, reason, command))
    return rows


# -- the page -----------------------------------------------------------------------------


def format_quantity(value: Any, unit: str | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if unit in ("s/epoch", "s/evaluation", "s", "s per candidate"):
        suffix = {"s/epoch": "/epoch", "s/evaluation": "", "s": "", "s per candidate": "/candidate"}[unit]
        if abs(value) >= 1:
            return f"{value:.3g} s{suffix}"
        if abs(value) >= 1e-3:
            return f"{value * 1e3:.3g} ms{suffix}"
        return f"{value * 1e6:.3g} µs{suffix}"
    if unit == "bytes":
        return f"{value / 2**20:,.0f} MiB"
    if unit == "eV":
        # Agreement rows: enough digits to show where the two codes differ.
        return f"{value:.15g} eV"
    if unit in ("meV/atom", "ms", "trials/s"):
        return f"{value:.4g} {unit}"
    if isinstance(value, float):
        return f"{value:.3g}" + (f" {unit}" if unit and unit not in ("absolute", "tau") else "")
    return str(value)


def format_ratio(row: dict[str, Any]) -> str:
    ratio = row.get("ratio")
    if ratio is None:
        return "–"
    text = f"{ratio:.3g}" if math.isfinite(ratio) else str(ratio)
    spread = row.get("ratio_range")
    if spread:
        text += f" ({spread[0]:.3g}–{spread[1]:.3g})"
    return text


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def results_section(report: dict[str, Any]) -> str:
    machine = report["machine"]
    load = report["load_average"]
    lines = [
        BEGIN_MARKER,
        "",
        f"Measured on {report['started'][:10]}, {report['started'][11:16]} to {report['finished'][11:16]} "
        f"({report['finished'][19:] or 'local time'}), with `{report['command']}` "
        f"in {report['seconds'] / 60:.1f} min. "
        + (f"MALA {report['mala']} was importable." if report["mala"] else "MALA was not importable, so its rows say so."),
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']:.0f} GiB, Python {machine['python']}"
        + (f", `OPENBLAS_CORETYPE={machine['openblas_coretype']}`" if machine["openblas_coretype"] else "")
        + f". Load average (1, 5, 15 min) at the start {', '.join(f'{v:.1f}' for v in load['start'])}, "
        f"at the end {', '.join(f'{v:.1f}' for v in load['end'])}"
        + (
            ": other processes shared the cores, so absolute times are noisy."
            if max(load["start"][0], load["end"][0], load["start"][2]) > 0.5 * machine["cores"]
            else "."
        ),
        "",
        "The ratio column gives the median over the repeated runs and, in brackets, the range of the "
        "runs' ratios. A missed target shows the measured value, and the analysis follows the table.",
        "",
        "| figure | malahydra | reference | ratio | target | met | machine | date | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        status = {"met": "met", "missed": "**missed**", "info": "–"}.get(row["status"], row["status"])
        lines.append(
            "| " + " | ".join(cell(text) for text in (
                row["figure"],
                format_quantity(row.get("malahydra"), row.get("unit")),
                format_quantity(row.get("reference"), row.get("unit")),
                format_ratio(row),
                row.get("target") or "–",
                status,
                row.get("machine") or "–",
                (row.get("date") or "")[:10],
                f"`{row['command']}`",
            )) + " |"
        )
    missed = [row["figure"] for row in report["rows"] if row["status"] == "missed"]
    errors = [row["figure"] for row in report["rows"] if row["status"].startswith(("error", "timed out"))]
    lines += ["", f"Targets missed: {len(missed)}." + (" The missed rows are:" if missed else "")]
    if missed:
        lines += [""] + [f"- {figure}" for figure in missed]
    if errors:
        lines += ["", "Benchmarks that did not finish:", ""] + [f"- {figure}" for figure in errors]
    lines += ["", END_MARKER]
    return "\n".join(lines)


def write_page(output: Path, report: dict[str, Any]) -> Path:
    """Write OUTPUT/benchmarks.md: docs/benchmarks.md with its results section replaced."""
    template = (DOCS / PAGE).read_text() if (DOCS / PAGE).is_file() else ""
    section = results_section(report)
    if BEGIN_MARKER in template and END_MARKER in template:
        before, rest = template.split(BEGIN_MARKER, 1)
        after = rest.split(END_MARKER, 1)[1]
        page = before + section + after
    else:
        page = "# Benchmarks\n\n" + section + "\n"
    path = output / PAGE
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(page)
    os.replace(temporary, path)
    return path


def write_raw(output: Path, report: dict[str, Any]) -> Path:
    path = output / RAW
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(report, indent=2, allow_nan=True, default=str) + "\n")
    os.replace(temporary, path)
    return path


# -- command line -------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, one run per module, not timed")
    parser.add_argument("--output", type=Path, help="folder for benchmarks.md and benchmarks.json "
                        "(default: docs/, or a new temporary folder with --quick)")
    parser.add_argument("--mala-python", help="interpreter that imports mala and malahydra; runs every benchmark "
                        "(default: this interpreter)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these bench modules")
    parser.add_argument("--rewrite-page", action="store_true", help="measure nothing: rewrite OUTPUT/benchmarks.md "
                        "from OUTPUT/benchmarks.json, e.g. after editing the prose of docs/benchmarks.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--rows-file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    arguments = parse_arguments()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if arguments.child:
        rows_file = arguments.rows_file or Path(tempfile.gettempdir()) / f"{arguments.child}.json"
        run_child(arguments.child, arguments.quick, arguments.runs, rows_file)
        return

    if arguments.rewrite_page:
        output = arguments.output or DOCS
        raw = output / RAW
        if not raw.is_file():
            raise SystemExit(f"{raw} not found: run the benchmarks first, or pass the --output folder that holds it.")
        print(f"wrote {write_page(output, json.loads(raw.read_text()))}")
        return

    interpreter = arguments.mala_python or sys.executable
    check_interpreter(interpreter)
    common.be2_data_dir()  # fails early with the fix when the data are missing
    mala = mala_version_of(interpreter)
    if arguments.mala_python and mala is None:
        raise SystemExit(
            f"--mala-python {arguments.mala_python} cannot import mala: install it there with "
            f"`pip install materials-learning-algorithms==1.4.0`, or leave out --mala-python."
        )
    output = arguments.output or (Path(tempfile.mkdtemp(prefix="malahydra-bench-")) if arguments.quick else DOCS)
    output.mkdir(parents=True, exist_ok=True)

    available = discover()
    names = list(dict.fromkeys([*COMPARISONS, *available]))
    if arguments.only:
        unknown = sorted(set(arguments.only) - set(names))
        if unknown:
            raise SystemExit(f"Unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(names)}.")
        names = [name for name in names if name in arguments.only]

    command = shlex.join(["python", "bench/run.py", *sys.argv[1:]])
    report: dict[str, Any] = {
        "command": command,
        "interpreter": interpreter,
        "quick": arguments.quick,
        "mala": mala,
        "machine": machine_summary(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average": {"start": load_average()},
        "modules": {},
        "rows": [],
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-rows-") as temporary:
        work = Path(temporary)
        for name in names:
            runs = 1 if arguments.quick else REPEATS.get(name, 1)
            reproduce = display_command(name, arguments.quick, runs)
            if name not in available:
                reason = "not present" if not (BENCH / f"{name}.py").is_file() else "not present: the module defines no run(quick)"
                report["rows"].append(placeholder_row(name, COMPARISONS.get(name, name), reason, reproduce))
                report["modules"][name] = {"status": reason}
                continue
            rows, error, seconds = run_module(name, interpreter, arguments.quick, runs, work)
            report["modules"][name] = {"seconds": seconds, "runs": runs, "error": error}
            if error:
                log.error("%s %s", name, error)
                report["rows"].append(placeholder_row(name, COMPARISONS.get(name, name), f"error: {error}", reproduce))
                continue
            report["rows"].extend(annotate(name, rows, reproduce, shlex.join([interpreter, "bench/run.py", "--child", name, "--runs", str(runs)]), mala))
            log.info("%s finished in %.0f s", name, seconds)
    report["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    report["seconds"] = time.perf_counter() - started
    report["load_average"]["end"] = load_average()

    raw = write_raw(output, report)
    page = write_page(output, report)
    print(common.format_table(report["rows"]))
    print(f"wrote {page} and {raw}")


if __name__ == "__main__":
    main()
