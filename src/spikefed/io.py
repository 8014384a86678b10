"""Writing files safely: atomic replacement and JSON-ready values (bottom layer: imports nothing from spikefed).

:func:`write_atomic` writes ``<name>.tmp`` next to the target, flushes and ``fsync``s it, then ``os.replace``s it
over the target (and ``fsync``s the directory where the platform allows): a reader, or a process resumed after a
crash, sees the old file or the new one, never a partial one. The temp name is fixed, so a temp file left by a
killed writer is simply overwritten by the next write of the same file; one writer per path at a time.

Streaming writers that cannot hold the whole file in memory (``spikefed.events.aer.AERWriter``) keep their own
temp-file handling.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_safe", "temp_path", "write_atomic", "write_json_atomic"]


def temp_path(path: str | os.PathLike[str]) -> Path:
    """The temp file :func:`write_atomic` writes before renaming it to ``path``: ``<name>.tmp`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *,
                 before_replace: Callable[[Path], None] | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (``str`` is written as UTF-8).

    ``before_replace(temp)``, if given, runs after the temp file is complete and ``fsync``ed and before the
    rename (a test hook: a process killed there leaves the old file in place). On any error the temp file is
    removed and the target is left as it was. The new file's permissions follow the umask, like ``open``.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


_PLAIN_NUMBERS = frozenset({int, float, bool})


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``, tuples as lists and numpy scalars as Python
    numbers (recursively through dicts, lists and tuples), so ``json.dumps`` writes standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if _PLAIN_NUMBERS.issuperset(map(type, value)) and all(map(math.isfinite, value)):
            return list(value)  # a flat list of finite Python numbers (100,000 clients' sizes): as it is
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return json_safe(value.item())
    return value


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int | None = None) -> None:
    """``write_atomic(path, json.dumps(json_safe(obj), indent=indent))``."""
    write_atomic(path, json.dumps(json_safe(obj), indent=indent))
