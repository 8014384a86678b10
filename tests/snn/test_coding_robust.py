"""Rank-order / N-of-M codes, IB penalty, FGSM/PGD, VP init, tdBN, time-fixed dropout, residual MLP vs references."""

from __future__ import annotations

import math

import pytest
import torch

from spikefed.snn.adversarial import fgsm, pgd
from spikefed.snn.bottleneck import ib_penalty
from spikefed.snn.dropout import TimeDropout
from spikefed.snn.encoding import encode
from spikefed.snn.init import variance_preserving_init
from spikefed.snn.models import SpikingMLP
from spikefed.snn.normalization import ThresholdBatchNorm
from spikefed.snn.ordinal import n_of_m_decode, rank_order_decode
from spikefed.snn.residual import ResidualSpikingMLP
from spikefed.snn.train import TrainConfig


def plain_ordinal(row: list[float], steps: int, n: int | None) -> list[tuple[int, int]]:
    """(channel, step) pairs of one sample, by sorting in plain Python."""
    pos = sorted((i for i, v in enumerate(row) if v > 0), key=lambda i: (-row[i], i))
    keep = pos if n is None else pos[:n]
    return [(ch, (r * steps) // len(keep)) for r, ch in enumerate(keep)]


@pytest.mark.parametrize("n", [None, 3])
def test_rank_order_and_n_of_m_match_a_plain_sort(n: int | None) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 9, generator=g) - 0.2
    x[0, 2] = x[0, 5]  # a tie: lower index first
    steps = 6
    s = encode("rank_order", x, steps) if n is None else encode("n_of_m", x, steps, n=n)
    for b in range(5):
        expected = torch.zeros(steps, 9)
        for ch, t in plain_ordinal(x[b].tolist(), steps, n):
            expected[t, ch] = 1
        assert torch.equal(s[:, b], expected)
        # the decoder sees spike times only: channels of one step are ordered by index
        fired = sorted(plain_ordinal(x[b].tolist(), steps, n), key=lambda p: (p[1], p[0]))
        ref = torch.zeros(9)
        for r, (ch, _) in enumerate(fired):
            ref[ch] = 0.5**r
        assert torch.allclose(rank_order_decode(s, 0.5)[b], ref)
        if n is not None:
            assert n_of_m_decode(s, n)[b].tolist() == [1.0 if any(c == i for c, _ in fired) else 0.0
                                                        for i in range(9)]


def test_ib_penalty_is_the_bernoulli_kl_to_the_prior() -> None:
    s = (torch.rand(10, 4, 3, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    r = 0.1
    total = 0.0
    for b in range(4):
        for n in range(3):
            p = min(max(float(s[:, b, n].mean()), 1e-6), 1 - 1e-6)
            total += p * math.log(p / r) + (1 - p) * math.log((1 - p) / (1 - r))
    assert float(ib_penalty([s], r)) == pytest.approx(total / 12, rel=1e-5)
    rate = torch.full((5, 2, 3), 0.1, requires_grad=True)
    ib_penalty([rate], 0.1).backward()
    assert float(rate.grad.abs().max()) < 1e-6  # type: ignore[union-attr]  # minimum at p = r


def test_fgsm_is_the_hand_computed_sign_gradient_step() -> None:
    # no spiking layer: the output is a leaky integrator of z = W x + b, so with ce_membrane / time_mean the
    # logits are c z, c = mean_t sum_{k<=t} beta^k, and dL/dx = c W^T (softmax(c z) - onehot(y)) / B
    torch.manual_seed(0)
    model = SpikingMLP([4, 3], readout="membrane", beta=0.8, generator=torch.Generator().manual_seed(2))
    cfg = TrainConfig(num_steps=5, loss="ce_membrane", membrane_reduction="time_mean")
    x = torch.tensor([[0.2, -0.4, 0.9, 0.1], [0.5, 0.3, -0.2, -0.7]])
    y = torch.tensor([2, 0])
    w, b = model.linears[0].weight.detach(), model.linears[0].bias.detach()
    c = sum(sum(0.8**k for k in range(t + 1)) for t in range(5)) / 5
    z = c * (x @ w.T + b)
    delta = torch.softmax(z, 1) - torch.nn.functional.one_hot(y, 3).float()
    grad = c * delta @ w / 2
    eps = 0.05
    assert torch.allclose(fgsm(model, x, y, cfg, eps), x + eps * grad.sign(), atol=1e-7)
    # one PGD step of size eps without random start is FGSM; PGD never leaves the eps-ball
    assert torch.allclose(pgd(model, x, y, cfg, eps, steps=1, alpha=eps, random_start=False),
                          x + eps * grad.sign(), atol=1e-7)
    xa = pgd(model, x, y, cfg, eps, steps=4, generator=torch.Generator().manual_seed(3))
    assert float((xa - x).abs().max()) <= eps + 1e-7


def test_attacks_refuse_a_non_differentiable_encoder() -> None:
    model = SpikingMLP([4, 3])
    with pytest.raises(ValueError, match="differentiable encoder"):
        fgsm(model, torch.rand(2, 4), torch.tensor([0, 1]), TrainConfig(encoder="rate"), 0.1)
    with pytest.raises(ValueError, match="encoder=direct"):
        TrainConfig(encoder="rate", adversarial="fgsm")


def test_variance_preserving_init_keeps_the_membrane_variance_constant_across_layers() -> None:
    rate, beta, thr, steps = 0.2, 0.9, 1.0, 400
    g = torch.Generator().manual_seed(4)
    layers = [torch.nn.Linear(n_in, 200) for n_in in (50, 400, 1600)]
    variance_preserving_init(layers, g, rate, beta, thr)
    moments = []
    for layer in layers:
        x = (torch.rand(steps, 64, layer.in_features, generator=g) < rate).float()
        h = layer(x).detach()
        u = torch.zeros_like(h[0])
        acc = []
        for t in range(steps):  # plain leaky membrane without reset
            u = beta * u + h[t]
            if t >= 100:  # stationary part
                acc.append(u)
        moments.append(float(torch.stack(acc).pow(2).mean()))
    for m in moments:
        assert m == pytest.approx(thr**2, rel=0.25)
    assert max(moments) / min(moments) < 1.4  # fan-in from 50 to 1600: same variance


def test_threshold_batch_norm_matches_the_formula() -> None:
    x = torch.randn(6, 5, 4, generator=torch.Generator().manual_seed(5)) * 3 + 2
    bn = ThresholdBatchNorm(4, threshold=0.5, alpha=2.0)
    flat = x.reshape(-1, 4)
    ref = 2.0 * 0.5 * (flat - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(bn(x).reshape(-1, 4), ref, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[T, B, 4\]"):
        bn(torch.zeros(3, 4))


def test_time_dropout_mask_is_fixed_over_time() -> None:
    drop = TimeDropout(0.5, seed=1)
    y = drop(torch.ones(7, 200, 30))
    assert torch.equal(y, y[0].expand_as(y))  # same mask at every step
    assert set(torch.unique(y).tolist()) <= {0.0, 2.0}
    assert 0.4 < float((y[0] > 0).float().mean()) < 0.6
    drop.eval()
    assert torch.equal(drop(torch.ones(2, 3, 4)), torch.ones(2, 3, 4))


def test_residual_mlp_without_options_is_the_plain_mlp_and_adds_the_shortcut() -> None:
    x = torch.rand(8, 3, 6, generator=torch.Generator().manual_seed(6)) * 2
    plain = SpikingMLP([6, 10, 10, 4], generator=torch.Generator().manual_seed(7))
    same = ResidualSpikingMLP([6, 10, 10, 4], generator=torch.Generator().manual_seed(7))
    assert torch.equal(plain(x).output, same(x).output)
    res = ResidualSpikingMLP([6, 10, 10, 4], generator=torch.Generator().manual_seed(7), residual=True)
    # reference: layer 2's current is W2 s1 + b2 + s1
    s1 = plain.neurons[0].run(plain.linears[0](x)).spikes
    s2 = plain.neurons[1].run(plain.linears[1](s1) + s1).spikes
    out = plain.neurons[2].run(plain.linears[2](s2)).spikes
    assert torch.equal(res(x).output, out)


def test_distillation_loss_is_task_loss_plus_tempered_kl() -> None:
    from spikefed.snn.distill import distill_loss_fn
    from spikefed.snn.train import task_loss

    teacher = torch.nn.Linear(4, 3)
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(8))
    y = torch.tensor([0, 1, 2, 1, 0])
    output = (torch.rand(6, 5, 3, generator=torch.Generator().manual_seed(9)) < 0.4).float()
    cfg = TrainConfig(loss="ce_count", distill=0.7, distill_temperature=3.0)
    got = float(distill_loss_fn(teacher, x, cfg)(output, [], y))
    counts = output.sum(0).tolist()
    logits = teacher(x).detach().tolist()
    kl = 0.0
    for zs, zt in zip(counts, logits):
        p = [math.exp(v / 3) for v in zt]
        q = [math.exp(v / 3) for v in zs]
        p = [v / sum(p) for v in p]
        q = [v / sum(q) for v in q]
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected = float(task_loss(output, y, cfg)) + 0.7 * 9 * kl / 5
    assert got == pytest.approx(expected, rel=1e-5)


def test_distillation_options_are_checked() -> None:
    with pytest.raises(ValueError, match="ce_count or ce_membrane"):
        TrainConfig(distill=0.5, loss="mse_count")
    with pytest.raises(ValueError, match="distill_temperature"):
        TrainConfig(distill=0.5, loss="ce_count", distill_temperature=0)
