"""RSNN sequence regression: metric formulas by hand, TBPTT gradient of the sequence MSE, beating persistence."""

from __future__ import annotations

import pytest
import torch

from spikefed.data.mackey_glass import mackey_glass_split
from spikefed.snn.models import RecurrentRegressor
from spikefed.snn.regression import (
    change_scale, evaluate_regression, fit_regression, mse, persistence, predict_sequences, sequence_mse_loss,
    smape,
)
from spikefed.snn.train import TrainConfig, backward_batch


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mse_and_smape_by_hand() -> None:
    p = torch.tensor([1.0, 2.0, 0.0, -1.0])
    y = torch.tensor([2.0, 2.0, 0.0, 1.0])
    assert mse(p, y) == pytest.approx((1 + 0 + 0 + 4) / 4)
    # terms: 2*1/3, 0, 0 (0/0), 2*2/2 = 2
    assert smape(p, y) == pytest.approx(100 * (2 / 3 + 2) / 4)
    assert smape(y, y) == 0.0
    with pytest.raises(ValueError, match="same non-empty shape"):
        mse(p, y[:2])
    with pytest.raises(ValueError, match="same non-empty shape"):
        smape(p[:0], y[:0])


def test_persistence_is_the_current_input() -> None:
    x = torch.arange(12.0).reshape(2, 3, 2)
    torch.testing.assert_close(persistence(x), x[..., :1])
    with pytest.raises(ValueError, match=r"\[N, L, F\]"):
        persistence(torch.ones(3, 2))


def _params_grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("tbptt", [None, 4])
def test_sequence_mse_gradient_with_and_without_truncation(tbptt: int | None) -> None:
    model = RecurrentRegressor(1, 6, 1, generator=_gen(1), beta=0.8, threshold=0.5)
    x = torch.randn(11, 3, 1, generator=_gen(2))
    y = torch.randn(11, 3, 1, generator=_gen(3))
    warmup = 2
    loss, _ = backward_batch(model, x, y, TrainConfig(tbptt=tbptt), loss_fn=sequence_mse_loss(warmup))
    got = _params_grads(model)
    model.zero_grad()
    # reference: windows of K steps from the detached carried state; squared errors summed over t >= warmup
    k = tbptt or 11
    count = (11 - warmup) * 3
    state, total = None, 0.0
    for t0 in range(0, 11, k):
        out = model(x[t0:t0 + k], state)
        keep = torch.arange(t0, min(t0 + k, 11)) >= warmup
        err = ((out.output - y[t0:t0 + k]) ** 2)[keep].sum() / count
        err.backward()
        total += float(err.detach())
        state = [s.detach() if isinstance(s, torch.Tensor) else type(s)(*(v.detach() for v in s))
                 for s in out.state]
    assert loss == pytest.approx(total, rel=1e-5)
    for g, r in zip(got, _params_grads(model)):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_fit_regression_lowers_the_loss_and_clips() -> None:
    split = mackey_glass_split(700, window=40, horizon=2, seed=1, discard=100)
    model = RecurrentRegressor(1, 12, 1, generator=_gen(2))
    cfg = TrainConfig(epochs=4, batch_size=4, lr=5e-3, tbptt=10, grad_clip=0.5)
    history = fit_regression(model, split.x_train, split.y_train, cfg, _gen(3), warmup=5)
    assert len(history) == 4 and history[-1] < history[0]
    assert predict_sequences(model, split.x_test).shape == split.y_test.shape


@pytest.mark.slow
def test_trained_rsnn_beats_persistence_on_mackey_glass() -> None:
    split = mackey_glass_split(1500, window=100, horizon=5, seed=0)
    gen = _gen(0)
    model = RecurrentRegressor(1, 32, 1, neuron="rlif", readout_beta=0.8, generator=gen, beta=0.9)
    cfg = TrainConfig(epochs=10, batch_size=8, lr=5e-3, tbptt=25, grad_clip=1.0)
    fit_regression(model, split.x_train, split.y_train, cfg, gen, warmup=10)
    m = evaluate_regression(model, split.x_test, split.y_test, warmup=10, denormalize=split.denormalize)
    assert m.mse < 0.8 * m.persistence_mse
    assert m.smape < m.persistence_smape
    assert m.steps == split.y_test.shape[0] * 90


def test_bad_input_errors() -> None:
    model = RecurrentRegressor(1, 4, 1)
    x = torch.zeros(3, 10, 1)
    with pytest.raises(ValueError, match="warmup"):
        fit_regression(model, x, x, TrainConfig(epochs=1), _gen(), warmup=10)
    with pytest.raises(ValueError, match="same N and L"):
        evaluate_regression(model, x, torch.zeros(3, 9, 1))
    with pytest.raises(FloatingPointError, match="lower lr"):
        fit_regression(model, x, torch.full((3, 10, 1), float("nan")), TrainConfig(epochs=1), _gen())


class _Constant(torch.nn.Module):
    """Outputs a fixed value c at every step (a stand-in model for the change-target arithmetic)."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, state=None):
        from spikefed.snn.models import ModelOutput

        out = torch.full_like(x[..., :1], self.c) + 0 * self.w
        return ModelOutput(out, out, [], [])


def test_change_target_by_hand() -> None:
    x = torch.tensor([[[1.0], [2.0], [4.0]]])
    y = torch.tensor([[[2.0], [4.0], [4.0]]])  # changes 1, 2, 0; after warmup 1: [2, 0], sample std sqrt(2)
    assert change_scale(x, y, warmup=1) == pytest.approx(2.0**0.5)
    # prediction = x + scale * output
    pred = predict_sequences(_Constant(0.5), x, change_scale=2.0)
    torch.testing.assert_close(pred, x + 1.0)
    m = evaluate_regression(_Constant(0.5), x, y, warmup=0, change_scale=2.0)
    assert m.mse == pytest.approx(((2 - 2) ** 2 + (3 - 4) ** 2 + (5 - 4) ** 2) / 3)  # pred x + 1 = 2, 3, 5
    # training sees the standardised change: a loss of mean (z - (y - x)/s)^2 with z = 0.5 at the start
    model = _Constant(0.5)
    loss, _ = backward_batch(model, x.transpose(0, 1), ((y - x) / 2.0).transpose(0, 1), TrainConfig(),
                             loss_fn=sequence_mse_loss(0))
    assert loss == pytest.approx(((0.5 - 0.5) ** 2 + (0.5 - 1.0) ** 2 + (0.5 - 0.0) ** 2) / 3)
    with pytest.raises(ValueError, match="change_scale"):
        predict_sequences(model, x, change_scale=0.0)
    with pytest.raises(ValueError, match="no scale"):
        change_scale(x, x)


@pytest.mark.slow
def test_change_target_beats_persistence_one_step_ahead() -> None:
    split = mackey_glass_split(1500, window=100, horizon=1, seed=0)
    gen = _gen(0)
    model = RecurrentRegressor(1, 32, 1, neuron="rlif", readout_beta=0.8, generator=gen, beta=0.9)
    cfg = TrainConfig(epochs=10, batch_size=8, lr=5e-3, tbptt=25, grad_clip=1.0)
    scale = change_scale(split.x_train, split.y_train, warmup=10)
    fit_regression(model, split.x_train, split.y_train, cfg, gen, warmup=10, change_scale=scale)
    m = evaluate_regression(model, split.x_test, split.y_test, warmup=10, denormalize=split.denormalize,
                            change_scale=scale)
    assert m.mse < 0.5 * m.persistence_mse
