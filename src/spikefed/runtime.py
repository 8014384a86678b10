"""Process-level runtime settings for long training runs.

Spiking layers allocate and free a few activation tensors of ``T * B * N`` floats every step (megabytes each).
glibc serves blocks that large with ``mmap`` and, once freed, trims them back to the kernel, so every training
step page-faults its activations in again (measured: ~4,000 minor faults per step on the 64-256-10 benchmark,
about half of the step time). :func:`configure_allocator` raises glibc's mmap and trim thresholds so such
blocks are recycled from the heap instead. It affects the whole process (every library in it), is idempotent,
and is a no-op where glibc is not the C library. The ``spikefed`` command calls it; library users may call it
themselves or set ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def configure_allocator(mmap_threshold: int = 32 * 1024 * 1024, trim_threshold: int = 256 * 1024 * 1024) -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD`` / ``M_TRIM_THRESHOLD`` (bytes). Returns whether it took effect."""
    global _done
    if _done:
        return True
    if os.environ.get("SPIKEFED_NO_MALLOC_TUNING"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    _done = ok
    return ok
