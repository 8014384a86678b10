"""The export context and the converter registry: module type -> function that writes its NIR nodes.

A converter is called as ``convert(ctx, name, module, in_shape, out_shape, binary_in)`` (per-sample shapes,
``binary_in``: the input is a 0/1 spike train) and returns ``(entry node, exit node, output is binary)``: the
names of the NIR nodes that the incoming edges enter and the outgoing edges leave (the same node unless the layer
needs several). Lookups walk the MRO, so subclasses of a registered type use its converter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .common import META_KEY, NIRConversionError, UnsupportedLayerError, lookup
from .runtime import layer_label

__all__ = [
    "CONVERTERS", "Converter", "ExportContext", "Refusal", "clean_meta", "converter_for", "exact", "f64", "pair",
    "register_converter",
]


@dataclass
class ExportContext:
    """Accumulates NIR nodes and edges while exporting; carries the export options."""

    dt: float
    reset: str
    refractory: str
    metadata: bool
    nodes: dict[str, Any] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, node: Any) -> str:
        """Add NIR node ``node`` as ``name``; returns the name."""
        if name in self.nodes:  # pragma: no cover - names come from unique graph names
            raise NIRConversionError(f"duplicate NIR node name {name!r}")
        self.nodes[name] = node
        return name

    def meta(self, **entries: Any) -> dict[str, Any]:
        """``{"spikefed": entries}`` (empty when metadata is switched off)."""
        return {META_KEY: clean_meta(entries)} if self.metadata else {}


#: ``(ctx, name, module, in_shape, out_shape, binary_in) -> (entry node, exit node, output is binary)``
Converter = Callable[[ExportContext, str, nn.Module, tuple[int, ...], tuple[int, ...], bool], tuple[str, str, bool]]

#: module type -> converter (looked up along the MRO).
CONVERTERS: dict[type, Converter] = {}


def register_converter(*types: type) -> Callable[[Converter], Converter]:
    """Decorator: use the decorated function to export modules of ``types`` (and their subclasses) to NIR.

    Replaces an earlier converter for the same types. The module must also be runnable by
    :class:`~spikefed.interop.nir.GraphExecutor` (export traces shapes through it), see
    :func:`~spikefed.interop.nir.register_layer`.
    """
    def decorate(convert: Converter) -> Converter:
        for cls in types:
            CONVERTERS[cls] = convert
        return convert
    return decorate


def converter_for(op: nn.Module) -> Converter | None:
    """The converter for ``op``'s type (or its nearest registered base class), else ``None``."""
    return lookup(CONVERTERS, op)


class Refusal:
    """A converter entry for a type that has no NIR counterpart: exporting it raises
    :class:`UnsupportedLayerError` with ``reason`` (checked for every layer before anything is run)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def error(self, name: str, op: nn.Module) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"{layer_label(name, op)}: {self.reason}")

    def __call__(self, ctx: ExportContext, name: str, op: nn.Module, in_shape: tuple[int, ...],
                 out_shape: tuple[int, ...], binary_in: bool) -> tuple[str, str, bool]:
        raise self.error(name, op)


# -------------------------------------------------------------------------------------------------- values


def clean_meta(entries: dict[str, Any]) -> dict[str, Any]:
    """Keep only values NIR's HDF5 writer stores faithfully (str, bool, int, float, ndarray, nested dict)."""
    out: dict[str, Any] = {}
    for k, v in entries.items():
        if v is None:
            continue
        if isinstance(v, dict):
            out[k] = clean_meta(v)
        elif isinstance(v, (torch.Tensor, np.ndarray)):
            a = v.detach().cpu().numpy().copy() if isinstance(v, torch.Tensor) else v
            # nir's writer compresses array datasets, which HDF5 refuses for 0-d ones: store those as scalars
            out[k] = a[()] if a.ndim == 0 else a
        elif isinstance(v, (str, bool, int, float)):
            out[k] = v
        elif isinstance(v, (tuple, list)):
            out[k] = np.asarray(v)
        else:  # pragma: no cover - internal callers only pass the above
            raise TypeError(f"metadata entry {k!r} has unsupported type {type(v).__name__}")
    return out


def f64(t: torch.Tensor | float, shape: Sequence[int]) -> np.ndarray:
    """``t`` as a float64 array broadcast to ``shape`` (a copy)."""
    a = t.detach().cpu().to(torch.float64).numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)
    return np.broadcast_to(a, tuple(shape)).astype(np.float64).copy()


def exact(t: torch.Tensor) -> np.ndarray:
    """The tensor's values in its own dtype and shape (for metadata)."""
    return t.detach().cpu().numpy().copy()


def pair(v: Any) -> tuple[int, int]:
    """An int or a pair of ints as a pair of ints."""
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))
