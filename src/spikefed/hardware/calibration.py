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

    to_device:  beta_p = (beta^dt)^m_hat       W_p = W k / g_hat      b_p = b z / g_hat      thr_p = thr / f_hat
    to_latent:  beta = (beta_p^(1/m_hat))^(1/dt)   W = W_p g_hat / k   b = b_p g_hat / z      thr = thr_p f_hat

with the input scale ``k`` of what the synapses receive: ``k = z`` for the model's input (data reach the device
as a per-step mean: event frames rebinned by the mean, constant currents, per-step rates) and ``k = z / dt`` for
spikes (the first unit's input is data, every other unit's and every recurrent matrix's input is spikes). A
device neuron emits at most one spike per device step, and that spike stands for the ``dt`` nominal steps it
covers: a spike train of rate ``r`` per nominal step arrives as ``dt r`` per device step, so its per-step mean is
the device value divided by ``dt`` (``k = z`` there would count ``dt`` twice).

``to_latent(to_device(x)) == x`` up to float rounding. :meth:`Calibration.identity` is the map of a client that
ignores its hardware (naive averaging of device parameters).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .devices import Device
from .units import Unit, model_units

ParamDict = dict[str, torch.Tensor]


@dataclass
class Calibration:
    """Estimated factors of one device: per unit ``i`` one per-neuron tensor (shape ``layers[i].shape``) of gain,
    threshold factor, membrane / synaptic / adaptation time-constant factors; per delay line its factor; and the
    device's ``dt``."""

    gains: list[torch.Tensor]
    threshold_factors: list[torch.Tensor]
    tau_factors: list[torch.Tensor]
    dt: float
    layers: list[Unit]
    alpha_factors: list[torch.Tensor] | None = None
    rho_factors: list[torch.Tensor] | None = None
    delay_factors: dict[str, torch.Tensor] = field(default_factory=dict)
    delay_periods: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.alpha_factors is None:
            self.alpha_factors = [torch.ones_like(g) for g in self.gains]
        if self.rho_factors is None:
            self.rho_factors = [torch.ones_like(g) for g in self.gains]

    @classmethod
    def identity(cls, model: nn.Module) -> "Calibration":
        """The map of a device assumed ideal: program = latent."""
        units = model_units(model)
        ones = [torch.ones(u.shape) for u in units]
        return cls(ones, [o.clone() for o in ones], [o.clone() for o in ones], 1.0, units)

    def _zoh(self, u: Unit, beta: torch.Tensor | None, alpha: torch.Tensor | None, spikes: bool = False
             ) -> torch.Tensor:
        """Input scale of unit ``u``: ``z = (1 - beta^dt) / (1 - beta)`` (``dt`` without leak) times, for a
        synaptic filter, ``(1 - alpha^dt) / (1 - alpha)``; for an input of ``spikes`` ``z / dt`` (module
        docstring)."""
        if self.dt == 1.0:
            return torch.ones(u.shape)
        if spikes:
            return (self._zoh(u, beta, alpha).double() / self.dt).float()
        z = torch.full(u.shape, float(self.dt), dtype=torch.float64)
        if beta is not None:
            b = beta.double().clamp(1e-12, 1 - 1e-12)
            z = (1 - b ** self.dt) / (1 - b)
        if alpha is not None:
            a = alpha.double().clamp(1e-12, 1 - 1e-12)
            z = z * (1 - a ** self.dt) / (1 - a)
        return z.float()

    def _decays(self, i: int, u: Unit, values: ParamDict, to_device: bool) -> dict[str, torch.Tensor]:
        assert self.alpha_factors is not None and self.rho_factors is not None
        out = {}
        for role, factors in (("beta", self.tau_factors), ("alpha", self.alpha_factors), ("rho", self.rho_factors)):
            name = getattr(u, role)
            if name is None:
                continue
            power = self.dt * factors[i].double()
            v = values[name].double()
            out[role] = (v ** power if to_device else v ** (1.0 / power)).float()
        return out

    def to_device(self, latent: ParamDict) -> ParamDict:
        """Latent (full: trainable values and per-neuron neuron values) -> program."""
        return self._map(latent, True)

    def to_latent(self, program: ParamDict) -> ParamDict:
        """Program (full) -> latent; the inverse of :meth:`to_device`."""
        return self._map(program, False)

    def _map(self, values: ParamDict, to_device: bool) -> ParamDict:
        """One direction of the latent <-> program map: every factor ``t`` below multiplies towards the device
        and divides back towards the latent space (decays take the matching powers in :meth:`_decays`)."""

        def scale(x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
            return x * t if to_device else x / t

        out = dict(values)
        for i, u in enumerate(self.layers):
            decays = self._decays(i, u, values, to_device)
            latent = values if to_device else {getattr(u, role): v for role, v in decays.items()}
            beta, alpha = latent[u.beta] if u.beta else None, latent[u.alpha] if u.alpha else None
            z = self._zoh(u, beta, alpha)  # biases: a constant input in every step
            k = self._zoh(u, beta, alpha, spikes=u.source == "spikes")  # the synapses' input
            for role, value in decays.items():
                out[getattr(u, role)] = value
            if u.fold:  # the kernel is shared: gain and dt scale go into the threshold (device.effective)
                c = self.gains[i] / k
                for role in ("threshold", "gamma"):
                    name = getattr(u, role)
                    if name is not None:
                        out[name] = scale(values[name], c / self.threshold_factors[i])
                if u.reset is not None:
                    out[u.reset] = scale(values[u.reset], c)
                if u.bias is not None and u.bias in values and u.source == "spikes":  # z / k = dt: a constant
                    out[u.bias] = scale(values[u.bias], self.dt)  # input beside the kernel's spikes
                continue
            g = self.gains[i]
            rec = self._zoh(u, beta, alpha, spikes=True)  # a recurrent matrix receives the unit's own spikes
            for name, t in ((u.weight, k / g), (u.recurrent, rec / g)):
                if name is not None and name in values:
                    out[name] = scale(values[name], t.unsqueeze(1))
            if u.bias is not None and u.bias in values:
                out[u.bias] = scale(values[u.bias], z / g)
            for name in (u.threshold, u.gamma):
                if name is not None:
                    out[name] = scale(values[name], 1 / self.threshold_factors[i])
        for name, h in self.delay_factors.items():
            if name in values:
                out[name] = self._delay(name, values[name], h, to_device)
        return out

    def _delay(self, name: str, value: torch.Tensor, h: torch.Tensor, to_device: bool) -> torch.Tensor:
        """Delay line ``name``: ``d_p = s / (dt h)`` towards the device, ``d = (d_p dt h) mod D`` back, where
        ``s`` is the latent delay ``d`` taken on its ring of ``D`` slots as the signed value its interpolation
        mostly means: ``r = d mod D``, ``s = r - D`` when ``r > D - 1/2`` (the two taps there are ``D - 1`` and
        ``0``, and tap 0 weighs more), else ``r``. Without the ring's length (``delay_periods``) the plain
        ``d / (dt h)``."""
        period = self.delay_periods.get(name)
        if period is None:
            return value / (self.dt * h) if to_device else value * (self.dt * h)
        if not to_device:
            return torch.remainder(value * (self.dt * h), period)
        r = torch.remainder(value, period)
        return torch.where(r > period - 0.5, r - period, r) / (self.dt * h)


def _fit_decay(u: torch.Tensor, probe: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares of ``log u[t] = c + t log d`` per column: ``(exp(c), m_hat = log(d_p) / log(d_hat))`` with
    ``d_p`` the programmed probe decay as the chip stores it (float32)."""
    steps = u.shape[0]
    t = torch.arange(steps, dtype=torch.float64)
    y = u.double().clamp(min=1e-6).log()  # [steps, N]
    tc = t - t.mean()
    slope = (tc.unsqueeze(1) * (y - y.mean(0))).sum(0) / (tc ** 2).sum()
    intercept = y.mean(0) - slope * t.mean()
    d_eff = slope.exp().clamp(1e-6, 1 - 1e-9)
    m_hat = torch.tensor(probe, dtype=torch.float32).double().log() / d_eff.log()
    return intercept.exp().float(), m_hat.float()


def _calibrate_delays(device: Device, generator: torch.Generator, repeats: int) -> dict[str, torch.Tensor]:
    """Per delay line: program a known delay, average the read-out of one spike's arrival, take the centroid of
    the two steps around its peak as the arrival time ``d_hat``, so ``h_hat = d_hat / d_prog``."""
    out = {}
    for name, period in device.delay_periods.items():
        limit = period - 1 if device.profile.delay_buffer is None else min(period, device.profile.delay_buffer) - 1
        width = device.delay_factors[name].shape[0]
        d_p = torch.full((width,), 0.6 * limit) if limit > 0 else torch.zeros(width)
        steps = period + 2
        trace = torch.stack([device.probe_delay(name, d_p, steps, generator) for _ in range(repeats)]).mean(0)
        peak = trace.argmax(0)  # [F]
        t = torch.arange(steps).unsqueeze(1)
        near = ((t - peak.unsqueeze(0)).abs() <= 1).float()
        w = (trace * near).clamp(min=0)
        arrival = (w * t).sum(0) / w.sum(0).clamp(min=1e-9)
        out[name] = torch.where(d_p > 0, arrival / d_p.clamp(min=1e-9), torch.ones(width)).float()
    return out


@torch.no_grad()
def calibrate(device: Device, generator: torch.Generator, repeats: int = 16, steps: int = 12,
              probe_beta: float = 0.9, probe_threshold: float = 1.0, bisection_steps: int = 40) -> Calibration:
    """Estimate ``device``'s map from its probes only (see the module docstring)."""
    if repeats < 1 or steps < 2:
        raise ValueError(f"calibration needs repeats >= 1 and steps >= 2, got {repeats}, {steps}")
    gains: list[torch.Tensor] = []
    thr_factors: list[torch.Tensor] = []
    tau_factors: list[torch.Tensor] = []
    alpha_factors: list[torch.Tensor] = []
    rho_factors: list[torch.Tensor] = []
    for i, u in enumerate(device.layers):
        width = int(device.gains[i].numel())

        def probe(beta: float, alpha: float = 0.0) -> torch.Tensor:
            b, a = torch.full((width,), beta), torch.full((width,), alpha)
            return torch.stack([device.probe_membrane(i, 1.0, b, steps, generator, a) for _ in range(repeats)]).mean(0)

        ones = torch.ones(width)
        m_alpha, m_rho = ones, ones
        if u.beta is not None:  # the synaptic filter switched off (alpha programmed to 0)
            g_hat, m_hat = _fit_decay(probe(probe_beta), probe_beta)
        else:
            g_hat, m_hat = probe(1.0).mean(0), ones
        if u.alpha is not None:  # the membrane leak switched off: u[t] = i[t] = g w alpha_eff^t
            _, m_alpha = _fit_decay(probe(0.0, probe_beta), probe_beta)
        if u.rho is not None:
            a = torch.stack([device.probe_adaptation(i, torch.full((width,), probe_beta), steps, generator)
                             for _ in range(repeats)]).mean(0)
            _, m_rho = _fit_decay(a, probe_beta)
        g_hat = g_hat.clamp(min=1e-6)
        thr_p = torch.full((width,), probe_threshold)
        f_hat = ones
        if u.threshold is not None:
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
        for lst, v in ((gains, g_hat), (thr_factors, f_hat), (tau_factors, m_hat), (alpha_factors, m_alpha),
                       (rho_factors, m_rho)):
            lst.append(v.float().reshape(u.shape))
    return Calibration(gains, thr_factors, tau_factors, float(device.profile.dt), device.layers,
                       alpha_factors, rho_factors, _calibrate_delays(device, generator, repeats),
                       dict(device.delay_periods))


def digital_twin(device: Device, calibration: Calibration, dt: float = 1.0) -> Device:
    """A simulation of ``device`` built from what its client measured (its ``calibration``), running with time
    step ``dt`` (default: the nominal step).

    The twin has the calibration's estimated per-neuron gains, threshold factors, membrane / synaptic /
    adaptation time-constant factors and delay-line factors in place of the chip's (hidden) ones, no per-synapse
    mismatch (no probe sees it), and the chip's number format, delay buffer, lost steps and jitter. A client whose
    chip runs a coarse step trains this twin at the nominal step (``devices.training_step=nominal``); the chip
    itself keeps its step when the model is deployed on it. Only the twin's training uses it: its probes are
    not meaningful (they would measure the estimates)."""
    if dt <= 0 or not math.isfinite(dt):
        raise ValueError(f"digital_twin needs a finite dt > 0, got {dt!r}")
    if len(calibration.layers) != len(device.layers):
        raise ValueError(f"the calibration has {len(calibration.layers)} units, the device "
                         f"{len(device.layers)}: not this device's calibration")
    twin = copy.copy(device)
    twin.profile = device.profile.replace(dt=float(dt))
    twin.gains = [g.clone() for g in calibration.gains]
    twin.threshold_factors = [f.clone() for f in calibration.threshold_factors]
    twin.tau_factors = [m.clone() for m in calibration.tau_factors]
    assert calibration.alpha_factors is not None and calibration.rho_factors is not None
    twin.alpha_factors = [a.clone() for a in calibration.alpha_factors]
    twin.rho_factors = [r.clone() for r in calibration.rho_factors]
    twin.synapse_factors = {}
    twin.delay_factors = {n: calibration.delay_factors.get(n, torch.ones_like(h)).clone()
                          for n, h in device.delay_factors.items()}
    return twin
