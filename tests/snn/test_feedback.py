"""FA, DFA and DRTP against their formulas written out by hand: the hidden layers' updates are
``sum_t filt(delta_l)[t]^T x_l[t]`` with ``delta_l = (signal) * f'(v_l - thr)``, computed with plain loops here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikefed.snn.feedback import dfa_backward, drtp_backward, fa_backward, feedback_matrices
from spikefed.snn.local import fixed_matrix, rule_support
from spikefed.snn.losses import ce_membrane_loss
from spikefed.snn.models import SpikingConvNet, SpikingMLP

BETA, THR = 0.6, 1.0
SIZES = [5, 7, 6, 3]


def _model(seed: int = 1) -> SpikingMLP:
    # reset "none": v[t] = beta v[t-1] + I[t], so dv[t]/dI[t'] = beta^(t - t') exactly
    model = SpikingMLP(SIZES, readout="membrane", generator=torch.Generator().manual_seed(seed), beta=BETA,
                       reset="none", threshold=THR)
    return model.double()


def _loss(out: torch.Tensor, hidden: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    return ce_membrane_loss(out, y, "time_mean")


def _data(steps: int = 4, batch: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.rand(steps, batch, SIZES[0], generator=g, dtype=torch.float64) * 2.5
    y = torch.randint(0, SIZES[-1], (batch,), generator=g)
    return x, y


def _filter(x: torch.Tensor, a: float) -> torch.Tensor:
    out, acc = [], torch.zeros_like(x[0])
    for t in range(x.shape[0]):
        acc = a * acc + x[t]
        out.append(acc)
    return torch.stack(out)


def _reverse_filter(g: torch.Tensor, a: float) -> torch.Tensor:
    """``sum_{t' >= t} a^(t'-t) g[t']``: how a signal on v[t'] reaches the input current at t."""
    return _filter(g.flip(0), a).flip(0)


def _plain_forward(model: SpikingMLP, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                                                 list[torch.Tensor], torch.Tensor]:
    """Inputs of every layer, membranes and spikes of the hidden layers, the read-out current (plain loops)."""
    ins, mems, spikes = [x], [], []
    h = x
    for lin in model.linears[:-1]:
        v = _filter(h @ lin.weight.detach().t() + lin.bias.detach(), BETA)
        s = (v > THR).double()
        mems.append(v)
        spikes.append(s)
        ins.append(s)
        h = s
    last = model.linears[-1]
    current = h @ last.weight.detach().t() + last.bias.detach()
    return ins, mems, spikes, current


def _readout_error(model: SpikingMLP, current: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/d(read-out current) and dL/d(read-out membrane) of the leaky read-out, by autograd on those tensors."""
    c = current.clone().requires_grad_(True)
    mem = _filter(c, float(model.integrator.beta))
    mem.retain_grad()
    F.cross_entropy(mem.reshape(-1, mem.shape[-1]), y.repeat(mem.shape[0])).backward()
    return c.grad, mem.grad


def _weight_grads(delta_v: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``dW = sum_t d[t]^T x[t]``, ``db = sum_t d[t]`` with ``d`` the signal on the input current."""
    d = _reverse_filter(delta_v, BETA)
    return torch.einsum("tbh,tbi->hi", d, x), d.sum((0, 1))


def _fprime(model: SpikingMLP, layer: int, v: torch.Tensor) -> torch.Tensor:
    return model.neurons[layer].surrogate.derivative(v - THR)


def _check_output_layer(model: SpikingMLP, ins: list[torch.Tensor], g_current: torch.Tensor) -> None:
    last = model.linears[-1]
    torch.testing.assert_close(last.weight.grad, torch.einsum("tbc,tbh->ch", g_current, ins[-1]))
    torch.testing.assert_close(last.bias.grad, g_current.sum((0, 1)))


def test_dfa_update_is_projected_error_times_surrogate() -> None:
    model, (x, y) = _model(), _data()
    ins, mems, _, current = _plain_forward(model, x)
    g_current, e = _readout_error(model, current, y)
    dfa_backward(model, x, y, _loss, seed=3)
    mats = feedback_matrices(model, "dfa", 3)
    for layer in range(len(SIZES) - 2):
        delta = (e @ mats[layer]) * _fprime(model, layer, mems[layer])
        gw, gb = _weight_grads(delta, ins[layer])
        torch.testing.assert_close(model.linears[layer].weight.grad, gw)
        torch.testing.assert_close(model.linears[layer].bias.grad, gb)
    _check_output_layer(model, ins, g_current)


def test_fa_update_is_backprop_through_random_matrices() -> None:
    model, (x, y) = _model(), _data()
    ins, mems, _, current = _plain_forward(model, x)
    g_current, _ = _readout_error(model, current, y)
    fa_backward(model, x, y, _loss, seed=5)
    mats = feedback_matrices(model, "fa", 5)
    # layer 2 (read-out) error -> B_2 -> layer 1 -> B_1 -> layer 0, never through the forward weights
    d_up = g_current  # signal on the input current of the layer above
    for layer in (1, 0):
        delta = (d_up @ mats[layer + 1]) * _fprime(model, layer, mems[layer])
        gw, gb = _weight_grads(delta, ins[layer])
        torch.testing.assert_close(model.linears[layer].weight.grad, gw)
        torch.testing.assert_close(model.linears[layer].bias.grad, gb)
        d_up = _reverse_filter(delta, BETA)
    _check_output_layer(model, ins, g_current)


def test_fa_differs_from_backprop() -> None:
    model, (x, y) = _model(), _data()
    reference = _model()
    out = reference(x)
    _loss(out.output, out.hidden, y).backward()
    fa_backward(model, x, y, _loss, seed=5)
    assert not torch.allclose(model.linears[0].weight.grad, reference.linears[0].weight.grad)
    torch.testing.assert_close(model.linears[-1].weight.grad, reference.linears[-1].weight.grad)


def test_drtp_update_is_projected_target_times_surrogate() -> None:
    model, (x, y) = _model(), _data()
    ins, mems, _, current = _plain_forward(model, x)
    g_current, _ = _readout_error(model, current, y)
    drtp_backward(model, x, y, _loss, seed=9)
    mats = feedback_matrices(model, "drtp", 9)
    steps, batch = x.shape[:2]
    onehot = torch.zeros(batch, SIZES[-1], dtype=torch.float64)
    onehot[torch.arange(batch), y] = 1.0
    for layer in range(len(SIZES) - 2):
        signal = -(onehot @ mats[layer]) / (steps * batch)
        delta = signal.expand(steps, -1, -1) * _fprime(model, layer, mems[layer])
        gw, gb = _weight_grads(delta, ins[layer])
        torch.testing.assert_close(model.linears[layer].weight.grad, gw)
        torch.testing.assert_close(model.linears[layer].bias.grad, gb)
    _check_output_layer(model, ins, g_current)


def test_fixed_matrices_are_seeded_per_layer() -> None:
    a, b = fixed_matrix((10, 20), 4, 0), fixed_matrix((10, 20), 4, 0)
    assert torch.equal(a, b)
    assert not torch.equal(a, fixed_matrix((10, 20), 4, 1))
    assert not torch.equal(a, fixed_matrix((10, 20), 5, 0))
    big = fixed_matrix((50, 400), 0, 0)
    assert abs(float(big.var()) - 1 / 50) < 0.1 / 50  # N(0, 1/fan) entries


@pytest.mark.parametrize("method", ["fa", "dfa", "drtp", "decolle", "stdp"])
def test_non_mlp_models_are_refused(method: str) -> None:
    conv = SpikingConvNet((1, 8, 8), 3, channels=(2,))
    assert "SpikingMLP" in rule_support(conv, method)
    assert rule_support(_model(), method) is None
