"""Work that several tests share, done once per test session even when xdist spreads those tests over workers.

``once(tmp_path_factory, name, make)`` calls ``make(directory)`` the first time any worker asks for ``name`` and
returns the directory to every later caller; a file lock in the session's shared temporary directory makes the
other workers wait for the first. A ``make`` that raises leaves nothing behind, so the next caller tries again
(and reports the same failure)."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest


def once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    base = tmp_path_factory.getbasetemp()
    # under xdist each worker's base is <session>/popen-gwN: the session directory is shared, and new per run
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "session-once"
    root.mkdir(exist_ok=True)
    where = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"{name}.done").is_file():
            shutil.rmtree(where, ignore_errors=True)
            where.mkdir()
            make(where)
            (root / f"{name}.done").write_text("")
    return where
