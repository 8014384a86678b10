"""How the stacked (cohort) forward runs a convolution over K clients' own kernels.

Under ``torch.func.vmap`` over K stacked copies, PyTorch's own batching rule turns ``conv2d(x_k, W_k)`` into one
grouped convolution with ``groups = K``: the K clients' inputs are copied into ``[N, K*C_in, H, W]`` and the
kernels into ``[K*C_out, C_in, kh, kw]``. On a CPU the grouped convolution of many small groups is slower than
K ordinary convolutions (measured on the project machine, ``benchmarks/conv_floor.py``: 2 -> 4 channels on 16x16,
14 clients x 192 images, weight gradient included: 99 ms by the grouped rule, 35 ms as 14 separate calls), and
the copies into the grouped layout come on top.

:func:`conv_mode` is a context manager for the stacked forward that picks the rule:

- ``grouped``: PyTorch's rule (one grouped convolution);
- ``loop``: one ordinary ``conv1d/2d/3d`` per client on its own slice, stacked (:class:`ClientConv`'s vmap
  rule). Each client's call is exactly the call the sequential engine makes, so the numbers are the same
  (tested in float64 against the sequential engine);
- ``auto``: ``loop`` on a CPU, ``grouped`` on a GPU, where K small calls are bound by kernel launches and one
  grouped call is the usual remedy (not measured here: no GPU was available to this work).

A convolution whose kernel is shared by all copies (not stacked) runs as one call on the folded batch in
either mode. Outside ``torch.func.vmap`` nothing changes.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

#: convolution rules of the stacked forward (see the module docstring)
CONV_MODES = ("auto", "grouped", "loop")

_CONVS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3, torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class ClientConv(torch.autograd.Function):
    """``conv{d}d(x, weight, bias, stride, padding, dilation, groups)`` with a per-client vmap rule.

    Outside vmap it is the ordinary convolution (forward and both backward products by
    ``aten.convolution_backward``); under vmap over stacked kernels it runs one convolution per copy."""

    generate_vmap_rule = False

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Any, padding: Any,
                dilation: Any, groups: int, dims: int) -> torch.Tensor:  # type: ignore[override]
        return _FN[dims](x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:  # type: ignore[override]
        x, weight, bias, stride, padding, dilation, groups, dims = inputs
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups, dims, bias is not None)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, dims, has_bias = ctx.conf

        def tup(v: Any) -> list[int]:
            return list(v) if isinstance(v, (tuple, list)) else [int(v)] * dims

        unbatched = x.dim() == dims + 1
        xb, gb = (x.unsqueeze(0), grad.unsqueeze(0)) if unbatched else (x, grad)
        needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]]
        gx, gw, gbias = torch.ops.aten.convolution_backward(
            gb, xb, weight, [weight.shape[0]] if has_bias else None, tup(stride), tup(padding), tup(dilation),
            False, [0] * dims, groups, needs)
        if gx is not None and unbatched:
            gx = gx.squeeze(0)
        return gx, gw, gbias if has_bias else None, None, None, None, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
             stride: Any, padding: Any, dilation: Any, groups: int, dims: int
             ) -> tuple[torch.Tensor, int]:  # type: ignore[override]
        """K copies: one ordinary convolution per copy on its own slice (or one call when the kernel is shared)."""
        k = info.batch_size
        x_dim, w_dim, b_dim = in_dims[0], in_dims[1], in_dims[2]
        fn = _FN[dims]
        if w_dim is None and b_dim is None and x_dim is not None:  # shared kernel: fold the copies into the batch
            xs = x.movedim(x_dim, 0)
            if xs.dim() == dims + 2:  # per-copy unbatched input [C, *S]: the copies are the batch
                return fn(xs, weight, bias, stride, padding, dilation, groups), 0
            out = fn(xs.reshape(k * xs.shape[1], *xs.shape[2:]), weight, bias, stride, padding, dilation, groups)
            return out.reshape(k, xs.shape[1], *out.shape[1:]), 0

        def part(t: torch.Tensor | None, d: int | None, i: int) -> torch.Tensor | None:
            return t if t is None or d is None else t.select(d, i)

        outs = [fn(part(x, x_dim, i), part(weight, w_dim, i), part(bias, b_dim, i), stride, padding, dilation,
                   groups) for i in range(k)]
        return torch.stack(outs), 0


class _LoopConvMode(TorchFunctionMode):
    """Routes ``conv1d/2d/3d`` calls to :class:`ClientConv` (its per-client vmap rule)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        dims = _CONVS.get(func)
        if dims is None:
            return func(*args, **kwargs)
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        defaults: dict[str, Any] = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
        values = {**defaults, **dict(zip(names, args)), **kwargs}
        if isinstance(values["padding"], str):  # "same" / "valid": PyTorch's own rule (no numeric padding here)
            return func(*args, **kwargs)
        return ClientConv.apply(values["input"], values["weight"], values["bias"], values["stride"],
                                values["padding"], values["dilation"], values["groups"], dims)


def resolve_conv_mode(mode: str, device: torch.device | str = "cpu") -> str:
    """``grouped`` or ``loop``: ``mode`` itself, or for ``auto`` the rule for ``device`` (``loop`` on a CPU)."""
    if mode not in CONV_MODES:
        raise ValueError(f"unknown stacked convolution mode {mode!r}; valid: {', '.join(CONV_MODES)}")
    if mode == "auto":
        return "grouped" if torch.device(device).type == "cuda" else "loop"
    return mode


@contextlib.contextmanager
def conv_mode(mode: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Within the block, convolutions under ``torch.func.vmap`` follow rule ``mode`` (:data:`CONV_MODES`;
    ``auto`` resolved for ``device`` by :func:`resolve_conv_mode`)."""
    if resolve_conv_mode(mode, device) == "grouped":
        yield
        return
    with _LoopConvMode():
        yield
