"""Compact frame stores: binned event frames held as small integers, made float one batch at a time.

Event frames are 0/1 (``binary`` mode) or small event counts (``count`` mode). A run keeps them in the smallest
integer dtype that holds the largest count (:func:`compact_dtype`)::

    max count <= 255        -> uint8   (1 byte per cell; every binary store)
    max count <= 32767      -> int16   (2 bytes)
    max count <= 2^31 - 1   -> int32   (4 bytes)

and nothing is ever clipped: writing larger counts into a store widens it (:func:`write_rows`). Models compute
in floating point; every place that gathers a batch for a model calls :func:`as_float_batch` on it, which turns a
compact batch into the model's float dtype (exact: every such integer is a float32 / float64 value) and passes
floating data (the dense digits, which stay float) through unchanged when its dtype already matches. A store of
any other dtype (int64, int8, bool, complex, ...) is refused with a :class:`TypeError` naming it.

Memory: ``N * T * F`` bytes for a uint8 store instead of ``4 * N * T * F`` for float32 (measured in
``benchmarks/streaming.py``, rows ``run_float`` / ``run_compact``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["COMPACT_DTYPES", "is_compact", "compact_dtype", "as_float_batch", "to_compact", "write_rows",
           "check_store_dtype"]

#: integer dtypes a compact store may have, narrowest first, with the largest count each holds
COMPACT_DTYPES: tuple[tuple[torch.dtype, int], ...] = ((torch.uint8, 255), (torch.int16, 32767),
                                                      (torch.int32, 2**31 - 1))
_COMPACT = {dt for dt, _ in COMPACT_DTYPES}


def is_compact(x: torch.Tensor) -> bool:
    """True when ``x`` is a compact (integer) frame store."""
    return x.dtype in _COMPACT


def check_store_dtype(x: Any, name: str = "x") -> None:
    """``TypeError`` unless ``x`` is a tensor of a floating dtype or of one of :data:`COMPACT_DTYPES`."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (x.dtype.is_floating_point or x.dtype in _COMPACT):
        allowed = ", ".join(str(dt).removeprefix("torch.") for dt, _ in COMPACT_DTYPES)
        raise TypeError(f"{name} has dtype {str(x.dtype).removeprefix('torch.')}: a frame store is floating point "
                        f"or compact ({allowed}; see spikefed.data.compact)")


def compact_dtype(max_count: int) -> torch.dtype:
    """The narrowest dtype of :data:`COMPACT_DTYPES` that holds ``max_count`` (``ValueError`` beyond int32)."""
    if max_count < 0:
        raise ValueError(f"frame counts are >= 0, got a maximum of {max_count}")
    for dt, top in COMPACT_DTYPES:
        if max_count <= top:
            return dt
    raise ValueError(f"a frame count of {max_count} exceeds the largest compact dtype (int32, {2**31 - 1})")


def as_float_batch(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A gathered batch as the model's float ``dtype``: compact integers converted (exactly), floating data cast
    only when its dtype differs (no copy when it matches). ``TypeError`` for any other store dtype."""
    check_store_dtype(x)
    if not dtype.is_floating_point:
        raise TypeError(f"as_float_batch needs a floating target dtype, got {dtype}")
    return x if x.dtype == dtype else x.to(dtype)


def _integral_counts(frames: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, int]:
    t = torch.as_tensor(frames)
    if t.numel() == 0:
        return t, 0
    if t.dtype.is_floating_point:
        if not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise ValueError("frames to store compactly must be whole event counts (finite, integral)")
    elif t.dtype == torch.bool or t.dtype.is_complex:
        raise TypeError(f"frames of dtype {t.dtype} cannot be stored as counts")
    low = int(t.min())
    if low < 0:
        raise ValueError(f"frame counts are >= 0, got {low}")
    return t, int(t.max())


def to_compact(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Whole, non-negative event counts -> a tensor of :func:`compact_dtype` of their maximum (``ValueError``
    for fractional, negative or non-finite values: those are not frames)."""
    t, top = _integral_counts(frames)
    return t.to(compact_dtype(top))


def write_rows(store: torch.Tensor, index: torch.Tensor | np.ndarray, frames: np.ndarray | torch.Tensor
               ) -> torch.Tensor:
    """``store[index] = frames`` without clipping: a float store takes them as they are; a compact store is first
    widened to :func:`compact_dtype` of the new maximum when they would not fit. Returns the store (a new tensor
    only when it was widened: rebind it)."""
    check_store_dtype(store, "store")
    idx = torch.as_tensor(np.asarray(index), dtype=torch.int64)
    if store.dtype.is_floating_point:
        store[idx] = torch.as_tensor(frames).to(store.dtype)
        return store
    t, top = _integral_counts(frames)
    need = compact_dtype(top)
    if need.itemsize > store.dtype.itemsize:
        store = store.to(need)
    store[idx] = t.to(store.dtype)
    return store
