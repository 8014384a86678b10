"""DECOLLE: each layer's update is the gradient of its own local loss, computed here with autograd on a plain
re-implementation of that layer alone (so no gradient can cross from another layer)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikefed.snn.decolle import decolle_backward, readout_matrices
from spikefed.snn.losses import ce_membrane_loss
from spikefed.snn.models import SpikingMLP
from spikefed.snn.surrogate import spike

SIZES = [6, 8, 7, 4]
ALPHA = 0.7


def _model() -> SpikingMLP:
    model = SpikingMLP(SIZES, readout="membrane", generator=torch.Generator().manual_seed(2), beta=0.8,
                       threshold=0.7)
    return model.double()


def _loss(out: torch.Tensor, hidden: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    return ce_membrane_loss(out, y, "time_mean")


def _plain_layer(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """LIF with reset by subtraction (reset detached), beta 0.8, threshold 0.7, atan surrogate: plain loop."""
    v = torch.zeros(x.shape[1], weight.shape[0], dtype=x.dtype)
    last = torch.zeros_like(v)
    out = []
    for t in range(x.shape[0]):
        v = 0.8 * v + x[t] @ weight.t() + bias - last.detach() * 0.7
        last = spike(v - 0.7, "atan")
        out.append(last)
    return torch.stack(out)


def _plain_local_loss(s: torch.Tensor, g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p, trace = torch.zeros_like(s[0]), []
    for t in range(s.shape[0]):
        p = ALPHA * p + (1 - ALPHA) * s[t]
        trace.append(p @ g.t())
    ys = torch.stack(trace)
    return sum(F.cross_entropy(ys[t], y) for t in range(ys.shape[0])) / ys.shape[0]


def test_each_layer_follows_its_own_local_loss_gradient() -> None:
    model = _model()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, 9, SIZES[0], generator=g, dtype=torch.float64) * 1.5
    y = torch.randint(0, SIZES[-1], (9,), generator=g)
    decolle_backward(model, x, y, _loss, seed=11, alpha=ALPHA)
    mats = readout_matrices(model, 11)
    h = x
    for layer in range(len(SIZES) - 2):
        lin = model.linears[layer]
        w = lin.weight.detach().clone().requires_grad_(True)
        b = lin.bias.detach().clone().requires_grad_(True)
        s = _plain_layer(w, b, h)
        gw, gb = torch.autograd.grad(_plain_local_loss(s, mats[layer], y), [w, b])
        torch.testing.assert_close(lin.weight.grad, gw)
        torch.testing.assert_close(lin.bias.grad, gb)
        assert float(gw.abs().sum()) > 0
        h = s.detach()
    # the output layer: the task loss on its own (detached) input
    last = model.linears[-1]
    w = last.weight.detach().clone().requires_grad_(True)
    b = last.bias.detach().clone().requires_grad_(True)
    c = h @ w.t() + b
    mem, acc = [], torch.zeros_like(c[0])
    for t in range(c.shape[0]):
        acc = 0.8 * acc + c[t]
        mem.append(acc)
    gw, gb = torch.autograd.grad(_loss(torch.stack(mem), [], y), [w, b])
    torch.testing.assert_close(last.weight.grad, gw)
    torch.testing.assert_close(last.bias.grad, gb)


def test_local_readouts_are_fixed_and_seeded() -> None:
    model = _model()
    a, b = readout_matrices(model, 1), readout_matrices(model, 1)
    assert [m.shape for m in a] == [(SIZES[-1], SIZES[1]), (SIZES[-1], SIZES[2])]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not any(m.requires_grad for m in a)


def test_bad_alpha_is_refused() -> None:
    x, y = torch.zeros(3, 2, SIZES[0], dtype=torch.float64), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="decolle_alpha"):
        decolle_backward(_model(), x, y, _loss, alpha=1.0)
