"""The server's trust boundary: client uploads parsed against the model's schema before any arithmetic.

Every upload (bytes from a client: in the simulation, or a Flower node's reply) goes through :func:`parse_upload`:

1. metadata: the client was asked to train this round and has not answered already; ``num_samples`` is an
   integer >= 1, ``steps`` an integer >= 0, metrics are finite numbers;
2. the payload decodes (:func:`~spikefed.federated.serialization.decode_params` for a dense delta,
   :func:`~spikefed.federated.compression.decode_message` for a compressed one: neither unpickles, both refuse
   truncated or trailing bytes);
3. the delta has exactly the model's parameter names and shapes (checked on the compressed message's header,
   before a sparse message is expanded), a floating dtype, and finite values; likewise the SCAFFOLD control delta.

Only then is the delta added to the server's parameters (``x_t + delta``, in the global dtype; a lossy delta is
projected back onto a non-euclidean parameter's manifold). The round's accepted updates then pass
:func:`~spikefed.federated.aggregation.validate_updates` (on the manifold, update-norm bounds). Any failure is one
:class:`~spikefed.federated.aggregation.InvalidUpdate` with a reason: the round logs it and goes on.

A round's uploads go through :func:`parse_uploads`: the same decisions, reasons and values as
:func:`parse_upload` applied one after another, with the common case batched. Dense payloads laid out exactly as
the model's float32 header (:class:`~spikefed.federated.serialization.WireLayout`) are read as ``[K, ...]``
stacks in one pass, checked for finiteness per row and added to the global parameters as stacks; every other
upload (another layout or dtype, a malformed payload, a row with non-finite values, a compressed message) takes
:func:`parse_upload` itself, which names its fault. Each accepted client's parameters are rows (views) of the
round's stacks, so the validation and the weighted mean read them back without copying
(:func:`~spikefed.federated.aggregation.stacked_rows`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch

from ..manifold import Manifold
from .aggregation import InvalidUpdate, check_structure
from .compression import decode_message, decompress
from .serialization import PayloadError, WireLayout, decode_params, decode_params_batch
from .stack_ops import finite_rows
from .types import ClientUpdate, ParamDict, Upload

__all__ = ["UPLINK_MODES", "check_metadata", "parse_delta", "parse_upload", "parse_uploads"]

#: how deltas travel: dense against the global model, dense against the received reference, compressed
UPLINK_MODES = ("dense", "dense-received", "compressed")


def check_metadata(up: Upload, expected: set[int] | frozenset[int],
                   answered: set[int] | frozenset[int] = frozenset()) -> None:
    """Plain fields of an upload (no tensors): ``InvalidUpdate`` naming the client unless they are sane.
    ``expected``: the clients asked this round that have not answered yet; ``answered``: those that have."""
    cid = up.client_id
    if isinstance(cid, bool) or not isinstance(cid, numbers.Integral):
        raise InvalidUpdate(-1, f"client id must be an integer, got {cid!r}")
    if up.error is not None:
        raise InvalidUpdate(int(cid), str(up.error))
    if cid in answered:
        raise InvalidUpdate(int(cid), "client answered twice in this round (its first accepted answer counts)")
    if cid not in expected:
        raise InvalidUpdate(int(cid), "client was not asked to train in this round")
    n = up.num_samples
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise InvalidUpdate(cid, f"num_samples must be an integer >= 1, got {n!r}")
    s = up.steps
    if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
        raise InvalidUpdate(cid, f"steps must be an integer >= 0, got {s!r}")
    if not isinstance(up.metrics, Mapping):
        raise InvalidUpdate(cid, f"metrics must be a name -> number dict, got {type(up.metrics).__name__}")
    for k, v in up.metrics.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise InvalidUpdate(cid, f"metric {k!r} must be a finite number, got {v!r}")
    if not isinstance(up.payload, (bytes, bytearray, memoryview)):
        raise InvalidUpdate(cid, f"payload must be bytes, got {type(up.payload).__name__}")
    if up.control_payload is not None and not isinstance(up.control_payload, (bytes, bytearray, memoryview)):
        raise InvalidUpdate(cid, f"control payload must be bytes, got {type(up.control_payload).__name__}")


def _finite(cid: int, what: str, tensors: ParamDict) -> None:
    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise InvalidUpdate(cid, f"{what} {name!r}: contains non-finite values (nan/inf)")


def _check_header(cid: int, what: str, shapes: Mapping[str, tuple[int, ...]], reference: ParamDict) -> None:
    """Names and shapes of a compressed message, before it is expanded to dense tensors."""
    missing = [n for n in reference if n not in shapes]
    extra = [n for n in shapes if n not in reference]
    if missing or extra:
        raise InvalidUpdate(cid, f"{what}: missing parameters {missing}, unexpected parameters {extra}")
    for name, ref in reference.items():
        if tuple(shapes[name]) != tuple(ref.shape):
            raise InvalidUpdate(cid, f"{what} {name!r}: expected shape {tuple(ref.shape)}, got {tuple(shapes[name])}")


def parse_delta(cid: int, payload: bytes, reference: ParamDict, compressed: bool, what: str = "delta") -> ParamDict:
    """The delta of one payload, checked against ``reference`` (names, shapes, float dtype, finite)."""
    try:
        if compressed:
            message = decode_message(payload)
            _check_header(cid, what, {n: tuple(m.shape) for n, m in message.items()}, reference)
            delta = decompress(message)
        else:
            delta = decode_params(payload)
    except PayloadError as e:
        raise InvalidUpdate(cid, f"{what} payload: {e}") from None
    check_structure(cid, what, delta, reference)
    _finite(cid, what, delta)
    return {n: delta[n] for n in reference}


def parse_upload(up: Upload, mode: str, global_params: ParamDict, received: ParamDict,
                 manifolds: Mapping[str, Manifold], expected: set[int] | frozenset[int],
                 answered: set[int] | frozenset[int] = frozenset()) -> ClientUpdate:
    """One upload -> the client's parameters as the server reconstructs them, or :class:`InvalidUpdate`.

    ``mode`` (:data:`UPLINK_MODES`): ``dense`` deltas are against the global model, the others against the
    model the clients received (lossy downlink) and may be compressed.
    """
    if mode not in UPLINK_MODES:
        raise ValueError(f"unknown uplink mode {mode!r}; valid: {', '.join(UPLINK_MODES)}")
    check_metadata(up, expected, answered)
    cid = int(up.client_id)
    delta = parse_delta(cid, bytes(up.payload), global_params, mode == "compressed")
    control = None
    if up.control_payload is not None:
        control = parse_delta(cid, bytes(up.control_payload), global_params, False, "control_delta")
    # in the global dtype: a float16 or float64 delta is converted first (a no-op for the usual float32)
    params = {n: global_params[n] + delta[n].to(global_params[n].dtype) for n in global_params}
    if mode != "dense":
        for n, p in params.items():
            m = manifolds.get(n)
            if m is not None and m.kind != "euclidean":
                m.project_(p)
    metrics: dict[str, Any] = {k: float(v) for k, v in up.metrics.items()}
    return ClientUpdate(cid, int(up.num_samples), params, metrics, control, int(up.steps))


def parse_uploads(uploads: list[Upload], mode: str, global_params: ParamDict, received: ParamDict,
                  manifolds: Mapping[str, Manifold], expected: set[int] | frozenset[int]
                  ) -> tuple[list[ClientUpdate], list[InvalidUpdate]]:
    """A round's uploads, in order: ``(parsed, rejected)``, what :func:`parse_upload` gives for each upload in
    turn (a client counts as answered after its first accepted upload), with dense float32 payloads batched.

    Arithmetic with the global parameters happens after every check, on the accepted rows only."""
    if mode not in UPLINK_MODES:
        raise ValueError(f"unknown uplink mode {mode!r}; valid: {', '.join(UPLINK_MODES)}")
    rows: list[int | None] = [None] * len(uploads)
    deltas: dict[str, torch.Tensor] = {}
    if mode != "compressed" and uploads:
        layout = WireLayout({n: tuple(p.shape) for n, p in global_params.items()}, torch.float32)
        rows, deltas = decode_params_batch([u.payload for u in uploads], layout)
        finite = torch.ones(next(iter(deltas.values())).shape[0], dtype=torch.bool)
        for d in deltas.values():
            finite &= finite_rows(d)
        rows = [r if r is not None and bool(finite[r]) else None for r in rows]  # non-finite: parse_upload says so
    pending, answered = set(expected), set[int]()
    parsed: list[ClientUpdate] = []
    rejected: list[InvalidUpdate] = []
    batched: list[tuple[ClientUpdate, int]] = []  # accepted uploads read from the stacks, and their rows
    for up, row in zip(uploads, rows):
        try:
            if row is None:
                upd = parse_upload(up, mode, global_params, received, manifolds, pending, answered)
            else:
                check_metadata(up, pending, answered)
                cid = int(up.client_id)
                control = None
                if up.control_payload is not None:
                    control = parse_delta(cid, bytes(up.control_payload), global_params, False, "control_delta")
                upd = ClientUpdate(cid, int(up.num_samples), {}, {k: float(v) for k, v in up.metrics.items()},
                                   control, int(up.steps))
                batched.append((upd, row))
        except InvalidUpdate as e:
            rejected.append(e)
            continue
        parsed.append(upd)
        pending.discard(upd.client_id)
        answered.add(upd.client_id)
    if batched:
        taken = [row for _, row in batched]
        every = taken == list(range(next(iter(deltas.values())).shape[0]))
        index = torch.as_tensor(taken, dtype=torch.int64)
        stacks: dict[str, torch.Tensor] = {}
        for n, p in global_params.items():
            d = deltas[n] if every else deltas[n].index_select(0, index)
            if d.dtype == p.dtype and d.device == p.device:  # the decoded buffer is ours: x + d written into it
                stacks[n] = d.add_(p.unsqueeze(0))
            else:  # in the global dtype, as parse_upload adds it
                stacks[n] = p.unsqueeze(0) + d.to(device=p.device, dtype=p.dtype)
            m = manifolds.get(n)
            if mode != "dense" and m is not None and m.kind != "euclidean":
                m.project_(stacks[n])  # elementwise: the same values as projecting each client's tensor
        for j, (upd, _) in enumerate(batched):
            upd.params = {n: stacks[n][j] for n in global_params}
    return parsed, rejected
