"""Compiled LIF and low-pass kernels: the same recurrences as :mod:`.kernels`, with the time loops compiled.

:class:`~.kernels.LIFFunction` runs its forward as a Python loop of T fused steps and its backward as a
reverse-time loop (:func:`~.kernels.reverse_scan_`); each step is a handful of elementwise torch calls that
each read and write the whole ``[K, B, N]`` slice, so a step costs several passes over memory plus the
dispatch of every call. Here the forward loop is handed to ``torch.compile`` (inductor: C++/OpenMP on CPU,
Triton on CUDA), which fuses the T steps into one pass over the data. The backward is the loop kernel's
(:func:`~.kernels.lif_backward`): its reverse loop is one in-place multiply-add per step, and compiling it
measured no gain. The arithmetic per element is the same recurrence (out of place instead of ``out=``), so
values agree with the loop up to float rounding (the compiler may contract ``a * b + c`` into one FMA): the
tests compare values and gradients with :func:`~.kernels.lif_reference` in float64 (1e-12) and float32 (1e-5).

Selection is explicit (``local.kernel``: ``loop`` | ``compiled`` | ``numba`` | ``auto``; :func:`resolve_kernel`;
the numba kernel is :mod:`.kernels_numba`). The
first call for a new dtype/rank compiles (about 50 s on the 2-core development machine; inductor caches the
result on disk, so later processes take a few seconds); ``benchmarks/kernels.py`` measures both kernels.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .kernels import LIFFunction, LowpassFunction, lif_vmap, lowpass_vmap
from .surrogate import Surrogate

#: values of ``local.kernel``
KERNELS = ("loop", "compiled", "numba", "auto")

_compiled: dict[tuple[Any, ...], Callable[..., Any]] = {}


def resolve_kernel(kernel: str, device: torch.device | str = "cpu") -> str:
    """``loop``, ``compiled`` or ``numba`` for ``local.kernel``. ``auto``: on CUDA ``compiled`` (one Triton
    kernel per time loop instead of T launches of several kernels); on CPU ``loop``: neither the compiled nor
    the numba kernel (:mod:`.kernels_numba`) measured >= 1.3x per round at 100 clients on the 2-core machine
    (docs/performance.md has the numbers), so neither pays its first-call compile or load. ``numba`` on a CUDA
    device is refused: it is a CPU kernel."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown local.kernel {kernel!r}; valid: {', '.join(KERNELS)}")
    kind = torch.device(device).type
    if kernel == "auto":
        return "compiled" if kind == "cuda" else "loop"
    if kernel == "numba" and kind != "cpu":
        raise ValueError(f"local.kernel=numba runs on the CPU only, not on {device}; use compiled, loop or auto")
    return kernel


def _lif_forward(x: torch.Tensor, u0: torch.Tensor, beta: torch.Tensor, thr: torch.Tensor, v_r: torch.Tensor,
                 mode: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The LIF recurrence of :class:`~.kernels.LIFFunction` (modes 0 subtract, 1 zero, 2 none), written for the
    compiler: out-of-place steps collected and stacked."""
    u = u0.expand_as(x[0])
    r = (u > thr).to(x.dtype)
    jump = thr - v_r
    spikes, mems = [], []
    for t in range(x.shape[0]):
        if mode == 0:
            u = x[t] + beta * u - r * jump
        elif mode == 1:
            u = x[t] + beta * torch.where(r > 0, v_r, u)
        else:
            u = x[t] + beta * u
        r = (u > thr).to(x.dtype)
        spikes.append(r)
        mems.append(u)
    return torch.stack(spikes), torch.stack(mems)


def _forward_scan(x: torch.Tensor, a: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """``y[t] = x[t] + a * y[t-1]`` (the low-pass filter), for the compiler."""
    y = y0.expand_as(x[0])
    out = []
    for t in range(x.shape[0]):
        y = x[t] + a * y
        out.append(y)
    return torch.stack(out)


def compiled(name: str, *variant: Any) -> Callable[..., Any]:
    """The ``torch.compile``-d ``lif_forward`` / ``forward_scan``, one per ``variant`` (reset
    mode, dtype, ranks: what the compiled code specialises on), built once per process with dynamic shapes, so
    cohorts of changing size reuse one compiled kernel and no variant uses up another's recompile budget."""
    key = (name, *variant)
    if key not in _compiled:
        fn = {"lif_forward": _lif_forward, "forward_scan": _forward_scan}[name]
        _compiled[key] = torch.compile(fn, dynamic=True, fullgraph=True)
    return _compiled[key]


def _ranks(*tensors: torch.Tensor) -> tuple[Any, ...]:
    return (tensors[0].dtype, tensors[0].device.type, *(t.dim() for t in tensors))


class CompiledLIFFunction(LIFFunction):
    """:class:`~.kernels.LIFFunction` with its forward time loop compiled (same inputs, outputs and saved
    tensors); ``setup_context`` and ``backward`` are the parent's, inherited."""

    @staticmethod
    def forward(x, u0, beta, thr, v_r, mode: int, detach_reset: bool, surrogate: Surrogate):  # type: ignore[override]
        return compiled("lif_forward", mode, *_ranks(x, u0, beta, thr, v_r))(x, u0, beta, thr, v_r, mode)

    @staticmethod
    def vmap(info, in_dims, x, u0, beta, thr, v_r, mode, detach_reset, surrogate):  # type: ignore[override]
        return lif_vmap(CompiledLIFFunction, info, in_dims, x, u0, beta, thr, v_r, mode, detach_reset, surrogate)


class CompiledLowpassFunction(LowpassFunction):
    """:class:`~.kernels.LowpassFunction` with its forward time loop compiled; ``setup_context`` and
    ``backward`` are the parent's, inherited."""

    @staticmethod
    def forward(x, y0, a):  # type: ignore[override]
        return compiled("forward_scan", *_ranks(x, a, y0))(x, a, y0)

    @staticmethod
    def vmap(info, in_dims, x, y0, a):  # type: ignore[override]
        return lowpass_vmap(CompiledLowpassFunction, info, in_dims, x, y0, a)
