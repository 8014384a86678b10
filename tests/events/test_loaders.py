"""N-MNIST binary files (against hand-built bytes) and SHD HDF5 files (written here with h5py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spikefed.events.aer import EventFormatError, make_events
from spikefed.events.loaders import (
    decode_nmnist,
    encode_nmnist,
    load_nmnist_dir,
    read_nmnist,
    read_shd,
    write_nmnist,
)

h5py = pytest.importorskip("h5py")


def nmnist_record(x: int, y: int, p: int, t: int) -> bytes:
    """One 40-bit N-MNIST event built by hand: x in bits 39..32, y 31..24, polarity bit 23, timestamp 22..0."""
    word = (x << 32) | (y << 24) | (p << 23) | t
    return word.to_bytes(5, "big")


HAND = [(3, 5, 1, 70_000), (33, 0, 0, 70_001), (0, 33, 1, 2**23 - 1)]


def test_hand_built_bytes() -> None:
    data = b"".join(nmnist_record(*e) for e in HAND)
    # the layout, byte by byte, for the first event: x, y, polarity | t[22:16], t[15:8], t[7:0]
    assert data[:5] == bytes([3, 5, 0x80 | (70_000 >> 16), (70_000 >> 8) & 0xFF, 70_000 & 0xFF])
    ev = decode_nmnist(data)
    assert ev["t"].tolist() == [70_000, 70_001, 2**23 - 1]
    assert ev["addr"].tolist() == [5 * 34 + 3, 0 * 34 + 33, 33 * 34 + 0]
    assert ev["p"].tolist() == [1, 0, 1]
    assert encode_nmnist(ev) == data


def test_write_read_round_trip(tmp_path: Path) -> None:
    ev = make_events([10, 10, 500, 9000], [0, 34 * 34 - 1, 100, 37], [1, 0, 0, 1])
    path = tmp_path / "00001.bin"
    assert write_nmnist(path, ev) == 20
    np.testing.assert_array_equal(read_nmnist(path), ev)
    assert path.read_bytes()[5:10] == nmnist_record(33, 33, 0, 10)


def test_unsorted_files_are_sorted_stably() -> None:
    data = nmnist_record(1, 1, 1, 50) + nmnist_record(2, 2, 1, 10) + nmnist_record(3, 3, 0, 50)
    ev = decode_nmnist(data)
    assert ev["t"].tolist() == [10, 50, 50] and (ev["addr"] % 34).tolist() == [2, 1, 3]
    assert decode_nmnist(data, sort=False)["t"].tolist() == [50, 10, 50]


def test_corrupt_nmnist(tmp_path: Path) -> None:
    good = b"".join(nmnist_record(*e) for e in HAND)
    path = tmp_path / "bad.bin"
    path.write_bytes(good + b"\x01\x02")
    with pytest.raises(EventFormatError) as info:
        read_nmnist(path)
    assert info.value.offset == 15 and "byte 15" in str(info.value) and "multiple of 5" in str(info.value)
    path.write_bytes(good[:5] + nmnist_record(40, 0, 1, 3) + good[10:])
    with pytest.raises(EventFormatError, match=r"byte 5: event 1: x=40 outside"):
        read_nmnist(path)
    path.write_bytes(good[:10] + nmnist_record(0, 34, 1, 3))
    with pytest.raises(EventFormatError, match=r"byte 11: event 2: y=34 outside"):
        read_nmnist(path)
    with pytest.raises(ValueError, match="23-bit"):
        encode_nmnist(make_events([2**23], [0]))


def test_nmnist_directory(tmp_path: Path) -> None:
    for label, n in ((0, 2), (7, 1)):
        (tmp_path / str(label)).mkdir()
        for i in range(n):
            write_nmnist(tmp_path / str(label) / f"{i:05d}.bin", make_events([i, 100 + i], [label, 5]))
    batch, labels = load_nmnist_dir(tmp_path)
    assert labels.tolist() == [0, 0, 7] and batch.counts().tolist() == [2, 2, 2]
    assert batch.shape == (34, 34) and batch.duration == 102  # one past the largest timestamp, 101


def write_shd(path: Path, times: list[list[float]], units: list[list[int]], labels: list[int] | None,
              drop: str | None = None) -> None:
    with h5py.File(path, "w") as f:
        if drop != "spikes/times":
            t = f.create_dataset("spikes/times", (len(times),), dtype=h5py.vlen_dtype(np.float32))
            for i, row in enumerate(times):
                t[i] = np.asarray(row, dtype=np.float32)
        if drop != "spikes/units":
            u = f.create_dataset("spikes/units", (len(units),), dtype=h5py.vlen_dtype(np.uint16))
            for i, row in enumerate(units):
                u[i] = np.asarray(row, dtype=np.uint16)
        if labels is not None and drop != "labels":
            f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))


def test_shd_tiny_file(tmp_path: Path) -> None:
    path = tmp_path / "shd.h5"
    write_shd(path, [[0.5, 0.001, 0.25], [], [0.0126]], [[699, 3, 10], [], [0]], [4, 19, 0])
    batch, labels = read_shd(path, time_unit=1e-3)
    assert labels.tolist() == [4, 19, 0]
    assert batch.shape == (700,) and not batch.polarity
    assert batch.counts().tolist() == [3, 0, 1]
    assert batch[0]["t"].tolist() == [1, 250, 500]  # sorted by time, milliseconds
    assert batch[0]["addr"].tolist() == [3, 10, 699]
    assert batch[2]["t"].tolist() == [13]  # 12.6 ms, rounded to the tick
    assert batch.duration == 501
    batch, labels = read_shd(path, limit=1)
    assert len(batch) == 1 and batch[0]["t"].tolist() == [1000, 250_000, 500_000]


@pytest.mark.parametrize("missing", ["spikes/times", "spikes/units", "labels"])
def test_shd_missing_dataset(tmp_path: Path, missing: str) -> None:
    path = tmp_path / "shd.h5"
    write_shd(path, [[0.1]], [[1]], [0], drop=missing)
    with pytest.raises(EventFormatError, match=f"missing HDF5 dataset '{missing}'"):
        read_shd(path)


def test_shd_malformed(tmp_path: Path) -> None:
    path = tmp_path / "shd.h5"
    write_shd(path, [[0.1, 0.2]], [[1, 700]], [0])
    with pytest.raises(EventFormatError, match="sample 0: 'spikes/units' value 700 outside"):
        read_shd(path)
    write_shd(path, [[0.1, 0.2]], [[1]], [0])
    with pytest.raises(EventFormatError, match="sample 0: 'spikes/times' has 2 entries"):
        read_shd(path)
    write_shd(path, [[0.1], [0.2]], [[1], [2]], [0])
    with pytest.raises(EventFormatError, match="'labels' has shape"):
        read_shd(path)
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(EventFormatError, match="not a readable HDF5 file"):
        read_shd(path)
