"""Orthogonal Array Tuning (OAT) on the search core.

    python train.py -m hyper_opt_method=oat sweeps=mala_oat

Each `choice(...)` parameter is a factor, in the order the parameters are written, with
its choices as levels in the order given. Every run of `orthogonal_array(levels)` is a
trial of the study, enqueued once with the user attribute `oat_row`. The core trains
the rows `n_jobs` at a time through the launcher, and a re-run trains only the rows that
have no trial yet. When every row has finished, `main_effects` estimates the best level
of each factor. That predicted optimum is usually not a row; with `oat.confirm` it is
trained once as a confirmation trial (user attribute `oat_confirmation`).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from optuna.trial import FrozenTrial, TrialState

from .errors import SearchConfigError
from .fixed_configs import FixedConfigMethod, enqueue_missing, params_key, require_choices, trial_params
from .main_effects import main_effects
from .orthogonal_array import orthogonal_array
from .space import SearchParameter

log = logging.getLogger(__name__)


class OatMethod(FixedConfigMethod):
    """Rows of an orthogonal array as fixed trials, then a main-effect analysis."""

    name = "oat"

    def __init__(self, settings: dict) -> None:
        super().__init__(settings)
        self.confirm = bool((settings.get("oat") or {}).get("confirm", True))
        self.space: list[SearchParameter] = []
        self.levels: list[int] = []
        self.array: list[list[int]] = []

    def prepare(self, space: list[SearchParameter]) -> list[SearchParameter]:
        if not space:
            raise SearchConfigError(
                "OAT needs at least one choice(...) parameter; set hydra.sweeper.params or choose sweeps=mala_oat."
            )
        require_choices(space, "OAT")
        self.space = list(space)
        self.levels = [len(p.grid_values) for p in space]
        try:
            self.array = orthogonal_array(self.levels).tolist()
        except ValueError as error:
            raise SearchConfigError(f"No orthogonal array for the OAT factors {self.factor_names()}: {error}") from None
        if self.settings.get("n_trials") is not None:
            log.info("OAT runs every row of its array; hydra.sweeper.n_trials=%s is ignored.", self.settings["n_trials"])
        self.budget = len(self.array) + (1 if self.confirm else 0)
        log.info("OAT: %d factor(s) with levels %s, %d row(s)%s.", len(self.levels), self.levels,
                 len(self.array), " plus a confirmation trial" if self.confirm else "")
        return self.space

    def optimum_is_row(self, optimum: dict) -> bool:
        return params_key(optimum) in {params_key(self.row_params(row)) for row in self.array}

    def factor_names(self) -> list[str]:
        return [p.name for p in self.space]

    def row_params(self, row: Sequence[int]) -> dict:
        return {p.name: p.grid_values[level] for p, level in zip(self.space, row)}

    def enqueue(self, sweeper: Any) -> None:
        configs = [self.row_params(row) for row in self.array]
        enqueue_missing(sweeper.study, configs, [{"oat_row": index} for index in range(len(self.array))])

    # -- analysis --------------------------------------------------------------------

    def row_trials(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial | None]:
        """Return the trial of each row: a COMPLETE one if any, else the latest with its parameters."""
        by_key: dict[tuple, FrozenTrial] = {}
        for trial in sorted(trials, key=lambda t: t.number):
            key = params_key(trial_params(trial))
            if by_key.get(key) is None or by_key[key].state != TrialState.COMPLETE:
                by_key[key] = trial
        return [by_key.get(params_key(self.row_params(row))) for row in self.array]

    def analysis(self, trials: Sequence[FrozenTrial]) -> dict | None:
        """Main effects of the finished rows, or None while a row has not finished.

        Raises:
            ValueError: if every row failed (from `main_effects`).
        """
        row_trials = self.row_trials(trials)
        if any(t is None or t.state in (TrialState.WAITING, TrialState.RUNNING) for t in row_trials):
            return None
        values = [t.value if t.state == TrialState.COMPLETE else None for t in row_trials]
        effects = main_effects(self.array, values, self.levels, self.settings["direction"])
        optimum = {p.name: p.grid_values[level] for p, level in zip(self.space, effects.best_levels)}
        return {"effects": effects, "values": values, "row_trials": row_trials, "optimum": optimum}

    def finish(self, sweeper: Any) -> bool:
        """Enqueue the confirmation trial once all rows have finished; true if one was added."""
        try:
            result = self.analysis(sweeper.study.get_trials(deepcopy=False))
        except ValueError as error:
            log.error("OAT: no main-effect analysis, because every row failed (%s).", error)
            return False
        if result is None:
            log.info("OAT: rows are still running in another driver; the analysis waits for them.")
            return False
        log.info("OAT: predicted optimum %s.", ", ".join(f"{k}={v!r}" for k, v in result["optimum"].items()))
        if not self.confirm:
            return False
        if self.optimum_is_row(result["optimum"]):
            log.info("OAT: the predicted optimum is a row of the array, which has run, so no confirmation trial runs.")
            return False
        added = enqueue_missing(sweeper.study, [result["optimum"]], [{"oat_confirmation": True}])
        return added > 0

    # -- results ---------------------------------------------------------------------

    def results(self, sweeper: Any, trials: Sequence[FrozenTrial]) -> tuple[dict, dict[int, dict]]:
        names = self.factor_names()
        row_trials = self.row_trials(trials)
        report: dict[str, Any] = {
            "factors": names,
            "levels": {p.name: list(p.grid_values) for p in self.space},
            "array": self.array,
            "rows": [
                {"row": index, "params": self.row_params(row),
                 "trial_number": None if t is None else t.number,
                 "state": "MISSING" if t is None else t.state.name,
                 "value": None if t is None else t.value}
                for index, (row, t) in enumerate(zip(self.array, row_trials))
            ],
            "level_means": None, "ranges": None, "importance": None,
            "predicted_optimum": None, "confirmation": None, "best_row": None,
        }
        try:
            result = self.analysis(trials)
        except ValueError as error:
            report["analysis_error"] = str(error)
            result = None
        if result is not None:
            report.update(self.effects_report(result, trials))
            if self.confirm and self.optimum_is_row(result["optimum"]):
                # The row has measured the optimum, so no confirmation trial runs: the rows are the budget.
                self.budget = len(self.array)
        return {"method": "oat", "oat": report}, {}

    def effects_report(self, result: dict, trials: Sequence[FrozenTrial]) -> dict:
        effects = result["effects"]
        names = self.factor_names()
        level_means = {
            p.name: [
                {"level": value, "mean": effects.level_means[f][l], "successful_runs": effects.successful_runs[f][l],
                 "failed_runs": effects.failed_runs[f][l]}
                for l, value in enumerate(p.grid_values)
            ]
            for f, p in enumerate(self.space)
        }
        sign = 1.0 if self.settings["direction"] == "minimize" else -1.0
        finished_rows = [(i, t) for i, t in enumerate(result["row_trials"]) if t.state == TrialState.COMPLETE]
        best_row = None
        if finished_rows:
            index, trial = min(finished_rows, key=lambda item: (sign * item[1].value, item[1].number))
            best_row = {"row": index, "trial_number": trial.number, "value": trial.value, "params": self.row_params(self.array[index])}

        optimum_key = params_key(result["optimum"])
        matches = [t for t in sorted(trials, key=lambda t: t.number) if params_key(trial_params(t)) == optimum_key]
        chosen = next((t for t in matches if t.state == TrialState.COMPLETE), matches[-1] if matches else None)
        row_keys = [params_key(self.row_params(row)) for row in self.array]
        confirmation = None
        if chosen is not None:
            confirmation = {
                "trial_number": chosen.number, "value": chosen.value, "state": chosen.state.name,
                "params": result["optimum"],
                "row": row_keys.index(optimum_key) if optimum_key in row_keys else None,
                "reason": chosen.user_attrs.get("fail_reason"),
            }
        return {
            "level_means": level_means,
            "ranges": {name: effects.ranges[f] for f, name in enumerate(names)},
            "importance": [names[f] for f in effects.ranking],
            "predicted_optimum": result["optimum"],
            "confirmation": confirmation,
            "best_row": best_row,
        }
