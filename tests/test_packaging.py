"""The wheel carries the configs, the ready sweeps and the Hydra plugin package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    target = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(target), str(REPO)],
        check=True,
        timeout=600,
    )
    (path,) = target.glob("malahydra-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


@pytest.fixture(scope="module")
def wheel_names(wheel) -> set[str]:
    return set(wheel.namelist())


def test_wheel_contains_configs(wheel_names):
    for config in sorted(REPO.glob("conf/**/*.yaml")):
        name = "malahydra/conf/" + config.relative_to(REPO / "conf").as_posix()
        assert name in wheel_names, name


def test_wheel_contains_sweeps(wheel_names):
    for sweep in sorted(REPO.glob("sweeps/*.yaml")):
        assert f"malahydra/conf/sweeps/{sweep.name}" in wheel_names, sweep.name


def test_wheel_contains_sweeper_plugin(wheel_names):
    assert "hydra_plugins/malahydra_sweeper/__init__.py" in wheel_names
    assert not any(name == "hydra_plugins/__init__.py" for name in wheel_names)


def test_wheel_has_console_script(wheel, wheel_names):
    (entry_points,) = [name for name in wheel_names if name.endswith("entry_points.txt")]
    assert "malahydra = malahydra.cli:main" in wheel.read(entry_points).decode()
