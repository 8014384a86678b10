"""spikefed.io: atomic file replacement and JSON-ready values."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from spikefed.io import json_safe, temp_path, write_atomic, write_json_atomic


def test_write_atomic_writes_bytes_and_text_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    write_atomic(path, "héllo\n")
    assert path.read_bytes() == "héllo\n".encode()
    write_atomic(path, b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_write_atomic_permissions_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640


def test_a_failure_before_the_rename_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    temp_path(path).write_bytes(b"stale temp of a killed writer")
    seen = []

    def hook(tmp: Path) -> None:
        seen.append((tmp, tmp.read_bytes(), path.read_bytes()))
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomic(path, b"new", before_replace=hook)
    assert seen == [(tmp_path / "f.bin.tmp", b"new", b"old")]  # the stale temp was overwritten, not appended to
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    with pytest.raises(OSError):
        write_atomic(tmp_path / "missing_dir" / "f", b"x")


def test_json_safe_and_write_json_atomic(tmp_path: Path) -> None:
    value = {"a": math.nan, "b": [1.5, math.inf, (np.float32(np.inf), np.int64(3))], "c": np.float64(0.25),
             "d": {"e": -math.inf, "f": None, "g": "s"}}
    safe = json_safe(value)
    assert safe == {"a": None, "b": [1.5, None, [None, 3]], "c": 0.25, "d": {"e": None, "f": None, "g": "s"}}
    assert type(safe["b"][2][1]) is int and type(safe["c"]) is float
    write_json_atomic(tmp_path / "s.json", value, indent=2)
    text = (tmp_path / "s.json").read_text()
    assert json.loads(text) == safe and text == json.dumps(safe, indent=2)


def test_json_safe_flat_number_lists_keep_their_values_and_drop_non_finite() -> None:
    import math

    import numpy as np

    from spikefed.io import json_safe

    plain = [1, 2.5, True, -0.0]
    out = json_safe(plain)
    assert out == plain and out is not plain and [type(v) for v in out] == [int, float, bool, float]
    assert json_safe((3, 4.0)) == [3, 4.0]
    assert json_safe([1.0, math.nan, math.inf, -math.inf]) == [1.0, None, None, None]
    mixed = json_safe([np.int64(7), np.float32(0.5), 2])
    assert mixed == [7, 0.5, 2] and [type(v) for v in mixed] == [int, float, int]
    assert json_safe([[1.0, math.nan], {"a": [math.nan]}]) == [[1.0, None], {"a": [None]}]
