"""Feed-forward network from per-grid-point descriptors to the LDOS on the energy grid."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from malahydra.errors import ConfigurationError


def make_activation(name: str) -> nn.Module:
    """Instantiate a torch.nn activation by its class name, e.g. 'ReLU' or 'LeakyReLU'."""
    activation_class = getattr(nn, str(name), None)
    if not (isinstance(activation_class, type) and issubclass(activation_class, nn.Module)):
        raise ConfigurationError(
            f"Unknown activation '{name}': use a torch.nn class name such as ReLU, Sigmoid, "
            f"LeakyReLU or Tanh (the names are case-sensitive)."
        )
    return activation_class()


def layer_widths(input_width: int, hidden_widths: Sequence[int], output_width: int) -> list[int]:
    """Return all layer widths; a hidden width of 0 removes that layer."""
    for width in hidden_widths:
        if int(width) < 0:
            raise ConfigurationError(
                f"Invalid hidden width {width} in model.hidden_widths: use a positive width, "
                f"or 0 to remove the layer."
            )
    return [input_width] + [int(w) for w in hidden_widths if int(w) > 0] + [output_width]


def hidden_activations(hidden_widths: Sequence[int], activations: Sequence[str]) -> list[str]:
    """Match activations to the kept hidden layers; a single activation serves every layer."""
    activations = [str(name) for name in activations]
    if len(activations) == 1:
        activations = activations * len(hidden_widths)
    if len(activations) != len(hidden_widths):
        raise ConfigurationError(
            f"model.activations has {len(activations)} entries but model.hidden_widths has "
            f"{len(hidden_widths)}: give one activation, or one per hidden width."
        )
    return [name for width, name in zip(hidden_widths, activations) if int(width) > 0]


class FeedForwardNetwork(nn.Sequential):
    """Linear layers, each hidden one followed by its activation.

    The layers are created in order from input to output, each with torch's default
    initialization, so a seeded torch RNG gives the same weights as any plain
    nn.Sequential of the same shape.
    """

    def __init__(
        self,
        input_width: int,
        output_width: int,
        hidden_widths: Sequence[int],
        activations: Sequence[str],
        output_activation: str | None = None,
    ):
        widths = layer_widths(input_width, hidden_widths, output_width)
        names = hidden_activations(hidden_widths, activations)
        if output_activation not in (None, "", "null", "None"):
            names.append(str(output_activation))

        layers: list[nn.Module] = []
        for index, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if index < len(names):
                layers.append(make_activation(names[index]))
        super().__init__(*layers)
        self.widths = widths


def network_from_config(model_cfg, input_width: int, output_width: int) -> FeedForwardNetwork:
    if model_cfg.get("name", "feedforward") != "feedforward":
        raise ConfigurationError(
            f"Unknown model.name '{model_cfg.name}': the only network type is feedforward."
        )
    return FeedForwardNetwork(
        input_width=input_width,
        output_width=output_width,
        hidden_widths=list(model_cfg.hidden_widths),
        activations=list(model_cfg.activations),
        output_activation=model_cfg.get("output_activation"),
    )


def describe(network: nn.Module) -> str:
    return " -> ".join(
        str(module.out_features) if isinstance(module, nn.Linear) else type(module).__name__
        for module in network
    )

