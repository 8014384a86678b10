"""LIF over a time-constant input (direct coding), forward and backward in one numba pass each, CPU only.

With direct coding the first layer's input current is the same at every step: ``x[t] = z`` for ``z`` of shape
``[*step]`` (the cohort engine computes one product for all T and broadcasts it). :class:`~.kernels.LIFFunction`
then still saves the membrane ``U [T, *step]`` and its backward streams ``U``, the incoming ``dL/dS`` and
several temporaries through memory, writes ``delta = dL/du [T, *step]``, and autograd sums ``delta`` over T for
the broadcast. Here:

- forward reads ``z`` once and writes only the spikes ``S [T, *step]`` (the next layer's input; stored
  step-major ``[step[0], T, *step[1:]]``, the layout in which the cohort's stacked linear reads it as
  ``[K, T*B, N]`` without a copy). Nothing of size T is saved for backward: only ``z`` and the parameters.
- backward recomputes the membrane of a block of neurons into a small scratch buffer (``T x block`` values that
  stay in cache), then runs the reverse-time recurrence ``delta[t] = dL/dS[t] sg(u[t] - thr) + A[t+1]
  delta[t+1]`` and returns ``dL/dz = sum_t delta[t]`` directly: ``dL/dS`` is read once, nothing of size T
  is written.

So a step's hidden layer moves two tensors of size T through memory (``S`` out, ``dL/dS`` in) instead of about
twelve. It covers what the direct-coded hidden layers of a LIF MLP use: reset by subtraction, to ``v_r`` or
none, detached reset, the built-in surrogates, fixed (not trained) decay / threshold / reset offset / initial
state that broadcast to a step, float32 and float64. :func:`constant_input_reason` names what it does not
cover; the caller then expands ``z`` over T and runs the reference kernels. Values agree with
:func:`~.kernels.lif_reference` on the expanded input to float rounding (the sum over T runs in reverse time
order); tests in float64 to 1e-12 in values and gradients.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .kernels_numba import (SURROGATE_IDS, launch_kernel, numba_reason, param_array, param_row,
                            surrogate_derivative)
from .surrogate import Surrogate

try:  # the optional extra spikefed[numba]; numba_reason() says why the kernel cannot run without it
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised only where numba is missing
    njit = prange = None  # type: ignore[assignment,misc]

#: neurons per parallel job: the backward's scratch of T x _BLOCK membrane values stays in L1/L2
_BLOCK = 512


def constant_input_reason(z: torch.Tensor, params: tuple[torch.Tensor, ...], detach_reset: bool,
                          surrogate: Surrogate) -> str | None:
    """``None`` if :func:`lif_constant_input` runs this layer, else why not (the caller falls back)."""
    reason = numba_reason()
    if reason is not None:
        return reason
    if z.device.type != "cpu" or z.dtype not in (torch.float32, torch.float64):
        return f"a float32/float64 CPU input is needed, got {z.dtype} on {z.device}"
    if z.dim() < 2:
        return "the input needs a leading client/batch axis"
    if not detach_reset:
        return "the reset signal carries a gradient (detach_reset=False)"
    if SURROGATE_IDS.get(surrogate.name, -1) < 0 or surrogate.slope is None:
        return f"surrogate {surrogate.name!r} is not one the kernel evaluates"
    if any(p.requires_grad for p in params):
        return "a neuron parameter is trained (its gradient is not computed here)"
    return None


def _forward_py(z, u0, beta, thr, vr, mode, S, T, A, C, blk):  # type: ignore[no-untyped-def]
    """``S[a, t, c] = H(u[t] - thr)`` for the input ``z[a, c]`` held over T steps (``S`` contiguous
    ``[A, T, C]``; parameters of length 1 or ``A * C``)."""
    nb = (C + blk - 1) // blk
    zero, one = np.float32(0.0), np.float32(1.0)
    for job in prange(A * nb):
        a, lo, n, p, zr, u, b, th, v, jump = _block(job, nb, blk, C, z, u0, beta, thr, vr)
        for t in range(T):
            _step(u, u, zr, b, th, v, jump, mode, n)
            o = (a * T + t) * C + lo
            sr = S[o:o + n]
            for j in range(n):
                sr[j] = one if u[j] > th[j] else zero


def _block_py(job, nb, blk, C, z, u0, beta, thr, vr):  # type: ignore[no-untyped-def]
    """Block ``job`` of the ``A x ceil(C / blk)`` grid: its client ``a``, first neuron ``lo``, length ``n``, flat
    offset ``p``, input row, and its own copies of the initial membrane and the parameters (``jump = thr - v_r``)."""
    a = job // nb
    lo = (job - a * nb) * blk
    n = min(lo + blk, C) - lo
    p = a * C + lo
    th = param_row(thr, p, n)
    v = param_row(vr, p, n)
    return a, lo, n, p, z[p:p + n], param_row(u0, p, n), param_row(beta, p, n), th, v, th - v


def _step_py(out, u, zr, b, th, v, jump, mode, n):  # type: ignore[no-untyped-def]
    """One membrane step of a block, ``out[j] = u[t]`` from ``u[j] = u[t-1]`` (``out`` may be ``u``); the mode
    branch outside the element loops and float32 constants (so that LLVM vectorises them and float32 stays
    float32: the backward recomputes exactly the forward's membrane)."""
    zero = np.float32(0.0)
    if mode == 0:
        for j in range(n):
            prev = u[j]
            out[j] = zr[j] + b[j] * prev - (jump[j] if prev > th[j] else zero)
    elif mode == 1:
        for j in range(n):
            prev = u[j]
            out[j] = zr[j] + b[j] * (v[j] if prev > th[j] else prev)
    else:
        for j in range(n):
            out[j] = zr[j] + b[j] * u[j]


def _backward_py(z, u0, beta, thr, vr, mode, gS, gst, gsa, sid, slope, consts, G, T, A, C, blk):  # type: ignore[no-untyped-def]
    """``G[a, c] = sum_t delta[t]`` with ``delta[t] = gS[t] sg(u[t] - thr) + A[t+1] delta[t+1]`` (``gS`` a
    storage span indexed ``t * gst + a * gsa + c``); the membrane is recomputed per block into a scratch."""
    nb = (C + blk - 1) // blk
    for job in prange(A * nb):
        a, lo, n, p, zr, u, b, th, v, jump = _block(job, nb, blk, C, z, u0, beta, thr, vr)
        Ub = np.empty((T, n), dtype=z.dtype)
        _step(Ub[0], u, zr, b, th, v, jump, mode, n)
        for t in range(1, T):
            _step(Ub[t], Ub[t - 1], zr, b, th, v, jump, mode, n)
        dn = np.zeros(n, dtype=z.dtype)  # delta[t + 1]
        an = b.copy()  # A[t + 1]
        acc = np.zeros(n, dtype=z.dtype)
        c1, c2, one = consts[0], consts[1], consts[2]
        for t in range(T - 1, -1, -1):
            gb = t * gst + a * gsa + lo
            gr = gS[gb:gb + n]
            ur = Ub[t]
            if sid == 0:
                for j in range(n):
                    q = ur[j] - th[j]
                    d = gr[j] * (one / (q * q * c1 + c2)) + an[j] * dn[j]
                    dn[j] = d
                    acc[j] += d
            else:
                for j in range(n):
                    d = gr[j] * surrogate_derivative(ur[j] - th[j], sid, slope) + an[j] * dn[j]
                    dn[j] = d
                    acc[j] += d
            if mode == 1:  # A[t] = beta (1 - r[t]), r[t] = H(u[t-1] - thr)
                if t > 0:
                    pr = Ub[t - 1]
                    for j in range(n):
                        an[j] = 0.0 if pr[j] > th[j] else b[j]
                else:
                    u0r = param_row(u0, p, n)
                    for j in range(n):
                        an[j] = 0.0 if u0r[j] > th[j] else b[j]
        for j in range(n):
            G[p + j] = acc[j]


_step = njit(inline="always", cache=True)(_step_py) if njit is not None else _step_py
_block = njit(inline="always", cache=True)(_block_py) if njit is not None else _block_py
_KERNELS: dict[str, Any] = {"const_forward": _forward_py, "const_backward": _backward_py}


def _span(t: torch.Tensor, a: int, c: int) -> tuple[np.ndarray, int, int] | None:
    """``t [T, *step]`` as a storage span with its T and A strides when it views as ``[T, a, c]`` with a
    contiguous last axis, else None."""
    try:
        v = t.view(t.shape[0], a, c)
    except RuntimeError:
        return None
    if v.stride(2) != 1 and c != 1:
        return None
    span = 1 + (v.shape[0] - 1) * v.stride(0) + (a - 1) * v.stride(1) + (c - 1)
    return torch.as_strided(v.detach(), (span,), (1,), v.storage_offset()).numpy(), v.stride(0), v.stride(1)


class ConstantInputLIFFunction(torch.autograd.Function):
    """``(z [*step], u0, beta, thr, v_r) -> spikes [T, *step]`` of the LIF driven by ``z`` at every step."""

    @staticmethod
    def forward(z, u0, beta, thr, v_r, steps: int, mode: int, surrogate: Surrogate):  # type: ignore[override]
        step = tuple(z.shape)
        a, c = step[0], math.prod(step[1:])
        S = torch.empty((a, steps, *step[1:]), dtype=z.dtype)
        if S.numel():
            zc = z.detach().contiguous()
            params = [param_array(p, step) for p in (u0, beta, thr, v_r)]
            launch_kernel("const_forward", _KERNELS, zc.view(-1).numpy(), *params, mode, S.view(-1).numpy(), steps,
                          a, c, _BLOCK)
        return S.transpose(0, 1)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        z, u0, beta, thr, v_r, steps, mode, surrogate = inputs
        ctx.save_for_backward(z, u0, beta, thr, v_r)
        ctx.steps, ctx.mode, ctx.surrogate = steps, mode, surrogate

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gS):  # type: ignore[override]
        z, u0, beta, thr, v_r = ctx.saved_tensors
        if gS is None or not ctx.needs_input_grad[0]:
            return (None,) * 8
        step = tuple(z.shape)
        a, c = step[0], math.prod(step[1:])
        G = torch.empty(step, dtype=z.dtype)
        if G.numel():
            span = _span(gS, a, c)
            if span is None:
                gS = gS.contiguous()
                span = _span(gS, a, c)
            assert span is not None
            sur = ctx.surrogate
            slope = float(sur.slope)
            consts = np.array([math.pi ** 2 * slope / 2.0, 2.0 / slope if slope else 0.0, 1.0],
                              dtype=np.float64 if z.dtype == torch.float64 else np.float32)
            params = [param_array(p, step) for p in (u0, beta, thr, v_r)]
            zc = z.detach().contiguous().view(-1).numpy()
            launch_kernel("const_backward", _KERNELS, zc, *params, ctx.mode, *span, SURROGATE_IDS[sur.name], slope,
                          consts, G.view(-1).numpy(), ctx.steps, a, c, _BLOCK)
        return G, None, None, None, None, None, None, None


def lif_constant_input(z: torch.Tensor, steps: int, u0: torch.Tensor, beta: torch.Tensor, thr: torch.Tensor,
                       v_r: torch.Tensor, mode: int, surrogate: Surrogate) -> torch.Tensor:
    """Spikes ``[T, *step]`` (``T = steps``) of the LIF driven by ``z [*step]`` at every step (parameters
    broadcast to a step; ``mode`` 0 subtract, 1 zero, 2 none). Check :func:`constant_input_reason` first."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return ConstantInputLIFFunction.apply(z, u0, beta, thr, v_r, steps, mode, surrogate)
