"""Recognise imported chains that have the shape of a spikefed model and rebuild that model around the layers."""

from __future__ import annotations

from typing import Any

from torch import nn

from ...snn.models import RecurrentRegressor, SpikingConvNet, SpikingMLP
from ...snn.neurons import IF, LIF, LeakyIntegrator, RecurrentLIF, Synaptic
from .executor import GraphExecutor
from .runtime import Flatten

__all__ = ["NEURON_NAMES", "as_convnet", "as_mlp", "as_model", "as_regressor", "chain", "neuron_kind"]

#: exact neuron type -> the name spikefed's model constructors take (subclasses are not recognised)
NEURON_NAMES: dict[type, str] = {LIF: "lif", IF: "if", Synaptic: "synaptic", RecurrentLIF: "rlif"}


def neuron_kind(op: nn.Module) -> str | None:
    return NEURON_NAMES.get(type(op))


def chain(ex: GraphExecutor) -> list[nn.Module] | None:
    """The ops of ``ex`` when it is a simple chain input -> op_0 -> ... -> output, else ``None``."""
    prev = ex.input_name
    for name in ex.names:
        if ex.preds[name] != [prev]:
            return None
        prev = name
    if ex.preds[ex.output_name] != [prev]:
        return None
    return list(ex.ops)


def as_mlp(ops: list[nn.Module], in_shape: tuple[int, ...] | None) -> SpikingMLP | None:
    """A SpikingMLP with exactly these layers, when they have its shape (Linear, neuron, ..., Linear, neuron|LI)."""
    if in_shape is None or len(in_shape) != 1 or len(ops) < 2 or len(ops) % 2:
        return None
    linears, cells = ops[0::2], ops[1::2]
    if not all(type(lin) is nn.Linear for lin in linears):
        return None
    if len({lin.bias is not None for lin in linears}) != 1:  # type: ignore[union-attr]
        return None
    readout = "membrane" if type(cells[-1]) is LeakyIntegrator else "spikes"
    spiking = cells[:-1] if readout == "membrane" else cells
    kinds = {neuron_kind(c) for c in spiking}
    if None in kinds or len(kinds) > 1:
        return None
    sizes = [in_shape[0]] + [lin.out_features for lin in linears]  # type: ignore[union-attr]
    if any(lin.in_features != s for lin, s in zip(linears, sizes)):  # type: ignore[union-attr]
        return None
    kind = kinds.pop() if kinds else "lif"
    has_bias = linears[0].bias is not None  # type: ignore[union-attr]
    model = SpikingMLP(sizes, neuron=kind, readout=readout, bias=has_bias)
    model.linears = nn.ModuleList(linears)
    model.neurons = nn.ModuleList(spiking)
    if readout == "membrane":
        model.integrator = cells[-1]  # type: ignore[assignment]
    return model


def as_convnet(ops: list[nn.Module], in_shape: tuple[int, ...] | None) -> SpikingConvNet | None:
    """A SpikingConvNet with these layers: [Conv2d, neuron, MaxPool2d] * n, Flatten, Linear, neuron|LI."""
    if in_shape is None or len(in_shape) != 3 or len(ops) < 3 or (len(ops) - 3) % 3:
        return None
    n = (len(ops) - 3) // 3
    convs, neurons, pools = ops[0:3 * n:3], ops[1:3 * n:3], ops[2:3 * n:3]
    flat, head_lin, head_cell = ops[3 * n:]
    if not (isinstance(flat, Flatten) and flat.start_dim == 0 and flat.end_dim == -1 and type(head_lin) is nn.Linear
            and head_lin.bias is not None):
        return None
    ks, ps = set(), set()
    for conv in convs:
        if type(conv) is not nn.Conv2d or conv.bias is None or conv.groups != 1:
            return None
        k = conv.kernel_size
        if (k[0] != k[1] or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.padding_mode != "zeros"
                or conv.padding != (k[0] // 2, k[0] // 2)):
            return None
        ks.add(k[0])
    for pool in pools:
        if type(pool) is not nn.MaxPool2d or pool.padding != 0 or pool.dilation != 1 or pool.ceil_mode:
            return None
        if not isinstance(pool.kernel_size, int) or pool.stride != pool.kernel_size:
            return None
        ps.add(pool.kernel_size)
    if len(ks) > 1 or len(ps) > 1:
        return None
    readout = "membrane" if type(head_cell) is LeakyIntegrator else "spikes"
    spiking = list(neurons) + ([head_cell] if readout == "spikes" else [])
    kinds = {neuron_kind(c) for c in spiking}
    if None in kinds or "rlif" in kinds or len(kinds) > 1:
        return None
    kind = kinds.pop() if kinds else "lif"
    k, p = (ks.pop() if ks else 3), (ps.pop() if ps else 2)
    try:
        model = SpikingConvNet(in_shape, head_lin.out_features, channels=[c.out_channels for c in convs],
                               kernel_size=k, pool=p, neuron=kind, readout=readout)
    except ValueError:
        return None
    if head_lin.in_features != model.head.linears[0].in_features:
        return None
    for a, b in zip(model.conv_neurons, neurons):
        if tuple(a.features) != tuple(getattr(b, "features", ())):
            return None
    model.convs = nn.ModuleList(convs)
    model.conv_neurons = nn.ModuleList(neurons)
    model.head.linears = nn.ModuleList([head_lin])
    if readout == "spikes":
        model.head.neurons = nn.ModuleList([head_cell])
    else:
        model.head.integrator = head_cell  # type: ignore[assignment]
    return model


def as_regressor(ops: list[nn.Module], in_shape: tuple[int, ...] | None) -> RecurrentRegressor | None:
    """A RecurrentRegressor with these layers: Linear, neuron, Linear, LeakyIntegrator (all linears with bias)."""
    if in_shape is None or len(in_shape) != 1 or len(ops) != 4:
        return None
    enc, cell, dec, ro = ops
    if not (type(enc) is nn.Linear and type(dec) is nn.Linear and enc.bias is not None and dec.bias is not None
            and type(ro) is LeakyIntegrator and neuron_kind(cell) is not None):
        return None
    model = RecurrentRegressor(in_shape[0], enc.out_features, dec.out_features, neuron=neuron_kind(cell) or "lif")
    model.encoder, model.neuron, model.decoder, model.readout = enc, cell, dec, ro  # type: ignore[assignment]
    return model


def as_model(ex: GraphExecutor, in_shape: tuple[int, ...], graph_meta: dict[str, Any]) -> nn.Module:
    """``ex`` as a SpikingMLP / SpikingConvNet / RecurrentRegressor (the latter only when the graph metadata
    says so) when it is a chain of that shape, else ``ex`` itself."""
    ops = chain(ex)
    if ops is None:
        return ex
    if graph_meta.get("model") == "RecurrentRegressor":
        model: nn.Module | None = as_regressor(ops, in_shape)
        if model is not None:
            return model
    for build in (as_mlp, as_convnet):
        model = build(ops, in_shape)
        if model is not None:
            return model
    return ex
