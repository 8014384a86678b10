"""Fused CPU LIF kernel compiled with numba: the whole time loop, forward and backward, in one native call.

:class:`~.kernels.LIFFunction` runs T steps of a few elementwise torch calls each, and every call streams the
whole ``[K, B, N]`` slice through memory; its backward does the same in reverse. Here each direction is one
numba function (``@njit(parallel=True)``, no ``fastmath``): the neurons are cut into blocks of ``_BLOCK``
elements, the blocks run in parallel (``prange``), and inside a block the loop over T carries the membrane (or,
backward, the error ``delta``) in a block-sized scratch array, so every element of ``x``, ``U`` and ``S`` is
read or written exactly once per pass.

Forward writes the spikes ``S`` and the membrane ``U`` (the pre-reset potential, the only tensor the backward
keeps). Backward is the reverse-time recurrence of :func:`~.kernels.lif_backward` (the module docstring of
:mod:`.kernels` has the equations), with the surrogate derivative evaluated inside the loop for the built-in
surrogates (a callable surrogate is evaluated by torch first) and the per-neuron parameter gradients (decay,
threshold, reset offset, initial state) accumulated per element in the same pass, then summed to each
parameter's shape. Reset by subtraction, to ``v_r`` and none, detached or not; any ``u0`` / ``beta`` /
``thr`` / ``v_r`` that broadcasts to a step (scalars, per neuron, per client ``[K, 1, N]``), float32 and
float64. Under ``torch.func.vmap`` it uses the shared rule :func:`~.kernels.lif_vmap` (the client axis becomes
part of the neuron axis; LIF is elementwise across neurons).

Tensors are handed to numba without copies: a ``[T, *step]`` tensor is viewed as ``[T, A, C]`` (step dims split
so that ``C`` is contiguous; a time-constant input, stride 0 over T, stays one), and the kernel indexes its
storage with the strides. Threads: numba's thread count is set to torch's before every call
(:func:`sync_threads`), so the two pools never oversubscribe the cores.

The low-pass filter keeps the loop kernel: it runs only on membrane read-outs (``[T, K, B, classes]``), a few
per cent of a round. Values agree with :func:`~.kernels.lif_reference` to float rounding (tests: float64
1e-12, float32 1e-5, ``torch.autograd.gradcheck``, and under vmap against the loop kernel). The first call per
dtype compiles (a few seconds; ``cache=True`` keeps the machine code in ``__pycache__`` for later processes).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .kernels import LIFFunction, lif_vmap
from .surrogate import Surrogate

try:  # numba is a requirement of spikefed; the guard keeps an import error readable
    import numba
    from numba import njit, prange
except ImportError as _e:  # pragma: no cover - exercised only where numba is missing
    numba = None
    _IMPORT_ERROR: str | None = str(_e)
else:
    _IMPORT_ERROR = None

#: elements per parallel job (a block's scratch arrays stay in L1/L2; enough jobs for any core count)
_BLOCK = 2048
#: the built-in surrogates the kernel evaluates itself (:mod:`.surrogate`); others are computed by torch
SURROGATE_IDS = {"atan": 0, "fast_sigmoid": 1, "sigmoid": 2, "triangular": 3, "straight_through": 4}


def numba_reason() -> str | None:
    """``None`` if the numba kernel can run here, else why not."""
    if _IMPORT_ERROR is not None:
        return f"numba is not importable ({_IMPORT_ERROR}); pip install 'numba>=0.59'"
    return None


def sync_threads() -> int:
    """Set numba's thread count to torch's intra-op threads (at most numba's pool size); returns it."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return n


def _sg_py(z: float, sid: int, a: float) -> float:
    """The surrogate derivative ``dS/dz`` of :mod:`.surrogate` (same formulas, same order of operations)."""
    if sid == 0:  # atan: 1 / (2/a + (pi^2 a / 2) z^2)
        return 1.0 / (z * z * (math.pi ** 2 * a / 2.0) + 2.0 / a)
    if sid == 1:  # fast sigmoid: 1 / (1 + k|z|)^2
        q = abs(z) * a + 1.0
        return 1.0 / (q * q)
    if sid == 2:  # sigmoid: k sig(kz) sig(-kz) = k e / (1 + e)^2 with e = exp(-k|z|)
        e = math.exp(-abs(z) * a)
        return a * e / ((1.0 + e) * (1.0 + e))
    if sid == 3:  # triangular: a max(0, 1 - a|z|)
        return max(0.0, 1.0 - abs(z) * a) * a
    return a  # straight-through


_sg = njit(inline="always", cache=True)(_sg_py) if numba is not None else _sg_py


def _forward(x, xt, xa, u0, beta, thr, vr, mode, U, S, ot, oa, T, A, C, blk):  # type: ignore[no-untyped-def]
    """Forward: ``x`` / ``U`` / ``S`` are 1-D storage spans indexed ``t * st_t + a * st_a + c``; the parameters
    are contiguous ``[A * C]``."""
    nb = (C + blk - 1) // blk
    for job in prange(A * nb):
        a = job // nb
        lo = (job - a * nb) * blk
        n = min(lo + blk, C) - lo
        p = a * C + lo
        u = u0[p:p + n].copy()
        bb = beta[p:p + n]
        th = thr[p:p + n]
        v = vr[p:p + n]
        for t in range(T):
            xb = t * xt + a * xa + lo
            ob = t * ot + a * oa + lo
            if mode == 0:
                for j in range(n):
                    prev = u[j]
                    nu = x[xb + j] + bb[j] * prev
                    if prev > th[j]:
                        nu = nu - (th[j] - v[j])
                    u[j] = nu
                    U[ob + j] = nu
                    S[ob + j] = 1.0 if nu > th[j] else 0.0
            elif mode == 1:
                for j in range(n):
                    prev = u[j]
                    nu = x[xb + j] + bb[j] * (v[j] if prev > th[j] else prev)
                    u[j] = nu
                    U[ob + j] = nu
                    S[ob + j] = 1.0 if nu > th[j] else 0.0
            else:
                for j in range(n):
                    nu = x[xb + j] + bb[j] * u[j]
                    u[j] = nu
                    U[ob + j] = nu
                    S[ob + j] = 1.0 if nu > th[j] else 0.0


def _backward(U, ut, ua, gS, gst, gsa, has_gs, gU, gut, gua, has_gu, sg, sgt, sga, sg0, sid, slope,  # type: ignore[no-untyped-def]
              u0, beta, thr, vr, mode, detach, D, dt, da, gu0, gbeta, gthr, gvr, T, A, C, blk):
    """Reverse-time recurrence (see :func:`~.kernels.lif_backward`): writes ``delta = dL/du`` into ``D`` and the
    per-element sums over T of the parameter gradients into ``gu0 / gbeta / gthr / gvr`` (contiguous
    ``[A * C]``; a length-0 array means "not needed"). ``sid < 0``: the surrogate derivative at ``U - thr`` is
    given in ``sg`` (and at ``u0 - thr`` in ``sg0``)."""
    nb = (C + blk - 1) // blk
    need_u0 = gu0.shape[0] > 0
    need_beta = gbeta.shape[0] > 0
    need_thr = gthr.shape[0] > 0
    need_vr = gvr.shape[0] > 0
    for job in prange(A * nb):
        a = job // nb
        lo = (job - a * nb) * blk
        n = min(lo + blk, C) - lo
        p = a * C + lo
        dn = np.zeros(n)  # delta[t + 1]
        an = np.zeros(n)  # A[t + 1] = du[t + 1] / du[t]
        acc_b = np.zeros(n)
        acc_t = np.zeros(n)
        acc_v = np.zeros(n)
        for t in range(T - 1, -1, -1):
            ub = t * ut + a * ua + lo
            for j in range(n):
                i = p + j
                th = thr[i]
                b = beta[i]
                v = vr[i]
                ucur = U[ub + j]
                d = an[j] * dn[j]
                direct = 0.0
                if has_gu:
                    d += gU[t * gut + a * gua + lo + j]
                if has_gs:
                    if sid >= 0:
                        s_t = _sg(ucur - th, sid, slope)
                    else:
                        s_t = sg[t * sgt + a * sga + lo + j]
                    direct = gS[t * gst + a * gsa + lo + j] * s_t
                    d += direct
                D[t * dt + a * da + lo + j] = d
                up = U[ub - ut + j] if t > 0 else u0[i]
                r = 1.0 if up > th else 0.0
                sgp = 0.0
                if not detach and mode != 2:
                    if sid >= 0:
                        sgp = _sg(up - th, sid, slope)
                    elif t > 0:
                        sgp = sg[(t - 1) * sgt + a * sga + lo + j]
                    else:
                        sgp = sg0[i]
                if mode == 1:
                    at = b * (1.0 - r)
                    if not detach:
                        at += b * (v - up) * sgp
                elif mode == 0 and not detach:
                    at = b - (th - v) * sgp
                else:
                    at = b
                an[j] = at
                dn[j] = d
                if need_beta:
                    acc_b[j] += d * ((v if r > 0.0 else up) if mode == 1 else up)
                if need_thr:
                    if mode == 0:
                        dthr = -r
                        if not detach:
                            dthr += (th - v) * sgp
                    elif mode == 1 and not detach:
                        dthr = -b * (v - up) * sgp
                    else:
                        dthr = 0.0
                    acc_t[j] += d * dthr - direct
                if need_vr:
                    acc_v[j] += d * (r if mode == 0 else (b * r if mode == 1 else 0.0))
        for j in range(n):
            if need_u0:
                gu0[p + j] = an[j] * dn[j]
            if need_beta:
                gbeta[p + j] = acc_b[j]
            if need_thr:
                gthr[p + j] = acc_t[j]
            if need_vr:
                gvr[p + j] = acc_v[j]


_jit: dict[str, Any] = {}


def _kernel(name: str) -> Any:
    """The compiled ``forward`` / ``backward`` (built on first use; numba specialises per dtype)."""
    if name not in _jit:
        reason = numba_reason()
        if reason is not None:
            raise RuntimeError(f"local.kernel=numba: {reason}")
        fn = {"forward": _forward, "backward": _backward}[name]
        _jit[name] = njit(parallel=True, fastmath=False, cache=True, error_model="numpy")(fn)
    return _jit[name]


def _split(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """``(x, A, C)``: ``A * C`` = the step's size, ``C`` the longest suffix of the step dims that ``x``
    (``[T, *step]``) views as one contiguous run, the rest as one strided axis; ``x`` is made contiguous where
    that run would be short (< 256 elements and not the whole step)."""
    step = tuple(x.shape[1:])
    m = math.prod(step)
    for j in range(len(step) + 1):
        a, c = math.prod(step[:j]), math.prod(step[j:])
        if _view3(x, a, c) is not None:
            if c >= min(m, 256):
                return x, a, c
            break
    return x.contiguous(), 1, m


def _fit(t: torch.Tensor | None, a: int, c: int) -> torch.Tensor | None:
    """``t`` itself if it views as ``[T, a, c]`` with a contiguous last axis, else a contiguous copy."""
    return t if t is None or _view3(t, a, c) is not None else t.contiguous()


def _view3(t: torch.Tensor, a: int, c: int) -> torch.Tensor | None:
    try:
        v = t.view(t.shape[0], a, c)
    except RuntimeError:
        return None
    return v if (v.stride(2) == 1 or c == 1) else None


def _span(t: torch.Tensor, a: int, c: int) -> tuple[np.ndarray, int, int]:
    """The numpy view of ``t``'s storage span and the T / A strides of ``t`` seen as ``[T, a, c]``."""
    v = _view3(t, a, c)
    if v is None:  # the caller made it contiguous
        raise AssertionError("tensor does not view as [T, A, C]")
    st_t, st_a = v.stride(0), v.stride(1)
    span = 1 + (v.shape[0] - 1) * st_t + (a - 1) * st_a + (c - 1)
    flat = torch.as_strided(v.detach(), (span,), (1,), v.storage_offset())
    return flat.numpy(), st_t, st_a


def _param(p: torch.Tensor, step: tuple[int, ...]) -> np.ndarray:
    return p.detach().expand(step).contiguous().view(-1).numpy()


def _check(x: torch.Tensor) -> None:
    if x.device.type != "cpu":
        raise ValueError(f"local.kernel=numba runs on the CPU; got a tensor on {x.device} (use loop or compiled)")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"local.kernel=numba supports float32 and float64, got {x.dtype}")


def _alloc_like(x: torch.Tensor) -> torch.Tensor:
    """A new ``[T, *step]`` tensor in ``x``'s memory layout where that is dense (K-major stacks stay K-major, so
    the next layer's matmul reads them without a copy), else contiguous (``torch.empty_like``'s rule): either
    views as ``[T, A, C]`` for ``x``'s split."""
    return torch.empty_like(x)


def numba_lif_forward(x: torch.Tensor, u0: torch.Tensor, beta: torch.Tensor, thr: torch.Tensor,
                      v_r: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes and membrane ``[T, *step]`` of the LIF recurrence (modes 0 subtract, 1 zero, 2 none)."""
    _check(x)
    steps, step = x.shape[0], tuple(x.shape[1:])
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype), torch.empty(x.shape, dtype=x.dtype)
    x, a, c = _split(x)
    S, U = _alloc_like(x), _alloc_like(x)  # view as [T, a, c] too: x's own layout or contiguous
    xs, xt, xa = _span(x, a, c)
    us, ot, oa = _span(U, a, c)
    ss, _, _ = _span(S, a, c)
    sync_threads()
    _kernel("forward")(xs, xt, xa, _param(u0, step), _param(beta, step), _param(thr, step), _param(v_r, step),
                       mode, us, ss, ot, oa, steps, a, c, _BLOCK)
    return S, U


def _grad_sum(g: np.ndarray, step: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    t = torch.from_numpy(g).view(step)
    if t.shape == like.shape:
        return t
    return t.sum_to_size(like.shape) if like.dim() > 0 else t.sum()


def numba_lif_backward(ctx: Any, gS: torch.Tensor | None, gU: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """The backward of :class:`NumbaLIFFunction` (same outputs as :func:`~.kernels.lif_backward`)."""
    U, u0, beta, thr, v_r = ctx.saved_tensors
    mode, detach, sur = ctx.mode, ctx.detach_reset, ctx.surrogate
    need_x, need_u0, need_beta, need_thr, need_vr = ctx.needs_input_grad[:5]
    if gS is None and gU is None:
        return (None,) * 8
    steps, step = U.shape[0], tuple(U.shape[1:])
    dtype = U.dtype
    sid = SURROGATE_IDS.get(sur.name, -1) if sur.slope is not None else -1
    sg = sg0 = None
    if sid < 0 and (gS is not None or (not detach and mode != 2)):
        sg = sur.derivative((U - thr).contiguous())
        sg0 = sur.derivative(u0.expand(step) - thr)
    U, a, c = _split(U)  # U was allocated to view as [T, a, c] in the forward: no copy
    D = _alloc_like(U)
    gS, gU = _fit(gS, a, c), _fit(gU, a, c)
    dummy = np.zeros(1, dtype=np.float64 if dtype == torch.float64 else np.float32)
    us, ut, ua = _span(U, a, c)
    ds, dt, da = _span(D, a, c)
    gss, gst, gsa = _span(gS, a, c) if gS is not None else (dummy, 0, 0)
    gus, gut, gua = _span(gU, a, c) if gU is not None else (dummy, 0, 0)
    sgs, sgt, sga = _span(sg, a, c) if sg is not None else (dummy, 0, 0)
    sg0s = _param(sg0, step) if sg0 is not None else dummy
    m = a * c
    outs = [np.zeros(m if need else 0, dtype=dummy.dtype) for need in (need_u0, need_beta, need_thr, need_vr)]
    sync_threads()
    _kernel("backward")(us, ut, ua, gss, gst, gsa, gS is not None, gus, gut, gua, gU is not None, sgs, sgt, sga,
                        sg0s, sid, float(sur.slope or 0.0), _param(u0, step), _param(beta, step), _param(thr, step),
                        _param(v_r, step), mode, detach, ds, dt, da, *outs, steps, a, c, _BLOCK)
    grads = [(_grad_sum(g, step, p) if need else None)
             for g, need, p in zip(outs, (need_u0, need_beta, need_thr, need_vr), (u0, beta, thr, v_r))]
    return (D if need_x else None, *grads, None, None, None)


class NumbaLIFFunction(LIFFunction):
    """:class:`~.kernels.LIFFunction` with both time loops in numba (same inputs, outputs and saved tensor)."""

    @staticmethod
    def forward(x, u0, beta, thr, v_r, mode: int, detach_reset: bool, surrogate: Surrogate):  # type: ignore[override]
        return numba_lif_forward(x, u0, beta, thr, v_r, mode)

    @staticmethod
    def vmap(info, in_dims, x, u0, beta, thr, v_r, mode, detach_reset, surrogate):  # type: ignore[override]
        return lif_vmap(NumbaLIFFunction, info, in_dims, x, u0, beta, thr, v_r, mode, detach_reset, surrogate)

    @staticmethod
    def backward(ctx, gS, gU):  # type: ignore[override]
        return numba_lif_backward(ctx, gS, gU)
