"""Search-space parsing: Hydra sweep expressions -> Optuna distributions and grids."""

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra import compose, initialize_config_module
from malahydra.search.methods import make_sampler
from malahydra.search.space import (
    SearchSpaceError,
    build_search_space,
    format_override,
    grid_search_space,
    missing_keys,
    parse_overrides,
    range_values,
)


def compose_with_hydra(overrides: list[str]):
    with initialize_config_module(config_module="malahydra.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def space_of(entries: dict, arguments: tuple = ()):
    sweeps, _ = parse_overrides(entries, list(arguments))
    return build_search_space(sweeps)


def only_distribution(expression: str):
    return space_of({"k": expression})[0].distribution


def test_log_interval_is_log_float():
    assert only_distribution("tag(log, interval(1e-7, 1e-2))") == FloatDistribution(1e-7, 1e-2, log=True)


def test_interval_is_float_even_with_integer_bounds():
    assert only_distribution("interval(10, 100)") == FloatDistribution(10.0, 100.0)


def test_int_tagged_interval_includes_both_bounds():
    assert only_distribution("tag(int, interval(10, 100))") == IntDistribution(10, 100)


def test_range_excludes_stop():
    assert only_distribution("range(10, 101)") == IntDistribution(10, 100)
    assert only_distribution("range(0, 101, 10)") == IntDistribution(0, 100, step=10)
    assert space_of({"k": "range(0, 101, 10)"})[0].grid_values == tuple(range(0, 101, 10))


def test_float_range_excludes_stop():
    assert range_values(0.5, 2.0, 0.5) == [0.5, 1.0, 1.5]


def test_choice_is_categorical():
    parameter = space_of({"model.activations.0": "choice(ReLU, Sigmoid, LeakyReLU)"})[0]
    assert parameter.distribution == CategoricalDistribution(("ReLU", "Sigmoid", "LeakyReLU"))
    assert parameter.name == "model.activations.0"


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid"])
def test_every_sampler_draws_range_without_stop(sampler):
    space = space_of({"k": "range(1, 4)"})
    study = optuna.create_study(sampler=make_sampler(sampler, {}, 0, space))
    drawn = set()
    for _ in range(30):
        trial = study.ask({"k": space[0].distribution})
        drawn.add(trial.params["k"])
        study.tell(trial, 0.0)
    assert drawn == {1, 2, 3}


def test_command_line_sweep_replaces_entry():
    sweeps, fixed = parse_overrides({"x": "interval(0, 1)"}, ["x=choice(5, 6)", "epochs=3"])
    assert build_search_space(sweeps)[0].distribution == CategoricalDistribution((5, 6))
    assert [o.input_line for o in fixed] == ["epochs=3"]


@pytest.mark.parametrize("expression", ["interval(1)", "choice(", "tag(log, interval(0, 1))", "range(5, 1)",
                                        "tag(banana, interval(1, 2))", "choice([1, 2], [3])"])
def test_invalid_expression_rejected(expression):
    with pytest.raises(SearchSpaceError) as error:
        space_of({"k": expression})
    assert "\n" not in str(error.value)
    assert "'k" in str(error.value)


def test_grid_rejects_interval():
    with pytest.raises(SearchSpaceError, match="cannot enumerate 'k'"):
        grid_search_space(space_of({"k": "interval(0, 1)"}))


def test_missing_keys_with_list_index():
    config = OmegaConf.create({"model": {"hidden_widths": [100], "output_activation": None}})
    space = space_of({"model.hidden_widths.0": "range(1, 3)", "model.hidden_widths.1": "range(1, 3)",
                      "model.output_activation": "choice(ReLU)", "+extra": "choice(1)"})
    assert missing_keys(config, space) == ["model.hidden_widths.1"]


@pytest.mark.parametrize("value", [1e-7, 0.1, 3, "ReLU", "it's", True, None, "null", "1e-3"])
def test_format_override_round_trips(value):
    parsed = OverridesParser.create().parse_override(format_override("a.b", value))
    assert parsed.value() == value
    assert type(parsed.value()) is type(value)


@pytest.mark.parametrize("sweep", ["mala_standard", "mala_depth"])
def test_shipped_sweep_composes(sweep):
    cfg = compose_with_hydra([f"sweeps={sweep}", "hyper_opt_method=tpe"])
    space = space_of(OmegaConf.to_container(cfg.hydra.sweeper.params))
    assert missing_keys(cfg, space) == []
    by_name = {p.name: p.distribution for p in space}
    assert by_name["training.learning_rate"] == FloatDistribution(1e-7, 1e-2, log=True)
    assert by_name["model.hidden_widths.0"] == IntDistribution(10, 100)


def test_mala_standard_space():
    cfg = compose_with_hydra(["sweeps=mala_standard"])
    by_name = {p.name: p.distribution for p in space_of(OmegaConf.to_container(cfg.hydra.sweeper.params))}
    assert by_name["model.hidden_widths.1"] == IntDistribution(10, 100)
    for key in ("model.activations.0", "model.activations.1", "model.output_activation"):
        assert by_name[key] == CategoricalDistribution(("ReLU", "Sigmoid"))
    assert list(cfg.model.hidden_widths) == [100, 100]


def test_mala_depth_can_remove_layers():
    cfg = compose_with_hydra(["sweeps=mala_depth"])
    by_name = {p.name: p for p in space_of(OmegaConf.to_container(cfg.hydra.sweeper.params))}
    assert 0 in by_name["model.hidden_widths.2"].grid_values
    assert "LeakyReLU" in by_name["model.activations.0"].distribution.choices


def test_nested_params_entries_flattened():
    nested = {"training": {"learning_rate": "interval(0.1, 1)"}, "model.hidden_widths.0": "range(1, 3)"}
    assert [p.name for p in space_of(nested)] == ["training.learning_rate", "model.hidden_widths.0"]
