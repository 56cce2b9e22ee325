"""Searches and multiruns through `cluster=slurm` on the real single-node test cluster.

Each test runs `python train.py -m ...` as a subprocess, acts on its SLURM jobs with
scancel, scontrol or a preempting job, and checks what the launcher returned and what the
jobs left in their directories. Trainings are tiny (Be2, a few seconds each). The long
ones use mini-batches of 4 points with per-epoch physics off, so that a signal lands in
the middle of training. Mini-batches of 4 keep each resumed batch at the same 16-byte
alignment as in an uninterrupted run, which the weight comparisons below rely on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from slurm_helpers import job_state, require_slurm, run_slurm_command, submit_batch
from sweeper_apps.runner import TRAIN_SCRIPT, app_env, load_trials, states

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

JOB_INFO_FILE = "cluster_job.json"
# Bounds: one short trial on this cluster takes about 6 s from sbatch to its result. A
# requeued job waits cred_expire (10 s) and the scheduler interval before it starts again.
START_TIMEOUT_S = 60
SWEEP_TIMEOUT_S = 240
# A training long enough (about 6 s alone, longer on a busy node) for a signal to land in it.
LONG_TRAINING = ["training.max_epochs=60", "training.mini_batch_size=4", "training.physics_every_epoch=false"]
# One CPU per job, so two jobs and a reference run share the two-core test node.
ONE_CPU = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.result_grace_s=2", "hydra.launcher.poll_interval_s=1"]
# Hydra's basic sweeper, for tests of the launcher alone: the config defaults select the
# malahydra sweeper and its storage, whose keys the basic sweeper does not have.
BASIC_SWEEPER = ["~hyper_opt_method", "~storage", "hydra/sweeper=basic"]


def start_driver(sweep_dir: Path, *overrides: str) -> subprocess.Popen:
    command = [sys.executable, str(TRAIN_SCRIPT), "-m", f"hydra.sweep.dir={sweep_dir}", *overrides]
    return subprocess.Popen(
        command, cwd=sweep_dir.parent, env=app_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish_driver(driver: subprocess.Popen, timeout_s: float = SWEEP_TIMEOUT_S) -> str:
    try:
        output, _ = driver.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        driver.kill()
        output, _ = driver.communicate()
        pytest.fail(f"driver still running after {timeout_s} s; output:\n{output[-4000:]}")
    return output


def wait_for_epoch(job_dir: Path, epoch: int, driver: subprocess.Popen, timeout_s: float = START_TIMEOUT_S) -> dict:
    """Wait until the job in `job_dir` has logged `epoch` and return its JOB_INFO_FILE."""
    deadline = time.monotonic() + timeout_s
    log = job_dir / "train.log"
    while not (log.exists() and f"Epoch {epoch}/" in log.read_text() and (job_dir / JOB_INFO_FILE).exists()):
        if driver.poll() is not None:
            pytest.fail(f"driver ended with {driver.returncode} before {job_dir} reached epoch {epoch}:\n{driver.stdout.read()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{job_dir} did not reach epoch {epoch} within {timeout_s} s")
        time.sleep(0.1)
    return json.loads((job_dir / JOB_INFO_FILE).read_text())


def queued(job_ids: list[str]) -> str:
    """squeue's lines for `job_ids`, empty when none of them is pending, running or completing."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    completed = subprocess.run(["squeue", "-h", "--array", f"--jobs={','.join(arrays)}"], capture_output=True, text=True, timeout=30)
    return completed.stdout.strip() if completed.returncode == 0 else ""


def final_model(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=False)["model"]


def differing_tensors(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> list[str]:
    return [name for name in first if not torch.equal(first[name], second[name])]


def test_cancelled_trial_fails_alone(tmp_path: Path, be2_dir: Path) -> None:
    require_slurm()
    sweep_dir = tmp_path / "sweep"
    driver = start_driver(
        sweep_dir, f"data.dir={be2_dir}", "cluster=slurm", *ONE_CPU, *LONG_TRAINING,
        "hyper_opt_method=random", "training.learning_rate=interval(0.0005, 0.002)",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.seed=3",
    )
    cancelled = wait_for_epoch(sweep_dir / "0", 1, driver)
    run_slurm_command(["scancel", cancelled["job_id"]])
    output = finish_driver(driver)

    assert driver.returncode == 0, output[-4000:]
    trials = load_trials("sqlite", sweep_dir)
    assert states(trials) == {"COMPLETE": 2, "FAIL": 1}
    reason = trials[0].user_attrs["fail_reason"]
    assert f"SLURM job {cancelled['job_id']} ended CANCELLED" in reason
    assert cancelled["stderr"] in reason
    assert trials[0].user_attrs["cluster_job_id"] == cancelled["job_id"]
    assert trials[0].user_attrs["cluster_log"] == cancelled["stderr"]
    for trial in trials[1:]:
        assert trial.user_attrs["cluster_log"].endswith("_log.err"), trial.number
    info = json.loads((sweep_dir / "0" / JOB_INFO_FILE).read_text())
    assert info["state"] == "CANCELLED"
    assert info["job_id"] == cancelled["job_id"]
    summary = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert (summary["n_complete"], summary["n_failed"]) == (2, 1)
    for number in (1, 2):
        assert (sweep_dir / str(number) / "metrics.json").is_file(), number
    assert queued([cancelled["job_id"]]) == ""


def test_requeued_and_preempted_resume(tmp_path: Path, be2_dir: Path) -> None:
    """`scontrol requeue` (SIGTERM) and preemption (submitit's USR2) end with uninterrupted weights."""
    require_slurm()
    sweep_dir, reference_dir = tmp_path / "sweep", tmp_path / "reference"
    training = [f"data.dir={be2_dir}", *LONG_TRAINING]
    # Both jobs train the same configuration, and only `+tag` differs.
    driver = start_driver(
        sweep_dir, *BASIC_SWEEPER, "+tag=requeued,preempted", *training, "cluster=slurm", *ONE_CPU,
        "hydra.launcher.timeout_min=30",
    )
    reference = subprocess.Popen(
        [sys.executable, str(TRAIN_SCRIPT), *training, "training.num_threads=1", f"hydra.run.dir={reference_dir}"],
        cwd=tmp_path, env=app_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    requeued = wait_for_epoch(sweep_dir / "0", 3, driver)
    preempted = wait_for_epoch(sweep_dir / "1", 3, driver)
    run_slurm_command(["scontrol", "requeue", requeued["job_id"]])
    # A job in the higher-priority partition preempts every running job of the default one.
    urgent = submit_batch(["-p", "urgent", "--exclusive", f"--output={tmp_path}/urgent-%j.out", "--wrap", "sleep 3"])
    output = finish_driver(driver)
    _, reference_errors = reference.communicate(timeout=SWEEP_TIMEOUT_S)

    assert driver.returncode == 0, output[-4000:]
    assert reference.returncode == 0, reference_errors[-2000:]
    assert job_state(urgent) == "COMPLETED"
    expected = final_model(reference_dir)
    for job_dir, job in ((sweep_dir / "0", requeued), (sweep_dir / "1", preempted)):
        log = (job_dir / "train.log").read_text()
        assert "checkpoint written" in log, job_dir
        assert "Resumed from" in log, job_dir
        info = json.loads((job_dir / JOB_INFO_FILE).read_text())
        assert info["job_id"] == job["job_id"]
        assert info["restarts"] >= 1, job_dir
        assert info["state"] == "COMPLETED", job_dir
        assert differing_tensors(expected, final_model(job_dir)) == [], job_dir
    assert "Received SIGUSR2" in (sweep_dir / "1" / "train.log").read_text()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_interrupted_driver_cancels_jobs(tmp_path: Path, be2_dir: Path, stop_signal: signal.Signals) -> None:
    require_slurm()
    sweep_dir = tmp_path / "sweep"
    options = [
        f"data.dir={be2_dir}", "cluster=slurm", *ONE_CPU, *LONG_TRAINING,
        "hyper_opt_method=random", "training.learning_rate=interval(0.0005, 0.002)",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.seed=4",
    ]
    driver = start_driver(sweep_dir, *options)
    job_ids = [wait_for_epoch(sweep_dir / str(number), 1, driver)["job_id"] for number in (0, 1)]
    driver.send_signal(stop_signal)
    output = finish_driver(driver, timeout_s=90)

    assert driver.returncode != 0, output[-4000:]
    assert "cancelling 2 slurm job(s)" in output
    assert queued(job_ids) == ""
    if stop_signal == signal.SIGTERM:
        assert driver.returncode == -signal.SIGTERM
        return

    rerun = start_driver(sweep_dir, *options)
    rerun_output = finish_driver(rerun)
    assert rerun.returncode == 0, rerun_output[-4000:]
    trials = load_trials("sqlite", sweep_dir)
    assert states(trials) == {"COMPLETE": 2}
    for number in (0, 1):
        assert "Resumed from" in (sweep_dir / str(number) / "train.log").read_text(), number


def test_tpe_search_matches_in_process(tmp_path: Path, be2_dir: Path) -> None:
    """A 4-trial TPE search writes the same results through SLURM as in the driver's process."""
    require_slurm()
    search = [
        f"data.dir={be2_dir}", "hyper_opt_method=tpe", "hydra.sweeper.n_trials=4", "training.max_epochs=2",
        "hydra.sweeper.seed=11", "sweeps=mala_standard", "training.num_threads=2",
    ]
    cluster_dir, local_dir = tmp_path / "slurm", tmp_path / "in_process"
    on_slurm = start_driver(cluster_dir, *search, "cluster=slurm", "hydra.sweeper.n_jobs=2", "hydra.launcher.poll_interval_s=1")
    in_process = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), "-m", f"hydra.sweep.dir={local_dir}", *search, "hydra.sweeper.n_jobs=2"],
        cwd=tmp_path, env=app_env(), capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S,
    )
    output = finish_driver(on_slurm)

    assert on_slurm.returncode == 0, output[-4000:]
    assert in_process.returncode == 0, in_process.stderr[-4000:]
    for name in ("optimization_results.yaml", "trials.csv", "multirun.yaml"):
        assert (cluster_dir / name).is_file(), name
    cluster_summary = yaml.safe_load((cluster_dir / "optimization_results.yaml").read_text())
    local_summary = yaml.safe_load((local_dir / "optimization_results.yaml").read_text())
    for key in ("n_complete", "n_failed", "n_pruned", "best_trial_number"):
        assert cluster_summary[key] == local_summary[key], key
    assert cluster_summary["n_complete"] == 4
    assert cluster_summary["best_value"] == pytest.approx(local_summary["best_value"], rel=1e-6)
    cluster_trials = load_trials("sqlite", cluster_dir)
    local_trials = load_trials("sqlite", local_dir)
    assert [t.params for t in cluster_trials] == [t.params for t in local_trials]
    assert [t.value for t in cluster_trials] == pytest.approx([t.value for t in local_trials], rel=1e-6)
    for trial in cluster_trials:
        info = json.loads((cluster_dir / str(trial.number) / JOB_INFO_FILE).read_text())
        assert info["cluster"] == "slurm"
        assert info["state"] == "COMPLETED"
