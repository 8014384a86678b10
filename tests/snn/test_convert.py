"""ANN-to-SNN conversion: balancing scales by hand, IF rates against the clipped-ReLU formula, accuracy at large T."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spikefed.data import load_digits_split
from spikefed.snn.convert import (
    ReLUMLP, accuracy_vs_steps, activation_scales, ann_accuracy, convert, hybrid_finetune, train_ann,
)
from spikefed.snn.train import TrainConfig


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _set(ann: ReLUMLP, weights: list[list[list[float]]], biases: list[list[float]]) -> ReLUMLP:
    with torch.no_grad():
        for lin, w, b in zip(ann.linears, weights, biases):
            lin.weight.copy_(torch.tensor(w))
            lin.bias.copy_(torch.tensor(b))
    return ann


def _chain() -> tuple[ReLUMLP, torch.Tensor]:
    """1-1-1 net: a0 = relu(x), a1 = relu(2 a0 - 1); x = -5..-1 and 1..1000 (in shuffled order)."""
    ann = _set(ReLUMLP([1, 1, 1]), [[[1.0]], [[2.0]]], [[0.0], [-1.0]])
    values = np.concatenate([np.arange(-5, 0), np.arange(1, 1001)]).astype(np.float32)
    np.random.default_rng(0).shuffle(values)
    return ann, torch.from_numpy(values).unsqueeze(1)


def test_max_scales_by_hand() -> None:
    ann, x = _chain()
    assert activation_scales(ann, x, "max", batch_size=64) == pytest.approx([1000.0, 1999.0])


def test_percentile_scales_by_hand() -> None:
    # positive activations of layer 0: 1..1000; 99.9th percentile, linear: position 0.999 * 999 = 998.001
    # -> 999 + 0.001 * (1000 - 999). Layer 1: 1, 3, ..., 1999 -> 1997 + 0.001 * 2.
    ann, x = _chain()
    got = activation_scales(ann, x, "percentile", percentile=99.9, batch_size=100)
    assert got == pytest.approx([999.001, 1997.002], rel=1e-9)
    assert activation_scales(ann, x, "percentile", percentile=50.0) == pytest.approx([500.5, 1000.0])


def test_weight_balancing_by_hand() -> None:
    ann = _set(ReLUMLP([2, 2, 1]), [[[1.0, -2.0], [0.5, 3.0]], [[4.0, -1.0]]], [[0.2, -0.4], [0.8]])
    snn = convert(ann, [2.0, 4.0], balance="weights", initial_membrane=0.0)
    lin = snn.snn.linears
    assert torch.allclose(lin[0].weight, torch.tensor([[0.5, -1.0], [0.25, 1.5]]))
    assert torch.allclose(lin[0].bias, torch.tensor([0.1, -0.2]))
    assert torch.allclose(lin[1].weight, torch.tensor([[2.0, -0.5]]))  # * lambda_0 / lambda_1 = 2 / 4
    assert torch.allclose(lin[1].bias, torch.tensor([0.2]))
    assert snn.thresholds == [1.0, 1.0]
    thr = convert(ann, [2.0, 4.0], balance="threshold")
    assert thr.thresholds == [2.0, 2.0]  # lambda_1 / lambda_0, lambda_2 / lambda_1
    assert torch.allclose(thr.snn.linears[0].weight, ann.linears[0].weight)
    assert torch.allclose(thr.snn.linears[1].bias, torch.tensor([0.4]))  # b / lambda_1


def _if_count(z: torch.Tensor, steps: int, v0: float) -> torch.Tensor:
    """IF with reset by subtraction, threshold 1, constant current z, membrane starting at v0:
    floor(T z + v0) spikes in T steps, clipped to [0, T] (independent closed form)."""
    return torch.clamp(torch.floor(steps * z.double() + v0), 0, steps)


@pytest.mark.parametrize("v0", [0.0, 0.5])
def test_first_layer_count_matches_closed_form_and_rate_tends_to_clipped_relu(v0: float) -> None:
    ann = ReLUMLP([5, 7, 3], generator=_gen(1))
    x = torch.randn(40, 5, generator=_gen(2))
    scales = activation_scales(ann, x, "percentile", percentile=90.0)  # some activations above lambda: clipped
    snn = convert(ann, scales, initial_membrane=v0)
    steps = 400
    out = snn(x.unsqueeze(0).expand(steps, *x.shape))
    counts = out.hidden[0].sum(0).double()
    z = ann.activations(x)[0].detach() / scales[0]
    expected = _if_count(z, steps, v0)
    assert (counts - expected).abs().max() <= 1  # float32 rounding may move a spike across a boundary
    assert (counts == expected).double().mean() > 0.98
    rate = counts / steps
    clipped = torch.clamp(torch.relu(z.double()), max=1.0)
    assert (rate - clipped).abs().max() <= 1.0 / steps + 1e-12
    assert bool((clipped == 1).any()) and bool((clipped == 0).any())


def test_output_rate_approaches_normalised_relu_at_large_T() -> None:
    ann = ReLUMLP([4, 6, 3], generator=_gen(3))
    x = torch.rand(30, 4, generator=_gen(4))
    scales = activation_scales(ann, x, "max")
    snn = convert(ann, scales, initial_membrane=0.5)
    steps = 4000
    with torch.no_grad():
        out = snn(x.unsqueeze(0).expand(steps, *x.shape))
    zs = ann.activations(x)
    target = torch.relu(zs[-1]).detach() / scales[-1]  # max balancing: never above 1
    assert float(target.max()) == pytest.approx(1.0)
    rate = out.output.sum(0) / steps
    assert float((rate - target).abs().max()) < 0.01


def test_weights_and_threshold_balancing_give_the_same_network() -> None:
    ann = ReLUMLP([6, 10, 4], generator=_gen(5))
    x = torch.randn(50, 6, generator=_gen(6))
    scales = activation_scales(ann, x, "max")
    a, b = convert(ann, scales, "weights"), convert(ann, scales, "threshold")
    xs = x.unsqueeze(0).expand(64, *x.shape)
    oa, ob = a(xs), b(xs)
    assert (oa.output == ob.output).double().mean() > 0.995
    assert (oa.hidden[0] == ob.hidden[0]).double().mean() > 0.995
    # threshold mode's layer-1 membrane is lambda_1 times the weight mode's
    torch.testing.assert_close(ob.state[0].v, oa.state[0].v * scales[0], rtol=1e-4, atol=1e-4)


def test_accuracy_vs_steps_equals_separate_runs() -> None:
    ann = ReLUMLP([6, 8, 3], generator=_gen(7))
    x = torch.randn(20, 6, generator=_gen(8))
    y = torch.randint(0, 3, (20,), generator=_gen(9))
    snn = convert(ann, activation_scales(ann, x, "max"))
    rows = accuracy_vs_steps(snn, x, y, [4, 16], batch_size=7)
    for row in rows:
        with torch.no_grad():
            out = snn(x.unsqueeze(0).expand(row.steps, *x.shape))
        counts = out.output.sum(0)
        pred = [int(np.argmax(c.numpy())) for c in counts]  # numpy argmax: first maximum
        assert row.accuracy == pytest.approx(float(np.mean(np.array(pred) == y.numpy())))
        spikes = sum(float(h.sum()) for h in out.hidden) / 20
        assert row.spikes_per_sample == pytest.approx(spikes)


@pytest.mark.slow
def test_conversion_reaches_ann_accuracy_within_one_point_on_digits() -> None:
    data = load_digits_split(test_size=0.2, seed=0, scale="standard")
    gen = _gen(0)
    ann = ReLUMLP([64, 128, 10], generator=gen)
    train_ann(ann, data.x_train, data.y_train, TrainConfig(epochs=10, lr=1e-3), gen)
    ann_acc = ann_accuracy(ann, data.x_test, data.y_test)
    assert ann_acc > 0.95
    for norm in ("max", "percentile"):
        snn = convert(ann, activation_scales(ann, data.x_train, norm))
        rows = accuracy_vs_steps(snn, data.x_test, data.y_test, [4, 256])
        assert rows[-1].accuracy >= ann_acc - 0.01, norm
        assert rows[0].accuracy < rows[-1].accuracy  # few steps: a coarse rate code


@pytest.mark.slow
def test_hybrid_finetuning_recovers_accuracy_at_few_steps() -> None:
    data = load_digits_split(test_size=0.2, seed=0, scale="standard")
    gen = _gen(0)
    ann = ReLUMLP([64, 64, 10], generator=gen)
    train_ann(ann, data.x_train, data.y_train, TrainConfig(epochs=8, lr=2e-3), gen)
    snn = convert(ann, activation_scales(ann, data.x_train, "max"), initial_membrane=0.0)
    before = accuracy_vs_steps(snn, data.x_test, data.y_test, [4])[0].accuracy
    cfg = TrainConfig(epochs=3, lr=5e-4, num_steps=4, loss="ce_count", cosine_schedule=False)
    history = hybrid_finetune(snn, data.x_train, data.y_train, cfg, gen)
    after = accuracy_vs_steps(snn, data.x_test, data.y_test, [4])[0].accuracy
    assert len(history) == 3
    assert after > before + 0.05


def test_bad_input_errors() -> None:
    ann, x = _chain()
    with pytest.raises(ValueError, match="unknown norm"):
        activation_scales(ann, x, "mean")
    for p in (0, 100.5, float("nan")):
        with pytest.raises(ValueError, match="percentile"):
            activation_scales(ann, x, "percentile", percentile=p)
    with pytest.raises(ValueError, match="calibration data"):
        activation_scales(ann, x[:0])
    with pytest.raises(ValueError, match=r"shape \[B, 1\]"):
        activation_scales(ann, torch.ones(3, 2))
    with pytest.raises(ValueError, match="layer 0 never activates"):
        activation_scales(ann, -torch.ones(4, 1))
    with pytest.raises(ValueError, match="one entry per layer"):
        convert(ann, [1.0])
    with pytest.raises(ValueError, match="finite and > 0"):
        convert(ann, [1.0, 0.0])
    with pytest.raises(ValueError, match="finite and > 0"):
        convert(ann, [1.0, math.inf])
    with pytest.raises(ValueError, match="unknown balance"):
        convert(ann, [1.0, 1.0], balance="bias")
    with pytest.raises(ValueError, match="initial_membrane"):
        convert(ann, [1.0, 1.0], initial_membrane=1.0)
    snn = convert(ann, [1.0, 1.0])
    with pytest.raises(ValueError, match="steps"):
        accuracy_vs_steps(snn, x, torch.zeros(len(x), dtype=torch.long), [0, 8])
    with pytest.raises(ValueError, match="encoder must be 'direct'"):
        hybrid_finetune(snn, x, torch.zeros(len(x), dtype=torch.long), TrainConfig(encoder="rate"), _gen())
    with pytest.raises(ValueError, match="sizes"):
        ReLUMLP([4])
