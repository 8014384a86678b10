"""Learnable axonal delays held in a ring buffer.

Each feature ``i`` has a delay ``d_i``. The last ``D = max_delay`` inputs live in a ring buffer of length ``D``,
so a delay is only defined modulo ``D``: its effective value is ``d_i mod D`` (a delay of ``D + 1`` acts
exactly like ``1``, a delay of ``D`` like ``0``). The delays are parameters on the manifold ``circular(D)``.

For an integer delay the output is an exact shift (zeros, or the carried history, before the sequence start)::

    y[t, :, i] = x[t - d_i, :, i]

For a fractional delay, with ``k = floor(d_i mod D)`` and ``f = (d_i mod D) - k``, the two neighbouring taps
(both taken modulo ``D``) are linearly interpolated, which gives ``d_i`` a gradient::

    y[t, :, i] = (1 - f) * x[t - k, :, i] + f * x[t - ((k + 1) mod D), :, i]
    dy/dd_i    = x[t - ((k + 1) mod D), :, i] - x[t - k, :, i]

Near ``d = D`` the upper tap wraps to ``0``, so the delay is continuous across the ring's seam.

The state is explicit (:class:`DelayState`): the ring buffer ``[D, B, features]`` of the last ``D`` inputs and
the write position, the slot the next input goes to (which also holds the oldest input).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from spikefed.manifold import circular, declare

#: Names accepted by ``Delay(init=...)`` (a tensor of delays is accepted too).
INITS: tuple[str, ...] = ("zeros", "uniform")


class DelayState(NamedTuple):
    """Ring buffer ``[D, B, features]`` of the last ``D`` inputs and the next write position ``in [0, D)``.

    ``buffer[position]`` holds the oldest input, ``buffer[position - 1]`` (mod ``D``) the newest.
    """

    buffer: torch.Tensor
    position: int


# --------------------------------------------------------------------------------------------------- checks


def _check_max_delay(max_delay: int) -> int:
    if isinstance(max_delay, bool) or not isinstance(max_delay, int) or max_delay < 1:
        raise ValueError(f"max_delay must be an int >= 1 (the ring buffer length D), got {max_delay!r}")
    return max_delay


def _check_floating(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating-point dtype, got {x.dtype}")


def _check_delays(delays: torch.Tensor, features: int) -> torch.Tensor:
    if not isinstance(delays, torch.Tensor):
        raise ValueError(f"delays must be a torch.Tensor, got {type(delays).__name__}")
    if delays.shape != (features,):
        raise ValueError(f"expected delays of shape [features] = [{features}], got {list(delays.shape)}")
    if delays.is_complex() or delays.dtype == torch.bool:
        raise ValueError(f"delays must have a real (integer or floating) dtype, got {delays.dtype}")
    if delays.is_floating_point() and not _vmapped(delays) and not torch.isfinite(delays.detach()).all():
        raise ValueError("delays must be finite")
    return delays


def _vmapped(x: torch.Tensor) -> bool:
    """Whether ``x`` is one copy of a stack under ``torch.func.vmap`` (the batched cohort engine): a value check
    cannot branch on it there; the stack it comes from holds parameters that passed the check (or validation of
    the update that carried them) as plain tensors."""
    return bool(torch._C._functorch.is_batchedtensor(x))


def _check_history(history: torch.Tensor, max_delay: int, batch: int, features: int) -> None:
    _check_floating("history", history)
    if history.shape != (max_delay, batch, features):
        raise ValueError(
            f"expected history of shape [max_delay, B, features] = [{max_delay}, {batch}, {features}], "
            f"got {list(history.shape)}"
        )


def _check_state(state: DelayState, max_delay: int, batch: int, features: int) -> tuple[torch.Tensor, int]:
    if not isinstance(state, tuple) or len(state) != 2:
        raise ValueError(f"state must be a DelayState(buffer, position), got {type(state).__name__}")
    buffer, position = state
    _check_floating("state.buffer", buffer)
    if buffer.shape != (max_delay, batch, features):
        raise ValueError(
            f"expected state.buffer of shape [max_delay, B, features] = [{max_delay}, {batch}, {features}], "
            f"got {list(buffer.shape)}"
        )
    if isinstance(position, torch.Tensor):
        if position.numel() != 1 or position.is_floating_point():
            raise ValueError(f"state.position must be an int or 0-dim integer tensor, got {position!r}")
        position = int(position.item())
    if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < max_delay:
        raise ValueError(f"state.position must be an int in [0, {max_delay}), got {position!r}")
    return buffer, position


# --------------------------------------------------------------------------------------------------- taps


def _taps(delays: torch.Tensor, max_delay: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Lower tap ``k0``, upper tap ``k1 = (k0 + 1) mod D`` (long, ``[F]``) and fraction ``f`` (None if integer)."""
    if not delays.is_floating_point():
        k0 = torch.remainder(delays.long(), max_delay)
        return k0, torch.remainder(k0 + 1, max_delay), None
    wrapped = torch.remainder(delays, max_delay)
    low = torch.floor(wrapped).detach()
    frac = wrapped - low
    # ``remainder`` can round up to exactly D for tiny negative inputs; ``% D`` folds that back to tap 0.
    k0 = torch.remainder(low.long(), max_delay)
    return k0, torch.remainder(k0 + 1, max_delay), frac


def _mix(lower: torch.Tensor, upper: torch.Tensor, frac: torch.Tensor | None) -> torch.Tensor:
    """``(1 - f) * lower + f * upper``; exactly ``lower`` when the delays are integers and need no gradient."""
    if frac is None or (not frac.requires_grad and not _vmapped(frac) and not bool(frac.any())):
        return lower
    f = frac.to(lower.dtype)
    return (1.0 - f) * lower + f * upper


# --------------------------------------------------------------------------------------------------- pure API


def delay_shift(
    x: torch.Tensor,
    delays: torch.Tensor,
    max_delay: int,
    history: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Delay every feature of a whole sequence: ``y[t, :, i] = x[t - d_i, :, i]`` (interpolated when fractional).

    Args:
        x: input ``[T, B, features]``.
        delays: ``[features]`` delays (any real value; only ``d mod max_delay`` matters).
        max_delay: ring length ``D >= 1``.
        history: the ``D`` inputs before ``x`` in time order ``[D, B, features]`` (``history[-1]`` is ``x[-1]``);
            zeros when None.

    Returns:
        ``(y, new_history)``: ``y`` ``[T, B, features]`` and the last ``D`` inputs of ``cat(history, x)``, in time
        order, to pass as ``history`` for the next chunk.

    Vectorized: one gather per tap over the padded sequence ``cat(history, x)``; no loop over time.
    """
    d_max = _check_max_delay(max_delay)
    _check_floating("x", x)
    if x.dim() != 3:
        raise ValueError(f"expected x of shape [T, B, features], got {list(x.shape)}")
    steps, batch, features = x.shape
    _check_delays(delays, features)
    if history is None:
        history = x.new_zeros(d_max, batch, features)
    else:
        _check_history(history, d_max, batch, features)
        history = history.to(dtype=x.dtype, device=x.device)

    padded = torch.cat([history, x], dim=0)  # padded[d_max + t] = x[t]
    k0, k1, frac = _taps(delays.to(x.device), d_max)
    t = torch.arange(steps, device=x.device).unsqueeze(1)  # [T, 1]

    def tap(k: torch.Tensor) -> torch.Tensor:
        index = (d_max + t - k.unsqueeze(0)).unsqueeze(1).expand(steps, batch, features)
        return torch.gather(padded, 0, index)

    lower = tap(k0)
    upper = tap(k1) if frac is not None else lower
    return _mix(lower, upper, frac), padded[steps:]


def delay_step(
    x_t: torch.Tensor,
    delays: torch.Tensor,
    max_delay: int,
    state: DelayState | None = None,
) -> tuple[torch.Tensor, DelayState]:
    """One time step through the ring buffer.

    Writes ``x_t`` at ``position``, then reads ``buffer[(position - k) mod D]`` for the taps ``k`` of each delay
    (``k = 0`` is ``x_t`` itself) and advances ``position`` by one. The input state is not modified.

    Args:
        x_t: input ``[B, features]``.
        delays: ``[features]``.
        max_delay: ring length ``D >= 1``.
        state: :class:`DelayState`; an all-zero buffer at position 0 when None.

    Returns:
        ``(y_t, new_state)`` with ``y_t`` of shape ``[B, features]``.
    """
    d_max = _check_max_delay(max_delay)
    _check_floating("x_t", x_t)
    if x_t.dim() != 2:
        raise ValueError(f"expected x_t of shape [B, features], got {list(x_t.shape)}")
    batch, features = x_t.shape
    _check_delays(delays, features)
    if state is None:
        buffer, position = x_t.new_zeros(d_max, batch, features), 0
    else:
        buffer, position = _check_state(state, d_max, batch, features)
        buffer = buffer.to(dtype=x_t.dtype, device=x_t.device)

    slot = torch.tensor([position], device=x_t.device)
    buffer = buffer.index_copy(0, slot, x_t.unsqueeze(0))
    k0, k1, frac = _taps(delays.to(x_t.device), d_max)

    def tap(k: torch.Tensor) -> torch.Tensor:
        index = torch.remainder(position - k, d_max).view(1, 1, features).expand(1, batch, features)
        return torch.gather(buffer, 0, index).squeeze(0)

    lower = tap(k0)
    upper = tap(k1) if frac is not None else lower
    return _mix(lower, upper, frac), DelayState(buffer, (position + 1) % d_max)


def ring_to_history(state: DelayState) -> torch.Tensor:
    """The ring buffer in time order (oldest first): ``history[j] = buffer[(position + j) mod D]``."""
    buffer, position = state
    return torch.roll(buffer, shifts=-int(position), dims=0)


def history_to_ring(history: torch.Tensor, position: int) -> DelayState:
    """Inverse of :func:`ring_to_history`: place time-ordered ``history`` so that the oldest sits at ``position``."""
    return DelayState(torch.roll(history, shifts=int(position), dims=0), int(position))


# --------------------------------------------------------------------------------------------------- module


def _as_generator(generator: torch.Generator | int | None, what: str) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise ValueError(f"{what} needs generator: a torch.Generator or an int seed, got {generator!r}")


def _initial_delays(
    init: str | torch.Tensor,
    features: int,
    max_delay: int,
    learnable: bool,
    generator: torch.Generator | int | None,
) -> torch.Tensor:
    dtype = torch.get_default_dtype()
    if isinstance(init, torch.Tensor):
        values = init.detach().clone().to(dtype)
        if values.shape != (features,):
            raise ValueError(f"expected init of shape [features] = [{features}], got {list(values.shape)}")
        if not torch.isfinite(values).all():
            raise ValueError("init delays must be finite")
    elif init == "zeros":
        values = torch.zeros(features, dtype=dtype)
    elif init == "uniform":
        g = _as_generator(generator, "init='uniform'")
        if learnable:
            values = torch.rand(features, generator=g, dtype=dtype) * max_delay
        else:
            values = torch.randint(0, max_delay, (features,), generator=g).to(dtype)
    else:
        raise ValueError(f"unknown init {init!r}; valid choices: {', '.join(map(repr, INITS))} or a tensor [features]")
    # Onto the ring [0, D); this also folds a float32 rounding of rand * D up to exactly D back to 0.
    return torch.remainder(values, max_delay)


class Delay(nn.Module):
    """Per-feature axonal delays ``y[t, :, i] = x[t - d_i, :, i]`` through a ring buffer of length ``max_delay``.

    Args:
        features: number of features (last dim of the input).
        max_delay: ring buffer length ``D``; delays live on ``circular(D)``, values in ``[0, D)``.
        init: ``"zeros"``, ``"uniform"`` (needs ``generator``; continuous ``U[0, D)`` when learnable, integers
            ``{0, ..., D-1}`` otherwise) or a tensor ``[features]`` of delays (wrapped mod ``D``).
        learnable: whether the delays get gradients (fractional delays are then linearly interpolated).
            Fixed delays are still a parameter (``requires_grad=False``) so they keep their manifold.
        generator: ``torch.Generator`` or int seed for ``init="uniform"``.

    The parameter ``delays`` may leave ``[0, D)`` after an optimizer step; only ``d mod D`` is used, and
    :func:`spikefed.manifold.project_parameters_` wraps it back.
    """

    def __init__(
        self,
        features: int,
        max_delay: int,
        init: str | torch.Tensor = "zeros",
        learnable: bool = True,
        generator: torch.Generator | int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"features must be an int >= 1, got {features!r}")
        self.features = features
        self.max_delay = _check_max_delay(max_delay)
        self.learnable = bool(learnable)
        values = _initial_delays(init, features, self.max_delay, self.learnable, generator)
        self.delays = nn.Parameter(values, requires_grad=self.learnable)
        declare(self.delays, circular(self.max_delay))

    def init_state(
        self, batch_size: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> DelayState:
        """An all-zero ring buffer ``[max_delay, batch_size, features]`` at write position 0."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise ValueError(f"batch_size must be an int >= 0, got {batch_size!r}")
        buffer = torch.zeros(
            self.max_delay, batch_size, self.features, dtype=dtype or self.delays.dtype, device=device
        )
        return DelayState(buffer, 0)

    def effective_delays(self) -> torch.Tensor:
        """``d mod max_delay`` (detached), the delays actually applied."""
        return torch.remainder(self.delays.detach(), self.max_delay)

    def forward(self, x: torch.Tensor, state: DelayState | None = None) -> tuple[torch.Tensor, DelayState]:
        """Delay a whole sequence ``x`` ``[T, B, features]``; returns ``(y, state)`` to carry into the next chunk."""
        _check_floating("x", x)
        if x.dim() != 3 or x.shape[-1] != self.features:
            raise ValueError(f"expected x of shape [T, B, features={self.features}], got {list(x.shape)}")
        steps, batch, _ = x.shape
        if state is None:
            history, position = None, 0
        else:
            buffer, position = _check_state(state, self.max_delay, batch, self.features)
            history = ring_to_history(DelayState(buffer, position))
        y, history = delay_shift(x, self.delays, self.max_delay, history)
        return y, history_to_ring(history, (position + steps) % self.max_delay)

    def step(self, x_t: torch.Tensor, state: DelayState | None = None) -> tuple[torch.Tensor, DelayState]:
        """Delay one time step ``x_t`` ``[B, features]``; returns ``(y_t, state)``."""
        _check_floating("x_t", x_t)
        if x_t.dim() != 2 or x_t.shape[-1] != self.features:
            raise ValueError(f"expected x_t of shape [B, features={self.features}], got {list(x_t.shape)}")
        return delay_step(x_t, self.delays, self.max_delay, state)

    def extra_repr(self) -> str:
        return f"features={self.features}, max_delay={self.max_delay}, learnable={self.learnable}"
