"""Running trials as cluster jobs: SLURM job states, failure reasons, job-side setup.

The Hydra launchers `hydra/launcher=malahydra_submitit_slurm` and
`malahydra_submitit_local` (in hydra_plugins/malahydra_launcher) are built on these
modules; the presets in conf/cluster/ select them. Nothing here imports torch or
submitit at import time, because Hydra's plugin scan imports the launcher module.
"""

from .failures import ClusterJobError, SlurmJobError
from .job_side import JOB_INFO_FILE, read_job_info

__all__ = ["JOB_INFO_FILE", "ClusterJobError", "SlurmJobError", "read_job_info"]
