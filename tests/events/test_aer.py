"""AER codec and the SFAER file format: round trips, streaming, sizes, corrupt files, atomic writes."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from spikefed.events.aer import (
    EVENT_DTYPE,
    MAGIC,
    AERReader,
    AERWriter,
    EventBatch,
    EventFormatError,
    aer_size,
    bitmap_bytes,
    decode_events,
    encode_events,
    events_to_tensor,
    iter_events,
    make_events,
    read_events,
    tensor_to_events,
    write_events,
)

SEEDS = range(8)


def random_tensor(rng: np.random.Generator, polarity: bool) -> tuple[np.ndarray, tuple[int, ...]]:
    """A sparse spike tensor [T, (2,) *S] of random shape and density; a few cells hold counts > 1."""
    ndim = int(rng.integers(1, 4))
    shape = tuple(int(s) for s in rng.integers(1, 9, size=ndim))
    steps = int(rng.integers(1, 30))
    full = (steps, 2, *shape) if polarity else (steps, *shape)
    density = float(rng.uniform(0.0, 0.3))
    x = (rng.random(full) < density).astype(np.float32)
    x[rng.random(full) < 0.01] = 3.0  # counts round-trip as repeated events
    return x, shape


def test_header_layout_constants() -> None:
    assert MAGIC == b"\x89SFAER\r\n" and len(MAGIC) == 8
    data = encode_events(make_events([0], [5]), (7, 3))
    assert data[:8] == MAGIC
    version, encoding, flags, ndim, reserved = struct.unpack_from("<HBBHH", data, 8)
    assert (version, encoding, flags, ndim, reserved) == (1, 1, 0, 2, 0)
    (time_unit, count) = struct.unpack_from("<dQ", data, 16)
    assert (time_unit, count) == (1e-6, 1)
    assert struct.unpack_from("<2I", data, 32) == (7, 3)
    assert struct.unpack_from("<I", data, 40)[0] == zlib.crc32(data[:40])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("polarity", [False, True])
def test_tensor_events_file_round_trip(seed: int, polarity: bool, tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    x, shape = random_tensor(rng, polarity)
    events = tensor_to_events(x, polarity=polarity)
    assert events.dtype == EVENT_DTYPE
    assert len(events) == int(x.sum())
    assert np.all(np.diff(events["t"]) >= 0)
    np.testing.assert_array_equal(events_to_tensor(events, x.shape[0], shape, polarity=polarity), x)
    # torch input gives the same events
    np.testing.assert_array_equal(tensor_to_events(torch.from_numpy(x), polarity=polarity), events)
    for encoding in ("fixed", "varint"):
        chunk = int(rng.integers(1, 50))
        data = encode_events(events, shape, polarity=polarity, encoding=encoding, chunk_size=chunk)
        back, header = decode_events(data)
        np.testing.assert_array_equal(back, events)
        assert header.shape == shape and header.polarity == polarity and header.count == len(events)
        path = tmp_path / f"{encoding}.aer"
        size = write_events(path, events, shape, polarity=polarity, encoding=encoding, chunk_size=chunk)
        assert size == len(data) == path.stat().st_size
        assert path.read_bytes() == data
        back, _ = read_events(path)
        np.testing.assert_array_equal(events_to_tensor(back, x.shape[0], shape, polarity=polarity), x)


def test_polarity_channel_convention() -> None:
    x = np.zeros((2, 2, 3), dtype=np.float32)
    x[0, 0, 1] = 1  # ON at t=0, addr 1
    x[1, 1, 2] = 1  # OFF at t=1, addr 2
    ev = tensor_to_events(x, polarity=True)
    assert ev.tolist() == [(0, 1, 1), (1, 2, 0)]


def test_large_timestamps_and_empty_streams(tmp_path: Path) -> None:
    ev = make_events([0, 5, 2**40, 2**62], [0, 1, 2, 3], [1, 0, 1, 0])
    for encoding in ("fixed", "varint"):
        back, _ = decode_events(encode_events(ev, (4,), polarity=True, encoding=encoding, chunk_size=3))
        np.testing.assert_array_equal(back, ev)
    empty = make_events([], [])
    path = tmp_path / "empty.aer"
    write_events(path, empty, (3, 3))
    back, header = read_events(path)
    assert back.size == 0 and header.count == 0
    assert list(iter_events(path)) == []


@pytest.mark.parametrize("encoding", ["fixed", "varint"])
def test_streaming_chunks_equal_whole_file(encoding: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    t = np.sort(rng.integers(0, 10_000, size=1000))
    ev = make_events(t, rng.integers(0, 400, size=1000), rng.integers(0, 2, size=1000))
    whole = tmp_path / "whole.aer"
    write_events(whole, ev, (20, 20), polarity=True, encoding=encoding, chunk_size=64)
    streamed = tmp_path / "streamed.aer"
    with AERWriter(streamed, (20, 20), polarity=True, encoding=encoding, chunk_size=64) as w:
        cuts = np.sort(rng.integers(0, 1000, size=15))
        for piece in np.split(ev, cuts):
            w.write(piece)
        assert not streamed.exists()  # nothing at the target before close
    assert streamed.read_bytes() == whole.read_bytes()
    chunks = list(iter_events(streamed))
    assert [len(c) for c in chunks] == [64] * 15 + [40]
    np.testing.assert_array_equal(np.concatenate(chunks), ev)
    recut = list(iter_events(streamed, chunk_size=300))
    assert [len(c) for c in recut] == [300, 300, 300, 100]
    np.testing.assert_array_equal(np.concatenate(recut), ev)
    with AERReader(streamed) as r:
        assert r.header.count == 1000
        first = next(iter(r))
        np.testing.assert_array_equal(first, ev[:64])


def test_size_formulas() -> None:
    # bitmap: ceil(T * C * prod(shape) / 8)
    assert bitmap_bytes(10, (20, 20), polarity=True) == 10 * 2 * 400 // 8
    assert bitmap_bytes(3, (5,)) == 2  # 15 bits -> 2 bytes
    # varint by hand: (dt, key) = (0, 1), (0, 300), (200, 5) -> 1+1, 1+2, 2+1 = 8 payload bytes
    ev = make_events([0, 0, 200], [1, 300, 5])
    header = 32 + 4 * 1 + 4
    size = aer_size(ev, (400,), 201, encoding="varint")
    assert size.aer_bytes == header + 16 + 8 + 4 == len(encode_events(ev, (400,)))
    assert size.bitmap_bytes == math.ceil(201 * 400 / 8)
    assert size.events == 3 and size.ratio == size.aer_bytes / size.bitmap_bytes
    # fixed: 12 bytes per event, 20 bytes per chunk
    rng = np.random.default_rng(0)
    x = (rng.random((25, 2, 16, 16)) < 0.02).astype(np.float32)
    ev = tensor_to_events(x, polarity=True)
    fixed = aer_size(ev, (16, 16), 25, polarity=True, encoding="fixed", chunk_size=100)
    chunks = math.ceil(len(ev) / 100)
    assert fixed.aer_bytes == (32 + 8 + 4) + chunks * 20 + 12 * len(ev)
    varint = aer_size(ev, (16, 16), 25, polarity=True, encoding="varint", chunk_size=100)
    assert varint.aer_bytes < fixed.aer_bytes
    assert varint.aer_bytes < varint.bitmap_bytes  # 2 % dense: AER wins


def test_writer_rejects_bad_events_and_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "out.aer"
    unsorted = make_events([5, 3], [0, 1])
    with pytest.raises(ValueError, match="non-decreasing"):
        write_events(target, unsorted, (4,))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="out of range"):
        write_events(target, make_events([0], [16]), (4, 4))
    with pytest.raises(ValueError, match="p = 1"):
        write_events(target, make_events([0], [1], [0]), (4,))  # OFF event in a stream without polarity
    assert list(tmp_path.iterdir()) == []
    # an existing file survives a failing rewrite, and an exception inside the with-block leaves nothing new
    write_events(target, make_events([1, 2], [0, 1]), (4,))
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with AERWriter(target, (4,)) as w:
            w.write(make_events([0], [3]))
            raise RuntimeError("interrupted")
    with pytest.raises(ValueError):
        with AERWriter(target, (4,), chunk_size=1) as w:
            w.write(make_events([4, 5], [0, 1]))
            w.write(make_events([1], [0]))  # earlier than the last write
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.aer"]


# ------------------------------------------------------------------------------------------ corrupt files


def _file(tmp_path: Path, data: bytes, name: str = "bad.aer") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _read_error(path: Path) -> EventFormatError:
    with pytest.raises(EventFormatError) as info:
        read_events(path)
    assert isinstance(info.value, ValueError)
    return info.value


def _rechecksum_header(data: bytearray, ndim: int) -> None:
    end = 32 + 4 * ndim
    data[end:end + 4] = struct.pack("<I", zlib.crc32(bytes(data[:end])))


def _rechecksum_chunk(data: bytearray, offset: int) -> None:
    count, size = struct.unpack_from("<II", data, offset)
    end = offset + 16 + size
    data[end:end + 4] = struct.pack("<I", zlib.crc32(bytes(data[offset:end])))


@pytest.fixture()
def sample() -> tuple[np.ndarray, tuple[int, int]]:
    ev = make_events([0, 10, 10, 25, 40, 41, 90], [3, 7, 99, 0, 50, 51, 12], [1, 0, 1, 1, 0, 0, 1])
    return ev, (10, 10)


HEADER = 32 + 8 + 4  # two dims


def test_bad_magic(tmp_path: Path, sample) -> None:
    data = bytearray(encode_events(*sample, polarity=True))
    data[0] = 0x00
    err = _read_error(_file(tmp_path, bytes(data)))
    assert err.offset == 0 and "byte 0" in str(err) and "magic" in str(err)


def test_truncated_files(tmp_path: Path, sample) -> None:
    data = encode_events(*sample, polarity=True, encoding="fixed", chunk_size=4)
    err = _read_error(_file(tmp_path, data[:20]))
    assert err.offset == 20 and "byte 20" in str(err) and "truncated header" in str(err)
    err = _read_error(_file(tmp_path, data[:HEADER - 2]))
    assert "truncated header" in str(err) and err.offset == HEADER - 2
    # cut inside the first chunk's payload
    cut = HEADER + 16 + 12 + 5
    err = _read_error(_file(tmp_path, data[:cut]))
    assert err.offset == cut and f"byte {cut}" in str(err) and "truncated chunk 0" in str(err)
    # cut inside the second chunk's header
    second = HEADER + 16 + 4 * 12 + 4
    err = _read_error(_file(tmp_path, data[:second + 3]))
    assert err.offset == second + 3 and "truncated chunk 1 header" in str(err)
    # a file cut exactly between chunks: the header's event count catches it
    err = _read_error(_file(tmp_path, data[:second]))
    assert err.offset == second and "header declares 7" in str(err)


def test_bad_checksums(tmp_path: Path, sample) -> None:
    data = bytearray(encode_events(*sample, polarity=True, encoding="varint"))
    bad = bytearray(data)
    bad[16] ^= 0x01  # a bit of the time unit
    err = _read_error(_file(tmp_path, bytes(bad)))
    assert err.offset == 40 and "byte 40" in str(err) and "header checksum" in str(err)
    bad = bytearray(data)
    bad[HEADER + 16 + 1] ^= 0x04  # inside the first chunk's payload
    size = struct.unpack_from("<I", data, HEADER + 4)[0]
    err = _read_error(_file(tmp_path, bytes(bad)))
    assert err.offset == HEADER + 16 + size and "chunk 0 checksum" in str(err)


@pytest.mark.parametrize("encoding", ["fixed", "varint"])
def test_address_out_of_range(tmp_path: Path, encoding: str) -> None:
    ev = make_events([0, 1, 2, 3], [4, 8, 70, 9])
    data = bytearray(encode_events(ev, (100,), encoding=encoding))
    data[32:36] = struct.pack("<I", 50)  # shrink the address space to 50: event 2 (addr 70) is out of range
    _rechecksum_header(data, 1)
    err = _read_error(_file(tmp_path, bytes(data)))
    header = 32 + 4 + 4
    # record 2 starts after two records: fixed 12 bytes each; varint (dt, key) = (0, 4), (1, 8): 2 bytes each
    record = 2 * 12 if encoding == "fixed" else 2 * 2
    assert err.offset == header + 16 + record
    assert f"byte {header + 16 + record}" in str(err) and "address 70 out of range" in str(err)


def test_non_monotonic_timestamps(tmp_path: Path) -> None:
    ev = make_events([0, 5, 9, 12, 20, 30], [1, 2, 3, 4, 5, 6])
    header = 32 + 4 + 4
    # fixed records: overwrite record 2's t (5 -> 9 -> 3)
    data = bytearray(encode_events(ev, (10,), encoding="fixed"))
    record2 = header + 16 + 2 * 12
    data[record2:record2 + 8] = struct.pack("<q", 3)
    _rechecksum_chunk(data, header)
    err = _read_error(_file(tmp_path, bytes(data)))
    assert err.offset == record2 and "non-monotonic" in str(err)
    # varint: the second chunk starts before the first ended
    data = bytearray(encode_events(ev, (10,), encoding="varint", chunk_size=3))
    size0 = struct.unpack_from("<I", data, header + 4)[0]
    chunk1 = header + 16 + size0 + 4
    data[chunk1 + 8:chunk1 + 16] = struct.pack("<q", 4)  # t_base 12 -> 4 < 9
    _rechecksum_chunk(data, chunk1)
    err = _read_error(_file(tmp_path, bytes(data)))
    assert err.offset == chunk1 + 8 and f"byte {chunk1 + 8}" in str(err) and "non-monotonic" in str(err)


def test_other_structural_errors(tmp_path: Path, sample) -> None:
    data = bytearray(encode_events(*sample, polarity=True))
    bad = bytearray(data)
    bad[8:10] = struct.pack("<H", 9)
    _rechecksum_header(bad, 2)
    err = _read_error(_file(tmp_path, bytes(bad)))
    assert err.offset == 8 and "version 9" in str(err)
    bad = bytearray(data)
    bad[24:32] = struct.pack("<Q", 3)  # header claims fewer events than the chunk holds
    _rechecksum_header(bad, 2)
    err = _read_error(_file(tmp_path, bytes(bad)))
    assert err.offset == HEADER and "beyond the 3" in str(err)
    err = _read_error(_file(tmp_path, bytes(data) + b"\x00" * 5))  # trailing bytes
    assert err.offset == len(data) + 5


def test_event_batch_csr() -> None:
    a = make_events([0, 3], [1, 2])
    b = make_events([], [])
    c = make_events([7], [0])
    batch = EventBatch.from_list([a, b, c], (4,), polarity=False, time_unit=1e-3, duration=10)
    assert len(batch) == 3 and batch.counts().tolist() == [2, 0, 1]
    np.testing.assert_array_equal(batch[2], c)
    assert batch.sample_index().tolist() == [0, 0, 2]
    sub = batch.select([2, 0])
    assert sub.counts().tolist() == [1, 2]
    np.testing.assert_array_equal(sub[1], a)
