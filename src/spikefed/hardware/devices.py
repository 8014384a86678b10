"""Simulated neuromorphic devices: mismatch, weight quantization, lost/jittered time steps, time resolution.

Seed 000 ("hardware Babel tower"): every edge device is different. A device runs a *program* (the values
written to the chip: weights, biases, thresholds, decays, delays) and behaves according to *effective* values that
differ from the program by the device's fabrication mismatch and its number formats. It runs any model whose
synapse layers (``Linear`` / ``Conv2d``) each feed a spikefed neuron module (:mod:`spikefed.hardware.units`); per
unit ``i`` (synapse array + neuron population, one factor per neuron, drawn once per device from its seed)::

    W_eff[i]   = g_i[:, None] * Q_b(W_prog[i])        synaptic gain mismatch g ~ LogNormal, mean 1, CV gain_cv
    b_eff[i]   = g_i * Q_b(b_prog[i])                 (the bias, and a recurrent matrix, go through the same gain)
    thr_eff[j] = f_j * thr_prog[j]                    threshold mismatch f ~ LogNormal, mean 1, CV threshold_cv
    beta_eff[j] = beta_prog[j] ** (1 / m_j)           leak mismatch: tau_eff = m_j tau_prog, m ~ LogNormal(leak_cv)

(CuBa synaptic decays and ALIF adaptation decays have their own factors; a conv unit's gain acts through the
equivalent threshold ``f thr / g``, see :meth:`Device.effective`; optional per-synapse factors ``synapse_cv``;
delay lines ``d_eff = h d_prog``, ``delay_cv``.)

``Q_b`` is symmetric uniform quantization to ``b`` bits with a per-tensor scale ``s = max|w| / (2^(b-1) - 1)``
(``b = 1``: ``s = mean|w|``, levels ``{-s, +s}``), rounding to nearest or stochastically
(``floor(w/s + u)``, ``u ~ U[0, 1)``, unbiased). During training it is a straight-through estimator
(quantization-aware training): forward ``Q_b(w)``, backward the identity.

The device also loses input time steps (each step of each sample is dropped with probability ``drop_steps``),
shifts inputs in time by up to ``jitter`` steps (uniform integer, per sample), and runs with its own time step
``dt`` (in units of the nominal step): it simulates ``round(T / dt)`` steps. Delays (parameters named
``*delay*``) are limited by a ring buffer of ``delay_buffer`` slots.

A device only exposes what a chip exposes: :meth:`Device.probe_membrane` (impulse response of every neuron
of a layer through a reference synapse, read out with noise) and :meth:`Device.probe_threshold` (whether each
neuron spikes in one step for a given reference input). :mod:`spikefed.hardware.calibration` estimates the
device's map from these probes alone; the mismatch factors themselves are private to the simulation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from torch import nn

from .units import Unit, delay_lines, full_program, layer_names, model_units, supports_devices

__all__ = ["PRESETS", "ROUNDING", "Device", "DeviceProfile", "assign_fleet", "full_program", "get_profile",
           "layer_names", "lognormal_factors", "model_units", "quantize", "rebin_time", "supports_devices"]

ROUNDING = ("nearest", "stochastic")


@dataclass(frozen=True)
class DeviceProfile:
    """A kind of device. Every field is validated on construction (a bad one raises ``ValueError`` naming it).

    Attributes:
        name: label of the profile (presets: see :data:`PRESETS`).
        threshold_cv / leak_cv / gain_cv: coefficient of variation (std / mean) of the per-neuron threshold,
            membrane time-constant and synaptic-gain factors (log-normal, mean 1), >= 0.
        weight_bits: bits of the weight/bias format (1..32), ``None`` for float32 (no quantization).
        rounding: ``"nearest"`` or ``"stochastic"``.
        drop_steps: probability that a time step of an input sample is lost, in [0, 1).
        jitter: maximum input timing jitter in steps (>= 0).
        dt: the device's simulation time step in units of the nominal step (> 0); it runs ``round(T/dt)`` steps.
        delay_buffer: ring-buffer slots for synaptic delays (``None``: unlimited); delays clamp to ``slots-1``.
        readout_noise: std of the membrane read-out noise of probes, relative to the probe amplitude (>= 0).
        synapse_cv: per-synapse gain mismatch (one log-normal factor per weight element, conv kernel entries
            included), on top of the per-neuron gain; calibration cannot see it (it would need one probe per
            synapse), so it stays as residual error (>= 0).
        delay_cv: per-delay-line mismatch of the axonal delays (``d_eff = h d_prog``, log-normal ``h``) (>= 0).
    """

    name: str = "custom"
    threshold_cv: float = 0.0
    leak_cv: float = 0.0
    gain_cv: float = 0.0
    weight_bits: int | None = None
    rounding: str = "nearest"
    drop_steps: float = 0.0
    jitter: int = 0
    dt: float = 1.0
    delay_buffer: int | None = None
    readout_noise: float = 0.01
    synapse_cv: float = 0.0
    delay_cv: float = 0.0

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"device profile {self.name!r}: {field} {why}, got {getattr(self, field)!r}")

        for f in ("threshold_cv", "leak_cv", "gain_cv", "readout_noise", "synapse_cv", "delay_cv"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise bad(f, "must be a finite number >= 0")
        if self.weight_bits is not None and (isinstance(self.weight_bits, bool) or int(self.weight_bits) !=
                                             self.weight_bits or not 1 <= self.weight_bits <= 32):
            raise bad("weight_bits", "must be an integer in [1, 32] (or null for float32)")
        if self.rounding not in ROUNDING:
            raise bad("rounding", f"must be one of {', '.join(ROUNDING)}")
        if not (isinstance(self.drop_steps, (int, float)) and 0 <= self.drop_steps < 1):
            raise bad("drop_steps", "must be in [0, 1)")
        if isinstance(self.jitter, bool) or int(self.jitter) != self.jitter or self.jitter < 0:
            raise bad("jitter", "must be an integer >= 0")
        if not (isinstance(self.dt, (int, float)) and math.isfinite(self.dt) and self.dt > 0):
            raise bad("dt", "must be > 0")
        if self.delay_buffer is not None and (isinstance(self.delay_buffer, bool) or
                                              int(self.delay_buffer) != self.delay_buffer or self.delay_buffer < 1):
            raise bad("delay_buffer", "must be an integer >= 1 (or null)")

    @property
    def ideal(self) -> bool:
        """No mismatch, no quantization, no lost steps, nominal time step (probe noise does not matter)."""
        return dataclasses.replace(self, readout_noise=0.0) == DeviceProfile(self.name, readout_noise=0.0)

    def replace(self, **changes: Any) -> "DeviceProfile":
        """A copy with some fields changed (validated); unknown fields raise ``ValueError`` naming them."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown device profile field(s) {', '.join(sorted(unknown))}; valid: "
                             f"{', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **changes)


#: Presets listed by ``spikefed devices``.
PRESETS: dict[str, DeviceProfile] = {p.name: p for p in (
    DeviceProfile("ideal", readout_noise=0.0),
    DeviceProfile("digital8", weight_bits=8),
    DeviceProfile("digital4", weight_bits=4),
    DeviceProfile("analog10", threshold_cv=0.1, leak_cv=0.1, gain_cv=0.1),
    DeviceProfile("analog20", threshold_cv=0.2, leak_cv=0.2, gain_cv=0.2),
    DeviceProfile("analog20_8bit", threshold_cv=0.2, leak_cv=0.2, gain_cv=0.2, weight_bits=8),
    DeviceProfile("analog20_4bit", threshold_cv=0.2, leak_cv=0.2, gain_cv=0.2, weight_bits=4),
    DeviceProfile("coarse_dt", dt=2.0),
    DeviceProfile("lossy", drop_steps=0.05, jitter=1),
    DeviceProfile("loihi_like", weight_bits=8, rounding="stochastic", delay_buffer=62),
)}


def get_profile(name: str, **overrides: Any) -> DeviceProfile:
    """A preset by name, optionally with fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown device profile {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


def lognormal_factors(n: int | tuple[int, ...], cv: float, rng: np.random.Generator) -> torch.Tensor:
    """``n`` factors with mean 1 and coefficient of variation ``cv``: ``exp(sigma z - sigma^2/2)``,
    ``sigma^2 = log(1 + cv^2)``, ``z ~ N(0, 1)``."""
    shape = (n,) if isinstance(n, int) else n
    if cv == 0:
        return torch.ones(shape)
    sigma = math.sqrt(math.log1p(cv * cv))
    z = rng.standard_normal(shape)
    return torch.as_tensor(np.exp(sigma * z - 0.5 * sigma * sigma), dtype=torch.float32)


# -- quantization ---------------------------------------------------------------------------------------------

def quantize(w: torch.Tensor, bits: int | None, rounding: str = "nearest",
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Symmetric per-tensor ``bits``-bit quantization (values, not integers); ``None`` returns ``w``.

    Forward ``s * round(w / s)`` with ``s = max|w| / (2^(bits-1) - 1)`` (``bits = 1``: ``s * sign(w)`` with
    ``s = mean|w|``); the gradient is the identity (straight-through estimator).
    """
    if bits is None:
        return w
    if rounding not in ROUNDING:
        raise ValueError(f"unknown rounding {rounding!r}; valid: {', '.join(ROUNDING)}")
    with torch.no_grad():
        work = w.detach().double() if bits > 16 else w.detach()
        if bits == 1:
            s = work.abs().mean()
            q = torch.where(work >= 0, s, -s) if bool(s > 0) else torch.zeros_like(work)
        else:
            levels = 2 ** (bits - 1) - 1
            s = work.abs().amax()
            if not bool(s > 0):
                q = torch.zeros_like(work)
            else:
                s = s / levels
                y = work / s
                if rounding == "stochastic":
                    u = torch.rand(y.shape, generator=generator, dtype=y.dtype)
                    n = torch.floor(y + u)
                else:
                    n = torch.round(y)
                q = n.clamp(-levels, levels) * s
        q = q.to(w.dtype)
    return w + (q - w).detach()


# -- the device ----------------------------------------------------------------------------------------------

def _decay(program: torch.Tensor, factor: torch.Tensor, low: float = 1e-6) -> torch.Tensor:
    """A decay's effective value on the device: ``d_prog ** (1 / m)`` (time constant ``m`` times the program's)."""
    return program.clamp(low, 1 - 1e-6) ** (1.0 / factor)


def rebin_time(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``x [T, ...]`` resampled to ``steps`` bins of width ``dt = T / steps`` nominal steps: device bin ``j``
    is the mean of the nominal bins it covers, ``y[j] = (1/dt) sum_t o[j, t] x[t]`` with ``o[j, t]`` the overlap
    of ``[j dt, (j+1) dt)`` and ``[t, t+1)`` (for ``dt = 2``: the mean of two bins, i.e. their summed events / 2).

    The mean keeps a constant event rate at the same per-step value, which is what the exact zero-order-hold map
    of the calibration assumes (the device's input stage scales its accumulated events by ``1 / dt``)."""
    t = x.shape[0]
    if steps == t:
        return x
    if steps < 1:
        raise ValueError(f"rebin_time needs steps >= 1, got {steps}")
    dt = t / steps
    edges = torch.arange(steps + 1, dtype=torch.float64) * dt
    lo, hi = edges[:-1].unsqueeze(1), edges[1:].unsqueeze(1)
    tt = torch.arange(t, dtype=torch.float64).unsqueeze(0)
    overlap = (torch.minimum(hi, tt + 1) - torch.maximum(lo, tt)).clamp(min=0) / dt  # [steps, T]
    flat = x.reshape(t, -1)
    return (overlap.to(x.dtype) @ flat).reshape(steps, *x.shape[1:])


class Device:
    """One simulated device running ``model``'s architecture (any model :func:`supports_devices` accepts);
    mismatch drawn once from ``seed``.

    Per unit ``i`` (:func:`~spikefed.hardware.units.model_units`: a synapse array and the neurons it feeds), one
    factor per neuron (shape ``units[i].shape``): :attr:`gains` ``g``, :attr:`threshold_factors` ``f``,
    :attr:`tau_factors` ``m`` (membrane time constant), :attr:`alpha_factors` (synaptic time constant,
    CuBa neurons), :attr:`rho_factors` (adaptation time constant, ALIF); per weight element
    :attr:`synapse_factors` (``synapse_cv``); per delay line :attr:`delay_factors` ``h``. They are the
    simulation's ground truth; calibration must not read them.
    """

    def __init__(self, profile: DeviceProfile, model: nn.Module, seed: int) -> None:
        self.profile = profile
        self.layers: list[Unit] = model_units(model)
        self.delay_periods = delay_lines(model)
        rng = np.random.default_rng(seed)
        self.gains: list[torch.Tensor] = []
        self.threshold_factors: list[torch.Tensor] = []
        self.tau_factors: list[torch.Tensor] = []
        for u in self.layers:  # this draw order first: a spiking MLP keeps the factors of earlier versions
            self.gains.append(lognormal_factors(u.shape, profile.gain_cv, rng))
            self.threshold_factors.append(lognormal_factors(u.shape, profile.threshold_cv, rng))
            self.tau_factors.append(lognormal_factors(u.shape, profile.leak_cv, rng))
        ones = [torch.ones(u.shape) for u in self.layers]
        self.alpha_factors = [lognormal_factors(u.shape, profile.leak_cv, rng) if u.alpha else o
                              for u, o in zip(self.layers, ones)]
        self.rho_factors = [lognormal_factors(u.shape, profile.leak_cv, rng) if u.rho else o
                            for u, o in zip(self.layers, ones)]
        params = dict(model.named_parameters())
        self.synapse_factors: dict[str, torch.Tensor] = {}
        if profile.synapse_cv:
            for u in self.layers:
                for name in (u.weight, u.recurrent):
                    if name is not None:
                        self.synapse_factors[name] = lognormal_factors(tuple(params[name].shape),
                                                                       profile.synapse_cv, rng)
        self.delay_factors = {n: lognormal_factors(tuple(params[n].shape), profile.delay_cv, rng)
                              for n in self.delay_periods}

    def num_steps(self, nominal: int) -> int:
        """Steps the device simulates for a nominal ``T``: ``max(1, round(T / dt))``."""
        return max(1, int(round(nominal / self.profile.dt)))

    def _synapses(self, name: str, program: dict[str, torch.Tensor], generator: torch.Generator | None
                  ) -> torch.Tensor:
        p = self.profile
        w = quantize(program[name], p.weight_bits, p.rounding, generator)
        return w * self.synapse_factors[name] if name in self.synapse_factors else w

    def effective(self, program: dict[str, torch.Tensor],
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Programmed values -> the values that govern the device's dynamics (differentiable, QAT STE).

        Linear unit: ``W_eff = g ⊙ Q(W)`` (rows; recurrent matrix too), ``b_eff = g ⊙ Q(b)``. Conv unit: the
        kernel is shared, so ``W_eff = Q(W)``, ``b_eff = Q(b)`` and the per-neuron gain acts through the
        equivalent threshold: a membrane driven by ``g I`` crosses ``thr`` exactly when one driven by ``I``
        crosses ``thr / g`` (reset offset and adaptation strength scale alike), so ``thr_eff = f thr / g``.
        Decays ``d_eff = d^(1/m)`` (beta, alpha, rho, each its own factor), ``gamma_eff = f gamma``,
        delays ``h d`` clamped to the ring buffer.
        """
        p = self.profile
        out = dict(program)
        for i, u in enumerate(self.layers):
            g = self.gains[i]
            w = self._synapses(u.weight, program, generator)
            out[u.weight] = w if u.fold else g.unsqueeze(1) * w
            if u.bias is not None and u.bias in program:
                b = quantize(program[u.bias], p.weight_bits, p.rounding, generator)
                out[u.bias] = b if u.fold else g * b
            if u.recurrent is not None and u.recurrent in program:
                out[u.recurrent] = g.unsqueeze(1) * self._synapses(u.recurrent, program, generator)
            scale = self.threshold_factors[i] / g if u.fold else self.threshold_factors[i]
            for role in ("threshold", "gamma"):
                name = getattr(u, role)
                if name is not None and name in program:
                    out[name] = scale * program[name]
            if u.reset is not None and u.reset in program and u.fold:
                out[u.reset] = program[u.reset] / g
            for role, factors in (("beta", self.tau_factors), ("alpha", self.alpha_factors),
                                  ("rho", self.rho_factors)):
                name = getattr(u, role)
                if name is not None and name in program:
                    out[name] = _decay(program[name], factors[i])
        for name in program:
            if name in self.delay_factors:
                out[name] = program[name] * self.delay_factors[name]
            if "delay" in name.split(".")[-1] and p.delay_buffer is not None:
                out[name] = out[name].clamp(0, p.delay_buffer - 1)
        return out

    def perturb_input(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Lost time steps and timing jitter on a time-major input ``[T, B, ...]`` (unchanged if neither)."""
        p = self.profile
        if p.drop_steps == 0 and p.jitter == 0:
            return x
        t, b = x.shape[:2]
        if p.jitter:
            shift = torch.randint(-p.jitter, p.jitter + 1, (b,), generator=generator)
            src = torch.arange(t).unsqueeze(1) - shift.unsqueeze(0)  # [T, B]: x_out[t] = x[t - shift]
            valid = (src >= 0) & (src < t)
            idx = src.clamp(0, t - 1)
            gathered = x.gather(0, idx.view(t, b, *([1] * (x.dim() - 2))).expand(x.shape))
            x = gathered * valid.view(t, b, *([1] * (x.dim() - 2))).to(x.dtype)
        if p.drop_steps:
            keep = torch.rand((t, b), generator=generator) >= p.drop_steps
            x = x * keep.view(t, b, *([1] * (x.dim() - 2))).to(x.dtype)
        return x

    # -- the measurement interface (what calibration may use) ---------------------------------------------
    def _noise(self, shape: tuple[int, ...], scale: float, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * (self.profile.readout_noise * scale)

    @torch.no_grad()
    def probe_membrane(self, layer: int, weight: float, beta_prog: torch.Tensor, steps: int,
                       generator: torch.Generator, alpha_prog: torch.Tensor | None = None) -> torch.Tensor:
        """Impulse response of every neuron of unit ``layer`` (flattened, ``[steps, N]``): a reference synapse of
        programmed weight ``weight`` gets one input spike at ``t = 0``; spiking is disabled; the membrane is read
        out for ``steps`` steps with Gaussian noise of std ``readout_noise * |weight|``.

        ``i[t] = alpha_eff i[t-1] + g w delta[t]``, ``u[t] = beta_eff u[t-1] + i[t]`` (decays programmed to
        ``beta_prog`` / ``alpha_prog``, which may be 0; no synaptic filter, ``i = g w delta``, unless the neuron
        has one; ``beta_eff = 1`` for a non-leaky neuron). Without a synaptic filter ``u[t] = g w beta_eff^t``.
        """
        u = self.layers[layer]  # simulated in float64: the read-out noise is the only error of the probe
        g = self.gains[layer].reshape(-1).double()
        beta = (_decay(beta_prog.reshape(-1).double(), self.tau_factors[layer].reshape(-1).double(), 0.0)
                if u.beta is not None else torch.ones_like(g))
        alpha = torch.zeros_like(g)
        if u.alpha is not None:
            if alpha_prog is None:
                raise ValueError(f"unit {layer} has a synaptic current decay: the probe needs alpha_prog")
            alpha = _decay(alpha_prog.reshape(-1).double(), self.alpha_factors[layer].reshape(-1).double(), 0.0)
        cur, mem, rows = g * weight, torch.zeros_like(g), []
        for _ in range(steps):
            mem = beta * mem + cur
            rows.append(mem)
            cur = alpha * cur
        trace = torch.stack(rows)
        return trace + self._noise(tuple(trace.shape), abs(weight), generator).double()

    @torch.no_grad()
    def probe_adaptation(self, layer: int, rho_prog: torch.Tensor, steps: int, generator: torch.Generator
                         ) -> torch.Tensor:
        """Adaptation variable of every (ALIF) neuron of unit ``layer`` after one forced spike at ``t = 0``,
        read out with noise of std ``readout_noise``: ``a[t] = rho_eff^t`` (``[steps, N]``)."""
        if self.layers[layer].rho is None:
            raise ValueError(f"unit {layer} has no adaptation (not an ALIF population)")
        rho = _decay(rho_prog.reshape(-1).double(), self.rho_factors[layer].reshape(-1).double(), 0.0)
        trace = rho.unsqueeze(0) ** torch.arange(steps, dtype=torch.float64).unsqueeze(1)
        return trace + self._noise(tuple(trace.shape), 1.0, generator).double()

    @torch.no_grad()
    def probe_threshold(self, layer: int, threshold_prog: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Whether each neuron of unit ``layer`` (flattened; threshold programmed to ``threshold_prog``) spikes in
        one step when its reference synapse (programmed weight 1) receives input ``current[n]``:
        ``g I >= f thr_prog``."""
        return (self.gains[layer].reshape(-1) * current >=
                self.threshold_factors[layer].reshape(-1) * threshold_prog.reshape(-1))

    @torch.no_grad()
    def probe_delay(self, name: str, delay_prog: torch.Tensor, steps: int, generator: torch.Generator
                    ) -> torch.Tensor:
        """One spike into every line of delay parameter ``name`` (delays programmed to ``delay_prog``) at
        ``t = 0``; the output read out for ``steps`` steps with noise of std ``readout_noise``: ``[steps, F]``.
        The spike arrives at ``d = h d_prog`` (clamped to the ring buffer, modulo its length ``D``); a
        fractional ``d`` splits it over the two neighbouring steps (``1 - frac`` at ``floor d``, ``frac`` after),
        as the delay layer interpolates."""
        if name not in self.delay_factors:
            raise ValueError(f"no delay parameter {name!r}; delays: {', '.join(self.delay_factors) or 'none'}")
        d = delay_prog * self.delay_factors[name]
        if self.profile.delay_buffer is not None:
            d = d.clamp(0, self.profile.delay_buffer - 1)
        period = self.delay_periods[name]
        d = torch.remainder(d, period)
        k = d.floor()
        frac = d - k
        t = torch.arange(steps, dtype=torch.float32).unsqueeze(1)
        trace = (1 - frac) * (t == k).float() + frac * (t == torch.remainder(k + 1, period)).float()
        return trace + self._noise(tuple(trace.shape), 1.0, generator)

def assign_fleet(num_clients: int, entries: list[tuple[DeviceProfile, float]], rng: np.random.Generator
                 ) -> list[DeviceProfile]:
    """One profile per client: ``fraction`` shares rounded by largest remainder, then shuffled (seeded)."""
    if not entries:
        raise ValueError("a fleet needs at least one device profile")
    fracs = np.asarray([f for _, f in entries], dtype=np.float64)
    if np.any(fracs < 0) or not np.isclose(fracs.sum(), 1.0, atol=1e-6):
        raise ValueError(f"fleet fractions must be >= 0 and sum to 1, got {fracs.tolist()}")
    raw = fracs * num_clients
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: num_clients - int(counts.sum())]:
        counts[i] += 1
    profiles = [p for (p, _), c in zip(entries, counts) for _ in range(int(c))]
    order = rng.permutation(num_clients)
    return [profiles[i] for i in order]
