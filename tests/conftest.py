"""Shared fixtures: the Be2 data, composed configs, and copies of snapshots to damage."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "Be2"
SNAPSHOTS = [f"Be_snapshot{i}" for i in range(4)]
SNAPSHOT_SUFFIXES = (".in.npy", ".out.npy", ".info.json", ".out")


def be2_data_dir() -> Path | None:
    candidate = Path(os.environ.get("MALAHYDRA_DATA_DIR") or DEFAULT_DATA_DIR)
    return candidate if (candidate / "Be_snapshot0.in.npy").is_file() else None


@pytest.fixture(scope="session")
def be2_dir() -> Path:
    """The Be2 snapshots, read-only; skips when absent unless MALAHYDRA_REQUIRE_DATA=1."""
    path = be2_data_dir()
    if path is None:
        reason = (
            f"Be2 data not found: set MALAHYDRA_DATA_DIR to the folder with Be_snapshot0.in.npy "
            f"(looked in {os.environ.get('MALAHYDRA_DATA_DIR') or DEFAULT_DATA_DIR})"
        )
        if os.environ.get("MALAHYDRA_REQUIRE_DATA") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture
def be2_copy(be2_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the four Be2 snapshots, for tests that damage files."""
    target = tmp_path / "Be2"
    target.mkdir()
    for name in SNAPSHOTS:
        for suffix in SNAPSHOT_SUFFIXES:
            source = be2_dir / f"{name}{suffix}"
            if source.exists():
                shutil.copy(source, target / source.name)
    return target


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose conf/config.yaml as `python train.py OVERRIDES` would, without running it."""
    with initialize_config_module(config_module="malahydra.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


@pytest.fixture
def make_config(be2_dir: Path):
    """Compose a training config on the Be2 data with a few quick defaults and overrides."""

    def make(*overrides: str, data_dir: Path | None = None) -> DictConfig:
        cfg = compose_config([f"data.dir={data_dir or be2_dir}", *overrides])
        with open_dict(cfg):
            cfg.pop("hydra", None)
        return cfg

    return make
