"""The per-client distances of :func:`spikefed.data.heterogeneity.client_heterogeneity` for all clients at once.

The report of a 100,000-client partition called :func:`~spikefed.data.heterogeneity.js_divergence` and
:func:`~spikefed.data.heterogeneity.hellinger_gaussian` once per client (about 1.5 ms each, most of it argument
checks); here the same formulas run as array operations over the clients:

- the clients' sample indices are concatenated once (:func:`~spikefed.data.partition.concat_parts`; every part
  checked as :func:`~spikefed.data.partition.as_indices` does, an error names the part);
- label counts ``[N, C]`` are one ``bincount`` of ``client * C + label``
  (:func:`~spikefed.data.partition.batch_label_counts`);
- ``JSD_2(p_i, q)`` = ``(1/2 KL(p_i || m_i) + 1/2 KL(q || m_i)) / ln 2`` row by row (``0 log 0 = 0``);
- each client's Gaussian fit (mean, unbiased covariance, zero covariance for one sample) comes from segment sums
  of its rows (two passes: the mean, then the centred outer products), and the Hellinger distance from stacked
  Cholesky factors ``[N, k, k]`` (``log BC = 1/4 log det S1 + 1/4 log det S2 - 1/2 log det S - 1/8 dmu^T S^-1
  dmu``, ``H = sqrt(1 - BC)``).

The values equal the one-client functions' to rounding (summation order differs; tested against them at 1e-12).
Where a stacked factorisation fails, the per-client function runs for the failing client, so the error is the
one it raises.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["batch_jsd", "batch_gaussian_fits", "batch_hellinger", "SEGMENT_BLOCK_BYTES", "BATCH_COVARIANCE_BYTES"]

#: float64 bytes of the outer products held at once by :func:`batch_gaussian_fits`
SEGMENT_BLOCK_BYTES = 16 << 20
#: above this many float64 bytes of stacked covariances ``[N, D, D]`` the report fits one client at a time
BATCH_COVARIANCE_BYTES = 512 << 20


def batch_jsd(counts: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Base-2 Jensen-Shannon divergence of every row of ``counts [N, C]`` against ``reference [C]`` (both
    normalised by their sums), clipped to ``[0, 1]``; ``nan`` for a row of zeros (an empty client)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    p = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    q = np.asarray(reference, dtype=np.float64)
    q = q / q.sum()
    m = 0.5 * (p + q)

    def kl_to_m(a: np.ndarray) -> np.ndarray:
        safe = np.where(a > 0, a, 1.0)
        return np.where(a > 0, a * np.log(safe / np.where(a > 0, m, 1.0)), 0.0).sum(axis=1)

    value = (0.5 * kl_to_m(p) + 0.5 * kl_to_m(np.broadcast_to(q, p.shape))) / math.log(2.0)
    out = np.clip(value, 0.0, 1.0)
    out[totals[:, 0] <= 0] = math.nan
    return out


def _segment_sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of ``values`` over the row segments beginning at ``starts`` (non-empty segments, ascending)."""
    if starts.size == 0:
        return np.zeros((0,) + values.shape[1:])
    return np.add.reduceat(values, starts, axis=0)


def batch_gaussian_fits(feats: np.ndarray, flat: np.ndarray, sizes: np.ndarray, diag: bool
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Every client's sample mean ``[N, D]`` and unbiased covariance ``[N, D, D]`` (ddof 1; zeros for a client with
    one sample, and for an empty one, whose mean is ``nan``), as :func:`~spikefed.data.heterogeneity.fit_gaussian`
    gives for ``feats[part]``. ``diag``: only the diagonal is kept. The outer products are summed a block of
    clients at a time (:data:`SEGMENT_BLOCK_BYTES`)."""
    n_clients, d = sizes.size, feats.shape[1]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    full = sizes > 0
    mu = np.full((n_clients, d), math.nan)
    rows = feats[flat]
    mu[full] = _segment_sum(rows, offsets[:-1][full]) / sizes[full, None]
    cov = np.zeros((n_clients, d, d))
    per_row = 8 * d * (1 if diag else d)
    budget = max(1, SEGMENT_BLOCK_BYTES // per_row)  # rows per block
    first = 0
    while first < n_clients:  # blocks of whole clients, at least one client each
        last = int(np.searchsorted(offsets, offsets[first] + budget, side="right")) - 1
        last = min(max(last, first + 1), n_clients)
        lo, hi = int(offsets[first]), int(offsets[last])
        block = slice(first, last)
        many = sizes[block] > 1
        if hi > lo and many.any():
            owner = np.repeat(np.arange(last - first), sizes[block])
            centred = rows[lo:hi] - mu[block][owner]
            prods = centred * centred if diag else centred[:, :, None] * centred[:, None, :]
            starts = offsets[first:last][sizes[block] > 0] - lo
            sums = _segment_sum(prods, starts)
            filled = np.flatnonzero(sizes[block] > 0)
            keep = sizes[block][filled] > 1
            target = first + filled[keep]
            scaled = sums[keep] / (sizes[target] - 1).reshape((-1,) + (1,) * (sums.ndim - 1))
            if diag:
                idx = np.arange(d)
                cov[target[:, None], idx[None, :], idx[None, :]] = scaled
            else:
                cov[target] = scaled
        first = last
    return mu, cov


def batch_hellinger(mu: np.ndarray, cov: np.ndarray, mu_all: np.ndarray, cov_all: np.ndarray, eps: float,
                    fallback: object = None) -> np.ndarray:
    """``H(N(mu_i, cov_i + eps I), N(mu_all, cov_all + eps I))`` for every row ``i`` (``nan`` where ``mu_i`` is
    ``nan``). ``fallback(i)``: called for a client whose stacked Cholesky factorisation fails (it raises the
    per-client function's error)."""
    n, d = mu.shape
    out = np.full(n, math.nan)
    live = np.flatnonzero(~np.isnan(mu).any(axis=1)) if d else np.arange(n)
    if live.size == 0:
        return out
    ridge = float(eps) * np.eye(d)
    s1 = cov[live] + ridge
    s2 = cov_all + ridge
    s = 0.5 * (s1 + s2)
    try:
        l1 = np.linalg.cholesky(s1)
        l2 = np.linalg.cholesky(s2)
        lm = np.linalg.cholesky(s)
    except np.linalg.LinAlgError:
        if callable(fallback):
            for i in live:
                fallback(int(i))
        raise ValueError("a covariance + eps*I is not symmetric positive definite; raise eps") from None

    def logdet(factor: np.ndarray) -> np.ndarray:
        return 2.0 * np.log(np.diagonal(factor, axis1=-2, axis2=-1)).sum(axis=-1)

    z = np.linalg.solve(lm, (mu[live] - mu_all)[..., None])[..., 0]
    log_bc = 0.25 * logdet(l1) + 0.25 * logdet(l2) - 0.5 * logdet(lm) - 0.125 * np.einsum("nd,nd->n", z, z)
    h2 = -np.expm1(np.minimum(log_bc, 0.0))
    out[live] = np.sqrt(np.clip(h2, 0.0, 1.0))
    return out
