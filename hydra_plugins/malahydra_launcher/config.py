"""Structured configs of `hydra/launcher=malahydra_submitit_slurm` and `malahydra_submitit_local`.

Hydra imports every module under `hydra_plugins` when it scans for plugins, so this
module imports only Hydra and the hydra-submitit-launcher configs. submitit is imported
when a launch starts. The fields of hydra-submitit-launcher (partition, timeout_min,
cpus_per_task, gpus_per_node, account, qos, setup, ...) keep their meaning; the ones
added here control how the launcher waits for its jobs.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf


@dataclass
class MalahydraSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.malahydra_launcher.launcher.MalahydraSlurmLauncher"

    # Requeues after a time limit; preemptions do not count against it. The training
    # resumes from its checkpoint, so requeuing is safe.
    max_num_timeout: int = 3
    # Seconds between two looks at the result files and at `scontrol show job`.
    poll_interval_s: float = 3.0
    # Seconds a job may be in a terminal SLURM state before its missing result file counts
    # as a failure, because a shared filesystem can show the file late.
    result_grace_s: float = 10.0
    # After an interrupt, seconds to wait for the cancelled jobs to leave the queue.
    cancel_wait_s: float = 60.0


@dataclass
class MalahydraLocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.malahydra_launcher.launcher.MalahydraLocalLauncher"

    poll_interval_s: float = 1.0
    result_grace_s: float = 0.0
    cancel_wait_s: float = 30.0


ConfigStore.instance().store(
    group="hydra/launcher", name="malahydra_submitit_slurm", node=MalahydraSlurmConf(), provider="malahydra"
)
ConfigStore.instance().store(
    group="hydra/launcher", name="malahydra_submitit_local", node=MalahydraLocalConf(), provider="malahydra"
)
