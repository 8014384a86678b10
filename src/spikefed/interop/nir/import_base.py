"""Import scaffolding: the builder registry (NIR node type -> function making an import node) and shared readers.

A builder is called as ``build(name, node, meta, ctx)`` (``meta``: the node's spikefed metadata, empty when not
used) and returns an :class:`ImportNode`: either a finished ``module`` or, for neurons/integrators, a
:class:`Cell` spec that the fusion passes may still change before it becomes a module. ``nir`` is an optional
dependency, so built-in builders are registered by the NIR class *name* and resolved to the classes on first use;
lookups walk the MRO of the node's type.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .common import META_ATOL, META_KEY, META_RTOL, SNAP_ATOL, lookup, nir_package

__all__ = [
    "BUILDERS", "PENDING", "Builder", "Cell", "ImportContext", "ImportNode", "as_array", "builder_for", "collapse",
    "ints", "node_meta", "plain", "register_builder", "resolve", "resolve_pending", "snap", "to_tensor",
]


@dataclass(frozen=True)
class ImportContext:
    """Options of one :func:`~spikefed.interop.nir.from_nir` call."""

    dt: float
    dtype: torch.dtype
    use_metadata: bool


@dataclass
class Cell:
    """A neuron or integrator read from NIR fields (and metadata), turned into a module at the end."""

    node: str
    kind: str  # spiking: lif, if, synaptic, rlif ; non-spiking: li, i, cubali
    shape: tuple[int, ...]
    values: dict[str, np.ndarray]  # beta, alpha, threshold, reset_value (node shape, or exact metadata shape)
    exact: set[str] = field(default_factory=set)  # which values are exact metadata values (kept as they are)
    learn: dict[str, bool] = field(default_factory=dict)
    reset: str = "zero"
    options: dict[str, Any] = field(default_factory=dict)
    features: tuple[int, ...] | None = None
    gain: np.ndarray | None = None
    bias: np.ndarray | None = None
    amplitude: np.ndarray | None = None
    amplitude_learn: bool = True
    recurrent: np.ndarray | None = None


@dataclass
class ImportNode:
    """One NIR node on its way to a module."""

    kind: str  # input, output, cell, threshold, scale, linear, conv, flatten, sumpool, avgpool, maxpool, delay
    nir: Any
    meta: dict[str, Any]
    cell: Cell | None = None
    module: nn.Module | None = None


#: ``(name, node, meta, ctx) -> ImportNode``
Builder = Callable[[str, Any, dict[str, Any], ImportContext], ImportNode]
#: NIR node type -> builder (looked up along the MRO).
BUILDERS: dict[type, Builder] = {}
# builders registered by NIR class name, moved into BUILDERS once nir is imported (in registration order)
PENDING: dict[str, Builder] = {}


def resolve_pending() -> None:
    """Move the builders registered by NIR class name into :data:`BUILDERS`."""
    if PENDING:
        nir = nir_package()
        for name, build in list(PENDING.items()):
            BUILDERS[getattr(nir, name)] = build
        PENDING.clear()


def register_builder(*node_types: type | str) -> Callable[[Builder], Builder]:
    """Decorator: use the decorated function to import NIR nodes of ``node_types`` (classes, or class names in the
    ``nir`` package) and their subclasses. A later registration for the same type wins."""
    def decorate(build: Builder) -> Builder:
        for t in node_types:
            if isinstance(t, str):
                PENDING[t] = build
            else:
                resolve_pending()
                BUILDERS[t] = build
        return build
    return decorate


def builder_for(node: Any) -> Builder | None:
    """The builder for ``node``'s type (or its nearest registered base class), else ``None``."""
    resolve_pending()
    return lookup(BUILDERS, node)


# -------------------------------------------------------------------------------------------------- readers


def plain(v: Any) -> Any:
    """numpy scalars / bytes (as h5py returns them) -> Python values; dicts recursively."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, bytes):
        return v.decode("utf8")
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray) and v.dtype.kind in "SO":
        return v.astype(str)
    return v


def node_meta(node: Any, use: bool) -> dict[str, Any]:
    """spikefed's metadata entry of a node or graph (``{}`` when absent or not used)."""
    if not use:
        return {}
    meta = getattr(node, "metadata", None)
    if not isinstance(meta, dict) or not isinstance(meta.get(META_KEY), dict):
        return {}
    return plain(meta[META_KEY])


def as_array(v: Any) -> np.ndarray:
    """``v`` as a float64 array."""
    return np.asarray(v, dtype=np.float64)


def to_tensor(v: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A tensor copy of ``v`` in ``dtype``."""
    return torch.as_tensor(np.array(v), dtype=dtype)


def collapse(v: np.ndarray) -> np.ndarray:
    """A node-shaped array whose entries are all equal -> 0-d (spikefed's scalar buffers)."""
    flat = np.asarray(v).ravel()
    return np.asarray(flat[0]) if flat.size and np.all(flat == flat[0]) else np.asarray(v)


def ints(v: Any) -> tuple[int, ...]:
    """An int or array of ints as a tuple of ints."""
    return tuple(int(x) for x in np.atleast_1d(np.asarray(v)))


def snap(g: np.ndarray, target: float) -> np.ndarray | None:
    """``None`` when ``g`` equals ``target`` up to float64 rounding (no arithmetic needed), else ``g``."""
    return None if np.allclose(g, target, rtol=0.0, atol=SNAP_ATOL) else g


def resolve(node: str, derived: dict[str, np.ndarray], meta: dict[str, Any], stacklevel: int = 3
            ) -> tuple[dict[str, np.ndarray], set[str]]:
    """Exact metadata values when they all agree with the NIR-derived ones, else the derived values (with a
    warning, attributed ``stacklevel`` frames up). Returns the values and the names of those taken from the
    metadata."""
    keys = [k for k in derived if k in meta]
    if not keys:
        return derived, set()
    exact = {k: np.asarray(meta[k]) for k in keys}
    try:
        agree = all(np.allclose(np.broadcast_to(exact[k].astype(np.float64), derived[k].shape), derived[k],
                                rtol=META_RTOL, atol=META_ATOL) for k in keys)
    except ValueError:
        agree = False
    if not agree:
        warnings.warn(f"node {node!r}: the spikefed metadata disagrees with the NIR fields (edited by another tool, "
                      "or imported with a different dt); using the NIR fields", stacklevel=stacklevel)
        return derived, set()
    return {**derived, **exact}, set(keys)
