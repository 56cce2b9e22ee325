"""Every shipped config composes, and the documented keys exist with their defaults."""

from __future__ import annotations

from importlib.resources import files

import pytest

from conftest import compose_config


def _group_options(group: str) -> list[str]:
    folder = files("malahydra.conf").joinpath(group)
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


@pytest.mark.parametrize("group", ["data", "model", "training"])
def test_every_group_option_composes(group):
    options = _group_options(group)
    assert options
    for option in options:
        cfg = compose_config([f"{group}={option}"])
        assert group in cfg


def test_documented_keys_exist():
    cfg = compose_config(
        [
            "data.dir=/somewhere",
            "training.max_epochs=3",
            "training.learning_rate=0.01",
            "training.mini_batch_size=8",
            "training.optimizer=SGD",
            "training.seed=7",
            "model.hidden_widths.0=20",
        ]
    )
    assert cfg.data.dir == "/somewhere"
    assert cfg.training.max_epochs == 3
    assert cfg.training.learning_rate == 0.01
    assert cfg.training.mini_batch_size == 8
    assert cfg.training.optimizer == "SGD"
    assert cfg.training.seed == 7
    assert cfg.model.hidden_widths[0] == 20


def test_data_dir_defaults_to_environment(monkeypatch):
    monkeypatch.setenv("MALAHYDRA_DATA_DIR", "/data/from/environment")
    assert compose_config().data.dir == "/data/from/environment"


def test_be2_three_train_split():
    data = compose_config(["data=be2_three_train"]).data
    assert list(data.training) == ["Be_snapshot0", "Be_snapshot2", "Be_snapshot3"]
    assert list(data.validation) == ["Be_snapshot1"]
