"""Builders for the NIR nodes that become one stateless module, a :class:`~spikefed.snn.delay.Delay`, or the graph
input/output (registered by NIR class name on import)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...snn.delay import Delay
from .common import META_ATOL, META_RTOL, NIRConversionError, UnsupportedLayerError
from .import_base import ImportContext, ImportNode, as_array, collapse, ints, register_builder, to_tensor
from .runtime import Flatten, Scale, SumPool2d, Threshold

__all__ = [
    "build_affine", "build_avgpool", "build_conv2d", "build_delay", "build_flatten", "build_input", "build_linear",
    "build_nested_graph", "build_output", "build_scale", "build_sumpool", "build_threshold", "linear_node",
    "pool_args",
]

_Meta = dict[str, Any]


@register_builder("Input")
def build_input(name: str, node: Any, meta: _Meta, ctx: ImportContext) -> ImportNode:
    return ImportNode("input", node, meta)


@register_builder("Output")
def build_output(name: str, node: Any, meta: _Meta, ctx: ImportContext) -> ImportNode:
    return ImportNode("output", node, meta)


@register_builder("Threshold")
def build_threshold(name: str, node: Any, meta: _Meta, ctx: ImportContext) -> ImportNode:
    return ImportNode("threshold", node, meta,
                      module=Threshold(to_tensor(collapse(as_array(node.threshold)), ctx.dtype)))


@register_builder("Scale")
def build_scale(name: str, node: Any, meta: _Meta, ctx: ImportContext) -> ImportNode:
    return ImportNode("scale", node, meta, module=Scale(to_tensor(collapse(as_array(node.scale)), ctx.dtype)))


def linear_node(name: str, node: Any, meta: _Meta, ctx: ImportContext, has_bias: bool) -> ImportNode:
    """``Affine`` / ``Linear`` -> ``nn.Linear`` (2-d weights only)."""
    w = np.asarray(node.weight)
    if w.ndim != 2:
        raise UnsupportedLayerError(f"node {name!r}: only 2-d weight matrices are supported, got {w.shape}")
    lin = nn.Linear(w.shape[1], w.shape[0], bias=has_bias)
    with torch.no_grad():
        lin.weight.data = to_tensor(w, ctx.dtype)
        if has_bias:
            lin.bias.data = to_tensor(np.asarray(node.bias), ctx.dtype)  # type: ignore[union-attr]
    return ImportNode("linear", node, meta, module=lin.to(ctx.dtype))


@register_builder("Affine")
def build_affine(name: str, node: Any, meta: _Meta, ctx: ImportContext) -> ImportNode:
    return linear_node(name, node, meta, ctx, has_bias=True)


@register_builder("Linear")
def build_linear(name: str, node: Any, meta: _Meta, ctx: ImportContext) -> ImportNode:
    return linear_node(name, node, meta, ctx, has_bias=False)


@register_builder("Conv2d")
def build_conv2d(name: str, node: Any, meta: _Meta, ctx: ImportContext) -> ImportNode:
    """``Conv2d`` -> ``nn.Conv2d`` (without bias when the metadata says the exported layer had none)."""
    w = np.asarray(node.weight)
    padding: Any = node.padding if isinstance(node.padding, str) else ints(node.padding)
    has_bias = bool(meta.get("bias", True))
    conv = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], kernel_size=tuple(w.shape[2:]),
                     stride=ints(node.stride), padding=padding, dilation=ints(node.dilation),
                     groups=int(node.groups), bias=has_bias)
    conv.weight.data = to_tensor(w, ctx.dtype)
    if has_bias:
        conv.bias.data = to_tensor(np.asarray(node.bias), ctx.dtype)  # type: ignore[union-attr]
    return ImportNode("conv", node, meta, module=conv.to(ctx.dtype))


@register_builder("Flatten")
def build_flatten(name: str, node: Any, meta: _Meta, ctx: ImportContext) -> ImportNode:
    return ImportNode("flatten", node, meta, module=Flatten(int(node.start_dim), int(node.end_dim)))


def pool_args(node: Any) -> tuple[tuple[int, ...], ...]:
    """``(kernel_size, stride, padding)`` of a 2-d pooling node, each as a pair."""
    return tuple(tuple(int(x) for x in np.broadcast_to(np.asarray(v), (2,)))
                 for v in (node.kernel_size, node.stride, node.padding))


@register_builder("SumPool2d")
def build_sumpool(name: str, node: Any, meta: _Meta, ctx: ImportContext) -> ImportNode:
    k, s, p = pool_args(node)
    return ImportNode("sumpool", node, meta, module=SumPool2d(k, s, p))


@register_builder("AvgPool2d")
def build_avgpool(name: str, node: Any, meta: _Meta, ctx: ImportContext) -> ImportNode:
    k, s, p = pool_args(node)
    return ImportNode("avgpool", node, meta, module=nn.AvgPool2d(k, s, p))


@register_builder("Delay")
def build_delay(name: str, node: Any, meta: _Meta, ctx: ImportContext) -> ImportNode:
    """``Delay`` (``delay / dt`` steps; the exact metadata steps when they agree) -> ``Delay``."""
    d = as_array(node.delay)
    if d.ndim != 1:
        raise UnsupportedLayerError(f"node {name!r}: spikefed delays act on 1-d features, got shape {d.shape}")
    steps = d / ctx.dt
    exact = meta.get("delays")
    if exact is not None and np.asarray(exact).shape == d.shape and np.allclose(
            np.asarray(exact, np.float64), steps, rtol=META_RTOL, atol=META_ATOL):
        steps_t = torch.as_tensor(np.asarray(exact))
    else:
        rounded = np.round(steps)
        steps = np.where(np.abs(steps - rounded) < 1e-9, rounded, steps)
        if np.any(steps < 0):
            raise NIRConversionError(f"node {name!r}: negative delays are not causal")
        steps_t = torch.as_tensor(steps)
    max_delay = int(meta.get("max_delay", int(np.floor(steps.max())) + 1 if steps.size else 1))
    delay = Delay(int(d.shape[0]), max_delay, init=steps_t.to(torch.get_default_dtype()),
                  learnable=bool(meta.get("learnable", False)))
    return ImportNode("delay", node, meta, module=delay.to(ctx.dtype))


@register_builder("NIRGraph")
def build_nested_graph(name: str, node: Any, meta: _Meta, ctx: ImportContext) -> ImportNode:
    raise UnsupportedLayerError(f"node {name!r}: nested NIR graphs are not supported; flatten the graph first")
