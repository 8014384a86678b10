"""Conv nets, recurrent/delayed MLPs against plain implementations written here (torch conv2d + a hand LIF loop)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikefed.manifold import manifold_of
from spikefed.snn.models import SpikingConvNet, SpikingMLP

BETA, THR = float(torch.tensor(0.9)), 1.0  # the float32 value the neurons store


def hand_lif(current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """u[t] = beta u[t-1] + I[t] - s[t-1] thr ; s[t] = 1[u[t] > thr]  (reset by subtraction), step by step."""
    u = torch.zeros_like(current[0])
    s = torch.zeros_like(current[0])
    spikes, mems = [], []
    for t in range(current.shape[0]):
        u = BETA * u + current[t] - s * THR
        s = (u > THR).to(current.dtype)
        spikes.append(s)
        mems.append(u)
    return torch.stack(spikes), torch.stack(mems)


def hand_pool(x: torch.Tensor, mode: str, k: int) -> torch.Tensor:
    """Pooling of ``[N, C, H, W]`` by explicit windows (no torch pooling call)."""
    n, c, h, w = x.shape
    win = x[:, :, :h // k * k, :w // k * k].reshape(n, c, h // k, k, w // k, k)
    if mode == "max":
        return win.amax(dim=(3, 5))
    if mode == "sum":
        return win.sum(dim=(3, 5))
    return win.mean(dim=(3, 5))


def reference_convnet(model: SpikingConvNet, x: torch.Tensor, pooling: str, pool: int,
                      residual: bool) -> tuple[torch.Tensor, torch.Tensor]:
    h = x
    for conv in model.convs:
        t, b = h.shape[:2]
        cur = F.conv2d(h.reshape(t * b, *h.shape[2:]), conv.weight, conv.bias, stride=model.stride,
                       padding=model.padding)
        cur = cur.reshape(t, b, *cur.shape[1:])
        if residual and cur.shape == h.shape:
            cur = cur + h
        s, _ = hand_lif(cur)
        h = hand_pool(s.reshape(t * b, *s.shape[2:]), pooling, pool) if pool > 1 else s.reshape(t * b, *s.shape[2:])
        h = h.reshape(t, b, *h.shape[1:])
    lin = model.head.linears[0]
    return hand_lif(h.flatten(2) @ lin.weight.t() + lin.bias)


def _model(**kw) -> SpikingConvNet:
    torch.manual_seed(0)
    model = SpikingConvNet((2, 8, 8), 3, generator=torch.Generator().manual_seed(1), beta=BETA, threshold=THR,
                           **kw).double()
    with torch.no_grad():  # stronger weights so that every layer spikes
        for p in model.parameters():
            p.mul_(3.0)
    return model


def _input(shape=(6, 2, 2, 8, 8)) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) < 0.4).double()


@pytest.mark.parametrize("pooling", ["max", "avg", "sum"])
def test_conv_forward_matches_plain_conv_and_hand_lif(pooling: str) -> None:
    model = _model(channels=(3, 4), pooling=pooling)
    x = _input()
    out = model(x)
    ref_spikes, ref_mem = reference_convnet(model, x, pooling, 2, False)
    assert ref_spikes.sum() > 0  # the comparison is not vacuous
    torch.testing.assert_close(out.output, ref_spikes, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.membrane, ref_mem, rtol=0, atol=1e-10)
    # the flat layout (event frames arrive [T, B, C*H*W], channels first) gives the same network output
    torch.testing.assert_close(model(x.flatten(2)).output, out.output, rtol=0, atol=0)


def test_residual_block_adds_the_input_spikes_where_the_shape_is_kept() -> None:
    model = _model(channels=(2, 3), residual=True, pooling="sum")
    assert model.residual == (True, False)  # block 1 keeps 2x8x8; block 2 changes the channels
    x = _input()
    ref_spikes, ref_mem = reference_convnet(model, x, "sum", 2, True)
    out = model(x)
    torch.testing.assert_close(out.output, ref_spikes, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.membrane, ref_mem, rtol=0, atol=1e-10)
    plain = _model(channels=(2, 3), residual=False, pooling="sum")
    assert not torch.equal(plain(x).membrane, out.membrane)


def test_stride_padding_and_no_pooling() -> None:
    model = _model(channels=(3,), kernel_size=3, stride=2, padding=0, pool=1)
    x = _input()
    ref_spikes, ref_mem = reference_convnet(model, x, "max", 1, False)
    out = model(x)
    assert model.conv_neurons[0].features == (3, 3, 3)  # floor((8 - 3) / 2) + 1 = 3
    torch.testing.assert_close(out.membrane, ref_mem, rtol=0, atol=1e-10)


def test_conv_shapes_that_do_not_fit_are_errors() -> None:
    with pytest.raises(ValueError, match="kernel 11"):
        SpikingConvNet((1, 8, 8), 10, channels=(4,), kernel_size=11, padding=0)
    with pytest.raises(ValueError, match="pooling 4x4"):
        SpikingConvNet((1, 8, 8), 10, channels=(4, 4), pool=4)


def hand_shift(s: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """y[t, :, i] = s[t - d_i, :, i] (zeros before the start), integer delays."""
    out = torch.zeros_like(s)
    for i, di in enumerate(d.long().tolist()):
        out[di:, :, i] = s[:s.shape[0] - di, :, i]
    return out


def test_mlp_delays_shift_hidden_spikes_and_live_on_the_circle() -> None:
    model = SpikingMLP([5, 4, 3], generator=torch.Generator().manual_seed(0), delays=3, beta=BETA).double()
    delay = model.delays[0]
    assert manifold_of(delay.delays).kind == "circular" and manifold_of(delay.delays).period == 3
    with torch.no_grad():
        delay.delays.copy_(torch.tensor([0.0, 1.0, 2.0, 1.0]))
        for p in model.linears.parameters():
            p.mul_(4.0)
    x = _input((8, 2, 5))
    h, _ = hand_lif(x @ model.linears[0].weight.t() + model.linears[0].bias)
    assert h.sum() > 0
    ref_spikes, ref_mem = hand_lif(hand_shift(h, delay.delays.detach()) @ model.linears[1].weight.t()
                                   + model.linears[1].bias)
    out = model(x)
    torch.testing.assert_close(out.hidden[0], h, rtol=0, atol=0)  # regularisers see the undelayed spikes
    torch.testing.assert_close(out.membrane, ref_mem, rtol=0, atol=1e-10)
    # the ring buffer is part of the state: two chunks equal one pass
    first = model(x[:5])
    second = model(x[5:], first.state)
    torch.testing.assert_close(torch.cat([first.membrane, second.membrane]), out.membrane, rtol=0, atol=1e-12)
    # fractional delays get a gradient
    with torch.no_grad():
        delay.delays.add_(0.3)
    model(x).membrane.sum().backward()
    assert delay.delays.grad is not None and delay.delays.grad.abs().sum() > 0


def test_recurrent_hidden_with_feed_forward_output() -> None:
    model = SpikingMLP([5, 4, 3], neuron="ralif", output_neuron="alif", generator=torch.Generator().manual_seed(0))
    kinds = [type(n).__name__ for n in model.neurons]
    assert kinds == ["RecurrentALIF", "ALIF"]
    out = model(_input((4, 2, 5)).float())
    assert out.output.shape == (4, 2, 3)


def test_nir_export_refuses_what_its_chain_cannot_hold() -> None:
    from spikefed.interop.nir import to_nir
    from spikefed.interop.nir.common import NIRConversionError

    with pytest.raises(NIRConversionError, match="pooling=sum"):
        to_nir(SpikingConvNet((1, 8, 8), 3, channels=(2,), pooling="sum"))
    with pytest.raises(NIRConversionError, match="delays"):
        to_nir(SpikingMLP([4, 3, 2], delays=2))


def test_conv_delays_shift_the_flattened_features_before_the_read_out() -> None:
    model = _model(channels=(2,), delays=3)
    with torch.no_grad():
        model.delay.delays.copy_(torch.arange(model.delay.features, dtype=torch.float64) % 3)
    x = _input()
    t, b = x.shape[:2]
    conv = model.convs[0]
    cur = F.conv2d(x.reshape(t * b, 2, 8, 8), conv.weight, conv.bias, padding=1).reshape(t, b, 2, 8, 8)
    s, _ = hand_lif(cur)
    z = hand_pool(s.reshape(t * b, 2, 8, 8), "max", 2).reshape(t, b, -1)
    lin = model.head.linears[0]
    _, ref_mem = hand_lif(hand_shift(z, model.delay.delays.detach()) @ lin.weight.t() + lin.bias)
    torch.testing.assert_close(model(x).membrane, ref_mem, rtol=0, atol=1e-10)
