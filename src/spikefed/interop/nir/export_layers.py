"""Converters for the stateless layers and :class:`~spikefed.snn.delay.Delay` (registered on import)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...snn.delay import Delay
from .common import NIRConversionError, nir_package
from .export_base import ExportContext, exact, f64, pair, register_converter
from .runtime import Flatten, Scale, SumPool2d, Threshold, layer_label

__all__ = [
    "add_flatten", "export_avgpool", "export_conv2d", "export_delay", "export_flatten", "export_linear",
    "export_maxpool", "export_scale", "export_sumpool", "export_threshold", "export_torch_flatten",
]

_Shape = tuple[int, ...]


@register_converter(nn.Linear)
def export_linear(ctx: ExportContext, name: str, op: nn.Module, in_shape: _Shape, out_shape: _Shape,
                  binary_in: bool) -> tuple[str, str, bool]:
    """``nn.Linear`` -> ``Affine`` (with bias) or ``Linear``."""
    assert isinstance(op, nn.Linear)
    if len(in_shape) != 1:
        raise NIRConversionError(f"{layer_label(name, op)}: NIR Affine/Linear act on 1-d inputs, got per-sample "
                                 f"shape {in_shape}")
    nir = nir_package()
    w = exact(op.weight)
    node = nir.Linear(weight=w) if op.bias is None else nir.Affine(weight=w, bias=exact(op.bias))
    ctx.add(name, node)
    return name, name, False


@register_converter(nn.Conv2d)
def export_conv2d(ctx: ExportContext, name: str, op: nn.Module, in_shape: _Shape, out_shape: _Shape,
                  binary_in: bool) -> tuple[str, str, bool]:
    """``nn.Conv2d`` -> ``Conv2d`` (a missing bias as zeros, recorded in the metadata)."""
    assert isinstance(op, nn.Conv2d)
    label = layer_label(name, op)
    if op.padding_mode != "zeros":
        raise NIRConversionError(f"{label}: padding_mode={op.padding_mode!r}; NIR Conv2d pads with zeros")
    if len(in_shape) != 3:
        raise NIRConversionError(f"{label}: expected per-sample input (C, H, W), got {in_shape}")
    nir = nir_package()
    bias = op.bias
    b = exact(bias) if bias is not None else np.zeros(op.out_channels, dtype=exact(op.weight).dtype)
    padding = op.padding if isinstance(op.padding, str) else pair(op.padding)
    ctx.add(name, nir.Conv2d(input_shape=(int(in_shape[1]), int(in_shape[2])), weight=exact(op.weight),
                             stride=pair(op.stride), padding=padding, dilation=pair(op.dilation),
                             groups=int(op.groups), bias=b, metadata=ctx.meta(bias=bias is not None)))
    return name, name, False


@register_converter(nn.MaxPool2d)
def export_maxpool(ctx: ExportContext, name: str, op: nn.Module, in_shape: _Shape, out_shape: _Shape,
                   binary_in: bool) -> tuple[str, str, bool]:
    """``nn.MaxPool2d`` of binary spikes -> ``SumPool2d`` followed by ``Threshold(0.5)`` (exact for 0/1)."""
    assert isinstance(op, nn.MaxPool2d)
    label = layer_label(name, op)
    if pair(op.dilation) != (1, 1) or op.ceil_mode or op.return_indices:
        raise NIRConversionError(f"{label}: only dilation=1, ceil_mode=False max pooling can be exported")
    if not binary_in:
        raise NIRConversionError(
            f"{label}: max pooling is exported exactly as SumPool2d followed by Threshold(0.5), which equals "
            "max pooling only for binary (0/1) spike inputs; the input of this layer is not a binary spike "
            "train (raw input, graded spikes, fractional delays or a sum of several branches)")
    nir = nir_package()
    k = pair(op.kernel_size)
    s = pair(op.stride if op.stride is not None else op.kernel_size)
    p = pair(op.padding)
    ctx.add(name, nir.SumPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p),
                                metadata=ctx.meta(layer="MaxPool2d")))
    thr = ctx.add(f"{name}_max", nir.Threshold(threshold=np.full(out_shape, 0.5),
                                               metadata=ctx.meta(role="maxpool")))
    ctx.edges.append((name, thr))
    return name, thr, True


@register_converter(nn.AvgPool2d)
def export_avgpool(ctx: ExportContext, name: str, op: nn.Module, in_shape: _Shape, out_shape: _Shape,
                   binary_in: bool) -> tuple[str, str, bool]:
    """``nn.AvgPool2d`` (plain: padding counted) -> ``AvgPool2d``."""
    assert isinstance(op, nn.AvgPool2d)
    uncounted_pad = not op.count_include_pad and pair(op.padding) != (0, 0)
    if op.ceil_mode or op.divisor_override is not None or uncounted_pad:
        raise NIRConversionError(f"{layer_label(name, op)}: only plain average pooling (no ceil_mode/"
                                 "divisor_override, padding counted) can be exported")
    nir = nir_package()
    ctx.add(name, nir.AvgPool2d(kernel_size=np.array(pair(op.kernel_size)),
                                stride=np.array(pair(op.stride if op.stride is not None else op.kernel_size)),
                                padding=np.array(pair(op.padding))))
    return name, name, False


@register_converter(SumPool2d)
def export_sumpool(ctx: ExportContext, name: str, op: nn.Module, in_shape: _Shape, out_shape: _Shape,
                   binary_in: bool) -> tuple[str, str, bool]:
    """:class:`SumPool2d` -> ``SumPool2d``."""
    assert isinstance(op, SumPool2d)
    nir = nir_package()
    ctx.add(name, nir.SumPool2d(kernel_size=np.array(op.kernel_size), stride=np.array(op.stride),
                                padding=np.array(op.padding)))
    return name, name, False


def add_flatten(ctx: ExportContext, name: str, in_shape: _Shape, start: int, end: int) -> str:
    """A NIR ``Flatten`` node (dims counted without time and batch)."""
    nir = nir_package()
    return ctx.add(name, nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=int(start),
                                     end_dim=int(end)))


@register_converter(nn.Flatten)
def export_torch_flatten(ctx: ExportContext, name: str, op: nn.Module, in_shape: _Shape, out_shape: _Shape,
                         binary_in: bool) -> tuple[str, str, bool]:
    """``nn.Flatten`` -> ``Flatten`` (torch counts the batch dim, NIR does not)."""
    assert isinstance(op, nn.Flatten)
    if op.start_dim < 1 and op.start_dim >= 0:
        raise NIRConversionError(f"{layer_label(name, op)}: flattening the batch dimension cannot be exported")
    start = op.start_dim - 1 if op.start_dim > 0 else op.start_dim
    end = op.end_dim - 1 if op.end_dim > 0 else op.end_dim
    add_flatten(ctx, name, in_shape, start, end)
    return name, name, binary_in


@register_converter(Flatten)
def export_flatten(ctx: ExportContext, name: str, op: nn.Module, in_shape: _Shape, out_shape: _Shape,
                   binary_in: bool) -> tuple[str, str, bool]:
    """:class:`Flatten` -> ``Flatten``."""
    assert isinstance(op, Flatten)
    add_flatten(ctx, name, in_shape, op.start_dim, op.end_dim)
    return name, name, binary_in


@register_converter(Threshold)
def export_threshold(ctx: ExportContext, name: str, op: nn.Module, in_shape: _Shape, out_shape: _Shape,
                     binary_in: bool) -> tuple[str, str, bool]:
    """:class:`Threshold` -> ``Threshold``."""
    assert isinstance(op, Threshold)
    ctx.add(name, nir_package().Threshold(threshold=f64(op.threshold, in_shape)))
    return name, name, True


@register_converter(Scale)
def export_scale(ctx: ExportContext, name: str, op: nn.Module, in_shape: _Shape, out_shape: _Shape,
                 binary_in: bool) -> tuple[str, str, bool]:
    """:class:`Scale` -> ``Scale``."""
    assert isinstance(op, Scale)
    ctx.add(name, nir_package().Scale(scale=f64(op.scale, in_shape)))
    return name, name, False


@register_converter(Delay)
def export_delay(ctx: ExportContext, name: str, op: nn.Module, in_shape: _Shape, out_shape: _Shape,
                 binary_in: bool) -> tuple[str, str, bool]:
    """:class:`~spikefed.snn.delay.Delay` -> ``Delay`` (``steps * dt``; an integer delay keeps spikes binary)."""
    assert isinstance(op, Delay)
    d = op.effective_delays().cpu()
    integer = bool(torch.all(d == torch.floor(d)))
    ctx.add(name, nir_package().Delay(delay=d.to(torch.float64).numpy() * ctx.dt,
                                      metadata=ctx.meta(layer="Delay", max_delay=int(op.max_delay),
                                                        learnable=op.learnable, delays=exact(d))))
    return name, name, binary_in and integer
