"""Choice of the GPU per trial, checked without a GPU by giving the device count."""

from __future__ import annotations

import pytest
import torch

from malahydra.errors import ConfigurationError
from malahydra.training.devices import select_device


def test_cpu_when_no_gpu():
    assert select_device("auto", device_count=0, environ={}) == torch.device("cpu")


def test_explicit_cpu_with_gpus():
    assert select_device("cpu", device_count=4, environ={}) == torch.device("cpu")


def test_slurm_gpu_is_first_visible():
    # SLURM hides the other GPUs, so the one visible GPU is the job's.
    environ = {"CUDA_VISIBLE_DEVICES": "3", "SLURM_LOCALID": "0"}
    assert select_device("auto", job_index=5, environ=environ, device_count=1) == torch.device("cuda", 0)


@pytest.mark.parametrize("job_index, expected", [(0, 0), (1, 1), (2, 2), (3, 0), (7, 1)])
def test_shared_node_spreads_by_job_index(job_index, expected):
    assert select_device("auto", job_index=job_index, environ={}, device_count=3) == torch.device("cuda", expected)


@pytest.mark.parametrize("variable", ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"])
def test_driver_rank_picks_gpu(variable):
    assert select_device("cuda", environ={variable: "5"}, device_count=4) == torch.device("cuda", 1)


def test_job_index_wins_over_rank():
    assert select_device("auto", job_index=2, environ={"SLURM_LOCALID": "1"}, device_count=4) == torch.device("cuda", 2)


def test_explicit_cuda_index_kept():
    assert select_device("cuda:1", job_index=0, environ={}, device_count=2) == torch.device("cuda", 1)


def test_cuda_without_gpu_rejected():
    with pytest.raises(ConfigurationError, match="torch sees no CUDA device: use training.device=cpu or auto"):
        select_device("cuda", device_count=0, environ={})


def test_invalid_device_name_rejected():
    with pytest.raises(ConfigurationError, match="Invalid training.device 'gpu'"):
        select_device("gpu", device_count=1, environ={})
