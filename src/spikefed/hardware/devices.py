"""Simulated neuromorphic devices: mismatch, weight quantization, lost/jittered time steps, time resolution.

Seed 000 ("hardware Babel tower"): every edge device is different. A device runs a *program* (the values
written to the chip: weights, biases, thresholds, decays) and behaves according to *effective* values that
differ from the program by the device's fabrication mismatch and its number formats. For a
:class:`~spikefed.snn.models.SpikingMLP` with linear layers ``i`` and neurons ``j`` (per neuron, drawn once
per device from the device's own seed)::

    W_eff[i]   = g_i[:, None] * Q_b(W_prog[i])        synaptic gain mismatch g ~ LogNormal, mean 1, CV gain_cv
    b_eff[i]   = g_i * Q_b(b_prog[i])                 (the bias goes through the same column circuit)
    thr_eff[j] = f_j * thr_prog[j]                    threshold mismatch f ~ LogNormal, mean 1, CV threshold_cv
    beta_eff[j] = beta_prog[j] ** (1 / m_j)           leak mismatch: tau_eff = m_j tau_prog, m ~ LogNormal(leak_cv)

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

from ..snn.models import SpikingMLP
from ..snn.neurons import IF, LIF

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

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"device profile {self.name!r}: {field} {why}, got {getattr(self, field)!r}")

        for f in ("threshold_cv", "leak_cv", "gain_cv", "readout_noise"):
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

def supports_devices(model: torch.nn.Module) -> str | None:
    """``None`` if devices can run ``model``, else the reason."""
    if not isinstance(model, SpikingMLP):
        return f"device simulation supports SpikingMLP models, got {type(model).__name__}"
    if any(type(n) not in (LIF, IF) for n in model.neurons):
        return "device simulation supports LIF and IF neurons"
    if any(n.refractory or n.graded for n in model.neurons):
        return "device simulation does not support refractory periods or graded spikes"
    return None


def layer_names(model: SpikingMLP) -> list[dict[str, str | None]]:
    """Per linear layer ``i``: the names of its weight, bias and the threshold / decay of the layer it feeds."""
    out = []
    for i, lin in enumerate(model.linears):
        entry: dict[str, str | None] = {"weight": f"linears.{i}.weight",
                                        "bias": f"linears.{i}.bias" if lin.bias is not None else None,
                                        "threshold": None, "beta": None}
        if i < len(model.neurons):
            entry["threshold"] = f"neurons.{i}.threshold"
            entry["beta"] = f"neurons.{i}.beta" if type(model.neurons[i]) is LIF else None
        elif model.integrator is not None:
            entry["beta"] = "integrator.beta"
        out.append(entry)
    return out


def full_program(model: SpikingMLP, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``params`` (trainable values) plus the model's fixed thresholds / decays, each as a per-neuron vector."""
    out = dict(params)
    buffers = dict(model.named_buffers())
    for i, names in enumerate(layer_names(model)):
        width = model.linears[i].out_features
        for key in ("threshold", "beta"):
            name = names[key]
            if name is None:
                continue
            value = out.get(name, buffers.get(name))
            assert value is not None, name
            out[name] = value.expand(width) if value.dim() == 0 else value
    return out


class Device:
    """One simulated device running ``model``'s architecture; mismatch drawn once from ``seed``.

    The factors (:attr:`gains`, :attr:`threshold_factors`, :attr:`tau_factors`, one ``[out]`` vector per
    linear layer) are the simulation's ground truth; calibration must not read them.
    """

    def __init__(self, profile: DeviceProfile, model: SpikingMLP, seed: int) -> None:
        reason = supports_devices(model)
        if reason is not None:
            raise ValueError(reason)
        self.profile = profile
        self.layers = layer_names(model)
        rng = np.random.default_rng(seed)
        self.gains: list[torch.Tensor] = []
        self.threshold_factors: list[torch.Tensor] = []
        self.tau_factors: list[torch.Tensor] = []
        for lin in model.linears:
            n = lin.out_features
            self.gains.append(lognormal_factors(n, profile.gain_cv, rng))
            self.threshold_factors.append(lognormal_factors(n, profile.threshold_cv, rng))
            self.tau_factors.append(lognormal_factors(n, profile.leak_cv, rng))

    def num_steps(self, nominal: int) -> int:
        """Steps the device simulates for a nominal ``T``: ``max(1, round(T / dt))``."""
        return max(1, int(round(nominal / self.profile.dt)))

    def effective(self, program: dict[str, torch.Tensor],
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Programmed values -> the values that govern the device's dynamics (differentiable, QAT STE)."""
        p = self.profile
        out = dict(program)
        for i, names in enumerate(self.layers):
            g = self.gains[i]
            w = program[names["weight"]]  # type: ignore[index]
            out[names["weight"]] = g.unsqueeze(1) * quantize(w, p.weight_bits, p.rounding, generator)  # type: ignore[index]
            if names["bias"] is not None and names["bias"] in program:
                out[names["bias"]] = g * quantize(program[names["bias"]], p.weight_bits, p.rounding, generator)
            if names["threshold"] is not None and names["threshold"] in program:
                out[names["threshold"]] = self.threshold_factors[i] * program[names["threshold"]]
            if names["beta"] is not None and names["beta"] in program:
                beta = program[names["beta"]].clamp(1e-6, 1 - 1e-6)
                out[names["beta"]] = beta ** (1.0 / self.tau_factors[i])
        for name in program:
            if "delay" in name.split(".")[-1] and p.delay_buffer is not None:
                out[name] = program[name].clamp(0, p.delay_buffer - 1)
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
    @torch.no_grad()
    def probe_membrane(self, layer: int, weight: float, beta_prog: torch.Tensor, steps: int,
                       generator: torch.Generator) -> torch.Tensor:
        """Impulse response of every neuron of ``layer``: a reference synapse of programmed weight ``weight``
        gets one input spike at ``t = 0``; spiking is disabled; the membrane is read out for ``steps`` steps
        with Gaussian noise of std ``readout_noise * |weight|``. Returns ``[steps, N]``.

        ``u[t] = g * weight * beta_eff^t`` (``beta_eff = beta_prog^(1/m)``; 1 for a non-leaky neuron).
        """
        g = self.gains[layer]
        leaky = self.layers[layer]["beta"] is not None
        beta_eff = beta_prog.clamp(1e-6, 1 - 1e-6) ** (1.0 / self.tau_factors[layer]) if leaky else torch.ones_like(g)
        t = torch.arange(steps, dtype=torch.float32).unsqueeze(1)
        u = g * weight * beta_eff.unsqueeze(0) ** t
        noise = torch.randn(u.shape, generator=generator) * (self.profile.readout_noise * abs(weight))
        return u + noise

    @torch.no_grad()
    def probe_threshold(self, layer: int, threshold_prog: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Whether each neuron of ``layer`` (threshold programmed to ``threshold_prog``) spikes in one step when
        its reference synapse (programmed weight 1) receives input ``current[n]``: ``g I >= f thr_prog``."""
        return self.gains[layer] * current >= self.threshold_factors[layer] * threshold_prog


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
