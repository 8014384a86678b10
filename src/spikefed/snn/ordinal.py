"""Ordinal spike codes: rank-order and N-of-M encoders and their decoders.

Both codes carry information in *which* channels fire and in *what order*, one spike per channel at most.
For one sample with ``M`` channels (the flattened features) and ``T`` steps, let ``rank(i)`` be the position of
channel ``i`` when the values are sorted in decreasing order (ties: lower index first, a stable sort)::

    rank order:  channel i fires once, at t_i = floor(rank(i) * T / M'),  M' = number of channels with x > 0
                 (channels with x <= 0 stay silent, so a blank pixel sends nothing)
    N-of-M:      only the N channels of highest value fire (those with x > 0), at t_i = floor(rank(i) * T / N)
                 (the ordered N-of-M code; N = M' is rank order)

Decoders read a code ``[T, B, *features]`` back (a channel's rank is the order of its first spike, ties by
index, as the encoder made them)::

    rank_order_decode:  value_i = mod ** rank(i) for channels that fired, 0 otherwise (Thorpe's desensitised
                        read-out, 0 < mod <= 1)
    n_of_m_decode:      1 for the first N channels to fire, 0 otherwise (the unordered N-of-M symbol)
"""

from __future__ import annotations

import torch

__all__ = ["rank_order", "n_of_m", "rank_order_decode", "n_of_m_decode", "first_spike_ranks"]


def _check(x: torch.Tensor, num_steps: int, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"{name}: x must be a tensor [B, *features], got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: x has non-finite values")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"{name}: num_steps must be an integer >= 1, got {num_steps!r}")


def _ordinal(x: torch.Tensor, num_steps: int, n: int | None) -> torch.Tensor:
    """Shared encoder: the ``n`` highest positive channels (all positive ones if ``n`` is None) fire once."""
    batch = x.shape[0]
    flat = x.detach().reshape(batch, -1).to(torch.float64)
    m = flat.shape[1]
    # stable descending sort: rank 0 = largest, ties keep the lower index first
    order = torch.sort(-flat, dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(m).expand(batch, m).contiguous())
    positive = flat > 0
    count = positive.sum(1, keepdim=True)  # positives occupy the lowest ranks
    slots = count if n is None else count.clamp(max=n)
    fires = ranks < slots
    t = torch.div(ranks * num_steps, slots.clamp(min=1), rounding_mode="floor")
    dtype = x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()
    out = torch.zeros(num_steps, batch, m, dtype=dtype, device=x.device)
    b_idx, c_idx = torch.nonzero(fires, as_tuple=True)
    out[t[b_idx, c_idx], b_idx, c_idx] = 1.0
    return out.reshape(num_steps, *x.shape)


def rank_order(x: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Rank-order code of ``x [B, *features]`` -> spikes ``[T, B, *features]`` (see the module docstring)."""
    _check(x, num_steps, "rank_order")
    return _ordinal(x, num_steps, None)


def n_of_m(x: torch.Tensor, num_steps: int, n: int = 10) -> torch.Tensor:
    """Ordered N-of-M code: the ``n`` largest positive channels fire once, in rank order over the T steps."""
    _check(x, num_steps, "n_of_m")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_of_m: n must be an integer >= 1, got {n!r}")
    return _ordinal(x, num_steps, n)


def first_spike_ranks(spikes: torch.Tensor) -> torch.Tensor:
    """Rank of every channel by its first spike ``[B, M]`` (int64; channels that never fire get rank ``M``).

    Channels firing at the same step are ordered by index (as the encoders assign them)."""
    if not isinstance(spikes, torch.Tensor) or spikes.dim() < 3:
        raise ValueError(f"spikes must be [T, B, *features], got {getattr(spikes, 'shape', type(spikes).__name__)}")
    steps, batch = spikes.shape[:2]
    flat = spikes.detach().reshape(steps, batch, -1)
    m = flat.shape[2]
    fired = flat != 0
    any_fired = fired.any(0)
    first = torch.where(any_fired, fired.float().argmax(0), torch.full_like(any_fired, steps, dtype=torch.long))
    key = first * (m + 1) + torch.arange(m)  # first spike time, then index
    order = torch.sort(key, dim=1).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(m).expand(batch, m).contiguous())
    return torch.where(any_fired, ranks, torch.full_like(ranks, m))


def rank_order_decode(spikes: torch.Tensor, mod: float = 0.9) -> torch.Tensor:
    """``[T, B, *features]`` -> ``mod ** rank`` of each channel that fired (0 for silent ones), ``[B, *features]``."""
    if not 0 < mod <= 1:
        raise ValueError(f"rank_order_decode: mod must lie in (0, 1], got {mod!r}")
    ranks = first_spike_ranks(spikes)
    m = ranks.shape[1]
    values = torch.where(ranks < m, torch.as_tensor(mod, dtype=torch.float64) ** ranks.double(),
                         torch.zeros((), dtype=torch.float64))
    return values.to(spikes.dtype).reshape(spikes.shape[1:])


def n_of_m_decode(spikes: torch.Tensor, n: int) -> torch.Tensor:
    """``[T, B, *features]`` -> 1 for the first ``n`` channels to fire, 0 otherwise, ``[B, *features]``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_of_m_decode: n must be an integer >= 1, got {n!r}")
    ranks = first_spike_ranks(spikes)
    m = ranks.shape[1]
    return ((ranks < n) & (ranks < m)).to(spikes.dtype).reshape(spikes.shape[1:])
