"""Address-event representation (AER): spike tensors <-> event streams <-> a small binary file format.

An event is ``(t, addr, p)``: integer timestamp ``t`` (ticks of a time unit), flat address ``addr`` into a
spatial shape (``np.ravel_multi_index`` order, e.g. ``y * W + x`` for a sensor of shape ``(H, W)``) and polarity
``p`` (1 = ON, 0 = OFF). A stream is a numpy structured array of :data:`EVENT_DTYPE`, sorted by ``t``. Streams
without polarity (plain spikes) carry ``p = 1`` on every event.

Spike tensors are time-major: ``[T, *S]`` (no polarity) or ``[T, 2, *S]`` with the polarity channel first
after time, **channel 0 = ON, channel 1 = OFF** (the convention of :func:`spikefed.snn.encoding.delta`), i.e.
channel ``= 1 - p``. Values are non-negative integer counts (binary spikes are the usual case); a count ``k``
becomes ``k`` identical events, so the round trip tensor -> events -> tensor is exact.

File format ``SFAER`` version 1 (all integers little-endian)::

    header
      off  size  field
      0    8     magic  89 53 46 41 45 52 0D 0A  ("\\x89SFAER\\r\\n")
      8    2     version (u16) = 1
      10   1     encoding (u8): 0 = fixed 12-byte records, 1 = varint delta records
      11   1     flags (u8): bit 0 = polarity; other bits 0
      12   2     ndim (u16), 1..8
      14   2     reserved (u16) = 0
      16   8     time unit (f64): seconds per tick, finite and > 0
      24   8     event count (u64)
      32   4*n   dims (u32 each, >= 1): the address space, prod(dims) * (2 if polarity) < 2**32
      32+4n 4    crc32 of bytes [0, 32 + 4n)
    chunks, back to back until the end of the file (none for an empty stream)
      0    4     events in the chunk (u32, >= 1)
      4    4     payload size in bytes (u32)
      8    8     t_base (i64, >= 0): timestamp of the chunk's first event
      16   size  payload: one record per event
      16+size 4  crc32 of the chunk header and payload (bytes [0, 16 + size) of the chunk)

Records use a key ``k = 2 * addr + p`` with polarity and ``k = addr`` without:

- fixed (encoding 0): ``t`` (i64, absolute) then ``k`` (u32): 12 bytes per event;
- varint (encoding 1): ``varint(t - t_prev)`` then ``varint(k)``, where ``t_prev`` is the previous event's
  timestamp (``t_base`` for the chunk's first event) and ``varint`` is unsigned LEB128 (7 bits per byte, low
  groups first, high bit set on every byte but the last). Timestamps never decrease, so deltas are >= 0.

Every chunk checks itself (crc32), so a streaming reader validates a chunk before handing it out. Readers raise
:class:`EventFormatError` naming the byte offset and the problem: bad magic, unsupported version or encoding,
truncation, checksum mismatch, address out of range, decreasing timestamps, event count mismatch, trailing bytes.
Writers go to a temporary file in the target directory and ``os.replace`` it over the target on success only,
so a failed write leaves nothing behind (and an existing file untouched).
"""

from __future__ import annotations

import io
import math
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

import numpy as np

__all__ = [
    "EVENT_DTYPE",
    "MAGIC",
    "VERSION",
    "ENCODINGS",
    "EventFormatError",
    "EventBatch",
    "AERHeader",
    "AERSize",
    "AERReader",
    "AERWriter",
    "make_events",
    "as_events",
    "tensor_to_events",
    "events_to_tensor",
    "encode_events",
    "decode_events",
    "write_events",
    "read_events",
    "iter_events",
    "aer_size",
    "bitmap_bytes",
]

#: One event: timestamp (ticks), flat address, polarity (1 = ON, 0 = OFF).
EVENT_DTYPE = np.dtype([("t", "<i8"), ("addr", "<u4"), ("p", "u1")])

#: First 8 bytes of an SFAER file.
MAGIC = b"\x89SFAER\r\n"
#: The format version written (and the only one read).
VERSION = 1
#: Record encodings by name, with their code in the header.
ENCODINGS: dict[str, int] = {"fixed": 0, "varint": 1}

_FIXED_HEAD = struct.Struct("<8sHBBHHdQ")  # magic .. event count: 32 bytes
_CHUNK_HEAD = struct.Struct("<IIq")  # count, payload size, t_base: 16 bytes
_CRC = struct.Struct("<I")
_FIXED_RECORD = np.dtype([("t", "<i8"), ("k", "<u4")])  # 12 bytes, packed
_MAX_DIMS = 8
_MAX_KEYS = 2**32
_MAX_VARINT = 10  # bytes of a 64-bit LEB128 value
DEFAULT_CHUNK = 65536


class EventFormatError(ValueError):
    """A malformed event file. ``offset`` is the byte offset of the problem (``None`` where bytes do not apply, e.g.
    a missing HDF5 dataset); the message names it and what is wrong."""

    def __init__(self, offset: int | None, problem: str, source: str | None = None) -> None:
        self.offset = None if offset is None else int(offset)
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        at = "" if self.offset is None else f"byte {self.offset}: "
        super().__init__(f"{where}{at}{problem}")


# --------------------------------------------------------------------------------------------------
# event arrays
# --------------------------------------------------------------------------------------------------


def make_events(t: Any, addr: Any, p: Any = None) -> np.ndarray:
    """A stream of :data:`EVENT_DTYPE` from equal-length sequences (``p=None``: all ON, ``p = 1``).

    Values are range-checked (``t`` in int64, ``addr`` in uint32, ``p`` in {0, 1}); the order is kept as given.
    """
    t_arr = np.asarray(t)
    a_arr = np.asarray(addr)
    n = t_arr.size
    p_arr = np.ones(n, dtype=np.int64) if p is None else np.asarray(p)
    if t_arr.ndim != 1 or a_arr.shape != t_arr.shape or p_arr.shape != t_arr.shape:
        raise ValueError(f"t, addr and p must be 1-D of one length, got shapes {t_arr.shape}, {a_arr.shape}, "
                         f"{p_arr.shape}")
    for name, arr in (("t", t_arr), ("addr", a_arr), ("p", p_arr)):
        if arr.size and not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.bool_):
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise ValueError(f"{name} must hold integers")
    if a_arr.size and (a_arr.min() < 0 or a_arr.max() >= _MAX_KEYS):
        raise ValueError(f"addr must lie in [0, 2**32), got range [{a_arr.min()}, {a_arr.max()}]")
    if p_arr.size and (p_arr.min() < 0 or p_arr.max() > 1):
        raise ValueError(f"p must be 0 (OFF) or 1 (ON), got range [{p_arr.min()}, {p_arr.max()}]")
    out = np.empty(n, dtype=EVENT_DTYPE)
    out["t"] = t_arr
    out["addr"] = a_arr
    out["p"] = p_arr
    return out


def as_events(events: Any) -> np.ndarray:
    """``events`` as a 1-D array of :data:`EVENT_DTYPE` (a structured array with fields t, addr, p; copied
    only when the dtype differs)."""
    arr = np.asarray(events)
    if arr.dtype == EVENT_DTYPE and arr.ndim == 1:
        return arr
    names = arr.dtype.names or ()
    if arr.ndim != 1 or not {"t", "addr", "p"} <= set(names):
        raise ValueError(f"expected a 1-D structured array with fields t, addr, p, got dtype {arr.dtype} and "
                         f"shape {arr.shape}")
    return make_events(arr["t"], arr["addr"], arr["p"])


@dataclass(frozen=True, eq=False)
class EventBatch:
    """Event streams of many samples in one array (CSR layout).

    ``events[offsets[i]:offsets[i + 1]]`` is sample ``i``'s stream, sorted by ``t``; every sample spans the
    window ``[0, duration)`` ticks of ``time_unit`` seconds; ``shape`` is the address space.
    """

    events: np.ndarray
    offsets: np.ndarray
    shape: tuple[int, ...]
    polarity: bool
    time_unit: float
    duration: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "events", as_events(self.events))
        off = np.asarray(self.offsets, dtype=np.int64)
        if off.ndim != 1 or off.size < 1 or off[0] != 0 or off[-1] != len(self.events) or np.any(np.diff(off) < 0):
            raise ValueError("offsets must be non-decreasing, start at 0 and end at len(events)")
        object.__setattr__(self, "offsets", off)
        object.__setattr__(self, "shape", check_shape(self.shape))
        if not (math.isfinite(self.time_unit) and self.time_unit > 0):
            raise ValueError(f"time_unit must be finite and > 0, got {self.time_unit!r}")
        if int(self.duration) < 1:
            raise ValueError(f"duration must be >= 1 tick, got {self.duration!r}")
        object.__setattr__(self, "duration", int(self.duration))

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples")
        i %= n
        return self.events[self.offsets[i]:self.offsets[i + 1]]

    def counts(self) -> np.ndarray:
        """Events per sample ``[N]``."""
        return np.diff(self.offsets)

    def sample_index(self) -> np.ndarray:
        """The sample of every event ``[E]`` (int64)."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.counts())

    def select(self, index: Sequence[int] | np.ndarray) -> "EventBatch":
        """The samples ``index`` (in that order) as a new batch."""
        idx = np.asarray(index, dtype=np.int64)
        counts = self.counts()[idx]
        parts = [self.events[self.offsets[i]:self.offsets[i + 1]] for i in idx]
        events = np.concatenate(parts) if parts else np.empty(0, EVENT_DTYPE)
        return EventBatch(events, np.concatenate([[0], np.cumsum(counts)]), self.shape, self.polarity,
                          self.time_unit, self.duration)

    @classmethod
    def from_list(cls, streams: Sequence[np.ndarray], shape: Sequence[int], *, polarity: bool, time_unit: float,
                  duration: int) -> "EventBatch":
        """A batch from one stream per sample."""
        arrays = [as_events(s) for s in streams]
        counts = np.array([a.size for a in arrays], dtype=np.int64)
        events = np.concatenate(arrays) if arrays else np.empty(0, EVENT_DTYPE)
        return cls(events, np.concatenate([[0], np.cumsum(counts)]), tuple(shape), polarity, time_unit, duration)


def check_shape(shape: Any) -> tuple[int, ...]:
    try:
        dims = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"shape must be a sequence of ints, got {shape!r}") from None
    if not 1 <= len(dims) <= _MAX_DIMS or any(d < 1 for d in dims):
        raise ValueError(f"shape must have 1..{_MAX_DIMS} dims, each >= 1, got {shape!r}")
    return dims


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def tensor_to_events(spikes: Any, *, polarity: bool = False) -> np.ndarray:
    """Spike tensor -> event stream sorted by ``(t, addr, p descending)``.

    Args:
        spikes: ``[T, *S]`` (``polarity=False``) or ``[T, 2, *S]`` (channel 0 = ON, 1 = OFF), numpy or torch,
            with non-negative integer values (a count ``k`` gives ``k`` identical events).
        polarity: whether axis 1 is the polarity channel.

    Returns:
        :data:`EVENT_DTYPE` array; ``t`` is the time index, ``addr`` the flat index into ``S``.
    """
    a = _to_numpy(spikes)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"spikes must be numeric, got dtype {a.dtype}")
    min_dim = 3 if polarity else 2
    if a.ndim < min_dim or (polarity and a.shape[1] != 2):
        want = "[T, 2, *S]" if polarity else "[T, *S]"
        raise ValueError(f"expected spikes of shape {want}, got {list(a.shape)}")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise ValueError("spikes must be finite")
    if a.size and (a.min() < 0 or np.any(a != np.floor(a))):
        raise ValueError("spikes must hold non-negative integer counts (binary spikes: 0 or 1)")
    steps = a.shape[0]
    space = a.shape[2:] if polarity else a.shape[1:]
    n_addr = math.prod(space)
    if n_addr * (2 if polarity else 1) > _MAX_KEYS:
        raise ValueError(f"address space {tuple(space)} is too large for 32-bit keys")
    if polarity:
        flat = a.reshape(steps, 2, n_addr).transpose(0, 2, 1).reshape(-1)  # order: t, addr, channel
        channels = 2
    else:
        flat = a.reshape(-1)
        channels = 1
    idx = np.flatnonzero(flat)
    counts = flat[idx].astype(np.int64)
    if idx.size and counts.max() > 1:
        idx = np.repeat(idx, counts)
    out = np.empty(idx.size, dtype=EVENT_DTYPE)
    out["t"] = idx // (n_addr * channels)
    rest = idx % (n_addr * channels)
    out["addr"] = rest // channels
    out["p"] = 1 - rest % channels if polarity else 1
    return out


def events_to_tensor(events: Any, num_steps: int, shape: Sequence[int], *, polarity: bool = False,
                     dtype: Any = np.float32) -> np.ndarray:
    """Event stream -> count tensor ``[T, *shape]`` or ``[T, 2, *shape]`` (channel 0 = ON, 1 = OFF).

    Every event must have ``0 <= t < num_steps`` and ``addr < prod(shape)`` (``ValueError`` otherwise); without
    polarity every event must have ``p = 1``. Inverse of :func:`tensor_to_events`.
    """
    ev = as_events(events)
    dims = check_shape(shape)
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    n_addr = math.prod(dims)
    _validate_stream(ev, n_addr, polarity, sorted_=False)
    if ev.size and ev["t"].max() >= num_steps:
        raise ValueError(f"event timestamps must be < num_steps={num_steps}, got max {ev['t'].max()}")
    channels = 2 if polarity else 1
    channel = (1 - ev["p"].astype(np.int64)) if polarity else 0
    flat = (ev["t"] * channels + channel) * n_addr + ev["addr"].astype(np.int64)
    counts = np.bincount(flat, minlength=num_steps * channels * n_addr)
    lead = (num_steps, 2) if polarity else (num_steps,)
    return counts.reshape(*lead, *dims).astype(dtype)


def _validate_stream(ev: np.ndarray, n_addr: int, polarity: bool, *, sorted_: bool = True,
                     t_floor: int | None = None) -> None:
    """``ValueError`` unless addresses are in range, polarities valid, timestamps >= 0 (and non-decreasing,
    and >= ``t_floor``, when ``sorted_``)."""
    if not ev.size:
        return
    if ev["t"].min() < 0:
        raise ValueError(f"timestamps must be >= 0, got {ev['t'].min()}")
    if ev["addr"].max() >= n_addr:
        raise ValueError(f"address {ev['addr'].max()} out of range for an address space of {n_addr}")
    if ev["p"].max() > 1:
        raise ValueError("p must be 0 (OFF) or 1 (ON)")
    if not polarity and ev["p"].min() != 1:
        raise ValueError("a stream without polarity must have p = 1 on every event (OFF events need polarity=True)")
    if sorted_:
        if np.any(np.diff(ev["t"]) < 0):
            i = int(np.flatnonzero(np.diff(ev["t"]) < 0)[0])
            raise ValueError(f"timestamps must be non-decreasing: event {i + 1} has t={ev['t'][i + 1]} after "
                             f"t={ev['t'][i]}")
        if t_floor is not None and ev["t"][0] < t_floor:
            raise ValueError(f"timestamps must be non-decreasing across writes: t={ev['t'][0]} after t={t_floor}")


# --------------------------------------------------------------------------------------------------
# varints (unsigned LEB128), vectorised
# --------------------------------------------------------------------------------------------------


def _varint_encode(values: np.ndarray) -> np.ndarray:
    """Unsigned LEB128 encoding of ``values`` (uint64), concatenated, as a uint8 array."""
    v = values.astype(np.uint64, copy=False)
    nbytes = np.ones(v.size, dtype=np.int64)
    for k in range(1, _MAX_VARINT):
        nbytes += v >= np.uint64(1) << np.uint64(7 * k)
    starts = np.cumsum(nbytes) - nbytes
    out = np.empty(int(nbytes.sum()), dtype=np.uint8)
    for k in range(int(nbytes.max()) if v.size else 0):
        sel = nbytes > k
        byte = (v[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = np.where(nbytes[sel] > k + 1, np.uint64(0x80), np.uint64(0))
        out[starts[sel] + k] = (byte | more).astype(np.uint8)
    return out


def _varint_decode(buf: np.ndarray, base: int, source: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Decode concatenated varints. Returns ``(values uint64, start byte of each value)``; ``base`` is the file
    offset of ``buf[0]`` (for error messages)."""
    if not buf.size:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    last = (buf & 0x80) == 0
    if not last[-1]:
        start = int(np.flatnonzero(last)[-1]) + 1 if last.any() else 0
        raise EventFormatError(base + start, "truncated varint: the payload ends inside a value", source)
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > _MAX_VARINT:
        i = int(np.flatnonzero(lengths > _MAX_VARINT)[0])
        raise EventFormatError(base + int(starts[i]), f"varint longer than {_MAX_VARINT} bytes", source)
    ten = np.flatnonzero(lengths == _MAX_VARINT)
    if ten.size and np.any(buf[ends[ten]] > 1):
        i = int(ten[np.flatnonzero(buf[ends[ten]] > 1)[0]])
        raise EventFormatError(base + int(starts[i]), "varint overflows 64 bits", source)
    owner = np.repeat(np.arange(ends.size), lengths)
    shift = (np.arange(buf.size) - starts[owner]).astype(np.uint64) * np.uint64(7)
    parts = (buf & 0x7F).astype(np.uint64) << shift
    return np.add.reduceat(parts, starts), starts


# --------------------------------------------------------------------------------------------------
# header
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AERHeader:
    """What an SFAER file says about itself."""

    shape: tuple[int, ...]
    polarity: bool
    time_unit: float
    count: int
    encoding: str
    version: int = VERSION

    @property
    def num_addresses(self) -> int:
        return math.prod(self.shape)

    @property
    def size(self) -> int:
        """Header length in bytes."""
        return _FIXED_HEAD.size + 4 * len(self.shape) + _CRC.size


def _header_bytes(shape: tuple[int, ...], polarity: bool, time_unit: float, count: int, encoding: str) -> bytes:
    head = _FIXED_HEAD.pack(MAGIC, VERSION, ENCODINGS[encoding], 1 if polarity else 0, len(shape), 0,
                            float(time_unit), int(count))
    head += struct.pack(f"<{len(shape)}I", *shape)
    return head + _CRC.pack(zlib.crc32(head))


def _check_header_args(shape: Any, polarity: bool, time_unit: float, encoding: str) -> tuple[int, ...]:
    dims = check_shape(shape)
    if any(d >= 2**32 for d in dims):
        raise ValueError(f"dims must be < 2**32, got {dims}")
    if math.prod(dims) * (2 if polarity else 1) > _MAX_KEYS:
        raise ValueError(f"address space {dims} is too large for 32-bit keys")
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; valid: {', '.join(ENCODINGS)}")
    if isinstance(time_unit, bool) or not isinstance(time_unit, (int, float)) or not (
            math.isfinite(time_unit) and time_unit > 0):
        raise ValueError(f"time_unit must be a finite float > 0 (seconds per tick), got {time_unit!r}")
    return dims


def _read_exact(f: IO[bytes], n: int, offset: int, what: str, source: str | None) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EventFormatError(offset + len(data), f"truncated {what}: expected {n} bytes from byte {offset}, the "
                               f"file ends after {len(data)}", source)
    return data


def _parse_header(f: IO[bytes], source: str | None) -> AERHeader:
    first = f.read(_FIXED_HEAD.size)
    if len(first) < len(MAGIC) or first[:len(MAGIC)] != MAGIC:
        raise EventFormatError(0, f"bad magic {first[:len(MAGIC)]!r}, expected {MAGIC!r} (not an SFAER file)",
                               source)
    if len(first) != _FIXED_HEAD.size:
        raise EventFormatError(len(first), f"truncated header: expected {_FIXED_HEAD.size} bytes, the file ends "
                               f"after {len(first)}", source)
    _, version, enc, flags, ndim, reserved, time_unit, count = _FIXED_HEAD.unpack(first)
    if version != VERSION:
        raise EventFormatError(8, f"unsupported version {version} (this reader reads version {VERSION})", source)
    if not 1 <= ndim <= _MAX_DIMS:
        raise EventFormatError(12, f"ndim {ndim} out of range 1..{_MAX_DIMS}", source)
    rest = _read_exact(f, 4 * ndim + _CRC.size, _FIXED_HEAD.size, "header (dims and checksum)", source)
    crc_at = _FIXED_HEAD.size + 4 * ndim
    (stored,) = _CRC.unpack(rest[-4:])
    actual = zlib.crc32(first + rest[:-4])
    if stored != actual:
        raise EventFormatError(crc_at, f"header checksum mismatch: stored {stored:#010x}, computed {actual:#010x}",
                               source)
    names = {code: name for name, code in ENCODINGS.items()}
    if enc not in names:
        raise EventFormatError(10, f"unknown record encoding {enc}", source)
    if flags & ~1:
        raise EventFormatError(11, f"reserved flag bits set ({flags:#04x})", source)
    if reserved:
        raise EventFormatError(14, f"reserved field is {reserved}, expected 0", source)
    if not (math.isfinite(time_unit) and time_unit > 0):
        raise EventFormatError(16, f"time unit {time_unit!r} is not a finite number > 0", source)
    dims = struct.unpack(f"<{ndim}I", rest[:-4])
    for i, d in enumerate(dims):
        if d < 1:
            raise EventFormatError(_FIXED_HEAD.size + 4 * i, f"dimension {i} is 0", source)
    polarity = bool(flags & 1)
    if math.prod(dims) * (2 if polarity else 1) > _MAX_KEYS:
        raise EventFormatError(_FIXED_HEAD.size, f"address space {dims} too large for 32-bit keys", source)
    return AERHeader(tuple(dims), polarity, float(time_unit), int(count), names[enc], int(version))


# --------------------------------------------------------------------------------------------------
# chunks
# --------------------------------------------------------------------------------------------------


def _encode_chunk(ev: np.ndarray, polarity: bool, encoding: str) -> bytes:
    keys = ev["addr"].astype(np.uint64)
    if polarity:
        keys = keys * np.uint64(2) + ev["p"].astype(np.uint64)
    if encoding == "fixed":
        rec = np.empty(ev.size, dtype=_FIXED_RECORD)
        rec["t"] = ev["t"]
        rec["k"] = keys
        payload = rec.tobytes()
    else:
        t = ev["t"]
        deltas = np.diff(t, prepend=t[0]).astype(np.uint64)
        values = np.empty(2 * ev.size, dtype=np.uint64)
        values[0::2] = deltas
        values[1::2] = keys
        payload = _varint_encode(values).tobytes()
    if len(payload) >= 2**32:
        raise ValueError("chunk payload exceeds 4 GiB; use a smaller chunk_size")
    head = _CHUNK_HEAD.pack(ev.size, len(payload), int(ev["t"][0]))
    return head + payload + _CRC.pack(zlib.crc32(head + payload))


def _decode_chunk(head: bytes, payload: bytes, offset: int, header: AERHeader, t_prev: int,
                  source: str | None) -> np.ndarray:
    """Records of one chunk (already checksum-verified) -> events; ``offset`` is the chunk's file offset."""
    count, size, t_base = _CHUNK_HEAD.unpack(head)
    base = offset + _CHUNK_HEAD.size
    if header.encoding == "fixed":
        rec = np.frombuffer(payload, dtype=_FIXED_RECORD)
        t = rec["t"].astype(np.int64)
        keys = rec["k"].astype(np.uint64)
        rec_start = np.arange(count, dtype=np.int64) * _FIXED_RECORD.itemsize
        if t[0] != t_base:
            raise EventFormatError(offset + 8, f"chunk t_base {t_base} differs from its first record's t={t[0]}",
                                   source)
        bad = np.flatnonzero(np.diff(t) < 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise EventFormatError(base + int(rec_start[i]), f"non-monotonic timestamp: event t={t[i]} after "
                                   f"t={t[i - 1]}", source)
    else:
        values, starts = _varint_decode(np.frombuffer(payload, dtype=np.uint8), base, source)
        if values.size != 2 * count:
            raise EventFormatError(base, f"chunk payload holds {values.size} varints, expected {2 * count} "
                                   f"(2 per event for {count} events)", source)
        deltas = values[0::2]
        keys = values[1::2]
        rec_start = starts[0::2]
        if deltas[0] != 0:
            raise EventFormatError(base, f"first delta of a chunk must be 0, got {deltas[0]}", source)
        limit = np.uint64(2**63 - 1 - t_base)
        csum = np.cumsum(deltas)
        wrapped = np.flatnonzero((csum[1:] < csum[:-1]) | (csum[1:] > limit))
        if wrapped.size:
            i = int(wrapped[0]) + 1
            raise EventFormatError(base + int(rec_start[i]), "timestamp overflows int64", source)
        t = t_base + csum.astype(np.int64)
    if t[0] < t_prev:
        raise EventFormatError(offset + 8 if header.encoding == "varint" else base,
                               f"non-monotonic timestamp: chunk starts at t={t[0]} after t={t_prev}", source)
    if header.polarity:
        addr = keys >> np.uint64(1)
        p = (keys & np.uint64(1)).astype(np.uint8)
    else:
        addr = keys
        p = np.ones(count, dtype=np.uint8)
    bad = np.flatnonzero(addr >= np.uint64(header.num_addresses))
    if bad.size:
        i = int(bad[0])
        raise EventFormatError(base + int(rec_start[i]), f"address {int(addr[i])} out of range for shape "
                               f"{header.shape} ({header.num_addresses} addresses)", source)
    out = np.empty(count, dtype=EVENT_DTYPE)
    out["t"] = t
    out["addr"] = addr
    out["p"] = p
    return out


class AERReader:
    """Streaming reader of an SFAER file (a path, or a binary file object positioned at the header).

    The header is parsed on construction (:attr:`header`); iterating yields one event array per stored chunk,
    each verified (checksum, ranges, order) before it is yielded. Use as a context manager, or call
    :meth:`close`, when a path was given.
    """

    def __init__(self, source: str | os.PathLike[str] | IO[bytes]) -> None:
        if isinstance(source, (str, os.PathLike)):
            self._file: IO[bytes] = open(source, "rb")
            self._owned = True
            self.source: str | None = str(source)
        else:
            self._file = source
            self._owned = False
            self.source = getattr(source, "name", None) if isinstance(getattr(source, "name", None), str) else None
        try:
            self.header = _parse_header(self._file, self.source)
        except BaseException:
            self.close()
            raise
        self._started = False

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __enter__(self) -> "AERReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._started:
            raise RuntimeError("an AERReader can be iterated once")
        self._started = True
        return self._chunks()

    def _chunks(self) -> Iterator[np.ndarray]:
        f, src, header = self._file, self.source, self.header
        offset = header.size
        seen = 0
        t_prev = 0
        index = 0
        while True:
            head = f.read(_CHUNK_HEAD.size)
            if not head:
                break
            if len(head) != _CHUNK_HEAD.size:
                raise EventFormatError(offset + len(head), f"truncated chunk {index} header: expected "
                                       f"{_CHUNK_HEAD.size} bytes from byte {offset}, the file ends after "
                                       f"{len(head)}", src)
            count, size, t_base = _CHUNK_HEAD.unpack(head)
            if count == 0:
                raise EventFormatError(offset, f"chunk {index} has 0 events", src)
            if seen + count > header.count:
                raise EventFormatError(offset, f"chunk {index} brings the event count to {seen + count}, beyond "
                                       f"the {header.count} the header declares", src)
            if header.encoding == "fixed" and size != count * _FIXED_RECORD.itemsize:
                raise EventFormatError(offset + 4, f"chunk {index} payload size {size} != {count} events x "
                                       f"{_FIXED_RECORD.itemsize} bytes", src)
            if header.encoding == "varint" and not 2 * count <= size <= 2 * _MAX_VARINT * count:
                raise EventFormatError(offset + 4, f"chunk {index} payload size {size} impossible for {count} "
                                       "varint records", src)
            if t_base < 0:
                raise EventFormatError(offset + 8, f"chunk {index} t_base {t_base} is negative", src)
            body = f.read(size + _CRC.size)
            if len(body) != size + _CRC.size:
                raise EventFormatError(offset + _CHUNK_HEAD.size + len(body), f"truncated chunk {index}: payload and "
                                       f"checksum need {size + _CRC.size} bytes from byte {offset + _CHUNK_HEAD.size}, "
                                       f"the file ends after {len(body)}", src)
            payload = body[:size]
            (stored,) = _CRC.unpack(body[size:])
            actual = zlib.crc32(head + payload)
            if stored != actual:
                raise EventFormatError(offset + _CHUNK_HEAD.size + size, f"chunk {index} checksum mismatch: stored "
                                       f"{stored:#010x}, computed {actual:#010x}", src)
            events = _decode_chunk(head, payload, offset, header, t_prev, src)
            t_prev = int(events["t"][-1])
            seen += count
            offset += _CHUNK_HEAD.size + size + _CRC.size
            index += 1
            yield events
        if seen != header.count:
            raise EventFormatError(offset, f"file ends after {seen} events, header declares {header.count}", src)

    def read_all(self) -> np.ndarray:
        """All (remaining) events as one array."""
        chunks = list(self)
        return np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)


class AERWriter:
    """Streaming, atomic writer of an SFAER file.

    Events go in with :meth:`write` (any number of calls, each sorted and not earlier than the previous one)
    and are cut into chunks of exactly ``chunk_size`` events (the last one shorter), so the bytes do not depend
    on how the writes were split. Everything goes to a temporary file beside ``path``; :meth:`close` completes
    the header and moves it over ``path`` (``os.replace``); :meth:`abort` (or an exception inside a ``with``
    block, or any failing write) deletes it, leaving ``path`` as it was.
    """

    def __init__(self, path: str | os.PathLike[str], shape: Sequence[int], *, polarity: bool = False,
                 time_unit: float = 1e-6, encoding: str = "varint", chunk_size: int = DEFAULT_CHUNK) -> None:
        self.shape = _check_header_args(shape, polarity, time_unit, encoding)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not 1 <= chunk_size < 2**31:
            raise ValueError(f"chunk_size must be an int in [1, 2**31), got {chunk_size!r}")
        self.path = Path(path)
        self.polarity = bool(polarity)
        self.time_unit = float(time_unit)
        self.encoding = encoding
        self.chunk_size = chunk_size
        self.count = 0
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._t_last: int | None = None
        self._n_addr = math.prod(self.shape)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._tmp = Path(tmp)
        self._file: IO[bytes] | None = os.fdopen(fd, "wb")
        try:
            self._file.write(_header_bytes(self.shape, self.polarity, self.time_unit, 0, self.encoding))
        except BaseException:
            self.abort()
            raise

    @property
    def closed(self) -> bool:
        return self._file is None

    def write(self, events: Any) -> None:
        """Append events (sorted by ``t``, not earlier than the last written). ``ValueError`` on bad events, and
        the writer is aborted (nothing is left on disk)."""
        if self._file is None:
            raise ValueError("write to a closed AERWriter")
        try:
            ev = as_events(events)
            _validate_stream(ev, self._n_addr, self.polarity, t_floor=self._t_last)
            if not ev.size:
                return
            self._t_last = int(ev["t"][-1])
            self._pending.append(ev)
            self._pending_n += ev.size
            if self._pending_n >= self.chunk_size:
                buf = np.concatenate(self._pending)
                full = (buf.size // self.chunk_size) * self.chunk_size
                for start in range(0, full, self.chunk_size):
                    self._file.write(_encode_chunk(buf[start:start + self.chunk_size], self.polarity, self.encoding))
                self.count += full
                rest = buf[full:]
                self._pending = [rest] if rest.size else []
                self._pending_n = rest.size
        except BaseException:
            self.abort()
            raise

    def close(self) -> None:
        """Flush, complete the header, fsync and move the file into place."""
        if self._file is None:
            return
        f = self._file
        try:
            if self._pending_n:
                f.write(_encode_chunk(np.concatenate(self._pending), self.polarity, self.encoding))
                self.count += self._pending_n
                self._pending, self._pending_n = [], 0
            f.seek(0)
            f.write(_header_bytes(self.shape, self.polarity, self.time_unit, self.count, self.encoding))
            f.flush()
            os.fsync(f.fileno())
            f.close()
            self._file = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discard everything written (the target path is not touched)."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "AERWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# --------------------------------------------------------------------------------------------------
# whole-stream helpers
# --------------------------------------------------------------------------------------------------


def encode_events(events: Any, shape: Sequence[int], *, polarity: bool = False, time_unit: float = 1e-6,
                  encoding: str = "varint", chunk_size: int = DEFAULT_CHUNK) -> bytes:
    """The bytes of an SFAER file holding ``events`` (what :func:`write_events` writes)."""
    dims = _check_header_args(shape, polarity, time_unit, encoding)
    ev = as_events(events)
    _validate_stream(ev, math.prod(dims), polarity)
    parts = [_header_bytes(dims, polarity, time_unit, ev.size, encoding)]
    for start in range(0, ev.size, chunk_size):
        parts.append(_encode_chunk(ev[start:start + chunk_size], polarity, encoding))
    return b"".join(parts)


def decode_events(data: bytes) -> tuple[np.ndarray, AERHeader]:
    """Parse SFAER bytes: ``(events, header)``."""
    reader = AERReader(io.BytesIO(data))
    return reader.read_all(), reader.header


def write_events(path: str | os.PathLike[str], events: Any, shape: Sequence[int], *, polarity: bool = False,
                 time_unit: float = 1e-6, encoding: str = "varint", chunk_size: int = DEFAULT_CHUNK) -> int:
    """Write ``events`` to ``path`` atomically; returns the file size in bytes."""
    with AERWriter(path, shape, polarity=polarity, time_unit=time_unit, encoding=encoding,
                   chunk_size=chunk_size) as w:
        w.write(events)
    return Path(path).stat().st_size


def read_events(path: str | os.PathLike[str]) -> tuple[np.ndarray, AERHeader]:
    """Read a whole SFAER file: ``(events, header)``."""
    with AERReader(path) as r:
        return r.read_all(), r.header


def iter_events(path: str | os.PathLike[str], chunk_size: int | None = None) -> Iterator[np.ndarray]:
    """Stream the events of an SFAER file: the stored chunks, or (``chunk_size``) re-cut into arrays of exactly
    ``chunk_size`` events (the last one shorter). Each stored chunk is verified before its events are yielded."""
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be an int >= 1 or None, got {chunk_size!r}")
    with AERReader(path) as r:
        if chunk_size is None:
            yield from r
            return
        buf: list[np.ndarray] = []
        n = 0
        for chunk in r:
            buf.append(chunk)
            n += chunk.size
            while n >= chunk_size:
                cat = np.concatenate(buf)
                yield cat[:chunk_size]
                rest = cat[chunk_size:]
                buf, n = ([rest] if rest.size else []), rest.size
        if n:
            yield np.concatenate(buf)


# --------------------------------------------------------------------------------------------------
# size accounting
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AERSize:
    """Bytes of an event stream as an SFAER file vs as a dense bitmap of the same spike tensor."""

    aer_bytes: int
    bitmap_bytes: int
    events: int

    @property
    def ratio(self) -> float:
        """``aer_bytes / bitmap_bytes`` (< 1: AER is smaller)."""
        return self.aer_bytes / self.bitmap_bytes

    @property
    def bytes_per_event(self) -> float:
        return self.aer_bytes / self.events if self.events else math.nan


def bitmap_bytes(num_steps: int, shape: Sequence[int], *, polarity: bool = False) -> int:
    """Bytes of a dense 1-bit-per-cell bitmap of a ``[T, (2,) *shape]`` spike tensor: ``ceil(T * C * prod(shape)
    / 8)`` with ``C = 2`` with polarity, else 1."""
    dims = check_shape(shape)
    return -(-int(num_steps) * (2 if polarity else 1) * math.prod(dims) // 8)


def aer_size(events: Any, shape: Sequence[int], num_steps: int, *, polarity: bool = False,
             encoding: str = "varint", chunk_size: int = DEFAULT_CHUNK) -> AERSize:
    """File size of ``events`` in SFAER (header and chunk overhead included) and of the dense bitmap.

    The bitmap stores one bit per (step, channel, address), so it only represents binary tensors; the AER size is
    exact (``len(encode_events(...))``).
    """
    ev = as_events(events)
    data = encode_events(ev, shape, polarity=polarity, encoding=encoding, chunk_size=chunk_size)
    return AERSize(len(data), bitmap_bytes(num_steps, shape, polarity=polarity), int(ev.size))

