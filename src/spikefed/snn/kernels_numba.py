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
(:func:`sync_threads`), so the two pools never oversubscribe the cores; numba's threading layer is its own
``workqueue`` pool (unless ``NUMBA_THREADING_LAYER`` says otherwise), whose threads sleep between launches, so
no OpenMP runtime spins beside torch's. Results do not depend on the thread count: every element's time loop
runs in one thread in a fixed order.

The low-pass filter keeps the loop kernel: it runs only on membrane read-outs (``[T, K, B, classes]``), a few
per cent of a round. Values agree with :func:`~.kernels.lif_reference` to float rounding (tests: float64
1e-12, float32 2e-6 relative, ``torch.autograd.gradcheck``, and under vmap against the loop kernel). The first
call per dtype compiles (about 20 s on 2 cores; ``cache=True`` keeps the machine code in ``__pycache__``, so later
processes load it in about a second). Measured per round it is not faster than the loop kernel by the 1.3x that
would make it ``local.kernel=auto``'s CPU choice (docs/performance.md), so it is opt-in. With
``local.kernel=numba`` the cohort engine runs a direct-coded hidden layer through :mod:`.kernels_constant`
instead (one input current for all T; nothing of size T saved for backward).
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

import numpy as np
import torch

from .kernels import LIFFunction, lif_vmap
from .surrogate import Surrogate

try:  # numba is the optional extra ``spikefed[numba]``; without it the kernel says so when selected
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
        return f"numba is not importable ({_IMPORT_ERROR}); pip install 'spikefed[numba]'"
    return None


def sync_threads() -> int:
    """Set numba's thread count to torch's intra-op threads (at most numba's pool size); returns it."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)
    return n


_LAUNCH = threading.Lock()


def _launch(name: str, *args: Any) -> None:
    """Run kernel ``name`` of this module (see :func:`launch_kernel`)."""
    launch_kernel(name, {"forward": _forward, "backward": _backward}, *args)


def launch_kernel(name: str, table: dict[str, Any], *args: Any) -> None:
    """Run the plain-Python kernel ``table[name]``, compiled on first use (``@njit(parallel=True)``, cached),
    with numba's threads = torch's, one launch at a time (the workqueue layer does not nest), and torch's thread
    count as it was (numba's OpenMP layer, where a user picks it, resets it when its pool starts)."""
    kernel = _kernel(name, table)
    with _LAUNCH:
        torch_threads = torch.get_num_threads()
        sync_threads()
        kernel(*args)
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


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
#: the surrogate derivative for other numba kernels (inlined where they call it)
surrogate_derivative = _sg


def param_row_py(arr, p, n):  # type: ignore[no-untyped-def]
    """Elements ``p .. p + n`` of a parameter given per element (length ``A * C``) or as one value (length 1)."""
    if arr.shape[0] == 1:
        return np.full(n, arr[0], dtype=arr.dtype)
    return arr[p:p + n].copy()


param_row = njit(inline="always", cache=True)(param_row_py) if numba is not None else param_row_py


def _forward(x, xt, xa, u0, beta, thr, vr, mode, U, S, ot, oa, T, A, C, blk):  # type: ignore[no-untyped-def]
    """Forward: ``x`` / ``U`` / ``S`` are 1-D storage spans indexed ``t * st_t + a * st_a + c``; the parameters
    are contiguous ``[A * C]``. Every step of a block works on row slices (LLVM vectorises those loops; with
    offsets inside the index it does not) and uses float32 constants (no promotion of float32 arithmetic)."""
    nb = (C + blk - 1) // blk
    zero, one = np.float32(0.0), np.float32(1.0)
    for job in prange(A * nb):
        a = job // nb
        lo = (job - a * nb) * blk
        n = min(lo + blk, C) - lo
        p = a * C + lo
        u = param_row(u0, p, n)
        bb = param_row(beta, p, n)
        th = param_row(thr, p, n)
        v = param_row(vr, p, n)
        jump = th - v
        for t in range(T):
            xb = t * xt + a * xa + lo
            ob = t * ot + a * oa + lo
            xr = x[xb:xb + n]
            ur = U[ob:ob + n]
            sr = S[ob:ob + n]
            if mode == 0:
                for j in range(n):
                    prev = u[j]
                    nu = xr[j] + bb[j] * prev - (jump[j] if prev > th[j] else zero)
                    u[j] = nu
                    ur[j] = nu
                    sr[j] = one if nu > th[j] else zero
            elif mode == 1:
                for j in range(n):
                    nu = xr[j] + bb[j] * (v[j] if u[j] > th[j] else u[j])
                    u[j] = nu
                    ur[j] = nu
                    sr[j] = one if nu > th[j] else zero
            else:
                for j in range(n):
                    nu = xr[j] + bb[j] * u[j]
                    u[j] = nu
                    ur[j] = nu
                    sr[j] = one if nu > th[j] else zero


def _sg_row_py(out, ur, th, n, sid, a, consts):  # type: ignore[no-untyped-def]
    """``out[j] = sg(ur[j] - th[j])`` for a block row, the surrogate branch outside the loop (vectorises);
    atan in the data's dtype with ``consts = [pi^2 a / 2, 2 / a, 1]`` of that dtype (as torch computes it)."""
    if sid == 0:
        c1, c2, one = consts[0], consts[1], consts[2]
        for j in range(n):
            z = ur[j] - th[j]
            out[j] = one / (z * z * c1 + c2)
    else:
        for j in range(n):
            out[j] = _sg(ur[j] - th[j], sid, a)


_sg_row = njit(inline="always", cache=True)(_sg_row_py) if numba is not None else _sg_row_py


def _backward(U, ut, ua, gS, gst, gsa, has_gs, gU, gut, gua, has_gu, sg, sgt, sga, sg0, sid, slope, consts,  # type: ignore[no-untyped-def]
              u0, beta, thr, vr, mode, detach, D, dt, da, gu0, gbeta, gthr, gvr, T, A, C, blk):
    """Reverse-time recurrence (see :func:`~.kernels.lif_backward`): writes ``delta = dL/du`` into ``D`` and the
    per-element sums over T of the parameter gradients into ``gu0 / gbeta / gthr / gvr`` (contiguous
    ``[A * C]``; a length-0 array means "not needed"). ``sid < 0``: the surrogate derivative at ``U - thr`` is
    given in ``sg`` (and at ``u0 - thr`` in ``sg0``). Per block and step, on row slices: the direct term
    ``gU + gS * sg`` in one loop, the recurrence ``delta[t] = direct + A[t+1] delta[t+1]`` in another, and only
    where needed (a reset that depends on ``u``, parameter gradients) the per-step ``A[t]`` and the parameter
    terms."""
    nb = (C + blk - 1) // blk
    need_u0 = gu0.shape[0] > 0
    need_beta = gbeta.shape[0] > 0
    need_thr = gthr.shape[0] > 0
    need_vr = gvr.shape[0] > 0
    a_const = mode != 1 and detach  # A[t] = beta for every t
    per_step = not a_const or need_beta or need_thr or need_vr or need_u0
    for job in prange(A * nb):
        a = job // nb
        lo = (job - a * nb) * blk
        n = min(lo + blk, C) - lo
        p = a * C + lo
        th = param_row(thr, p, n)
        b = param_row(beta, p, n)
        v = param_row(vr, p, n)
        u0r = param_row(u0, p, n)
        dn = np.zeros(n, dtype=D.dtype)  # delta[t + 1]
        an = b.copy()  # A[t + 1] = du[t + 1] / du[t]
        g = np.zeros(n, dtype=D.dtype)  # the direct term gU + gS * sg
        direct = np.zeros(n, dtype=D.dtype)  # gS * sg (also the threshold gradient's own term)
        acc_b = np.zeros(n)
        acc_t = np.zeros(n)
        acc_v = np.zeros(n)
        for t in range(T - 1, -1, -1):
            ub = t * ut + a * ua + lo
            ur = U[ub:ub + n]
            db = t * dt + a * da + lo
            dr = D[db:db + n]
            if sid == 0 and has_gs and not per_step:  # the default: atan, spikes' gradient only, A = beta
                gb = t * gst + a * gsa + lo
                gr = gS[gb:gb + n]
                c1, c2, one = consts[0], consts[1], consts[2]
                if has_gu:
                    gb = t * gut + a * gua + lo
                    gur = gU[gb:gb + n]
                    for j in range(n):
                        z = ur[j] - th[j]
                        d = gr[j] * (one / (z * z * c1 + c2)) + gur[j] + an[j] * dn[j]
                        dn[j] = d
                        dr[j] = d
                else:
                    for j in range(n):
                        z = ur[j] - th[j]
                        d = gr[j] * (one / (z * z * c1 + c2)) + an[j] * dn[j]
                        dn[j] = d
                        dr[j] = d
                continue
            if has_gs:
                if sid >= 0:
                    _sg_row(direct, ur, th, n, sid, slope, consts)
                else:
                    sb = t * sgt + a * sga + lo
                    direct[:] = sg[sb:sb + n]
                gb = t * gst + a * gsa + lo
                gr = gS[gb:gb + n]
                for j in range(n):
                    direct[j] = gr[j] * direct[j]
            if has_gu:
                gb = t * gut + a * gua + lo
                gr = gU[gb:gb + n]
                if has_gs:
                    for j in range(n):
                        g[j] = gr[j] + direct[j]
                else:
                    g[:] = gr
            else:
                g[:] = direct
            for j in range(n):
                d = g[j] + an[j] * dn[j]
                dn[j] = d
                dr[j] = d
            if not per_step:
                continue
            if t > 0:
                upr = U[ub - ut:ub - ut + n]
            else:
                upr = u0r
            if not detach and mode != 2 and sid < 0:
                if t > 0:
                    sb = (t - 1) * sgt + a * sga + lo
                    sgpr = sg[sb:sb + n]
                else:
                    sgpr = param_row(sg0, p, n)
            else:
                sgpr = dn  # unused
            for j in range(n):
                d = dn[j]
                up = upr[j]
                r = 1.0 if up > th[j] else 0.0
                sgp = 0.0
                if not detach and mode != 2:
                    sgp = _sg(up - th[j], sid, slope) if sid >= 0 else sgpr[j]
                if mode == 1:
                    at = b[j] * (1.0 - r)
                    if not detach:
                        at += b[j] * (v[j] - up) * sgp
                elif mode == 0 and not detach:
                    at = b[j] - (th[j] - v[j]) * sgp
                else:
                    at = b[j]
                an[j] = at
                if need_beta:
                    acc_b[j] += d * ((v[j] if r > 0.0 else up) if mode == 1 else up)
                if need_thr:
                    if mode == 0:
                        dthr = -r
                        if not detach:
                            dthr += (th[j] - v[j]) * sgp
                    elif mode == 1 and not detach:
                        dthr = -b[j] * (v[j] - up) * sgp
                    else:
                        dthr = 0.0
                    acc_t[j] += d * dthr - (direct[j] if has_gs else 0.0)
                if need_vr:
                    acc_v[j] += d * (r if mode == 0 else (b[j] * r if mode == 1 else 0.0))
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


def _kernel(name: str, table: dict[str, Any]) -> Any:
    """The compiled kernel ``table[name]`` (built on first use; numba specialises per dtype)."""
    if name not in _jit:
        reason = numba_reason()
        if reason is not None:
            raise RuntimeError(f"local.kernel=numba: {reason}")
        if "NUMBA_THREADING_LAYER" not in os.environ:
            # numba's own thread pool (no OpenMP runtime beside torch's; read at the first parallel launch)
            numba.config.THREADING_LAYER = "workqueue"
        fn = table[name]
        _jit[name] = njit(parallel=True, fastmath=False, cache=True, error_model="numpy")(fn)
    return _jit[name]


def _split(x: torch.Tensor, *others: torch.Tensor | None) -> tuple[torch.Tensor, int, int]:
    """``(x, A, C)``: ``A * C`` = the step's size, ``C`` the longest suffix of the step dims that ``x``
    (``[T, *step]``) and every tensor of ``others`` view as one contiguous run, the rest as one strided axis
    (so a K-major gradient and a contiguous membrane share the split ``[T, K, B * N]`` without a copy). Where no
    split leaves a run of >= 256 elements (or the whole step), ``x`` is made contiguous and the split is
    ``(1, step size)``; an ``other`` that does not fit the split is copied by :func:`_fit`."""
    step = tuple(x.shape[1:])
    m = math.prod(step)
    present = [t for t in others if t is not None]
    for group in ([x, *present], [x]):
        for j in range(len(step) + 1):
            a, c = math.prod(step[:j]), math.prod(step[j:])
            if c < min(m, 256):
                break
            if all(_view3(t, a, c) is not None for t in group):
                return x, a, c
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


def param_array(p: torch.Tensor, step: tuple[int, ...]) -> np.ndarray:
    """A parameter for the kernels: one value (length 1) if it is one number, else per element ``[A * C]``."""
    if p.numel() == 1:
        return p.detach().reshape(1).contiguous().numpy()
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
    params = [param_array(p, step) for p in (u0, beta, thr, v_r)]
    _launch("forward", xs, xt, xa, *params, mode, us, ss, ot, oa, steps, a, c, _BLOCK)
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
    U, a, c = _split(U, gS, gU)  # U was allocated to view as [T, a, c] in the forward: no copy
    D = _alloc_like(U)
    gS, gU = _fit(gS, a, c), _fit(gU, a, c)
    dummy = np.zeros(1, dtype=np.float64 if dtype == torch.float64 else np.float32)
    us, ut, ua = _span(U, a, c)
    ds, dt, da = _span(D, a, c)
    gss, gst, gsa = _span(gS, a, c) if gS is not None else (dummy, 0, 0)
    gus, gut, gua = _span(gU, a, c) if gU is not None else (dummy, 0, 0)
    sgs, sgt, sga = _span(sg, a, c) if sg is not None else (dummy, 0, 0)
    sg0s = param_array(sg0, step) if sg0 is not None else dummy
    slope = float(sur.slope or 0.0)
    consts = np.array([math.pi ** 2 * slope / 2.0, 2.0 / slope if slope else 0.0, 1.0], dtype=dummy.dtype)
    m = a * c
    outs = [np.zeros(m if need else 0, dtype=dummy.dtype) for need in (need_u0, need_beta, need_thr, need_vr)]
    _launch("backward", us, ut, ua, gss, gst, gsa, gS is not None, gus, gut, gua, gU is not None, sgs, sgt, sga,
            sg0s, sid, slope, consts, param_array(u0, step), param_array(beta, step), param_array(thr, step),
            param_array(v_r, step), mode, detach, ds, dt, da, *outs, steps, a, c, _BLOCK)
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
