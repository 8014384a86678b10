"""Splitting a training set among ``N`` federated clients (IID and non-IID).

Every partition function returns ``list[np.ndarray]``: one int64 array of sample indices per client, sorted
ascending, and together a partition of ``range(num_samples)`` (each sample in exactly one client). Randomness
comes only from the ``rng`` argument: a ``numpy.random.Generator`` (advanced by the call) or an int seed (a fresh
``np.random.default_rng(seed)``); the same seed gives the same partition.

Methods (:data:`PARTITIONS`):

- ``iid``: a uniformly random permutation cut into ``N`` consecutive pieces whose sizes differ by at most 1.
- ``dirichlet`` (label skew, Hsu et al. 2019): for each class ``c`` draw ``q_c ~ Dir(alpha * 1_N)`` and deal class
  ``c``'s samples to the clients in proportions ``q_c``. Small ``alpha`` -> each class concentrated on few clients;
  ``alpha -> inf`` -> IID.
- ``shards`` (pathological label skew, McMahan et al. 2017): sort by label, cut into ``N * k`` shards, give each
  client ``k`` random shards.
- ``quantity`` (quantity skew): client sizes ``min_size + (remainder shared in proportion to Pareto weights)``;
  labels IID.
- ``feature`` (feature skew): the partition is :func:`iid`; heterogeneity comes from per-client feature transforms
  (:func:`feature_transforms`, :class:`FeatureTransform`), applied by the client to its own inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

#: Valid ``method`` choices of :func:`partition`.
PARTITIONS: tuple[str, ...] = ("iid", "dirichlet", "shards", "quantity", "feature")


# ----------------------------------------------------------------------------------------------- checks


def _generator(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"rng seed must be an int >= 0, got {rng!r}")
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy.random.Generator or an int seed >= 0, got {type(rng).__name__}")


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    v = int(value)
    if v < low or (high is not None and v > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {span}, got {v}")
    return v


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a float > 0, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be > 0 and finite, got {value!r}")
    return v


def _nonnegative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a float >= 0, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be >= 0 and finite, got {value!r}")
    return v


def as_labels(labels: object) -> np.ndarray:
    """Labels as a 1-D int64 array of non-negative class ids (torch tensors and sequences accepted)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {list(arr.shape)}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"labels must be integer class ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.min() < 0:
        raise ValueError(f"labels must be >= 0, got minimum {int(arr.min())}")
    return arr


def _clients_and_samples(num_samples: object, num_clients: object, min_size: int = 1) -> tuple[int, int]:
    n = check_int("num_samples", num_samples, 1)
    k = check_int("num_clients", num_clients, 1)
    if k * min_size > n:
        raise ValueError(
            f"num_clients * min_size must be <= num_samples = {n}, got {k} * {min_size} = {k * min_size} "
            f"(num_clients must be in [1, {n // min_size}] for min_size = {min_size})"
        )
    return n, k


def _finish(pieces: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in pieces]


# ------------------------------------------------------------------------------------------- partitions


def iid(num_samples: int, num_clients: int, rng: np.random.Generator | int) -> list[np.ndarray]:
    """Uniformly random split into ``num_clients`` clients of sizes ``floor(n/N)`` or ``ceil(n/N)``.

    A random permutation of ``range(n)`` is cut into ``N`` consecutive pieces; the first ``n mod N`` clients get
    ``ceil(n/N)`` samples, the rest ``floor(n/N)``. Requires ``1 <= num_clients <= num_samples`` (no empty client).
    """
    n, k = _clients_and_samples(num_samples, num_clients)
    g = _generator(rng)
    return _finish(np.array_split(g.permutation(n), k))


def dirichlet(
    labels: np.ndarray | torch.Tensor | Sequence[int],
    num_clients: int,
    alpha: float,
    rng: np.random.Generator | int,
    min_size: int = 10,
    max_retries: int = 100,
) -> list[np.ndarray]:
    """Label-skewed split: class ``c``'s samples are dealt to clients in proportions ``q_c ~ Dir(alpha * 1_N)``.

    For every class ``c`` present (ascending), with ``n_c`` samples in a random order: draw
    ``q_c ~ Dir(alpha, ..., alpha)`` (``N`` entries) and give client ``i`` the samples at positions
    ``[b_{i-1}, b_i)`` where ``b_i = rint(n_c * (q_1 + ... + q_i))`` (``b_0 = 0``, ``b_N = n_c``), so client ``i``
    gets ``n_c q_i`` samples of class ``c`` up to rounding (less than 1 away). The expected class mix of every
    client is the global one; its spread grows as ``alpha`` shrinks (``Var q_i = (N-1) / (N^2 (N alpha + 1))``).

    If some client ends with fewer than ``min_size`` samples the whole draw is repeated, at most ``max_retries``
    times (so at most ``1 + max_retries`` draws), then ``ValueError``. ``min_size = 0`` allows empty clients.

    Raises:
        ValueError: ``alpha <= 0``, ``num_clients < 1``, ``num_clients * min_size > len(labels)``, or no draw
            met ``min_size``.
    """
    y = as_labels(labels)
    a = _positive("alpha", alpha)
    m = check_int("min_size", min_size, 0)
    retries = check_int("max_retries", max_retries, 0)
    n, k = _clients_and_samples(y.size, num_clients, m)
    g = _generator(rng)
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    smallest = -1
    for _ in range(retries + 1):
        pieces: list[list[np.ndarray]] = [[] for _ in range(k)]
        for members in by_class:
            members = g.permutation(members)
            q = g.dirichlet(np.full(k, a))
            bounds = np.rint(np.cumsum(q) * members.size).astype(np.int64)
            bounds = np.clip(bounds, 0, members.size)
            for i, chunk in enumerate(np.split(members, bounds[:-1])):
                pieces[i].append(chunk)
        sizes = [sum(c.size for c in p) for p in pieces]
        if min(sizes) >= m:
            return _finish([np.concatenate(p) for p in pieces])
        smallest = max(smallest, min(sizes))
    raise ValueError(
        f"min_size = {m} was impossible to meet: in {retries + 1} Dirichlet draws (alpha = {a:g}, "
        f"num_clients = {k}, {n} samples) the smallest client had at most {smallest} samples; "
        "raise alpha or max_retries, or lower min_size or num_clients"
    )


def shards(
    labels: np.ndarray | torch.Tensor | Sequence[int],
    num_clients: int,
    shards_per_client: int,
    rng: np.random.Generator | int,
) -> list[np.ndarray]:
    """Pathological label skew (McMahan et al. 2017): each client gets ``shards_per_client`` label-sorted shards.

    Samples are sorted by ``(label, index)``, the sorted order is cut into ``S = N * k`` consecutive shards of
    sizes ``floor(n/S)`` or ``ceil(n/S)`` (the first ``n mod S`` shards are the larger), and a random
    permutation of the shards hands client ``i`` the shards ``perm[i k : (i+1) k]``.

    Guarantee on classes: a shard is a contiguous run of the sorted labels, so if the largest shard has at most
    ``min_c n_c + 1`` samples (``n_c``: count of class ``c``), a shard holds at most 2 classes and every client
    at most ``2 k``; if moreover every ``n_c`` is a multiple of an exact shard size (``S`` divides ``n``), each
    shard holds one class and every client at most ``k``. Larger shards can span more classes.
    """
    y = as_labels(labels)
    spc = check_int("shards_per_client", shards_per_client, 1)
    k = check_int("num_clients", num_clients, 1)
    if k * spc > y.size:
        raise ValueError(
            f"num_clients * shards_per_client must be <= num_samples = {y.size}, got {k} * {spc} = {k * spc}"
        )
    g = _generator(rng)
    order = np.argsort(y, kind="stable")
    pieces = np.array_split(order, k * spc)
    perm = g.permutation(k * spc)
    return _finish([np.concatenate([pieces[s] for s in perm[i * spc : (i + 1) * spc]]) for i in range(k)])


def quantity_skew(
    num_samples: int,
    num_clients: int,
    rng: np.random.Generator | int,
    exponent: float = 1.5,
    min_size: int = 10,
) -> list[np.ndarray]:
    """Quantity skew: power-law client sizes, labels IID.

    Weights ``w_i`` (``i = 1..N``) are i.i.d. Pareto with scale 1 and shape ``a = exponent``:
    ``P(w > t) = t^(-a)`` for ``t >= 1`` (drawn as ``log w_i = E_i / a`` with ``E = rng.standard_exponential(N)``,
    first). The ``R = n - N * min_size`` samples above the floor are shared in proportion to the weights:
    ``n_i = min_size + floor(R w_i / sum_j w_j)``, plus one for the ``R - sum_i floor(.)`` clients with the
    largest fractional parts (largest remainder, ties to the lower index), so ``sum_i n_i = n`` exactly and
    ``|n_i - min_size - R w_i / sum_j w_j| < 1``. Sorted sizes then fall off like a Zipf law with exponent
    ``1/a``: smaller ``exponent`` -> heavier tail -> more unequal clients. A random permutation of
    ``range(n)`` (drawn second) is cut into consecutive pieces of sizes ``n_1, ..., n_N``.
    """
    a = _positive("exponent", exponent)
    m = check_int("min_size", min_size, 0)
    n, k = _clients_and_samples(num_samples, num_clients, m)
    g = _generator(rng)
    log_w = g.standard_exponential(k) / a
    w = np.exp(log_w - log_w.max())  # proportional to the weights, overflow-free
    rest = n - k * m
    share = rest * w / w.sum()
    extra = np.floor(share).astype(np.int64)
    leftover = rest - int(extra.sum())
    if leftover > 0:
        extra[np.argsort(-(share - extra), kind="stable")[:leftover]] += 1
    sizes = m + extra
    perm = g.permutation(n)
    return _finish(np.split(perm, np.cumsum(sizes)[:-1]))


# ------------------------------------------------------------------------------------------ feature skew


@dataclass(frozen=True)
class FeatureTransform:
    """One client's feature corruption ``x' = x * scale + shift + noise``, ``noise ~ N(0, noise_std^2)`` i.i.d.

    ``seed`` seeds the client's own noise stream (:meth:`make_generator`); it is what :meth:`apply` uses when no
    generator is passed.
    """

    scale: float
    shift: float
    noise_std: float
    seed: int

    def __post_init__(self) -> None:
        for name in ("scale", "shift"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite float, got {v!r}")
            object.__setattr__(self, name, float(v))
        object.__setattr__(self, "noise_std", _nonnegative("noise_std", self.noise_std))
        object.__setattr__(self, "seed", check_int("seed", self.seed, 0, 2**63 - 1))

    def make_generator(self) -> torch.Generator:
        """A fresh CPU ``torch.Generator`` seeded with ``seed`` (keep it and pass it to every :meth:`apply`)."""
        return torch.Generator().manual_seed(self.seed)

    def apply(self, x: torch.Tensor, generator: torch.Generator | int | None = None) -> torch.Tensor:
        """``x * scale + shift + noise_std * z`` with ``z ~ N(0, 1)`` of ``x``'s shape, drawn from ``generator``.

        ``generator``: a ``torch.Generator`` (advanced; successive calls get fresh noise), an int seed, or
        ``None`` for :meth:`make_generator` (then the same ``x`` always gets the same noise). With
        ``noise_std == 0`` nothing is drawn. Returns a new tensor of ``x``'s dtype and device.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"x must be a floating-point torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        out = x * self.scale + self.shift
        if self.noise_std > 0:
            if generator is None:
                generator = self.make_generator()
            elif isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
                generator = torch.Generator().manual_seed(int(generator))
            if not isinstance(generator, torch.Generator):
                raise ValueError(f"generator must be a torch.Generator, an int seed or None, got {generator!r}")
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device)
            out = out + self.noise_std * z.to(x.device)
        return out


def feature_transforms(
    num_clients: int,
    rng: np.random.Generator | int,
    noise_std: float = 0.1,
    scale_range: tuple[float, float] = (0.8, 1.2),
    shift_std: float = 0.1,
) -> list[FeatureTransform]:
    """Per-client feature transforms: ``scale_i ~ U[lo, hi)``, ``shift_i ~ N(0, shift_std^2)``, common ``noise_std``.

    Draw order: all ``N`` scales, then all ``N`` shifts, then ``N`` noise seeds uniform in ``[0, 2^63 - 1)``.
    """
    k = check_int("num_clients", num_clients, 1)
    std = _nonnegative("noise_std", noise_std)
    sstd = _nonnegative("shift_std", shift_std)
    try:
        lo, hi = (float(v) for v in scale_range)
    except (TypeError, ValueError):
        raise ValueError(f"scale_range must be a pair (low, high) of floats, got {scale_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"scale_range must be finite with low <= high, got {scale_range!r}")
    g = _generator(rng)
    scales = g.uniform(lo, hi, size=k)
    shifts = g.normal(0.0, sstd, size=k) if sstd > 0 else np.zeros(k)
    seeds = g.integers(0, 2**63 - 1, size=k, dtype=np.int64)
    return [FeatureTransform(float(s), float(b), std, int(z)) for s, b, z in zip(scales, shifts, seeds)]


def feature_skew(
    num_samples: int,
    num_clients: int,
    rng: np.random.Generator | int,
    noise_std: float = 0.1,
    scale_range: tuple[float, float] = (0.8, 1.2),
    shift_std: float = 0.1,
) -> tuple[list[np.ndarray], list[FeatureTransform]]:
    """Feature skew: ``(iid(num_samples, num_clients, g), feature_transforms(num_clients, g, ...))``.

    Both draw from the same generator ``g``, the partition first, so the parts equal
    ``partition(labels, N, "feature", seed)`` for the same seed.
    """
    g = _generator(rng)
    parts = iid(num_samples, num_clients, g)
    return parts, feature_transforms(num_clients, g, noise_std, scale_range, shift_std)


# ------------------------------------------------------------------------------------------- dispatcher

_KWARGS: dict[str, tuple[str, ...]] = {
    "iid": (),
    "dirichlet": ("alpha", "min_size", "max_retries"),
    "shards": ("shards_per_client",),
    "quantity": ("exponent", "min_size"),
    "feature": (),
}
_REQUIRED: dict[str, tuple[str, ...]] = {"dirichlet": ("alpha",), "shards": ("shards_per_client",)}


def partition(
    labels: np.ndarray | torch.Tensor | Sequence[int],
    num_clients: int,
    method: str,
    rng: np.random.Generator | int,
    **kwargs: Any,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` among ``num_clients`` with ``method`` (one of :data:`PARTITIONS`).

    Keyword arguments by method: ``iid``: none; ``dirichlet``: ``alpha`` (required), ``min_size``,
    ``max_retries``; ``shards``: ``shards_per_client`` (required); ``quantity``: ``exponent``, ``min_size``;
    ``feature``: none (the partition is :func:`iid`; build the transforms with :func:`feature_transforms`).
    """
    if method not in PARTITIONS:
        raise ValueError(f"unknown partition method {method!r}; valid choices: {', '.join(map(repr, PARTITIONS))}")
    allowed = _KWARGS[method]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        raise ValueError(
            f"unknown keyword argument(s) for partition method {method!r}: {', '.join(unknown)}; valid: {valid}"
        )
    missing = [name for name in _REQUIRED.get(method, ()) if name not in kwargs]
    if missing:
        raise ValueError(f"partition method {method!r} needs keyword argument(s): {', '.join(missing)}")
    y = as_labels(labels)
    if method == "dirichlet":
        return dirichlet(y, num_clients, rng=rng, **kwargs)
    if method == "shards":
        return shards(y, num_clients, rng=rng, **kwargs)
    if method == "quantity":
        return quantity_skew(y.size, num_clients, rng, **kwargs)
    return iid(y.size, num_clients, rng)


def label_distribution(
    labels: np.ndarray | torch.Tensor | Sequence[int],
    parts: Sequence[np.ndarray],
    num_classes: int,
) -> np.ndarray:
    """Label counts per client: int64 ``[N, C]`` with ``out[i, c] = #{j in parts[i] : labels[j] = c}``."""
    y = as_labels(labels)
    c = check_int("num_classes", num_classes, 1)
    if y.max() >= c:
        raise ValueError(f"labels must lie in [0, {c}) for num_classes = {c}, got maximum {int(y.max())}")
    if isinstance(parts, (str, bytes)) or not isinstance(parts, Sequence):
        raise ValueError(f"parts must be a sequence of index arrays, got {type(parts).__name__}")
    flat, sizes = concat_parts(parts, y.size)
    return batch_label_counts(y, flat, sizes, c)


def as_indices(p: object, n: int, name: str) -> np.ndarray:
    arr = np.asarray(p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else p)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"{name} must be a 1-D integer index array, got shape {list(arr.shape)}, dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{name} indices must lie in [0, {n}), got range [{int(arr.min())}, {int(arr.max())}]")
    return arr


def concat_parts(parts: Sequence[object], n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(flat, sizes)``: the parts' indices concatenated in order (int64) and each part's length; every part a
    1-D integer array with indices in ``[0, n)`` (``ValueError`` naming the first part that is not)."""
    arrays = []
    for i, p in enumerate(parts):
        arr = np.asarray(p) if isinstance(p, np.ndarray) else as_indices(p, n, f"parts[{i}]")
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            as_indices(arr, n, f"parts[{i}]")  # raises, naming the part
        arrays.append(arr.astype(np.int64, copy=False) if arr.size else np.zeros(0, np.int64))
    sizes = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= n):
        for i, a in enumerate(arrays):  # name the part
            as_indices(a, n, f"parts[{i}]")
    return flat, sizes


def batch_label_counts(y: np.ndarray, flat: np.ndarray, sizes: np.ndarray, num_classes: int) -> np.ndarray:
    """``out[i, c] = #{j in part i : y[j] = c}`` (int64 ``[N, C]``) from :func:`concat_parts`' output."""
    owner = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    counts = np.bincount(owner * num_classes + y[flat], minlength=sizes.size * num_classes)
    return counts.reshape(sizes.size, num_classes).astype(np.int64, copy=False)
