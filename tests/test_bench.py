"""Smoke test of the benchmark driver: `python bench/run.py --quick --output DIR`.

The quick run uses tiny sizes and measures nothing worth keeping. The tests check that
every comparison produces a row in the page and in the JSON, and that docs/ keeps the
results of a full run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_SCRIPT = REPO / "bench" / "run.py"


def load_driver():
    spec = importlib.util.spec_from_file_location("bench_run", RUN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_output(tmp_path_factory, be2_dir: Path) -> Path:
    output = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        [sys.executable, str(RUN_SCRIPT), "--quick", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "MALAHYDRA_DATA_DIR": str(be2_dir)},
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output


@pytest.mark.slow
def test_quick_run_writes_page_and_json(quick_output):
    output = quick_output
    assert (output / "benchmarks.md").is_file()
    assert (output / "benchmarks.json").is_file()


@pytest.mark.slow
def test_quick_run_has_every_comparison(quick_output):
    output = quick_output
    report = json.loads((output / "benchmarks.json").read_text())
    comparisons = {row["comparison"] for row in report["rows"]}
    for name in load_driver().COMPARISONS:
        assert name in comparisons, f"no row for {name}"


@pytest.mark.slow
def test_quick_run_page_lists_every_row(quick_output):
    output = quick_output
    page = (output / "benchmarks.md").read_text()
    report = json.loads((output / "benchmarks.json").read_text())
    for row in report["rows"]:
        assert row["figure"].replace("|", "\\|") in page, row["figure"]


@pytest.mark.slow
def test_quick_run_rows_have_no_errors(quick_output):
    output = quick_output
    report = json.loads((output / "benchmarks.json").read_text())
    for row in report["rows"]:
        assert not row["status"].startswith("error"), f"{row['figure']}: {row['status']}"


@pytest.mark.slow
def test_quick_run_keeps_docs_results(quick_output):
    # The published raw results must come from a full run; a quick run that wrote to
    # docs/ would leave "quick": true there.
    raw = REPO / "docs" / "benchmarks.json"
    if raw.is_file():
        assert json.loads(raw.read_text())["quick"] is False


def test_annotate_marks_missing_mala():
    driver = load_driver()
    rows = driver.annotate("epoch_time", [], "python bench/epoch_time.py", "child", mala=None)
    assert [row["status"] for row in rows] == ["MALA not installed"]


def test_annotate_judges_missed_target():
    driver = load_driver()
    row = {"figure": "x vs y", "ratio": 2.0, "target": "<= 1", "target_max_ratio": 1.0, "met": False}
    (annotated,) = driver.annotate("band_energy", [row], "python bench/band_energy.py", "child", mala="1.4.0")
    assert annotated["status"] == "missed"


def test_annotate_adds_service_row():
    driver = load_driver()
    rows = driver.annotate("distributed", [], "python bench/distributed.py", "child", mala=None)
    assert rows[0]["status"].startswith("skipped")
