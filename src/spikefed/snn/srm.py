"""Spike-response model SRM0 (Gerstner): the membrane is a sum of kernels, not an ODE state.

For one neuron with input synapses ``j`` (weights ``w_j``, presynaptic spike times ``t_j^f``) and its own past
spikes ``t^f``::

    u(t) = sum_j w_j sum_f eps(t - t_j^f) + sum_f eta(t - t^f),     s(t) = H(u(t) - thr)

In a layer the weighted input ``x[t] = sum_j w_j s_j[t]`` comes from the linear layer before it, so in discrete
time (``k`` in steps)::

    u[t] = sum_{k>=0} eps[k] x[t-k] + sum_{k>=1} eta[k] s[t-k]
    eps[k] = (rho_m^k - rho_s^k) / eps_max,   rho_m = exp(-1/tau_m), rho_s = exp(-1/tau_s)   (tau_m > tau_s)
    eta[k] = -eta0 * rho_r^k,                 rho_r = exp(-1/tau_r)

``eps`` is the double-exponential postsynaptic potential, normalised to peak 1 (``eps[0] = 0``: an input is felt
from the next step); ``eta`` the after-spike (refractory) kernel, ``eta0 = thr`` by default. Both are sums of
exponentials, so the infinite convolutions are computed exactly by first-order filters: ``a[t] = rho_m a[t-1] +
x[t]``, ``b[t] = rho_s b[t-1] + x[t]``, ``psp[t] = (rho_m a[t-1] - rho_s b[t-1]) / eps_max``, and the
refractory sum ``r[t] = rho_r (r[t-1] - eta0 s[t-1])``. The spike uses the surrogate gradient; the refractory
term is detached with ``detach_reset`` (the default), like the LIF reset.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from .kernels import lowpass
from .neurons import LIF, NeuronOutput, check_sequence, check_step


class SRMState(NamedTuple):
    """Filter states ``a`` (tau_m), ``b`` (tau_s) of the input, refractory sum ``r`` and the last spikes."""

    a: torch.Tensor
    b: torch.Tensor
    r: torch.Tensor
    spikes: torch.Tensor


def eps_peak(tau_m: float, tau_s: float) -> float:
    """``max_k (rho_m^k - rho_s^k)`` over integer ``k >= 0`` (the normaliser of the PSP kernel)."""
    rho_m, rho_s = math.exp(-1.0 / tau_m), math.exp(-1.0 / tau_s)
    k_star = math.log(math.log(rho_s) / math.log(rho_m)) / (math.log(rho_m) - math.log(rho_s))
    return max(rho_m**k - rho_s**k for k in (max(math.floor(k_star), 1), math.ceil(k_star)))


def srm_kernels(length: int, tau_m: float, tau_s: float, tau_r: float, eta0: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels ``eps[0..length-1]`` and ``eta[0..length-1]`` (``eta[0] = 0``) as float64 tensors."""
    k = torch.arange(length, dtype=torch.float64)
    eps = (math.exp(-1.0 / tau_m) ** k - math.exp(-1.0 / tau_s) ** k) / eps_peak(tau_m, tau_s)
    eta = -eta0 * math.exp(-1.0 / tau_r) ** k
    eta[0] = 0.0
    return eps, eta


class SRM(LIF):
    """SRM0 layer (equations in the module docstring).

    Args:
        features: feature shape. ``tau_m > tau_s > 0``: PSP time constants (steps); ``tau_r > 0``: refractory
        time constant; ``eta0``: refractory amplitude (``None``: the threshold). ``threshold``, ``surrogate``,
        ``slope``, ``detach_reset`` as for LIF; ``beta``/``reset`` are accepted for ``make_neuron`` but unused.
    """

    def __init__(self, features: int | tuple[int, ...] | None = None, tau_m: float = 10.0, tau_s: float = 2.5,
                 tau_r: float = 5.0, eta0: float | None = None, **kwargs: Any) -> None:
        for name in ("learn_beta", "learn_reset", "graded"):
            if kwargs.get(name):
                raise ValueError(f"SRM neurons do not support {name}=True")
        if kwargs.get("refractory"):
            raise ValueError("SRM neurons model refractoriness with the eta kernel (tau_r, eta0), not refractory=")
        super().__init__(features, **kwargs)
        if not (tau_m > tau_s > 0 and tau_r > 0):
            raise ValueError(f"SRM needs tau_m > tau_s > 0 and tau_r > 0, got tau_m={tau_m}, tau_s={tau_s}, "
                             f"tau_r={tau_r}")
        self.tau_m, self.tau_s, self.tau_r = float(tau_m), float(tau_s), float(tau_r)
        self.eta0 = None if eta0 is None else float(eta0)
        if self.eta0 is not None and self.eta0 < 0:
            raise ValueError(f"SRM eta0 must be >= 0, got {eta0!r}")
        self.norm = eps_peak(self.tau_m, self.tau_s)

    def init_state(self, batch_size: int, *, dtype: torch.dtype = torch.float32,  # type: ignore[override]
                   device: torch.device | str | None = None) -> SRMState:
        v = super().init_state(batch_size, dtype=dtype, device=device).v
        return SRMState(v, v.clone(), v.clone(), v.clone())

    def run(self, x: torch.Tensor, state: SRMState | None = None) -> NeuronOutput:  # type: ignore[override]
        check_sequence(x, self.features)
        rho_m, rho_s, rho_r = (math.exp(-1.0 / t) for t in (self.tau_m, self.tau_s, self.tau_r))
        thr = self.threshold_value()
        eta0 = thr if self.eta0 is None else self.eta0
        if state is None:
            a0 = b0 = r = last = torch.zeros_like(x[0])
        else:
            a0, b0, r, last = state
        # a[t] = sum_{k>=0} rho_m^k x[t-k]; the PSP of step t is sum_{k>=1} (rho_m^k - rho_s^k) x[t-k]
        #      = rho_m a[t-1] - rho_s b[t-1]  (the k = 0 terms cancel)
        a = lowpass(x, rho_m, a0)
        b = lowpass(x, rho_s, b0)
        a_prev = torch.cat([a0.expand_as(x[0]).unsqueeze(0), a[:-1]])
        b_prev = torch.cat([b0.expand_as(x[0]).unsqueeze(0), b[:-1]])
        psp = (rho_m * a_prev - rho_s * b_prev) / self.norm
        spikes, mems = [], []
        for t in range(x.shape[0]):
            fb = last.detach() if self.detach_reset else last
            r = rho_r * (r - eta0 * fb)
            u = psp[t] + r
            last = self.surrogate(u - thr)
            spikes.append(last)
            mems.append(u)
        return NeuronOutput(torch.stack(spikes), torch.stack(mems), SRMState(a[-1], b[-1], r, last))

    def forward(self, x: torch.Tensor, state: SRMState | None = None):  # type: ignore[override]
        out = self.run(x, state)
        return out.spikes, out.state

    def step(self, x: torch.Tensor, state: SRMState | None = None):  # type: ignore[override]
        check_step(x, self.features)
        out = self.run(x.unsqueeze(0), state)
        return out.spikes[0], out.state

    def extra_repr(self) -> str:
        return f"features={self.features}, tau_m={self.tau_m}, tau_s={self.tau_s}, tau_r={self.tau_r}"
