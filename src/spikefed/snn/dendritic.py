"""Two-compartment (dendrite + soma) spiking neuron with a dendritic spike and its own surrogate (seed 002).

Seed 002 ("multi-compartment models"): the dendrite receives the input and computes locally, then passes the
signal to the soma, which decides whether the neuron fires; a nonlinear dendrite (a dendritic spike) needs a
surrogate gradient at that local nonlinearity too. Discrete model (``x[t]`` the weighted input)::

    d[t]   = beta_d d[t-1] + x[t]                          dendritic potential (leaky)
    q[t]   = H(d[t] - theta_d)                             dendritic spike (plateau), surrogate ``dendritic_slope``
    i[t]   = kappa d[t] + g_d q[t]                         current into the soma (passive coupling + plateau)
    v[t]   = beta v[t-1] + i[t] - s[t-1] thr               somatic LIF, reset by subtraction
    s[t]   = H(v[t] - thr)                                 somatic spike, surrogate ``slope``

Backward: ``dL/dx`` reaches the input through both paths, the passive one (``kappa``) and the dendritic spike,
whose Heaviside derivative is replaced by the surrogate ``sigma_d'(d - theta_d)``. The dendrite is a linear
low-pass and the soma a LIF, so both run in the fused kernels (one call each for all T steps).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from ..manifold import check_open_interval
from .kernels import lif_fused, lowpass
from .neurons import LIF, NeuronOutput, check_sequence, check_step
from .surrogate import get_surrogate


class DendriticState(NamedTuple):
    """Dendritic potential ``d`` and somatic membrane ``v``."""

    d: torch.Tensor
    v: torch.Tensor


class TwoCompartment(LIF):
    """Dendrite + soma layer (equations in the module docstring).

    Args:
        features: feature shape. ``beta``: somatic decay; ``beta_d``: dendritic decay in (0, 1);
        ``theta_d``: dendritic spike threshold (> 0); ``kappa``: passive coupling (>= 0); ``g_d``: plateau
        current of a dendritic spike (>= 0); ``dendritic_surrogate`` / ``dendritic_slope``: the dendritic
        spike's surrogate (default: the somatic one). Other LIF options apply to the soma; ``reset`` must be
        ``subtract`` and no refractory period.
    """

    def __init__(self, features: int | tuple[int, ...] | None = None, beta_d: float = 0.8, theta_d: float = 1.0,
                 kappa: float = 0.5, g_d: float = 1.0, dendritic_surrogate: str | None = None,
                 dendritic_slope: float | None = None, **kwargs: Any) -> None:
        if kwargs.get("refractory"):
            raise ValueError("the two-compartment neuron does not support a refractory period")
        super().__init__(features, **kwargs)
        check_open_interval("beta_d (dendritic decay)", beta_d, 0.0, 1.0)
        check_open_interval("theta_d (dendritic threshold)", theta_d, 0.0, float("inf"))
        if not (kappa >= 0 and g_d >= 0):
            raise ValueError(f"kappa and g_d must be >= 0, got kappa={kappa!r}, g_d={g_d!r}")
        self.beta_d, self.theta_d, self.kappa, self.g_d = float(beta_d), float(theta_d), float(kappa), float(g_d)
        if dendritic_surrogate is None:
            self.dendritic_surrogate = get_surrogate(self.surrogate, dendritic_slope)
        else:
            self.dendritic_surrogate = get_surrogate(dendritic_surrogate, dendritic_slope)

    def init_state(self, batch_size: int, *, dtype: torch.dtype = torch.float32,  # type: ignore[override]
                   device: torch.device | str | None = None) -> DendriticState:
        v = super().init_state(batch_size, dtype=dtype, device=device).v
        return DendriticState(v, v.clone())

    def soma_current(self, d: torch.Tensor) -> torch.Tensor:
        """``kappa d + g_d H(d - theta_d)`` (the dendritic spike with its surrogate)."""
        return self.kappa * d + self.g_d * self.dendritic_surrogate(d - self.theta_d)

    def run(self, x: torch.Tensor, state: DendriticState | None = None) -> NeuronOutput:  # type: ignore[override]
        check_sequence(x, self.features)
        d0 = None if state is None else state.d
        v0 = None if state is None else state.v
        d = lowpass(x, self.beta_d, d0)
        spikes, mem = lif_fused(self.soma_current(d), v0, self.beta_value(), self.threshold_value(),
                                self.reset_value, self.reset, self.detach_reset,  # type: ignore[arg-type]
                                self.surrogate)
        return NeuronOutput(self._out(spikes), mem, DendriticState(d[-1], mem[-1]))

    def forward(self, x: torch.Tensor, state: DendriticState | None = None):  # type: ignore[override]
        out = self.run(x, state)
        return out.spikes, out.state

    def step(self, x: torch.Tensor, state: DendriticState | None = None):  # type: ignore[override]
        check_step(x, self.features)
        out = self.run(x.unsqueeze(0), state)
        return out.spikes[0], out.state

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, beta_d={self.beta_d}, theta_d={self.theta_d}, kappa={self.kappa}, "
                f"g_d={self.g_d}")
