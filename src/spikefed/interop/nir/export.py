"""Export: spikefed model -> ``nir.NIRGraph`` (:func:`to_nir`, :func:`save_nir`).

The model is first viewed as a :class:`GraphExecutor` sharing its modules (:data:`MODEL_VIEWS`, by model type),
its per-node shapes are traced with one zero step, and each node is written by the converter registered for its
type (:data:`~spikefed.interop.nir.export_base.CONVERTERS`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from ...snn.models import RecurrentRegressor, SpikingConvNet, SpikingMLP
from . import export_cells, export_layers  # noqa: F401  (register the built-in converters)
from .common import (
    FORMAT_VERSION,
    REFRACTORY_POLICIES,
    RESET_POLICIES,
    SUPPORTED_LAYERS,
    NIRConversionError,
    UnsupportedLayerError,
    lookup,
    nir_package,
)
from .executor import GraphExecutor, apply_stateless, is_stateful, rule_for, run_stateful
from .export_base import ExportContext, Refusal, converter_for
from .fold import fold_r as fold_graph
from .runtime import Flatten, layer_label, unwrap

if TYPE_CHECKING:  # pragma: no cover
    import nir as nir_types

__all__ = [
    "MODEL_VIEWS", "ModelView", "as_graph", "check_exportable", "model_dtype", "register_model_view", "save_nir",
    "to_nir", "trace_shapes", "view_convnet", "view_executor", "view_layer", "view_mlp", "view_regressor",
    "view_sequence",
]

#: ``(model, input_shape or None) -> (GraphExecutor sharing the model's modules, per-sample input shape, graph
#: metadata)``
ModelView = Callable[[Any, Sequence[int] | None], tuple[GraphExecutor, tuple[int, ...], dict[str, Any]]]
#: model type -> view (looked up along the MRO); types without one are exported as a single layer.
MODEL_VIEWS: dict[type, ModelView] = {}


def register_model_view(*types: type) -> Callable[[ModelView], ModelView]:
    """Decorator: the view of models of ``types`` (and their subclasses) as a :class:`GraphExecutor`."""
    def decorate(view: ModelView) -> ModelView:
        for cls in types:
            MODEL_VIEWS[cls] = view
        return view
    return decorate


@register_model_view(GraphExecutor)
def view_executor(model: GraphExecutor, input_shape: Sequence[int] | None
                  ) -> tuple[GraphExecutor, tuple[int, ...], dict[str, Any]]:
    shape = input_shape or model.input_shape
    if shape is None:
        raise NIRConversionError("this GraphExecutor has no input_shape; pass input_shape= to to_nir")
    return model, tuple(shape), {"model": "GraphExecutor"}


@register_model_view(SpikingMLP)
def view_mlp(model: SpikingMLP, input_shape: Sequence[int] | None
             ) -> tuple[GraphExecutor, tuple[int, ...], dict[str, Any]]:
    if model.delays is not None:
        raise NIRConversionError("cannot export a SpikingMLP with axonal delays (model.delays) to NIR: spikefed's "
                                 "NIR chain has no delay node")
    layers: list[nn.Module] = []
    for i, lin in enumerate(model.linears):
        layers.append(lin)
        if i < len(model.neurons):
            layers.append(model.neurons[i])
    if model.integrator is not None:
        layers.append(model.integrator)
    return (GraphExecutor.sequential(*layers), (model.sizes[0],),
            {"model": "SpikingMLP", "readout": model.readout})


@register_model_view(SpikingConvNet)
def view_convnet(model: SpikingConvNet, input_shape: Sequence[int] | None
                 ) -> tuple[GraphExecutor, tuple[int, ...], dict[str, Any]]:
    checks = (("residual blocks", any(model.residual)), ("axonal delays", model.delay is not None),
              (f"pooling={model.pooling}", model.pooling != "max"),
              ("no pooling (pool=1)", not isinstance(model.pool, nn.MaxPool2d)))
    extra = [what for what, used in checks if used]
    if extra:
        raise NIRConversionError(f"cannot export this SpikingConvNet to NIR: {', '.join(extra)} have no node in "
                                 "spikefed's NIR chain (conv -> neuron -> max pool blocks)")
    layers: list[nn.Module] = []
    for conv, neuron in zip(model.convs, model.conv_neurons):
        layers += [conv, neuron, model.pool]
    layers.append(Flatten(0, -1))
    head = model.head
    layers.append(head.linears[0])
    layers.append(head.neurons[0] if head.integrator is None else head.integrator)
    return GraphExecutor.sequential(*layers), tuple(model.in_shape), {"model": "SpikingConvNet",
                                                                      "readout": model.readout}


@register_model_view(RecurrentRegressor)
def view_regressor(model: RecurrentRegressor, input_shape: Sequence[int] | None
                   ) -> tuple[GraphExecutor, tuple[int, ...], dict[str, Any]]:
    layers = [model.encoder, model.neuron, model.decoder, model.readout]
    return GraphExecutor.sequential(*layers), (model.in_features,), {"model": "RecurrentRegressor"}


@register_model_view(nn.Sequential, list, tuple)
def view_sequence(model: Any, input_shape: Sequence[int] | None
                  ) -> tuple[GraphExecutor, tuple[int, ...], dict[str, Any]]:
    if input_shape is None:
        raise NIRConversionError("exporting a sequence of layers needs input_shape= (per-sample shape)")
    return GraphExecutor.sequential(*list(model)), tuple(input_shape), {"model": "sequential"}


def view_layer(model: nn.Module, input_shape: Sequence[int] | None
               ) -> tuple[GraphExecutor, tuple[int, ...], dict[str, Any]]:
    """One runnable layer as a one-node chain (the input shape from ``features`` / ``in_features`` if needed)."""
    shape = input_shape
    if shape is None:
        feats = getattr(model, "features", None)
        if isinstance(feats, int):
            shape = (feats,)
        elif feats:
            shape = tuple(feats)
        elif isinstance(model, nn.Linear):
            shape = (model.in_features,)
    if shape is None:
        raise NIRConversionError(f"cannot tell the input shape of {type(model).__name__}; pass input_shape=")
    return GraphExecutor.sequential(model), tuple(shape), {"model": "sequential"}


def as_graph(model: Any, input_shape: Sequence[int] | None) -> tuple[GraphExecutor, tuple[int, ...], dict[str, Any]]:
    """View a supported model as a :class:`GraphExecutor` sharing its modules, plus graph metadata."""
    view = lookup(MODEL_VIEWS, model)
    if view is not None:
        return view(model, input_shape)
    if rule_for(model) is not None:
        return view_layer(model, input_shape)
    raise UnsupportedLayerError(
        f"cannot export {type(model).__name__} to NIR; supported: SpikingMLP, SpikingConvNet, RecurrentRegressor, "
        "GraphExecutor, nn.Sequential/lists of supported layers, or a single supported layer")


def check_exportable(name: str, op: nn.Module) -> None:
    """Raise for layers with no NIR counterpart before anything is run."""
    refusal = converter_for(unwrap(op))
    if isinstance(refusal, Refusal):
        raise refusal.error(name, op)
    if converter_for(op) is None:
        raise UnsupportedLayerError(f"{layer_label(name, op)} cannot be exported to NIR; supported: {SUPPORTED_LAYERS}")


def model_dtype(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """dtype and device of the model's first floating-point parameter/buffer (default dtype on CPU if none)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


@torch.no_grad()
def trace_shapes(graph: GraphExecutor, input_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
                 ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per node ``(input shape, output shape)`` from one zero step through the graph."""
    values = {graph.input_name: torch.zeros((1, 1, *input_shape), dtype=dtype, device=device)}
    shapes = {}
    for name, op in zip(graph.names, graph.ops):
        h = graph.gather(values, name)
        try:
            y = run_stateful(op, h, None)[0] if is_stateful(op) else apply_stateless(op, h)
        except Exception as exc:  # shape mismatch etc.: name the layer
            raise NIRConversionError(f"{layer_label(name, op)} failed on input shape {tuple(h.shape[2:])}: "
                                     f"{exc}") from exc
        values[name] = y
        shapes[name] = (tuple(h.shape[2:]), tuple(y.shape[2:]))
    return shapes


def to_nir(model: nn.Module | Sequence[nn.Module], dt: float | None = None, *,
           input_shape: Sequence[int] | None = None, reset: Literal["error", "metadata"] = "error",
           refractory: Literal["error", "metadata"] = "error", metadata: bool = True,
           fold_r: bool = True) -> "nir_types.NIRGraph":
    """Export a spikefed model to a ``nir.NIRGraph``.

    Args:
        model: :class:`~spikefed.snn.models.SpikingMLP`, :class:`~spikefed.snn.models.SpikingConvNet`,
            :class:`~spikefed.snn.models.RecurrentRegressor`, :class:`GraphExecutor`, an ``nn.Sequential`` / list of
            supported layers (run time-major, as :meth:`GraphExecutor.sequential`), or one supported layer.
        dt: simulation time step in NIR time units (``tau = dt / (1 - beta)``, delays ``= steps * dt``); default
            the model's ``dt`` (a :class:`GraphExecutor` imported from NIR) or 1.0.
        input_shape: per-sample input shape; needed for ``nn.Sequential``/lists (models know theirs).
        reset: ``"error"`` (default): a layer with ``reset="subtract"`` raises :class:`NIRConversionError`;
            ``"metadata"``: write a standard NIR node with ``v_reset = reset_value`` (reset-to-value, what other
            NIR tools simulate) and keep ``reset="subtract"`` in its metadata for an exact spikefed round trip.
            ``reset="zero"`` maps natively and ``reset="none"`` exactly (integrator + ``Threshold``).
        refractory: ``"error"`` (default) or ``"metadata"`` for layers with a refractory period (NIR has none).
        metadata: write spikefed metadata (exact discrete values, training options). ``False`` writes pure NIR
            fields only (then ``reset="metadata"`` is refused, as nothing would record the reset).
        fold_r: move each neuron's input resistance ``R`` into the weights in front of it, so that every neuron
            node has ``r = 1`` (default; what snnTorch and Norse read correctly, see :mod:`.fold`). ``False``
            writes ``R = tau / dt`` on the neuron nodes and the weights as they are.

    Returns:
        The graph (type-checked by nir). Node names follow the layers (``linear_0``, ``lif_0``, ``li_0``, ...);
        helper nodes get suffixes (``_spike``, ``_rec``, ``_amplitude``, ``_max``).

    Raises:
        NIRConversionError: a layer uses something NIR cannot express and no option allows it.
        UnsupportedLayerError: a layer type has no NIR counterpart (e.g. ALIF).
    """
    nir = nir_package()
    if reset not in RESET_POLICIES:
        raise ValueError(f"unknown reset policy {reset!r}; valid: {', '.join(RESET_POLICIES)}")
    if refractory not in REFRACTORY_POLICIES:
        raise ValueError(f"unknown refractory policy {refractory!r}; valid: {', '.join(REFRACTORY_POLICIES)}")
    if not metadata and "metadata" in (reset, refractory):
        raise ValueError("reset/refractory='metadata' needs metadata=True (the metadata is what records them)")
    if dt is None:
        dt = getattr(model, "dt", None) if isinstance(model, GraphExecutor) else None
        dt = 1.0 if dt is None else dt
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a finite number > 0, got {dt!r}")
    graph, in_shape, graph_meta = as_graph(model, input_shape)
    for name, op in zip(graph.names, graph.ops):
        check_exportable(name, op)
    dtype, device = model_dtype(graph)
    shapes = trace_shapes(graph, in_shape, dtype, device)

    ctx = ExportContext(dt=float(dt), reset=reset, refractory=refractory, metadata=metadata)
    ctx.add("input", nir.Input(input_type=np.array(in_shape)))
    blocks: dict[str, tuple[str, str]] = {graph.input_name: ("input", "input")}
    binary: dict[str, bool] = {graph.input_name: False}
    for name, op in zip(graph.names, graph.ops):
        preds = graph.preds[name]
        b_in = len(preds) == 1 and binary[preds[0]]
        convert = converter_for(op)
        assert convert is not None  # check_exportable
        entry, exit_, binary[name] = convert(ctx, name, op, *shapes[name], b_in)
        blocks[name] = (entry, exit_)
    last = graph.preds[graph.output_name][0]
    out_shape = shapes[last][1] if last in shapes else in_shape
    ctx.add("output", nir.Output(output_type=np.array(out_shape)))
    blocks[graph.output_name] = ("output", "output")
    for a, b in graph.edges:
        ctx.edges.append((blocks[a][1], blocks[b][0]))
    gmeta = ctx.meta(format_version=FORMAT_VERSION, dt=float(dt), dtype=str(dtype).replace("torch.", ""),
                     **graph_meta)
    out = nir.NIRGraph(nodes=ctx.nodes, edges=ctx.edges, metadata=gmeta, type_check=True)
    return fold_graph(out, keep_original=metadata) if fold_r else out


def save_nir(model: nn.Module | "nir_types.NIRGraph", path: str | Path, dt: float | None = None,
             **kwargs: Any) -> "nir_types.NIRGraph":
    """Export ``model`` with :func:`to_nir` (``dt`` and ``kwargs`` passed on) and write it to an HDF5 file.

    A ``nir.NIRGraph`` is written as is. Returns the graph written.
    """
    nir = nir_package()
    graph = model if isinstance(model, nir.NIRGraph) else to_nir(model, dt, **kwargs)
    nir.write(str(path), graph)
    return graph
