"""NASWOT search: rank untrained architectures by their NASWOT score.

    python train.py -m hyper_opt_method=naswot sweeps=mala_activations

Candidates are the grid of the `choice(...)` parameters in the order they are written,
the last parameter varying fastest. When the grid has more than `n_trials` points, a
seeded random subset of `n_trials` of them is taken, kept in grid order. Every candidate is a
trial of the study, enqueued once, so a re-run scores only the candidates without a
trial. The core pops them batch by batch; this module groups a batch into scoring jobs
of `naswot.candidates_per_job` candidates (`malahydra.search.naswot_job`), launches them
through Hydra's launcher and tells the study each score. With `naswot.train_top_k` > 0
the best-scoring candidates are then trained by ordinary training jobs.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any, Sequence

from optuna.trial import FrozenTrial, TrialState

from .errors import SearchConfigError
from .fixed_configs import FixedConfigMethod, enqueue_missing, raise_non_choice, trial_params, waiting_count
from .naswot_job import CANDIDATES_FILE, SCORES_FILE
from .space import SearchParameter, format_override
from .trial_context import RESULT_FILE, read_result_record
from .trials import JobOutcome, job_outcome_from_record, job_outcome_from_return, trial_outcome

log = logging.getLogger(__name__)

SELECTIONS = {"largest": "maximize", "smallest": "minimize"}
# Study user attribute that stores the training outcome of the top-k candidate <number>.
TRAINED_ATTR = "naswot_trained_{number}"
TRAINED_SUBDIR = "trained/{number}"
SEEDS_ATTR = "naswot_seeds"
# Trial user attribute with the directory of the scoring job, relative to the sweep dir.
JOB_DIR_ATTR = "naswot_job_dir"


class NaswotMethod(FixedConfigMethod):
    """Scoring of fixed candidates in chunked jobs, then optional training of the top k."""

    name = "naswot"
    runs_own_jobs = True

    def __init__(self, settings: dict) -> None:
        super().__init__(settings)
        options = dict(settings.get("naswot") or {})
        self.select = str(options.get("select", "largest"))
        self.candidates_per_job = int(options.get("candidates_per_job", 128))
        self.train_top_k = int(options.get("train_top_k", 0))
        self.training_direction = settings["direction"]
        self.space: list[SearchParameter] = []
        self.candidates: list[dict] = []
        self.grid_indices: list[int] = []

    # -- preparation -----------------------------------------------------------------

    def prepare(self, space: list[SearchParameter]) -> list[SearchParameter]:
        """Validate the settings, drop training parameters and enumerate the candidates.

        Sets the study direction (`settings["direction"]`) from `naswot.select`; the
        configured direction stays the one of the top-k trainings.
        """
        if self.select not in SELECTIONS:
            raise SearchConfigError(
                f"Invalid hydra.sweeper.naswot.select={self.select!r}; expected largest (MALA's choice) or smallest."
            )
        if self.candidates_per_job < 1:
            raise SearchConfigError(
                f"Invalid hydra.sweeper.naswot.candidates_per_job={self.candidates_per_job}; expected an integer >= 1."
            )
        if self.train_top_k < 0:
            raise SearchConfigError(
                f"Invalid hydra.sweeper.naswot.train_top_k={self.train_top_k}; expected 0 (off) or a positive integer."
            )
        ignored = [p.name for p in space if p.name.startswith("training.")]
        if ignored:
            log.warning(
                "NASWOT scores untrained networks, so it ignores the training parameter(s) %s; scoring jobs "
                "and train_top_k trainings use their config values.", ", ".join(ignored))
        self.space = [p for p in space if not p.name.startswith("training.")]
        for parameter in self.space:
            if parameter.grid_values is None or parameter.distribution.__class__.__name__ != "CategoricalDistribution":
                raise_non_choice(parameter, "NASWOT")

        n_trials = self.settings.get("n_trials")
        seed = self.settings.get("seed")
        self.grid_indices = candidate_indices(grid_size(self.space), n_trials, 0 if seed is None else int(seed))
        self.candidates = [candidate_params(self.space, index) for index in self.grid_indices]
        self.budget = len(self.candidates)
        self.settings["direction"] = SELECTIONS[self.select]
        log.info("NASWOT: %d candidate(s) of a grid of %d, %d per scoring job, selecting the %s score.",
                 self.budget, grid_size(self.space), self.candidates_per_job, self.select)
        return self.space

    def enqueue(self, sweeper: Any) -> None:
        attrs = [{"naswot_candidate": index} for index in self.grid_indices]
        enqueue_missing(sweeper.study, self.candidates, attrs)

    def batch_size(self, study: Any, n_jobs: int) -> int:
        return min(n_jobs * self.candidates_per_job, waiting_count(study))

    # -- scoring ---------------------------------------------------------------------

    def run_batch(self, sweeper: Any, batch: list) -> None:
        """Score a batch of pending trials in jobs of `candidates_per_job` and tell the study."""
        groups = [batch[i : i + self.candidates_per_job] for i in range(0, len(batch), self.candidates_per_job)]
        subdirs = [chunk_subdir(group) for group in groups]
        jobs = [self.scoring_overrides(sweeper, group, subdir) for group, subdir in zip(groups, subdirs)]
        job_dirs = [sweeper.sweep_dir / subdir for subdir in subdirs]
        for job_dir in job_dirs:
            (job_dir / SCORES_FILE).unlink(missing_ok=True)
        for group, subdir in zip(groups, subdirs):
            for pending in group:
                # Not `trial_dir`: the core reads that as the trial's own numbered directory.
                sweeper._running_trial(pending.number).set_user_attr(JOB_DIR_ATTR, subdir)

        job_results = launch_jobs(sweeper, jobs, job_dirs)
        self.store_seeds(sweeper, job_dirs)
        repeats = int(self.settings["number_training_per_trial"])
        for group, job_dir, job_result in zip(groups, job_dirs, job_results):
            entries = read_scores(job_dir)
            for pending in group:
                entry = entries.get(pending.number)
                if entry is None:
                    reason = job_result.reason if job_result.state == "fail" else "the scoring job wrote no score"
                    outcomes = [JobOutcome("fail", reason=reason)] * repeats
                else:
                    outcomes = [
                        JobOutcome("fail", reason=r) if v is None else JobOutcome("complete", value=float(v))
                        for v, r in zip(entry["values"], entry["reasons"])
                    ]
                sweeper._tell(pending, trial_outcome(outcomes, self.settings["trial_ensemble_evaluation"]))

    def store_seeds(self, sweeper: Any, job_dirs: list[Path]) -> None:
        # Every candidate is scored with the same seeds, so they are stored once per study
        # (user attribute `naswot_seeds`) instead of once per trial, which saves a write per trial.
        for job_dir in job_dirs:
            entries = list(read_scores(job_dir).values())
            if entries and sweeper.study.user_attrs.get(SEEDS_ATTR) != entries[0]["seeds"]:
                sweeper.study.set_user_attr(SEEDS_ATTR, entries[0]["seeds"])
                return

    def scoring_overrides(self, sweeper: Any, group: list, subdir: str) -> list[str]:
        """Overrides of one scoring job; its candidates go into `CANDIDATES_FILE` in the job directory."""
        candidates = [
            {"number": pending.number, "params": {p.override_key: pending.params[p.name] for p in self.space}}
            for pending in group
        ]
        path = (sweeper.sweep_dir / subdir / CANDIDATES_FILE).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"candidates": candidates}, indent=1))
        return list(sweeper.fixed) + [
            format_override("+trial.mode", "naswot"),
            format_override("+trial.candidates_file", str(path)),
            format_override("+trial.repeats", int(self.settings["number_training_per_trial"])),
            format_override("+trial.study_name", self.settings["study_name"]),
            format_override("hydra.sweep.subdir", subdir),
        ]

    # -- training of the best candidates ---------------------------------------------

    def finish(self, sweeper: Any) -> bool:
        """Train the `train_top_k` best-scoring candidates that have no training outcome yet."""
        if self.train_top_k == 0:
            return False
        trials = sweeper.study.get_trials(deepcopy=False)
        if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials):
            log.info("NASWOT: candidates are still being scored by another driver; top-k training waits for them.")
            return False
        stored = sweeper.study.user_attrs
        todo = [t for t in self.top_trials(trials)
                if (stored.get(TRAINED_ATTR.format(number=t.number)) or {}).get("state") != "complete"]
        n_jobs = int(self.settings["n_jobs"])
        for start in range(0, len(todo), n_jobs):
            self.train_candidates(sweeper, todo[start : start + n_jobs])
        return False

    def top_trials(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        sign = -1.0 if self.select == "largest" else 1.0
        return sorted(complete, key=lambda t: (sign * t.value, t.number))[: self.train_top_k]

    def train_candidates(self, sweeper: Any, group: list[FrozenTrial]) -> None:
        subdirs = [TRAINED_SUBDIR.format(number=t.number) for t in group]
        jobs = [self.training_overrides(sweeper, t, subdir) for t, subdir in zip(group, subdirs)]
        for trial in group:
            log.info("NASWOT: training candidate %d (score %.6g): %s", trial.number, trial.value,
                     ", ".join(f"{k}={v!r}" for k, v in trial.params.items()))
        outcomes = launch_jobs(sweeper, jobs, [sweeper.sweep_dir / s for s in subdirs])
        for trial, subdir, outcome in zip(group, subdirs, outcomes):
            record = {"state": outcome.state, "objective": outcome.value, "reason": outcome.reason, "trial_dir": subdir}
            sweeper.study.set_user_attr(TRAINED_ATTR.format(number=trial.number), record)
            if outcome.state == "complete":
                log.info("NASWOT: candidate %d trained, objective %.6g.", trial.number, outcome.value)
            else:
                log.warning("NASWOT: training candidate %d failed: %s", trial.number, outcome.reason)

    def training_overrides(self, sweeper: Any, trial: FrozenTrial, subdir: str) -> list[str]:
        # No seed override: the training starts from the weights that repeat 0 scored.
        overrides = list(sweeper.fixed)
        overrides += [format_override(p.override_key, trial.params[p.name]) for p in self.space]
        if self.settings.get("metric") is not None:
            overrides.append(format_override(self.settings["metric_key"], self.settings["metric"]))
        overrides.append(format_override("hydra.sweep.subdir", subdir))
        return overrides

    # -- results ---------------------------------------------------------------------

    def results(self, sweeper: Any, trials: Sequence[FrozenTrial]) -> tuple[dict, dict[int, dict]]:
        stored = sweeper.study.user_attrs
        ranked = self.ranking(trials)
        sweep_dir = Path(sweeper.sweep_dir).resolve()
        columns: dict[int, dict] = {
            t.number: {"trial_dir": str(sweep_dir / t.user_attrs[JOB_DIR_ATTR])}
            for t in trials if JOB_DIR_ATTR in t.user_attrs
        }
        for rank, trial in enumerate(ranked, start=1):
            columns.setdefault(trial.number, {})["naswot_rank"] = rank
        trained = []
        for trial in trials:
            record = stored.get(TRAINED_ATTR.format(number=trial.number))
            if record is None:
                continue
            columns.setdefault(trial.number, {})["naswot_trained_objective"] = record.get("objective")
            trained.append({
                "trial_number": trial.number, "score": trial.value, "params": trial_params(trial),
                "objective": record.get("objective"), "state": record.get("state"), "reason": record.get("reason"),
                "trial_dir": str(Path(sweeper.sweep_dir).resolve() / record["trial_dir"]),
            })
        trained.sort(key=lambda row: columns[row["trial_number"]].get("naswot_rank", math.inf))
        sign = 1.0 if self.training_direction == "minimize" else -1.0
        finished = [row for row in trained if row["state"] == "complete"]
        best_trained = min(finished, key=lambda row: sign * row["objective"]) if finished else None
        selected = ranked[0] if ranked else None

        summary = {
            "best_trial_dir": None if selected is None else columns[selected.number].get("trial_dir"),
            "method": "naswot",
            "naswot": {
                "select": self.select,
                "seeds": stored.get(SEEDS_ATTR),
                "n_candidates": self.budget,
                "candidates_per_job": self.candidates_per_job,
                "selected": None if selected is None else {
                    "trial_number": selected.number, "score": selected.value, "params": dict(selected.params)},
                "scores": [
                    {"trial_number": t.number, "params": trial_params(t), "score": t.value, "state": t.state.name,
                     "reason": t.user_attrs.get("fail_reason")}
                    for t in sorted(trials, key=lambda t: t.number)
                ],
                "train_top_k": self.train_top_k,
                "training_direction": self.training_direction,
                "trained": trained,
                "best_trained": best_trained,
            },
        }
        return summary, columns

    def ranking(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        sign = -1.0 if self.select == "largest" else 1.0
        return sorted(complete, key=lambda t: (sign * t.value, t.number))


def grid_size(space: Sequence[SearchParameter]) -> int:
    size = 1
    for parameter in space:
        size *= len(parameter.grid_values)
    return size


def candidate_indices(size: int, n_trials: int | None, seed: int) -> list[int]:
    """Grid indices of the candidates: all of them, or a seeded sample of `n_trials` in grid order."""
    if n_trials is None or int(n_trials) >= size:
        return list(range(size))
    return sorted(random.Random(seed).sample(range(size), int(n_trials)))


def candidate_params(space: Sequence[SearchParameter], index: int) -> dict:
    """Parameters of grid point `index`, counting with the last parameter fastest."""
    params = {}
    for parameter in reversed(space):
        index, digit = divmod(index, len(parameter.grid_values))
        params[parameter.name] = parameter.grid_values[digit]
    return {p.name: params[p.name] for p in space}


def chunk_subdir(group: list) -> str:
    first, last = group[0].number, group[-1].number
    return f"naswot/{first}" if first == last else f"naswot/{first}-{last}"


def read_scores(job_dir: Path) -> dict[int, dict]:
    try:
        data = json.loads((job_dir / SCORES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {int(entry["number"]): entry for entry in data.get("candidates", [])}


def launch_jobs(sweeper: Any, jobs: list[list[str]], job_dirs: list[Path]) -> list[JobOutcome]:
    """Launch jobs through the sweeper's launcher and classify each one's outcome.

    A launcher that raises (submitit does when one job of a batch dies) loses the whole
    batch's returns, so each job's outcome is then read from the record it left.
    """
    for job_dir in job_dirs:
        (job_dir / RESULT_FILE).unlink(missing_ok=True)
    try:
        returns = sweeper.launcher.launch(jobs, initial_job_idx=sweeper.job_index)
        outcomes = [job_outcome_from_return(r.status.name, r._return_value) for r in returns]
    except Exception as error:  # noqa: BLE001 -- a launcher error must not lose the study
        text = str(error).strip()
        reason = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
        log.error("Launching %d job(s) failed (%s); reading the results they left.", len(jobs), reason)
        outcomes = [job_outcome_from_record(read_result_record(d), launcher_error=reason) for d in job_dirs]
    sweeper.job_index += len(jobs)
    return outcomes
