"""The per-client convolution rule of the stacked forward (snn/client_conv.py), against torch's own convolutions
run one client at a time (values and every gradient, float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikefed.snn.client_conv import CONV_MODES, ClientConv, conv_mode, resolve_conv_mode

FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(7)


@pytest.mark.parametrize("dims,stride,padding,dilation,groups,bias,batched", [
    (1, 1, 0, 1, 1, True, True),
    (2, 1, 1, 1, 1, True, True),
    (2, 2, 1, 1, 2, False, True),
    (2, 1, 2, 2, 1, True, False),
    (3, 1, 1, 1, 1, True, True),
])
def test_client_conv_outside_vmap_is_the_ordinary_convolution(dims: int, stride: int, padding: int, dilation: int,
                                                              groups: int, bias: bool, batched: bool) -> None:
    g = _gen()
    cin, cout, size = 4, 6, 7
    shape = ((3,) if batched else ()) + (cin,) + (size,) * dims
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    w = torch.randn((cout, cin // groups) + (3,) * dims, generator=g, dtype=torch.float64)
    b = torch.randn(cout, generator=g, dtype=torch.float64) if bias else None
    leaves = [t.clone().requires_grad_(True) for t in (x, w) + ((b,) if bias else ())]
    ref_leaves = [t.clone().requires_grad_(True) for t in (x, w) + ((b,) if bias else ())]
    out = ClientConv.apply(leaves[0], leaves[1], leaves[2] if bias else None, stride, padding, dilation, groups, dims)
    ref = FN[dims](ref_leaves[0], ref_leaves[1], ref_leaves[2] if bias else None, stride, padding, dilation, groups)
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    up = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad(out, leaves, up)
    ref_grads = torch.autograd.grad(ref, ref_leaves, up)
    for a, r in zip(grads, ref_grads):
        assert torch.allclose(a, r, rtol=0, atol=1e-12)


def _stacked_case(k: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _gen()
    x = (torch.rand(k, 5, 2, 9, 9, generator=g) < 0.3).double()
    w = torch.randn(k, 4, 2, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(k, 4, generator=g, dtype=torch.float64)
    up = torch.randn(k, 5, 4, 9, 9, generator=g, dtype=torch.float64)
    return x, w, b, up


@pytest.mark.parametrize("mode", ["loop", "grouped"])
@pytest.mark.parametrize("keywords", [False, True])
def test_stacked_kernels_under_vmap_equal_one_convolution_per_client(mode: str, keywords: bool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    rule = ClientConv.vmap

    def counted(*args: object) -> object:
        calls.append(1)
        return rule(*args)

    monkeypatch.setattr(ClientConv, "vmap", staticmethod(counted))
    x, w, b, up = _stacked_case()
    xs, ws, bs = (t.clone().requires_grad_(True) for t in (x, w, b))

    def one(xk: torch.Tensor, wk: torch.Tensor, bk: torch.Tensor) -> torch.Tensor:
        if keywords:
            return F.conv2d(xk, weight=wk, bias=bk, padding=1)
        return F.conv2d(xk, wk, bk, 1, 1)

    with conv_mode(mode):
        out = torch.func.vmap(one)(xs, ws, bs)
    grads = torch.autograd.grad(out, (xs, ws, bs), up)
    assert len(calls) == (1 if mode == "loop" else 0)  # the loop rule ran (grouped: PyTorch's own)
    for k in range(x.shape[0]):  # the reference: client k alone, torch's convolution and autograd
        xk, wk, bk = (t[k].clone().requires_grad_(True) for t in (x, w, b))
        ref = F.conv2d(xk, wk, bk, padding=1)
        assert torch.allclose(out[k], ref, rtol=0, atol=1e-12)
        for got, want in zip(grads, torch.autograd.grad(ref, (xk, wk, bk), up[k])):
            assert torch.allclose(got[k], want, rtol=0, atol=1e-12)


def test_shared_kernel_under_vmap_is_one_call_on_the_folded_batch() -> None:
    x, w, b, up = _stacked_case()
    xs = x.clone().requires_grad_(True)
    w0, b0 = w[0].clone().requires_grad_(True), b[0].clone().requires_grad_(True)
    with conv_mode("loop"):
        out = torch.func.vmap(lambda xk: F.conv2d(xk, w0, b0, padding=1))(xs)
    gx, gw, gb = torch.autograd.grad(out, (xs, w0, b0), up)
    rx, rw, rb = x.clone().requires_grad_(True), w[0].clone().requires_grad_(True), b[0].clone().requires_grad_(True)
    ref = torch.stack([F.conv2d(rx[k], rw, rb, padding=1) for k in range(x.shape[0])])
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    for got, want in zip((gx, gw, gb), torch.autograd.grad(ref, (rx, rw, rb), up)):
        assert torch.allclose(got, want, rtol=0, atol=1e-12)


def test_string_padding_keeps_torchs_rule() -> None:
    x, w, b, _ = _stacked_case()
    with conv_mode("loop"):
        out = torch.func.vmap(lambda xk, wk, bk: F.conv2d(xk, wk, bk, padding="same"))(x, w, b)
    for k in range(x.shape[0]):
        assert torch.allclose(out[k], F.conv2d(x[k], w[k], b[k], padding=1), rtol=0, atol=1e-12)


def test_auto_is_the_loop_on_a_cpu_and_grouped_on_a_gpu() -> None:
    assert CONV_MODES == ("auto", "grouped", "loop")
    assert resolve_conv_mode("auto", "cpu") == "loop"
    assert resolve_conv_mode("auto", torch.device("cuda", 0)) == "grouped"
    assert resolve_conv_mode("grouped", "cpu") == "grouped" and resolve_conv_mode("loop", "cuda") == "loop"


def test_unknown_mode_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'fast'.*auto, grouped, loop"):
        with conv_mode("fast"):
            pass


def test_train_cohort_refuses_an_unknown_rule_before_training() -> None:
    from spikefed.federated.cohort import ClientData, train_cohort
    from spikefed.federated.types import FitInstructions, params_of
    from spikefed.snn.models import SpikingConvNet
    from spikefed.snn.train import TrainConfig

    model = SpikingConvNet((1, 6, 6), 2, channels=(2,), generator=_gen())
    clients = [ClientData(0, torch.rand(3, 2, 1, 6, 6), torch.tensor([0, 1, 0]))]
    cfg = TrainConfig(epochs=1, batch_size=2, num_steps=2, encoder="events")
    with pytest.raises(ValueError, match="unknown stacked convolution mode 'fast'"):
        train_cohort(model, params_of(model), clients, [torch.Generator()], cfg, FitInstructions(1), conv="fast")
