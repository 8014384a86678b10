"""Synaptic operation counts and energy per inference (seed 000: ``E = E_spike * spikes + E_syn * events``).

For a dense layer with input ``z [T, B, in]`` and ``out`` output neurons (NeuroBench-style effective ops):

- every non-zero input element triggers ``out`` synaptic events;
- events driven by binary inputs (spikes) are accumulates (ACs: the weight is added),
- events driven by non-binary inputs (direct current, graded spikes) are multiply-accumulates (MACs).

``energy = e_spike * spikes + e_ac * ACs + e_mac * MACs`` with defaults 0.9 pJ per AC and 4.6 pJ per MAC
(45 nm CMOS, Horowitz 2014) and 0 J per emitted spike (set ``e_spike`` for hardware that charges routing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..snn.models import ModelOutput, SpikingMLP


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in joules."""

    e_ac: float = 0.9e-12
    e_mac: float = 4.6e-12
    e_spike: float = 0.0

    def __post_init__(self) -> None:
        for name in ("e_ac", "e_mac", "e_spike"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 joules, got {getattr(self, name)!r}")

    def energy(self, acs: float, macs: float, spikes: float) -> float:
        return self.e_ac * acs + self.e_mac * macs + self.e_spike * spikes


def _is_binary(z: torch.Tensor) -> bool:
    return bool(((z == 0) | (z == 1)).all())


@torch.no_grad()
def mlp_operations(model: SpikingMLP, x: torch.Tensor, out: ModelOutput) -> dict[str, float]:
    """Total ACs, MACs, dense ops and spikes of one forward of ``model`` on ``x [T, B, in]`` (whole batch).

    ``out`` is the model's output on ``x`` (its ``hidden`` spikes are the inputs of the later layers).
    """
    inputs = [x] + list(out.hidden[: len(model.linears) - 1])
    acs = macs = dense = 0.0
    for z, lin in zip(inputs, model.linears):
        fan_out = lin.out_features
        events = float((z != 0).sum()) * fan_out
        dense += float(z.numel()) * fan_out
        if _is_binary(z):
            acs += events
        else:
            macs += events
    spikes = float(sum((h != 0).sum() for h in out.hidden))
    return {"acs": acs, "macs": macs, "synops": acs + macs, "dense_ops": dense, "spikes": spikes}
