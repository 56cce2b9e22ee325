"""Search core behind `hydra/sweeper=malahydra`: an Optuna study driven batch by batch.

    python train.py -m hyper_opt_method=tpe hydra.sweeper.n_trials=6

Each round asks the study for new trials (or takes enqueued fixed configurations),
launches one job per trial and repeat through Hydra's launcher, tells the study the
outcome and rewrites the result files. The budget counts COMPLETE trials in the storage,
so running the same command again continues the study and stops at the same budget.
A RUNNING trial whose driver died is run again with the same parameters in the same
directory, where the training resumes from its checkpoint.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import optuna
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from malahydra.cluster import read_job_info

from . import report, results
from .claims import first_job_index, stagger_start, study_lock
from .errors import SearchConfigError, SweepStopped
from .fixed_configs import method_for
from .methods import derived_seed, make_pruner, make_sampler
from .space import (
    SearchParameter,
    SearchSpaceError,
    build_search_space,
    grid_search_space,
    missing_keys,
    parse_overrides,
)
from .heartbeat import Heartbeat, last_heartbeat, write_heartbeat
from .inprocess import InProcessLauncher, is_basic_launcher
from .plot_process import PlotProcess
from .storage import describe_storage, load_or_create_study, storage_reference
from .study_admin import LivenessSettings, repair_stale_trials, retarget_trial_number
from .trial_context import RESULT_FILE, ResultRecordingTask, read_result_record
from .trials import (
    AGGREGATIONS,
    JobOutcome,
    TrialOutcome,
    driver_identity,
    driver_is_alive,
    failure_limit_exceeded,
    job_outcome_from_record,
    job_outcome_from_return,
    job_overrides,
    trial_outcome,
    trial_subdir,
    trials_to_launch,
)

log = logging.getLogger(__name__)

METRICS = ("ldos", "band_energy", "fermi_energy")
# Seconds between two looks at the study while a driver has nothing to run and waits for
# the trials of other drivers. Each look takes the study lock and reads the trials.
IDLE_POLL_S = 2.0
_STATE_OF_OUTCOME = {"complete": TrialState.COMPLETE, "fail": TrialState.FAIL, "pruned": TrialState.PRUNED}


@dataclass
class PendingTrial:
    """A trial about to run: its number, parameters and the overrides of each repeat's job."""

    number: int
    params: dict
    jobs: list[list[str]] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)
    started: float = 0.0
    # Trial number whose directory and seeds the trial uses: its own, or for a retry the
    # original trial's, so that the retry resumes from the original's checkpoint.
    home: int = -1
    # The optuna.Trial from ask (or built once for a reclaimed trial). Keeping it saves
    # two storage reads per use: looking the id up by number and reading the trial back.
    trial: Any = None


class SearchSweeper:
    """Implementation of the malahydra sweeper; see the module docstring."""

    def __init__(self) -> None:
        self.settings: dict = {}
        self.driver = driver_identity()
        self.job_index = 0
        self.batches = 0
        self.started_at = time.time()
        self.method = None
        self.plot_process: PlotProcess | None = None
        self.failed_before = 0
        # Reason of the first job failure that every trial would repeat, which stops the search.
        self.stop_reason: str | None = None
        # optuna.Trial objects of the batch that runs, by trial number (see PendingTrial.trial).
        self._batch_trials: dict[int, optuna.Trial] = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.settings = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
        task = ResultRecordingTask(task_function)
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task, config=config)
        if is_basic_launcher(self.launcher):
            # The same jobs at less cost per job; see inprocess.py.
            self.launcher = InProcessLauncher()
            self.launcher.setup(hydra_context=hydra_context, task_function=task, config=config)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    def sweep(self, arguments: list[str]) -> dict:
        self._prepare(arguments)
        try:
            return self._search()
        finally:
            if self.plot_process is not None:
                self.plot_process.close()

    def _search(self) -> dict:
        trials = self.study.get_trials(deepcopy=False)
        self.progress = report.SweepProgress(self.settings["direction"], self.budget, trials)
        # FAIL trials of earlier runs do not count against max_failure_rate, so that after
        # fixing their cause the same command runs to the budget.
        self.failed_before = _count_states(trials)[TrialState.FAIL]
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")

        if self.method is not None:
            self.method.enqueue(self)
        batch = self._next_batch()
        while True:
            while batch:
                with self._heartbeat(batch):
                    if self.method is not None and self.method.runs_own_jobs:
                        self.method.run_batch(self, batch)
                    else:
                        self._run_batch(batch)
                summary = self._write_results()
                self._report_batch(summary)
                self._check_failures(summary)
                self._start_plot_process(summary)
                batch = self._next_batch()
            # A fixed-configuration method may enqueue a follow-up (OAT's confirmation trial).
            if self.method is None or not self.method.finish(self):
                break
            batch = self._next_batch()
        summary = self._write_results()
        log.info("Study %r finished: %d COMPLETE, %d FAIL, %d PRUNED; best value %s (trial %s).",
                 self.study_name, summary["n_complete"], summary["n_failed"], summary["n_pruned"],
                 summary["best_value"], summary["best_trial_number"])
        report.final_report(self, summary)
        return summary

    # -- preparation -----------------------------------------------------------------

    def _prepare(self, arguments: Sequence[str]) -> None:
        s = self.settings
        validate_settings(s)
        # NASWOT and OAT evaluate fixed configurations (see fixed_configs.py); None for samplers.
        self.method = method_for(s)
        sweeps, fixed = parse_overrides(s.get("params") or {}, arguments)
        self.space = build_search_space(sweeps)
        if not self.space:
            raise SearchSpaceError(empty_space_message(s["sampler"]))
        if self.method is not None:
            self.space = self.method.prepare(self.space)
        self.fixed = [override.input_line for override in fixed]
        absent = missing_keys(self.config, self.space)
        if absent:
            raise SearchSpaceError(
                f"Search-space key(s) {', '.join(absent)} not found in the config; check the spelling, "
                "give the list a base value long enough for the index, or prefix the key with + to add it."
            )
        if self.method is not None:
            self.budget = self.method.budget
        else:
            self.budget = effective_budget(s["n_trials"], s["sampler"], self.space)
        self.study_name = s["study_name"]
        self.storage_ref = storage_reference(s["storage"], self.study_name)
        self.liveness = LivenessSettings.from_settings(s)
        stagger_start(self.liveness.wait_time)
        self.study = load_or_create_study(
            self.storage_ref, self.study_name, s["direction"],
            self._sampler_for(0), make_pruner(s["pruner"], s.get("pruner_options") or {}),
            direction_setting=getattr(self.method, "direction_setting", None),
        )
        self.lock = study_lock(self.study)
        budget = getattr(self.method, "budget_text", f"{self.budget} COMPLETE trials")
        log.info("Study %r in %s: budget %s, sampler %s, pruner %s, space %s.",
                 self.study_name, describe_storage(self.storage_ref), budget, s["sampler"],
                 s["pruner"], {p.name: str(p.distribution) for p in self.space})

    def _sampler_for(self, number: int) -> optuna.samplers.BaseSampler:
        # The sampler is seeded per trial number, so a resumed search draws the same
        # parameters as an uninterrupted one. One seed per process would restart the
        # random stream on every resume.
        seed = self.settings["seed"]
        trial_seed = None if seed is None else derived_seed(seed, number)
        if self.method is not None:
            # Fixed-configuration methods only pop enqueued trials, so the sampler never samples.
            return optuna.samplers.RandomSampler(seed=trial_seed)
        return make_sampler(self.settings["sampler"], self.settings.get("sampler_options") or {}, trial_seed, self.space)

    # -- one round -------------------------------------------------------------------

    def _next_batch(self) -> list[PendingTrial]:
        """Repair stale trials, reclaim orphans or ask for new trials, all under the study lock.

        With nothing to run while trials of other drivers still run below the budget, wait
        for them: one may lose its driver and need a retry.
        """
        self._batch_trials.clear()
        while True:
            with self.lock:
                # One read of the trials serves all three steps while nothing changes them.
                trials = self.study.get_trials(deepcopy=False)
                running = [trial for trial in trials if trial.state == TrialState.RUNNING]
                # Trials of dead drivers on this host first: they rerun in place, without a FAIL trial.
                batch, touched = self._reclaim_orphans(running)
                repairs = repair_stale_trials(self.study, self.lock, self.liveness.grace_period,
                                              self.liveness.max_retries,
                                              running=[trial for trial in running if trial.number not in touched])
                if not batch:
                    batch = self._ask_batch(None if touched or repairs else trials)
            if batch or not self._others_running():
                return batch
            time.sleep(min(IDLE_POLL_S, self.liveness.heartbeat_interval))

    def _others_running(self) -> bool:
        counts = self._counts()
        return counts[TrialState.RUNNING] > 0 and counts[TrialState.COMPLETE] < self.budget

    def _heartbeat(self, batch: list[PendingTrial]) -> Heartbeat:
        # No beat at the start: an asked or popped trial's start time (datetime_start) is
        # its first heartbeat, and _reclaim_orphans beats a reclaimed trial when it takes it.
        trial_ids = [trial.trial._trial_id for trial in batch]
        return Heartbeat(self.study._storage, trial_ids, self.liveness.heartbeat_interval, beat_at_start=False)

    def _is_orphan(self, trial: optuna.trial.FrozenTrial, reclaim_all: bool) -> bool:
        owner = trial.user_attrs.get("driver")
        if owner == self.driver:
            return False
        if reclaim_all:
            # Only trials that no driver has touched since this one started: drivers started
            # together with reclaim_running_trials=true must not take each other's trials.
            beat = last_heartbeat(trial)
            return beat is None or beat < self.started_at
        return not driver_is_alive(owner)

    def _reclaim_orphans(self, running: list[optuna.trial.FrozenTrial]) -> tuple[list[PendingTrial], set[int]]:
        """Take over the orphans among the `running` trials; return their batch and the numbers of all changed trials."""
        reclaim_all = bool(self.settings.get("reclaim_running_trials"))
        pending = []
        touched: set[int] = set()
        for trial in running:
            if not self._is_orphan(trial, reclaim_all):
                continue
            touched.add(trial.number)
            try:
                reclaimed = self._take_over(trial)
            except optuna.exceptions.UpdateFinishedTrialError:
                # `running` was read before the trial's driver reported its outcome and stopped.
                log.info("Trial %d finished while being reclaimed; left as it is.", trial.number)
                continue
            if reclaimed is not None:
                pending.append(reclaimed)
        return pending, touched

    def _take_over(self, trial: optuna.trial.FrozenTrial) -> PendingTrial | None:
        """Return an orphan as a trial to run again in its directory, or mark it FAIL and return None.

        The first write to the trial raises UpdateFinishedTrialError when the trial has
        finished since `trial` was read, before anything else changes.
        """
        orphan = optuna.Trial(self.study, trial._trial_id)
        names = {p.name for p in self.space}
        if set(trial.params) != names:
            # Optuna's ask pops an enqueued trial first and writes its parameters after,
            # so a driver killed in between leaves them only in `fixed_params`.
            fixed = trial.system_attrs.get("fixed_params")
            requeue = isinstance(fixed, dict) and set(fixed) == names
            orphan.set_user_attr("fail_reason", "left RUNNING before its parameters were written" if requeue
                                 else "left RUNNING with another search space")
            self.study.tell(orphan, state=TrialState.FAIL)
            if requeue:
                self.study.enqueue_trial(fixed, user_attrs={"requeued_from": trial.number})
                log.warning("Trial %d was left RUNNING before its parameters were written; marked FAIL "
                            "and its enqueued configuration %s queued again.", trial.number, fixed)
            else:
                log.warning("Trial %d was left RUNNING with another search space; marked FAIL.", trial.number)
            return None
        retries = int(trial.user_attrs.get("retries", 0))
        if retries >= self.liveness.max_retries:
            reason = f"driver stopped {retries + 1} times; not retried, max_retries={self.liveness.max_retries} reached"
            orphan.set_user_attr("fail_reason", reason)
            self.study.tell(orphan, state=TrialState.FAIL)
            log.warning("Trial %d FAIL for good: %s.", trial.number, reason)
            return None
        write_heartbeat(self.study._storage, trial._trial_id)
        log.info("Trial %d was left RUNNING by a stopped driver; running it again in its directory.", trial.number)
        orphan.set_user_attr("retries", retries + 1)
        return self._pending(orphan, dict(trial.params))

    def _ask_batch(self, trials: list[optuna.trial.FrozenTrial] | None = None) -> list[PendingTrial]:
        """Ask for the trials that the budget allows; `trials` is the study's trials if just read under the lock."""
        if trials is None:
            trials = self.study.get_trials(deepcopy=False)
        counts = _count_states(trials)
        size = trials_to_launch(self.budget, counts[TrialState.COMPLETE], counts[TrialState.RUNNING],
                                int(self.settings["n_jobs"]))
        if self.method is not None:
            size = self.method.batch_size(self.study, int(self.settings["n_jobs"]))
        batch = []
        distributions = {p.name: p.distribution for p in self.space}
        # The sampler's seed is the number of trials in the study before each ask. Every
        # process that adds trials holds the study lock, as this one does now, so the count
        # read above stays exact: a new trial gets the next number, a popped WAITING trial
        # adds none.
        n_trials = len(trials)
        for _ in range(size):
            if self.method is None:
                self.study.sampler = self._sampler_for(n_trials)
            trial = self.study.ask(distributions)
            n_trials = max(n_trials, trial.number + 1)
            batch.append(self._pending(trial, dict(trial.params)))
        return batch

    def _pending(self, running: optuna.Trial, params: dict) -> PendingTrial:
        s = self.settings
        repeats = int(s["number_training_per_trial"])
        report = s["pruner"] != "none"
        number = running.number
        # The trial as read when it was asked or reclaimed; Trial.user_attrs would read it again.
        home = int(running._cached_frozen_trial.user_attrs.get("trial_dir", number))
        pending = PendingTrial(number, params, started=time.perf_counter(), home=home, trial=running)
        self._batch_trials[number] = running
        for repeat in range(repeats):
            seed = None if s.get("seed_key") is None else derived_seed(s["seed"] or 0, home, repeat)
            pending.seeds.append(seed)
            pending.jobs.append(retarget_trial_number(job_overrides(
                params=params, space=self.space, fixed=self.fixed, number=home, repeat=repeat,
                repeats=repeats, seed=seed, settings=s, storage_reference=self.storage_ref,
                report=report and repeat == 0,
            ), number))
        running.set_user_attr("driver", self.driver)
        running.set_user_attr("trial_dir", str(home))
        running.set_user_attr("seeds", pending.seeds)
        running.set_user_attr("overrides", [o for o in pending.jobs[0] if not o.startswith(("+trial.", "hydra."))])
        log.info("Trial %d started: %s", number, ", ".join(f"{k}={v!r}" for k, v in params.items()))
        return pending

    def _running_trial(self, number: int) -> optuna.Trial:
        """Return the optuna.Trial of a trial of the current batch, else read it by number."""
        if number in self._batch_trials:
            return self._batch_trials[number]
        # Optuna has no public lookup of a trial by number.
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        return optuna.Trial(self.study, trial_id)

    def _run_batch(self, batch: list[PendingTrial]) -> None:
        jobs = [job for trial in batch for job in trial.jobs]
        job_dirs = [self.sweep_dir / trial_subdir(t.home, r, len(t.jobs)) for t in batch for r in range(len(t.jobs))]
        for job_dir in job_dirs:
            (job_dir / RESULT_FILE).unlink(missing_ok=True)
        # Job numbers choose GPUs; ranks on one node number their jobs apart (see first_job_index).
        self.job_index = first_job_index(self.batches, int(self.settings["n_jobs"]) * len(batch[0].jobs))
        outcomes = self._launch(jobs, job_dirs)
        self.batches += 1

        position = 0
        for trial in batch:
            outcome = trial_outcome(outcomes[position : position + len(trial.jobs)],
                                    self.settings["trial_ensemble_evaluation"])
            self._record_cluster_job(trial, job_dirs[position])
            position += len(trial.jobs)
            self._tell(trial, outcome)

    def _record_cluster_job(self, trial: PendingTrial, job_dir: Path) -> None:
        """Store the cluster job id and log file of a trial's first job, when it ran as one."""
        info = read_job_info(job_dir)
        if not info:
            return
        try:
            trial.trial.set_user_attr("cluster_job_id", str(info.get("job_id")))
            if info.get("stderr"):
                trial.trial.set_user_attr("cluster_log", str(info["stderr"]))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # Another process finished the trial meanwhile, and _tell reports it.

    def _launch(self, jobs: list[list[str]], job_dirs: list[Path]) -> list[JobOutcome]:
        """Launch jobs numbered from `self.job_index` and classify each one's outcome.

        A launcher that raises (submitit does when one job of a batch dies) loses the
        whole batch's returns, so each job's outcome is then read from the record it left.
        """
        # The launcher composes each job's config, so a composition error surfaces here too;
        # composing every batch twice (Hydra's validate_batch_is_legal) costs about 0.2 s per job.
        try:
            returns = self.launcher.launch(jobs, initial_job_idx=self.job_index)
            outcomes = [job_outcome_from_return(r.status.name, r._return_value) for r in returns]
        except Exception as error:  # noqa: BLE001 -- a launcher error must not lose the study
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            log.error("Launching %d job(s) failed (%s); reading the results they left.", len(jobs), reason)
            outcomes = [job_outcome_from_record(read_result_record(d), launcher_error=reason) for d in job_dirs]
        stopping = next((outcome for outcome in outcomes if outcome.stops_search), None)
        if stopping is not None and self.stop_reason is None:
            self.stop_reason = stopping.reason
        return outcomes

    def _tell(self, trial: PendingTrial, outcome: TrialOutcome) -> None:
        running = trial.trial or self._running_trial(trial.number)
        try:
            # Every storage rejects a write to a finished trial, so the first write doubles
            # as the check that no other process has finished the trial meanwhile.
            running.set_user_attr("repeat_values", list(outcome.repeat_values))
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("Trial %d was finished by another process while it ran here (its heartbeat was lost); "
                        "this driver's outcome %s is dropped.", trial.number, outcome.state)
            return
        duration = time.perf_counter() - trial.started
        running.set_user_attr("duration_s", round(duration, 3))
        if outcome.reason:
            running.set_user_attr(f"{outcome.state}_reason", outcome.reason)

        state = _STATE_OF_OUTCOME[outcome.state]
        self.study.tell(running, outcome.value if state == TrialState.COMPLETE else None, state=state)
        params = report.params_text(trial.params)
        if state == TrialState.COMPLETE:
            self.progress.note(trial.number, outcome.value)
            log.info("Trial %d COMPLETE: value %.6g (%.1f s), %s; %s", trial.number, outcome.value, duration,
                     self.progress.best_text(), params)
        else:
            log.warning("Trial %d %s: %s (%.1f s), %s; %s", trial.number, state.name, outcome.reason, duration,
                        self.progress.best_text(), params)

    # -- bookkeeping -----------------------------------------------------------------

    def _start_plot_process(self, summary: dict) -> None:
        """Start the plot helper after the first batch, if the budget calls for more trials.

        The helper then prepares matplotlib while later batches run (see plot_process.py).
        It is not started earlier, because on a machine with two cores a NASWOT scoring
        job beside its start ran 1.4 to 1.7 times slower. A sweep that ends after its
        first batch draws its plots in the driver.
        """
        if self.plot_process is None and self.settings.get("plots", True) and summary["n_complete"] < self.budget:
            self.plot_process = PlotProcess()

    def _counts(self) -> dict:
        return _count_states(self.study.get_trials(deepcopy=False))

    def _write_results(self) -> dict:
        trials = self.study.get_trials(deepcopy=False)
        summary = results.summarize(trials, direction=self.settings["direction"], study_name=self.study_name,
                                    sweep_dir=self.sweep_dir, storage=describe_storage(self.storage_ref))
        extra_summary, extra_columns = ({}, {}) if self.method is None else self.method.results(self, trials)
        if self.method is not None and self.method.budget != self.budget:
            # OAT drops its confirmation trial when the predicted optimum is a row.
            self.budget = self.progress.budget = self.method.budget
        summary.update(extra_summary)
        results.write_results(summary, trials, self.sweep_dir, extra_columns=extra_columns)
        return summary

    def _report_batch(self, summary: dict) -> None:
        """Log the trial counts against the budget and rewrite best_config.yaml after a batch."""
        self.progress.update(summary)
        log.info("Study %r: %s; %s.", self.study_name, self.progress.counts_text(summary), self.progress.best_text())
        self.progress.refresh_best_config(summary, self.sweep_dir)

    def _check_failures(self, summary: dict) -> None:
        """Stop the search at a job error that every trial would repeat, or at too many FAIL trials.

        Only the FAIL trials since this driver started count against max_failure_rate. A
        search that has reached its budget is not stopped.
        """
        if summary["n_complete"] >= self.budget:
            return
        if self.stop_reason is not None:
            raise SweepStopped(
                f"Stopped study {self.study_name!r} at a failure that every trial would repeat: "
                f"{self.stop_reason.rstrip('.')}. Fix it and run the same command to continue."
            )
        rate = float(self.settings["max_failure_rate"])
        failed = summary["n_failed"] - self.failed_before
        if failure_limit_exceeded(failed, self.budget, rate):
            raise SweepStopped(
                f"Stopped study {self.study_name!r}: {failed} FAIL trials in this run exceed "
                f"max_failure_rate={rate} of n_trials={self.budget}; see the fail_reason column of "
                f"{self.sweep_dir / results.TRIALS_FILE}, fix the cause and run the same command to continue."
            )


def _count_states(trials: Sequence[optuna.trial.FrozenTrial]) -> dict:
    counts = dict.fromkeys(TrialState, 0)
    for trial in trials:
        counts[trial.state] += 1
    return counts


def validate_settings(settings: dict) -> None:
    """Reject settings that no search can run with, naming the key and the fix."""
    checks = [
        (settings["direction"] in ("minimize", "maximize"), "direction", "minimize or maximize"),
        (settings.get("metric") in (None, *METRICS), "metric", f"null or one of {', '.join(METRICS)}"),
        (int(settings["n_jobs"]) >= 1, "n_jobs", "an integer >= 1"),
        (int(settings["number_training_per_trial"]) >= 1, "number_training_per_trial", "an integer >= 1"),
        (settings["trial_ensemble_evaluation"] in AGGREGATIONS, "trial_ensemble_evaluation", ", ".join(AGGREGATIONS)),
        (float(settings["max_failure_rate"]) >= 0, "max_failure_rate", "a number >= 0"),
        (settings["n_trials"] is None or int(settings["n_trials"]) >= 1, "n_trials", "an integer >= 1"),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise SearchConfigError(f"Invalid hydra.sweeper.{key}={settings.get(key)!r}; expected {expected}.")


# A ready search space in sweeps/ that each method can run, for the empty-space message.
READY_SPACES = {"oat": "mala_oat", "naswot": "mala_activations"}


def empty_space_message(sampler: str) -> str:
    return (
        f"The search space is empty, so the {sampler} search has nothing to vary: set hydra.sweeper.params, "
        f"pass key=choice(...) on the command line, or choose sweeps={READY_SPACES.get(sampler, 'mala_standard')}."
    )


def effective_budget(n_trials: int | None, sampler: str, space: Sequence[SearchParameter]) -> int:
    """COMPLETE trials to reach: n_trials, capped at the grid size for the grid sampler."""
    if sampler != "grid":
        if n_trials is None:
            raise SearchConfigError(f"hydra.sweeper.n_trials is null; the {sampler} sampler needs a number of trials.")
        return int(n_trials)
    size = 1
    for values in grid_search_space(space).values():
        size *= len(values)
    return size if n_trials is None else min(int(n_trials), size)
