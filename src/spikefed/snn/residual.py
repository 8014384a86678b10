"""Spiking MLP with residual blocks, threshold batch normalisation and time-fixed dropout.

Hidden layer ``l`` (input spikes ``s_{l-1}``, for ``l = 1`` the encoded input) computes::

    c_l = N_l(W_l s_{l-1} + b_l) + [residual and width_l == width_{l-1} and l > 1] * s_{l-1}
    s_l = D_l(neuron_l(c_l))

``N_l`` is :class:`~spikefed.snn.normalization.ThresholdBatchNorm` (``norm="tdbn"``) or the identity, ``D_l`` is
:class:`~spikefed.snn.dropout.TimeDropout` (``dropout > 0``) or the identity. The residual is an identity
shortcut of the previous layer's spikes added to the input current (before the neuron, so the block still emits
binary spikes); layers whose width differs from the previous one have no shortcut. The output layer is
``W s_L + b`` into a spiking neuron or a leaky integrator, as in :class:`~spikefed.snn.models.SpikingMLP`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .dropout import TimeDropout
from .models import READOUTS, ModelOutput, init_linear, time_invariant
from .neurons import LeakyIntegrator, check_sequence, make_neuron
from .normalization import ThresholdBatchNorm

NORMS = ("none", "tdbn")


class ResidualSpikingMLP(nn.Module):
    """Spiking MLP with optional tdBN, time-fixed dropout and residual shortcuts (module docstring)."""

    def __init__(self, sizes: Sequence[int], neuron: str = "lif", readout: str = "spikes",
                 generator: torch.Generator | None = None, norm: str = "none", dropout: float = 0.0,
                 residual: bool = False, dropout_seed: int = 0, norm_alpha: float = 1.0,
                 **neuron_kwargs: Any) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must list >= 2 positive layer widths [in, hidden..., out], got {sizes}")
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; valid: {', '.join(READOUTS)}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
        self.sizes, self.readout, self.norm, self.residual = sizes, readout, norm, bool(residual)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        init_linear(self.linears, gen)  # type: ignore[arg-type]
        hidden = sizes[1:-1]
        threshold = float(neuron_kwargs.get("threshold", 1.0))
        self.norms = nn.ModuleList(ThresholdBatchNorm(h, threshold, norm_alpha) if norm == "tdbn" else nn.Identity()
                                   for h in hidden)
        self.dropouts = nn.ModuleList(TimeDropout(dropout, dropout_seed + i) for i in range(len(hidden)))
        kw = dict(neuron_kwargs)
        if neuron in ("rlif", "ralif"):
            kw["generator"] = gen
        n_spiking = len(sizes) - 1 if readout == "spikes" else len(sizes) - 2
        self.neurons = nn.ModuleList(make_neuron(neuron, sizes[i + 1], **kw) for i in range(n_spiking))
        beta = float(neuron_kwargs.get("beta", 0.9))
        self.integrator = LeakyIntegrator(sizes[-1], beta=beta) if readout == "membrane" else None

    @property
    def in_features(self) -> int:
        return self.sizes[0]

    def forward(self, x: torch.Tensor, state: Sequence[Any] | None = None) -> ModelOutput:
        check_sequence(x, (self.sizes[0],))
        n_state = len(self.neurons) + (1 if self.integrator is not None else 0)
        states = list(state) if state is not None else [None] * n_state
        if len(states) != n_state:
            raise ValueError(f"state must have one entry per stateful layer ({n_state}), got {len(states)}")
        hidden: list[torch.Tensor] = []
        new_state: list[Any] = []
        h = x
        n_hidden = len(self.sizes) - 2
        for i in range(n_hidden):
            current = self.norms[i](time_invariant(self.linears[i], h))
            if self.residual and i > 0 and self.sizes[i] == self.sizes[i + 1]:
                current = current + h
            out = self.neurons[i].run(current, states[i])  # type: ignore[operator]
            new_state.append(out.state)
            h = self.dropouts[i](out.spikes)
            hidden.append(h)
        logits = time_invariant(self.linears[-1], h)
        if self.integrator is not None:
            mem, last = self.integrator(logits, states[-1])
            return ModelOutput(mem, mem, hidden, new_state + [last])
        out = self.neurons[-1].run(logits, states[-1])  # type: ignore[operator]
        return ModelOutput(out.spikes, out.membrane, hidden + [out.spikes], new_state + [out.state])
