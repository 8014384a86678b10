"""DVS Gesture (Amir et al., 2017) in its official form: AEDAT 3.1 recordings with a labels CSV per recording.

Layout of the official download (``DvsGesture/``)::

    user01_fluorescent.aedat            one recording: a subject under one lighting condition (the session)
    user01_fluorescent_labels.csv       class,startTime_usec,endTime_usec   (one gesture per row, class 1..11)
    trials_to_train.txt                 the recordings of the official training split, one file name a line
    trials_to_test.txt                  the recordings of the official test split

AEDAT 3.1: ASCII header lines starting with ``#`` (the first is ``#!AER-DAT3.1``), ending with ``#!END-HEADER``;
then packets, each a 28-byte little-endian header::

    int16 eventType  int16 eventSource  int32 eventSize  int32 eventTSOffset  int32 eventTSOverflow
    int32 eventCapacity  int32 eventNumber  int32 eventValid

followed by ``eventNumber * eventSize`` bytes. Polarity events (``eventType == 1``, ``eventSize == 8``) are
``uint32 data, int32 timestamp``: bit 0 valid, bit 1 polarity (1 = ON), bits 2..16 y, bits 17..31 x; the
timestamp in microseconds is ``eventTSOverflow << 31 | timestamp``. Packets of other types (special events, frames,
IMU) are skipped; invalid events (bit 0 clear) are dropped. The DVS128 sensor is 128x128; events become
``addr = y * 128 + x``.

Malformed input raises :class:`~spikefed.events.aer.EventFormatError` naming the file and the byte offset.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .aer import EVENT_DTYPE, EventFormatError

__all__ = ["DVS_GESTURE_SHAPE", "DVS_GESTURE_CLASSES", "decode_aedat31", "read_aedat31", "read_gesture_labels",
           "read_trial_list"]

#: DVS128 sensor ``(H, W)``.
DVS_GESTURE_SHAPE: tuple[int, int] = (128, 128)
#: Gesture classes (labels 1..11 in the CSV become 0..10).
DVS_GESTURE_CLASSES = 11
_HEADER = 28
_POLARITY = 1
_END = b"#!END-HEADER"
_PACKET = np.dtype([("type", "<i2"), ("source", "<i2"), ("size", "<i4"), ("ts_offset", "<i4"),
                    ("ts_overflow", "<i4"), ("capacity", "<i4"), ("number", "<i4"), ("valid", "<i4")])


def _skip_header(data: bytes, source: str | None) -> int:
    if not data.startswith(b"#!AER-DAT3"):
        raise EventFormatError(0, "not an AEDAT 3.x file (the first line must be '#!AER-DAT3.1')", source)
    end = data.find(_END)
    if end < 0:
        raise EventFormatError(len(data), "header without '#!END-HEADER'", source)
    nl = data.find(b"\n", end)
    return len(data) if nl < 0 else nl + 1


def decode_aedat31(data: bytes, *, shape: tuple[int, int] = DVS_GESTURE_SHAPE,
                   source: str | None = None) -> np.ndarray:
    """AEDAT 3.1 bytes -> the valid polarity events over ``shape``, sorted by ``t`` (stable)."""
    pos = _skip_header(data, source)
    height, width = shape
    chunks: list[np.ndarray] = []
    while pos < len(data):
        if len(data) - pos < _HEADER:
            raise EventFormatError(pos, f"truncated packet header ({len(data) - pos} of {_HEADER} bytes)", source)
        head = np.frombuffer(data, dtype=_PACKET, count=1, offset=pos)[0]
        size, number = int(head["size"]), int(head["number"])
        if size < 1 or number < 0:
            raise EventFormatError(pos, f"packet header with eventSize={size}, eventNumber={number}", source)
        body = pos + _HEADER
        end = body + size * number
        if end > len(data):
            raise EventFormatError(pos, f"packet of {number} events x {size} bytes runs past the end of the file "
                                   f"({len(data) - body} bytes left)", source)
        if int(head["type"]) == _POLARITY:
            if size != 8:
                raise EventFormatError(pos, f"polarity packet with eventSize={size}, expected 8", source)
            rec = np.frombuffer(data, dtype=np.dtype([("data", "<u4"), ("ts", "<i4")]), count=number, offset=body)
            word = rec["data"].astype(np.int64)
            valid = (word & 1) == 1
            x = (word >> 17) & 0x7FFF
            y = (word >> 2) & 0x7FFF
            bad = np.flatnonzero(valid & ((x >= width) | (y >= height)))
            if bad.size:
                i = int(bad[0])
                raise EventFormatError(body + 8 * i, f"event ({int(x[i])}, {int(y[i])}) outside the "
                                       f"{width}x{height} sensor", source)
            ev = np.empty(int(valid.sum()), dtype=EVENT_DTYPE)
            ev["t"] = (int(head["ts_overflow"]) << 31) | rec["ts"][valid].astype(np.int64)
            ev["addr"] = y[valid] * width + x[valid]
            ev["p"] = (word[valid] >> 1) & 1
            chunks.append(ev)
        pos = end
    out = np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)
    if out.size and np.any(np.diff(out["t"]) < 0):
        out = out[np.argsort(out["t"], kind="stable")]
    return out


def read_aedat31(path: str | os.PathLike[str], *, shape: tuple[int, int] = DVS_GESTURE_SHAPE) -> np.ndarray:
    """Read one AEDAT 3.1 recording (see :func:`decode_aedat31`)."""
    return decode_aedat31(Path(path).read_bytes(), shape=shape, source=str(path))


def read_gesture_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """A DVS Gesture labels CSV -> ``[G, 3]`` int64 rows ``(label 0..10, start_us, end_us)``.

    ``EventFormatError`` (naming the file and line) for a wrong header, a row that is not three integers, a class
    outside 1..11 or ``end <= start``."""
    src = str(path)
    rows: list[tuple[int, int, int]] = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["class", "startTime_usec", "endTime_usec"]:
            raise EventFormatError(None, f"line 1: expected the header 'class,startTime_usec,endTime_usec', got "
                                   f"{header!r}", src)
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                cls, start, end = (int(c) for c in row)
            except ValueError:
                raise EventFormatError(None, f"line {line}: expected three integers, got {row!r}", src) from None
            if not 1 <= cls <= DVS_GESTURE_CLASSES:
                raise EventFormatError(None, f"line {line}: class {cls} outside 1..{DVS_GESTURE_CLASSES}", src)
            if end <= start or start < 0:
                raise EventFormatError(None, f"line {line}: need 0 <= startTime < endTime, got {start}, {end}",
                                       src)
            rows.append((cls - 1, start, end))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def read_trial_list(path: str | os.PathLike[str]) -> list[str]:
    """``trials_to_train.txt`` / ``trials_to_test.txt``: the recording file names, one a line (blank lines
    skipped)."""
    names = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    for n in names:
        if "/" in n or "\\" in n or not n.endswith(".aedat"):
            raise EventFormatError(None, f"entry {n!r} is not a bare '*.aedat' file name", str(path))
    return names
