"""Shared by the benchmark scripts: bytes an autograd graph holds for its backward pass."""

from __future__ import annotations

import weakref
from typing import Any, Callable

import torch


def saved_bytes(run: Callable[..., Any], *args: Any) -> tuple[int, Any]:
    """Bytes of the distinct storages that ``run(*args)``'s graph still holds once it returns, and its result
    (keep the result alive to keep the graph). Graph parts dropped at once (e.g. a detached reset's spike node)
    free what they saved, so they do not count."""
    records: list[tuple[int, int, weakref.ref]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        records.append((s.data_ptr(), s.nbytes(), weakref.ref(t)))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run(*args)
    live = {ptr: nbytes for ptr, nbytes, ref in records if ref() is not None}
    return sum(live.values()), out
