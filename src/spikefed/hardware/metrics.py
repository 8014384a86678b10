"""NeuroBench-style static and workload metrics, and energy per inference, for any spikefed model.

Static metrics (no data needed):

- :func:`footprint_bytes`: ``sum(numel * element_size)`` over the parameters and buffers (a tensor shared by
  two modules counts once);
- :func:`connection_sparsity`: ``zeros / weights`` over the synaptic weights (``nn.Linear`` / ``nn.Conv1d/2d/3d``
  weights and the recurrent matrix ``V`` of ``RecurrentLIF`` / ``RecurrentALIF``; biases excluded).

Workload metrics (:func:`measure`, one forward of the model on a time-major batch ``x [T, B, *features]``):

- activation sparsity ``= 1 - spikes / outputs``, over every output of every spiking neuron layer (all
  LIF-family layers; the non-spiking :class:`~spikefed.snn.neurons.LeakyIntegrator` read-out is no spiking
  layer), time steps and samples; ``None`` for a model without spiking layers;
- per synaptic layer, with ``z`` its input (rows = time x batch) and ``W`` its weights:

  - dense ops: MACs of a dense, non-spiking implementation (``rows * in * out`` for ``nn.Linear``; in-bounds
    kernel connections for convolutions, see :func:`~spikefed.hardware.energy.conv_dense_ops`);
  - synaptic events ``= sum(nonzero(z) @ (W != 0)^T)`` (convolutions: ``sum(conv(nonzero(z), W != 0))``):
    every non-zero input element drives one event per connection with a non-zero weight, so pruned weights
    reduce the count;
  - effective ACs = the events of layers whose input is binary (spikes), effective MACs = the events of
    layers whose input is not (direct-coded current, graded spikes, fractionally delayed spikes);
  - the recurrent matrix of ``RecurrentLIF`` / ``RecurrentALIF`` is a synaptic layer whose input at step ``t`` is the
    layer's own spike vector of step ``t - 1`` (the state's spikes, zeros by default, at ``t = 0``): binary, so ACs;

- energy ``= e_ac * ACs + e_mac * MACs + e_spike * spikes`` (:class:`~spikefed.hardware.energy.EnergyModel`,
  presets ``"45nm"`` and ``"loihi"``);
- totals are over the batch; per inference ``= total / B``.

Direct-coded input that is constant over time (a stride-0 view, see
:func:`spikefed.snn.models.is_time_constant`) is computed only once by the models, but the hardware integrates
it at every step: the layer that received that single step counts ``T`` times, exactly as if the input were
materialised. (A layer counts ``T``-fold when it is called once, on one step of the time-constant model input;
a step-by-step model that calls it ``T`` times counts each call once.)

How: forward hooks on every ``nn.Linear`` / ``nn.Conv1d/2d/3d`` see each layer's input (``[T, B, in]``, a
folded ``[T*B, ...]`` or one step ``[B, ...]``: the leading dims are all rows, their layout does not matter).
The models call the neurons' ``run`` method directly, which bypasses ``nn.Module.__call__`` and therefore
forward hooks, so ``run`` and ``step`` of each spikefed neuron layer are wrapped on the instance for the
duration of the call. Every hook and wrapper is removed afterwards, also when the forward raises: no state
is left on the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..snn.models import is_time_constant
from ..snn.neurons import LIF, RECURRENT_NEURONS
from .energy import (
    ENERGY_PRESETS,
    EnergyModel,
    as_energy_model,
    conv_dense_ops,
    conv_events,
    energy_preset,
    is_binary,
    linear_dense_ops,
    linear_events,
)

__all__ = [
    "ENERGY_PRESETS", "EnergyModel", "InferenceMetrics", "LayerMetrics", "SYNAPTIC_TYPES", "connection_sparsity",
    "energy_preset", "footprint_bytes", "measure", "synaptic_weights",
]

#: Module types counted as synaptic layers (their input drives the events).
SYNAPTIC_TYPES: tuple[type[nn.Linear], type[nn.Conv1d], type[nn.Conv2d], type[nn.Conv3d]] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_KINDS = ("linear", "conv1d", "conv2d", "conv3d")


# --------------------------------------------------------------------------------------------------- static


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def footprint_bytes(model: nn.Module) -> int:
    """Memory footprint ``sum(numel * element_size)`` of all parameters and buffers, in bytes.

    A tensor reached through several modules (tied weights) counts once.
    """
    _check_model(model)
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
    return total


def synaptic_weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``(name, weight)`` of every synaptic weight: Linear/Conv weights and RecurrentLIF recurrent matrices."""
    _check_model(model)
    out: list[tuple[str, torch.Tensor]] = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, SYNAPTIC_TYPES):
            w, wname = module.weight, f"{name}.weight" if name else "weight"
        elif isinstance(module, RECURRENT_NEURONS):
            w, wname = module.recurrent, f"{name}.recurrent" if name else "recurrent"
        else:
            continue
        if id(w) not in seen:
            seen.add(id(w))
            out.append((wname, w))
    return out


def connection_sparsity(model: nn.Module) -> float:
    """Fraction of zero synaptic weights: ``sum_l #{W_l == 0} / sum_l numel(W_l)`` (biases excluded).

    ``ValueError`` when the model has no synaptic layer.
    """
    weights = synaptic_weights(model)
    if not weights:
        raise ValueError(
            "model has no synaptic layer (nn.Linear, nn.Conv1d/2d/3d or RecurrentLIF); connection sparsity is undefined"
        )
    zeros = sum(int((w == 0).sum()) for _, w in weights)
    total = sum(w.numel() for _, w in weights)
    return zeros / total


# --------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LayerMetrics:
    """Counts of one layer over the measured batch (totals, not per inference).

    ``kind``: ``"linear"``, ``"conv1d"``, ``"conv2d"``, ``"conv3d"``, ``"recurrent"`` (synaptic layers: ops
    set, spikes 0) or ``"neuron"`` (spiking layers: ``spikes`` and ``outputs`` set, ops 0).
    """

    name: str
    kind: str
    dense_ops: int = 0
    effective_macs: int = 0
    effective_acs: int = 0
    spikes: int = 0
    outputs: int = 0

    @property
    def synops(self) -> int:
        """``effective_macs + effective_acs``."""
        return self.effective_macs + self.effective_acs

    def energy(self, model: EnergyModel) -> float:
        """This layer's share of the energy: ``e_ac * ACs + e_mac * MACs + e_spike * spikes`` (J, batch total)."""
        return model.energy(self.effective_acs, self.effective_macs, self.spikes)


@dataclass(frozen=True)
class InferenceMetrics:
    """Result of :func:`measure`.

    Count fields are totals over the ``samples`` (batch) measured; :meth:`per_inference` divides by ``samples``.
    ``energy_j`` is the energy *per inference*, ``energy_total_j`` the batch total.
    """

    footprint_bytes: int
    connection_sparsity: float
    activation_sparsity: float | None
    dense_ops: int
    effective_macs: int
    effective_acs: int
    spikes: int
    neuron_outputs: int
    samples: int
    time_steps: int
    energy_model: EnergyModel
    layers: tuple[LayerMetrics, ...] = field(default_factory=tuple)

    @property
    def synops(self) -> int:
        """Effective synaptic operations ``effective_macs + effective_acs`` (batch total)."""
        return self.effective_macs + self.effective_acs

    @property
    def energy_total_j(self) -> float:
        """``e_ac * ACs + e_mac * MACs + e_spike * spikes`` over the batch, in joules."""
        return self.energy_model.energy(self.effective_acs, self.effective_macs, self.spikes)

    @property
    def energy_j(self) -> float:
        """Energy per inference: ``energy_total_j / samples`` joules."""
        return self.energy_total_j / self.samples

    def per_inference(self) -> dict[str, float]:
        """Workload counts and energy per inference (batch totals / ``samples``)."""
        n = self.samples
        return {
            "dense_ops": self.dense_ops / n,
            "effective_macs": self.effective_macs / n,
            "effective_acs": self.effective_acs / n,
            "synops": self.synops / n,
            "spikes": self.spikes / n,
            "energy_j": self.energy_j,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: static metrics, per-inference counts and energy, and per-layer per-inference rows."""
        n = self.samples
        em = self.energy_model
        return {
            "footprint_bytes": self.footprint_bytes,
            "connection_sparsity": self.connection_sparsity,
            "activation_sparsity": self.activation_sparsity,
            **self.per_inference(),
            "samples": n,
            "time_steps": self.time_steps,
            "energy_model": {"e_ac": em.e_ac, "e_mac": em.e_mac, "e_spike": em.e_spike},
            "layers": [
                {"name": layer.name, "kind": layer.kind, "dense_ops": layer.dense_ops / n,
                 "effective_macs": layer.effective_macs / n, "effective_acs": layer.effective_acs / n,
                 "synops": layer.synops / n, "spikes": layer.spikes / n, "outputs": layer.outputs / n,
                 "energy_j": layer.energy(em) / n}
                for layer in self.layers
            ],
        }


# --------------------------------------------------------------------------------------------------- measuring


@dataclass
class _Synaptic:
    """Running tally of one synaptic layer during the forward."""

    name: str
    kind: str
    events: int = 0
    dense: int = 0
    binary: bool = True
    calls: int = 0
    constant_calls: int = 0  # calls on one step of the time-constant model input

    def add(self, events: int, dense: int, binary: bool, constant_step: bool = False) -> None:
        self.events += events
        self.dense += dense
        self.binary = self.binary and binary
        self.calls += 1
        self.constant_calls += int(constant_step)

    def result(self, steps: int) -> LayerMetrics:
        # computed once for all T steps of a time-constant input: the hardware does it every step
        factor = steps if self.calls == 1 and self.constant_calls == 1 else 1
        events, dense = self.events * factor, self.dense * factor
        return LayerMetrics(self.name, self.kind, dense_ops=dense, effective_macs=0 if self.binary else events,
                            effective_acs=events if self.binary else 0)


@dataclass
class _Neuron:
    """Running tally of one spiking layer."""

    name: str
    spikes: int = 0
    outputs: int = 0

    def result(self) -> LayerMetrics:
        return LayerMetrics(self.name, "neuron", spikes=self.spikes, outputs=self.outputs)


def _check_input(x: Any) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor [T, B, *features], got {type(x).__name__}")
    if x.dim() < 3:
        raise ValueError(f"expected a time-major input [T, B, *features] (at least 3 dims), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x needs T >= 1 time steps and B >= 1 samples, got shape {tuple(x.shape)}")


def _step_of(z: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether ``z`` is one time step of the time-constant input ``x`` (same memory, one step's elements)."""
    return (is_time_constant(x) and z.data_ptr() == x.data_ptr() and z.numel() == x[0].numel()
            and z.device == x.device)


class _Recorder:
    """Installs the hooks and wrappers on ``model``, tallies, and removes everything in :meth:`close`."""

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        self.x = x
        self.synaptic: dict[str, _Synaptic] = {}
        self.neurons: dict[str, _Neuron] = {}
        self.order: list[tuple[str, str]] = []  # ("syn"|"neuron", key) in module order
        self.called: list[tuple[str, str]] = []  # the same keys in the order of their first call
        self._called_set: set[tuple[str, str]] = set()
        self._handles: list[Any] = []
        self._patched: list[tuple[nn.Module, str, bool, Any]] = []
        try:
            for name, module in model.named_modules():
                label = name or "<model>"
                if isinstance(module, SYNAPTIC_TYPES):
                    kind = _KINDS[next(i for i, t in enumerate(SYNAPTIC_TYPES) if isinstance(module, t))]
                    self.synaptic[label] = _Synaptic(label, kind)
                    self.order.append(("syn", label))
                    self._handles.append(module.register_forward_hook(self._synaptic_hook(label)))
                elif isinstance(module, LIF):
                    self.neurons[label] = _Neuron(label)
                    self.order.append(("neuron", label))
                    if isinstance(module, RECURRENT_NEURONS):
                        key = f"{label}.recurrent"
                        self.synaptic[key] = _Synaptic(key, "recurrent")
                        self.order.append(("syn", key))
                    self._wrap_neuron(module, label)
        except BaseException:
            self.close()
            raise

    # -- synaptic layers ---------------------------------------------------------------------------------------
    def _synaptic_hook(self, label: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            z = args[0]
            if isinstance(module, nn.Linear):
                events, dense = linear_events(z, module.weight), linear_dense_ops(z, module.weight)
            elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                events, dense = conv_events(module, z), conv_dense_ops(module, z)
            else:  # hooks are installed on SYNAPTIC_TYPES only
                raise TypeError(f"no synaptic count for {type(module).__name__} ({label})")
            self._touch(("syn", label))
            self.synaptic[label].add(events, dense, is_binary(z), _step_of(z, self.x))

        return hook

    # -- neurons -----------------------------------------------------------------------------------------------
    def _wrap_neuron(self, neuron: LIF, label: str) -> None:
        depth = [0]  # ALIF.step / RecurrentLIF.step call run: record only the outermost call
        recurrent = self.synaptic.get(f"{label}.recurrent")

        def record(spikes: torch.Tensor, state: Any) -> None:
            self._touch(("neuron", label))
            tally = self.neurons[label]
            tally.spikes += int((spikes != 0).sum())
            tally.outputs += spikes.numel()
            if recurrent is not None and isinstance(neuron, RECURRENT_NEURONS):
                weight = neuron.recurrent
                previous = getattr(state, "spikes", None)
                first = torch.zeros_like(spikes[0]) if previous is None else previous.to(spikes.device)
                inputs = torch.cat([first.unsqueeze(0), spikes[:-1]], dim=0)  # s[t-1] drives step t
                # the recurrent input is the Heaviside spike itself (binary even for graded layers)
                self._touch(("syn", recurrent.name))
                recurrent.add(linear_events(inputs, weight), linear_dense_ops(inputs, weight), True)

        def wrap(method_name: str, one_step: bool) -> None:
            original = getattr(neuron, method_name)

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                depth[0] += 1
                try:
                    result = original(*args, **kwargs)
                finally:
                    depth[0] -= 1
                if depth[0] == 0:
                    state = args[1] if len(args) > 1 else kwargs.get("state")
                    spikes = result[0]
                    record(spikes.unsqueeze(0) if one_step else spikes, state)
                return result

            had_own = method_name in neuron.__dict__
            self._patched.append((neuron, method_name, had_own, neuron.__dict__.get(method_name)))
            object.__setattr__(neuron, method_name, wrapper)

        wrap("run", one_step=False)
        wrap("step", one_step=True)

    def _touch(self, key: tuple[str, str]) -> None:
        if key not in self._called_set:
            self._called_set.add(key)
            self.called.append(key)

    def layer_order(self) -> list[tuple[str, str]]:
        """Execution order (first call), then the layers never called, in module order."""
        return self.called + [key for key in self.order if key not in self._called_set]

    # -- clean-up ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module, method_name, had_own, previous in reversed(self._patched):
            if had_own:
                object.__setattr__(module, method_name, previous)
            else:
                object.__delattr__(module, method_name)
        self._patched.clear()


@torch.no_grad()
def measure(model: nn.Module, x: torch.Tensor, energy: EnergyModel | str = "45nm") -> InferenceMetrics:
    """Run ``model(x)`` once on a time-major batch ``x [T, B, *features]`` and measure it.

    Args:
        model: any ``nn.Module`` built from ``nn.Linear`` / ``nn.Conv1d/2d/3d`` and spikefed neuron layers
            (:class:`~spikefed.snn.models.SpikingMLP`, :class:`~spikefed.snn.models.SpikingConvNet`,
            :class:`~spikefed.snn.models.RecurrentRegressor`, or your own); it is called as ``model(x)`` in its
            current train/eval mode, without gradients.
        x: input ``[T, B, *features]``, time first (direct coding may be a stride-0 view: it counts T times).
        energy: an :class:`EnergyModel` or a preset name (``"45nm"``, ``"loihi"``).

    Returns:
        :class:`InferenceMetrics` with batch totals (``.per_inference()``, ``.energy_j`` per inference) and a
        per-layer breakdown in execution order (first call; each recurrent matrix right after its neuron layer,
        layers never called last, with zero counts).

    Raises:
        ValueError: ``x`` is not a floating-point ``[T, B, ...]`` tensor, ``energy`` is no EnergyModel or an
            unknown preset, or the model has no synaptic layer.
    """
    _check_model(model)
    _check_input(x)
    energy_model = as_energy_model(energy)
    static_sparsity = connection_sparsity(model)  # raises when there is no synaptic layer
    steps, batch = int(x.shape[0]), int(x.shape[1])

    recorder = _Recorder(model, x)
    try:
        model(x)
    finally:
        recorder.close()

    layers: list[LayerMetrics] = []
    for what, key in recorder.layer_order():
        layers.append(recorder.synaptic[key].result(steps) if what == "syn" else recorder.neurons[key].result())
    spikes = sum(layer.spikes for layer in layers)
    outputs = sum(layer.outputs for layer in layers)
    return InferenceMetrics(
        footprint_bytes=footprint_bytes(model),
        connection_sparsity=static_sparsity,
        activation_sparsity=(1.0 - spikes / outputs) if outputs else None,
        dense_ops=sum(layer.dense_ops for layer in layers),
        effective_macs=sum(layer.effective_macs for layer in layers),
        effective_acs=sum(layer.effective_acs for layer in layers),
        spikes=spikes,
        neuron_outputs=outputs,
        samples=batch,
        time_steps=steps,
        energy_model=energy_model,
        layers=tuple(layers),
    )
