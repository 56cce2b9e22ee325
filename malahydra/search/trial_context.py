"""What a training job learns about its trial: pruning callback and result record.

The sweeper adds these overrides to each job of a trial (none contains a secret):

    +trial.number=7 +trial.repeat=0 +trial.study_name=malahydra
    +trial.storage='sqlite:/abs/path/optuna.db' +trial.report=true

`trial.report` is true for the first repeat of a trial when a pruner is configured: that
job reports its per-epoch metric to the study and stops when the pruner says so.
"""

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from malahydra.training.metric_keys import METRIC_KEYS

log = logging.getLogger(__name__)

# File that each job of a search writes into its output directory. The sweeper reads it
# when the launcher returns no result for the job.
RESULT_FILE = "trial_result.json"



def epoch_callback_from_config(cfg: DictConfig) -> Callable[[int, dict], None] | None:
    """Return the per-epoch pruning callback of a search trial, or None outside of one.

    The callback reports the epoch's value of `training.metric` to the study and raises
    `optuna.TrialPruned` when the study's pruner decides to stop the trial.
    """
    trial_cfg = cfg.get("trial") if isinstance(cfg, DictConfig) else None
    if not trial_cfg or not trial_cfg.get("report", False):
        return None
    pruner = _pruner_of_sweep()
    if pruner is None:
        return None

    import optuna

    from .storage import open_storage, reaches_storage

    if not reaches_storage(trial_cfg.storage):
        log.warning("Trial %s cannot report to its in-memory study from this process; pruning is off.",
                    trial_cfg.number)
        return None

    study = optuna.load_study(
        study_name=trial_cfg.study_name, storage=open_storage(trial_cfg.storage), pruner=pruner
    )
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(trial_cfg.number))
    trial = optuna.Trial(study, trial_id)
    metric = cfg.get("training", {}).get("metric", "ldos")
    key = METRIC_KEYS.get(metric, metric)

    def report_epoch(epoch: int, metrics: dict) -> None:
        value = metrics.get(key)
        if value is None or not math.isfinite(float(value)):
            return
        trial.report(float(value), int(epoch))
        if trial.should_prune():
            log.info("Trial %d pruned at epoch %d (%s = %g).", trial.number, epoch, key, value)
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {key} = {value:g}")

    return report_epoch


def _pruner_of_sweep() -> Any:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    sweeper = HydraConfig.get().sweeper
    name = sweeper.get("pruner", "none")
    if name in (None, "none"):
        return None
    from .methods import make_pruner

    return make_pruner(name, sweeper.get("pruner_options") or {})


class ResultRecordingTask:
    """Wrap a Hydra task function so that each job writes its outcome to `RESULT_FILE`.

    Launchers that lose a whole batch when one job dies (submitit raises from `launch`)
    lose no finished result this way: the sweeper reads the file of every job instead.
    """

    def __init__(self, task_function: Callable[[DictConfig], Any]) -> None:
        self.task_function = task_function

    def __call__(self, cfg: DictConfig) -> Any:
        try:
            value = self.task_function(cfg)
        except BaseException as error:
            state = "pruned" if type(error).__name__ == "TrialPruned" else "failed"
            _write_record({"state": state, "reason": f"{type(error).__name__}: {error}",
                           "stops_search": bool(getattr(error, "stops_search", False))})
            raise
        _write_record({"state": "returned", "value": _jsonable(value)})
        return value


def _jsonable(value: Any) -> Any:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return repr(value)
    return number if math.isfinite(number) else repr(number)


def _write_record(record: dict) -> None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    path = Path(HydraConfig.get().runtime.output_dir) / RESULT_FILE
    path.write_text(json.dumps(record))


def read_result_record(job_dir: Path) -> dict | None:
    """Read the outcome a job left in its directory, or None if it left none."""
    try:
        return json.loads((job_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
