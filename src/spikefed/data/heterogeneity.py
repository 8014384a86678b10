"""How non-IID a federated partition is.

- Label skew: Jensen-Shannon divergence between each client's label distribution and the global one::

      JSD(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m),   m = (p + q) / 2,   KL(a || b) = sum_i a_i log(a_i / b_i)

  with ``0 log 0 = 0``. It is symmetric, 0 iff ``p = q``, and at most ``log 2`` (1 bit, reached for disjoint
  supports).

- Feature skew: Hellinger distance between Gaussian fits (mean, covariance) of a client's features and of all
  features. For ``N(mu1, S1)`` and ``N(mu2, S2)``, with ``S = (S1 + S2) / 2``::

      H^2 = 1 - det(S1)^(1/4) det(S2)^(1/4) / det(S)^(1/2) * exp(-1/8 (mu1 - mu2)^T S^(-1) (mu1 - mu2))

  ``H`` lies in ``[0, 1]``: 0 for identical Gaussians, close to 1 for far-apart ones.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from spikefed.data.heterogeneity_batch import BATCH_COVARIANCE_BYTES, batch_gaussian_fits, batch_hellinger, batch_jsd
from spikefed.data.partition import batch_label_counts, check_int, as_labels, concat_parts

#: Column names of the rows returned by :func:`format_table`.
TABLE_COLUMNS: tuple[str, ...] = ("client", "size", "classes", "jsd", "hellinger")

#: Valid ``covariance`` choices of :func:`client_heterogeneity`.
COVARIANCES: tuple[str, ...] = ("full", "diag")

#: Default ridge added to covariances in :func:`hellinger_gaussian` and :func:`client_heterogeneity`.
EPS = 1e-6


def _array(name: str, value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array, got {type(value).__name__}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _distribution(name: str, value: object) -> np.ndarray:
    arr = _array(name, value)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D vector, got shape {list(arr.shape)}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be nonnegative, got minimum {arr.min():g}")
    total = arr.sum()
    if not total > 0:
        raise ValueError(f"{name} must have a positive sum, got {total:g}")
    return arr / total


def js_divergence(
    p: Sequence[float] | np.ndarray | torch.Tensor,
    q: Sequence[float] | np.ndarray | torch.Tensor,
    base: float = 2.0,
) -> float:
    """Jensen-Shannon divergence ``1/2 KL(p||m) + 1/2 KL(q||m)``, ``m = (p+q)/2``, in units of ``log(base)``.

    ``p`` and ``q`` are nonnegative vectors of one length with positive sums (counts are fine); each is divided by
    its sum first. Terms with ``p_i = 0`` (resp. ``q_i = 0``) contribute 0. The result lies in
    ``[0, log(2) / log(base)]``: ``[0, 1]`` for ``base = 2``, ``[0, ln 2]`` for ``base = e``.
    """
    if isinstance(base, bool) or not isinstance(base, (int, float, np.integer, np.floating)) or not (
        math.isfinite(base) and base > 1
    ):
        raise ValueError(f"base must be a finite float > 1, got {base!r}")
    pn = _distribution("p", p)
    qn = _distribution("q", q)
    if pn.shape != qn.shape:
        raise ValueError(f"p and q must have the same length, got {pn.size} and {qn.size}")
    m = 0.5 * (pn + qn)

    def kl_to_m(a: np.ndarray) -> float:
        s = a > 0  # there m >= a / 2 > 0
        return float(np.sum(a[s] * np.log(a[s] / m[s])))

    value = (0.5 * kl_to_m(pn) + 0.5 * kl_to_m(qn)) / math.log(base)
    return float(min(max(value, 0.0), math.log(2.0) / math.log(base)))


def _gaussian_args(mu: object, cov: object, which: str) -> tuple[np.ndarray, np.ndarray]:
    m = np.atleast_1d(_array(f"mu{which}", mu))
    if m.ndim != 1:
        raise ValueError(f"mu{which} must be a 1-D vector, got shape {list(m.shape)}")
    d = m.size
    c = _array(f"cov{which}", cov)
    if c.ndim < 2 and c.size == 1 and d == 1:
        c = c.reshape(1, 1)
    if c.shape != (d, d):
        raise ValueError(f"cov{which} must have shape [{d}, {d}] to match mu{which}, got {list(c.shape)}")
    return m, c


def _cholesky(s: np.ndarray, name: str) -> np.ndarray:
    try:
        return np.linalg.cholesky(s)
    except np.linalg.LinAlgError:
        raise ValueError(f"{name} + eps*I must be symmetric positive definite; raise eps") from None


def hellinger_gaussian(
    mu1: Sequence[float] | np.ndarray | torch.Tensor,
    cov1: np.ndarray | torch.Tensor,
    mu2: Sequence[float] | np.ndarray | torch.Tensor,
    cov2: np.ndarray | torch.Tensor,
    eps: float = EPS,
) -> float:
    """Hellinger distance ``H in [0, 1]`` between ``N(mu1, cov1 + eps I)`` and ``N(mu2, cov2 + eps I)``.

    With ``S1 = cov1 + eps I``, ``S2 = cov2 + eps I``, ``S = (S1 + S2) / 2`` and ``dmu = mu1 - mu2``::

        log BC = 1/4 log det S1 + 1/4 log det S2 - 1/2 log det S - 1/8 dmu^T S^(-1) dmu
        H      = sqrt(1 - BC)

    (``BC``: Bhattacharyya coefficient). Log-determinants come from Cholesky factors (``log det S = 2 sum log
    L_ii``; as stable as ``slogdet``, and the factorisation checks positive definiteness), so nothing over- or
    underflows in high dimension. The ridge ``eps`` makes singular covariances usable (e.g. pixels that are
    constant); a direction where both covariances are 0 then contributes nothing. Note that a covariance fitted
    on fewer samples than dimensions is rank-deficient, so it is dominated by ``eps`` in the missing directions
    and ``H`` tends to 1 against a full-rank one.

    Args:
        mu1, mu2: means ``[d]`` (a scalar for ``d = 1``).
        cov1, cov2: covariances ``[d, d]`` (a scalar variance for ``d = 1``).
        eps: ridge ``>= 0`` added to both diagonals.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) or not (
        math.isfinite(eps) and eps >= 0
    ):
        raise ValueError(f"eps must be a finite float >= 0, got {eps!r}")
    m1, c1 = _gaussian_args(mu1, cov1, "1")
    m2, c2 = _gaussian_args(mu2, cov2, "2")
    if m1.size != m2.size:
        raise ValueError(f"mu1 and mu2 must have the same dimension, got {m1.size} and {m2.size}")
    ridge = float(eps) * np.eye(m1.size)
    s1 = c1 + ridge
    s2 = c2 + ridge
    s = 0.5 * (s1 + s2)
    l1 = _cholesky(s1, "cov1")
    l2 = _cholesky(s2, "cov2")
    lm = _cholesky(s, "(cov1 + cov2) / 2")

    def logdet(factor: np.ndarray) -> float:
        return 2.0 * float(np.sum(np.log(np.diag(factor))))

    z = np.linalg.solve(lm, m1 - m2)  # ||L^-1 dmu||^2 = dmu^T S^-1 dmu
    log_bc = 0.25 * logdet(l1) + 0.25 * logdet(l2) - 0.5 * logdet(lm) - 0.125 * float(z @ z)
    h2 = -math.expm1(min(log_bc, 0.0))  # 1 - BC, accurate near BC = 1
    return math.sqrt(min(max(h2, 0.0), 1.0))


#: Above this ``min(N, D)`` the principal axes come from randomized subspace iteration instead of a full SVD.
EXACT_PCA_MAX = 1000


def _principal_projection(centred: np.ndarray, k: int, power_iterations: int = 8) -> np.ndarray:
    """``X V_k``: centred rows ``X [N, D]`` on their top-k principal axes.

    A full SVD when ``min(N, D) <= EXACT_PCA_MAX`` (digits: D = 64; when ``N > 4 D`` the same axes as the
    eigenvectors of the ``D x D`` matrix ``X^T X``). Larger sets (event frames ``[N, T, F]``
    flattened: 1437 x 8000, 4000 x 5780) would take minutes; there a seeded randomized subspace iteration
    (Halko, Martinsson & Tropp 2011: ``Y = (X X^T)^q X G``, ``G`` Gaussian ``[D, k + 10]``, re-orthonormalised
    every step; then the SVD of ``Q^T X``) gives the same axes to within ``(s_{k+11} / s_k)^(2q+1)``, up to
    their signs, to which the Gaussian fits are blind. Deterministic (fixed seed).
    """
    n, d = centred.shape
    k = min(k, n, d)
    if min(n, d) <= EXACT_PCA_MAX:
        if n > 4 * d:  # many more rows than columns (100,000 clients' samples x 64 pixels): the right singular
            # vectors of X are the eigenvectors of X^T X (D x D), in descending order of the eigenvalues
            _, vecs = np.linalg.eigh(centred.T @ centred)
            return centred @ vecs[:, ::-1][:, :k]
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:k].T
    width = min(k + 10, n, d)
    y = centred @ np.random.default_rng(0).standard_normal((d, width))
    for _ in range(power_iterations):
        q, _ = np.linalg.qr(y)
        y = centred @ (centred.T @ q)
    q, _ = np.linalg.qr(y)
    u, s, _ = np.linalg.svd(q.T @ centred, full_matrices=False)
    return (q @ u[:, :k]) * s[:k]


#: float64 bytes per block of rows of :func:`_blocked_projection`
PROJECTION_BLOCK_BYTES = 32 << 20


def _blocked_projection(rows: np.ndarray, k: int, power_iterations: int = 8) -> np.ndarray:
    """:func:`_principal_projection` (randomized branch) of integer rows ``[N, D]`` (a compact frame store),
    made float64 one block of rows at a time (the centring applied to the products): memory
    ``O(block + (N + D) k)`` instead of the ``16 N D`` bytes of a float64 copy and its centred copy. Same
    algorithm, same seed."""
    n, d = rows.shape
    step = max(1, PROJECTION_BLOCK_BYTES // (8 * d))
    spans = [slice(s, min(s + step, n)) for s in range(0, n, step)]
    mu = sum(rows[sp].sum(axis=0, dtype=np.float64) for sp in spans) / n

    def times(m: np.ndarray) -> np.ndarray:  # centred @ m = X m - 1 (mu m)
        out = np.empty((n, m.shape[1]))
        for sp in spans:
            out[sp] = rows[sp].astype(np.float64) @ m
        return out - mu @ m

    def t_times(q: np.ndarray) -> np.ndarray:  # centred.T @ q = X^T q - mu (1^T q)
        acc = np.zeros((d, q.shape[1]))
        for sp in spans:
            acc += rows[sp].astype(np.float64).T @ q[sp]
        return acc - np.outer(mu, q.sum(axis=0))

    k = min(k, n, d)
    width = min(k + 10, n, d)
    y = times(np.random.default_rng(0).standard_normal((d, width)))
    for _ in range(power_iterations):
        q, _ = np.linalg.qr(y)
        y = times(t_times(q))
    q, _ = np.linalg.qr(y)
    u, s, _ = np.linalg.svd(t_times(q).T, full_matrices=False)
    return (q @ u[:, :k]) * s[:k]


def fit_gaussian(x: np.ndarray, diag: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and unbiased covariance (``ddof = 1``) of rows ``x [n, D]``; zero covariance when ``n = 1``."""
    mu = x.mean(axis=0)
    if x.shape[0] < 2:
        return mu, np.zeros((x.shape[1], x.shape[1]))
    centred = x - mu
    if diag:
        return mu, np.diag(np.einsum("nd,nd->d", centred, centred) / (x.shape[0] - 1))
    return mu, centred.T @ centred / (x.shape[0] - 1)


#: Settings used for the reports (summary, ``spikefed partition``): with 64-D features and ~100 samples per client,
#: a full covariance makes every client look maximally different (H ~ 1 even for IID splits); Gaussian fits in
#: the top-8 principal subspace of the whole training set keep the distance informative.
REPORT_SETTINGS: dict[str, Any] = {"covariance": "full", "eps": 1e-6, "pca_dims": 8}


def client_heterogeneity(
    x: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | Sequence[int],
    parts: Sequence[np.ndarray],
    num_classes: int,
    *,
    eps: float = EPS,
    covariance: str = "full",
    pca_dims: int | None = None,
) -> dict[str, Any]:
    """Per-client label and feature heterogeneity of a partition, against the whole set ``(x, labels)``.

    For client ``i`` with samples ``parts[i]``:

    - ``jsd[i] = JSD_2(counts_i, counts_all)``: base-2 :func:`js_divergence` of its label counts against the label
      counts of all ``labels``, in ``[0, 1]``.
    - ``hellinger[i] = H(N(mu_i, S_i), N(mu_all, S_all))``: :func:`hellinger_gaussian` (ridge ``eps``) between
      Gaussian fits of its features and of all features. Features ``[n, ...]`` are flattened to ``[n, D]``; the
      fit is the sample mean and the unbiased covariance (``ddof = 1``); with ``covariance="diag"`` only its
      diagonal is kept (per-feature variances; then ``H^2 = 1 - prod_k BC_k`` over features). A client with one
      sample has an undefined covariance: it is taken as 0, i.e. ``eps * I`` after the ridge (so ``H`` is near 1).

    Caveat: with many features the full-covariance ``H`` saturates near 1 even for IID clients, because the
    sampling noise of a ``D x D`` covariance fitted on ``n`` samples adds up over ``D^2`` entries, and because
    features with (near-)zero variance make tiny ``eps`` ratios large. On digits (``D = 64``, 10 IID clients of
    about 144 samples, unit scale) the mean ``H`` is about 0.99 at ``eps = 1e-6``; ``covariance="diag"`` with
    ``eps = 1e-2`` gives about 0.26 for IID vs 0.9 for 2-shard clients. Compare values only at equal settings.

    ``pca_dims = k`` first projects all features on the top-k principal axes of the whole set (fitted by SVD
    on the centred features), where the Gaussian fits are well conditioned; :data:`REPORT_SETTINGS` uses it.

    An empty client gets ``nan`` for both and is left out of the summaries. ``parts`` need not be a partition
    (indices are only range-checked).

    Returns:
        ``{"sizes", "classes", "label_counts", "jsd", "hellinger"}`` (per-client lists: sample count, number
        of classes present, ``[C]`` label counts, the two distances) and ``mean_jsd``, ``max_jsd``,
        ``mean_hellinger``, ``max_hellinger`` (floats over non-empty clients; ``nan`` if all are empty).
    """
    if covariance not in COVARIANCES:
        raise ValueError(f"unknown covariance {covariance!r}; valid choices: {', '.join(map(repr, COVARIANCES))}")
    y = as_labels(labels)
    c = check_int("num_classes", num_classes, 1)
    raw = x.numpy() if isinstance(x, torch.Tensor) and not x.requires_grad else x
    if (pca_dims is not None and isinstance(raw, np.ndarray) and raw.dtype.kind in "ui" and raw.ndim >= 1
            and raw.shape[0] == y.size and min(y.size, raw[:1].size) > EXACT_PCA_MAX):
        # a compact (integer) frame store: projected block by block, never made float64 whole
        feats = _blocked_projection(raw.reshape(y.size, -1), check_int("pca_dims", pca_dims, 1))
        pca_dims = None
    else:
        feats = _array("x", x)
    if feats.ndim < 1 or feats.shape[0] != y.size:
        raise ValueError(
            f"expected x of shape [N, ...] with N = len(labels) = {y.size}, got {list(feats.shape)}"
        )
    feats = feats.reshape(y.size, -1)
    if pca_dims is not None:
        k = check_int("pca_dims", pca_dims, 1)
        feats = _principal_projection(feats - feats.mean(axis=0), k)
    if y.size and y.max() >= c:
        raise ValueError(f"labels must lie in [0, {c}) for num_classes = {c}, got maximum {int(y.max())}")
    if isinstance(parts, (str, bytes)) or not isinstance(parts, Sequence):
        raise ValueError(f"parts must be a sequence of index arrays, got {type(parts).__name__}")
    global_counts = np.bincount(y, minlength=c)
    diag = covariance == "diag"
    mu_all, cov_all = fit_gaussian(feats, diag)
    flat, part_sizes = concat_parts(parts, y.size)
    counts = batch_label_counts(y, flat, part_sizes, c)
    jsd = batch_jsd(counts, global_counts).tolist()
    d = feats.shape[1]
    if len(parts) * d * d * 8 <= BATCH_COVARIANCE_BYTES:  # all clients' fits stacked
        mu, cov = batch_gaussian_fits(feats, flat, part_sizes, diag)

        def one(i: int) -> None:  # the per-client function's error for a failing factorisation
            mu_i, cov_i = fit_gaussian(feats[flat[offsets[i]:offsets[i + 1]]], diag)
            hellinger_gaussian(mu_i, cov_i, mu_all, cov_all, eps=eps)

        offsets = np.concatenate([[0], np.cumsum(part_sizes)])
        hell = batch_hellinger(mu, cov, mu_all, cov_all, eps, fallback=one).tolist()
    else:  # wide features with full covariances: one client at a time (D x D each)
        hell = []
        start = 0
        for size in part_sizes.tolist():
            idx = flat[start:start + size]
            start += size
            if size == 0:
                hell.append(math.nan)
                continue
            mu_i, cov_i = fit_gaussian(feats[idx], diag)
            hell.append(hellinger_gaussian(mu_i, cov_i, mu_all, cov_all, eps=eps))
    sizes = part_sizes.tolist()

    def summary(values: list[float], how: Any) -> float:
        kept = [v for v in values if not math.isnan(v)]
        return float(how(kept)) if kept else math.nan

    return {
        "sizes": sizes,
        "classes": np.count_nonzero(counts, axis=1).tolist(),
        "label_counts": counts.tolist(),
        "jsd": jsd,
        "hellinger": hell,
        "mean_jsd": summary(jsd, np.mean),
        "max_jsd": summary(jsd, max),
        "mean_hellinger": summary(hell, np.mean),
        "max_hellinger": summary(hell, max),
    }


def format_table(report: dict[str, Any]) -> list[tuple[int, int, int, float, float]]:
    """Rows ``(client, size, classes present, jsd, hellinger)`` of a :func:`client_heterogeneity` report.

    Plain values, one row per client in order; the column names are :data:`TABLE_COLUMNS`. Formatting is left
    to the caller.
    """
    keys = ("sizes", "classes", "jsd", "hellinger")
    if not isinstance(report, dict) or any(k not in report for k in keys):
        raise ValueError(f"report must be a dict from client_heterogeneity with keys {', '.join(keys)}")
    columns = [list(report[k]) for k in keys]
    if len({len(col) for col in columns}) != 1:
        raise ValueError(
            "report lists must have one entry per client, got lengths "
            + ", ".join(f"{k}={len(col)}" for k, col in zip(keys, columns))
        )
    return [
        (i, int(size), int(classes), float(j), float(h))
        for i, (size, classes, j, h) in enumerate(zip(*columns))
    ]
