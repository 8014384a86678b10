"""Readers (and a writer) for public neuromorphic dataset formats.

N-MNIST (Orchard et al., 2015): one binary file per sample, 5 bytes (40 bits) per event, big-endian::

    byte 0        x                         (bits 39..32)
    byte 1        y                         (bits 31..24)
    byte 2 bit 7  polarity: 1 = ON, 0 = OFF (bit 23)
    bytes 2..4    timestamp in microseconds, the low 23 bits of the big-endian 24-bit word
                  (byte 2 bits 6..0 are timestamp bits 22..16, byte 3 bits 15..8, byte 4 bits 7..0)

Sensor 34x34; events become ``addr = y * 34 + x`` with ``t`` in microseconds (``time_unit = 1e-6``).

SHD, the Spiking Heidelberg Digits (Cramer et al., 2020): an HDF5 file with datasets ``spikes/times`` (one float
array of spike times in seconds per sample, ragged), ``spikes/units`` (matching arrays of channel ids, 700
channels) and ``labels`` (one int per sample). Read with ``h5py`` (optional dependency, imported when used).

Malformed input raises :class:`~spikefed.events.aer.EventFormatError` naming the byte offset (N-MNIST) or the
HDF5 dataset (SHD) and what is wrong.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..io import write_atomic
from .aer import EVENT_DTYPE, EventBatch, EventFormatError, as_events

__all__ = ["NMNIST_SHAPE", "NMNIST_MAX_T", "SHD_UNITS", "decode_nmnist", "encode_nmnist", "read_nmnist",
           "write_nmnist", "load_nmnist_dir", "read_shd", "shd_datasets", "shd_sample_events"]

#: N-MNIST sensor size ``(H, W)``.
NMNIST_SHAPE: tuple[int, int] = (34, 34)
#: Largest N-MNIST timestamp (23 bits, microseconds).
NMNIST_MAX_T = 2**23 - 1
#: Input channels of SHD (cochlea model outputs).
SHD_UNITS = 700
_RECORD = 5


# --------------------------------------------------------------------------------------------------
# N-MNIST
# --------------------------------------------------------------------------------------------------


def decode_nmnist(data: bytes, *, shape: tuple[int, int] = NMNIST_SHAPE, source: str | None = None,
                  sort: bool = True) -> np.ndarray:
    """N-MNIST bytes -> events over ``shape`` (``addr = y * W + x``), sorted by ``t`` (stable) unless ``sort=False``.

    ``EventFormatError`` if the length is not a multiple of 5 or a coordinate lies outside ``shape``.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size % _RECORD:
        whole = buf.size - buf.size % _RECORD
        raise EventFormatError(whole, f"length {buf.size} is not a multiple of {_RECORD} bytes: a truncated "
                               f"event of {buf.size % _RECORD} bytes at the end", source)
    rec = buf.reshape(-1, _RECORD).astype(np.int64)
    x, y = rec[:, 0], rec[:, 1]
    height, width = shape
    bad = np.flatnonzero((x >= width) | (y >= height))
    if bad.size:
        i = int(bad[0])
        which = "x" if x[i] >= width else "y"
        at = i * _RECORD + (0 if which == "x" else 1)
        raise EventFormatError(at, f"event {i}: {which}={int(rec[i, 0 if which == 'x' else 1])} outside the "
                               f"{width}x{height} sensor", source)
    p = rec[:, 2] >> 7
    t = ((rec[:, 2] & 0x7F) << 16) | (rec[:, 3] << 8) | rec[:, 4]
    out = np.empty(rec.shape[0], dtype=EVENT_DTYPE)
    out["t"] = t
    out["addr"] = y * width + x
    out["p"] = p
    if sort and out.size and np.any(np.diff(out["t"]) < 0):
        out = out[np.argsort(out["t"], kind="stable")]
    return out


def encode_nmnist(events: Any, *, shape: tuple[int, int] = NMNIST_SHAPE) -> bytes:
    """Events over ``shape`` (``addr = y * W + x``, ``t`` in microseconds) -> N-MNIST bytes, in the given order.

    ``ValueError`` if a coordinate does not fit 8 bits (or ``shape``) or ``t`` is outside ``[0, 2**23)``.
    """
    ev = as_events(events)
    height, width = shape
    if not (1 <= height <= 256 and 1 <= width <= 256):
        raise ValueError(f"N-MNIST stores 8-bit coordinates; shape {shape} does not fit")
    if ev.size and ev["addr"].max() >= height * width:
        raise ValueError(f"address {ev['addr'].max()} out of range for shape {shape}")
    if ev.size and (ev["t"].min() < 0 or ev["t"].max() > NMNIST_MAX_T):
        raise ValueError(f"N-MNIST timestamps are 23-bit microseconds in [0, {NMNIST_MAX_T}], got "
                         f"[{ev['t'].min()}, {ev['t'].max()}]")
    addr = ev["addr"].astype(np.int64)
    t = ev["t"].astype(np.int64)
    rec = np.empty((ev.size, _RECORD), dtype=np.uint8)
    rec[:, 0] = addr % width
    rec[:, 1] = addr // width
    rec[:, 2] = (ev["p"].astype(np.int64) << 7) | (t >> 16)
    rec[:, 3] = (t >> 8) & 0xFF
    rec[:, 4] = t & 0xFF
    return rec.tobytes()


def read_nmnist(path: str | os.PathLike[str], *, shape: tuple[int, int] = NMNIST_SHAPE,
                sort: bool = True) -> np.ndarray:
    """Read one N-MNIST ``.bin`` file (see :func:`decode_nmnist`)."""
    return decode_nmnist(Path(path).read_bytes(), shape=shape, source=str(path), sort=sort)


def write_nmnist(path: str | os.PathLike[str], events: Any, *, shape: tuple[int, int] = NMNIST_SHAPE) -> int:
    """Write events as an N-MNIST file, atomically; returns the size in bytes."""
    data = encode_nmnist(events, shape=shape)
    write_atomic(Path(path), data)
    return len(data)


def load_nmnist_dir(root: str | os.PathLike[str], *, duration: int | None = None,
                    shape: tuple[int, int] = NMNIST_SHAPE) -> tuple[EventBatch, np.ndarray]:
    """Every ``<root>/<label>/*.bin`` (the N-MNIST ``Train``/``Test`` layout, label folders ``0``..``9``) as one
    batch, in sorted label then file-name order, and the labels ``[N]``.

    ``duration``: window of every sample in microseconds (default: one past the largest timestamp found).
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"N-MNIST folder not found: {base}")
    folders = sorted((d for d in base.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    streams: list[np.ndarray] = []
    labels: list[int] = []
    for d in folders:
        for f in sorted(d.glob("*.bin")):
            streams.append(read_nmnist(f, shape=shape))
            labels.append(int(d.name))
    if not streams:
        raise FileNotFoundError(f"no <label>/*.bin files under {base}")
    t_max = max((int(s["t"][-1]) for s in streams if s.size), default=0)
    window = t_max + 1 if duration is None else int(duration)
    batch = EventBatch.from_list(streams, shape, polarity=True, time_unit=1e-6, duration=window)
    return batch, np.asarray(labels, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# SHD
# --------------------------------------------------------------------------------------------------


def shd_sample_events(times: Any, units: Any, *, index: int, num_units: int = SHD_UNITS, time_unit: float = 1e-6,
                      source: str | None = None) -> np.ndarray:
    """One SHD/SSC sample (spike times in seconds, channel ids) -> events sorted by time, ticks of ``time_unit``.

    ``EventFormatError`` naming sample ``index`` if the arrays differ in length, a time is negative or not
    finite, or a unit is outside ``[0, num_units)``."""
    t_sec = np.asarray(times, dtype=np.float64)
    u = np.asarray(units)
    if t_sec.shape != u.shape or t_sec.ndim != 1:
        raise EventFormatError(None, f"sample {index}: 'spikes/times' has {t_sec.size} entries, 'spikes/units' "
                               f"{u.size}", source)
    if t_sec.size and not (np.isfinite(t_sec).all() and t_sec.min() >= 0):
        raise EventFormatError(None, f"sample {index}: 'spikes/times' must be finite and >= 0", source)
    if u.size and (not np.issubdtype(u.dtype, np.integer) or u.min() < 0 or u.max() >= num_units):
        bad = u.max() if u.max() >= num_units else u.min()
        raise EventFormatError(None, f"sample {index}: 'spikes/units' value {bad} outside [0, {num_units})",
                               source)
    ticks = np.rint(t_sec / time_unit).astype(np.int64)
    order = np.argsort(ticks, kind="stable")
    ev = np.empty(ticks.size, dtype=EVENT_DTYPE)
    ev["t"] = ticks[order]
    ev["addr"] = u[order]
    ev["p"] = 1
    return ev


def shd_datasets(f: Any, source: str) -> tuple[Any, Any, Any]:
    """The ``spikes/times``, ``spikes/units`` and ``labels`` datasets of an open SHD/SSC file, checked for
    presence and matching lengths (``EventFormatError`` naming the dataset)."""
    import h5py

    for name in ("spikes/times", "spikes/units", "labels"):
        if name not in f:
            raise EventFormatError(None, f"missing HDF5 dataset {name!r}", source)
        if not isinstance(f[name], h5py.Dataset):
            raise EventFormatError(None, f"{name!r} is not an HDF5 dataset", source)
    times_ds, units_ds, labels_ds = f["spikes/times"], f["spikes/units"], f["labels"]
    if len(times_ds.shape) != 1:
        raise EventFormatError(None, f"dataset 'spikes/times' must be 1-D (one array per sample), got shape "
                               f"{times_ds.shape}", source)
    n = times_ds.shape[0]
    if units_ds.shape != times_ds.shape:
        raise EventFormatError(None, f"dataset 'spikes/units' has shape {units_ds.shape}, 'spikes/times' has "
                               f"{times_ds.shape}", source)
    if labels_ds.shape != (n,):
        raise EventFormatError(None, f"dataset 'labels' has shape {labels_ds.shape}, expected ({n},)", source)
    return times_ds, units_ds, labels_ds


def read_shd(path: str | os.PathLike[str], *, time_unit: float = 1e-6, num_units: int = SHD_UNITS,
             duration: int | None = None, limit: int | None = None) -> tuple[EventBatch, np.ndarray]:
    """Read an SHD HDF5 file: ``(batch over (num_units,) without polarity, labels [N])``.

    Spike times (seconds) become integer ticks ``round(t / time_unit)``; each sample is sorted by time.
    ``duration``: window in ticks (default: one past the largest tick). ``limit``: read only the first samples.

    ``EventFormatError`` names the dataset when one is missing, ragged arrays disagree in length, a unit is
    outside ``[0, num_units)``, a time is negative or not finite, or there are more/fewer labels than samples.
    """
    import h5py  # optional dependency (extra "events")

    src = str(path)
    if not (math.isfinite(time_unit) and time_unit > 0):
        raise ValueError(f"time_unit must be > 0 seconds, got {time_unit!r}")
    try:
        handle = h5py.File(src, "r")
    except OSError as e:
        raise EventFormatError(None, f"not a readable HDF5 file ({e})", src) from None
    with handle as f:
        times_ds, units_ds, labels_ds = shd_datasets(f, src)
        n = times_ds.shape[0]
        count = n if limit is None else min(n, int(limit))
        times = times_ds[:count]
        units = units_ds[:count]
        labels = np.asarray(labels_ds[:count])
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
        raise EventFormatError(None, "dataset 'labels' must hold non-negative integers", src)
    streams = [shd_sample_events(times[i], units[i], index=i, num_units=num_units, time_unit=time_unit,
                                 source=src) for i in range(count)]
    t_max = max((int(s["t"][-1]) for s in streams if s.size), default=0)
    window = t_max + 1 if duration is None else int(duration)
    batch = EventBatch.from_list(streams, (int(num_units),), polarity=False, time_unit=time_unit, duration=window)
    return batch, labels.astype(np.int64)

