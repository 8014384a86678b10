"""Manifold-aware aggregation of client parameters (pure functions).

Every parameter lives on a :class:`~spikefed.manifold.Manifold`, and each manifold has a *chart*: a map to
an (unbounded) coordinate space in which averaging and server-optimizer steps are done.

==============  =====================  =========================  ==========================================
kind            chart ``y = phi(w)``   inverse ``w = phi^-1(y)``  weighted mean of ``w_1..w_K`` with ``p_k``
==============  =====================  =========================  ==========================================
euclidean       ``w``                  ``y``                      ``sum_k p_k w_k``
positive        ``log w``              ``exp y``                  ``exp(sum_k p_k log w_k)`` (geometric)
unit_interval   ``logit w``            ``sigmoid y``              ``sigmoid(sum_k p_k logit w_k)``
circular(P)     ``w``                  ``y mod P``                ``arg(sum_k p_k e^{i 2 pi w_k / P}) P / 2 pi``
==============  =====================  =========================  ==========================================

Means are computed in float64 and cast back to the dtype of the stack. For numerical exactness they are
evaluated relative to the first client (``k = 0``), which is the same value in exact arithmetic:

- chart manifolds: ``phi^-1(y_0 + sum_k p_k (y_k - y_0))`` with ``y_k = phi(w_k)``; elements on which all
  clients agree return that common value exactly (no ulp drift from the chart round trip ``phi^-1(phi(w))``);
- circular: ``w_0 + arg(sum_k p_k e^{i 2 pi (w_k - w_0) / P}) P / 2 pi``, wrapped into ``[0, P)`` (rotation
  invariance of the phasor mean).

**Circular mean of cancelling phasors.** When the resultant length ``|sum_k p_k e^{i theta_k}|`` is at most
``16 * eps(dtype)`` (e.g. two equally weighted clients on opposite sides of the ring) the mean direction is
undefined; the rule used here is: take the value of the client with the largest weight, the first such
client on ties, wrapped into ``[0, P)``. The rule applies element-wise.
"""

from __future__ import annotations

import math
import statistics
import numbers
from collections.abc import Mapping, Sequence

import torch

from spikefed.federated.stack_ops import all_finite, finite_rows, weighted_sum64
from spikefed.federated.types import ClientUpdate, ParamDict
from spikefed.manifold import EUCLIDEAN, Manifold

__all__ = [
    "InvalidUpdate",
    "aggregate_params",
    "chart_difference",
    "from_chart",
    "normalized_weights",
    "stacked_rows",
    "to_chart",
    "update_delta_norm",
    "validate_update",
    "weighted_mean",
    "wrap_circular",
]


class InvalidUpdate(ValueError):
    """A client update that must not be aggregated. ``client_id`` says whose it is, ``reason`` why."""

    def __init__(self, client_id: int, reason: str) -> None:
        super().__init__(f"client {client_id}: invalid update: {reason}")
        self.client_id = client_id
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[int, str]]:  # pickling (multiprocessing) with two arguments
        return (type(self), (self.client_id, self.reason))


# ----------------------------------------------------------------------------------------------- weights


def normalized_weights(num_samples: Sequence[int]) -> torch.Tensor:
    """FedAvg weights ``p_k = n_k / sum_j n_j`` as a float64 tensor of shape ``[K]``.

    Raises ``ValueError`` for an empty sequence or any ``n_k`` that is not a positive integer.
    """
    counts = list(num_samples)
    if not counts:
        raise ValueError("normalized_weights needs at least one sample count, got an empty sequence")
    for k, n in enumerate(counts):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise ValueError(f"sample count #{k} must be an integer, got {n!r}")
        if n < 1:
            raise ValueError(f"sample count #{k} must be positive, got {n}")
    w = torch.tensor([int(c) for c in counts], dtype=torch.float64)
    return w / w.sum()


def _check_weights(weights: torch.Tensor | Sequence[float], k: int) -> torch.Tensor:
    """Weights as a float64 tensor ``[K]`` normalised to sum 1; ValueError unless finite, >= 0, sum > 0."""
    p = torch.as_tensor(weights, dtype=torch.float64).detach()
    if p.ndim != 1 or p.shape[0] != k:
        raise ValueError(f"weights must have shape [{k}] (one per client), got {tuple(p.shape)}")
    if not torch.isfinite(p).all():
        raise ValueError(f"weights must be finite, got {p.tolist()}")
    if (p < 0).any():
        raise ValueError(f"weights must be non-negative, got {p.tolist()}")
    total = p.sum()
    if not total > 0:
        raise ValueError(f"weights must not all be zero, got {p.tolist()}")
    return p / total


# ------------------------------------------------------------------------------------------------ charts


def _period(manifold: Manifold) -> float:
    assert manifold.period is not None
    return float(manifold.period)


def wrap_circular(x: torch.Tensor, period: float) -> torch.Tensor:
    """``x mod P`` in ``[0, P)`` (new tensor); a value that rounds onto ``P`` itself becomes 0."""
    y = torch.remainder(x, period)
    return y.masked_fill(y >= period, 0.0)


def to_chart(x: torch.Tensor, manifold: Manifold) -> torch.Tensor:
    """Chart coordinates ``phi(x)``: identity (euclidean, circular), ``log x`` (positive), ``logit x``.

    ``logit x = log x - log(1 - x)``. Values outside the manifold's domain give ``nan``/``inf``; validate
    first (:func:`validate_update`).
    """
    if manifold.kind == "positive":
        return torch.log(x)
    if manifold.kind == "unit_interval":
        return torch.log(x) - torch.log1p(-x)
    return x.clone()


def from_chart(y: torch.Tensor, manifold: Manifold) -> torch.Tensor:
    """Inverse chart ``phi^-1(y)``: identity, ``exp y``, ``sigmoid y``, or ``y mod P`` in ``[0, P)``."""
    if manifold.kind == "positive":
        return torch.exp(y)
    if manifold.kind == "unit_interval":
        return torch.sigmoid(y)
    if manifold.kind == "circular":
        return wrap_circular(y, _period(manifold))
    return y.clone()


def chart_difference(a: torch.Tensor, b: torch.Tensor, manifold: Manifold) -> torch.Tensor:
    """``phi(a) - phi(b)``; for circular(P) the shortest signed arc from ``b`` to ``a``, in ``(-P/2, P/2]``.

    Circular: ``d = P/2 - ((P/2 - (a - b)) mod P)``, so that ``b + d == a (mod P)``.
    """
    if manifold.kind != "circular":
        return to_chart(a, manifold) - to_chart(b, manifold)
    period = _period(manifold)
    half = period / 2.0
    d = half - torch.remainder(half - (a - b), period)
    return torch.where(d <= -half, d + period, d)  # float rounding can land remainder() on P itself


# ------------------------------------------------------------------------------------------------ stacks


def stacked_rows(tensors: Sequence[torch.Tensor], device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.stack([t.to(device, dtype) for t in tensors])`` (detached), without the copy when ``tensors`` are
    views of one storage at evenly spaced offsets with one shape and strides (the rows ``0..K-1`` of a tensor
    ``[K, ...]``, as :func:`~spikefed.federated.boundary.parse_uploads` hands out a round's parameters): then a
    strided view of that storage. Treat the result as read-only."""
    first = tensors[0] if len(tensors) else None
    base = first._base if isinstance(first, torch.Tensor) else None
    if base is not None and first is not None:
        start = first.storage_offset()
        step = tensors[1].storage_offset() - start if len(tensors) > 1 else first.numel()
        shape, stride = first.shape, first.stride()
        if step > 0 and all(t._base is base and t.storage_offset() == start + i * step and t.shape == shape
                            and t.stride() == stride for i, t in enumerate(tensors)):
            view = base.detach().as_strided((len(tensors), *shape), (step, *stride), start)
            return view.to(device=device, dtype=dtype)
    return torch.stack([t.detach().to(device=device, dtype=dtype) for t in tensors])


# ------------------------------------------------------------------------------------------------- means


def weighted_mean(
    stack: torch.Tensor, weights: torch.Tensor | Sequence[float], manifold: Manifold = EUCLIDEAN
) -> torch.Tensor:
    """Weighted mean on ``manifold`` of a stack ``[K, *shape]`` of client values, weights ``p`` of shape ``[K]``.

    Weights are normalised to sum to one (``p / sum p``); they must be finite and non-negative. Returns a
    tensor of shape ``shape`` with the dtype and device of ``stack``; see the module docstring for the
    formulas, the numerically exact evaluation and the rule for cancelling circular phasors.

    Raises ``ValueError`` for a non-floating or empty stack, non-finite values, or values outside the domain
    of a positive (``w > 0``) or unit-interval (``0 < w < 1``) manifold.
    """
    if not isinstance(stack, torch.Tensor) or not stack.is_floating_point():
        raise ValueError(f"stack must be a floating-point tensor, got {getattr(stack, 'dtype', type(stack))}")
    if stack.ndim < 1 or stack.shape[0] < 1:
        raise ValueError(f"stack must have shape [K >= 1, ...], got {tuple(stack.shape)}")
    k = stack.shape[0]
    p = _check_weights(weights, k).to(stack.device)
    if not all_finite(stack.detach()):
        raise ValueError("stack contains non-finite values")
    if manifold.kind == "euclidean":  # float64 sums over blocks of rows: no float64 copy of the stack
        mean = weighted_sum64(stack.detach(), p).to(stack.dtype)
        if stack.dtype != torch.float64:
            # the float64 mean of equal values v rounds back to v in any narrower dtype (its relative error,
            # ~K * 1e-16, is far below half an ulp there), so the exact-tie rule below holds without a pass
            return mean
        return torch.where((stack == stack[0]).all(0), stack[0].detach(), mean)
    x = stack.detach().to(torch.float64)
    if manifold.kind == "positive" and not (x > 0).all():
        raise ValueError("values on a positive manifold must be > 0")
    if manifold.kind == "unit_interval" and not ((x > 0) & (x < 1)).all():
        raise ValueError("values on a unit_interval manifold must lie in (0, 1)")
    pw = p.reshape((k,) + (1,) * (x.ndim - 1))

    if manifold.kind == "circular":
        period = _period(manifold)
        ref = x[0]
        theta = (x - ref) * (2.0 * math.pi / period)
        re = (pw * torch.cos(theta)).sum(0)
        im = (pw * torch.sin(theta)).sum(0)
        mean = ref + torch.atan2(im, re) * (period / (2.0 * math.pi))
        degenerate = torch.hypot(re, im) <= 16.0 * torch.finfo(stack.dtype).eps
        if degenerate.any():
            heaviest = int(torch.argmax(p))  # first index among ties
            mean = torch.where(degenerate, x[heaviest], mean)
        return wrap_circular(mean.to(stack.dtype), period)

    y = to_chart(x, manifold)
    y0 = y[0]
    mean_chart = y0 + (pw * (y - y0)).sum(0)
    mean = from_chart(mean_chart, manifold).to(stack.dtype)
    # the mean of identical values is that value, exactly (the chart round trip may be off by an ulp)
    same = (stack == stack[0]).all(0)
    return torch.where(same, stack[0].detach(), mean)


def aggregate_params(
    updates: Sequence[ParamDict],
    weights: torch.Tensor | Sequence[float],
    manifolds: Mapping[str, Manifold] | None = None,
) -> ParamDict:
    """Per-parameter :func:`weighted_mean` of client parameter dicts.

    ``out[name] = weighted_mean(stack_k updates[k][name], weights, manifolds.get(name, EUCLIDEAN))``.
    Names and order follow ``updates[0]``; every update must hold the same names with the same shapes
    (ValueError naming the offending update index and parameter otherwise). Each result has the dtype and
    device of ``updates[0][name]``. Entries of ``manifolds`` for names not present are ignored.
    """
    if not updates:
        raise ValueError("aggregate_params needs at least one update, got none")
    manifolds = manifolds or {}
    first = updates[0]
    names = list(first)
    for i, upd in enumerate(updates[1:], start=1):
        if set(upd) != set(names):
            missing, extra = sorted(set(names) - set(upd)), sorted(set(upd) - set(names))
            raise ValueError(
                f"update #{i}: parameter names differ from update #0: missing {missing}, unexpected {extra}"
            )
    out: ParamDict = {}
    for name in names:
        ref = first[name]
        for i, upd in enumerate(updates):
            t = upd[name]
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise ValueError(f"update #{i}, parameter {name!r}: expected a floating-point tensor, got "
                                 f"{getattr(t, 'dtype', type(t))}")
            if t.shape != ref.shape:
                raise ValueError(f"update #{i}, parameter {name!r}: shape {tuple(t.shape)} differs from "
                                 f"update #0's {tuple(ref.shape)}")
        dtype = ref.dtype
        for upd in updates[1:]:
            dtype = torch.promote_types(dtype, upd[name].dtype)
        # the stack keeps the clients' (promoted) precision: it sets the circular degeneracy tolerance
        stack = stacked_rows([upd[name] for upd in updates], ref.device, dtype)
        try:
            mean = weighted_mean(stack, weights, manifolds.get(name, EUCLIDEAN))
        except ValueError as e:
            raise ValueError(f"parameter {name!r}: {e}") from None
        out[name] = mean.to(ref.dtype)
    return out


# -------------------------------------------------------------------------------------------- validation


def update_delta_norm(
    params: ParamDict, reference: ParamDict, manifolds: Mapping[str, Manifold] | None = None
) -> float:
    """``||params - reference||_2`` over all tensors together: ``sqrt(sum_name sum_i (p_i - r_i)^2)``.

    Circular parameters (when ``manifolds`` is given) use the wrapped difference in ``(-P/2, P/2]``; all
    other kinds the plain difference of values. Computed in float64.
    """
    manifolds = manifolds or {}
    total = 0.0
    for name, ref in reference.items():
        a = params[name].detach().to(device=ref.device, dtype=torch.float64)
        b = ref.detach().to(torch.float64)
        m = manifolds.get(name, EUCLIDEAN)
        d = chart_difference(a, b, m) if m.kind == "circular" else a - b
        total += float((d * d).sum())
    return math.sqrt(total)


def check_structure(client_id: int, what: str, got: ParamDict, reference: ParamDict) -> None:
    """Names, tensor types, shapes and floating dtypes of one client's dict (no tensor arithmetic)."""
    if not isinstance(got, Mapping):
        raise InvalidUpdate(client_id, f"{what} must be a name -> tensor dict, got {type(got).__name__}")
    missing = [n for n in reference if n not in got]
    extra = [n for n in got if n not in reference]
    if missing or extra:
        raise InvalidUpdate(client_id, f"{what}: missing parameters {missing}, unexpected parameters {extra}")
    for name, ref in reference.items():
        t = got[name]
        if not isinstance(t, torch.Tensor):
            raise InvalidUpdate(client_id, f"{what} {name!r}: expected a tensor, got {type(t).__name__}")
        if t.shape != ref.shape:
            raise InvalidUpdate(
                client_id, f"{what} {name!r}: expected shape {tuple(ref.shape)}, got {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise InvalidUpdate(client_id, f"{what} {name!r}: expected a floating-point dtype, got {t.dtype}")


def _check_tensor_dict(
    client_id: int, what: str, got: ParamDict, reference: ParamDict, manifolds: Mapping[str, Manifold] | None
) -> None:
    check_structure(client_id, what, got, reference)
    for name in reference:
        t = got[name]
        if not torch.isfinite(t).all():
            raise InvalidUpdate(client_id, f"{what} {name!r}: contains non-finite values (nan/inf)")
        if manifolds is not None:
            m = manifolds.get(name, EUCLIDEAN)
            if not m.contains(t.detach()):
                raise InvalidUpdate(client_id, f"{what} {name!r}: values do not lie on its manifold {m}")


def validate_update(
    update: ClientUpdate,
    reference: ParamDict,
    max_norm: float | None = None,
    manifolds: Mapping[str, Manifold] | None = None,
) -> None:
    """Raise :class:`InvalidUpdate` (naming ``update.client_id``) unless ``update`` is safe to aggregate.

    Checks, in order: ``num_samples`` is an integer >= 1; ``params`` holds exactly the names of ``reference``,
    each a floating-point tensor of the reference shape with finite values; when ``manifolds`` is given, every
    value lies on its parameter's manifold (``Manifold.contains``); ``control_delta`` (if present) passes the
    same structural and finiteness checks; and, when ``max_norm`` is given,
    ``||params - reference||_2 <= max_norm`` (see :func:`update_delta_norm`).

    A different floating dtype from the reference is accepted (aggregation works in float64).
    """
    cid = update.client_id
    if max_norm is not None and not (isinstance(max_norm, numbers.Real) and max_norm > 0 and math.isfinite(max_norm)):
        raise ValueError(f"max_norm must be a finite number > 0 or None, got {max_norm!r}")
    n = update.num_samples
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise InvalidUpdate(cid, f"num_samples must be an integer >= 1, got {n!r}")
    _check_tensor_dict(cid, "parameter", update.params, reference, manifolds)
    if update.control_delta is not None:
        _check_tensor_dict(cid, "control_delta", update.control_delta, reference, None)
    if max_norm is not None:
        norm = update_delta_norm(update.params, reference, manifolds)
        if norm > max_norm:
            raise InvalidUpdate(
                cid, f"update norm ||params - reference||_2 = {norm:.6g} exceeds max_norm = {max_norm:g}"
            )


def _on_manifold_rows(stack: torch.Tensor, m: Manifold) -> torch.Tensor:
    """Per-row (client) version of :meth:`Manifold.contains` for a stack ``[K, ...]`` -> bool ``[K]``."""
    flat = stack.flatten(1)
    if m.kind == "positive":
        return (flat > 0).all(1)
    if m.kind == "unit_interval":
        return ((flat > 0) & (flat < 1)).all(1)
    if m.kind == "circular":
        return ((flat >= 0) & (flat < _period(m))).all(1)
    return torch.ones(stack.shape[0], dtype=torch.bool)


_NORM_CHUNK = 2**19  # float64 elements per chunk of validate_updates' norms (4 MiB: stays in cache)


def validate_updates(
    updates: Sequence[ClientUpdate],
    reference: ParamDict,
    max_norm: float | None = None,
    manifolds: Mapping[str, Manifold] | None = None,
    relative_bound: float | None = None,
) -> tuple[list[ClientUpdate], list[InvalidUpdate]]:
    """:func:`validate_update` for a whole round at once: returns ``(accepted, rejected)``.

    The same checks in the same order, with the same messages, but the tensor checks (finite values, manifold
    membership, update norms) run on per-parameter stacks ``[K, ...]`` instead of client by client. A repeated
    client id is rejected too (the later update).

    ``relative_bound`` (``b``, optional): after the other checks, an update whose norm
    ``||w_k - reference||_2`` exceeds ``b * median_j ||w_j - reference||_2`` (the median over the updates
    that passed them) is rejected as well: a bound that needs no scale from the user and that a minority of
    clients cannot move. It is skipped when the median is 0 (nothing to compare with).
    """
    if max_norm is not None and not (isinstance(max_norm, numbers.Real) and max_norm > 0 and math.isfinite(max_norm)):
        raise ValueError(f"max_norm must be a finite number > 0 or None, got {max_norm!r}")
    if relative_bound is not None and not (isinstance(relative_bound, numbers.Real) and relative_bound >= 1
                                           and math.isfinite(relative_bound)):
        raise ValueError(f"relative_bound must be a finite number >= 1 or None, got {relative_bound!r}")
    rejected: list[InvalidUpdate] = []
    ok: list[ClientUpdate] = []
    seen: set[int] = set()
    for u in updates:
        cid = u.client_id
        try:
            if cid in seen:
                raise InvalidUpdate(cid, "duplicate client id in this round")
            n = u.num_samples
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
                raise InvalidUpdate(cid, f"num_samples must be an integer >= 1, got {n!r}")
            check_structure(cid, "parameter", u.params, reference)
            if u.control_delta is not None:
                check_structure(cid, "control_delta", u.control_delta, reference)
        except InvalidUpdate as e:
            rejected.append(e)
            continue
        seen.add(cid)
        ok.append(u)
    if not ok:
        return ok, rejected
    k = len(ok)
    reasons: list[str | None] = [None] * k
    norm_sq = torch.zeros(k, dtype=torch.float64)
    for name, ref in reference.items():
        stack = stacked_rows([u.params[name] for u in ok], ref.device)
        finite = finite_rows(stack)
        m = (manifolds or {}).get(name, EUCLIDEAN)
        on = _on_manifold_rows(stack, m) if manifolds is not None else torch.ones(k, dtype=torch.bool)
        for i in (~finite | ~on).nonzero().flatten().tolist():
            if reasons[i] is None:
                reasons[i] = (f"parameter {name!r}: contains non-finite values (nan/inf)" if not finite[i]
                              else f"parameter {name!r}: values do not lie on its manifold {m}")
        if max_norm is not None or relative_bound is not None:
            b = ref.detach().to(torch.float64)
            rows = max(1, _NORM_CHUNK // max(ref.numel(), 1))  # row by row sums: chunks give the same values
            for lo in range(0, k, rows):
                a = stack[lo:lo + rows].to(torch.float64, copy=True)
                d = chart_difference(a, b.unsqueeze(0), m) if m.kind == "circular" else a.sub_(b)  # our copy
                norm_sq[lo:lo + rows] += d.mul_(d).reshape(a.shape[0], -1).sum(1)
    with_control = [i for i, u in enumerate(ok) if u.control_delta is not None]
    if with_control:
        for name in reference:
            stack = torch.stack([ok[i].control_delta[name] for i in with_control])  # type: ignore[index]
            bad = ~finite_rows(stack)
            for j in bad.nonzero().flatten().tolist():
                i = with_control[j]
                if reasons[i] is None:
                    reasons[i] = f"control_delta {name!r}: contains non-finite values (nan/inf)"
    norms = norm_sq.sqrt().tolist()
    if max_norm is not None:
        for i, value in enumerate(norms):
            if reasons[i] is None and value > max_norm:
                reasons[i] = f"update norm ||params - reference||_2 = {value:.6g} exceeds max_norm = {max_norm:g}"
    if relative_bound is not None:
        passed = [v for v, r in zip(norms, reasons) if r is None]
        median = statistics.median(passed) if passed else 0.0
        for i, value in enumerate(norms):
            if reasons[i] is None and median > 0 and value > relative_bound * median:
                reasons[i] = (f"update norm {value:.6g} exceeds norm_bound = {relative_bound:g} x the round's median "
                              f"update norm {median:.6g}")
    accepted = [u for u, r in zip(ok, reasons) if r is None]
    rejected += [InvalidUpdate(u.client_id, r) for u, r in zip(ok, reasons) if r is not None]
    return accepted, rejected
