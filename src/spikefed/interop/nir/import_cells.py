"""Import of NIR neuron/integrator nodes (``LIF``, ``LI``, ``IF``, ``I``, ``CubaLIF``, ``CubaLI``): discrete
parameters from the fields (see the package docstring for the equations), and the spikefed module for a
:class:`~spikefed.interop.nir.import_base.Cell` once the fusion passes are done."""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ...snn.neurons import IF, LIF, LeakyIntegrator, RecurrentLIF, Synaptic
from ...snn.surrogate import SURROGATES
from .common import NIRConversionError, UnsupportedLayerError
from .import_base import (
    Cell,
    ImportContext,
    ImportNode,
    as_array,
    collapse,
    register_builder,
    resolve,
    snap,
    to_tensor,
)
from .runtime import CurrentIntegrator, Gained, PerfectIntegrator

__all__ = [
    "CELL_MODULES", "CELL_NODES", "SPIKING_KINDS", "Fields", "assign", "build_cell", "cell_options",
    "cuba_fields", "current_integrator", "decay", "leaky_fields", "leaky_integrator", "neuron", "perfect_fields",
    "perfect_integrator", "read_cell",
]

#: cell kinds of spiking neurons (the others are non-spiking integrators)
SPIKING_KINDS = ("lif", "if", "synaptic")

#: what a field reader returns: ``(derived discrete values, input gain, constant input bias or None, node shape)``
Fields = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None, tuple[int, ...]]


def decay(node: str, field_name: str, tau: np.ndarray, dt: float) -> np.ndarray:
    """``1 - dt / tau`` in float64, checked to lie in (0, 1)."""
    with np.errstate(divide="ignore"):
        d = 1.0 - dt / tau
    if not np.all((d > 0) & (d < 1)):
        raise NIRConversionError(
            f"node {node!r}: {field_name} = {tau.ravel()[:4]}... gives a discrete decay 1 - dt/tau outside (0, 1) "
            f"for dt = {dt}; the forward-Euler mapping needs tau > dt (import with a smaller dt)")
    return d


def leaky_fields(name: str, node: Any, dt: float) -> Fields:
    """``LIF`` / ``LI``: ``beta = 1 - dt/tau``, gain ``dt R / tau``, bias ``dt v_leak / tau``."""
    tau, r, v_leak = as_array(node.tau), as_array(node.r), as_array(node.v_leak)
    return {"beta": decay(name, "tau", tau, dt)}, dt * r / tau, dt * v_leak / tau, tau.shape


def perfect_fields(name: str, node: Any, dt: float) -> Fields:
    """``IF`` / ``I``: gain ``dt R``."""
    r = as_array(node.r)
    return {}, dt * r, None, r.shape


def cuba_fields(name: str, node: Any, dt: float) -> Fields:
    """``CubaLIF`` / ``CubaLI``: ``alpha = 1 - dt/tau_syn``, ``beta = 1 - dt/tau_mem``, gain
    ``(dt w_in / tau_syn) (dt R / tau_mem)``; ``v_leak`` must be 0."""
    tau_syn, tau_mem = as_array(node.tau_syn), as_array(node.tau_mem)
    derived = {"alpha": decay(name, "tau_syn", tau_syn, dt), "beta": decay(name, "tau_mem", tau_mem, dt)}
    if np.any(as_array(node.v_leak) != 0):
        raise UnsupportedLayerError(f"node {name!r} ({type(node).__name__}): v_leak != 0 is not supported "
                                    "(spikefed's current-based neurons have no leak potential)")
    gain = (dt * as_array(node.w_in) / tau_syn) * (dt * as_array(node.r) / tau_mem)
    return derived, gain, None, tau_syn.shape


def cell_options(meta: dict[str, Any], default_reset: str) -> dict[str, Any]:
    """Training options from the metadata (defaults when absent); a callable surrogate falls back to atan."""
    sur = meta.get("surrogate", "atan")
    slope = meta.get("slope")
    if sur not in SURROGATES:
        warnings.warn(f"surrogate {sur!r} (a callable) cannot be stored in NIR; using 'atan'", stacklevel=4)
        sur, slope = "atan", None
    return dict(detach_reset=bool(meta.get("detach_reset", True)), surrogate=sur, slope=slope,
                fused=bool(meta.get("fused", True)), refractory=int(meta.get("refractory", 0)),
                reset=str(meta.get("reset", default_reset)))


def read_cell(name: str, node: Any, meta: dict[str, Any], ctx: ImportContext, *, kind: str,
              fields: Callable[[str, Any, float], Fields]) -> ImportNode:
    """Builder of a neuron/integrator node: its discrete parameters as a :class:`Cell` spec."""
    derived, gain, bias, shape = fields(name, node, ctx.dt)
    if kind in SPIKING_KINDS:
        derived["threshold"] = as_array(node.v_threshold)
        derived["reset_value"] = as_array(node.v_reset)
    values, exact = resolve(name, derived, meta)
    feats = meta.get("features")
    features = tuple(int(f) for f in np.atleast_1d(feats)) if feats is not None else tuple(int(s) for s in shape)
    learn = {k: bool(meta.get(f"learn_{k}", False)) for k in ("beta", "threshold", "alpha")}
    learn["reset_value"] = bool(meta.get("learn_reset", False))
    cell = Cell(node=name, kind=kind, shape=tuple(int(s) for s in shape), values=values, exact=exact, learn=learn,
                options=cell_options(meta, "zero" if kind in SPIKING_KINDS else "none"),
                features=features or None, gain=snap(np.broadcast_to(gain, shape), 1.0),
                bias=None if bias is None else snap(np.broadcast_to(bias, shape), 0.0))
    cell.reset = cell.options.pop("reset")
    return ImportNode("cell", node, meta, cell=cell)


#: NIR class name -> (cell kind, field reader)
CELL_NODES: dict[str, tuple[str, Callable[[str, Any, float], Fields]]] = {
    "LIF": ("lif", leaky_fields), "LI": ("li", leaky_fields), "IF": ("if", perfect_fields),
    "I": ("i", perfect_fields), "CubaLIF": ("synaptic", cuba_fields), "CubaLI": ("cubali", cuba_fields),
}
for nir_name, (cell_kind, reader) in CELL_NODES.items():
    register_builder(nir_name)(partial(read_cell, kind=cell_kind, fields=reader))
del nir_name, cell_kind, reader


# -------------------------------------------------------------------------------------------------- modules


def assign(layer: nn.Module, name: str, value: np.ndarray, dtype: torch.dtype, exact: bool) -> None:
    """Set parameter/buffer ``name`` of ``layer`` to ``value`` (keeping a parameter's identity and manifold)."""
    current = getattr(layer, name)
    v = value if exact else collapse(value)
    t = to_tensor(v, dtype)
    if isinstance(current, nn.Parameter):
        current.data = t.expand(current.shape).clone() if t.shape != current.shape else t
    else:
        setattr(layer, name, t)


def neuron(cell: Cell, dtype: torch.dtype) -> nn.Module:
    """The spiking layer for a cell of kind ``lif`` / ``if`` / ``synaptic`` / ``rlif``."""
    vals = cell.values
    feats = cell.features
    opts = dict(cell.options)
    kw: dict[str, Any] = dict(reset=cell.reset, learn_threshold=cell.learn["threshold"],
                              learn_reset=cell.learn["reset_value"], graded=cell.amplitude is not None, **opts)
    layer: nn.Module
    if cell.kind == "if":
        layer = IF(feats, **kw)
    elif cell.kind == "lif":
        layer = LIF(feats, beta=0.5, learn_beta=cell.learn["beta"], **kw)
    elif cell.kind == "rlif":
        if feats is None or len(feats) != 1:
            raise NIRConversionError(f"node {cell.node!r}: a recurrent LIF needs 1-d features, got {feats}")
        layer = RecurrentLIF(feats[0], beta=0.5, learn_beta=cell.learn["beta"], **kw)
        assert cell.recurrent is not None
        layer.recurrent.data = to_tensor(cell.recurrent, dtype)
    else:
        if opts.get("refractory"):
            raise NIRConversionError(f"node {cell.node!r}: Synaptic has no refractory period")
        layer = Synaptic(feats, alpha=0.5, beta=0.5, learn_alpha=cell.learn["alpha"],
                         learn_beta=cell.learn["beta"], **kw)
    for key in ("beta", "alpha", "threshold", "reset_value"):
        if key in vals and hasattr(layer, key) and not (cell.kind == "if" and key == "beta"):
            assign(layer, key, vals[key], dtype, key in cell.exact)
    if cell.amplitude is not None:
        assign(layer, "amplitude", cell.amplitude, dtype, True)
    return layer


def leaky_integrator(cell: Cell, dtype: torch.dtype) -> nn.Module:
    layer = LeakyIntegrator(cell.features, beta=0.5, learn_beta=cell.learn["beta"])
    assign(layer, "beta", cell.values["beta"], dtype, "beta" in cell.exact)
    return layer


def perfect_integrator(cell: Cell, dtype: torch.dtype) -> nn.Module:
    return PerfectIntegrator(1.0)


def current_integrator(cell: Cell, dtype: torch.dtype) -> nn.Module:
    vals = cell.values
    return CurrentIntegrator(to_tensor(collapse(vals["alpha"]), dtype), to_tensor(collapse(vals["beta"]), dtype))


#: cell kind -> module constructor ``(cell, dtype) -> module``
CELL_MODULES: dict[str, Callable[[Cell, torch.dtype], nn.Module]] = {
    "lif": neuron, "if": neuron, "synaptic": neuron, "rlif": neuron, "li": leaky_integrator,
    "i": perfect_integrator, "cubali": current_integrator,
}


def build_cell(cell: Cell, dtype: torch.dtype) -> nn.Module:
    """The spikefed module for a cell (wrapped in :class:`Gained` when it has an input gain or bias)."""
    layer = CELL_MODULES[cell.kind](cell, dtype).to(dtype)
    if cell.gain is None and cell.bias is None:
        return layer
    return Gained(layer, None if cell.gain is None else to_tensor(collapse(cell.gain), dtype),
                  None if cell.bias is None else to_tensor(collapse(cell.bias), dtype)).to(dtype)
