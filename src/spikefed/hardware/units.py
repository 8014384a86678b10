"""Which parameters of a spikefed model a neuromorphic chip holds, grouped by the circuit they live in.

A device does not know model classes; it knows *units*: a synapse array (a ``Linear`` weight matrix or a
``Conv2d`` kernel, its bias, and for recurrent neurons the recurrent matrix) and the neuron population it feeds
(threshold, membrane decay ``beta``, synaptic decay ``alpha``, adaptation decay ``rho`` and strength ``gamma``,
reset offset). :func:`model_units` walks any model's modules: the i-th ``Linear``/``Conv2d`` (in module order)
feeds the i-th neuron module (a :class:`~spikefed.snn.neurons.LIF` of any kind, or a
:class:`~spikefed.snn.neurons.LeakyIntegrator` read-out). :class:`~spikefed.snn.delay.Delay` modules are axonal
delay lines, held separately (:func:`delay_lines`).

Per-neuron values have the shape of the neuron population: ``[out]`` after a ``Linear``, ``[C, H, W]`` (one
physical neuron per position of the feature map) after a ``Conv2d``. A conv kernel is one shared memory, so a
neuron's synaptic gain cannot be written into it; the gain of a conv unit is *folded*: the device and its
calibration express it through the neuron's threshold, reset offset and adaptation strength instead (exact for
the spikes of a membrane that is linear in its input, see :mod:`spikefed.hardware.devices`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..snn.delay import Delay
from ..snn.neurons import ALIF, IF, LIF, LeakyIntegrator, Synaptic

NEURON_KINDS = ("lif", "if", "synaptic", "alif", "integrator")


@dataclass(frozen=True)
class Unit:
    """One synapse array and the neuron population it feeds (parameter names; ``None`` where absent).

    ``fold``: the synaptic gain is expressed through the threshold (conv kernels are shared by every position).
    ``source``: what the synapse array receives: ``"data"`` (the model's encoded input: the first unit) or
    ``"spikes"`` (spikes of an earlier unit). A device with a coarser time step ``dt`` receives data as a
    per-step mean (event frames are rebinned by the mean) but spikes as one event per device step, which stands
    for the spikes of ``dt`` nominal steps, so the calibration scales the two differently (its ``_zoh``).
    """

    weight: str
    bias: str | None
    kind: str  # "linear" | "conv"
    shape: tuple[int, ...]  # the neuron population's shape
    neuron: str  # one of NEURON_KINDS
    threshold: str | None = None
    beta: str | None = None
    alpha: str | None = None
    rho: str | None = None
    gamma: str | None = None
    reset: str | None = None
    recurrent: str | None = None
    source: str = "spikes"  # "data" | "spikes"

    @property
    def fold(self) -> bool:
        return self.kind == "conv"

    def neuron_values(self) -> dict[str, str]:
        """``{role: name}`` of the per-neuron values this unit has (threshold, beta, alpha, rho, gamma, reset)."""
        roles = ("threshold", "beta", "alpha", "rho", "gamma", "reset")
        return {r: getattr(self, r) for r in roles if getattr(self, r) is not None}


def _neuron_kind(m: nn.Module) -> str:
    if isinstance(m, LeakyIntegrator):
        return "integrator"
    if isinstance(m, Synaptic):
        return "synaptic"
    if isinstance(m, ALIF):
        return "alif"
    if isinstance(m, IF):
        return "if"
    return "lif"


def _walk(model: nn.Module) -> tuple[list[Unit], str | None]:
    synapses = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    neurons = [(n, m) for n, m in model.named_modules() if isinstance(m, (LIF, LeakyIntegrator))]
    name = type(model).__name__
    if not synapses:
        return [], f"device simulation needs Linear/Conv2d synapse layers; {name} has none"
    if len(synapses) != len(neurons):
        return [], (f"device simulation pairs the i-th Linear/Conv2d with the i-th neuron module; {name} has "
                    f"{len(synapses)} synapse layers and {len(neurons)} neuron modules")
    units: list[Unit] = []
    for (sname, syn), (nname, neu) in zip(synapses, neurons):
        conv = isinstance(syn, nn.Conv2d)
        kind = _neuron_kind(neu)
        features: tuple[int, ...] = tuple(getattr(neu, "features", ()) or ())
        shape: tuple[int, ...]
        if isinstance(syn, nn.Conv2d):
            if len(features) != 3 or features[0] != syn.out_channels:
                return [], (f"device simulation needs the neuron after conv layer {sname} to declare its feature "
                            f"map shape (C={syn.out_channels}, H, W); {nname} has features {features or None}")
            if kind == "integrator":
                return [], (f"conv layer {sname} feeds a non-spiking read-out {nname}: a conv unit's gain is "
                            "folded into the threshold, which a leaky integrator lacks")
            shape = features
        else:
            assert isinstance(syn, nn.Linear)  # the synapses are Linear or Conv2d
            shape = (syn.out_features,)
            if features not in ((), shape):
                return [], f"neuron {nname} has features {features}, but {sname} has {syn.out_features} outputs"
        spiking = kind != "integrator"
        params = dict(neu.named_parameters(recurse=False))
        has = params | dict(neu.named_buffers(recurse=False))
        units.append(Unit(
            weight=f"{sname}.weight", bias=f"{sname}.bias" if syn.bias is not None else None,
            kind="conv" if conv else "linear", shape=shape, neuron=kind,
            threshold=f"{nname}.threshold" if spiking else None,
            beta=f"{nname}.beta" if kind != "if" else None,
            alpha=f"{nname}.alpha" if kind == "synaptic" else None,
            rho=f"{nname}.rho" if kind == "alif" else None,
            gamma=f"{nname}.gamma" if kind == "alif" else None,
            # the reset offset is a program value of its own only where the map changes it (conv) or it is learned
            reset=f"{nname}.reset_value" if spiking and (conv or "reset_value" in params) else None,
            recurrent=f"{nname}.recurrent" if "recurrent" in has else None,
            source="spikes" if units else "data"))
    return units, None


def delay_lines(model: nn.Module) -> dict[str, int]:
    """``{parameter name: ring length D}`` of every :class:`~spikefed.snn.delay.Delay` module's delays."""
    return {f"{n}.delays" if n else "delays": m.max_delay for n, m in model.named_modules() if isinstance(m, Delay)}


def supports_devices(model: nn.Module) -> str | None:
    """``None`` if devices can run ``model``, else the reason (names the module or parameter)."""
    units, reason = _walk(model)
    if reason is not None:
        return reason
    known = {n for u in units for n in (u.weight, u.bias, u.recurrent, *u.neuron_values().values()) if n}
    known |= set(delay_lines(model))
    for n, m in model.named_modules():
        if isinstance(m, LIF) and m.refractory and isinstance(m, (Synaptic, ALIF)):
            return f"neuron {n}: refractory periods are only defined for LIF/IF"
    for n, _ in model.named_parameters():
        if n not in known and not n.endswith(".amplitude"):
            return (f"device simulation does not know which circuit holds parameter {n} of "
                    f"{type(model).__name__} (known: synapse weights/biases, neuron values, delays, spike "
                    "amplitudes)")
    return None


def model_units(model: nn.Module) -> list[Unit]:
    """The units of ``model`` (``ValueError`` with the reason if devices cannot run it)."""
    reason = supports_devices(model)
    if reason is not None:
        raise ValueError(reason)
    return _walk(model)[0]


def layer_names(model: nn.Module) -> list[Unit]:
    """The units of ``model`` (kept name: one entry per synapse layer)."""
    return model_units(model)


def full_program(model: nn.Module, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``params`` (trainable values) plus the model's fixed neuron values, each expanded to its unit's shape."""
    out = dict(params)
    buffers = dict(model.named_buffers())
    for u in model_units(model):
        for name in u.neuron_values().values():
            value = out.get(name, buffers.get(name))
            if value is None:
                raise ValueError(f"neither a parameter nor a buffer named {name}")
            out[name] = value.expand(u.shape) if value.shape != u.shape else value
    return out
