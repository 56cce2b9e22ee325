"""Submitit launchers that return a JobReturn for every job, also for jobs that died.

hydra-submitit-launcher 1.2 waits with `job.results()`, which raises for the first failed
job and so loses the results of the whole batch, and which waits forever for a job that
SLURM cancelled when accounting is off (submitit then never learns the job's state).
These launchers submit the same job array, then poll (see malahydra.cluster.watch): a job
that ended without a result becomes a FAILED JobReturn whose `_return_value` is a
ClusterJobError naming the job id, the SLURM state and the log path. Every JobReturn
carries the job's ids and log paths as the attribute `cluster_job` (a dict).

Interrupting the driver (SIGINT, SIGTERM) while it waits cancels every job of the launch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

# Launcher settings of this plugin; the others go to submitit.
WATCH_SETTINGS = {"poll_interval_s": (0.2, 60.0), "result_grace_s": (0.0, 600.0), "cancel_wait_s": (0.0, 3600.0)}
# Settings that submitit takes when the executor is created rather than per job.
EXECUTOR_SETTINGS = ("max_num_timeout",)


class DriverTerminated(KeyboardInterrupt):
    """SIGTERM reached the driver while it waited, and the handler before ours returned."""


class _WatchingLauncher:
    """The parts shared by the SLURM and the local launcher; mixed in before submitit's class."""

    _EXECUTOR: str

    def __init__(self, **params: Any) -> None:
        from malahydra.errors import ConfigurationError

        self.watch_settings: dict[str, float] = {}
        for key, (low, high) in WATCH_SETTINGS.items():
            value = params.pop(key, None)
            if value is None:
                continue
            if not (isinstance(value, (int, float)) and low <= value <= high):
                raise ConfigurationError(
                    f"Invalid hydra.launcher.{key}={value!r}: use a number of seconds from {low:g} to {high:g}."
                )
            self.watch_settings[key] = float(value)
        super().__init__(**params)  # type: ignore[call-arg]

    # -- driver side ---------------------------------------------------------------------

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from malahydra.cluster.job_side import JobInfoTask

        super().setup(hydra_context=hydra_context, task_function=JobInfoTask(task_function), config=config)  # type: ignore[misc]

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        if not job_overrides:
            return []
        executor = self._make_executor()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info("Submitit '%s' sweep output dir: %s", self._EXECUTOR, sweep_dir)

        arguments = []
        for offset, overrides in enumerate(job_overrides):
            job_num = initial_job_idx + offset
            log.info("\t#%d : %s", job_num, " ".join(filter_overrides(overrides)))
            arguments.append((list(overrides), "hydra.sweep.dir", job_num, f"job_id_for_{job_num}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*arguments))
        log.info("Submitted %d %s job(s): %s", len(jobs), self._EXECUTOR, _describe_ids([job.job_id for job in jobs]))

        with self._cancel_on_interrupt(jobs):
            outcomes = self._watcher(jobs).wait()
        self._after_wait(jobs, outcomes)
        return [
            self._job_return(job, error, arguments[index][0], arguments[index][2])
            for index, (job, error) in enumerate(zip(jobs, outcomes))
        ]

    def _make_executor(self) -> Any:
        import submitit

        params = dict(self.params)
        folder = params.pop("submitit_folder")
        executor_kwargs = {f"{self._EXECUTOR}_{key}": params.pop(key) for key in EXECUTOR_SETTINGS if key in params}
        executor = submitit.AutoExecutor(folder=folder, cluster=self._EXECUTOR, **executor_kwargs)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{key if key in shared else f"{self._EXECUTOR}_{key}": value for key, value in params.items()})
        return executor

    def _watcher(self, jobs: Sequence[Any]) -> Any:
        raise NotImplementedError

    def _cancel(self, jobs: Sequence[Any]) -> None:
        raise NotImplementedError

    def _after_wait(self, jobs: Sequence[Any], outcomes: Sequence[Any]) -> None:
        """Clean up after all jobs have finished; nothing to do by default."""

    @contextlib.contextmanager
    def _cancel_on_interrupt(self, jobs: Sequence[Any]) -> Iterator[None]:
        """Cancel `jobs` when waiting ends with an exception, then re-raise it.

        SIGINT arrives as KeyboardInterrupt. SIGTERM, whose default action would end the
        driver without any cleanup, is turned into DriverTerminated while we wait; after
        cancelling, the handler that was installed before gets the signal again, so the
        driver still ends as SIGTERM requests.
        """
        previous = _install_sigterm_handler()
        try:
            yield
        except DriverTerminated:
            self._cancel_logged(jobs, "SIGTERM")
            _restore_sigterm_handler(previous)
            if previous is not None:
                signal.raise_signal(signal.SIGTERM)
            raise
        except BaseException as error:
            self._cancel_logged(jobs, type(error).__name__)
            raise
        finally:
            _restore_sigterm_handler(previous)

    def _cancel_logged(self, jobs: Sequence[Any], cause: str) -> None:
        ids = [job.job_id for job in jobs]
        log.warning("%s while waiting: cancelling %d %s job(s) %s", cause, len(ids), self._EXECUTOR, _describe_ids(ids))
        self._cancel(jobs)

    def _job_return(self, job: Any, error: Any, overrides: list[str], job_num: int) -> JobReturn:
        from malahydra.cluster.failures import raised_in_job

        info = {
            "cluster": self._EXECUTOR,
            "job_id": str(job.job_id),
            "hydra_job_num": job_num,
            "stdout": str(job.paths.stdout),
            "stderr": str(job.paths.stderr),
        }
        if error is None:
            try:
                result = job.results()[0]
            except Exception as raised:  # noqa: BLE001 -- any job error becomes this job's FAILED return
                error = raised_in_job(raised, str(job.job_id), cluster=self._EXECUTOR, stdout=info["stdout"], stderr=info["stderr"])
                error.__cause__ = raised
                log.error("%s", error)
            else:
                completed = result.status == JobStatus.COMPLETED
                info["state"] = "COMPLETED" if completed else "FAILED"
                if not completed:
                    info["error"] = _first_line(result._return_value)
                result.cluster_job = info
                output_dir = OmegaConf.select(result.hydra_cfg, "hydra.runtime.output_dir") if result.hydra_cfg else None
                self._record(info, output_dir=output_dir)
                return result

        info.update(state=error.state, reason=error.reason, exit_code=error.exit_code, error=str(error))
        failed = JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=error)
        failed.cluster_job = info
        self._record(info, overrides=overrides, job_num=job_num)
        return failed

    def _record(
        self, info: dict[str, Any], output_dir: str | None = None, overrides: list[str] | None = None, job_num: int = 0
    ) -> None:
        """Merge the job's end into JOB_INFO_FILE of its output directory.

        Without `output_dir` (the job left no JobReturn), the directory comes from composing
        the job's config as the job would have.
        """
        from malahydra.cluster.job_side import write_job_info

        assert self.hydra_context is not None and self.config is not None
        try:
            if output_dir is None:
                sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides or []))
                with open_dict(sweep_config.hydra.job):
                    sweep_config.hydra.job.num = job_num
                output_dir = str(Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir))
            write_job_info(Path(output_dir), info)
        except Exception as error:  # noqa: BLE001 -- the JobReturn already carries the facts
            log.warning("Could not record the end of job %s in its output directory: %s", info["job_id"], error)

    # -- job side ------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        if self._EXECUTOR == "slurm":
            from malahydra.cluster.job_side import prepare_slurm_signals

            prepare_slurm_signals()
        return super().__call__(*args, **kwargs)  # type: ignore[misc]


class MalahydraSlurmLauncher(_WatchingLauncher, SlurmLauncher):
    """`hydra/launcher=malahydra_submitit_slurm`: a job array on SLURM; see the module docstring."""

    def _watcher(self, jobs: Sequence[Any]) -> Any:
        from malahydra.cluster.watch import SlurmJobWatcher

        return SlurmJobWatcher(jobs, **self._watch_arguments())

    def _watch_arguments(self) -> dict[str, float]:
        return {
            "poll_interval_s": self.watch_settings.get("poll_interval_s", 3.0),
            "result_grace_s": self.watch_settings.get("result_grace_s", 10.0),
        }

    def _cancel(self, jobs: Sequence[Any]) -> None:
        from malahydra.cluster.slurm import cancel_jobs, queued_job_ids

        ids = [str(job.job_id) for job in jobs]
        cancel_jobs(ids)
        _wait_until_gone(lambda: queued_job_ids(ids), self.watch_settings.get("cancel_wait_s", 60.0))

    def _after_wait(self, jobs: Sequence[Any], outcomes: Sequence[Any]) -> None:
        """Cancel jobs that SLURM requeued after they had written their result.

        A job requeued between writing its result and exiting would run its trial again.
        """
        from malahydra.cluster.slurm import cancel_jobs, query_jobs

        finished = [str(job.job_id) for job, error in zip(jobs, outcomes) if error is None]
        if not finished:
            return
        reply = query_jobs(finished)
        requeued = [job_id for job_id in finished if job_id in reply.jobs and reply.jobs[job_id].state == "PENDING"]
        if requeued:
            log.info("Cancelling %s: requeued after writing its result", _describe_ids(requeued))
            cancel_jobs(requeued)


class MalahydraLocalLauncher(_WatchingLauncher, LocalLauncher):
    """`hydra/launcher=malahydra_submitit_local`: one local process per job; see the module docstring."""

    def _watcher(self, jobs: Sequence[Any]) -> Any:
        from malahydra.cluster.watch import LocalJobWatcher

        return LocalJobWatcher(
            jobs,
            poll_interval_s=self.watch_settings.get("poll_interval_s", 1.0),
            result_grace_s=self.watch_settings.get("result_grace_s", 0.0),
        )

    def _cancel(self, jobs: Sequence[Any]) -> None:
        for job in jobs:
            job.cancel(check=False)
        running = lambda: {job.job_id for job in jobs if not job.done()}  # noqa: E731
        if _wait_until_gone(running, self.watch_settings.get("cancel_wait_s", 30.0)):
            return
        for job in jobs:
            process = getattr(job, "_process", None)
            if process is not None and process.poll() is None:
                log.warning("Local job %s ignored SIGINT; killing it", job.job_id)
                process.kill()


def _wait_until_gone(listed: Callable[[], set[str]], timeout_s: float) -> bool:
    """Poll `listed()` until it is empty or `timeout_s` passes; return whether it emptied."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            remaining = listed()
        except (OSError, RuntimeError) as error:
            log.warning("Could not check whether the cancelled jobs have ended: %s", error)
            return False
        if not remaining:
            return True
        if time.monotonic() >= deadline:
            log.warning("Job(s) %s still listed %g s after cancelling", _describe_ids(sorted(remaining)), timeout_s)
            return False
        time.sleep(1.0)


def _first_line(error: Any) -> str:
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    lines = text.strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _describe_ids(ids: Sequence[str]) -> str:
    return ", ".join(ids) if len(ids) <= 8 else f"{', '.join(ids[:8])} and {len(ids) - 8} more"


def _raise_driver_terminated(signum: int, frame: Any) -> None:
    raise DriverTerminated()


def _install_sigterm_handler() -> Any:
    """Install the SIGTERM handler of the wait; return the one it replaced, or None if none was replaced.

    An ignored SIGTERM stays ignored, and handlers can only be set in the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    current = signal.getsignal(signal.SIGTERM)
    if current == signal.SIG_IGN or current is None:
        return None
    signal.signal(signal.SIGTERM, _raise_driver_terminated)
    return current


def _restore_sigterm_handler(previous: Any) -> None:
    if previous is not None and signal.getsignal(signal.SIGTERM) is _raise_driver_terminated:
        signal.signal(signal.SIGTERM, previous)
