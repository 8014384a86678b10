from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spikefed.snn import decoding as dec
from spikefed.snn import losses as L

SF = pytest.importorskip("snntorch.functional")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def binary(shape: tuple[int, ...], p: float, seed: int) -> torch.Tensor:
    return (torch.rand(shape, generator=gen(seed)) < p).float()


# ---------------------------------------------------------------------------------------- count losses


def test_ce_count_loss_hand_value() -> None:
    # one sample, counts [2, 0], target 0: CE = log(1 + e^-2)
    s = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 0.0]]])
    assert L.ce_count_loss(s, torch.tensor([0])).item() == pytest.approx(math.log1p(math.exp(-2.0)), abs=1e-6)


def test_ce_count_loss_vs_torch_and_snntorch() -> None:
    s = binary((6, 4, 3), 0.4, seed=1)
    y = torch.tensor([0, 2, 1, 2])
    logits = torch.tensor([[sum(s[t, b, c].item() for t in range(6)) for c in range(3)] for b in range(4)])
    ours = L.ce_count_loss(s, y)
    assert ours.item() == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-6)
    assert ours.item() == pytest.approx(SF.ce_count_loss()(s, y).item(), abs=1e-6)


def test_mse_count_loss_hand_value() -> None:
    # T = 10, counts [8, 2, 5], target 0 -> wanted [8, 2, 2] -> (0 + 0 + 9) / 3
    s = torch.zeros(10, 1, 3)
    s[:8, 0, 0] = 1
    s[:2, 0, 1] = 1
    s[:5, 0, 2] = 1
    assert L.mse_count_loss(s, torch.tensor([0])).item() == pytest.approx(3.0)
    # rates are not rounded: T * 0.75 = 7.5, T * 0.25 = 2.5 -> (0.25 + 0.25 + 6.25) / 3
    assert L.mse_count_loss(s, torch.tensor([0]), 0.75, 0.25).item() == pytest.approx(6.75 / 3)


def test_mse_count_loss_vs_torch_and_snntorch() -> None:
    steps = 10
    s = binary((steps, 5, 4), 0.5, seed=2)
    y = torch.tensor([3, 0, 1, 1, 2])
    wanted = torch.full((5, 4), 0.2 * steps)
    wanted[torch.arange(5), y] = 0.8 * steps
    ours = L.mse_count_loss(s, y, correct_rate=0.8, incorrect_rate=0.2)
    assert ours.item() == pytest.approx(F.mse_loss(s.sum(0), wanted).item(), abs=1e-6)
    # snnTorch divides by T (and truncates targets to ints; 8 and 2 are exact here)
    theirs = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)(s, y)
    assert ours.item() == pytest.approx(steps * theirs.item(), rel=1e-6)


# ------------------------------------------------------------------------------------- membrane losses


def test_ce_membrane_loss_reductions() -> None:
    mem = torch.randn(5, 3, 4, generator=gen(3))
    y = torch.tensor([1, 3, 0])
    per_step = [F.cross_entropy(mem[t], y).item() for t in range(5)]
    assert L.ce_membrane_loss(mem, y).item() == pytest.approx(sum(per_step) / 5, abs=1e-6)
    assert L.ce_membrane_loss(mem, y, "max").item() == pytest.approx(
        F.cross_entropy(mem.max(dim=0).values, y).item(), abs=1e-6
    )
    assert L.ce_membrane_loss(mem, y, "last").item() == pytest.approx(F.cross_entropy(mem[4], y).item(), abs=1e-6)
    # snnTorch equivalents
    assert L.ce_membrane_loss(mem, y).item() == pytest.approx(SF.ce_rate_loss()(mem, y).item(), abs=1e-6)
    assert L.ce_membrane_loss(mem, y, "max").item() == pytest.approx(
        SF.ce_max_membrane_loss()(mem, y).item(), abs=1e-6
    )
    with pytest.raises(ValueError, match=r"reduction 'sum'.*'time_mean', 'max', 'last'"):
        L.ce_membrane_loss(mem, y, "sum")


# ------------------------------------------------------------------------------------ temporal losses


def test_soft_first_spike_time_equals_first_spike_time_on_binary() -> None:
    s = binary((8, 6, 5), 0.15, seed=4)
    s[:, 0, 0] = 0  # make sure the "never spikes" case (-> T) is present
    assert torch.equal(L.soft_first_spike_time(s), dec.first_spike_time(s))


def test_soft_first_spike_time_continuous_matches_loop() -> None:
    s = torch.rand(6, 2, 3, generator=gen(5), dtype=torch.float64)
    tau = L.soft_first_spike_time(s)
    for b in range(2):
        for c in range(3):
            total, survive = 0.0, 1.0
            for t in range(6):
                survive *= 1.0 - s[t, b, c].item()
                total += survive
            assert tau[b, c].item() == pytest.approx(total, abs=1e-12)


def test_soft_first_spike_time_gradient_hand_derived() -> None:
    # first spike at f = 2, next at 5: d tau / d s = [-2, -1, -(1 + 2), 0, 0, 0, 0]
    s = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]).reshape(7, 1, 1).requires_grad_()
    L.soft_first_spike_time(s).sum().backward()
    assert s.grad.flatten().tolist() == [-2.0, -1.0, -3.0, 0.0, 0.0, 0.0, 0.0]


def test_soft_first_spike_time_gradient_finite_differences() -> None:
    s = torch.rand(5, 2, 3, generator=gen(6), dtype=torch.float64).requires_grad_()
    w = torch.randn(2, 3, generator=gen(7), dtype=torch.float64)
    (L.soft_first_spike_time(s) * w).sum().backward()
    eps = 1e-6
    for idx in [(0, 0, 0), (2, 1, 2), (4, 0, 1), (1, 1, 0)]:
        plus, minus = s.detach().clone(), s.detach().clone()
        plus[idx] += eps
        minus[idx] -= eps
        numeric = ((L.soft_first_spike_time(plus) - L.soft_first_spike_time(minus)) * w).sum() / (2 * eps)
        assert s.grad[idx].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-8)


def test_ce_temporal_loss_value_and_gradient_sign() -> None:
    # T = 4, one sample, class 0 first fires at 1, class 1 at 3; scale 0.5, target 0
    s = torch.zeros(4, 1, 2)
    s[1, 0, 0] = 1
    s[3, 0, 1] = 1
    s.requires_grad_()
    y = torch.tensor([0])
    loss = L.ce_temporal_loss(s, y, scale=0.5)
    # logits [-0.5, -1.5] -> CE = log(1 + e^-1)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-6)
    assert loss.item() == pytest.approx(F.cross_entropy(torch.tensor([[-0.5, -1.5]]), y).item(), abs=1e-6)
    loss.backward()
    p0 = 1 / (1 + math.exp(-1.0))
    # dL/ds[j, target] = (p0 - 1) * scale * (f - j) for j < f: firing the target earlier lowers the loss
    assert s.grad[0, 0, 0].item() == pytest.approx((p0 - 1) * 0.5 * 1, abs=1e-6)
    # dL/ds[j, other] = p1 * scale * (f - j): firing the wrong class earlier raises it
    assert s.grad[0, 0, 1].item() == pytest.approx((1 - p0) * 0.5 * 3, abs=1e-6)
    assert s.grad[1, 0, 1].item() == pytest.approx((1 - p0) * 0.5 * 2, abs=1e-6)


def test_ce_temporal_loss_validates_scale() -> None:
    with pytest.raises(ValueError, match="scale"):
        L.ce_temporal_loss(torch.zeros(3, 1, 2), torch.tensor([0]), scale=0.0)


# ---------------------------------------------------------------------------------------- regularizers


def test_l1_and_l2_activity_hand_values() -> None:
    # T = 2, B = 1, N = 2: s[0] = [1, 0], s[1] = [1, 1]
    s = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    assert L.l1_activity(s).item() == pytest.approx(3 / 4)
    # counts [2, 1] -> ((2/2)^2 + (1/2)^2) / 2
    assert L.l2_activity(s).item() == pytest.approx(0.625)
    # list: pooled elements / (b, i) pairs; second tensor T = 1, B = 1, N = 1 with s = 0.5
    extra = torch.tensor([[[0.5]]])
    assert L.l1_activity([s, extra]).item() == pytest.approx((3 + 0.5) / 5)
    assert L.l2_activity([s, extra]).item() == pytest.approx((1 + 0.25 + 0.25) / 3)


def test_l2_activity_matches_loop_on_feature_maps() -> None:
    s = binary((5, 3, 2, 4), 0.3, seed=8)  # [T, B, channels, width]
    ref = 0.0
    for b in range(3):
        for ch in range(2):
            for w in range(4):
                ref += (sum(s[t, b, ch, w].item() for t in range(5)) / 5) ** 2
    assert L.l2_activity(s).item() == pytest.approx(ref / 24, abs=1e-6)
    # and l1 equals snnTorch's total-count penalty divided by numel for non-negative spikes
    assert L.l1_activity(s).item() == pytest.approx(SF.l1_rate_sparsity(Lambda=1.0)(s).item() / s.numel())


def test_firing_rate_bounds_hand_value_and_gradient() -> None:
    # T = 4, B = 1: rates [0, 0.5, 1.0]; bounds [0.25, 0.75] -> 0.25^2 / 3 + 0.25^2 / 3
    s = torch.zeros(4, 1, 3)
    s[:2, 0, 1] = 1
    s[:, 0, 2] = 1
    s.requires_grad_()
    pen = L.firing_rate_bounds(s, lower=0.25, upper=0.75)
    assert pen.item() == pytest.approx(2 * 0.0625 / 3)
    pen.backward()
    # d/ds of relu(lo - r)^2 / 3 with r = mean over 4 entries: -2 * 0.25 / 3 / 4; upper side positive
    assert s.grad[0, 0, 0].item() == pytest.approx(-2 * 0.25 / 12)
    assert s.grad[0, 0, 1].item() == 0.0
    assert s.grad[0, 0, 2].item() == pytest.approx(2 * 0.25 / 12)
    assert L.firing_rate_bounds(s, lower=0.0, upper=1.0).item() == 0.0


def test_firing_rate_bounds_pools_list_of_layers() -> None:
    a = torch.zeros(2, 2, 1)  # rate 0
    b = torch.ones(3, 1, 2)  # rates 1, 1
    # three neurons: lower side (0.5)^2 / 3, upper side 2 * (0.5)^2 / 3
    assert L.firing_rate_bounds([a, b], lower=0.5, upper=0.5).item() == pytest.approx(0.75 / 3)


@pytest.mark.parametrize(("lower", "upper"), [(-0.1, 0.5), (0.6, 0.5), (0.1, float("nan"))])
def test_firing_rate_bounds_validates_bounds(lower: float, upper: float) -> None:
    with pytest.raises(ValueError, match="lower|upper"):
        L.firing_rate_bounds(torch.zeros(2, 1, 1), lower=lower, upper=upper)


# ----------------------------------------------------------------------------------------- validation


def test_input_validation_messages() -> None:
    s = torch.zeros(3, 2, 4)
    with pytest.raises(ValueError, match=r"expected spikes of shape \[T, B, classes\], got \(3, 4\)"):
        L.ce_count_loss(torch.zeros(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"targets of shape \[B\] = \(2,\)"):
        L.ce_count_loss(s, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"targets of shape.*dtype torch.int64"):
        L.ce_count_loss(s, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"targets with values in \[0, 3\]"):
        L.mse_count_loss(s, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="floating-point"):
        L.ce_membrane_loss(s.long(), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="correct_rate"):
        L.mse_count_loss(s, torch.tensor([0, 1]), correct_rate=1.5)
    with pytest.raises(ValueError, match="spikes"):
        L.l1_activity([])
    with pytest.raises(ValueError, match=r"spikes\[1\]"):
        L.l2_activity([s, torch.zeros(3)])
