""":class:`GraphExecutor`: runs a directed acyclic graph of spikefed layers on time-major input, and the registry
of how it runs each module type.

A :class:`LayerRule` says whether a type is stateless (applied to all T steps at once) or stateful (runs the
whole sequence with explicit state), whether its output is spikes, and the base of its node names. Lookups walk
the MRO, so a subclass of a registered type runs like its base. :func:`register_layer` adds a type of one's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ...snn.delay import Delay
from ...snn.models import ModelOutput, time_invariant
from ...snn.neurons import ALIF, IF, LIF, LeakyIntegrator, RecurrentLIF, Synaptic
from .common import SUPPORTED_LAYERS, NIRConversionError, UnsupportedLayerError, lookup
from .runtime import (
    CurrentIntegrator,
    Flatten,
    Gained,
    PerfectIntegrator,
    Scale,
    SumPool2d,
    Threshold,
    fold,
    layer_label,
    unfold,
    unwrap,
)

__all__ = [
    "LAYER_RULES", "Apply", "GraphExecutor", "LayerRule", "Run", "apply_folded", "apply_linear", "apply_stateless",
    "apply_time_major", "base_name", "chain_names", "is_spiking", "is_stateful", "register_layer", "rule_for",
    "run_delay", "run_gained", "run_integrator", "run_neuron", "run_stateful", "topological_order",
]

#: A stateless rule: ``(module, x [T, B, ...]) -> y [T, B, ...]``.
Apply = Callable[[nn.Module, torch.Tensor], torch.Tensor]
#: A stateful rule: ``(module, x [T, B, ...], state or None) -> (output, membrane or None, final state)``.
Run = Callable[[nn.Module, torch.Tensor, Any], tuple[torch.Tensor, torch.Tensor | None, Any]]


@dataclass(frozen=True)
class LayerRule:
    """How the executor runs one module type (exactly one of ``apply`` / ``run`` is set)."""

    name: str  #: base of node names: ``lif`` -> ``lif_0``, ``lif_1``, ...
    apply: Apply | None = None
    run: Run | None = None
    spiking: bool = False  #: the output is a spike train (reported in ``ModelOutput.hidden``)

    @property
    def stateful(self) -> bool:
        return self.run is not None


#: module type -> :class:`LayerRule` (looked up along the MRO).
LAYER_RULES: dict[type, LayerRule] = {}


def register_layer(*types: type, name: str, apply: Apply | None = None, run: Run | None = None,
                   spiking: bool = False) -> None:
    """Let :class:`~spikefed.interop.nir.GraphExecutor` run modules of ``types`` (and their subclasses).

    Give ``apply`` for a stateless module (e.g. :func:`apply_folded`, which calls the module on ``[T*B, ...]``) or
    ``run`` for a stateful one; ``name`` is the base of the node names. Export additionally needs a converter
    (:func:`~spikefed.interop.nir.register_converter`).
    """
    if (apply is None) == (run is None):
        raise ValueError("give exactly one of apply= (stateless) or run= (stateful)")
    for cls in types:
        LAYER_RULES[cls] = LayerRule(name, apply, run, spiking)


def rule_for(op: nn.Module) -> LayerRule | None:
    """The rule for ``op``'s type (or its nearest registered base class), else ``None``."""
    return lookup(LAYER_RULES, op)


def is_stateful(op: nn.Module) -> bool:
    rule = rule_for(op)
    return rule is not None and rule.stateful


def is_spiking(op: nn.Module) -> bool:
    """Whether ``op`` (or the layer a :class:`Gained` wraps) emits spikes."""
    rule = rule_for(unwrap(op))
    return rule is not None and rule.spiking


# -------------------------------------------------------------------------------------------------- rules


def apply_folded(op: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Call a per-sample module on all T steps at once (time folded into the batch)."""
    flat, tb = fold(x)
    return unfold(op(flat), tb)


def apply_time_major(op: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Call a module that takes ``[T, B, ...]`` itself."""
    return op(x)


def apply_linear(op: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return time_invariant(op, x)  # same path as SpikingMLP


def apply_stateless(op: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a stateless op to all T steps of ``x [T, B, ...]``."""
    rule = rule_for(op)
    return (apply_folded if rule is None or rule.apply is None else rule.apply)(op, x)


def run_neuron(op: nn.Module, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
    out = op.run(x, state)  # type: ignore[operator]
    return out.spikes, out.membrane, out.state


def run_integrator(op: nn.Module, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
    y, last = op(x, state)
    return y, y, last


def run_delay(op: nn.Module, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
    y, st = op(x, state)
    return y, None, st


def run_gained(op: nn.Module, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
    assert isinstance(op, Gained)
    return run_stateful(op.layer, op.prepare(x), state)


def run_stateful(op: nn.Module, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
    """Run a stateful op over ``x [T, B, ...]``: ``(output, membrane or None, final state)``."""
    rule = rule_for(op)
    if rule is None or rule.run is None:
        raise UnsupportedLayerError(f"no stateful runner for {type(op).__name__}")
    return rule.run(op, x, state)


register_layer(nn.Linear, name="linear", apply=apply_linear)
register_layer(nn.Conv2d, name="conv", apply=apply_folded)
register_layer(nn.MaxPool2d, name="maxpool", apply=apply_folded)
register_layer(nn.AvgPool2d, name="avgpool", apply=apply_folded)
register_layer(nn.Flatten, name="flatten", apply=apply_folded)
register_layer(Flatten, name="flatten", apply=apply_time_major)
register_layer(SumPool2d, name="sumpool", apply=apply_time_major)
register_layer(Threshold, name="threshold", apply=apply_time_major)
register_layer(Scale, name="scale", apply=apply_time_major)
register_layer(LIF, name="lif", run=run_neuron, spiking=True)
register_layer(IF, name="if", run=run_neuron, spiking=True)
register_layer(Synaptic, name="synaptic", run=run_neuron, spiking=True)
register_layer(RecurrentLIF, name="rlif", run=run_neuron, spiking=True)
register_layer(ALIF, name="alif", run=run_neuron, spiking=True)
register_layer(LeakyIntegrator, name="li", run=run_integrator)
register_layer(PerfectIntegrator, name="i", run=run_integrator)
register_layer(CurrentIntegrator, name="cubali", run=run_integrator)
register_layer(Delay, name="delay", run=run_delay)
register_layer(Gained, name="gained", run=run_gained)  # named after the wrapped layer, see base_name


# -------------------------------------------------------------------------------------------------- names


def base_name(op: nn.Module) -> str:
    """Base of a node name for ``op``: its rule's name (a :class:`Gained` is named after the layer it wraps),
    else the lower-cased type name."""
    if isinstance(op, Gained):
        return base_name(op.layer)
    rule = rule_for(op)
    return type(op).__name__.lower() if rule is None else rule.name


def chain_names(layers: Sequence[nn.Module]) -> list[str]:
    """Unique node names ``<base>_<k>`` for a chain of layers (``linear_0``, ``lif_0``, ``linear_1``, ...)."""
    counts: dict[str, int] = {}
    names = []
    for op in layers:
        base = base_name(op)
        names.append(f"{base}_{counts.get(base, 0)}")
        counts[base] = counts.get(base, 0) + 1
    return names


# -------------------------------------------------------------------------------------------------- the executor


def topological_order(names: Sequence[str], edges: Sequence[tuple[str, str]], source: str) -> list[str]:
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
    SpikingMLP / SpikingConvNet / RecurrentRegressor; :meth:`sequential` builds a chain directly. Which module
    types it runs, and how, is :data:`LAYER_RULES` (:func:`register_layer`).

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
            if rule_for(op) is None:
                raise UnsupportedLayerError(f"{layer_label(name, op)} is not supported by GraphExecutor (nor by NIR "
                                            f"export); supported: {SUPPORTED_LAYERS}")
        all_names = [input_name, *nodes, output_name]
        for a, b in edges:
            if a not in all_names or b not in all_names:
                raise ValueError(f"edge ({a!r}, {b!r}) names an unknown node")
            if b == input_name or a == output_name:
                raise ValueError(f"edge ({a!r}, {b!r}) goes into the input or out of the output")
        order = topological_order(all_names, list(edges), input_name)
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
        names = chain_names(layers)
        edges = list(zip(["input", *names], [*names, "output"]))
        return cls(dict(zip(names, layers)), edges, input_shape=input_shape, dt=dt)

    def node(self, name: str) -> nn.Module:
        """The module of node ``name``."""
        return self.ops[self.names.index(name)]

    @property
    def edges(self) -> list[tuple[str, str]]:
        """All edges, in execution order of their targets."""
        return [(a, b) for b in [*self.names, self.output_name] for a in self.preds[b]]

    def gather(self, values: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """The input of node ``name``: the sum of the values of its predecessors."""
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
        n_state = sum(1 for op in self.ops if is_stateful(op))
        states = [None] * n_state if state is None else list(state)
        if len(states) != n_state:
            raise ValueError(f"state must have one entry per stateful node ({n_state}), got {len(states)}")
        values: dict[str, torch.Tensor] = {self.input_name: x}
        membranes: dict[str, torch.Tensor] = {}
        hidden: list[torch.Tensor] = []
        new_state: list[Any] = []
        k = 0
        for name, op in zip(self.names, self.ops):
            h = self.gather(values, name)
            if is_stateful(op):
                y, mem, st = run_stateful(op, h, states[k])
                k += 1
                new_state.append(st)
                if mem is not None:
                    membranes[name] = mem
                if is_spiking(op):
                    hidden.append(y)
            else:
                y = apply_stateless(op, h)
            values[name] = y
        out = self.gather(values, self.output_name)
        last = self.preds[self.output_name]
        membrane = membranes.get(last[0], out) if len(last) == 1 else out
        return ModelOutput(out, membrane, hidden, new_state)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, edges={self.edges}"
