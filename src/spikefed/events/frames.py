"""Binning event streams into frames: events -> ``[T, C, *shape]`` tensors the spiking networks consume.

Time bins split the window ``[t_start, t_end)`` into ``T`` equal parts; event ``(t, addr, p)`` falls in bin::

    b = floor((t - t_start) * T / (t_end - t_start))        (integer arithmetic; events outside the window dropped)

Frame value at ``(b, c, addr')`` is the number of events in bin ``b`` with channel ``c`` (``c = 0`` ON, ``c = 1``
OFF, as in :mod:`spikefed.events.aer`; one channel when polarity is merged) and downsampled address ``addr'``
(every spatial coordinate divided by ``downsample``, rounding down: sum pooling over ``downsample^d`` pixels).
``mode="binary"`` clips the counts to 1. The per-bin event counts (:func:`bin_counts`) sum to the number of
events in the window, and equal the frame sums over everything but time in ``count`` mode.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .aer import EventBatch, check_shape, as_events

__all__ = ["FRAME_MODES", "bin_index", "bin_counts", "downsampled_shape", "downsample_addresses",
           "events_to_frames", "batch_to_frames", "batch_bin_counts"]

#: ``count``: number of events per cell; ``binary``: 1 if any event, else 0.
FRAME_MODES: tuple[str, ...] = ("count", "binary")


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    return int(v)


def _window(t: np.ndarray, t_start: int, t_end: int | None) -> tuple[int, int]:
    start = int(t_start)
    end = int(t.max()) + 1 if t_end is None and t.size else (start + 1 if t_end is None else int(t_end))
    if end <= start:
        raise ValueError(f"need t_end > t_start, got t_start={start}, t_end={end}")
    return start, end


def bin_index(t: np.ndarray, num_bins: int, t_start: int, t_end: int) -> np.ndarray:
    """Time bin of each timestamp (int64), ``-1`` outside ``[t_start, t_end)``."""
    bins = _positive_int("num_bins", num_bins)
    if int(t_end) <= int(t_start):
        raise ValueError(f"need t_end > t_start, got t_start={t_start}, t_end={t_end}")
    rel = np.asarray(t, dtype=np.int64) - int(t_start)
    span = int(t_end) - int(t_start)
    out = rel * bins // span
    out[(rel < 0) | (rel >= span)] = -1
    return out


def bin_counts(events: Any, num_bins: int, *, t_start: int = 0, t_end: int | None = None) -> np.ndarray:
    """Number of events in each time bin ``[T]`` (int64). ``t_end=None``: one past the last timestamp."""
    ev = as_events(events)
    start, end = _window(ev["t"], t_start, t_end)
    b = bin_index(ev["t"], num_bins, start, end)
    return np.bincount(b[b >= 0], minlength=int(num_bins)).astype(np.int64)


def downsampled_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    """``ceil(d / factor)`` for every dim."""
    f = _positive_int("downsample", factor)
    return tuple(-(-d // f) for d in check_shape(shape))


def downsample_addresses(addr: np.ndarray, shape: Sequence[int], factor: int) -> np.ndarray:
    """Flat addresses in ``shape`` -> flat addresses in :func:`downsampled_shape` (each coordinate // factor)."""
    dims = check_shape(shape)
    f = _positive_int("downsample", factor)
    a = np.asarray(addr, dtype=np.int64)
    if f == 1:
        return a
    coords = np.unravel_index(a, dims)
    return np.ravel_multi_index(tuple(c // f for c in coords), downsampled_shape(dims, f)).astype(np.int64)


def _check_mode(mode: str) -> str:
    if mode not in FRAME_MODES:
        raise ValueError(f"unknown frame mode {mode!r}; valid: {', '.join(FRAME_MODES)}")
    return mode


def events_to_frames(events: Any, shape: Sequence[int], num_bins: int, *, polarity: bool = True, t_start: int = 0,
                     t_end: int | None = None, mode: str = "count", downsample: int = 1,
                     dtype: Any = np.float32) -> np.ndarray:
    """One stream -> frames ``[T, C, *shape']`` (``C = 2``: ON, OFF with ``polarity``; else 1).

    Args:
        events: :data:`~spikefed.events.aer.EVENT_DTYPE` stream with addresses in ``shape``.
        shape: the address space, e.g. ``(H, W)``.
        num_bins: T.
        polarity: separate ON/OFF channels (``False`` merges them).
        t_start, t_end: the window (``t_end=None``: one past the last timestamp).
        mode: ``count`` or ``binary``.
        downsample: integer spatial pooling factor (``shape' = ceil(shape / downsample)``).
    """
    ev = as_events(events)
    dims = check_shape(shape)
    bins = _positive_int("num_bins", num_bins)
    _check_mode(mode)
    n_addr = math.prod(dims)
    if ev.size and ev["addr"].max() >= n_addr:
        raise ValueError(f"address {ev['addr'].max()} out of range for shape {dims}")
    start, end = _window(ev["t"], t_start, t_end)
    out_shape = downsampled_shape(dims, downsample)
    m = math.prod(out_shape)
    channels = 2 if polarity else 1
    b = bin_index(ev["t"], bins, start, end)
    keep = b >= 0
    addr = downsample_addresses(ev["addr"][keep], dims, downsample)
    ch = (1 - ev["p"][keep].astype(np.int64)) if polarity else 0
    flat = (b[keep] * channels + ch) * m + addr
    counts = np.bincount(flat, minlength=bins * channels * m).reshape(bins, channels, *out_shape)
    if mode == "binary":
        counts = np.minimum(counts, 1)
    return counts.astype(dtype)


def batch_to_frames(batch: EventBatch, num_bins: int, *, polarity: bool | None = None, mode: str = "count",
                    downsample: int = 1, dtype: Any = np.float32, block: int = 256) -> np.ndarray:
    """Every sample of ``batch`` -> frames ``[N, T, C, *shape']`` over its window ``[0, batch.duration)``.

    ``polarity=None`` follows ``batch.polarity``. Vectorised over samples (``block`` samples per ``bincount``).
    """
    bins = _positive_int("num_bins", num_bins)
    _check_mode(mode)
    blk = _positive_int("block", block)
    pol = batch.polarity if polarity is None else bool(polarity)
    out_shape = downsampled_shape(batch.shape, downsample)
    m = math.prod(out_shape)
    channels = 2 if pol else 1
    n = len(batch)
    per_sample = bins * channels * m
    out = np.zeros((n, bins, channels, *out_shape), dtype=dtype)
    flat_out = out.reshape(n, per_sample)
    for s0 in range(0, n, blk):
        s1 = min(s0 + blk, n)
        lo, hi = batch.offsets[s0], batch.offsets[s1]
        ev = batch.events[lo:hi]
        sample = np.repeat(np.arange(s1 - s0, dtype=np.int64), np.diff(batch.offsets[s0:s1 + 1]))
        b = bin_index(ev["t"], bins, 0, batch.duration)
        keep = b >= 0
        addr = downsample_addresses(ev["addr"][keep], batch.shape, downsample)
        ch = (1 - ev["p"][keep].astype(np.int64)) if pol else 0
        flat = ((sample[keep] * bins + b[keep]) * channels + ch) * m + addr
        counts = np.bincount(flat, minlength=(s1 - s0) * per_sample).reshape(s1 - s0, per_sample)
        if mode == "binary":
            counts = np.minimum(counts, 1)
        flat_out[s0:s1] = counts
    return out


def batch_bin_counts(batch: EventBatch, num_bins: int) -> np.ndarray:
    """Events per sample and time bin ``[N, T]`` over ``[0, batch.duration)``."""
    bins = _positive_int("num_bins", num_bins)
    b = bin_index(batch.events["t"], bins, 0, batch.duration)
    keep = b >= 0
    flat = batch.sample_index()[keep] * bins + b[keep]
    return np.bincount(flat, minlength=len(batch) * bins).reshape(len(batch), bins)
