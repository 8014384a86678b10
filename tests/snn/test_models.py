"""Models: shapes, seeded initialisation, explicit state across chunks, conv and recurrent variants."""

from __future__ import annotations

import pytest
import torch

from spikefed.manifold import manifold_of
from spikefed.snn.models import RecurrentRegressor, SpikingConvNet, SpikingMLP


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mlp_matches_hand_written_layer_loop() -> None:
    model = SpikingMLP([6, 5, 3], beta=0.8, threshold=0.7, generator=_gen())
    x = torch.rand(12, 4, 6, generator=_gen(1))
    out = model(x)
    # independent reference: per-step Linear + scalar LIF recurrence written out here
    w1, b1 = model.linears[0].weight, model.linears[0].bias
    w2, b2 = model.linears[1].weight, model.linears[1].bias
    u1 = torch.zeros(4, 5)
    u2 = torch.zeros(4, 3)
    spikes = []
    with torch.no_grad():
        for t in range(12):
            u1 = 0.8 * u1 + x[t] @ w1.T + b1 - 0.7 * (u1 > 0.7).float()
            s1 = (u1 > 0.7).float()
            u2 = 0.8 * u2 + s1 @ w2.T + b2 - 0.7 * (u2 > 0.7).float()
            spikes.append((u2 > 0.7).float())
    assert torch.equal(out.output, torch.stack(spikes))
    assert out.output.shape == (12, 4, 3) and len(out.hidden) == 2


def test_seeded_initialisation() -> None:
    a = SpikingMLP([8, 16, 4], generator=_gen(3))
    b = SpikingMLP([8, 16, 4], generator=_gen(3))
    c = SpikingMLP([8, 16, 4], generator=_gen(4))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.linears[0].weight, c.linears[0].weight)


@pytest.mark.parametrize("neuron", ["lif", "synaptic", "alif", "rlif", "if"])
def test_state_carries_across_chunks(neuron: str) -> None:
    model = SpikingMLP([5, 7, 3], neuron=neuron, generator=_gen())
    x = torch.rand(20, 2, 5, generator=_gen(2)) * 2
    whole = model(x)
    first = model(x[:8])
    second = model(x[8:], first.state)
    assert torch.equal(torch.cat([first.output, second.output]), whole.output)
    assert torch.allclose(torch.cat([first.membrane, second.membrane]), whole.membrane, atol=1e-6)


def test_membrane_readout_is_leaky_integral_of_last_layer() -> None:
    model = SpikingMLP([4, 6, 3], readout="membrane", beta=0.7, generator=_gen())
    x = torch.rand(10, 2, 4, generator=_gen(5))
    out = model(x)
    drive = model.linears[1](out.hidden[-1])
    y = torch.zeros(2, 3)
    for t in range(10):
        y = 0.7 * y + drive[t]
        assert torch.allclose(out.output[t], y, atol=1e-6)


def test_conv_net_shapes_and_gradients() -> None:
    model = SpikingConvNet((1, 8, 8), num_classes=10, channels=(4, 8), generator=_gen())
    x = torch.rand(6, 3, 1, 8, 8, generator=_gen(1)) * 3
    out = model(x)
    assert out.output.shape == (6, 3, 10)
    assert out.hidden[0].shape == (6, 3, 4, 4, 4) and out.hidden[1].shape == (6, 3, 8, 2, 2)
    out.output.sum().backward()
    assert model.convs[0].weight.grad is not None and model.convs[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\[T, B, 1, 8, 8\]"):
        model(torch.rand(3, 1, 8, 8))


def test_recurrent_regressor_readout_and_manifolds() -> None:
    model = RecurrentRegressor(1, 16, 1, readout_beta=0.6, generator=_gen(), learn_beta=True)
    x = torch.randn(30, 4, 1, generator=_gen(1))
    out = model(x)
    assert out.output.shape == (30, 4, 1)
    drive = model.decoder(out.hidden[0])
    y = torch.zeros(4, 1)
    for t in range(30):
        y = 0.6 * y + drive[t]
    assert torch.allclose(out.output[-1], y, atol=1e-5)
    assert manifold_of(model.neuron.beta).kind == "unit_interval"
    assert manifold_of(model.neuron.recurrent).kind == "euclidean"


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="sizes"):
        SpikingMLP([10])
    with pytest.raises(ValueError, match="readout"):
        SpikingMLP([4, 2], readout="votes")
    with pytest.raises(ValueError, match=r"\[T, B, 4\]"):
        SpikingMLP([4, 2])(torch.rand(5, 3, 5))


def test_time_constant_input_is_computed_once_with_same_result() -> None:
    """Direct coding gives a stride-0 view; the first layer runs once per sample, results and grads unchanged."""
    model = SpikingMLP([6, 9, 4], generator=_gen(), learn_beta=True).double()
    x = torch.rand(3, 6, generator=_gen(1), dtype=torch.float64) * 2
    view = x.unsqueeze(0).expand(11, 3, 6)
    assert view.stride(0) == 0
    a = model(view)
    ga = torch.autograd.grad(a.output.sum() + a.membrane.sum(), list(model.parameters()))
    b = model(view.contiguous())
    gb = torch.autograd.grad(b.output.sum() + b.membrane.sum(), list(model.parameters()))
    assert torch.equal(a.output, b.output)
    assert torch.allclose(a.membrane, b.membrane, atol=1e-12)
    for g, h in zip(ga, gb):
        assert torch.allclose(g, h, atol=1e-10)
