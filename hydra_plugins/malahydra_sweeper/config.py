"""Structured config of the malahydra sweeper, `hydra/sweeper=malahydra`.

Hydra imports every module under `hydra_plugins` when it scans for plugins, so this
module and `malahydra_sweeper.py` import nothing heavier than Hydra itself; Optuna is
imported only when a sweep starts.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class StorageConf:
    # sqlite, journal, memory, or url (a database URL read from the environment variable
    # `url_env`, so that no password is written into the config or the sweep directory).
    driver: str = "sqlite"
    # File of the sqlite database or the journal; relative paths are taken from the
    # directory the driver was started in.
    path: Optional[str] = "${hydra.sweep.dir}/optuna.db"
    url_env: Optional[str] = None


@dataclass
class NaswotConf:
    # largest (MALA's choice) or smallest: which NASWOT score is best. It sets the study
    # direction; hydra.sweeper.direction stays the direction of the train_top_k trainings.
    select: str = "largest"
    # Candidates scored by one job, so that job start-up (imports, data loading) is shared.
    candidates_per_job: int = 1024
    # Train this many of the best-scoring candidates afterwards (0: none).
    train_top_k: int = 0


@dataclass
class OatConf:
    # Train the predicted optimum of the main-effect analysis once after all rows.
    confirm: bool = True


@dataclass
class MalahydraSweeperConf:
    _target_: str = "hydra_plugins.malahydra_sweeper.malahydra_sweeper.MalahydraSweeper"

    # tpe, random or grid; `sampler_options` go to the Optuna sampler's constructor.
    # naswot and oat select the methods of fixed configurations with the settings below.
    sampler: str = "tpe"
    sampler_options: Dict[str, Any] = field(default_factory=dict)
    # none, median or hyperband; `pruner_options` go to the Optuna pruner's constructor.
    pruner: str = "none"
    pruner_options: Dict[str, Any] = field(default_factory=dict)

    direction: str = "minimize"
    # Validation metric the jobs optimize (ldos, band_energy or fermi_energy), passed to
    # each job as `<metric_key>=<metric>`; null keeps the job's own setting.
    metric: Optional[str] = None
    metric_key: str = "training.metric"

    study_name: str = "malahydra"
    # Draw the PNG plots into the sweep directory when the sweep ends (about 1.5 s, most
    # of it importing matplotlib). `malahydra report SWEEP_DIR` draws them at any time.
    plots: bool = True
    # Budget: the number of COMPLETE trials the study should hold, counted in the storage
    # over all drivers, so a re-run of the same command continues up to the same budget.
    # null means the grid size for the grid sampler and is an error otherwise.
    n_trials: Optional[int] = 20
    # Trials launched together in one batch (the launcher may run them in parallel).
    n_jobs: int = 1
    seed: Optional[int] = None

    # Trainings per trial with distinct seeds, combined by mean, mean_std (mean plus the
    # standard deviation) or median. The seeds go to each job as `<seed_key>=<seed>`.
    number_training_per_trial: int = 1
    trial_ensemble_evaluation: str = "mean"
    seed_key: Optional[str] = "training.seed"

    # The sweep stops once the number of FAIL trials exceeds this fraction of n_trials.
    max_failure_rate: float = 0.5
    # Treat every RUNNING trial of the study as left behind by a killed driver and run it
    # again. Without this, only RUNNING trials of dead driver processes on this host are.
    reclaim_running_trials: bool = False

    # Liveness of trials when several drivers share the study (docs/distributed.md). The
    # driver records a heartbeat of each running trial every heartbeat_interval seconds. A
    # RUNNING trial without one for grace_period seconds, whose driver is not a live process
    # on this host, is marked FAIL and run again with the same parameters in the same
    # directory, at most max_retries times per configuration.
    heartbeat_interval: float = 30.0
    grace_period: float = 120.0
    max_retries: int = 3
    # Seconds each driver waits per rank (OMPI_COMM_WORLD_RANK, PMI_RANK, SLURM_PROCID or
    # RANK) before opening the study, to spread the start of many drivers.
    wait_time: float = 0.0

    storage: StorageConf = field(default_factory=StorageConf)
    naswot: NaswotConf = field(default_factory=NaswotConf)
    oat: OatConf = field(default_factory=OatConf)
    # Search space: config key -> sweep expression (choice, range, interval, tag(log, ...)).
    params: Dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="malahydra", node=MalahydraSweeperConf, provider="malahydra"
)
