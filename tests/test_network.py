"""The feed-forward network and the hand-written training step."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from malahydra.errors import ConfigurationError
from malahydra.model.network import FeedForwardNetwork, describe
from malahydra.training.step import AutogradStep, ExplicitMLPStep, explicit_layers, make_training_step


def test_zero_width_removes_layer():
    network = FeedForwardNetwork(91, 11, hidden_widths=[100, 0, 50], activations=["ReLU", "Sigmoid", "Tanh"])
    assert network.widths == [91, 100, 50, 11]
    assert describe(network) == "100 -> ReLU -> 50 -> Tanh -> 11"


def test_single_activation_serves_all_layers():
    network = FeedForwardNetwork(4, 2, hidden_widths=[8, 8], activations=["LeakyReLU"])
    assert describe(network) == "8 -> LeakyReLU -> 8 -> LeakyReLU -> 2"


def test_output_activation_switch():
    linear_output = FeedForwardNetwork(4, 2, hidden_widths=[8], activations=["ReLU"])
    activated = FeedForwardNetwork(4, 2, hidden_widths=[8], activations=["ReLU"], output_activation="Sigmoid")
    assert isinstance(linear_output[-1], nn.Linear)
    assert isinstance(activated[-1], nn.Sigmoid)


def test_any_torch_activation_by_name():
    network = FeedForwardNetwork(4, 2, hidden_widths=[8], activations=["GELU"])
    assert isinstance(network[1], nn.GELU)


def test_unknown_activation_named():
    with pytest.raises(ConfigurationError, match="Unknown activation 'Relu'"):
        FeedForwardNetwork(4, 2, hidden_widths=[8], activations=["Relu"])


def test_activation_count_mismatch_named():
    with pytest.raises(ConfigurationError, match="model.activations has 2 entries but model.hidden_widths has 3"):
        FeedForwardNetwork(4, 2, hidden_widths=[8, 8, 8], activations=["ReLU", "Tanh"])


def test_negative_width_rejected():
    with pytest.raises(ConfigurationError, match="Invalid hidden width -3"):
        FeedForwardNetwork(4, 2, hidden_widths=[-3], activations=["ReLU"])


def test_same_seed_same_weights_as_plain_sequential():
    torch.manual_seed(1234)
    ours = FeedForwardNetwork(91, 11, hidden_widths=[100, 100], activations=["ReLU", "Sigmoid"], output_activation="ReLU")
    torch.manual_seed(1234)
    plain = nn.Sequential(nn.Linear(91, 100), nn.ReLU(), nn.Linear(100, 100), nn.Sigmoid(), nn.Linear(100, 11), nn.ReLU())
    for mine, theirs in zip(ours.parameters(), plain.parameters()):
        assert torch.equal(mine, theirs)


def _train_both(activations, output_activation=None, steps=30):
    torch.manual_seed(0)
    network = FeedForwardNetwork(12, 5, hidden_widths=[16, 9], activations=activations, output_activation=output_activation)
    twin = copy.deepcopy(network)
    explicit = ExplicitMLPStep(explicit_layers(network), torch.optim.Adam(network.parameters(), lr=1e-2))
    autograd = AutogradStep(twin, torch.optim.Adam(twin.parameters(), lr=1e-2))
    generator = torch.Generator().manual_seed(3)
    for _ in range(steps):
        inputs = torch.randn(40, 12, generator=generator)
        targets = torch.rand(40, 5, generator=generator)
        explicit(inputs, targets)
        autograd(inputs, targets)
    return network, twin


def test_explicit_step_bitwise_for_relu():
    network, twin = _train_both(["ReLU"])
    for mine, reference in zip(network.parameters(), twin.parameters()):
        assert torch.equal(mine, reference)


@pytest.mark.parametrize("activations, output", [(["Sigmoid"], None), (["Tanh", "LeakyReLU"], "Sigmoid"), (["Identity"], "ReLU")])
def test_explicit_step_matches_autograd(activations, output):
    network, twin = _train_both(activations, output)
    for mine, reference in zip(network.parameters(), twin.parameters()):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6)


def test_unsupported_activation_uses_autograd():
    network = FeedForwardNetwork(4, 2, hidden_widths=[8], activations=["GELU"])
    step = make_training_step(network, torch.optim.Adam(network.parameters()))
    assert isinstance(step, AutogradStep)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_direct_fused_adam_equals_optimizer_step(weight_decay):
    torch.manual_seed(0)
    network = FeedForwardNetwork(12, 5, hidden_widths=[16], activations=["ReLU"])
    twin = copy.deepcopy(network)
    direct = ExplicitMLPStep(explicit_layers(network), torch.optim.Adam(network.parameters(), lr=1e-2, weight_decay=weight_decay, fused=True))
    reference_optimizer = torch.optim.Adam(twin.parameters(), lr=1e-2, weight_decay=weight_decay, fused=True)
    reference = AutogradStep(twin, reference_optimizer)
    generator = torch.Generator().manual_seed(3)
    for index in range(20):
        if index == 10:  # as ReduceLROnPlateau does
            direct.optimizer.param_groups[0]["lr"] = reference_optimizer.param_groups[0]["lr"] = 1e-3
        inputs = torch.randn(40, 12, generator=generator)
        targets = torch.rand(40, 5, generator=generator)
        direct(inputs, targets)
        reference(inputs, targets)
    assert direct.adam.enabled
    assert direct.adam.tensors is not None
    for mine, theirs in zip(network.parameters(), twin.parameters()):
        assert torch.equal(mine, theirs)
    assert direct.optimizer.state_dict()["state"][0]["step"].item() == 20
