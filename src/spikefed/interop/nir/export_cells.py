"""Converters for neurons and integrators (registered on import); see the package docstring for the mapping.

Every neuron-like type goes through :func:`export_cell`, which also unwraps a :class:`Gained` input map, then
dispatches on the layer type through :data:`CELL_CONVERTERS` (the LIF family through :data:`NEURON_KINDS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ...snn.neurons import ALIF, IF, LIF, LeakyIntegrator, RecurrentLIF, Synaptic
from ...snn.surrogate import SURROGATES
from .common import SUPPORTED_LAYERS, NIRConversionError, UnsupportedLayerError, lookup, nir_package
from .export_base import ExportContext, Refusal, exact, f64, register_converter
from .runtime import CurrentIntegrator, Gained, PerfectIntegrator, layer_label

__all__ = [
    "CELL_CONVERTERS", "CellConverter", "CellExport", "NEURON_KINDS", "NEURON_NODES", "check_neuron", "cuba_node",
    "export_cell", "export_current_integrator", "export_leaky_integrator", "export_neuron",
    "export_perfect_integrator", "if_node", "leaky_fields", "lif_node", "neuron_entries", "no_bias", "register_cell",
]


@dataclass(frozen=True)
class CellExport:
    """One neuron/integrator to export: the layer, and the input map of a :class:`Gained` wrapper if any."""

    name: str
    layer: nn.Module
    shape: tuple[int, ...]  #: per-sample shape of the layer's output
    label: str  #: ``layer 'name' (Type)`` for messages
    gain: torch.Tensor | None  #: the wrapper's gain / bias (``None`` when absent)
    bias: torch.Tensor | None
    g: np.ndarray  #: input gain / bias as float64 arrays of ``shape`` (1 / 0 without a wrapper)
    c: np.ndarray


#: ``(ctx, cell) -> (entry node, exit node, output is binary)``
CellConverter = Callable[[ExportContext, CellExport], tuple[str, str, bool]]
#: layer type -> cell converter (looked up along the MRO).
CELL_CONVERTERS: dict[type, CellConverter] = {}
#: spiking layer type -> the kind written to the metadata (``layer``), which also picks the NIR node.
NEURON_KINDS: dict[type, str] = {LIF: "LIF", IF: "IF", Synaptic: "Synaptic", RecurrentLIF: "RecurrentLIF"}

register_converter(ALIF)(Refusal("the adaptive threshold theta[t] = thr + gamma a[t] has no NIR node; replace it by "
                                 "LIF (or Synaptic) before exporting"))


@register_converter(LIF, LeakyIntegrator, PerfectIntegrator, CurrentIntegrator, Gained)
def export_cell(ctx: ExportContext, name: str, op: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                binary_in: bool) -> tuple[str, str, bool]:
    """Nodes for a neuron or integrator (possibly inside :class:`Gained`)."""
    gain = bias = None
    layer = op
    if isinstance(op, Gained):
        layer, gain, bias = op.layer, op.gain, op.bias
    label = layer_label(name, op)
    shape = tuple(out_shape)
    g = f64(gain, shape) if gain is not None else np.ones(shape)
    c = f64(bias, shape) if bias is not None else np.zeros(shape)
    convert = lookup(CELL_CONVERTERS, layer)
    if convert is None:
        raise UnsupportedLayerError(f"{label} cannot be exported to NIR; supported: {SUPPORTED_LAYERS}")
    return convert(ctx, CellExport(name, layer, shape, label, gain, bias, g, c))


def leaky_fields(beta: np.ndarray, gain: np.ndarray, bias: np.ndarray, dt: float) -> dict[str, np.ndarray]:
    """``tau = dt / (1 - beta)``, ``R = gain tau / dt``, ``v_leak = bias tau / dt`` (all float64)."""
    tau = dt / (1.0 - beta)
    return {"tau": tau, "r": gain * tau / dt, "v_leak": bias * tau / dt}


def no_bias(label: str, bias: np.ndarray, what: str) -> None:
    """Refuse a constant input bias on a node type that has no ``v_leak``."""
    if np.any(bias != 0):
        raise NIRConversionError(f"{label}: a constant input bias cannot be expressed by a NIR {what} node")


def register_cell(*types: type) -> Callable[[CellConverter], CellConverter]:
    """Decorator: the cell converter for layers of ``types`` (and their subclasses)."""
    def decorate(convert: CellConverter) -> CellConverter:
        for cls in types:
            CELL_CONVERTERS[cls] = convert
        return convert
    return decorate


@register_cell(LeakyIntegrator)
def export_leaky_integrator(ctx: ExportContext, cell: CellExport) -> tuple[str, str, bool]:
    """:class:`~spikefed.snn.neurons.LeakyIntegrator` -> ``LI``."""
    layer = cell.layer
    assert isinstance(layer, LeakyIntegrator)
    beta = f64(layer.beta, cell.shape)
    f = leaky_fields(beta, cell.g, cell.c, ctx.dt)
    meta = ctx.meta(layer="LeakyIntegrator", features=np.asarray(layer.features, np.int64),
                    learn_beta=isinstance(layer.beta, nn.Parameter), beta=exact(layer.beta))
    ctx.add(cell.name, nir_package().LI(tau=f["tau"], r=f["r"], v_leak=f["v_leak"], metadata=meta))
    return cell.name, cell.name, False


@register_cell(PerfectIntegrator)
def export_perfect_integrator(ctx: ExportContext, cell: CellExport) -> tuple[str, str, bool]:
    """:class:`PerfectIntegrator` -> ``I``."""
    layer = cell.layer
    assert isinstance(layer, PerfectIntegrator)
    no_bias(cell.label, cell.c, "I")
    ctx.add(cell.name, nir_package().I(r=f64(layer.gain, cell.shape) * cell.g / ctx.dt))
    return cell.name, cell.name, False


@register_cell(CurrentIntegrator)
def export_current_integrator(ctx: ExportContext, cell: CellExport) -> tuple[str, str, bool]:
    """:class:`CurrentIntegrator` -> ``CubaLI``."""
    layer, shape, dt = cell.layer, cell.shape, ctx.dt
    assert isinstance(layer, CurrentIntegrator)
    no_bias(cell.label, cell.c, "CubaLI")
    alpha, beta = f64(layer.alpha, shape), f64(layer.beta, shape)
    tau_syn, tau_mem = dt / (1.0 - alpha), dt / (1.0 - beta)
    ctx.add(cell.name, nir_package().CubaLI(tau_syn=tau_syn, tau_mem=tau_mem,
                                            r=cell.g * f64(layer.gain, shape) * tau_mem / dt,
                                            v_leak=np.zeros(shape), w_in=tau_syn / dt))
    return cell.name, cell.name, False


# -------------------------------------------------------------------------------------------------- LIF family


def check_neuron(ctx: ExportContext, cell: CellExport, layer: LIF) -> None:
    """Refuse what NIR neurons cannot express (unless the export options allow it)."""
    if layer.refractory and ctx.refractory != "metadata":
        raise NIRConversionError(
            f"{cell.label} has a refractory period of {layer.refractory} steps, which NIR neurons do not have. Pass "
            "refractory='metadata' to export it anyway (other tools simulate no refractory period; spikefed "
            "restores it from the metadata), or set refractory=0")
    if layer.reset == "subtract" and ctx.reset != "metadata":
        raise NIRConversionError(
            f"{cell.label} uses reset='subtract' (spikefed's default), which NIR cannot express: NIR neurons are set "
            "to v_reset after a spike. Either set the layer's reset to 'zero' (and fine-tune) before exporting, or "
            "pass reset='metadata' to write a standard NIR node with v_reset = reset_value (what other tools will "
            "simulate) and keep the subtractive reset in the node metadata, so spikefed re-imports it exactly")


def neuron_entries(kind: str, layer: LIF) -> dict[str, Any]:
    """The metadata of a spiking layer: exact discrete values and what NIR has no field for."""
    sur = layer.surrogate
    learn = {k: isinstance(getattr(layer, k), nn.Parameter) for k in ("beta", "threshold", "reset_value")}
    entries: dict[str, Any] = dict(
        layer=kind, reset=layer.reset, detach_reset=layer.detach_reset, fused=layer.fused,
        refractory=int(layer.refractory), graded=layer.graded,
        surrogate=sur.name if sur.name in SURROGATES and sur.slope is not None else "custom",
        slope=None if sur.slope is None else float(sur.slope),
        features=np.asarray(layer.features, np.int64),
        learn_threshold=learn["threshold"], learn_reset=learn["reset_value"],
        threshold=exact(layer.threshold_value()), reset_value=exact(layer.reset_value),
    )
    if kind != "IF":
        entries.update(learn_beta=learn["beta"], beta=exact(layer.beta_value()))
    if kind == "Synaptic":
        assert isinstance(layer, Synaptic)
        entries.update(learn_alpha=isinstance(layer.alpha, nn.Parameter), alpha=exact(layer.alpha_value()))
    return entries


def if_node(ctx: ExportContext, cell: CellExport, layer: LIF, thr: np.ndarray, v_r: np.ndarray,
            meta: dict[str, Any]) -> Any:
    """``IF`` (``I`` without reset): ``dv/dt = R I`` with ``R = gain / dt``."""
    nir = nir_package()
    r = cell.g / ctx.dt
    if layer.reset == "none":
        return nir.I(r=r, metadata=meta)
    return nir.IF(r=r, v_threshold=thr, v_reset=v_r, metadata=meta)


def cuba_node(ctx: ExportContext, cell: CellExport, layer: LIF, thr: np.ndarray, v_r: np.ndarray,
              meta: dict[str, Any]) -> Any:
    """``CubaLIF`` (``CubaLI`` without reset)."""
    assert isinstance(layer, Synaptic)
    nir, dt, shape = nir_package(), ctx.dt, cell.shape
    alpha, beta = f64(layer.alpha_value(), shape), f64(layer.beta_value(), shape)
    tau_syn, tau_mem = dt / (1.0 - alpha), dt / (1.0 - beta)
    common = dict(tau_syn=tau_syn, tau_mem=tau_mem, r=cell.g * tau_mem / dt, v_leak=np.zeros(shape),
                  w_in=tau_syn / dt)
    if layer.reset == "none":
        return nir.CubaLI(**common, metadata=meta)
    return nir.CubaLIF(**common, v_threshold=thr, v_reset=v_r, metadata=meta)


def lif_node(ctx: ExportContext, cell: CellExport, layer: LIF, thr: np.ndarray, v_r: np.ndarray,
             meta: dict[str, Any]) -> Any:
    """``LIF`` (``LI`` without reset)."""
    nir = nir_package()
    f = leaky_fields(f64(layer.beta_value(), cell.shape), cell.g, cell.c, ctx.dt)
    if layer.reset == "none":
        return nir.LI(**f, metadata=meta)
    return nir.LIF(**f, v_threshold=thr, v_reset=v_r, metadata=meta)


#: neuron kind -> writer of its NIR node ``(ctx, cell, layer, v_threshold, v_reset, metadata) -> node``
NEURON_NODES: dict[str, Callable[..., Any]] = {"IF": if_node, "Synaptic": cuba_node, "LIF": lif_node,
                                               "RecurrentLIF": lif_node}


@register_cell(LIF)
def export_neuron(ctx: ExportContext, cell: CellExport) -> tuple[str, str, bool]:
    """A LIF-family layer: the neuron node, plus ``Threshold`` (no reset), ``Linear`` cycle (recurrent) and
    ``Scale`` (graded spikes) helper nodes."""
    layer, name, shape = cell.layer, cell.name, cell.shape
    assert isinstance(layer, LIF)
    check_neuron(ctx, cell, layer)
    kind = lookup(NEURON_KINDS, layer) or "LIF"
    if kind in ("IF", "Synaptic"):
        no_bias(cell.label, cell.c, kind)
    thr = f64(layer.threshold_value(), shape)
    v_r = f64(layer.reset_value, shape)
    meta = ctx.meta(**neuron_entries(kind, layer))
    ctx.add(name, NEURON_NODES[kind](ctx, cell, layer, thr, v_r, meta))

    nir = nir_package()
    spike = name
    if layer.reset == "none":  # exact: integrator followed by a threshold
        spike = ctx.add(f"{name}_spike", nir.Threshold(threshold=thr, metadata=ctx.meta(role="spike")))
        ctx.edges.append((name, spike))
    if kind == "RecurrentLIF":
        if cell.gain is not None or cell.bias is not None:
            raise NIRConversionError(f"{cell.label}: an input gain/bias on a recurrent layer cannot be exported")
        rec = ctx.add(f"{name}_rec", nir.Linear(weight=exact(layer.recurrent),  # type: ignore[arg-type]
                                                metadata=ctx.meta(role="recurrent")))
        ctx.edges += [(spike, rec), (rec, name)]
    if layer.graded:
        amp = ctx.add(f"{name}_amplitude", nir.Scale(scale=f64(layer.amplitude, shape).astype(
            exact(layer.amplitude).dtype), metadata=ctx.meta(role="amplitude", amplitude=exact(layer.amplitude))))
        ctx.edges.append((spike, amp))
        return name, amp, False
    return name, spike, True
