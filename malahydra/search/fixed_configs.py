"""Enqueue fixed configurations (OAT rows, NASWOT candidates) into an Optuna study.

Methods that evaluate a known list of configurations put each one into the study as a
WAITING trial. The search core then pops WAITING trials before it asks the sampler, so
they run through the same launcher, storage and result files as sampled trials.
"""

import logging
from typing import Any, Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)


def params_key(params: Mapping[str, Any]) -> tuple:
    """Hashable identity of a configuration: its (name, value) pairs sorted by name."""
    return tuple(sorted(params.items()))


def trial_params(trial: FrozenTrial) -> dict:
    """Parameters of a trial; a WAITING trial has them only as Optuna's `fixed_params`."""
    return dict(trial.params) if trial.params else dict(trial.system_attrs.get("fixed_params") or {})


def enqueue_missing(
    study: optuna.Study,
    configs: Sequence[Mapping[str, Any]],
    user_attrs: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Enqueue every configuration that no trial of the study has yet; return how many.

    Contract: a configuration counts as present when some trial of the study has exactly
    these parameters in any state, FAIL included. Running the same call again therefore
    enqueues nothing, and a failed configuration is not retried (its failure is usually
    deterministic, e.g. a NaN score). `user_attrs[i]` is attached to the trial of
    `configs[i]`. Configurations are enqueued in the given order, which is the order in
    which the search core pops them.

    Drivers that share the study may call this at the same moment: reading the present
    configurations and enqueueing hold the study lock of a study opened by
    `storage.load_or_create_study` (see `claims`), so each configuration is enqueued once.
    A study opened otherwise has no such lock.
    """
    from .claims import study_lock

    added = 0
    with study_lock(study):
        present = {params_key(trial_params(t)) for t in study.get_trials(deepcopy=False)}
        for index, config in enumerate(configs):
            key = params_key(config)
            if key in present:
                continue
            attrs = dict(user_attrs[index]) if user_attrs is not None else {}
            study.enqueue_trial(dict(config), user_attrs=attrs)
            present.add(key)
            added += 1
    if added:
        log.info("Enqueued %d of %d fixed configurations into study %r.", added, len(configs), study.study_name)
    return added


def waiting_count(study: optuna.Study) -> int:
    """Number of WAITING trials, the upper bound of trials a fixed-configuration method may ask for."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


class FixedConfigMethod:
    """Hooks through which the search core runs a method of fixed configurations.

    The core calls them in this order. `prepare` gets the parsed search space before the
    study is opened, and `enqueue` runs before the loop. `batch_size` caps every request
    for new trials. `run_batch` runs each batch when `runs_own_jobs` is true; otherwise the
    core launches one job per trial. `finish` runs when no trial is left, and returning
    true means it enqueued more, so the loop goes on. `results` adds to the result files.
    """

    name = "fixed"
    runs_own_jobs = False

    def __init__(self, settings: dict) -> None:
        self.settings = settings
        self.budget = 0

    def prepare(self, space: list) -> list:
        return space

    def enqueue(self, sweeper: Any) -> None:
        return None

    def batch_size(self, study: optuna.Study, n_jobs: int) -> int:
        return min(n_jobs, waiting_count(study))

    def run_batch(self, sweeper: Any, batch: list) -> None:
        raise NotImplementedError

    def finish(self, sweeper: Any) -> bool:
        return False

    def results(self, sweeper: Any, trials: Sequence[FrozenTrial]) -> tuple[dict, dict[int, dict]]:
        """Extra keys of `optimization_results.yaml` and extra `trials.csv` columns per trial number."""
        return {}, {}


def require_choices(space: Sequence[Any], method: str) -> None:
    """Reject every search parameter that is not `choice(...)`, naming the first one."""
    for parameter in space:
        if not isinstance(parameter.distribution, optuna.distributions.CategoricalDistribution):
            raise_non_choice(parameter, method)


def raise_non_choice(parameter: Any, method: str) -> None:
    from .space import SearchSpaceError

    distribution = parameter.distribution
    kind = "an interval" if parameter.grid_values is None else "a range"
    low, high = distribution.low, distribution.high
    raise SearchSpaceError(
        f"The {method} method needs choice(...) for every parameter, but '{parameter.override_key}' is {kind} "
        f"from {low:g} to {high:g}; write it as choice(...) with the values to try, "
        f"e.g. {parameter.name}=choice({low:g}, {high:g})."
    )


def method_for(settings: dict) -> FixedConfigMethod | None:
    """Return the fixed-configuration method that `hydra.sweeper.sampler` names, or None for a sampler.

    The method keeps `settings` (not a copy) and may adjust it in `prepare`, e.g. NASWOT
    sets the study direction from `naswot.select`.
    """
    if settings["sampler"] == "naswot":
        from .naswot import NaswotMethod

        return NaswotMethod(settings)
    if settings["sampler"] == "oat":
        from .oat import OatMethod

        return OatMethod(settings)
    return None
