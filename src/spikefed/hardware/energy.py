"""Synaptic operation counts and energy per inference (seed 000: ``E = E_spike * spikes + E_syn * events``).

Counting rule (NeuroBench-style effective operations). A synaptic layer with weights ``W`` receives an input
``z``; every input element ``z[r, i]`` that is non-zero drives one synaptic event per *connection with a
non-zero weight* it has to the outputs:

- dense linear layer ``W [out, in]``: ``events = sum_r sum_i [z[r, i] != 0] * f_i`` with the fan-out
  ``f_i = #{o : W[o, i] != 0}``, i.e. ``events = sum(nonzero(z) @ (W != 0)^T)`` (rows ``r`` run over time and
  batch); a dense, non-spiking implementation does ``rows * in * out`` multiply-accumulates;
- convolution: the same sum, with the connections given by the kernel, stride, padding, dilation and groups:
  ``events = sum(conv(nonzero(z), W != 0))``; dense ops ``= sum(conv(ones_like(z), ones_like(W)))`` (only
  in-bounds connections: a zero-padded position is no synapse).

Events driven by binary inputs (spikes in {0, 1}) are accumulates (ACs: the weight is added); events driven by
non-binary inputs (direct current, graded spikes) are multiply-accumulates (MACs). The choice is made per layer
over its whole input, as NeuroBench does.

``energy = e_ac * ACs + e_mac * MACs + e_spike * spikes``. Presets (:data:`ENERGY_PRESETS`):

- ``"45nm"``: 0.9 pJ per AC (32-bit float add) and 4.6 pJ per MAC (32-bit float multiply 3.7 pJ + add 0.9 pJ),
  45 nm CMOS, M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014;
- ``"loihi"``: 23.6 pJ per synaptic operation, both AC and MAC (the minimum energy per synaptic spike operation
  reported for Intel Loihi in M. Davies et al., "Loihi: a neuromorphic manycore processor with on-chip
  learning", IEEE Micro 38(1), 2018). A lower bound: neuron updates, spike routing and static power are not
  charged, and Loihi has no multiplier for graded inputs (MACs are charged like ACs).

Bias additions and neuron state updates are not counted as synaptic operations.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn

from ..snn.models import ModelOutput, SpikingMLP


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in joules: ``energy = e_ac * ACs + e_mac * MACs + e_spike * spikes``.

    Defaults are the ``"45nm"`` preset (Horowitz 2014) with no charge per emitted spike; set ``e_spike`` for
    hardware that charges spike routing. Every value must be finite and ``>= 0`` (``ValueError`` otherwise).
    """

    e_ac: float = 0.9e-12
    e_mac: float = 4.6e-12
    e_spike: float = 0.0

    def __post_init__(self) -> None:
        for name in ("e_ac", "e_mac", "e_spike"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{name} must be a number of joules, got {value!r}")
            joules = float(value)
            if not joules >= 0 or not math.isfinite(joules):
                raise ValueError(f"{name} must be a finite energy >= 0 joules, got {value!r}")
            object.__setattr__(self, name, joules)

    def energy(self, acs: float, macs: float, spikes: float) -> float:
        """``e_ac * acs + e_mac * macs + e_spike * spikes`` joules."""
        return self.e_ac * acs + self.e_mac * macs + self.e_spike * spikes


#: Named energy models; see the module docstring for the sources.
ENERGY_PRESETS: dict[str, EnergyModel] = {
    "45nm": EnergyModel(e_ac=0.9e-12, e_mac=4.6e-12, e_spike=0.0),
    "loihi": EnergyModel(e_ac=23.6e-12, e_mac=23.6e-12, e_spike=0.0),
}


def energy_preset(name: str) -> EnergyModel:
    """The :class:`EnergyModel` called ``name`` in :data:`ENERGY_PRESETS` (``ValueError`` listing the valid names)."""
    if not isinstance(name, str) or name not in ENERGY_PRESETS:
        raise ValueError(f"unknown energy preset {name!r}; valid: {', '.join(map(repr, ENERGY_PRESETS))}")
    return ENERGY_PRESETS[name]


def as_energy_model(energy: EnergyModel | str) -> EnergyModel:
    """Accept an :class:`EnergyModel` or a preset name."""
    if isinstance(energy, EnergyModel):
        return energy
    if isinstance(energy, str):
        return energy_preset(energy)
    raise ValueError(
        f"energy must be an EnergyModel or a preset name ({', '.join(map(repr, ENERGY_PRESETS))}), got {energy!r}"
    )


# --------------------------------------------------------------------------------------------------- counters


def is_binary(z: torch.Tensor) -> bool:
    """Whether every element of ``z`` is 0 or 1 (a spike train)."""
    return bool(((z == 0) | (z == 1)).all())


_is_binary = is_binary  # former private name


def linear_events(z: torch.Tensor, weight: torch.Tensor) -> int:
    """Synaptic events of a dense layer ``W [out, in]`` on ``z [..., in]``.

    ``events = sum_i n_i * f_i`` with ``n_i = #{rows r : z[r, i] != 0}`` (rows: all leading dims) and the
    fan-out ``f_i = #{o : W[o, i] != 0}``; equal to ``sum(nonzero(z) @ (W != 0)^T)``. Exact (integer).
    """
    fan_in = weight.shape[1]
    if z.shape[-1] != fan_in:
        raise ValueError(f"input has {z.shape[-1]} features, the layer expects {fan_in}")
    active = (z != 0).reshape(-1, fan_in).sum(0, dtype=torch.int64)
    fan_out = (weight != 0).sum(0, dtype=torch.int64).to(active.device)
    return int((active * fan_out).sum())


def linear_dense_ops(z: torch.Tensor, weight: torch.Tensor) -> int:
    """MACs of a dense implementation of ``W [out, in]`` on ``z [..., in]``: ``rows * in * out``."""
    out_features, in_features = weight.shape
    return (z.numel() // in_features) * in_features * out_features


#: the convolutions :func:`conv_events` / :func:`conv_dense_ops` count
ConvLayer = nn.Conv1d | nn.Conv2d | nn.Conv3d


def _batched(layer: ConvLayer, z: torch.Tensor) -> torch.Tensor:
    """``z`` with a leading batch dim (convolutions accept one unbatched sample)."""
    spatial = len(layer.kernel_size)
    if z.dim() == spatial + 1:
        return z.unsqueeze(0)
    if z.dim() != spatial + 2:
        raise ValueError(f"{type(layer).__name__} expects [N, C, {spatial} spatial dims], got {tuple(z.shape)}")
    return z


def conv_events(layer: ConvLayer, z: torch.Tensor) -> int:
    """Synaptic events of a convolution (``nn.Conv1d/2d/3d``) on ``z``: ``sum(conv(nonzero(z), W != 0))``.

    Each output element counts the non-zero inputs it is connected to through a non-zero kernel weight, so the
    total is the number of (non-zero input, non-zero weight) connections, with stride, padding (and padding
    mode), dilation and groups handled by the convolution itself. Exact: every output element is a small
    integer, summed in int64.
    """
    mask = (_batched(layer, z) != 0).to(torch.float32)
    wmask = (layer.weight != 0).to(device=mask.device, dtype=torch.float32)
    counts = layer._conv_forward(mask, wmask, None)
    return int(counts.round().to(torch.int64).sum())


def conv_dense_ops(layer: ConvLayer, z: torch.Tensor) -> int:
    """MACs of a dense convolution on ``z``: ``rows * sum(conv(ones(1, ...), ones_like(W)))`` (in-bounds only)."""
    zb = _batched(layer, z)
    ones = torch.ones((1, *zb.shape[1:]), dtype=torch.float32, device=zb.device)
    wones = torch.ones_like(layer.weight, dtype=torch.float32, device=zb.device)
    per_sample = int(layer._conv_forward(ones, wones, None).round().to(torch.int64).sum())
    return zb.shape[0] * per_sample


# --------------------------------------------------------------------------------------------------- MLP shortcut


@torch.no_grad()
def mlp_operations(model: SpikingMLP, x: torch.Tensor, out: ModelOutput) -> dict[str, float]:
    """Total ACs, MACs, dense ops and spikes of one forward of ``model`` on ``x [T, B, in]`` (whole batch).

    ``out`` is the model's output on ``x`` (its ``hidden`` spikes are the inputs of the later layers). Counts
    follow :func:`linear_events` (connections with a zero weight drive no event). A time-constant ``x``
    (direct coding as a stride-0 view) counts T times, as the hardware integrates it every step. For any other
    model, and for per-layer numbers, use :func:`spikefed.hardware.metrics.measure`.
    """
    inputs = [x] + list(out.hidden[: len(model.linears) - 1])
    acs = macs = dense = 0
    for z, lin in zip(inputs, model.linears):
        assert isinstance(lin, nn.Linear)  # a SpikingMLP's layers
        events = linear_events(z, lin.weight)
        dense += linear_dense_ops(z, lin.weight)
        if is_binary(z):
            acs += events
        else:
            macs += events
    spikes = sum(int((h != 0).sum()) for h in out.hidden)
    return {"acs": float(acs), "macs": float(macs), "synops": float(acs + macs), "dense_ops": float(dense),
            "spikes": float(spikes)}
