"""Seed 002's per-step membrane rate loss and the membrane regularisers, against the formulas written here."""

from __future__ import annotations

import pytest
import torch

from spikefed.snn.losses import membrane_l1, membrane_l2, membrane_rate_loss
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig, backward_batch, predict


def _mem() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 3, 4, generator=g, dtype=torch.float64), torch.tensor([2, 0, 3])


def test_membrane_rate_loss_is_half_the_summed_squared_error_per_step() -> None:
    mem, y = _mem()
    hi, lo = 0.7, 0.1
    total = 0.0
    for b in range(3):  # L = 1/2 sum_t sum_c (v_t - y)^2, averaged over the batch, by plain loops
        for t in range(5):
            for c in range(4):
                target = hi if c == int(y[b]) else lo
                total += 0.5 * (float(mem[t, b, c]) - target) ** 2
    assert float(membrane_rate_loss(mem, y, hi, lo)) == pytest.approx(total / 3, rel=1e-12)
    # its gradient is the per-step error (v_t - y) / B
    v = mem.clone().requires_grad_(True)
    membrane_rate_loss(v, y, hi, lo).backward()
    want = torch.full_like(mem, lo)
    want[:, torch.arange(3), y] = hi
    torch.testing.assert_close(v.grad, (mem - want) / 3, rtol=0, atol=1e-12)


def test_membrane_penalties() -> None:
    mem, _ = _mem()
    assert float(membrane_l1(mem)) == pytest.approx(sum(abs(float(v)) for v in mem.flatten()) / mem.numel())
    assert float(membrane_l2(mem)) == pytest.approx(sum(float(v) ** 2 for v in mem.flatten()) / mem.numel())
    with pytest.raises(ValueError, match="mem"):
        membrane_l1([])


def test_training_objective_adds_the_membrane_terms_and_predicts_the_highest_mean_potential() -> None:
    model = SpikingMLP([6, 5, 4], readout="membrane", generator=torch.Generator().manual_seed(0)).double()
    x = torch.rand(7, 3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.tensor([1, 0, 3])
    cfg = TrainConfig(loss="mse_membrane", correct_rate=0.9, incorrect_rate=0.05, reg_membrane_l1=0.3,
                      reg_membrane_l2=0.2, num_steps=7)
    loss, out = backward_batch(model, x, y, cfg)
    v = model(x).membrane.detach()
    want = torch.full((3, 4), 0.05, dtype=torch.float64)
    want[torch.arange(3), y] = 0.9
    rate = 0.5 * ((v - want) ** 2).sum(dim=(0, 2)).mean()
    expected = rate + 0.3 * v.abs().mean() + 0.2 * (v ** 2).mean()
    assert loss == pytest.approx(float(expected), rel=1e-10)
    assert torch.equal(predict(v, cfg), v.mean(0).argmax(1))


def test_membrane_regularisers_refuse_truncated_bptt_and_eprop() -> None:
    with pytest.raises(ValueError, match="tbptt"):
        TrainConfig(reg_membrane_l2=0.1, tbptt=3)
    with pytest.raises(ValueError, match="reg_membrane_l1"):
        TrainConfig(reg_membrane_l1=0.1, method="eprop", loss="ce_membrane", membrane_reduction="last")
