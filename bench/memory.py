"""Peak memory of a training on a 2 GB snapshot: memory-mapped batches against preloading.

A synthetic training snapshot in MALA's file format is written into a temporary folder
and removed afterwards. NAME.in.npy (nx, ny, nz, 3 + 91) float32 contains the grid indices
in the first 3 columns and standard-normal features. NAME.out.npy (nx, ny, nz, 11)
float32 contains uniform values in [0, 1). NAME.info.json is a copy of
Be_snapshot0.info.json with grid_dimensions set to the new grid. The grid is
180 x 180 x 158 points (5.1 million points, 2.15 GB in the two .npy files). Validation
uses Be2's Be_snapshot1 (8,748 points, linked, not copied), so that validation adds
almost nothing.

Each measurement is one `python train.py` process, training 1 epoch with mini-batches of
40 and `training.physics_every_epoch=false`:

- lazy: `+data.lazy_loading=true`, where each mini-batch is read from the memory-mapped
  files and scaled;
- preloaded: the default, where the scaled training set is built once as float32 tensors;
- baseline: the same command training on Be2 snapshot 0 (preloaded, 3.6 MB), which is
  the fixed cost of the interpreter, torch, Hydra and the training code.

The parent polls /proc/PID/status every 50 ms for RssAnon (anonymous memory: heap,
tensors, arrays) and takes the peak resident set size from `os.wait4` (ru_maxrss, the
kernel's VmHWM). ru_maxrss also counts pages of the memory-mapped files that the process
has touched (RssFile). Those are page-cache pages that the kernel drops under memory
pressure instead of swapping, so the lazy row compares the peak of RssAnon with the
snapshot size (target: at most a quarter of it, i.e. far below) and reports ru_maxrss
beside it. One mini-batch plus the model is tiny in comparison: 40 x (91 + 11) float32
values are 16 KB, and the [91, 100, 11] network with Adam's two moment buffers 124 KB.

    MALAHYDRA_DATA_DIR=/path/to/Be2 python bench/memory.py [--quick]
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__:
    from . import common
else:
    import common

log = logging.getLogger(__name__)

FEATURES = 91
GRID_INDEX_COLUMNS = 3
ENERGIES = 11
BATCH_SIZE = 40
FULL_GRID = (180, 180, 158)
QUICK_GRID = (30, 30, 50)
SNAPSHOT = "Synthetic_snapshot0"
# Peak anonymous memory of the lazy run relative to the snapshot files: "far below".
LAZY_TARGET = 0.25
POLL_SECONDS = 0.05
# Model plus optimizer state: weights of [91, 100, 11] and Adam's two moment buffers.
MODEL_BYTES = (FEATURES * 100 + 100 + 100 * ENERGIES + ENERGIES) * 4 * 3
BATCH_BYTES = BATCH_SIZE * (FEATURES + ENERGIES) * 4


def write_snapshot(folder: Path, grid: tuple[int, int, int], be2: Path) -> int:
    """Write the synthetic snapshot slice by slice (x), so the writer's memory stays small.

    Returns the size of the two .npy files in bytes.
    """
    rng = np.random.default_rng(1234)
    nx, ny, nz = grid
    descriptors = np.lib.format.open_memmap(
        folder / f"{SNAPSHOT}.in.npy", mode="w+", dtype=np.float32, shape=(nx, ny, nz, GRID_INDEX_COLUMNS + FEATURES)
    )
    ldos = np.lib.format.open_memmap(folder / f"{SNAPSHOT}.out.npy", mode="w+", dtype=np.float32, shape=(*grid, ENERGIES))
    iy, iz = np.meshgrid(np.arange(ny, dtype=np.float32), np.arange(nz, dtype=np.float32), indexing="ij")
    for x in range(nx):
        descriptors[x, :, :, 0] = x
        descriptors[x, :, :, 1] = iy
        descriptors[x, :, :, 2] = iz
        descriptors[x, :, :, GRID_INDEX_COLUMNS:] = rng.standard_normal((ny, nz, FEATURES), dtype=np.float32)
        ldos[x] = rng.random((ny, nz, ENERGIES), dtype=np.float32)
    descriptors.flush()
    ldos.flush()
    del descriptors, ldos

    info = json.loads((be2 / "Be_snapshot0.info.json").read_text())
    info["grid_dimensions"] = list(grid)
    (folder / f"{SNAPSHOT}.info.json").write_text(json.dumps(info, indent=2))
    for suffix in (".in.npy", ".out.npy", ".info.json"):
        (folder / f"Be_snapshot1{suffix}").symlink_to(be2 / f"Be_snapshot1{suffix}")
    return sum((folder / f"{SNAPSHOT}{suffix}").stat().st_size for suffix in (".in.npy", ".out.npy"))


def rss_fields(pid: int) -> dict[str, int]:
    """Return RssAnon, RssFile and VmRSS of `pid` in bytes ({} once the process is gone)."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("RssAnon", "RssFile", "VmRSS"):
                    fields[name] = int(value.split()[0]) * 1024
    except OSError:
        return {}
    return fields


def measure(command: list[str], cwd: Path) -> dict[str, Any]:
    """Run `command` and return its wall time, ru_maxrss and the polled peaks in bytes."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for name, value in rss_fields(process.pid).items():
                peaks[name] = max(peaks[name], value)
            stop.wait(POLL_SECONDS)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    stderr = process.stderr.read()
    # wait4 returns the resource usage of this child alone; RUSAGE_CHILDREN would be the
    # max over every child this process has waited for.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    poller.join()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {stderr.strip()[-2000:]}")
    return {
        "seconds": seconds,
        "ru_maxrss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
        "peak_rss_anon_bytes": peaks["RssAnon"],
        "peak_rss_file_bytes": peaks["RssFile"],
        "peak_vm_rss_polled_bytes": peaks["VmRSS"],
    }


def training_command(data_dir: Path, run_dir: Path, training: str, lazy: bool) -> list[str]:
    command = [
        sys.executable, str(common.REPO / "train.py"), f"data.dir={data_dir}", f"data.training=[{training}]",
        "data.validation=[Be_snapshot1]", "data.test=[]", "training.max_epochs=1",
        f"training.mini_batch_size={BATCH_SIZE}", "training.physics_every_epoch=false", "training.metric=ldos",
        "model.hidden_widths=[100]", "model.activations=[ReLU]", "training.num_threads=1", f"hydra.run.dir={run_dir}",
    ]
    return command + (["+data.lazy_loading=true"] if lazy else [])


def mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


def run(quick: bool) -> list[dict[str, Any]]:
    be2 = common.be2_data_dir()
    grid = QUICK_GRID if quick else FULL_GRID
    points = int(np.prod(grid))
    with tempfile.TemporaryDirectory(prefix="memory_bench_") as temporary:
        work = Path(temporary)
        data_dir = work / "data"
        data_dir.mkdir()
        free = shutil.disk_usage(work).free
        needed = points * (GRID_INDEX_COLUMNS + FEATURES + ENERGIES) * 4
        if free < 2 * needed:
            raise SystemExit(
                f"{work} has {mib(free)} free, but the synthetic snapshot needs {mib(needed)} plus room for "
                f"checkpoints: set TMPDIR to a folder with more space."
            )
        started = time.perf_counter()
        snapshot_bytes = write_snapshot(data_dir, grid, be2)
        write_seconds = time.perf_counter() - started
        log.info("Wrote a %s snapshot of %d points in %.1f s", mib(snapshot_bytes), points, write_seconds)

        baseline = measure(training_command(be2, work / "baseline", "Be_snapshot0", lazy=False), work)
        lazy = measure(training_command(data_dir, work / "lazy", SNAPSHOT, lazy=True), work)
        preloaded = measure(training_command(data_dir, work / "preloaded", SNAPSHOT, lazy=False), work)

    shared = {
        "grid": list(grid),
        "points": points,
        "snapshot_bytes": snapshot_bytes,
        "snapshot_write_seconds": write_seconds,
        "batch_bytes": BATCH_BYTES,
        "model_and_adam_bytes": MODEL_BYTES,
        "baseline_be2": baseline,
    }
    snapshot_label = f"{snapshot_bytes / 1e9:.2f} GB synthetic snapshot"
    lazy_anon = lazy["peak_rss_anon_bytes"]
    return [
        common.make_row(
            f"peak memory, 1 epoch on a {snapshot_label}, lazy loading: peak anonymous RSS vs snapshot size",
            lazy_anon, snapshot_bytes, lazy_anon / snapshot_bytes, f"<= {LAZY_TARGET:g} (far below the snapshot)",
            LAZY_TARGET, "bytes",
            lazy=lazy, above_baseline_bytes=lazy_anon - baseline["peak_rss_anon_bytes"], **shared,
        ),
        common.make_row(
            f"peak memory, 1 epoch on a {snapshot_label}, lazy loading: peak RSS incl. mapped file pages (ru_maxrss) "
            f"vs snapshot size",
            lazy["ru_maxrss_bytes"], snapshot_bytes, lazy["ru_maxrss_bytes"] / snapshot_bytes, None, None, "bytes",
            lazy=lazy, **shared,
        ),
        common.make_row(
            f"peak memory, 1 epoch on a {snapshot_label}, lazy loading: peak anonymous RSS vs the same training on "
            f"Be2 (interpreter + torch + one batch + model)",
            lazy_anon, baseline["peak_rss_anon_bytes"], lazy_anon / baseline["peak_rss_anon_bytes"], None, None,
            "bytes", lazy=lazy, **shared,
        ),
        common.make_row(
            f"peak memory, 1 epoch on a {snapshot_label}, preloaded: peak RSS (ru_maxrss) vs snapshot size",
            preloaded["ru_maxrss_bytes"], snapshot_bytes, preloaded["ru_maxrss_bytes"] / snapshot_bytes, None, None,
            "bytes", preloaded=preloaded, **shared,
        ),
    ]


if __name__ == "__main__":
    common.main(run, __doc__)
