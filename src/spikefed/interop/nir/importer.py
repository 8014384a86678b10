"""Import: ``nir.NIRGraph`` -> runnable spikefed module (:func:`from_nir`, :func:`load_nir`).

Each node is read by the builder registered for its NIR type
(:data:`~spikefed.interop.nir.import_base.BUILDERS`), the fusion passes fold spikefed's multi-node encodings back
into single layers, and the result runs as a :class:`GraphExecutor` or, when it has that shape, as a SpikingMLP /
SpikingConvNet / RecurrentRegressor.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from . import import_cells, import_layers  # noqa: F401  (register the built-in builders)
from .common import UnsupportedLayerError, nir_package
from .executor import GraphExecutor
from .fold import unfold_r
from .fusion import ImportGraph, fuse
from .import_base import ImportContext, ImportNode, builder_for, node_meta
from .import_cells import build_cell
from .structure import as_model

if TYPE_CHECKING:  # pragma: no cover
    import nir as nir_types

__all__ = ["from_nir", "load_nir", "read_node"]


def read_node(name: str, node: Any, ctx: ImportContext) -> ImportNode:
    """First pass: one NIR node -> an import node (cells stay specs until the fusions are done)."""
    meta = node_meta(node, ctx.use_metadata)
    build = builder_for(node)
    if build is None:
        raise UnsupportedLayerError(f"node {name!r}: NIR node type {type(node).__name__} is not supported by "
                                    "spikefed")
    return build(name, node, meta, ctx)


def from_nir(graph: "nir_types.NIRGraph", dt: float | None = None, *, use_metadata: bool = True,
             dtype: torch.dtype | None = None, structured: bool = True) -> nn.Module:
    """Import a NIR graph as a spikefed module.

    Args:
        graph: a ``nir.NIRGraph`` (from :func:`to_nir`, ``nir.read`` or another tool).
        dt: simulation time step in NIR time units (``beta = 1 - dt / tau`` etc.); default the ``dt`` recorded by
            :func:`to_nir` in the graph metadata, else 1.0.
        use_metadata: use spikefed's node metadata (exact discrete values, subtractive reset, refractory period,
            surrogate, learnable flags). ``False`` reads the NIR fields only, i.e. what any other NIR tool sees:
            reset to ``v_reset``, fixed (non-learnable) parameters, default surrogate.
        dtype: dtype of the module; default the dtype recorded at export, else float32.
        structured: return :class:`~spikefed.snn.models.SpikingMLP` / ``SpikingConvNet`` /
            ``RecurrentRegressor`` when the graph has that shape (default); ``False`` always gives a
            :class:`GraphExecutor`.

    Returns:
        A module taking time-major input ``[T, B, *input_shape]`` and returning a
        :class:`~spikefed.snn.models.ModelOutput`.

    Raises:
        UnsupportedLayerError: a node type spikefed has no layer for, nested graphs, or a cycle other than a
            recurrent LIF layer.
        NIRConversionError: field values the discrete mapping cannot represent (e.g. ``tau <= dt``).
    """
    nir = nir_package()
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"expected a nir.NIRGraph, got {type(graph).__name__} (use load_nir for a file)")
    gmeta = node_meta(graph, use_metadata)
    if use_metadata:  # weights and r exactly as before fold_r (a graph without that metadata is unchanged)
        graph = unfold_r(graph)
    if dt is None:
        dt = float(gmeta.get("dt", 1.0))
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a finite number > 0, got {dt!r}")
    if dtype is None:
        dtype = getattr(torch, str(gmeta.get("dtype", "float32")), torch.float32)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            dtype = torch.float32
    ctx = ImportContext(dt=dt, dtype=dtype, use_metadata=use_metadata)
    nodes = {name: read_node(name, node, ctx) for name, node in graph.nodes.items()}
    inputs = [n for n, v in nodes.items() if v.kind == "input"]
    outputs = [n for n, v in nodes.items() if v.kind == "output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedLayerError(f"spikefed imports graphs with exactly one Input and one Output node, got "
                                    f"inputs {inputs} and outputs {outputs}")
    g = ImportGraph(nodes, [(str(a), str(b)) for a, b in graph.edges])
    fuse(g)
    modules: dict[str, nn.Module] = {}
    for name, node in g.nodes.items():
        if node.kind in ("input", "output"):
            continue
        if node.kind == "cell":
            assert node.cell is not None
            modules[name] = build_cell(node.cell, dtype)
        else:
            assert node.module is not None
            modules[name] = node.module
    in_node = g.nodes[inputs[0]].nir
    in_shape = tuple(int(s) for s in np.atleast_1d(in_node.input_type["input"]))
    ex = GraphExecutor(modules, g.edges, input_name=inputs[0], output_name=outputs[0], input_shape=in_shape, dt=dt)
    return as_model(ex, in_shape, gmeta) if structured else ex


def load_nir(path: str | Path, dt: float | None = None, **kwargs: Any) -> nn.Module:
    """Read a NIR HDF5 file (``nir.read``) and import it with :func:`from_nir` (``dt``, ``kwargs`` passed on)."""
    nir = nir_package()
    return from_nir(nir.read(str(path)), dt, **kwargs)
