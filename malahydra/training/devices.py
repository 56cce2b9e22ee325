"""Choice of the torch device for one training run.

On a SLURM GPU allocation the scheduler limits CUDA_VISIBLE_DEVICES to the GPUs of the
job, so the first visible GPU is the job's own. When several trials share one node, for
example through Hydra's submitit_local launcher or several search drivers started with
one `mpirun`/`srun`, each process sees every GPU and takes one by its index: the Hydra
job number of the trial, or else the node-local rank of the process, modulo the number of
visible GPUs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from malahydra.errors import ConfigurationError

# Node-local rank variables of Open MPI, MPICH/Intel MPI (PMI), SLURM's srun and torchrun.
LOCAL_RANK_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK")


def local_rank(environ: Mapping[str, str]) -> int | None:
    for name in LOCAL_RANK_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def cuda_index(device_count: int, job_index: int | None, environ: Mapping[str, str]) -> int:
    """Pick the visible GPU for this process: by job index, else by local rank, else 0."""
    if device_count < 1:
        raise ValueError("cuda_index needs at least one visible GPU")
    index = job_index if job_index is not None else local_rank(environ)
    return (index or 0) % device_count


def select_device(
    name: str,
    job_index: int | None = None,
    environ: Mapping[str, str] | None = None,
    device_count: int | None = None,
) -> torch.device:
    """Resolve training.device (auto, cpu, cuda or cuda:N) to a torch.device."""
    environ = os.environ if environ is None else environ
    device_count = torch.cuda.device_count() if device_count is None else device_count
    name = str(name)
    if name == "cpu" or (name == "auto" and device_count == 0):
        return torch.device("cpu")
    if name not in ("auto", "cuda") and not name.startswith("cuda:"):
        raise ConfigurationError(f"Invalid training.device '{name}': use auto, cpu, cuda or cuda:N.")
    if device_count == 0:
        raise ConfigurationError(
            f"training.device={name} but torch sees no CUDA device: use training.device=cpu or auto."
        )
    if name.startswith("cuda:"):
        return torch.device(name)
    return torch.device("cuda", cuda_index(device_count, job_index, environ))
