"""supports_cohort answers for a LIF/IF MLP (the hand-written stacked forward) without the vmap probe, and keeps
every refusal the probe gives."""

from __future__ import annotations

import pytest
import torch

from spikefed.federated import cohort
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig


def test_mlp_needs_no_vmap_probe(monkeypatch) -> None:
    calls = []
    real = cohort.vmap_reason
    monkeypatch.setattr(cohort, "vmap_reason", lambda m: calls.append(type(m).__name__) or real(m))
    cfg = TrainConfig(num_steps=4)
    assert cohort.supports_cohort(SpikingMLP([4, 6, 3]), cfg) is None
    assert cohort.supports_cohort(SpikingMLP([4, 6, 3], neuron="if"), cfg) is None
    assert calls == []
    # models the hand-written path does not cover still go through the probe, with its answers
    assert cohort.supports_cohort(SpikingMLP([4, 3], neuron="alif"), cfg) is None
    assert calls == ["SpikingMLP"]
    frozen = SpikingMLP([4, 3])
    for p in frozen.parameters():
        p.requires_grad_(False)
    assert "no trainable parameters" in cohort.supports_cohort(frozen, cfg)
    assert "tbptt" in cohort.supports_cohort(SpikingMLP([4, 3]), TrainConfig(num_steps=4, tbptt=2))


@pytest.mark.parametrize("neuron", ["lif", "if"])
def test_probe_agrees_where_it_is_skipped(neuron: str) -> None:
    """Where the probe is skipped it would have said yes: the reference answer of vmap_reason on the same model."""
    model = SpikingMLP([5, 7, 2], neuron=neuron, generator=torch.Generator().manual_seed(0))
    assert cohort.vmap_reason(model) is None
    assert cohort.supports_cohort(model, TrainConfig(num_steps=3)) is None
