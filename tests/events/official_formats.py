"""Writers of the official data set formats, byte by byte, for the tests (independent of spikefed's readers).

N-MNIST: 5 bytes per event, ``x, y, p << 7 | t >> 16, (t >> 8) & 255, t & 255``.
AEDAT 3.1: ``#!AER-DAT3.1`` header lines, ``#!END-HEADER``, packets of a 28-byte header ``<hhiiiiii`` and
``<Ii`` polarity events (bit 0 valid, bit 1 polarity, y at bit 2, x at bit 17).
SHD: HDF5 with variable-length ``spikes/times`` (float, seconds), ``spikes/units`` (uint16), ``labels``,
``extra/speaker``, ``extra/keys``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Sequence

import numpy as np


def nmnist_bytes(x: Sequence[int], y: Sequence[int], p: Sequence[int], t: Sequence[int]) -> bytes:
    out = bytearray()
    for xi, yi, pi, ti in zip(x, y, p, t):
        out += bytes([xi, yi, (pi << 7) | (ti >> 16), (ti >> 8) & 0xFF, ti & 0xFF])
    return bytes(out)


def write_nmnist_file(path: Path, x: Sequence[int], y: Sequence[int], p: Sequence[int], t: Sequence[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(nmnist_bytes(x, y, p, t))


def aedat_header() -> bytes:
    return (b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#Start-Time: 2017-01-01 00:00:00\r\n"
            b"#!END-HEADER\r\n")


def aedat_packet(events: Sequence[tuple[int, int, int, int, int]], overflow: int = 0, event_type: int = 1) -> bytes:
    """``events``: ``(x, y, p, t_low31, valid)`` tuples -> one packet (type 1 = polarity)."""
    n = len(events)
    head = struct.pack("<hhiiiiii", event_type, 1, 8, 4, overflow, n, n, n)
    body = b"".join(struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | valid, t) for x, y, p, t, valid in events)
    return head + body


def write_gesture_csv(path: Path, rows: Sequence[tuple[int, int, int]]) -> None:
    """``rows``: ``(class 1..11, start_us, end_us)``."""
    path.write_text("class,startTime_usec,endTime_usec\n" + "".join(f"{c},{s},{e}\n" for c, s, e in rows))


def write_shd_file(path: Path, times: Sequence[np.ndarray], units: Sequence[np.ndarray], labels: Sequence[int],
                   speakers: Sequence[int] | None = None) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        ft = h5py.vlen_dtype(np.dtype("float32"))
        ut = h5py.vlen_dtype(np.dtype("uint16"))
        t_ds = f.create_dataset("spikes/times", (len(times),), dtype=ft)
        u_ds = f.create_dataset("spikes/units", (len(units),), dtype=ut)
        for i, (t, u) in enumerate(zip(times, units)):
            t_ds[i] = np.asarray(t, dtype=np.float32)
            u_ds[i] = np.asarray(u, dtype=np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint8))
        if speakers is not None:
            f.create_dataset("extra/speaker", data=np.asarray(speakers, dtype=np.uint8))
        f.create_dataset("extra/keys", data=np.asarray([f"word{i}".encode() for i in range(20)]))
