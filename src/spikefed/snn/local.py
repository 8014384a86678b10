"""Layer-by-layer view of a :class:`~spikefed.snn.models.SpikingMLP` shared by the local learning rules.

BPTT differentiates the whole network at once. The local rules (:mod:`spikefed.snn.stdp`,
:mod:`spikefed.snn.decolle`, :mod:`spikefed.snn.feedback`) instead update each layer from what that layer sees:
its own input, its own output, and a learning signal that reaches it without crossing the layers above (a fixed
random projection of the output error or of the target, a local read-out, or none at all for STDP). This module
runs one layer of the model at a time and draws the fixed random matrices those rules use.

Every rule writes its update into the parameters' ``.grad`` (like ``loss.backward()``), so the caller's optimizer,
gradient clipping and the federated stages work unchanged; STDP, whose update is not a gradient, writes its weight
change directly and leaves zeros in ``.grad`` (see :mod:`spikefed.snn.stdp`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..seeding import Purpose, torch_generator
from .models import SpikingMLP, time_invariant

#: local.method values that use this module (besides "bptt" and "eprop")
RULE_METHODS = ("stdp", "decolle", "fa", "dfa", "drtp")

#: ``loss_fn(output [T, B, C], hidden spikes, labels) -> scalar``: the task objective of the training loop
LossFn = Callable[[torch.Tensor, list[torch.Tensor], torch.Tensor], torch.Tensor]


def rule_support(model: nn.Module, method: str) -> str | None:
    """``None`` if ``method`` can train ``model``, else the reason (naming what to change)."""
    if method not in RULE_METHODS:
        return f"unknown local rule {method!r}; valid: {', '.join(RULE_METHODS)}"
    if not isinstance(model, SpikingMLP):
        return (f"local.method={method} trains a SpikingMLP layer by layer (model: mlp), got "
                f"{type(model).__name__}")
    if method == "stdp" and len(model.linears) < 2:
        return "local.method=stdp needs at least one hidden layer (model.hidden) for STDP under the read-out"
    return None


def check_rule_support(model: nn.Module, method: str) -> None:
    """``ValueError`` with :func:`rule_support`'s reason."""
    reason = rule_support(model, method)
    if reason is not None:
        raise ValueError(reason)


def num_layers(model: SpikingMLP) -> int:
    """Weight layers of the model (hidden layers + the output layer)."""
    return len(model.linears)


def run_layer(model: SpikingMLP, index: int, h: torch.Tensor) -> torch.Tensor:
    """Layer ``index`` of ``model`` on its input ``h [T, B, n_in]`` from rest: the spikes of a spiking layer, or
    the membrane of the leaky read-out (the output layer of ``readout="membrane"``)."""
    current = time_invariant(model.linears[index], h)
    if index < len(model.neurons):
        return model.neurons[index].run(current).spikes
    assert model.integrator is not None
    mem, _ = model.integrator(current)
    return mem


def fixed_matrix(shape: tuple[int, int], seed: int, layer: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A fixed random matrix with ``N(0, 1/shape[0])`` entries, drawn from the stream ``(seed, LOCAL_RULE, layer)``.

    ``shape[0]`` is the dimension the matrix maps from (the output classes for DFA/DRTP/DECOLLE, the upper layer
    for FA), so a unit-variance signal keeps unit variance. Every client draws the same matrix from the same
    ``seed`` (the config's ``local.rule_seed``): the matrices are part of the model, not of the client."""
    gen = torch_generator(int(seed), Purpose.LOCAL_RULE, index=int(layer))
    return (torch.randn(shape, generator=gen, dtype=torch.float64) / shape[0] ** 0.5).to(dtype)


def zero_missing_grads(model: nn.Module) -> None:
    """Give every trainable parameter a ``.grad`` (zeros where a rule left none), as a full backward would."""
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)


def train_output_layer(model: SpikingMLP, h: torch.Tensor, y: torch.Tensor, hidden: list[torch.Tensor],
                       loss_fn: LossFn) -> tuple[torch.Tensor, torch.Tensor]:
    """The output layer trained by the true gradient of the task loss on its (detached) input ``h``: the
    supervised read-out every local rule shares. Back-propagates into the output layer only; returns
    ``(output, loss)`` (both detached)."""
    out = run_layer(model, num_layers(model) - 1, h.detach())
    loss = loss_fn(out, [s.detach() for s in hidden], y)
    loss.backward()
    return out.detach(), loss.detach()
