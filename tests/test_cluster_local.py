"""A search through `cluster=local`: submitit's local executor, one process per trial."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from sweeper_apps.runner import TRAIN_SCRIPT, app_env, load_trials, states

pytestmark = pytest.mark.slow

TIMEOUT_S = 180


def log_span(train_log: Path) -> tuple[datetime, datetime]:
    """First and last timestamps of a Hydra job log ("[2026-01-01 12:00:00,123][...")."""
    stamps = [datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f") for line in train_log.read_text().splitlines() if line.startswith("[")]
    return stamps[0], stamps[-1]


def test_local_preset_runs_jobs_in_parallel(tmp_path: Path, be2_dir: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    completed = subprocess.run(
        [
            sys.executable, str(TRAIN_SCRIPT), "-m", f"hydra.sweep.dir={sweep_dir}", f"data.dir={be2_dir}",
            "cluster=local", "hyper_opt_method=random", "training.learning_rate=choice(1e-3,2e-3)",
            "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
            "training.max_epochs=10", "training.physics_every_epoch=false", "training.mini_batch_size=8",
        ],
        cwd=tmp_path, env=app_env(), capture_output=True, text=True, timeout=TIMEOUT_S,
    )

    assert completed.returncode == 0, completed.stderr[-4000:]
    assert states(load_trials("sqlite", sweep_dir)) == {"COMPLETE": 2}
    infos = [json.loads((sweep_dir / str(number) / "cluster_job.json").read_text()) for number in (0, 1)]
    assert [info["cluster"] for info in infos] == ["local", "local"]
    assert [info["hydra_job_num"] for info in infos] == [0, 1]
    assert infos[0]["job_id"] != infos[1]["job_id"]
    for info in infos:
        assert info["state"] == "COMPLETED"
        assert Path(info["stderr"]).is_file()
    (start_0, end_0), (start_1, end_1) = (log_span(sweep_dir / str(number) / "train.log") for number in (0, 1))
    # The jobs overlap in time: each started before the other ended.
    assert start_0 < end_1
    assert start_1 < end_0
