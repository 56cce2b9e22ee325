"""One optimizer step on a mini-batch with the MSE loss, as cheap as possible.

For a mini-batch of 40 points the matrix products are tiny, so the cost of a step is
mostly per-operation overhead: building the autograd graph, zeroing gradients, and an
optimizer that loops over parameters. `ExplicitMLPStep` writes the backward pass of a
feed-forward network by hand, into preallocated gradient buffers, and uses a fused
optimizer. It computes the same gradients as autograd (bit for bit for ReLU networks on
the CPU, otherwise up to float32 round-off). `AutogradStep` serves any other network.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# d(activation)/d(input), written with the pre-activation z and the output a.
_DERIVATIVES: dict[type, Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    nn.ReLU: lambda module, z, a: z > 0,
    nn.Sigmoid: lambda module, z, a: a * (1.0 - a),
    nn.Tanh: lambda module, z, a: 1.0 - a * a,
    nn.LeakyReLU: lambda module, z, a: torch.where(z > 0, 1.0, module.negative_slope),
    nn.Identity: lambda module, z, a: torch.ones_like(z),
}


def explicit_layers(network: nn.Module) -> list[tuple[nn.Linear, nn.Module | None]] | None:
    """Split a Sequential into (Linear, activation or None) pairs, or None if not possible."""
    if not isinstance(network, nn.Sequential):
        return None
    layers: list[tuple[nn.Linear, nn.Module | None]] = []
    for module in network:
        if isinstance(module, nn.Linear) and module.bias is not None:
            layers.append((module, None))
        elif type(module) in _DERIVATIVES and layers and layers[-1][1] is None:
            layers[-1] = (layers[-1][0], module)
        else:
            return None
    return layers or None


class AutogradStep:
    def __init__(self, network: nn.Module, optimizer: torch.optim.Optimizer):
        self.network = network
        self.optimizer = optimizer

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(self.network(inputs), targets)
        loss.backward()
        self.optimizer.step()


class DirectFusedAdam:
    """Run a fused torch.optim.Adam's kernel without the optimizer's Python wrapper.

    For four parameter tensors the wrapper (state look-ups, step counting, hooks) costs
    about twice as much as the kernel. The kernel works on the optimizer's own state
    tensors, so `optimizer.state_dict()` stays the checkpoint of record. The first step
    in a process goes through `optimizer.step()`, which creates that state; load a
    state dict only before it. Any optimizer this cannot serve exactly (other settings,
    a torch without `torch._fused_adam_`) keeps using `optimizer.step()`.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.enabled = self.supports(optimizer)
        self.tensors: dict[str, list[torch.Tensor]] | None = None

    @staticmethod
    def supports(optimizer: torch.optim.Optimizer) -> bool:
        if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
            return False
        group = optimizer.param_groups[0]
        plain = not any(group.get(flag) for flag in ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay"))
        return bool(group.get("fused")) and plain and hasattr(torch, "_fused_adam_") and not torch.is_tensor(group["lr"])

    def step(self) -> None:
        if not self.enabled or self.tensors is None:
            self.optimizer.step()
            if self.enabled:
                self._collect_state()
            return

        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        torch._foreach_add_(self.tensors["steps"], 1)
        try:
            torch._fused_adam_(
                self.tensors["params"], self.tensors["grads"], self.tensors["exp_avgs"], self.tensors["exp_avg_sqs"],
                [], self.tensors["steps"], lr=group["lr"], beta1=beta1, beta2=beta2,
                weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False, maximize=False,
            )
        except (TypeError, RuntimeError):
            # A torch whose private kernel takes other arguments: undo the count, use the optimizer.
            torch._foreach_sub_(self.tensors["steps"], 1)
            self.enabled = False
            self.optimizer.step()

    def _collect_state(self) -> None:
        params = self.optimizer.param_groups[0]["params"]
        state = [self.optimizer.state[p] for p in params]
        self.tensors = {
            "params": list(params),
            "grads": [p.grad for p in params],
            "exp_avgs": [s["exp_avg"] for s in state],
            "exp_avg_sqs": [s["exp_avg_sq"] for s in state],
            "steps": [s["step"] for s in state],
        }


class ExplicitMLPStep:
    def __init__(self, layers: list[tuple[nn.Linear, nn.Module | None]], optimizer: torch.optim.Optimizer):
        self.layers = layers
        self.optimizer = optimizer
        # The gradient buffers are allocated once and written in place, so the direct
        # Adam path can keep references to them.
        for linear, _ in layers:
            linear.weight.grad = torch.zeros_like(linear.weight)
            linear.bias.grad = torch.zeros_like(linear.bias)
        self.adam = DirectFusedAdam(optimizer)

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        # Forward pass, keeping each layer's input and pre-activation.
        layer_inputs, pre_activations, outputs = [], [], []
        hidden = inputs
        for linear, activation in self.layers:
            layer_inputs.append(hidden)
            z = torch.addmm(linear.bias, hidden, linear.weight.t())
            hidden = z if activation is None else activation(z)
            pre_activations.append(z)
            outputs.append(hidden)

        # d(mean squared error)/d(output).
        gradient = (hidden - targets) * (2.0 / hidden.numel())

        for index in range(len(self.layers) - 1, -1, -1):
            linear, activation = self.layers[index]
            if activation is not None:
                gradient = gradient * _DERIVATIVES[type(activation)](
                    activation, pre_activations[index], outputs[index]
                )
            torch.mm(gradient.t(), layer_inputs[index], out=linear.weight.grad)
            torch.sum(gradient, dim=0, out=linear.bias.grad)
            if index > 0:
                gradient = torch.mm(gradient, linear.weight)

        self.adam.step()


def make_optimizer(parameters, name: str, learning_rate: float, momentum: float, weight_decay: float, device: torch.device):
    """Build Adam or SGD, fused where the device supports it (CPU and CUDA in torch >= 2.4)."""
    from malahydra.errors import ConfigurationError

    name_lower = str(name).lower()
    if name_lower == "adam":
        optimizer_class, extra = torch.optim.Adam, {}
    elif name_lower == "sgd":
        optimizer_class, extra = torch.optim.SGD, {"momentum": float(momentum)}
    else:
        raise ConfigurationError(f"Unknown training.optimizer '{name}': use Adam or SGD.")
    parameters = list(parameters)
    try:
        return optimizer_class(parameters, lr=learning_rate, weight_decay=weight_decay, fused=True, **extra)
    except (RuntimeError, TypeError, ValueError):
        # Older torch releases or devices without a fused kernel.
        return optimizer_class(parameters, lr=learning_rate, weight_decay=weight_decay, **extra)


def make_training_step(network: nn.Module, optimizer: torch.optim.Optimizer):
    layers = explicit_layers(network)
    if layers is None:
        return AutogradStep(network, optimizer)
    return ExplicitMLPStep(layers, optimizer)
