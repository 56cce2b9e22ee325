"""NASWOT search: rank untrained architectures by their NASWOT score.

    python train.py -m hyper_opt_method=naswot sweeps=mala_activations

Candidates are the grid of the `choice(...)` parameters in the order they are written,
the last parameter varying fastest. When the grid has more than `n_trials` points, a
seeded random subset of `n_trials` of them is taken, kept in grid order.

A candidate becomes a trial only once it is scored: the driver claims a chunk of
`naswot.candidates_per_job` unscored candidates, scores it in one job
(`malahydra.search.naswot_job`) through Hydra's launcher and adds one finished trial
(COMPLETE, or FAIL with `fail_reason`) per candidate. That is one storage write per
candidate, where enqueueing, popping and telling a trial took 15 to 27. A re-run scores
only the candidates without a trial. With `naswot.train_top_k` > 0 the best-scoring
candidates are then trained by ordinary training jobs.

Several drivers may share the study. A claim is a study system attribute
(`CLAIM_PREFIX` + first and last grid index) that names the driver and the time of its
last heartbeat. Claiming and adding trials hold the study lock, and a trial is added
only for a candidate that has none, so every candidate ends with exactly one trial. The
claim of a driver that is gone (a dead process on this host, or no heartbeat for
`grace_period` seconds) is taken over and scored again, at most `max_retries` times;
then its candidates are FAIL trials.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from .bulk_trials import add_finished_trials
from .errors import SearchConfigError
from .fixed_configs import FixedConfigMethod, params_key, raise_non_choice, trial_params, waiting_count
from .naswot_job import CANDIDATES_FILE, SCORES_FILE
from .space import SearchParameter, format_override
from .trial_context import RESULT_FILE
from .trials import JobOutcome, TrialOutcome, driver_is_alive, trial_outcome

log = logging.getLogger(__name__)

SELECTIONS = {"largest": "maximize", "smallest": "minimize"}
# Study user attribute that stores the training outcome of the top-k candidate <number>.
TRAINED_ATTR = "naswot_trained_{number}"
TRAINED_SUBDIR = "trained/{number}"
SEEDS_ATTR = "naswot_seeds"
# Candidates listed in the naswot.top section of optimization_results.yaml.
TOP_IN_RESULTS = 10
# Trial user attribute with the directory of the scoring job, relative to the sweep dir.
JOB_DIR_ATTR = "naswot_job_dir"
# Trial user attribute with the candidate's grid index.
CANDIDATE_ATTR = "naswot_candidate"
# Study system attribute of a claimed chunk: CLAIM_PREFIX + "<first>-<last>" grid index.
CLAIM_PREFIX = "malahydra:naswot_claim:"


class NaswotMethod(FixedConfigMethod):
    """Scoring of fixed candidates in chunked jobs, then optional training of the top k."""

    name = "naswot"
    runs_own_jobs = True

    def __init__(self, settings: dict) -> None:
        super().__init__(settings)
        options = dict(settings.get("naswot") or {})
        self.select = str(options.get("select", "largest"))
        self.candidates_per_job = int(options.get("candidates_per_job", 1024))
        self.train_top_k = int(options.get("train_top_k", 0))
        self.training_direction = settings["direction"]
        self.space: list[SearchParameter] = []
        self.candidates: list[dict] = []
        self.grid_indices: list[int] = []

    # -- preparation -----------------------------------------------------------------

    @staticmethod
    def direction_setting(direction: str) -> str:
        """Return the override that gives a NASWOT study `direction`: its selection, not hydra.sweeper.direction."""
        selection = next(name for name, selected in SELECTIONS.items() if selected == direction)
        return f"hydra.sweeper.naswot.select={selection}"

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
        # A candidate whose network cannot be built or scored ends FAIL and is not scored again.
        self.budget_text = f"{self.budget} candidates, each scored once (COMPLETE or FAIL)"
        self.settings["direction"] = SELECTIONS[self.select]
        log.info("NASWOT: %d candidate(s) of a grid of %d, %d per scoring job, selecting the %s score.",
                 self.budget, grid_size(self.space), self.candidates_per_job, self.select)
        return self.space

    def batch_size(self, study: Any, n_jobs: int) -> int:
        # Candidates are claimed in `finish`, so the only WAITING trials the core pops are
        # those of a study that an earlier malahydra version enqueued. `run_batch` scores them.
        return min(n_jobs * self.candidates_per_job, waiting_count(study))

    # -- scoring ---------------------------------------------------------------------

    def run_batch(self, sweeper: Any, batch: list) -> None:
        """Score a batch of pending trials in jobs of `candidates_per_job` and tell the study.

        NOTE: only trials that an earlier malahydra version enqueued come here; new
        candidates are claimed and added by `score_unscored`.
        """
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
                outcomes = entry_outcomes(entries.get(pending.number), job_result, repeats)
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
        """Return the overrides of a scoring job for pending (enqueued) trials; see `scoring_job`."""
        candidates = [{"number": pending.number, "params": self.override_params(pending.params)} for pending in group]
        return self.scoring_job(sweeper, candidates, subdir)

    # -- claimed chunks of candidates --------------------------------------------------

    def score_unscored(self, sweeper: Any) -> None:
        """Claim, score and add chunks until every candidate has a trial.

        While other drivers hold live claims, wait for them, because one of them may stop
        and leave its chunk to this driver.
        """
        claims = ClaimBook(sweeper, self)
        while True:
            with sweeper.lock:
                chunks = claims.claim(int(self.settings["n_jobs"]))
            if chunks:
                self.score_chunks(sweeper, claims, chunks)
                # The core writes the result files at the end, so only a round with work
                # left writes them here.
                if len(claims.scored) < len(self.candidates):
                    sweeper._check_failures(sweeper._write_results())
                continue
            if not claims.others_active:
                return
            time.sleep(min(5.0, claims.liveness.heartbeat_interval))

    def score_chunks(self, sweeper: Any, claims: "ClaimBook", chunks: list[list[int]]) -> None:
        """Score claimed chunks (lists of positions in `self.candidates`), one job each, and add their trials."""
        subdirs = [f"naswot/{self.grid_indices[c[0]]}-{self.grid_indices[c[-1]]}" for c in chunks]
        job_dirs = [sweeper.sweep_dir / subdir for subdir in subdirs]
        jobs = []
        for chunk, subdir, job_dir in zip(chunks, subdirs, job_dirs):
            (job_dir / SCORES_FILE).unlink(missing_ok=True)
            candidates = [{"number": self.grid_indices[p], "params": self.override_params(self.candidates[p])}
                          for p in chunk]
            jobs.append(self.scoring_job(sweeper, candidates, subdir))
        started = time.perf_counter()
        with claims.heartbeat():
            job_results = launch_jobs(sweeper, jobs, job_dirs)
        self.store_seeds(sweeper, job_dirs)
        duration = round((time.perf_counter() - started) / max(1, sum(map(len, chunks))), 6)

        repeats = int(self.settings["number_training_per_trial"])
        finished = []
        for chunk, subdir, job_dir, job_result in zip(chunks, subdirs, job_dirs, job_results):
            entries = read_scores(job_dir)
            for position in chunk:
                outcomes = entry_outcomes(entries.get(self.grid_indices[position]), job_result, repeats)
                outcome = trial_outcome(outcomes, self.settings["trial_ensemble_evaluation"])
                attrs = {JOB_DIR_ATTR: subdir, "repeat_values": list(outcome.repeat_values), "duration_s": duration}
                finished.append((position, outcome, attrs))
        with sweeper.lock:
            added = claims.finish(finished)
        complete = sum(outcome.state == "complete" for _, outcome, _ in finished)
        log.info("NASWOT: scored %d candidate(s) in %d job(s), %d COMPLETE, %d FAIL; %d trial(s) added.",
                 len(finished), len(chunks), complete, len(finished) - complete, added)

    def override_params(self, params: dict) -> dict:
        return {p.override_key: params[p.name] for p in self.space}

    def scoring_job(self, sweeper: Any, candidates: list[dict], subdir: str) -> list[str]:
        """Write `candidates` into `CANDIDATES_FILE` in the job directory and return the job's overrides."""
        path = (sweeper.sweep_dir / subdir / CANDIDATES_FILE).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"candidates": candidates}))
        return list(sweeper.fixed) + [
            format_override("+trial.mode", "naswot"),
            format_override("+trial.candidates_file", str(path)),
            format_override("+trial.repeats", int(self.settings["number_training_per_trial"])),
            format_override("+trial.study_name", self.settings["study_name"]),
            format_override("hydra.sweep.subdir", subdir),
        ]

    def finished_trial(self, position: int, outcome: Any, attrs: dict, driver: str) -> FrozenTrial:
        params = self.candidates[position]
        user_attrs = {CANDIDATE_ATTR: self.grid_indices[position], "driver": driver, **attrs}
        if outcome.state == "complete":
            value, state = outcome.value, TrialState.COMPLETE
        else:
            value, state = None, TrialState.FAIL
            user_attrs["fail_reason"] = outcome.reason
        return optuna.trial.create_trial(
            state=state, value=value, params=dict(params),
            distributions={p.name: p.distribution for p in self.space}, user_attrs=user_attrs,
        )

    # -- training of the best candidates ---------------------------------------------

    def finish(self, sweeper: Any) -> bool:
        """Score every unscored candidate, then train the `train_top_k` best without a training outcome."""
        self.score_unscored(sweeper)
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
                # The best-ranked candidates only: a YAML list of every candidate took longer
                # to write than scoring them. trials.csv contains every score and its rank.
                "top": [
                    {"rank": rank, "trial_number": t.number, "score": t.value, "params": trial_params(t)}
                    for rank, t in enumerate(ranked[:TOP_IN_RESULTS], start=1)
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
    """Launch jobs through the sweeper (see `SearchSweeper._launch`), after removing old result records."""
    for job_dir in job_dirs:
        (job_dir / RESULT_FILE).unlink(missing_ok=True)
    outcomes = sweeper._launch(jobs, job_dirs)
    sweeper.job_index += len(jobs)
    return outcomes


class ClaimBook:
    """Claims of candidate chunks by the drivers of one study; see the module docstring.

    `claim` and `finish` must run under the study lock. Positions index the method's
    candidate list; a claim stores grid indices, so drivers with other chunk sizes agree.
    """

    def __init__(self, sweeper: Any, method: NaswotMethod) -> None:
        self.sweeper = sweeper
        self.method = method
        self.storage = sweeper.study._storage
        self.study_id = sweeper.study._study_id
        self.liveness = sweeper.liveness
        self.driver = sweeper.driver
        self.position_of = {index: position for position, index in enumerate(method.grid_indices)}
        self.key_to_position = {params_key(params): p for p, params in enumerate(method.candidates)}
        self.scored: set[int] = set()
        self.mine: dict[str, dict] = {}
        self.others_active = False

    def refresh_scored(self) -> None:
        """Read which candidates have a finished trial; the only read of all trials."""
        for trial in self.sweeper.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            position = self.key_to_position.get(params_key(trial_params(trial)))
            if position is not None:
                self.scored.add(position)

    def claims(self) -> dict[str, dict]:
        attrs = self.storage.get_study_system_attrs(self.study_id)
        return {key: value for key, value in attrs.items() if key.startswith(CLAIM_PREFIX) and value}

    def is_live(self, claim: dict) -> bool:
        if claim.get("driver") == self.driver:
            return True
        if self.sweeper.settings.get("reclaim_running_trials") and float(claim.get("beat", 0)) < self.sweeper.started_at:
            return False
        driver = str(claim.get("driver"))
        if driver.split(":")[0] == self.sweeper.driver.split(":")[0] and not driver_is_alive(driver):
            return False
        return time.time() - float(claim.get("beat", 0)) <= self.liveness.grace_period

    def claim(self, n_jobs: int) -> list[list[int]]:
        """Claim up to `n_jobs` chunks of unscored candidates that no live driver holds."""
        self.refresh_scored()
        blocked: set[int] = set()
        retries: dict[int, int] = {}
        self.others_active = False
        for key, claim in self.claims().items():
            covered = [p for g, p in self.position_of.items() if claim["first"] <= g <= claim["last"]]
            if self.is_live(claim):
                self.others_active = True
                blocked.update(covered)
                continue
            # A driver that is gone left this chunk; its unscored candidates are free again.
            log.warning("NASWOT: driver %s left candidates %d-%d unscored; claiming them again.",
                        claim.get("driver"), claim["first"], claim["last"])
            for position in covered:
                retries[position] = max(retries.get(position, 0), int(claim.get("retries", 0)) + 1)
            self.storage.set_study_system_attr(self.study_id, key, None)

        free = [p for p in range(len(self.method.candidates)) if p not in self.scored and p not in blocked]
        given_up = [p for p in free if retries.get(p, 0) > self.liveness.max_retries]
        if given_up:
            reason = (f"scoring driver stopped {self.liveness.max_retries + 1} times; not retried, "
                      f"max_retries={self.liveness.max_retries} reached")
            outcome = TrialOutcome("fail", None, reason, ())
            self.add_trials([(p, outcome, {}) for p in given_up])
            free = [p for p in free if p not in set(given_up)]

        size = self.method.candidates_per_job
        chunks = [free[start : start + size] for start in range(0, min(len(free), n_jobs * size), size)]
        now = time.time()
        for chunk in chunks:
            first, last = self.method.grid_indices[chunk[0]], self.method.grid_indices[chunk[-1]]
            claim = {"driver": self.driver, "beat": now, "first": first, "last": last,
                     "retries": max(retries.get(p, 0) for p in chunk)}
            key = f"{CLAIM_PREFIX}{first}-{last}"
            self.storage.set_study_system_attr(self.study_id, key, claim)
            self.mine[key] = claim
        return chunks

    def finish(self, finished: list[tuple[int, Any, dict]]) -> int:
        """Add the trials of the scored candidates that still have none, release the claims; return how many."""
        current = self.claims()
        if any(current.get(key, {}).get("driver") != self.driver for key in self.mine):
            # Another driver took over a claim of this one (a missed heartbeat), and may have added trials.
            log.warning("NASWOT: another driver took over candidates of this driver; adding only missing trials.")
            self.refresh_scored()
        added = self.add_trials([item for item in finished if item[0] not in self.scored])
        for key in self.mine:
            if current.get(key, {}).get("driver") == self.driver:
                self.storage.set_study_system_attr(self.study_id, key, None)
        self.mine = {}
        return added

    def add_trials(self, finished: list[tuple[int, Any, dict]]) -> int:
        trials = [self.method.finished_trial(position, outcome, attrs, self.driver) for position, outcome, attrs in finished]
        add_finished_trials(self.storage, self.study_id, trials)
        self.scored.update(position for position, _, _ in finished)
        return len(finished)

    def heartbeat(self) -> "ClaimHeartbeat":
        return ClaimHeartbeat(self)

    def beat(self) -> None:
        now = time.time()
        for key, claim in list(self.mine.items()):
            claim["beat"] = now
            try:
                self.storage.set_study_system_attr(self.study_id, key, claim)
            except Exception as error:  # noqa: BLE001 -- a missed beat must not stop the scoring
                log.warning("Writing the heartbeat of NASWOT claim %s failed: %s: %s", key, type(error).__name__, error)


class ClaimHeartbeat:
    """Context manager: a thread that renews this driver's claims every `heartbeat_interval` seconds."""

    def __init__(self, book: ClaimBook) -> None:
        self.book = book
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "ClaimHeartbeat":
        if self.book.liveness.heartbeat_interval > 0 and self.book.mine:
            self._thread = threading.Thread(target=self._run, name="malahydra-naswot-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        # Stopped before the claims are released, so a late beat cannot renew a released claim.
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.book.liveness.heartbeat_interval):
            self.book.beat()


def entry_outcomes(entry: dict | None, job_result: JobOutcome, repeats: int) -> list[JobOutcome]:
    """Turn a candidate's entry of the scores file into one outcome per repeat.

    A candidate without an entry failed with its job, or the job wrote no score for it.
    """
    if entry is None:
        reason = job_result.reason if job_result.state == "fail" else "the scoring job wrote no score"
        return [JobOutcome("fail", reason=reason)] * repeats
    return [
        JobOutcome("fail", reason=reason) if value is None else JobOutcome("complete", value=float(value))
        for value, reason in zip(entry["values"], entry["reasons"])
    ]
