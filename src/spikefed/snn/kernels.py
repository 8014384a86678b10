"""Multi-step neuron kernels: a fused path and a plain step-by-step reference.

The leaky integrate-and-fire (LIF) recurrence follows the seed documents (discretised
``tau dV/dt = -(V - V_rest) + R I`` with ``beta = exp(-dt/tau)``)::

    r[t] = H(u[t-1] - thr)                         reset signal: did the neuron spike at t-1?
    u[t] = beta * u[t-1] + x[t] - r[t] * (thr - v_r)           reset by subtraction   (mode "subtract")
    u[t] = beta * ((1 - r[t]) * u[t-1] + r[t] * v_r) + x[t]    reset to v_r           (mode "zero")
    u[t] = beta * u[t-1] + x[t]                                no reset               (mode "none")
    s[t] = H(u[t] - thr)                           spike (exact Heaviside forward, surrogate backward)

``v_r`` is the (optionally trainable) reset offset, 0 by default, so "subtract" with ``v_r = 0`` is
``u[t] = beta u[t-1] + x[t] - S[t-1] thr`` and "zero" sets the potential to 0, as in snnTorch's ``Leaky``.
By default the reset signal ``r`` is detached (it carries no gradient), the usual practice.

:class:`LIFFunction` runs all T steps in one call. Its backward saves only the membrane potential ``U`` of
shape ``[T, ...]`` (before the next step's reset; spikes and reset signals are recomputed from it) and runs a
reverse-time loop of one fused multiply-add per step::

    delta[t] = dL/du[t] = gU[t] + gS[t] * sg(u[t] - thr) + A[t+1] * delta[t+1],
    A[t] = du[t]/du[t-1] = beta                         (subtract / none, detached reset)
                         = beta * (1 - r[t])            (zero, detached reset)
                           + reset-path terms when the reset is not detached.

:func:`lif_reference` is the same recurrence written step by step on autograd; tests check that both agree
in values and gradients. :class:`LowpassFunction` is the fused first-order filter ``y[t] = a y[t-1] + x[t]``
used for current-based synapses and leaky read-outs.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch

from .surrogate import Surrogate, heaviside

ResetMode = Literal["subtract", "zero", "none"]
RESET_MODES: tuple[str, ...] = ("subtract", "zero", "none")
_MODE_ID = {"subtract": 0, "zero": 1, "none": 2}
#: the kernels' integer id of each reset mode (0 subtract, 1 zero, 2 none)
RESET_IDS = _MODE_ID


def _reduce_to(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum a broadcast gradient back to the shape of ``like``."""
    if grad.shape == like.shape:
        return grad
    return grad.sum_to_size(like.shape) if like.dim() > 0 else grad.sum()


def vmap_sequence(k: int, x_dim: int | None, x: torch.Tensor) -> tuple[torch.Tensor, Callable[..., torch.Tensor]]:
    """The batching rule shared by the fused kernels: under ``torch.func.vmap`` over K copies (clients), the
    sequence ``x`` (logical ``[T, *step]``, copy axis at ``x_dim``) becomes ``[T, K, *step]`` and ``lift(p, dim)``
    turns a per-copy operand (logical shape broadcasting to ``step``) into ``[K, 1, ..., *shape]``, so the kernel
    runs once on the physical tensors and its own broadcasting (and ``_reduce_to`` in backward) does the rest.
    The arithmetic per element is that of the unbatched call, so the numbers are the same."""
    if x_dim is None:
        xs = x.unsqueeze(1).expand(x.shape[0], k, *x.shape[1:])
    else:
        xs = x.movedim(x_dim, 1)
        if xs.stride(0) != 0:  # dense [T, K, ...] memory for the per-step loop (a time-constant view stays one)
            xs = xs.contiguous()
    step_dims = xs.dim() - 2

    def lift(p: torch.Tensor, dim: int | None) -> torch.Tensor:
        if dim is None:
            return p
        p = p.movedim(dim, 0)
        return p.reshape(k, *([1] * (step_dims - (p.dim() - 1))), *p.shape[1:])

    return xs, lift


def lif_vmap(fn: Any, info: Any, in_dims: tuple, x: torch.Tensor, u0: Any, beta: Any, thr: Any, v_r: Any,
             mode: int, detach_reset: bool, surrogate: Any
             ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[int, int]]:
    """The vmap rule of a LIF autograd function ``fn`` (:class:`LIFFunction` or a compiled variant): one fused call
    of ``fn`` on ``[T, K, ...]`` with the per-copy parameters lifted (:func:`vmap_sequence`); outputs batched on 1."""
    xs, lift = vmap_sequence(info.batch_size, in_dims[0], x)
    S, U = fn.apply(xs, lift(u0, in_dims[1]), lift(beta, in_dims[2]), lift(thr, in_dims[3]), lift(v_r, in_dims[4]),
                    mode, detach_reset, surrogate)
    return (S, U), (1, 1)


def lowpass_vmap(fn: Any, info: Any, in_dims: tuple, x: torch.Tensor, y0: Any, a: Any) -> tuple[torch.Tensor, int]:
    """The vmap rule of a low-pass autograd function ``fn`` (see :func:`lif_vmap`)."""
    xs, lift = vmap_sequence(info.batch_size, in_dims[0], x)
    return fn.apply(xs, lift(y0, in_dims[1]), lift(a, in_dims[2])), 1


def sequence_buffer(x: torch.Tensor) -> torch.Tensor:
    """An output buffer shaped like the sequence ``x [T, ...]``: ``x``'s own layout (``empty_like``), except for a
    time-constant view (stride 0 over T, as the cohort engine's direct input) of a stacked ``[T, K, B, N]``
    sequence: then in ``[K, T, ...]`` memory, the layout in which the next stacked linear reads it as
    ``[K, T*B, N]`` without a transposing copy, and in which its gradient comes back. Values do not depend on it."""
    if x.dim() >= 4 and x.stride(0) == 0:
        return torch.empty((x.shape[1], x.shape[0], *x.shape[2:]), dtype=x.dtype, device=x.device).transpose(0, 1)
    return torch.empty_like(x)


class LIFFunction(torch.autograd.Function):
    """Fused multi-step LIF: ``(x [T,...], u0, beta, thr, v_r) -> (spikes [T,...], membrane [T,...])``."""

    @staticmethod
    def forward(x, u0, beta, thr, v_r, mode: int, detach_reset: bool, surrogate: Surrogate):  # type: ignore[override]
        steps = x.shape[0]
        U = sequence_buffer(x)
        S = sequence_buffer(x)
        jump = thr - v_r  # subtract mode: the potential drops by thr - v_r after a spike
        u = u0.expand_as(x[0])
        r = heaviside(u - thr)  # reset signal for step 0, from the initial state
        for t in range(steps):
            ut = U[t]
            if mode == 0:
                torch.addcmul(x[t], beta, u, out=ut)
                ut.addcmul_(r, jump, value=-1.0)
            elif mode == 1:
                torch.addcmul(x[t], beta, torch.where(r > 0, v_r, u), out=ut)
            else:
                torch.addcmul(x[t], beta, u, out=ut)
            torch.gt(ut, thr, out=S[t])
            r = S[t]
            u = ut
        return S, U

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, u0, beta, thr, v_r, mode, detach_reset, surrogate = inputs
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(output[1], u0, beta, thr, v_r)
        ctx.mode = mode
        ctx.detach_reset = detach_reset
        ctx.surrogate = surrogate

    @staticmethod
    def vmap(info, in_dims, x, u0, beta, thr, v_r, mode, detach_reset, surrogate):  # type: ignore[override]
        """Under ``torch.func.vmap`` (K stacked copies): one fused call on ``[T, K, ...]`` with the per-copy
        parameters broadcast as ``[K, 1, ..., *shape]``; see :func:`vmap_sequence`."""
        return lif_vmap(LIFFunction, info, in_dims, x, u0, beta, thr, v_r, mode, detach_reset, surrogate)

    @staticmethod
    def backward(ctx, gS, gU):  # type: ignore[override]
        return lif_backward(ctx, gS, gU, reverse_scan_)


def reverse_scan_(delta: torch.Tensor, A: torch.Tensor, per_step: bool) -> torch.Tensor:
    """In place, ``delta[t] += A[t+1] * delta[t+1]`` from ``t = T-2`` down to 0 (``A`` per step ``[T, ...]``
    if ``per_step``, else one tensor broadcasting to a step); the reference loop of the backward passes."""
    for t in range(delta.shape[0] - 2, -1, -1):
        delta[t].addcmul_(A[t + 1] if per_step else A, delta[t + 1])
    return delta


def lif_backward(ctx, gS: torch.Tensor | None, gU: torch.Tensor | None,  # type: ignore[no-untyped-def]
                 scan: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
    """The backward of the fused LIF (see the module docstring) with the reverse-time recurrence done by
    ``scan(delta, A, per_step)`` (:func:`reverse_scan_`, or a compiled one in :mod:`.compiled`)."""
    U, u0, beta, thr, v_r = ctx.saved_tensors
    mode, detach_reset, sur = ctx.mode, ctx.detach_reset, ctx.surrogate
    steps = U.shape[0]
    need_x, need_u0, need_beta, need_thr, need_vr = ctx.needs_input_grad[:5]

    if gS is None and gU is None:
        return (None,) * 8
    need_sg_after = need_thr and gS is not None
    direct = None
    if gS is None:
        sg = None
        delta = gU.clone(memory_format=torch.contiguous_format)
    else:
        sg = sur.derivative_(U - thr)  # dS[t]/du[t], computed in a fresh buffer
        direct = gS * sg if need_sg_after else None  # dL/ds * ds/du, kept for the threshold gradient
        delta = sg.mul_(gS) if direct is None else direct.clone()
        if gU is not None:
            delta += gU
    U_prev = R = None
    if mode == 1 or not detach_reset or need_beta or need_thr or need_vr:
        U_prev = torch.cat([u0.expand_as(U[0]).unsqueeze(0), U[:-1]], 0)
        R = heaviside(U_prev - thr)  # reset signal r[t]

    # A[t] = du[t]/du[t-1]
    if mode == 1:
        A = beta * (1.0 - R)
        if not detach_reset:
            A = A + beta * (v_r - U_prev) * sur.derivative_(U_prev - thr)
    elif mode == 0 and not detach_reset:
        A = beta - (thr - v_r) * sur.derivative_(U_prev - thr)
    else:
        A = beta.expand_as(U[0])  # constant over time
    per_step = A.dim() == U.dim() and A.shape[0] == steps

    # reverse-time loop: delta[t] += A[t+1] * delta[t+1], in place on dense memory: T-major, or client-major as
    # the buffers of a time-constant stacked input (sequence_buffer) and the gradients that come back to them
    if not (delta.is_contiguous() or (delta.dim() >= 2 and delta.transpose(0, 1).is_contiguous())):
        delta = delta.contiguous()
    delta = scan(delta, A, per_step)

    g_x = delta if need_x else None
    g_u0 = None
    if need_u0:
        g_u0 = _reduce_to((A[0] if per_step else A) * delta[0], u0)
    g_beta = g_thr = g_vr = None
    if need_beta:
        if mode == 1:
            pre = (1.0 - R) * U_prev + R * v_r
        else:
            pre = U_prev
        g_beta = _reduce_to(delta * pre, beta)
    if need_thr or need_vr:
        # du[t]/dthr and du[t]/dv_r through the reset; dS/dthr = -sg
        if mode == 0:
            du_dthr = -R
            du_dvr = R
            if not detach_reset:
                du_dthr = du_dthr + (thr - v_r) * sur.derivative_(U_prev - thr)
        elif mode == 1:
            du_dvr = beta * R
            du_dthr = torch.zeros_like(U)
            if not detach_reset:
                du_dthr = -beta * (v_r - U_prev) * sur.derivative_(U_prev - thr)
        else:
            du_dthr = torch.zeros_like(U)
            du_dvr = torch.zeros_like(U)
        if need_thr:
            g_thr = delta * du_dthr
            if direct is not None:
                g_thr -= direct
            g_thr = _reduce_to(g_thr, thr)
        if need_vr:
            g_vr = _reduce_to(delta * du_dvr, v_r)
    return g_x, g_u0, g_beta, g_thr, g_vr, None, None, None


def _as_tensor(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(dtype=like.dtype)
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)


def lif_fused(
    x: torch.Tensor,
    u0: torch.Tensor | None,
    beta: float | torch.Tensor,
    threshold: float | torch.Tensor,
    reset_value: float | torch.Tensor = 0.0,
    reset: ResetMode = "subtract",
    detach_reset: bool = True,
    surrogate: Surrogate | None = None,
    kernel: str = "loop",
) -> tuple[torch.Tensor, torch.Tensor]:
    """All T steps of the LIF recurrence in one fused call. Returns ``(spikes, membrane)``, both ``[T, ...]``.

    ``kernel``: ``loop`` (:class:`LIFFunction`, the reference fast path), ``compiled`` (the forward time loop
    compiled by torch, :mod:`.compiled`) or ``numba`` (both time loops in one numba call each, CPU only,
    :mod:`.kernels_numba`)."""
    if surrogate is None:
        from .surrogate import get_surrogate

        surrogate = get_surrogate("atan")
    if reset not in _MODE_ID:
        raise ValueError(f"unknown reset {reset!r}; valid: {', '.join(RESET_MODES)}")
    if u0 is None:
        u0 = torch.zeros((), dtype=x.dtype, device=x.device)
    function = LIFFunction if kernel == "loop" else kernel_function("lif", kernel)
    return function.apply(
        x, u0, _as_tensor(beta, x), _as_tensor(threshold, x), _as_tensor(reset_value, x),
        _MODE_ID[reset], detach_reset, surrogate,
    )


def lif_step(
    x_t: torch.Tensor,
    u: torch.Tensor,
    beta: float | torch.Tensor,
    threshold: float | torch.Tensor,
    reset_value: float | torch.Tensor = 0.0,
    reset: ResetMode = "subtract",
    detach_reset: bool = True,
    surrogate: Surrogate | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LIF step on autograd (the reference). Returns ``(s[t], u[t])`` given ``x[t]`` and ``u[t-1]``."""
    if surrogate is None:
        from .surrogate import get_surrogate

        surrogate = get_surrogate("atan")
    if reset == "none":
        u_new = beta * u + x_t
    else:
        r = surrogate(u - threshold)
        u_new = lif_update(u, x_t, r.detach() if detach_reset else r, beta, threshold, reset_value, reset)
    return surrogate(u_new - threshold), u_new


def lif_update(u: torch.Tensor, x_t: torch.Tensor, r: torch.Tensor, beta: float | torch.Tensor,
               threshold: float | torch.Tensor, reset_value: float | torch.Tensor, reset: ResetMode) -> torch.Tensor:
    """The membrane update ``u[t]`` from ``u[t-1]``, input ``x[t]`` and reset signal ``r[t]`` (module docstring)."""
    if reset == "subtract":
        return beta * u + x_t - r * (threshold - reset_value)
    if reset == "zero":
        return beta * ((1 - r) * u + r * reset_value) + x_t
    if reset == "none":
        return beta * u + x_t
    raise ValueError(f"unknown reset {reset!r}; valid: {', '.join(RESET_MODES)}")


def lif_reference(
    x: torch.Tensor,
    u0: torch.Tensor | None,
    beta: float | torch.Tensor,
    threshold: float | torch.Tensor,
    reset_value: float | torch.Tensor = 0.0,
    reset: ResetMode = "subtract",
    detach_reset: bool = True,
    surrogate: Surrogate | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain step-by-step LIF over ``x [T, ...]`` on autograd. Returns ``(spikes, membrane)``."""
    u = torch.zeros_like(x[0]) if u0 is None else u0.expand_as(x[0])
    spikes, mems = [], []
    for t in range(x.shape[0]):
        s, u = lif_step(x[t], u, beta, threshold, reset_value, reset, detach_reset, surrogate)
        spikes.append(s)
        mems.append(u)
    return torch.stack(spikes), torch.stack(mems)


class LowpassFunction(torch.autograd.Function):
    """Fused first-order filter ``y[t] = a * y[t-1] + x[t]`` over ``x [T, ...]``; saves only ``y``."""

    @staticmethod
    def forward(x, y0, a):  # type: ignore[override]
        Y = torch.empty_like(x)
        y = y0
        for t in range(x.shape[0]):
            y = torch.addcmul(x[t], a, y)
            Y[t] = y
        return Y

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        _, y0, a = inputs
        ctx.save_for_backward(output, y0, a)

    @staticmethod
    def vmap(info, in_dims, x, y0, a):  # type: ignore[override]
        """Under ``torch.func.vmap``: one fused call on ``[T, K, ...]`` (see :func:`vmap_sequence`)."""
        return lowpass_vmap(LowpassFunction, info, in_dims, x, y0, a)

    @staticmethod
    def backward(ctx, gY):  # type: ignore[override]
        return lowpass_backward(ctx, gY, reverse_scan_)


def lowpass_backward(ctx, gY: torch.Tensor,  # type: ignore[no-untyped-def]
                     scan: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]
                     ) -> tuple[torch.Tensor | None, ...]:
    """The backward of the fused low-pass filter, the reverse recurrence done by ``scan`` (see :func:`lif_backward`)."""
    Y, y0, a = ctx.saved_tensors
    ab = a.expand_as(Y[0])
    delta = scan(gY.clone(memory_format=torch.contiguous_format), ab, False)
    g_y0 = _reduce_to(ab * delta[0], y0) if ctx.needs_input_grad[1] else None
    g_a = None
    if ctx.needs_input_grad[2]:
        Y_prev = torch.cat([y0.expand_as(Y[0]).unsqueeze(0), Y[:-1]], 0)
        g_a = _reduce_to(delta * Y_prev, a)
    return delta, g_y0, g_a


def lowpass(x: torch.Tensor, a: float | torch.Tensor, y0: torch.Tensor | None = None,
            kernel: str = "loop") -> torch.Tensor:
    """Leaky integration ``y[t] = a y[t-1] + x[t]`` (fused). ``a`` is a scalar or broadcasts to ``x[0]``;
    ``kernel`` as in :func:`lif_fused`."""
    if y0 is None:
        y0 = torch.zeros((), dtype=x.dtype, device=x.device)
    function = LowpassFunction if kernel == "loop" else kernel_function("lowpass", kernel)
    return function.apply(x, y0, _as_tensor(a, x))


def kernel_function(which: str, kernel: str) -> type[torch.autograd.Function]:
    """The autograd function of ``which`` (``lif`` | ``lowpass``) for ``kernel`` (``loop`` | ``compiled`` |
    ``numba``). The numba kernel is a LIF kernel; its low-pass filter is the loop's (:mod:`.kernels_numba`)."""
    if kernel == "loop":
        return LIFFunction if which == "lif" else LowpassFunction
    if kernel == "numba":
        if which != "lif":
            return LowpassFunction
        from .kernels_numba import NumbaLIFFunction  # compiles lazily, on first use

        return NumbaLIFFunction
    if kernel != "compiled":
        raise ValueError(f"unknown kernel {kernel!r}; valid: loop, compiled, numba")
    from .compiled import CompiledLIFFunction, CompiledLowpassFunction  # compiles lazily, on first use

    return CompiledLIFFunction if which == "lif" else CompiledLowpassFunction


def lowpass_reference(x: torch.Tensor, a: float | torch.Tensor, y0: torch.Tensor | None = None) -> torch.Tensor:
    """Step-by-step reference of :func:`lowpass`."""
    y = torch.zeros_like(x[0]) if y0 is None else y0.expand_as(x[0])
    out = []
    for t in range(x.shape[0]):
        y = a * y + x[t]
        out.append(y)
    return torch.stack(out)
