"""Export spikefed models to NIR (Neuromorphic Intermediate Representation) and import NIR graphs back.

NIR describes networks as graphs of continuous-time nodes; spikefed simulates discrete time steps of length
``dt``. The mapping used here is one forward-Euler step of the NIR equations (see ``docs/nir.md``):

LIF / LI (``nir.LIF``, ``nir.LI``)::

    tau dv/dt = (v_leak - v) + R I
    Euler:  v[t] = v[t-1] + dt/tau (v_leak - v[t-1] + R I[t])
                 = (1 - dt/tau) v[t-1] + (dt R / tau) I[t] + dt v_leak / tau
    spikefed: u[t] = beta u[t-1] + x[t]
    =>  tau = dt / (1 - beta),   R = tau / dt,   v_leak = 0          (so 1 - dt/tau = beta and dt R / tau = 1)

IF / I (``nir.IF``, ``nir.I``): ``dv/dt = R I``, Euler ``v[t] = v[t-1] + dt R I[t]`` => ``R = 1 / dt``.

CubaLIF / CubaLI (``nir.CubaLIF``, ``nir.CubaLI``)::

    tau_syn dI/dt = -I + w_in S         Euler: I[t] = (1 - dt/tau_syn) I[t-1] + (dt w_in / tau_syn) S[t]
    tau_mem dv/dt = (v_leak - v) + R I  Euler: v[t] = (1 - dt/tau_mem) v[t-1] + (dt R / tau_mem) I[t]
    spikefed: i[t] = alpha i[t-1] + x[t],  u[t] = beta u[t-1] + i[t]
    =>  tau_syn = dt / (1 - alpha), w_in = tau_syn / dt, tau_mem = dt / (1 - beta), R = tau_mem / dt, v_leak = 0

The synaptic current is updated first and the membrane uses the current of the same step (as spikefed does).
Spikes are ``z = 1[v > v_threshold]`` (strict, as spikefed's Heaviside), then ``v = v_reset`` where ``z = 1``:
that is spikefed's ``reset="zero"`` with ``reset_value = v_reset``. spikefed reports the membrane *before* the
reset (the value that crossed the threshold); NIR's state after the step is the reset value; spikes agree.

Exactness of ``beta -> tau -> beta``: the continuous fields are computed and stored in float64, so
``1 - dt / tau`` rounded back to float32 gives the original float32 decay exactly. In addition the exact discrete
values (and everything NIR has no field for) are kept in each node's ``metadata["spikefed"]``; the importer uses
them when they agree with the NIR fields (to 1e-6) and falls back to the fields (with a warning) when another
tool changed them. The NIR-standard fields are always correct for other tools.

What NIR cannot express, and how it is handled (see ``docs/nir.md``):

- ``reset="subtract"`` (spikefed's default): error naming the layer, unless ``to_nir(..., reset="metadata")``:
  then a standard node with ``v_reset = reset_value`` is written (what other tools simulate) and the subtractive
  reset is kept in the metadata, so a spikefed round trip is exact.
- ``reset="none"``: exact in NIR as an integrator (``LI`` / ``I`` / ``CubaLI``) followed by a ``Threshold`` node.
- refractory period: error naming the layer, unless ``refractory="metadata"`` (kept in metadata only).
- ``detach_reset``, surrogate gradient (name, slope), ``fused``, ``learn_*`` flags: training-only, not part of
  NIR; kept in metadata and restored on import (a callable surrogate is not serialisable: re-imported as atan).
- graded spikes: an exact ``Scale`` node after the neuron (the reset still uses the binary spike).
- :class:`~spikefed.snn.neurons.RecurrentLIF`: a graph cycle ``neuron -> Linear(V) -> neuron``; a cycle carries a
  one-step delay (the recurrent input at ``t`` is ``V s[t-1]``).
- ``nn.MaxPool2d`` of binary spikes: exact as ``SumPool2d`` followed by ``Threshold(0.5)`` (the max of 0/1 values
  is 1 iff their sum is > 0.5); of non-binary inputs: error.
- :class:`~spikefed.snn.neurons.ALIF`: no NIR equivalent, ``UnsupportedLayerError`` naming the layer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..snn.delay import Delay
from ..snn.kernels import lowpass
from ..snn.models import ModelOutput, RecurrentRegressor, SpikingConvNet, SpikingMLP, time_invariant
from ..snn.neurons import ALIF, IF, LIF, LeakyIntegrator, RecurrentLIF, Synaptic
from ..snn.surrogate import SURROGATES

if TYPE_CHECKING:  # pragma: no cover
    import nir as nir_types

__all__ = [
    "CurrentIntegrator", "Flatten", "Gained", "GraphExecutor", "NIRConversionError", "PerfectIntegrator",
    "Scale", "SumPool2d", "Threshold", "UnsupportedLayerError", "from_nir", "load_nir", "save_nir", "to_nir",
    "META_KEY", "RESET_POLICIES", "REFRACTORY_POLICIES",
]

#: Key of spikefed's entry in every node's (and the graph's) NIR ``metadata`` dict.
META_KEY = "spikefed"
#: Version of the metadata layout written by :func:`to_nir`.
FORMAT_VERSION = 1
#: ``to_nir(reset=...)``: what to do with a reset NIR cannot express (``subtract``).
RESET_POLICIES: tuple[str, ...] = ("error", "metadata")
#: ``to_nir(refractory=...)``: what to do with a refractory period (NIR has none).
REFRACTORY_POLICIES: tuple[str, ...] = ("error", "metadata")

# Relative / absolute tolerance within which metadata values are taken to agree with the NIR fields.
_META_RTOL, _META_ATOL = 1e-6, 1e-9
# Input gains / leak biases this close to 1 / 0 (float64 rounding of R = tau/dt) are snapped to exactly 1 / 0.
_SNAP_ATOL = 1e-12


class NIRConversionError(ValueError):
    """A model or graph cannot be converted as asked (the message names the layer or node and the fix)."""


class UnsupportedLayerError(NotImplementedError):
    """A layer or NIR node type has no counterpart on the other side (the message names it)."""


def _nir() -> Any:
    """The ``nir`` package (an optional dependency)."""
    try:
        import nir
    except ImportError as exc:  # pragma: no cover - nir is installed in the dev environment
        raise ImportError("NIR export/import needs the 'nir' package: pip install 'spikefed[nir]'") from exc
    return nir


# ====================================================================================== executor ops


def _buffer(value: torch.Tensor | float) -> torch.Tensor:
    """A buffer copy of ``value``: a floating tensor keeps its dtype, anything else gets the default dtype."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().clone()
    return torch.as_tensor(value, dtype=torch.get_default_dtype()).clone()


def _fold(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    t, b = x.shape[:2]
    return x.reshape(t * b, *x.shape[2:]), (t, b)


def _unfold(x: torch.Tensor, tb: tuple[int, int]) -> torch.Tensor:
    return x.reshape(*tb, *x.shape[1:])


class Threshold(nn.Module):
    """NIR ``Threshold``: ``z = 1[x > threshold]`` elementwise (no state), on ``[T, B, *shape]``."""

    def __init__(self, threshold: torch.Tensor | float) -> None:
        super().__init__()
        self.register_buffer("threshold", _buffer(threshold))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spikes ``1[x > threshold]`` in ``x``'s dtype."""
        return torch.gt(x, self.threshold).to(x.dtype)


class Scale(nn.Module):
    """NIR ``Scale``: ``y = x * scale`` elementwise, on ``[T, B, *shape]``."""

    def __init__(self, scale: torch.Tensor | float) -> None:
        super().__init__()
        self.register_buffer("scale", _buffer(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * scale``."""
        return x * self.scale


class Flatten(nn.Module):
    """NIR ``Flatten``: merges per-sample dims ``start_dim..end_dim`` (indices exclude time and batch)."""

    def __init__(self, start_dim: int = 0, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [T, B, *shape]`` with ``shape[start_dim:end_dim+1]`` merged into one dim."""
        end = self.end_dim + 2 if self.end_dim >= 0 else self.end_dim
        return x.flatten(self.start_dim + 2, end)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class SumPool2d(nn.Module):
    """NIR ``SumPool2d``: sum over each pooling window (zero padding), on ``[T, B, C, H, W]``."""

    def __init__(self, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int] = (0, 0)) -> None:
        super().__init__()
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.stride = tuple(int(s) for s in stride)
        self.padding = tuple(int(p) for p in padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Window sums (an average pool with divisor 1, so sums of small integers stay exact)."""
        flat, tb = _fold(x)
        y = F.avg_pool2d(flat, self.kernel_size, self.stride, self.padding, divisor_override=1)
        return _unfold(y, tb)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class PerfectIntegrator(nn.Module):
    """NIR ``I`` (non-leaky, non-spiking): ``y[t] = y[t-1] + gain x[t]`` with ``gain = dt R``."""

    def __init__(self, gain: torch.Tensor | float = 1.0) -> None:
        super().__init__()
        self.register_buffer("gain", _buffer(gain))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [T, B, *shape]`` -> ``(y [T, B, *shape], y[-1])``."""
        y = lowpass(x * self.gain, 1.0, state)
        return y, y[-1]


class CurrentIntegrator(nn.Module):
    """NIR ``CubaLI`` (non-spiking): ``i[t] = alpha i[t-1] + gain x[t]``, ``y[t] = beta y[t-1] + i[t]``."""

    def __init__(self, alpha: torch.Tensor | float, beta: torch.Tensor | float,
                 gain: torch.Tensor | float = 1.0) -> None:
        super().__init__()
        self.register_buffer("alpha", _buffer(alpha))
        self.register_buffer("beta", _buffer(beta))
        self.register_buffer("gain", _buffer(gain))

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x [T, B, *shape]`` -> ``(y [T, B, *shape], (i[-1], y[-1]))``."""
        i0, y0 = (None, None) if state is None else state
        i = lowpass(x * self.gain, self.alpha, i0)
        y = lowpass(i, self.beta, y0)
        return y, (i[-1], y[-1])


class Gained(nn.Module):
    """A neuron or integrator whose input is first mapped elementwise: ``x -> gain * x + bias``.

    Created on import when a NIR node's input gain ``dt R / tau`` is not 1 or its leak ``v_leak`` is not 0
    (graphs written by other tools); spikefed's own exports never need it. ``gain``/``bias`` of ``None`` are
    skipped (no arithmetic), so a unit gain is exact.
    """

    def __init__(self, layer: nn.Module, gain: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("gain", None if gain is None else _buffer(gain))
        self.register_buffer("bias", None if bias is None else _buffer(bias))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``gain * x + bias`` (each part only when set)."""
        if self.gain is not None:
            x = x * self.gain
        if self.bias is not None:
            x = x + self.bias
        return x


_SUPPORTED = ("nn.Linear, nn.Conv2d, nn.MaxPool2d (of binary spikes), nn.AvgPool2d, nn.Flatten, LIF, IF, Synaptic, "
              "RecurrentLIF, LeakyIntegrator, Delay and this module's Threshold, Scale, Flatten, SumPool2d, "
              "PerfectIntegrator, CurrentIntegrator, Gained")
_STATELESS_TYPES = (nn.Linear, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, Threshold, Scale, Flatten,
                    SumPool2d)
_STATEFUL_TYPES = (LIF, LeakyIntegrator, Delay, PerfectIntegrator, CurrentIntegrator, Gained)


def _is_stateful(op: nn.Module) -> bool:
    return isinstance(op, _STATEFUL_TYPES)


def _is_spiking(op: nn.Module) -> bool:
    return isinstance(op.layer if isinstance(op, Gained) else op, LIF)


def _apply_stateless(op: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a stateless op to all T steps of ``x [T, B, ...]``."""
    if isinstance(op, nn.Linear):
        return time_invariant(op, x)  # same path as SpikingMLP
    if isinstance(op, (Threshold, Scale, Flatten, SumPool2d)):
        return op(x)
    flat, tb = _fold(x)
    return _unfold(op(flat), tb)


def _run_stateful(op: nn.Module, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
    """Run a stateful op over ``x [T, B, ...]``: ``(output, membrane or None, final state)``."""
    if isinstance(op, Gained):
        return _run_stateful(op.layer, op.prepare(x), state)
    if isinstance(op, LIF):
        out = op.run(x, state)
        return out.spikes, out.membrane, out.state
    if isinstance(op, (LeakyIntegrator, PerfectIntegrator, CurrentIntegrator)):
        y, last = op(x, state)
        return y, y, last
    if isinstance(op, Delay):
        y, st = op(x, state)
        return y, None, st
    raise UnsupportedLayerError(f"no stateful runner for {type(op).__name__}")  # pragma: no cover


def _topological_order(names: Sequence[str], edges: Sequence[tuple[str, str]], source: str) -> list[str]:
    """Kahn's order of ``names`` (``source`` first); ``NotImplementedError`` naming the nodes left on a cycle."""
    indeg = {n: 0 for n in names}
    succ: dict[str, list[str]] = {n: [] for n in names}
    for a, b in edges:
        succ[a].append(b)
        indeg[b] += 1
    ready = [n for n in names if indeg[n] == 0]
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    if len(order) != len(names):
        stuck = [n for n in names if n not in order]
        raise UnsupportedLayerError(
            f"the graph has a cycle through {stuck} that spikefed cannot run; the only supported cycle is a "
            "spiking LIF node with a Linear (or zero-bias Affine) node feeding its spikes back to its own input "
            "(imported as RecurrentLIF)")
    roots = [n for n in order if not any(b == n for _, b in edges)]
    if roots != [source]:
        others = [n for n in roots if n != source]
        raise NIRConversionError(f"nodes {others} are not reachable from the input {source!r}")
    return order


class GraphExecutor(nn.Module):
    """Runs a directed acyclic graph of spikefed layers on time-major input ``[T, B, *input_shape]``.

    Each node is one module: stateless layers (``nn.Linear``, ``nn.Conv2d``, pooling, :class:`Flatten`,
    :class:`Threshold`, :class:`Scale`) are applied to all T steps at once; stateful ones (spikefed neurons,
    :class:`~spikefed.snn.neurons.LeakyIntegrator`, :class:`~spikefed.snn.delay.Delay`, :class:`PerfectIntegrator`,
    :class:`CurrentIntegrator`, :class:`Gained`) run the whole sequence with explicit state. A node with several
    incoming edges receives their sum (the NIR convention). :func:`from_nir` returns one when the graph is not a
    SpikingMLP / SpikingConvNet / RecurrentRegressor; :meth:`sequential` builds a chain directly.

    Args:
        nodes: ``name -> module``, in any order.
        edges: ``(source, target)`` pairs; ``input_name`` is the graph input, ``output_name`` the graph output
            (neither is a module).
        input_shape: per-sample input shape (checked when given).
        dt: the time step the graph was imported with (informational; :func:`to_nir` uses it as default).
    """

    def __init__(self, nodes: dict[str, nn.Module], edges: Sequence[tuple[str, str]], input_name: str = "input",
                 output_name: str = "output", input_shape: Sequence[int] | None = None,
                 dt: float | None = None) -> None:
        super().__init__()
        if input_name in nodes or output_name in nodes:
            raise ValueError(f"{input_name!r} and {output_name!r} name the graph input/output, not modules")
        for name, op in nodes.items():
            if not isinstance(op, _STATELESS_TYPES + _STATEFUL_TYPES):
                raise UnsupportedLayerError(f"{_layer_label(name, op)} is not supported by GraphExecutor (nor by NIR "
                                            f"export); supported: {_SUPPORTED}")
        all_names = [input_name, *nodes, output_name]
        for a, b in edges:
            if a not in all_names or b not in all_names:
                raise ValueError(f"edge ({a!r}, {b!r}) names an unknown node")
            if b == input_name or a == output_name:
                raise ValueError(f"edge ({a!r}, {b!r}) goes into the input or out of the output")
        order = _topological_order(all_names, list(edges), input_name)
        self.input_name, self.output_name = input_name, output_name
        self.names: list[str] = [n for n in order if n in nodes]
        self.ops = nn.ModuleList(nodes[n] for n in self.names)
        self.preds: dict[str, list[str]] = {n: [a for a, b in edges if b == n] for n in [*self.names, output_name]}
        if not self.preds[output_name]:
            raise ValueError(f"the output {output_name!r} has no incoming edge")
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.dt = dt

    @classmethod
    def sequential(cls, *layers: nn.Module, input_shape: Sequence[int] | None = None,
                   dt: float | None = None) -> "GraphExecutor":
        """A chain ``input -> layers[0] -> ... -> layers[-1] -> output`` (names from the layer types)."""
        if len(layers) == 1 and isinstance(layers[0], (list, tuple, nn.Sequential)):
            layers = tuple(layers[0])
        names = _chain_names(layers)
        edges = list(zip(["input", *names], [*names, "output"]))
        return cls(dict(zip(names, layers)), edges, input_shape=input_shape, dt=dt)

    def node(self, name: str) -> nn.Module:
        """The module of node ``name``."""
        return self.ops[self.names.index(name)]

    @property
    def edges(self) -> list[tuple[str, str]]:
        """All edges, in execution order of their targets."""
        return [(a, b) for b in [*self.names, self.output_name] for a in self.preds[b]]

    def _gather(self, values: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        srcs = self.preds[name]
        x = values[srcs[0]]
        for s in srcs[1:]:
            x = x + values[s]
        return x

    def forward(self, x: torch.Tensor, state: Sequence[Any] | None = None) -> ModelOutput:
        """``x [T, B, *input_shape]`` -> :class:`~spikefed.snn.models.ModelOutput`.

        ``output`` is what reaches the output node; ``membrane`` the membrane (or integrator output) of the node
        feeding the output when it is a neuron/integrator, else ``output``; ``hidden`` the spikes of every spiking
        neuron node in execution order; ``state`` one entry per stateful node (pass it back to continue).
        """
        if not isinstance(x, torch.Tensor) or x.dim() < 3:
            raise ValueError(f"expected a time-major input [T, B, ...], got {getattr(x, 'shape', x)!r}")
        if self.input_shape is not None and tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(f"expected input of shape [T, B, {', '.join(map(str, self.input_shape))}], "
                             f"got {tuple(x.shape)}")
        n_state = sum(1 for op in self.ops if _is_stateful(op))
        states = [None] * n_state if state is None else list(state)
        if len(states) != n_state:
            raise ValueError(f"state must have one entry per stateful node ({n_state}), got {len(states)}")
        values: dict[str, torch.Tensor] = {self.input_name: x}
        membranes: dict[str, torch.Tensor] = {}
        hidden: list[torch.Tensor] = []
        new_state: list[Any] = []
        k = 0
        for name, op in zip(self.names, self.ops):
            h = self._gather(values, name)
            if _is_stateful(op):
                y, mem, st = _run_stateful(op, h, states[k])
                k += 1
                new_state.append(st)
                if mem is not None:
                    membranes[name] = mem
                if _is_spiking(op):
                    hidden.append(y)
            else:
                y = _apply_stateless(op, h)
            values[name] = y
        out = self._gather(values, self.output_name)
        last = self.preds[self.output_name]
        membrane = membranes.get(last[0], out) if len(last) == 1 else out
        return ModelOutput(out, membrane, hidden, new_state)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, edges={self.edges}"


def _base_name(op: nn.Module) -> str:
    if isinstance(op, Gained):
        return _base_name(op.layer)
    table: list[tuple[type, str]] = [
        (RecurrentLIF, "rlif"), (Synaptic, "synaptic"), (IF, "if"), (ALIF, "alif"), (LIF, "lif"),
        (LeakyIntegrator, "li"), (PerfectIntegrator, "i"), (CurrentIntegrator, "cubali"), (Delay, "delay"),
        (nn.Linear, "linear"), (nn.Conv2d, "conv"), (nn.MaxPool2d, "maxpool"), (nn.AvgPool2d, "avgpool"),
        (SumPool2d, "sumpool"), (nn.Flatten, "flatten"), (Flatten, "flatten"), (Threshold, "threshold"),
        (Scale, "scale"),
    ]
    for cls, base in table:
        if isinstance(op, cls):
            return base
    return type(op).__name__.lower()


def _chain_names(layers: Sequence[nn.Module]) -> list[str]:
    counts: dict[str, int] = {}
    names = []
    for op in layers:
        base = _base_name(op)
        names.append(f"{base}_{counts.get(base, 0)}")
        counts[base] = counts.get(base, 0) + 1
    return names


# ====================================================================================== export


@dataclass
class _Export:
    """Accumulates NIR nodes and edges while exporting."""

    dt: float
    reset: str
    refractory: str
    metadata: bool
    nodes: dict[str, Any] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, node: Any) -> str:
        if name in self.nodes:  # pragma: no cover - names come from unique graph names
            raise NIRConversionError(f"duplicate NIR node name {name!r}")
        self.nodes[name] = node
        return name

    def meta(self, **entries: Any) -> dict[str, Any]:
        """``{"spikefed": entries}`` (empty when metadata is switched off)."""
        return {META_KEY: _clean_meta(entries)} if self.metadata else {}


def _clean_meta(entries: dict[str, Any]) -> dict[str, Any]:
    """Keep only values NIR's HDF5 writer stores faithfully (str, bool, int, float, ndarray, nested dict)."""
    out: dict[str, Any] = {}
    for k, v in entries.items():
        if v is None:
            continue
        if isinstance(v, dict):
            out[k] = _clean_meta(v)
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


def _f64(t: torch.Tensor | float, shape: Sequence[int]) -> np.ndarray:
    """``t`` as a float64 array broadcast to ``shape`` (a copy)."""
    a = t.detach().cpu().to(torch.float64).numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)
    return np.broadcast_to(a, tuple(shape)).astype(np.float64).copy()


def _exact(t: torch.Tensor) -> np.ndarray:
    """The tensor's values in its own dtype and shape (for metadata)."""
    return t.detach().cpu().numpy().copy()


def _layer_label(name: str, op: nn.Module) -> str:
    inner = op.layer if isinstance(op, Gained) else op
    return f"layer {name!r} ({type(inner).__name__})"


def _check_exportable(name: str, op: nn.Module) -> None:
    """Raise for layers with no NIR counterpart before anything is run."""
    inner = op.layer if isinstance(op, Gained) else op
    if isinstance(inner, ALIF):
        raise UnsupportedLayerError(
            f"{_layer_label(name, op)}: the adaptive threshold theta[t] = thr + gamma a[t] has no NIR node; "
            "replace it by LIF (or Synaptic) before exporting")
    if not isinstance(op, _STATELESS_TYPES + _STATEFUL_TYPES):
        raise UnsupportedLayerError(
            f"{_layer_label(name, op)} cannot be exported to NIR; supported: {_SUPPORTED}")


def _cell_gain_bias(gain: torch.Tensor | None, bias: torch.Tensor | None, shape: Sequence[int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    g = _f64(gain, shape) if gain is not None else np.ones(tuple(shape))
    c = _f64(bias, shape) if bias is not None else np.zeros(tuple(shape))
    return g, c


def _leaky_fields(beta: np.ndarray, gain: np.ndarray, bias: np.ndarray, dt: float) -> dict[str, np.ndarray]:
    """``tau = dt / (1 - beta)``, ``R = gain tau / dt``, ``v_leak = bias tau / dt`` (all float64)."""
    tau = dt / (1.0 - beta)
    return {"tau": tau, "r": gain * tau / dt, "v_leak": bias * tau / dt}


def _no_bias(label: str, bias: np.ndarray, what: str) -> None:
    if np.any(bias != 0):
        raise NIRConversionError(f"{label}: a constant input bias cannot be expressed by a NIR {what} node")


def _export_cell(ctx: _Export, name: str, op: nn.Module, shape: tuple[int, ...]) -> tuple[str, str, bool]:
    """Nodes for a neuron or integrator; returns ``(entry node, exit node, output is binary)``."""
    nir = _nir()
    gain = bias = None
    layer = op
    if isinstance(op, Gained):
        layer, gain, bias = op.layer, op.gain, op.bias
    label = _layer_label(name, op)
    g, c = _cell_gain_bias(gain, bias, shape)
    dt = ctx.dt

    if isinstance(layer, LeakyIntegrator):
        beta = _f64(layer.beta, shape)
        f = _leaky_fields(beta, g, c, dt)
        meta = ctx.meta(layer="LeakyIntegrator", features=np.asarray(layer.features, np.int64),
                        learn_beta=isinstance(layer.beta, nn.Parameter), beta=_exact(layer.beta))
        ctx.add(name, nir.LI(tau=f["tau"], r=f["r"], v_leak=f["v_leak"], metadata=meta))
        return name, name, False
    if isinstance(layer, PerfectIntegrator):
        _no_bias(label, c, "I")
        ctx.add(name, nir.I(r=_f64(layer.gain, shape) * g / dt))
        return name, name, False
    if isinstance(layer, CurrentIntegrator):
        _no_bias(label, c, "CubaLI")
        alpha, beta = _f64(layer.alpha, shape), _f64(layer.beta, shape)
        tau_syn, tau_mem = dt / (1.0 - alpha), dt / (1.0 - beta)
        ctx.add(name, nir.CubaLI(tau_syn=tau_syn, tau_mem=tau_mem, r=g * _f64(layer.gain, shape) * tau_mem / dt,
                                 v_leak=np.zeros(shape), w_in=tau_syn / dt))
        return name, name, False
    assert isinstance(layer, LIF)

    # ---- LIF family: checks for what NIR cannot express
    if layer.refractory and ctx.refractory != "metadata":
        raise NIRConversionError(
            f"{label} has a refractory period of {layer.refractory} steps, which NIR neurons do not have. Pass "
            "refractory='metadata' to export it anyway (other tools simulate no refractory period; spikefed "
            "restores it from the metadata), or set refractory=0")
    if layer.reset == "subtract" and ctx.reset != "metadata":
        raise NIRConversionError(
            f"{label} uses reset='subtract' (spikefed's default), which NIR cannot express: NIR neurons are set to "
            "v_reset after a spike. Either set the layer's reset to 'zero' (and fine-tune) before exporting, or "
            "pass reset='metadata' to write a standard NIR node with v_reset = reset_value (what other tools will "
            "simulate) and keep the subtractive reset in the node metadata, so spikefed re-imports it exactly")
    if isinstance(layer, Synaptic):
        kind = "Synaptic"
    elif isinstance(layer, RecurrentLIF):
        kind = "RecurrentLIF"
    elif isinstance(layer, IF):
        kind = "IF"
    else:
        kind = "LIF"
    if kind in ("IF", "Synaptic"):
        _no_bias(label, c, kind)
    thr = _f64(layer._threshold_value(), shape)
    v_r = _f64(layer.reset_value, shape)
    sur = layer.surrogate
    learn = {k: isinstance(getattr(layer, k), nn.Parameter) for k in ("beta", "threshold", "reset_value")}
    entries: dict[str, Any] = dict(
        layer=kind, reset=layer.reset, detach_reset=layer.detach_reset, fused=layer.fused,
        refractory=int(layer.refractory), graded=layer.graded,
        surrogate=sur.name if sur.name in SURROGATES and sur.slope is not None else "custom",
        slope=None if sur.slope is None else float(sur.slope),
        features=np.asarray(layer.features, np.int64),
        learn_threshold=learn["threshold"], learn_reset=learn["reset_value"],
        threshold=_exact(layer._threshold_value()), reset_value=_exact(layer.reset_value),
    )
    if kind != "IF":
        entries.update(learn_beta=learn["beta"], beta=_exact(layer._beta_value()))
    if kind == "Synaptic":
        assert isinstance(layer, Synaptic)
        entries.update(learn_alpha=isinstance(layer.alpha, nn.Parameter), alpha=_exact(layer._alpha_value()))
    meta = ctx.meta(**entries)

    beta = _f64(layer._beta_value(), shape)
    if kind == "IF":
        r = g / dt
        if layer.reset == "none":
            ctx.add(name, nir.I(r=r, metadata=meta))
        else:
            ctx.add(name, nir.IF(r=r, v_threshold=thr, v_reset=v_r, metadata=meta))
    elif kind == "Synaptic":
        alpha = _f64(layer._alpha_value(), shape)  # type: ignore[attr-defined]
        tau_syn, tau_mem = dt / (1.0 - alpha), dt / (1.0 - beta)
        common = dict(tau_syn=tau_syn, tau_mem=tau_mem, r=g * tau_mem / dt, v_leak=np.zeros(shape),
                      w_in=tau_syn / dt)
        if layer.reset == "none":
            ctx.add(name, nir.CubaLI(**common, metadata=meta))
        else:
            ctx.add(name, nir.CubaLIF(**common, v_threshold=thr, v_reset=v_r, metadata=meta))
    else:
        f = _leaky_fields(beta, g, c, dt)
        if layer.reset == "none":
            ctx.add(name, nir.LI(**f, metadata=meta))
        else:
            ctx.add(name, nir.LIF(**f, v_threshold=thr, v_reset=v_r, metadata=meta))

    spike = name
    if layer.reset == "none":  # exact: integrator followed by a threshold
        spike = ctx.add(f"{name}_spike", nir.Threshold(threshold=thr, metadata=ctx.meta(role="spike")))
        ctx.edges.append((name, spike))
    if isinstance(layer, RecurrentLIF):
        if gain is not None or bias is not None:
            raise NIRConversionError(f"{label}: an input gain/bias on a recurrent layer cannot be exported")
        rec = ctx.add(f"{name}_rec", nir.Linear(weight=_exact(layer.recurrent),
                                                metadata=ctx.meta(role="recurrent")))
        ctx.edges += [(spike, rec), (rec, name)]
    if layer.graded:
        amp = ctx.add(f"{name}_amplitude", nir.Scale(scale=_f64(layer.amplitude, shape).astype(
            _exact(layer.amplitude).dtype), metadata=ctx.meta(role="amplitude", amplitude=_exact(layer.amplitude))))
        ctx.edges.append((spike, amp))
        return name, amp, False
    return name, spike, True


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _export_op(ctx: _Export, name: str, op: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
               binary_in: bool) -> tuple[str, str, bool]:
    """Nodes for one graph node; returns ``(entry, exit, output is binary)``."""
    nir = _nir()
    label = _layer_label(name, op)
    if isinstance(op, nn.Linear):
        if len(in_shape) != 1:
            raise NIRConversionError(f"{label}: NIR Affine/Linear act on 1-d inputs, got per-sample shape {in_shape}")
        w = _exact(op.weight)
        node = nir.Linear(weight=w) if op.bias is None else nir.Affine(weight=w, bias=_exact(op.bias))
        ctx.add(name, node)
        return name, name, False
    if isinstance(op, nn.Conv2d):
        if op.padding_mode != "zeros":
            raise NIRConversionError(f"{label}: padding_mode={op.padding_mode!r}; NIR Conv2d pads with zeros")
        if len(in_shape) != 3:
            raise NIRConversionError(f"{label}: expected per-sample input (C, H, W), got {in_shape}")
        bias = op.bias
        b = _exact(bias) if bias is not None else np.zeros(op.out_channels, dtype=_exact(op.weight).dtype)
        padding = op.padding if isinstance(op.padding, str) else _pair(op.padding)
        ctx.add(name, nir.Conv2d(input_shape=(int(in_shape[1]), int(in_shape[2])), weight=_exact(op.weight),
                                 stride=_pair(op.stride), padding=padding, dilation=_pair(op.dilation),
                                 groups=int(op.groups), bias=b, metadata=ctx.meta(bias=bias is not None)))
        return name, name, False
    if isinstance(op, nn.MaxPool2d):
        if _pair(op.dilation) != (1, 1) or op.ceil_mode or op.return_indices:
            raise NIRConversionError(f"{label}: only dilation=1, ceil_mode=False max pooling can be exported")
        if not binary_in:
            raise NIRConversionError(
                f"{label}: max pooling is exported exactly as SumPool2d followed by Threshold(0.5), which equals "
                "max pooling only for binary (0/1) spike inputs; the input of this layer is not a binary spike "
                "train (raw input, graded spikes, fractional delays or a sum of several branches)")
        k = _pair(op.kernel_size)
        s = _pair(op.stride if op.stride is not None else op.kernel_size)
        p = _pair(op.padding)
        ctx.add(name, nir.SumPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p),
                                    metadata=ctx.meta(layer="MaxPool2d")))
        thr = ctx.add(f"{name}_max", nir.Threshold(threshold=np.full(out_shape, 0.5),
                                                   metadata=ctx.meta(role="maxpool")))
        ctx.edges.append((name, thr))
        return name, thr, True
    if isinstance(op, nn.AvgPool2d):
        uncounted_pad = not op.count_include_pad and _pair(op.padding) != (0, 0)
        if op.ceil_mode or op.divisor_override is not None or uncounted_pad:
            raise NIRConversionError(f"{label}: only plain average pooling (no ceil_mode/divisor_override, padding "
                                     "counted) can be exported")
        ctx.add(name, nir.AvgPool2d(kernel_size=np.array(_pair(op.kernel_size)),
                                    stride=np.array(_pair(op.stride if op.stride is not None else op.kernel_size)),
                                    padding=np.array(_pair(op.padding))))
        return name, name, False
    if isinstance(op, SumPool2d):
        ctx.add(name, nir.SumPool2d(kernel_size=np.array(op.kernel_size), stride=np.array(op.stride),
                                    padding=np.array(op.padding)))
        return name, name, False
    if isinstance(op, (nn.Flatten, Flatten)):
        if isinstance(op, nn.Flatten):  # torch dims count the (folded) batch dim
            if op.start_dim < 1 and op.start_dim >= 0:
                raise NIRConversionError(f"{label}: flattening the batch dimension cannot be exported")
            start = op.start_dim - 1 if op.start_dim > 0 else op.start_dim
            end = op.end_dim - 1 if op.end_dim > 0 else op.end_dim
        else:
            start, end = op.start_dim, op.end_dim
        ctx.add(name, nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=int(start), end_dim=int(end)))
        return name, name, binary_in
    if isinstance(op, Threshold):
        ctx.add(name, nir.Threshold(threshold=_f64(op.threshold, in_shape)))
        return name, name, True
    if isinstance(op, Scale):
        ctx.add(name, nir.Scale(scale=_f64(op.scale, in_shape)))
        return name, name, False
    if isinstance(op, Delay):
        d = op.effective_delays().cpu()
        integer = bool(torch.all(d == torch.floor(d)))
        ctx.add(name, nir.Delay(delay=d.to(torch.float64).numpy() * ctx.dt,
                                metadata=ctx.meta(layer="Delay", max_delay=int(op.max_delay), learnable=op.learnable,
                                                  delays=_exact(d))))
        return name, name, binary_in and integer
    return _export_cell(ctx, name, op, out_shape)


def _as_graph(model: nn.Module, input_shape: Sequence[int] | None
              ) -> tuple[GraphExecutor, tuple[int, ...], dict[str, Any]]:
    """View a supported model as a :class:`GraphExecutor` sharing its modules, plus graph metadata."""
    if isinstance(model, GraphExecutor):
        shape = input_shape or model.input_shape
        if shape is None:
            raise NIRConversionError("this GraphExecutor has no input_shape; pass input_shape= to to_nir")
        return model, tuple(shape), {"model": "GraphExecutor"}
    if isinstance(model, SpikingMLP):
        layers: list[nn.Module] = []
        for i, lin in enumerate(model.linears):
            layers.append(lin)
            if i < len(model.neurons):
                layers.append(model.neurons[i])
        if model.integrator is not None:
            layers.append(model.integrator)
        return (GraphExecutor.sequential(*layers), (model.sizes[0],),
                {"model": "SpikingMLP", "readout": model.readout})
    if isinstance(model, SpikingConvNet):
        layers = []
        for conv, neuron in zip(model.convs, model.conv_neurons):
            layers += [conv, neuron, model.pool]
        layers.append(Flatten(0, -1))
        head = model.head
        layers.append(head.linears[0])
        layers.append(head.neurons[0] if head.integrator is None else head.integrator)
        return GraphExecutor.sequential(*layers), tuple(model.in_shape), {"model": "SpikingConvNet",
                                                                          "readout": model.readout}
    if isinstance(model, RecurrentRegressor):
        layers = [model.encoder, model.neuron, model.decoder, model.readout]
        return GraphExecutor.sequential(*layers), (model.in_features,), {"model": "RecurrentRegressor"}
    if isinstance(model, (nn.Sequential, list, tuple)):
        if input_shape is None:
            raise NIRConversionError("exporting a sequence of layers needs input_shape= (per-sample shape)")
        return GraphExecutor.sequential(*list(model)), tuple(input_shape), {"model": "sequential"}
    if isinstance(model, _STATELESS_TYPES + _STATEFUL_TYPES):
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
    raise UnsupportedLayerError(
        f"cannot export {type(model).__name__} to NIR; supported: SpikingMLP, SpikingConvNet, RecurrentRegressor, "
        "GraphExecutor, nn.Sequential/lists of supported layers, or a single supported layer")


def _model_dtype(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """dtype and device of the model's first floating-point parameter/buffer (default dtype on CPU if none)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


@torch.no_grad()
def _trace_shapes(graph: GraphExecutor, input_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
                  ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per node ``(input shape, output shape)`` from one zero step through the graph."""
    values = {graph.input_name: torch.zeros((1, 1, *input_shape), dtype=dtype, device=device)}
    shapes = {}
    for name, op in zip(graph.names, graph.ops):
        h = graph._gather(values, name)
        try:
            y = _run_stateful(op, h, None)[0] if _is_stateful(op) else _apply_stateless(op, h)
        except Exception as exc:  # shape mismatch etc.: name the layer
            raise NIRConversionError(f"{_layer_label(name, op)} failed on input shape {tuple(h.shape[2:])}: "
                                     f"{exc}") from exc
        values[name] = y
        shapes[name] = (tuple(h.shape[2:]), tuple(y.shape[2:]))
    return shapes


def to_nir(model: nn.Module | Sequence[nn.Module], dt: float | None = None, *,
           input_shape: Sequence[int] | None = None, reset: Literal["error", "metadata"] = "error",
           refractory: Literal["error", "metadata"] = "error", metadata: bool = True) -> "nir_types.NIRGraph":
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

    Returns:
        The graph (type-checked by nir). Node names follow the layers (``linear_0``, ``lif_0``, ``li_0``, ...);
        helper nodes get suffixes (``_spike``, ``_rec``, ``_amplitude``, ``_max``).

    Raises:
        NIRConversionError: a layer uses something NIR cannot express and no option allows it.
        UnsupportedLayerError: a layer type has no NIR counterpart (e.g. ALIF).
    """
    nir = _nir()
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
    graph, in_shape, graph_meta = _as_graph(model, input_shape)  # type: ignore[arg-type]
    for name, op in zip(graph.names, graph.ops):
        _check_exportable(name, op)
    dtype, device = _model_dtype(graph)
    shapes = _trace_shapes(graph, in_shape, dtype, device)

    ctx = _Export(dt=float(dt), reset=reset, refractory=refractory, metadata=metadata)
    ctx.add("input", nir.Input(input_type=np.array(in_shape)))
    blocks: dict[str, tuple[str, str]] = {graph.input_name: ("input", "input")}
    binary: dict[str, bool] = {graph.input_name: False}
    for name, op in zip(graph.names, graph.ops):
        preds = graph.preds[name]
        b_in = len(preds) == 1 and binary[preds[0]]
        entry, exit_, binary[name] = _export_op(ctx, name, op, *shapes[name], b_in)
        blocks[name] = (entry, exit_)
    last = graph.preds[graph.output_name][0]
    out_shape = shapes[last][1] if last in shapes else in_shape
    ctx.add("output", nir.Output(output_type=np.array(out_shape)))
    blocks[graph.output_name] = ("output", "output")
    for a, b in graph.edges:
        ctx.edges.append((blocks[a][1], blocks[b][0]))
    gmeta = ctx.meta(format_version=FORMAT_VERSION, dt=float(dt), dtype=str(dtype).replace("torch.", ""),
                     **graph_meta)
    return nir.NIRGraph(nodes=ctx.nodes, edges=ctx.edges, metadata=gmeta, type_check=True)


# ====================================================================================== import


def _py(v: Any) -> Any:
    """numpy scalars / bytes (as h5py returns them) -> Python values; dicts recursively."""
    if isinstance(v, dict):
        return {str(k): _py(x) for k, x in v.items()}
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


def _node_meta(node: Any, use: bool) -> dict[str, Any]:
    if not use:
        return {}
    meta = getattr(node, "metadata", None)
    if not isinstance(meta, dict) or not isinstance(meta.get(META_KEY), dict):
        return {}
    return _py(meta[META_KEY])


def _arr(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)


@dataclass
class _Cell:
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
class _INode:
    kind: str  # input, output, cell, threshold, scale, linear, conv, flatten, sumpool, avgpool, maxpool, delay
    nir: Any
    meta: dict[str, Any]
    cell: _Cell | None = None
    module: nn.Module | None = None


def _decay(node: str, field_name: str, tau: np.ndarray, dt: float) -> np.ndarray:
    """``1 - dt / tau`` in float64, checked to lie in (0, 1)."""
    with np.errstate(divide="ignore"):
        d = 1.0 - dt / tau
    if not np.all((d > 0) & (d < 1)):
        raise NIRConversionError(
            f"node {node!r}: {field_name} = {tau.ravel()[:4]}... gives a discrete decay 1 - dt/tau outside (0, 1) "
            f"for dt = {dt}; the forward-Euler mapping needs tau > dt (import with a smaller dt)")
    return d


def _snap(g: np.ndarray, target: float) -> np.ndarray | None:
    """``None`` when ``g`` equals ``target`` up to float64 rounding (no arithmetic needed), else ``g``."""
    return None if np.allclose(g, target, rtol=0.0, atol=_SNAP_ATOL) else g


def _resolve(node: str, derived: dict[str, np.ndarray], meta: dict[str, Any]
             ) -> tuple[dict[str, np.ndarray], set[str]]:
    """Exact metadata values when they all agree with the NIR-derived ones, else the derived values (with a
    warning). Returns the values and the names of those taken from the metadata."""
    keys = [k for k in derived if k in meta]
    if not keys:
        return derived, set()
    exact = {k: np.asarray(meta[k]) for k in keys}
    try:
        agree = all(np.allclose(np.broadcast_to(exact[k].astype(np.float64), derived[k].shape), derived[k],
                                rtol=_META_RTOL, atol=_META_ATOL) for k in keys)
    except ValueError:
        agree = False
    if not agree:
        warnings.warn(f"node {node!r}: the spikefed metadata disagrees with the NIR fields (edited by another tool, "
                      "or imported with a different dt); using the NIR fields", stacklevel=3)
        return derived, set()
    return {**derived, **exact}, set(keys)


def _cell_options(meta: dict[str, Any], default_reset: str) -> dict[str, Any]:
    sur = meta.get("surrogate", "atan")
    slope = meta.get("slope")
    if sur not in SURROGATES:
        warnings.warn(f"surrogate {sur!r} (a callable) cannot be stored in NIR; using 'atan'", stacklevel=4)
        sur, slope = "atan", None
    return dict(detach_reset=bool(meta.get("detach_reset", True)), surrogate=sur, slope=slope,
                fused=bool(meta.get("fused", True)), refractory=int(meta.get("refractory", 0)),
                reset=str(meta.get("reset", default_reset)))


def _read_cell(name: str, node: Any, dt: float, meta: dict[str, Any]) -> _Cell:
    """Discrete parameters of a NIR neuron/integrator node (see the module docstring for the equations)."""
    nir = _nir()
    derived: dict[str, np.ndarray] = {}
    gain: np.ndarray | None
    bias: np.ndarray | None = None
    if isinstance(node, (nir.LIF, nir.LI)):
        tau, r, v_leak = _arr(node.tau), _arr(node.r), _arr(node.v_leak)
        derived["beta"] = _decay(name, "tau", tau, dt)
        gain, bias = dt * r / tau, dt * v_leak / tau
        kind = "lif" if isinstance(node, nir.LIF) else "li"
        shape = tau.shape
    elif isinstance(node, (nir.IF, nir.I)):
        r = _arr(node.r)
        gain, kind, shape = dt * r, ("if" if isinstance(node, nir.IF) else "i"), r.shape
    else:  # CubaLIF / CubaLI
        tau_syn, tau_mem = _arr(node.tau_syn), _arr(node.tau_mem)
        derived["alpha"] = _decay(name, "tau_syn", tau_syn, dt)
        derived["beta"] = _decay(name, "tau_mem", tau_mem, dt)
        if np.any(_arr(node.v_leak) != 0):
            raise UnsupportedLayerError(f"node {name!r} ({type(node).__name__}): v_leak != 0 is not supported "
                                        "(spikefed's current-based neurons have no leak potential)")
        gain = (dt * _arr(node.w_in) / tau_syn) * (dt * _arr(node.r) / tau_mem)
        kind = "synaptic" if isinstance(node, nir.CubaLIF) else "cubali"
        shape = tau_syn.shape
    if kind in ("lif", "if", "synaptic"):
        derived["threshold"] = _arr(node.v_threshold)
        derived["reset_value"] = _arr(node.v_reset)
    values, exact = _resolve(name, derived, meta)
    feats = meta.get("features")
    features = tuple(int(f) for f in np.atleast_1d(feats)) if feats is not None else tuple(int(s) for s in shape)
    learn = {k: bool(meta.get(f"learn_{k}", False)) for k in ("beta", "threshold", "alpha")}
    learn["reset_value"] = bool(meta.get("learn_reset", False))
    cell = _Cell(node=name, kind=kind, shape=tuple(int(s) for s in shape), values=values, exact=exact, learn=learn,
                 options=_cell_options(meta, "zero" if kind in ("lif", "if", "synaptic") else "none"),
                 features=features or None, gain=_snap(np.broadcast_to(gain, shape), 1.0),
                 bias=None if bias is None else _snap(np.broadcast_to(bias, shape), 0.0))
    cell.reset = cell.options.pop("reset")
    return cell


def _tensor(v: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.array(v), dtype=dtype)


def _collapse(v: np.ndarray) -> np.ndarray:
    """A node-shaped array whose entries are all equal -> 0-d (spikefed's scalar buffers)."""
    flat = np.asarray(v).ravel()
    return np.asarray(flat[0]) if flat.size and np.all(flat == flat[0]) else np.asarray(v)


def _assign(layer: nn.Module, name: str, value: np.ndarray, dtype: torch.dtype, exact: bool) -> None:
    """Set parameter/buffer ``name`` of ``layer`` to ``value`` (keeping a parameter's identity and manifold)."""
    current = getattr(layer, name)
    v = value if exact else _collapse(value)
    t = _tensor(v, dtype)
    if isinstance(current, nn.Parameter):
        current.data = t.expand(current.shape).clone() if t.shape != current.shape else t
    else:
        setattr(layer, name, t)


def _build_cell(cell: _Cell, dtype: torch.dtype) -> nn.Module:
    """The spikefed module for a cell (wrapped in :class:`Gained` when it has an input gain or bias)."""
    vals = cell.values
    exact = {k: k in cell.exact for k in vals}
    feats = cell.features
    if cell.kind in ("lif", "if", "synaptic", "rlif"):
        opts = dict(cell.options)
        kw: dict[str, Any] = dict(reset=cell.reset, learn_threshold=cell.learn["threshold"],
                                  learn_reset=cell.learn["reset_value"], graded=cell.amplitude is not None, **opts)
        if cell.kind == "if":
            layer: nn.Module = IF(feats, **kw)
        elif cell.kind == "lif":
            layer = LIF(feats, beta=0.5, learn_beta=cell.learn["beta"], **kw)
        elif cell.kind == "rlif":
            if feats is None or len(feats) != 1:
                raise NIRConversionError(f"node {cell.node!r}: a recurrent LIF needs 1-d features, got {feats}")
            layer = RecurrentLIF(feats[0], beta=0.5, learn_beta=cell.learn["beta"], **kw)
            assert cell.recurrent is not None
            layer.recurrent.data = _tensor(cell.recurrent, dtype)
        else:
            if opts.get("refractory"):
                raise NIRConversionError(f"node {cell.node!r}: Synaptic has no refractory period")
            layer = Synaptic(feats, alpha=0.5, beta=0.5, learn_alpha=cell.learn["alpha"],
                             learn_beta=cell.learn["beta"], **kw)
        for key in ("beta", "alpha", "threshold", "reset_value"):
            if key in vals and hasattr(layer, key) and not (cell.kind == "if" and key == "beta"):
                _assign(layer, key, vals[key], dtype, exact[key])
        if cell.amplitude is not None:
            _assign(layer, "amplitude", cell.amplitude, dtype, True)
    elif cell.kind == "li":
        layer = LeakyIntegrator(feats, beta=0.5, learn_beta=cell.learn["beta"])
        _assign(layer, "beta", vals["beta"], dtype, exact["beta"])
    elif cell.kind == "i":
        layer = PerfectIntegrator(1.0)
    else:
        layer = CurrentIntegrator(_tensor(_collapse(vals["alpha"]), dtype), _tensor(_collapse(vals["beta"]), dtype))
    layer = layer.to(dtype)
    if cell.gain is None and cell.bias is None:
        return layer
    return Gained(layer, None if cell.gain is None else _tensor(_collapse(cell.gain), dtype),
                  None if cell.bias is None else _tensor(_collapse(cell.bias), dtype)).to(dtype)


def _ints(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in np.atleast_1d(np.asarray(v)))


def _read_node(name: str, node: Any, dt: float, use_meta: bool, dtype: torch.dtype) -> _INode:
    """First pass: one NIR node -> an import node (cells stay specs until the fusions are done)."""
    nir = _nir()
    meta = _node_meta(node, use_meta)
    if isinstance(node, nir.Input):
        return _INode("input", node, meta)
    if isinstance(node, nir.Output):
        return _INode("output", node, meta)
    if isinstance(node, (nir.LIF, nir.LI, nir.IF, nir.I, nir.CubaLIF, nir.CubaLI)):
        return _INode("cell", node, meta, cell=_read_cell(name, node, dt, meta))
    if isinstance(node, nir.Threshold):
        return _INode("threshold", node, meta, module=Threshold(_tensor(_collapse(_arr(node.threshold)), dtype)))
    if isinstance(node, nir.Scale):
        return _INode("scale", node, meta, module=Scale(_tensor(_collapse(_arr(node.scale)), dtype)))
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight)
        if w.ndim != 2:
            raise UnsupportedLayerError(f"node {name!r}: only 2-d weight matrices are supported, got {w.shape}")
        has_bias = isinstance(node, nir.Affine)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=has_bias)
        with torch.no_grad():
            lin.weight.data = _tensor(w, dtype)
            if has_bias:
                lin.bias.data = _tensor(np.asarray(node.bias), dtype)  # type: ignore[union-attr]
        return _INode("linear", node, meta, module=lin.to(dtype))
    if isinstance(node, nir.Conv2d):
        w = np.asarray(node.weight)
        padding: Any = node.padding if isinstance(node.padding, str) else _ints(node.padding)
        has_bias = bool(meta.get("bias", True))
        conv = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], kernel_size=tuple(w.shape[2:]),
                         stride=_ints(node.stride), padding=padding, dilation=_ints(node.dilation),
                         groups=int(node.groups), bias=has_bias)
        conv.weight.data = _tensor(w, dtype)
        if has_bias:
            conv.bias.data = _tensor(np.asarray(node.bias), dtype)  # type: ignore[union-attr]
        return _INode("conv", node, meta, module=conv.to(dtype))
    if isinstance(node, nir.Flatten):
        return _INode("flatten", node, meta, module=Flatten(int(node.start_dim), int(node.end_dim)))
    if isinstance(node, nir.SumPool2d):
        k, s, p = (tuple(int(x) for x in np.broadcast_to(np.asarray(v), (2,)))
                   for v in (node.kernel_size, node.stride, node.padding))
        return _INode("sumpool", node, meta, module=SumPool2d(k, s, p))
    if isinstance(node, nir.AvgPool2d):
        k, s, p = (tuple(int(x) for x in np.broadcast_to(np.asarray(v), (2,)))
                   for v in (node.kernel_size, node.stride, node.padding))
        return _INode("avgpool", node, meta, module=nn.AvgPool2d(k, s, p))
    if isinstance(node, nir.Delay):
        d = _arr(node.delay)
        if d.ndim != 1:
            raise UnsupportedLayerError(f"node {name!r}: spikefed delays act on 1-d features, got shape {d.shape}")
        steps = d / dt
        exact = meta.get("delays")
        if exact is not None and np.asarray(exact).shape == d.shape and np.allclose(
                np.asarray(exact, np.float64), steps, rtol=_META_RTOL, atol=_META_ATOL):
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
        return _INode("delay", node, meta, module=delay.to(dtype))
    if isinstance(node, nir.NIRGraph):
        raise UnsupportedLayerError(f"node {name!r}: nested NIR graphs are not supported; flatten the graph first")
    raise UnsupportedLayerError(f"node {name!r}: NIR node type {type(node).__name__} is not supported by spikefed")


class _ImportGraph:
    """Mutable node/edge lists for the fusion passes."""

    def __init__(self, nodes: dict[str, _INode], edges: list[tuple[str, str]]) -> None:
        self.nodes, self.edges = nodes, edges

    def preds(self, n: str) -> list[str]:
        return [a for a, b in self.edges if b == n]

    def succs(self, n: str) -> list[str]:
        return [b for a, b in self.edges if a == n]

    def absorb(self, keep: str, gone: str) -> None:
        """Remove ``gone`` (which follows ``keep``): its outgoing edges now leave ``keep``."""
        new = []
        for a, b in self.edges:
            if (a, b) == (keep, gone):
                continue
            new.append((keep if a == gone else a, b))
        self.edges = new
        del self.nodes[gone]

    def only_link(self, a: str, b: str) -> bool:
        """``a``'s only successor is ``b`` and ``b``'s only predecessor is ``a``."""
        return self.succs(a) == [b] and self.preds(b) == [a]


def _fuse(g: _ImportGraph) -> None:
    """Recognise spikefed's multi-node encodings (exact in NIR) and fold them back into single layers."""
    to_spiking = {"li": "lif", "i": "if", "cubali": "synaptic"}
    # (a) integrator -> Threshold: a neuron without reset
    for name in list(g.nodes):
        node = g.nodes.get(name)
        if node is None or node.kind != "cell" or node.cell is None or node.cell.kind not in to_spiking:
            continue
        succ = g.succs(name)
        if len(succ) != 1 or g.nodes[succ[0]].kind != "threshold" or not g.only_link(name, succ[0]):
            continue
        thr_node = g.nodes[succ[0]]
        cell = node.cell
        thr = np.broadcast_to(_arr(thr_node.nir.threshold), cell.shape)
        if node.meta.get("layer") == "LeakyIntegrator":  # a read-out followed by someone's threshold
            node.meta = {}
        resolved, exact = _resolve(name, {"threshold": thr.astype(np.float64)}, node.meta)
        cell.values.update(resolved)
        cell.exact |= exact
        if "reset_value" in node.meta:  # irrelevant without a reset; kept for an identical round trip
            cell.values["reset_value"] = np.asarray(node.meta["reset_value"])
            cell.exact.add("reset_value")
        cell.kind = to_spiking[cell.kind]
        cell.reset = "none"
        cell.learn.setdefault("threshold", False)
        g.absorb(name, succ[0])
    # (b) spiking LIF <-> Linear cycle: RecurrentLIF
    for name in list(g.nodes):
        node = g.nodes.get(name)
        if node is None or node.kind != "cell" or node.cell is None or node.cell.kind != "lif":
            continue
        for rec in g.succs(name):
            rnode = g.nodes[rec]
            if rnode.kind != "linear" or g.preds(rec) != [name] or g.succs(rec) != [name]:
                continue
            lin = rnode.module
            assert isinstance(lin, nn.Linear)
            if lin.bias is not None and bool(torch.any(lin.bias != 0)):
                continue
            if node.cell.gain is not None or node.cell.bias is not None:
                continue
            node.cell.kind = "rlif"
            node.cell.recurrent = lin.weight.detach().cpu().numpy()
            g.edges = [e for e in g.edges if rec not in e]
            del g.nodes[rec]
            break
    # (c) spiking neuron -> Scale tagged as its graded amplitude
    for name in list(g.nodes):
        node = g.nodes.get(name)
        if node is None or node.kind != "cell" or node.cell is None or node.cell.kind not in ("lif", "if",
                                                                                              "synaptic", "rlif"):
            continue
        succ = g.succs(name)
        if len(succ) != 1 or g.nodes[succ[0]].kind != "scale" or not g.only_link(name, succ[0]):
            continue
        snode = g.nodes[succ[0]]
        if snode.meta.get("role") != "amplitude":
            continue
        amp = snode.meta.get("amplitude")
        field_amp = _arr(snode.nir.scale)
        if amp is None or not np.allclose(np.broadcast_to(np.asarray(amp, np.float64), field_amp.shape), field_amp,
                                          rtol=_META_RTOL, atol=_META_ATOL):
            amp = field_amp
        node.cell.amplitude = np.asarray(amp)
        g.absorb(name, succ[0])
    # (d) SumPool2d -> Threshold tagged as a max pool of binary spikes
    for name in list(g.nodes):
        node = g.nodes.get(name)
        if node is None or node.kind != "sumpool" or node.meta.get("layer") != "MaxPool2d":
            continue
        succ = g.succs(name)
        if len(succ) != 1 or g.nodes[succ[0]].meta.get("role") != "maxpool" or not g.only_link(name, succ[0]):
            continue
        sp = node.module
        assert isinstance(sp, SumPool2d)
        node.kind = "maxpool"
        square = [v[0] if v[0] == v[1] else v for v in (sp.kernel_size, sp.stride, sp.padding)]
        node.module = nn.MaxPool2d(*square)
        g.absorb(name, succ[0])


def _chain(ex: GraphExecutor) -> list[nn.Module] | None:
    """The ops of ``ex`` when it is a simple chain input -> op_0 -> ... -> output, else ``None``."""
    prev = ex.input_name
    for name in ex.names:
        if ex.preds[name] != [prev]:
            return None
        prev = name
    if ex.preds[ex.output_name] != [prev]:
        return None
    return list(ex.ops)


_KINDS = {LIF: "lif", IF: "if", Synaptic: "synaptic", RecurrentLIF: "rlif"}


def _neuron_kind(op: nn.Module) -> str | None:
    return _KINDS.get(type(op))


def _as_mlp(ops: list[nn.Module], in_shape: tuple[int, ...] | None) -> SpikingMLP | None:
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
    kinds = {_neuron_kind(c) for c in spiking}
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


def _as_convnet(ops: list[nn.Module], in_shape: tuple[int, ...] | None) -> SpikingConvNet | None:
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
    kinds = {_neuron_kind(c) for c in spiking}
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


def _as_regressor(ops: list[nn.Module], in_shape: tuple[int, ...] | None) -> RecurrentRegressor | None:
    """A RecurrentRegressor with these layers: Linear, neuron, Linear, LeakyIntegrator (all linears with bias)."""
    if in_shape is None or len(in_shape) != 1 or len(ops) != 4:
        return None
    enc, cell, dec, ro = ops
    if not (type(enc) is nn.Linear and type(dec) is nn.Linear and enc.bias is not None and dec.bias is not None
            and type(ro) is LeakyIntegrator and _neuron_kind(cell) is not None):
        return None
    model = RecurrentRegressor(in_shape[0], enc.out_features, dec.out_features, neuron=_neuron_kind(cell) or "lif")
    model.encoder, model.neuron, model.decoder, model.readout = enc, cell, dec, ro  # type: ignore[assignment]
    return model


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
    nir = _nir()
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"expected a nir.NIRGraph, got {type(graph).__name__} (use load_nir for a file)")
    gmeta = _node_meta(graph, use_metadata)
    if dt is None:
        dt = float(gmeta.get("dt", 1.0))
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a finite number > 0, got {dt!r}")
    if dtype is None:
        dtype = getattr(torch, str(gmeta.get("dtype", "float32")), torch.float32)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            dtype = torch.float32
    nodes = {name: _read_node(name, node, dt, use_metadata, dtype) for name, node in graph.nodes.items()}
    inputs = [n for n, v in nodes.items() if v.kind == "input"]
    outputs = [n for n, v in nodes.items() if v.kind == "output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedLayerError(f"spikefed imports graphs with exactly one Input and one Output node, got "
                                    f"inputs {inputs} and outputs {outputs}")
    g = _ImportGraph(nodes, [(str(a), str(b)) for a, b in graph.edges])
    _fuse(g)
    modules: dict[str, nn.Module] = {}
    for name, node in g.nodes.items():
        if node.kind in ("input", "output"):
            continue
        if node.kind == "cell":
            assert node.cell is not None
            modules[name] = _build_cell(node.cell, dtype)
        else:
            assert node.module is not None
            modules[name] = node.module
    in_node = g.nodes[inputs[0]].nir
    in_shape = tuple(int(s) for s in np.atleast_1d(in_node.input_type["input"]))
    ex = GraphExecutor(modules, g.edges, input_name=inputs[0], output_name=outputs[0], input_shape=in_shape, dt=dt)
    if structured:
        ops = _chain(ex)
        if ops is not None:
            if gmeta.get("model") == "RecurrentRegressor":
                model: nn.Module | None = _as_regressor(ops, in_shape)
                if model is not None:
                    return model
            for build in (_as_mlp, _as_convnet):
                model = build(ops, in_shape)
                if model is not None:
                    return model
    return ex


def save_nir(model: nn.Module | "nir_types.NIRGraph", path: str | Path, dt: float | None = None,
             **kwargs: Any) -> "nir_types.NIRGraph":
    """Export ``model`` with :func:`to_nir` (``dt`` and ``kwargs`` passed on) and write it to an HDF5 file.

    A ``nir.NIRGraph`` is written as is. Returns the graph written.
    """
    nir = _nir()
    graph = model if isinstance(model, nir.NIRGraph) else to_nir(model, dt, **kwargs)
    nir.write(str(path), graph)
    return graph


def load_nir(path: str | Path, dt: float | None = None, **kwargs: Any) -> nn.Module:
    """Read a NIR HDF5 file (``nir.read``) and import it with :func:`from_nir` (``dt``, ``kwargs`` passed on)."""
    nir = _nir()
    return from_nir(nir.read(str(path)), dt, **kwargs)
