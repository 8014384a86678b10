"""STDP: the trace implementation against the published pair window and an explicit sum over spike pairs;
R-STDP against a plain per-sample eligibility loop; BPTT's weight change against beta^dt (seed 004)."""

from __future__ import annotations

import math

import pytest
import torch

from spikefed.snn.losses import ce_membrane_loss
from spikefed.snn.models import SpikingMLP
from spikefed.snn.stdp import STDPParams, apply_stdp_, bptt_weight_change, pair_weight_change, stdp_backward, \
    stdp_delta

P = STDPParams(a_plus=0.01, a_minus=0.012, tau_plus=4.0, tau_minus=7.0, normalize=False)


def _closed_form(dt: int, a_plus: float = 0.01, a_minus: float = 0.012) -> float:
    """Delta w(dt) = A+ exp(-dt/tau+) for dt >= 0, -A- exp(dt/tau-) for dt < 0."""
    return a_plus * math.exp(-dt / 4.0) if dt >= 0 else -a_minus * math.exp(dt / 7.0)


def test_pair_window_matches_closed_form() -> None:
    steps, errors = 60, []
    for dt in range(-20, 21):
        pre = torch.zeros(steps, 1, 1, dtype=torch.float64)
        post = torch.zeros(steps, 1, 1, dtype=torch.float64)
        pre[25, 0, 0] = 1.0
        post[25 + dt, 0, 0] = 1.0
        measured = float(stdp_delta(pre, post, P)[0, 0])
        errors.append(abs(measured - _closed_form(dt)))
        assert pair_weight_change(dt, P) == pytest.approx(_closed_form(dt), abs=1e-15)
    assert max(errors) < 1e-15


def test_multiplicative_amplitudes_are_soft_bounded() -> None:
    params = STDPParams(a_plus=0.01, a_minus=0.012, tau_plus=4.0, tau_minus=7.0, variant="multiplicative",
                        w_min=-0.5, w_max=2.0)
    w = torch.tensor([[0.3]], dtype=torch.float64)
    for dt in (-5, -1, 0, 3):
        pre = torch.zeros(20, 1, 1, dtype=torch.float64)
        post = torch.zeros(20, 1, 1, dtype=torch.float64)
        pre[8, 0, 0], post[8 + dt, 0, 0] = 1.0, 1.0
        bound = (2.0 - 0.3) if dt >= 0 else (0.3 + 0.5)
        assert float(stdp_delta(pre, post, params, w)[0, 0]) == pytest.approx(bound * _closed_form(dt), abs=1e-15)


def _all_pairs(pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    """Explicit all-to-all sum over every (pre spike, post spike) pair, averaged over the batch."""
    steps, batch, n_in = pre.shape
    n_out = post.shape[2]
    dw = torch.zeros(n_out, n_in, dtype=torch.float64)
    for b in range(batch):
        for j in range(n_out):
            for i in range(n_in):
                for tq in range(steps):
                    for tp in range(steps):
                        if post[tq, b, j] and pre[tp, b, i]:
                            dw[j, i] += post[tq, b, j] * pre[tp, b, i] * _closed_form(tq - tp)
    return dw / batch


def test_random_spike_trains_match_the_pair_sum() -> None:
    g = torch.Generator().manual_seed(0)
    pre = (torch.rand(15, 3, 4, generator=g) < 0.3).double()
    post = (torch.rand(15, 3, 2, generator=g) < 0.3).double()
    torch.testing.assert_close(stdp_delta(pre, post, P), _all_pairs(pre, post), rtol=0, atol=1e-14)


def test_reward_modulated_stdp_matches_a_plain_eligibility_loop() -> None:
    params = STDPParams(a_plus=0.01, a_minus=0.012, tau_plus=4.0, tau_minus=7.0, reward=True, tau_eligibility=6.0)
    g = torch.Generator().manual_seed(1)
    steps, batch = 12, 4
    pre = (torch.rand(steps, batch, 3, generator=g) < 0.4).double()
    post = (torch.rand(steps, batch, 2, generator=g) < 0.4).double()
    reward = torch.tensor([1.0, -0.5, 0.25, -2.0], dtype=torch.float64)
    d_p, d_m, d_e = math.exp(-1 / 4.0), math.exp(-1 / 7.0), math.exp(-1 / 6.0)
    total = torch.zeros(2, 3, dtype=torch.float64)
    for b in range(batch):
        x, yv, e = torch.zeros(3, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), torch.zeros(2, 3,
                                                                                                        dtype=torch.float64)
        for t in range(steps):
            x = d_p * x + pre[t, b]
            yv = d_m * yv
            pair = 0.01 * torch.outer(post[t, b], x) - 0.012 * torch.outer(yv, pre[t, b])
            yv = yv + post[t, b]
            e = d_e * e + pair
        total += reward[b] * e
    torch.testing.assert_close(stdp_delta(pre, post, params, reward=reward), total / batch, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dt", [-4, -1, 0, 1, 2, 5, 9])
def test_bptt_weight_change_is_the_causal_half_window(dt: int) -> None:
    expected = 0.85 ** dt if dt >= 0 else 0.0
    assert bptt_weight_change(dt, 0.85) == pytest.approx(expected, abs=1e-6)


def test_additive_clips_and_scaling_keeps_row_norms() -> None:
    w = torch.tensor([[0.9, -0.2], [0.1, 0.4]])
    apply_stdp_(w, torch.tensor([[0.5, 0.0], [0.0, -0.1]]), STDPParams(normalize=False))
    torch.testing.assert_close(w, torch.tensor([[1.0, -0.2], [0.1, 0.3]]))
    w = torch.tensor([[0.3, -0.2], [0.1, 0.4]])
    norms = w.norm(dim=1)
    apply_stdp_(w, torch.tensor([[0.05, 0.1], [-0.02, 0.03]]), STDPParams())
    torch.testing.assert_close(w.norm(dim=1), norms)


@pytest.mark.parametrize("kw, needle", [({"a_plus": -1.0}, "stdp_a_plus"), ({"tau_minus": 0.0}, "stdp_tau_minus"),
                                        ({"variant": "hebb"}, "stdp_variant"), ({"w_min": 1.0}, "stdp_w_min")])
def test_bad_parameters_are_refused(kw: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        STDPParams(**kw)


def test_stdp_backward_updates_hidden_by_stdp_and_readout_by_gradient() -> None:
    model = SpikingMLP([4, 6, 3], readout="membrane", generator=torch.Generator().manual_seed(0)).double()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(8, 5, 4, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 3, (5,), generator=g)
    w0 = model.linears[0].weight.detach().clone()
    spikes = model.neurons[0].run(model.linears[0](x)).spikes.detach()
    reference = SpikingMLP([4, 6, 3], readout="membrane", generator=torch.Generator().manual_seed(0)).double()

    def loss_fn(out: torch.Tensor, hidden: list, target: torch.Tensor) -> torch.Tensor:
        return ce_membrane_loss(out, target, "time_mean")

    stdp_backward(model, x, y, loss_fn, P)
    torch.testing.assert_close(model.linears[0].weight, (w0 + stdp_delta(x, spikes, P)).clamp(-1, 1))
    assert torch.count_nonzero(model.linears[0].weight.grad) == 0
    # the read-out's gradient: the task loss with the hidden spikes as fixed input
    mem, _ = reference.integrator(reference.linears[1](spikes))
    loss_fn(mem, [], y).backward()
    torch.testing.assert_close(model.linears[1].weight.grad, reference.linears[1].weight.grad)
    assert float(spikes.sum()) > 0
