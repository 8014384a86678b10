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


# -- whole data sets in the official layouts, from synthetic event digits (20x20 sensor, 0.3 s recordings) ------
def _digit_streams(n: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    from spikefed.events.datasets import event_digits

    batch, labels = event_digits(seed)
    return [batch[i] for i in range(n)], labels[:n]


def write_nmnist_set(root: Path, n_train: int, n_test: int) -> None:
    """Digits at offset (7, 7) of the 34x34 sensor: Train/<digit>/<i>.bin, Test/<digit>/<i>.bin."""
    streams, labels = _digit_streams(n_train + n_test)
    for i, (ev, label) in enumerate(zip(streams, labels)):
        split = "Train" if i < n_train else "Test"
        y, x = np.divmod(ev["addr"].astype(int), 20)
        write_nmnist_file(root / split / str(int(label)) / f"{i:05d}.bin", (x + 7).tolist(), (y + 7).tolist(),
                          ev["p"].astype(int).tolist(), ev["t"].astype(int).tolist())


def write_gesture_set(root: Path, n_train: int, n_test: int, users_train: int = 4, users_test: int = 2) -> None:
    """Digits (class = digit + 1) at offset (54, 54) of the 128x128 sensor, one gesture every 0.4 s, in
    recordings userNN_<lighting>.aedat; the first ``users_train`` users are the training split."""
    streams, labels = _digit_streams(n_train + n_test)
    root.mkdir(parents=True, exist_ok=True)
    lights = ["fluorescent", "led", "natural"]
    split_of: dict[str, list[str]] = {"train": [], "test": []}
    plan: dict[str, list[int]] = {}
    for i in range(n_train + n_test):
        train = i < n_train
        users = users_train if train else users_test
        user = (i % users) + (1 if train else users_train + 1)
        name = f"user{user:02d}_{lights[(i // users) % 2 + (0 if train else 1)]}"
        if name not in plan:
            plan[name] = []
            split_of["train" if train else "test"].append(name + ".aedat")
        plan[name].append(i)
    for name, items in plan.items():
        data = aedat_header()
        rows = []
        for k, i in enumerate(items):
            start = 1_000 + k * 400_000
            ev = streams[i]
            y, x = np.divmod(ev["addr"].astype(int), 20)
            events = list(zip((x + 54).tolist(), (y + 54).tolist(), ev["p"].astype(int).tolist(),
                              (ev["t"].astype(int) + start).tolist(), [1] * ev.size))
            data += aedat_packet(events)
            rows.append((int(labels[i]) + 1, start, start + 300_001))
        (root / f"{name}.aedat").write_bytes(data)
        write_gesture_csv(root / f"{name}_labels.csv", rows)
    for split, names in split_of.items():
        (root / f"trials_to_{split}.txt").write_text("".join(n + "\n" for n in names))


def write_shd_set(root: Path, n_train: int, n_test: int, speakers: int = 5) -> None:
    """ON events of the digits as channels ``addr`` (0..399) of 700, times in seconds; speaker ``i mod 5``."""
    streams, labels = _digit_streams(n_train + n_test)
    root.mkdir(parents=True, exist_ok=True)
    for split, lo, hi in (("train", 0, n_train), ("test", n_train, n_train + n_test)):
        on = [streams[i][streams[i]["p"] == 1] for i in range(lo, hi)]
        write_shd_file(root / f"shd_{split}.h5", [e["t"] * 1e-6 for e in on],
                       [e["addr"].astype(np.uint16) for e in on], labels[lo:hi].tolist(),
                       [i % speakers for i in range(lo, hi)])
