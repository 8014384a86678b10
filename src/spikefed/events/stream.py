"""Streamed binning: an :class:`~spikefed.events.sources.EventSource` -> frames, one batch of samples at a time.

A sample's frame is ``x [T, F]``: the window ``[0, duration)`` cut into ``T = bins`` equal bins
(:mod:`spikefed.events.frames`), after cropping and spatial pooling::

    crop      keep events with start_d <= coord_d < start_d + size_d in every dim d, coordinates shifted by start
              (2-D sensors: crop = (top, left, height, width); 1-D channel arrays: (first, count))
    pool      coord_d // downsample  (sum pooling over downsample^d pixels), shape' = ceil(size / downsample)

``F = C * prod(shape')`` with ``C = 2`` (ON, OFF) for sensors with polarity, else 1.

Memory: :func:`iter_frames` holds one batch: its events (13 bytes each) plus ``B * T * F`` float32 frames;
nothing else grows with the data set. :func:`load_frames` fills one preallocated ``[N, T, F]`` float32 array
block by block (``4 * N * T * F`` bytes), never holding all events; :func:`load_compact` fills the compact
integer store a run holds (:mod:`spikefed.data.compact`: uint8, ``N * T * F`` bytes, widened only for counts
above 255). :func:`cached_frames` keeps that compact store on disk, keyed by the data and every binning
parameter, so a second run skips reading and binning.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..data.compact import COMPACT_DTYPES, compact_dtype
from ..data.digits import DatasetSplit
from .aer import EventBatch
from .frames import FRAME_MODES, batch_to_frames, downsampled_shape
from .sources import EventSource

__all__ = ["FrameSpec", "crop_batch", "frame_shape", "bin_batch", "iter_frames", "load_frames", "load_compact",
           "cached_frames", "source_split"]


@dataclass(frozen=True)
class FrameSpec:
    """How events become frames: ``bins`` time bins, ``mode`` (binary / count), ``downsample``, ``crop``."""

    bins: int = 10
    mode: str = "binary"
    downsample: int = 1
    crop: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("bins", "downsample"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.mode not in FRAME_MODES:
            raise ValueError(f"unknown frame mode {self.mode!r}; valid: {', '.join(FRAME_MODES)}")
        if self.crop is not None:
            object.__setattr__(self, "crop", tuple(int(c) for c in self.crop))


def _crop_box(shape: tuple[int, ...], crop: tuple[int, ...] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if crop is None:
        return (0,) * len(shape), shape
    d = len(shape)
    if len(crop) != 2 * d:
        raise ValueError(f"crop for a {d}-D sensor {shape} needs {2 * d} numbers (starts then sizes), got {crop}")
    starts, sizes = tuple(crop[:d]), tuple(crop[d:])
    for s, n, full in zip(starts, sizes, shape):
        if s < 0 or n < 1 or s + n > full:
            raise ValueError(f"crop {crop} does not fit the sensor {shape}")
    return starts, sizes


def frame_shape(shape: Sequence[int], polarity: bool, spec: FrameSpec) -> tuple[int, int]:
    """``(T, F)`` of the frames of a sensor ``shape``."""
    _, sizes = _crop_box(tuple(shape), spec.crop)
    return spec.bins, (2 if polarity else 1) * math.prod(downsampled_shape(sizes, spec.downsample))


def crop_batch(batch: EventBatch, crop: tuple[int, ...] | None) -> EventBatch:
    """The events inside ``crop``, with addresses in the cropped shape (the batch itself when ``crop`` is None)."""
    starts, sizes = _crop_box(batch.shape, crop)
    if crop is None:
        return batch
    coords = np.unravel_index(batch.events["addr"].astype(np.int64), batch.shape)
    keep = np.ones(batch.events.size, dtype=bool)
    for c, s, n in zip(coords, starts, sizes):
        keep &= (c >= s) & (c < s + n)
    new = np.ravel_multi_index(tuple(c[keep] - s for c, s in zip(coords, starts)), sizes)
    events = batch.events[keep].copy()
    events["addr"] = new
    sample = batch.sample_index()[keep]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(sample, minlength=len(batch)))])
    return EventBatch(events, offsets, sizes, batch.polarity, batch.time_unit, batch.duration)


def bin_batch(batch: EventBatch, spec: FrameSpec) -> np.ndarray:
    """One batch -> float32 frames ``[B, T, F]``."""
    cropped = crop_batch(batch, spec.crop)
    frames = batch_to_frames(cropped, spec.bins, mode=spec.mode, downsample=spec.downsample, block=64)
    return frames.reshape(len(batch), spec.bins, -1)


def iter_frames(source: EventSource, spec: FrameSpec, batch_size: int = 256,
                order: Sequence[int] | np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(x [B, T, F] float32, y [B] int64)`` for consecutive batches of ``order`` (default: every sample in
    order); each batch is read from disk and binned when it is asked for."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    idx = np.arange(len(source)) if order is None else np.asarray(order, dtype=np.int64)
    for s in range(0, idx.size, int(batch_size)):
        part = idx[s:s + int(batch_size)]
        yield bin_batch(source.batch(part), spec), source.labels[part]


def load_frames(source: EventSource, spec: FrameSpec, *, block: int = 256,
                out: np.ndarray | None = None) -> np.ndarray:
    """Every sample's frames ``[N, T, F]`` (float32, or ``out``'s dtype), filled ``block`` samples at a time."""
    t, f = frame_shape(source.shape, source.polarity, spec)
    n = len(source)
    x = np.empty((n, t, f), dtype=np.float32) if out is None else out
    if x.shape != (n, t, f):
        raise ValueError(f"out has shape {list(x.shape)}, expected {[n, t, f]}")
    for s, (frames, _) in zip(range(0, n, block), iter_frames(source, spec, block)):
        if x.dtype.kind in "ui" and frames.size and frames.max() > np.iinfo(x.dtype).max:
            raise ValueError(f"a frame count of {int(frames.max())} does not fit out's {x.dtype} (samples from {s}); "
                             "use load_compact, which widens")
        x[s:s + frames.shape[0]] = frames
    return x


def load_compact(source: EventSource, spec: FrameSpec, *, block: int = 256) -> np.ndarray:
    """Every sample's frames ``[N, T, F]`` as a compact integer store (:mod:`spikefed.data.compact`): ``uint8``
    (binary frames always fit), widened to ``int16`` / ``int32`` as soon as a block holds a larger count; never
    clipped. ``N * T * F`` bytes for uint8, filled ``block`` samples at a time."""
    t, f = frame_shape(source.shape, source.polarity, spec)
    n = len(source)
    x = np.zeros((n, t, f), dtype=np.uint8)
    for s, (frames, _) in zip(range(0, n, block), iter_frames(source, spec, block)):
        top = int(frames.max()) if frames.size else 0
        need = np.dtype(str(compact_dtype(top)).removeprefix("torch."))
        if need.itemsize > x.dtype.itemsize:
            x = x.astype(need)
        x[s:s + frames.shape[0]] = frames
    return x


def cache_key(source: EventSource, spec: FrameSpec) -> str:
    """sha256 over the data's identity (``source.key``, window, size) and the binning parameters."""
    blob = json.dumps({"source": source.key, "duration": source.duration, "n": len(source),
                       "spec": asdict(spec), "version": 2}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cached_frames(source: EventSource, spec: FrameSpec, cache_dir: str | os.PathLike[str]) -> np.ndarray:
    """Frames as a read-only compact memory map ``[N, T, F]`` (:func:`load_compact`'s dtype: uint8, or wider
    when counts exceed 255; never clipped) from ``cache_dir/<key>.npy``, written once when absent. Sources
    without a ``key`` (in memory) are not cached: their compact frames are returned directly."""
    t, f = frame_shape(source.shape, source.polarity, spec)
    if not source.key:
        return load_compact(source, spec)
    folder = Path(cache_dir)
    path = folder / f"{source.name}-{cache_key(source, spec)}.npy"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial.npy")
        np.save(tmp, load_compact(source, spec), allow_pickle=False)
        os.replace(tmp, path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:  # truncated, not an .npy, an object array
        raise ValueError(f"frame cache {path} cannot be read ({exc}); delete it") from exc
    allowed = {str(dt).removeprefix("torch.") for dt, _ in COMPACT_DTYPES}
    if arr.dtype.name not in allowed or arr.shape != (len(source), t, f):
        raise ValueError(f"frame cache {path} holds {arr.dtype} {list(arr.shape)}, expected one of "
                         f"{sorted(allowed)} {[len(source), t, f]}; delete it")
    return arr


def source_split(train: EventSource, test: EventSource, spec: FrameSpec, *, name: str | None = None) -> DatasetSplit:
    """Two sources (e.g. :func:`~spikefed.events.sources.tonic_source` of a tonic ``train=True`` / ``False``
    pair) binned into the :class:`DatasetSplit` the trainers take (``sequence=True``, ``x [N, T, F]``)."""
    import torch

    if (train.shape, train.polarity) != (test.shape, test.polarity):
        raise ValueError(f"train and test sources differ: {train.shape}/{train.polarity} vs "
                         f"{test.shape}/{test.polarity}")
    x_train, x_test = load_frames(train, spec), load_frames(test, spec)
    return DatasetSplit(x_train=torch.from_numpy(x_train), y_train=torch.from_numpy(train.labels.copy()),
                        x_test=torch.from_numpy(x_test), y_test=torch.from_numpy(test.labels.copy()),
                        num_classes=max(train.num_classes, test.num_classes),
                        feature_shape=(spec.bins, int(x_train.shape[2])), name=name or train.name, sequence=True)
