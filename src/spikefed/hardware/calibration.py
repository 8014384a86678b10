"""Calibration maps between the device-independent latent space and one device's program.

Seed 000: the server and the clients speak a *latent* language (the parameters of an ideal network with the
nominal time step); each device owns an invertible map to its own *program* (what is written to the chip),
estimated by the device itself from stimulus-response probes, never from the simulator's ground truth.

Estimation (:func:`calibrate`), per linear layer ``i`` and neuron ``n``, using only
:meth:`Device.probe_membrane` and :meth:`Device.probe_threshold`:

- impulse response ``u[t] = g w beta_eff^t`` (averaged over ``repeats`` noisy read-outs) fitted by least squares
  on ``log u[t] = log(g w) + t log beta_eff``: ``g_hat = exp(intercept) / w``, ``beta_eff_hat = exp(slope)``,
  and with the programmed probe decay ``beta_p``: ``m_hat = log(beta_p) / log(beta_eff_hat)`` (time-constant
  factor); non-leaky layers: ``g_hat = mean_t u[t] / w``;
- threshold by bisection on the reference input ``I`` for which the neuron just spikes in one step:
  ``I* = f thr_p / g``, so ``f_hat = g_hat I* / thr_p``.

Maps (``dt``: the device's step in nominal steps; ``z = (1 - beta^dt) / (1 - beta)`` is the input a nominal
network integrates over ``dt`` steps, exact for a constant input (zero-order hold); ``z = dt`` without leak)::

    to_device:  beta_p = (beta^dt)^m_hat       W_p = W z / g_hat      b_p = b z / g_hat      thr_p = thr / f_hat
    to_latent:  beta = (beta_p^(1/m_hat))^(1/dt)   W = W_p g_hat / z   b = b_p g_hat / z      thr = thr_p f_hat

``to_latent(to_device(x)) == x`` up to float rounding. :meth:`Calibration.identity` is the map of a client that
ignores its hardware (naive averaging of device parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..snn.models import SpikingMLP
from .devices import Device, layer_names

ParamDict = dict[str, torch.Tensor]


@dataclass
class Calibration:
    """Estimated per-neuron factors of one device (one ``[out]`` vector per linear layer) and its ``dt``."""

    gains: list[torch.Tensor]
    threshold_factors: list[torch.Tensor]
    tau_factors: list[torch.Tensor]
    dt: float
    layers: list[dict[str, str | None]]

    @classmethod
    def identity(cls, model: SpikingMLP) -> "Calibration":
        """The map of a device assumed ideal: program = latent."""
        widths = [lin.out_features for lin in model.linears]
        ones = [torch.ones(n) for n in widths]
        return cls(ones, [o.clone() for o in ones], [o.clone() for o in ones], 1.0, layer_names(model))

    def _zoh(self, beta: torch.Tensor | None, width: int) -> torch.Tensor:
        if self.dt == 1.0:
            return torch.ones(width)
        if beta is None:
            return torch.full((width,), float(self.dt))
        b = beta.double().clamp(1e-12, 1 - 1e-12)
        return ((1 - b ** self.dt) / (1 - b)).float()

    def to_device(self, latent: ParamDict) -> ParamDict:
        """Latent (full: trainable values and per-neuron thresholds/decays) -> program."""
        out = dict(latent)
        for i, names in enumerate(self.layers):
            w_name = names["weight"]
            assert w_name is not None
            width = latent[w_name].shape[0]
            beta_name, thr_name, b_name = names["beta"], names["threshold"], names["bias"]
            beta = latent[beta_name] if beta_name is not None else None
            z = self._zoh(beta, width)
            scale = z / self.gains[i]
            out[w_name] = latent[w_name] * scale.unsqueeze(1)
            if b_name is not None and b_name in latent:
                out[b_name] = latent[b_name] * scale
            if thr_name is not None:
                out[thr_name] = latent[thr_name] / self.threshold_factors[i]
            if beta is not None and beta_name is not None:
                out[beta_name] = (beta.double() ** (self.dt * self.tau_factors[i].double())).float()
        return out

    def to_latent(self, program: ParamDict) -> ParamDict:
        """Program (full) -> latent; the inverse of :meth:`to_device`."""
        out = dict(program)
        for i, names in enumerate(self.layers):
            w_name = names["weight"]
            assert w_name is not None
            width = program[w_name].shape[0]
            beta_name, thr_name, b_name = names["beta"], names["threshold"], names["bias"]
            beta = None
            if beta_name is not None:
                beta = (program[beta_name].double() ** (1.0 / (self.dt * self.tau_factors[i].double()))).float()
                out[beta_name] = beta
            scale = self.gains[i] / self._zoh(beta, width)
            out[w_name] = program[w_name] * scale.unsqueeze(1)
            if b_name is not None and b_name in program:
                out[b_name] = program[b_name] * scale
            if thr_name is not None:
                out[thr_name] = program[thr_name] * self.threshold_factors[i]
        return out


@torch.no_grad()
def calibrate(device: Device, generator: torch.Generator, repeats: int = 16, steps: int = 12,
              probe_beta: float = 0.9, probe_threshold: float = 1.0, bisection_steps: int = 40) -> Calibration:
    """Estimate ``device``'s map from its probes only (see the module docstring)."""
    if repeats < 1 or steps < 2:
        raise ValueError(f"calibration needs repeats >= 1 and steps >= 2, got {repeats}, {steps}")
    gains, thr_factors, tau_factors = [], [], []
    for i, names in enumerate(device.layers):
        width = device.gains[i].shape[0]
        leaky = names["beta"] is not None
        beta_p = torch.full((width,), probe_beta)
        u = torch.stack([device.probe_membrane(i, 1.0, beta_p, steps, generator) for _ in range(repeats)]).mean(0)
        if leaky:
            t = torch.arange(steps, dtype=torch.float64)
            y = u.double().clamp(min=1e-6).log()  # [steps, N]
            tc = t - t.mean()
            slope = (tc.unsqueeze(1) * (y - y.mean(0))).sum(0) / (tc ** 2).sum()
            intercept = y.mean(0) - slope * t.mean()
            g_hat = intercept.exp().float()
            beta_eff = slope.exp().clamp(1e-6, 1 - 1e-9)
            m_hat = (torch.log(torch.tensor(probe_beta, dtype=torch.float64)) / beta_eff.log()).float()
        else:
            g_hat = u.mean(0)
            m_hat = torch.ones(width)
        g_hat = g_hat.clamp(min=1e-6)
        thr_p = torch.full((width,), probe_threshold)
        f_hat = torch.ones(width)
        if names["threshold"] is not None:
            lo = torch.zeros(width)
            hi = 4.0 * probe_threshold / g_hat
            for _ in range(60):  # make sure every neuron spikes at hi
                fired = device.probe_threshold(i, thr_p, hi)
                if bool(fired.all()):
                    break
                hi = torch.where(fired, hi, 2 * hi)
            for _ in range(bisection_steps):
                mid = 0.5 * (lo + hi)
                fired = device.probe_threshold(i, thr_p, mid)
                hi = torch.where(fired, mid, hi)
                lo = torch.where(fired, lo, mid)
            f_hat = g_hat * hi / probe_threshold
        gains.append(g_hat.float())
        thr_factors.append(f_hat.float())
        tau_factors.append(m_hat.float())
    return Calibration(gains, thr_factors, tau_factors, float(device.profile.dt), device.layers)
