"""The clients' local data built on demand: a sequence of :class:`~spikefed.federated.cohort.ClientData` that
holds no per-client object.

A list of 100,000 ``ClientData`` (two small tensors each) costs about 150 MiB and 20 s to build; a round touches
only its sampled clients. :class:`LazyClients` builds client ``k``'s data when it is asked for (its partition
rows of the training set, with its seeded feature transform), so the same call always gives the same values,
and memory holds only the clients a round is using. A stage that rewrites the clients (label flips, continual
task data) replaces the sequence by its own list, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import overload

from .cohort import ClientData

__all__ = ["LazyClients"]


class LazyClients(Sequence[ClientData]):
    """``build(k)`` for ``k`` in ``0 .. n-1``, built on each access (nothing cached)."""

    def __init__(self, n: int, build: Callable[[int], ClientData]) -> None:
        if n < 0:
            raise ValueError(f"a client count must be >= 0, got {n}")
        self.n, self.build = n, build

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, k: int) -> ClientData: ...

    @overload
    def __getitem__(self, k: slice) -> list[ClientData]: ...

    def __getitem__(self, k: int | slice) -> ClientData | list[ClientData]:
        if isinstance(k, slice):
            return [self.build(i) for i in range(*k.indices(self.n))]
        if k < 0:
            k += self.n
        if not 0 <= k < self.n:
            raise IndexError(f"client {k} is outside 0..{self.n - 1}")
        return self.build(k)

    def __iter__(self) -> Iterator[ClientData]:
        return (self.build(k) for k in range(self.n))
