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

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def configure_allocator(mmap_threshold: int = 256 * 1024 * 1024, trim_threshold: int = 256 * 1024 * 1024) -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD`` / ``M_TRIM_THRESHOLD`` (bytes). Returns whether it took effect.

    The mmap threshold is 256 MiB (it was 32 MiB, glibc's own ceiling): the cohort engine's activation stacks
    are ``[T, K, B, N]`` tensors of 38 MB at 100 clients and 51 MB at 1,000 on the ``fl_round.py`` workload,
    and above the threshold each one was page-faulted in afresh every step (measured: 0.198 -> 0.125 CPU s per
    round at 100 clients, 0.98 -> 0.68 at 1,000, docs/performance.md)."""
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


# -- device ---------------------------------------------------------------------------------------------------

#: accepted forms of the ``runtime.device`` setting (``cuda:N`` with any non-negative N as well)
DEVICE_CHOICES = ("cpu", "cuda", "cuda:N", "auto")


class DeviceError(ValueError):
    """A ``device`` setting that names no usable device (unknown string, or CUDA asked for but absent)."""


def resolve_device(spec: str, *, cuda_available: bool | None = None, cuda_count: int | None = None) -> torch.device:
    """``"cpu" | "cuda" | "cuda:N" | "auto"`` -> a ``torch.device``; ``auto`` is ``cuda`` if a CUDA device is
    available, else ``cpu``. Raises :class:`DeviceError` naming the setting for an unknown string, for CUDA when
    torch sees no CUDA device, and for ``cuda:N`` beyond the devices present. ``cuda_available`` /
    ``cuda_count`` override what torch reports (tests)."""
    if not isinstance(spec, str):
        raise DeviceError(f"runtime.device must be a string ({', '.join(DEVICE_CHOICES)}), got {spec!r}")
    text = spec.strip().lower()
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    count = (torch.cuda.device_count() if available else 0) if cuda_count is None else cuda_count
    if text == "cpu":
        return torch.device("cpu")
    if text == "auto":
        return torch.device("cuda") if available else torch.device("cpu")
    index: int | None = None
    if text == "cuda":
        pass
    elif text.startswith("cuda:") and text[5:].isdigit():
        index = int(text[5:])
    else:
        raise DeviceError(f"runtime.device={spec!r} is not a device; valid: {', '.join(DEVICE_CHOICES)}")
    if not available:
        raise DeviceError(f"runtime.device={spec!r} asks for CUDA, but torch sees no CUDA device here "
                          f"(torch {torch.__version__}, cuda build: {torch.version.cuda or 'none'}); "
                          "use runtime.device=cpu or auto")
    if index is not None and index >= count:
        raise DeviceError(f"runtime.device={spec!r}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index) if index is not None else torch.device("cuda")


# -- intra-op threads -----------------------------------------------------------------------------------------

def busy_cores(load_average: float | None = None, cores: int | None = None) -> int:
    """Cores other processes keep busy, estimated from the 1-minute load average (rounded, at most ``cores``)."""
    cores = cores or os.cpu_count() or 1
    if load_average is None:
        try:
            load_average = os.getloadavg()[0]
        except OSError:  # not available on this platform: assume idle
            load_average = 0.0
    return max(0, min(cores, int(round(load_average))))


def choose_threads(policy: str | int, *, cores: int | None = None, load_average: float | None = None) -> int:
    """The number of torch intra-op threads for ``runtime.threads``:

    - an integer ``n >= 1``: exactly ``n``;
    - ``"auto"``: the cores not busy with other work, ``max(1, cores - busy)`` where ``busy`` is the rounded
      1-minute load average (measured before the run starts, so the run itself is not counted);
    - ``"torch"``: torch's own default (every core), whatever the load.

    A multi-threaded torch op waits for its slowest thread; on a core another process holds, that thread runs a
    fraction of the time, so an op can get several times slower than on one thread (benchmarks/threads.py)."""
    cores = cores or os.cpu_count() or 1
    if isinstance(policy, bool):
        raise ValueError(f"runtime.threads must be 'auto', 'torch' or an integer >= 1, got {policy!r}")
    if isinstance(policy, int):
        if policy < 1:
            raise ValueError(f"runtime.threads must be >= 1, got {policy}")
        return policy
    if policy == "torch":
        return int(torch.get_num_threads())
    if policy == "auto":
        return max(1, cores - busy_cores(load_average, cores))
    raise ValueError(f"runtime.threads must be 'auto', 'torch' or an integer >= 1, got {policy!r}")


def apply_threads(policy: str | int) -> int:
    """Set torch's intra-op threads by :func:`choose_threads` (``"torch"`` leaves them alone); returns the number."""
    n = choose_threads(policy)
    if policy != "torch":
        torch.set_num_threads(n)
    return n
