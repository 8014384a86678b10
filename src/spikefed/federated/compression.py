"""Compression of model updates for the uplink and the downlink: sparsifiers, quantizers, error feedback, codec.

An update is a :data:`~spikefed.federated.types.ParamDict` ``x`` (a client delta ``w_k - w_t``, or the change of
the global model on the downlink). Write ``n`` for its total number of coordinates and ``n_t`` for those of one
tensor. A compressor is a sparsifier followed by a value format; it returns a :data:`Message` (one
:class:`TensorMessage` per tensor) that :func:`encode_message` serialises. The serialized length is the reported
communication cost (``bytes_up`` / ``bytes_down``), never an estimate.

Sparsifiers (``fraction`` f in (0, 1]; ``k = max(1, ceil(f n))`` coordinates, at most ``n``):

- ``topk``: keep the k coordinates of largest ``|x_i|``. ``scope="global"`` (default) ranks all tensors together,
  so layers whose updates are larger get more of the budget and the kept set is the best k-term approximation of
  the whole update (``||x - C(x)||^2`` minimal for the given k); ``scope="tensor"`` keeps ``ceil(f n_t)`` of every
  tensor (every tensor, e.g. a bias, is represented each round). Contraction:
  ``||C(x) - x||^2 <= (1 - k/n) ||x||^2``.
- ``randomk``: keep k coordinates drawn uniformly without replacement (``torch.randperm`` on the generator
  passed in). Not scaled by default: ``C(x) = x * 1_S`` is a contraction with
  ``E||C(x) - x||^2 = (1 - k/n) ||x||^2``, which is what error feedback needs; with ``unbiased=True`` the kept
  values are multiplied by ``n/k`` (``n_t/k_t`` per tensor) so that ``E[C(x)] = x`` (a coordinate is kept with
  probability ``k/n``), at variance ``E||C(x) - x||^2 = (n/k - 1) ||x||^2``.

Value formats (applied per tensor to the kept values ``v`` of length m; all values travel as float32 or below):

- ``fp32`` / ``fp16``: the values themselves (fp16 clamped to ``+-65504``, rounded to nearest).
- ``sign`` (scaled sign, 1 bit per value): ``C(v) = (||v||_1 / m) sign(v)``, with ``sign(0) = +1``
  (Bernstein et al. 2018; the scale makes it a contraction, Karimireddy et al. 2019).
- ``qsgd8`` / ``qsgd4`` (stochastic uniform quantization, Alistarh et al. 2017, s = 127 / s = 7 levels per sign):
  ``Q(v_i) = (N / s) sign(v_i) xi_i`` with ``r_i = s |v_i| / N``, ``l_i = floor(r_i)`` and
  ``xi_i = l_i + 1`` with probability ``r_i - l_i``, else ``l_i``; so ``E[xi_i] = r_i`` and ``E[Q(v)] = v``
  (unbiased). ``N = max_i |v_i|`` by default (``qsgd_norm="max"``) or ``||v||_2`` (``"l2"``, the paper's
  analysis). Either way ``E||Q(v) - v||^2 <= min(m / s^2, sqrt(m) / s) ||v||_2^2`` (QSGD Lemma 3.1: for the max
  norm each coordinate's variance is ``(N/s)^2 tau (1 - tau) <= min((N/s)^2 / 4, (N/s)|v_i|)`` with
  ``N <= ||v||_2`` and ``||v||_1 <= sqrt(m) ||v||_2``). The max norm has the smaller variance in practice.

Compositions ``topk+qsgd8`` etc. sparsify first, then quantize the kept values (norm of the kept values).

Error feedback (EF-SGD, Seide et al. 2014; Karimireddy et al. 2019, Algorithm 2), client side, residual ``e``
(initially 0)::

    p = delta + e ;  m = C(p) (what the server decodes) ;  e <- p - m

so ``sum_t m_t + e_T = sum_t delta_t``: nothing is lost, only delayed. The residual lives in
``SimulationState.client_state[cid]["ef_residual"]`` (checkpointed; a resumed run is bit-identical). A
non-finite update is sent as it is (the server rejects it) and the residual restarts from zero.

Wire format (varint = unsigned LEB128 as in :mod:`~spikefed.federated.serialization`; little-endian)::

    payload := MAGIC b"SPKC" | VERSION (1 byte = 1) | count (varint) | entry * count
    entry   := name_len (varint) | name (UTF-8) | ndim (1 byte) | dim (varint) * ndim
               | layout (1 byte: 0 dense, 1 sparse) | format (1 byte) | [sparse: k (varint) | gap (varint) * k]
               | body
    gap_j   := i_j - i_{j-1} - 1 with i_{-1} = -1     (flat C-order indices, strictly increasing)
    body    := fp32: 4 m bytes | fp16: 2 m | int8: scale (fp32) + m | int4: scale (fp32) + ceil(m/2)
               | sign: scale (fp32) + ceil(m/8)

with m = k (sparse) or the tensor's numel (dense). ``int8`` holds levels in [-127, 127] (value = scale * level);
``int4`` holds ``level + 7`` in [0, 14], two per byte, the first in the low nibble; ``sign`` holds one bit per
value, least significant bit first, 1 = ``+scale``, 0 = ``-scale``; padding nibbles/bits are 0. The encoder
writes a sparse tensor in the dense layout (zeros filled in) when that is not larger and its format can
represent 0 (all but ``sign``). :func:`decode_message` raises
:class:`~spikefed.federated.serialization.PayloadError` (a ``ValueError``) with the byte offset for any malformed
payload and never anything else on bytes input.

Downlink (:func:`downlink_broadcast`): the server keeps the reference model ``r`` that every client holds and
broadcasts ``m_t = C(x_t - r)``, ``r <- r + m_t``: the error feedback is implicit (``x_t - r`` is exactly what has
not been sent yet). A client sampled in round t that last synchronised in round s receives the messages
``m_{s+1..t}`` and applies them in order (bit-identical to the server's ``r``), or the dense ``r`` if that is
not larger; a client seen for the first time receives the dense ``r``. So clients that missed rounds are
always correct, and they pay for what they missed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .serialization import MAX_NDIM, PayloadError, open_payload, PayloadReader, encode_varint, payload_size
from .types import ParamDict

__all__ = [
    "COMPRESSORS", "EF_KEY", "MAGIC", "QSGD_NORMS", "SCOPES", "VALUE_FORMATS", "VERSION", "CompressionSpec",
    "Compressor", "Message", "TensorMessage", "client_uplink", "compress", "decode_message", "decode_update",
    "decompress", "downlink_broadcast", "encode_message", "error_feedback_step", "make_compressor",
    "message_size", "num_kept", "qsgd_quantize", "randomk_indices", "scaled_sign", "topk_indices",
]

MAGIC = b"SPKC"
VERSION = 1
SPARSIFIERS: tuple[str, ...] = ("topk", "randomk")
QUANTIZERS: tuple[str, ...] = ("sign", "qsgd8", "qsgd4")
#: Valid compressor names: ``none`` (values only), a sparsifier, a quantizer, or ``sparsifier+quantizer``.
COMPRESSORS: tuple[str, ...] = ("none", *SPARSIFIERS, *QUANTIZERS) + tuple(
    f"{s}+{q}" for s in SPARSIFIERS for q in QUANTIZERS)
VALUE_FORMATS: tuple[str, ...] = ("fp32", "fp16")
SCOPES: tuple[str, ...] = ("global", "tensor")
QSGD_NORMS: tuple[str, ...] = ("max", "l2")
#: levels per sign of the QSGD formats
QSGD_LEVELS: dict[str, int] = {"qsgd8": 127, "qsgd4": 7}
#: key of the error-feedback residual in ``SimulationState.client_state[cid]``
EF_KEY = "ef_residual"
FP16_MAX = 65504.0

_LAYOUT_DENSE, _LAYOUT_SPARSE = 0, 1
_FORMAT_CODES: dict[str, int] = {"fp32": 1, "fp16": 2, "int8": 3, "int4": 4, "sign": 5}
_FORMAT_NAMES: dict[int, str] = {v: k for k, v in _FORMAT_CODES.items()}
_MAX_EXTENT = 2**63
_MAX_GAP_BYTES = 9  # a gap is below numel < 2**63: at most 9 varint bytes


# --------------------------------------------------------------------------------------------- messages


@dataclass(frozen=True, eq=False)
class TensorMessage:
    """One tensor of a compressed update, as it travels.

    Attributes:
        shape: the tensor's shape.
        indices: sorted, distinct flat (C-order) int64 positions of the transmitted values; ``None``: all of them.
        encoding: ``fp32`` | ``fp16`` (values), ``int8`` | ``int4`` (levels, value = ``scale * level``),
            ``sign`` (value = ``+scale`` where ``values`` is True, ``-scale`` elsewhere).
        values: float32 / float16 values, int8 levels, or bool signs; one per transmitted coordinate.
        scale: a float32-representable number (unused for fp32/fp16).
    """

    shape: tuple[int, ...]
    indices: torch.Tensor | None
    encoding: str
    values: torch.Tensor
    scale: float = 0.0

    def __post_init__(self) -> None:
        if self.encoding not in _FORMAT_CODES:
            raise ValueError(f"unknown encoding {self.encoding!r}; valid: {', '.join(_FORMAT_CODES)}")
        want = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.int8, "int4": torch.int8,
                "sign": torch.bool}[self.encoding]
        if self.values.dtype != want or self.values.ndim != 1:
            raise ValueError(f"{self.encoding} values must be a 1-D {want} tensor, got {self.values.dtype} "
                             f"with shape {tuple(self.values.shape)}")
        expected = self.numel if self.indices is None else int(self.indices.numel())
        if self.values.numel() != expected:
            raise ValueError(f"{self.values.numel()} values for {expected} coordinates")

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def count(self) -> int:
        """Number of transmitted values (m)."""
        return int(self.values.numel())

    def values_f32(self) -> torch.Tensor:
        """The transmitted values as float32 (the same arithmetic on client and server)."""
        if self.encoding in ("fp32", "fp16"):
            return self.values.to(torch.float32)
        scale = torch.tensor(self.scale, dtype=torch.float32)
        if self.encoding == "sign":
            return torch.where(self.values, scale, -scale)
        return self.values.to(torch.float32) * scale

    def dense(self) -> torch.Tensor:
        """The decompressed float32 tensor (zeros where nothing was sent)."""
        v = self.values_f32()
        if self.indices is None:
            return v.reshape(self.shape)
        out = torch.zeros(self.numel, dtype=torch.float32)
        out[self.indices] = v
        return out.reshape(self.shape)


#: A compressed update: ``name -> TensorMessage`` in the order of the update.
Message = dict[str, TensorMessage]


def decompress(message: Mapping[str, TensorMessage]) -> ParamDict:
    """``name -> dense float32 tensor`` of a message (what the receiver applies)."""
    return {n: m.dense() for n, m in message.items()}


# -------------------------------------------------------------------------------------------- sparsifiers


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    return float(fraction)


def _check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid: {', '.join(SCOPES)}")
    return scope


def num_kept(fraction: float, n: int) -> int:
    """``k = min(n, max(1, ceil(f n)))`` (0 for an empty tensor); ``f n`` is rounded to 6 decimals first so that
    e.g. ``0.07 * 100`` gives 7, not 8."""
    _check_fraction(fraction)
    if n <= 0:
        return 0
    return min(n, max(1, math.ceil(round(fraction * n, 6))))


def _flat(update: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    if not isinstance(update, Mapping):
        raise ValueError(f"an update must be a name -> tensor dict, got {type(update).__name__}")
    out = []
    for name, t in update.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"update {name!r}: expected a floating-point tensor, got "
                             f"{getattr(t, 'dtype', type(t).__name__)}")
        out.append(t.detach().reshape(-1))
    return out


def _split_sorted(selected: torch.Tensor, sizes: list[int], names: list[str]) -> dict[str, torch.Tensor]:
    """Split sorted global flat indices into per-tensor local index tensors."""
    out: dict[str, torch.Tensor] = {}
    offset = 0
    bounds = torch.searchsorted(selected, torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.int64))
    for j, (name, size) in enumerate(zip(names, sizes)):
        out[name] = selected[bounds[j]:bounds[j + 1]] - offset
        offset += size
    return out


def topk_indices(update: Mapping[str, torch.Tensor], fraction: float, scope: str = "global"
                 ) -> dict[str, torch.Tensor]:
    """Sorted flat indices of the ``k`` coordinates of largest ``|x_i|`` (see :func:`num_kept` for k).

    ``scope="global"``: one k over all ``n`` coordinates; ``"tensor"``: ``k_t`` per tensor. Ties are broken by
    ``torch.topk`` (deterministic on CPU).
    """
    _check_fraction(fraction)
    _check_scope(scope)
    flats, names = _flat(update), list(update)
    if scope == "tensor":
        return {n: torch.topk(f.abs(), num_kept(fraction, f.numel()), sorted=False).indices.sort().values
                for n, f in zip(names, flats)}
    sizes = [f.numel() for f in flats]
    total = sum(sizes)
    if total == 0:
        return {n: torch.zeros(0, dtype=torch.int64) for n in names}
    mags = torch.cat([f.abs().to(torch.float32) for f in flats])
    selected = torch.topk(mags, num_kept(fraction, total), sorted=False).indices.sort().values
    return _split_sorted(selected, sizes, names)


def randomk_indices(update: Mapping[str, torch.Tensor], fraction: float, generator: torch.Generator,
                    scope: str = "global") -> dict[str, torch.Tensor]:
    """Sorted flat indices of ``k`` coordinates drawn uniformly without replacement from ``generator``."""
    _check_fraction(fraction)
    _check_scope(scope)
    if not isinstance(generator, torch.Generator):
        raise ValueError("random-k needs a seeded torch.Generator")
    flats, names = _flat(update), list(update)
    if scope == "tensor":
        return {n: torch.randperm(f.numel(), generator=generator)[:num_kept(fraction, f.numel())].sort().values
                for n, f in zip(names, flats)}
    sizes = [f.numel() for f in flats]
    total = sum(sizes)
    selected = torch.randperm(total, generator=generator)[:num_kept(fraction, total)].sort().values
    return _split_sorted(selected, sizes, names)


# --------------------------------------------------------------------------------------------- quantizers


def _f32(value: float) -> float:
    """Round to the nearest float32 (so the scale survives the wire exactly)."""
    return float(torch.tensor(value, dtype=torch.float32))


def scaled_sign(v: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Scaled sign: ``(v >= 0, ||v||_1 / m)``; the receiver reconstructs ``scale * sign(v)`` (``sign(0) = +1``)."""
    v = v.detach().reshape(-1).to(torch.float32)
    scale = _f32(float(v.abs().mean())) if v.numel() else 0.0
    return v >= 0, scale


def qsgd_quantize(v: torch.Tensor, levels: int, generator: torch.Generator, norm: str = "max"
                  ) -> tuple[torch.Tensor, float]:
    """Stochastic uniform quantization with ``s = levels`` per sign: returns ``(int8 levels, scale = N/s)``.

    ``r_i = s |v_i| / N``; level ``sign(v_i) (floor(r_i) + Bernoulli(r_i - floor(r_i)))``, so that
    ``E[scale * level_i] = v_i``. ``N = max |v_i|`` (``norm="max"``) or ``||v||_2`` (``"l2"``). A zero vector gives
    zero levels; a non-finite one gives zero levels with a NaN scale (so the receiver sees non-finite values and
    rejects the update).
    """
    if not 1 <= levels <= 127:
        raise ValueError(f"levels must be in [1, 127], got {levels}")
    if norm not in QSGD_NORMS:
        raise ValueError(f"unknown qsgd norm {norm!r}; valid: {', '.join(QSGD_NORMS)}")
    if not isinstance(generator, torch.Generator):
        raise ValueError("QSGD quantization needs a seeded torch.Generator")
    v32 = v.detach().reshape(-1).to(torch.float32)
    if v32.numel() == 0:
        return torch.zeros(0, dtype=torch.int8), 0.0
    big = float(v32.abs().max()) if norm == "max" else float(v32.norm())
    if not math.isfinite(big):
        return torch.zeros(v32.numel(), dtype=torch.int8), math.nan
    if big == 0.0:
        return torch.zeros(v32.numel(), dtype=torch.int8), 0.0
    r = (v32.to(torch.float64).abs() / big * levels).clamp_(max=levels)
    low = r.floor()
    up = torch.rand(r.shape, generator=generator, dtype=torch.float64) < (r - low)
    mag = low + up.to(torch.float64)
    return (torch.sign(v32).to(torch.float64) * mag).to(torch.int8), _f32(big / levels)


# -------------------------------------------------------------------------------------------- compressors


@dataclass(frozen=True)
class Compressor:
    """A sparsifier (``none`` | ``topk`` | ``randomk``) followed by a value format (``fp32`` | ``fp16`` | ``sign``
    | ``qsgd8`` | ``qsgd4``). Build from a name with :func:`make_compressor`.

    Attributes:
        sparsifier, quantizer: the two stages (``quantizer="none"`` sends the values as ``values``).
        fraction: f in (0, 1] for the sparsifier.
        scope: ``global`` (k over the whole update) or ``tensor`` (k per tensor).
        values: float format of unquantized values (``fp32`` | ``fp16``).
        unbiased: random-k only: scale kept values by ``n/k`` so that ``E[C(x)] = x``.
        qsgd_norm: ``max`` or ``l2``.
    """

    sparsifier: str = "none"
    quantizer: str = "none"
    fraction: float = 1.0
    scope: str = "global"
    values: str = "fp32"
    unbiased: bool = False
    qsgd_norm: str = "max"
    momentum_correction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum_correction < 1.0:
            raise ValueError(f"momentum_correction must lie in [0, 1), got {self.momentum_correction}")
        if self.sparsifier not in ("none", *SPARSIFIERS):
            raise ValueError(f"unknown sparsifier {self.sparsifier!r}; valid: none, {', '.join(SPARSIFIERS)}")
        if self.quantizer not in ("none", *QUANTIZERS):
            raise ValueError(f"unknown quantizer {self.quantizer!r}; valid: none, {', '.join(QUANTIZERS)}")
        _check_fraction(self.fraction)
        _check_scope(self.scope)
        if self.values not in VALUE_FORMATS:
            raise ValueError(f"unknown value format {self.values!r}; valid: {', '.join(VALUE_FORMATS)}")
        if self.qsgd_norm not in QSGD_NORMS:
            raise ValueError(f"unknown qsgd norm {self.qsgd_norm!r}; valid: {', '.join(QSGD_NORMS)}")

    @property
    def name(self) -> str:
        parts = [p for p in (self.sparsifier, self.quantizer) if p != "none"]
        return "+".join(parts) or "none"

    @property
    def is_identity(self) -> bool:
        """True when nothing is lost: no sparsifier, no quantizer, fp32 values."""
        return self.sparsifier == "none" and self.quantizer == "none" and self.values == "fp32"

    @property
    def needs_generator(self) -> bool:
        return self.sparsifier == "randomk" or self.quantizer in QSGD_LEVELS

    def compress(self, update: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> Message:
        """``C(update)`` as a :data:`Message` (see :func:`compress`)."""
        return compress(update, self, generator)


def make_compressor(name: str, fraction: float = 0.01, scope: str = "global", values: str = "fp32",
                    unbiased: bool = False, qsgd_norm: str = "max") -> Compressor:
    """Parse ``name`` (one of :data:`COMPRESSORS`, e.g. ``"topk+qsgd8"``) into a :class:`Compressor`."""
    if name not in COMPRESSORS:
        raise ValueError(f"unknown compressor {name!r}; valid: {', '.join(COMPRESSORS)}")
    sparsifier, quantizer = "none", "none"
    for part in name.split("+"):
        if part in SPARSIFIERS:
            sparsifier = part
        elif part in QUANTIZERS:
            quantizer = part
    return Compressor(sparsifier, quantizer, fraction, scope, values, unbiased, qsgd_norm)


def compress(update: Mapping[str, torch.Tensor], compressor: Compressor,
             generator: torch.Generator | None = None) -> Message:
    """Apply ``compressor`` to ``update``. Random-k and QSGD draw from ``generator`` (required for them)."""
    c = compressor
    if not isinstance(c, Compressor):
        raise ValueError(f"expected a Compressor, got {type(c).__name__}")
    if c.needs_generator and not isinstance(generator, torch.Generator):
        raise ValueError(f"compressor {c.name!r} is randomized and needs a seeded torch.Generator")
    flats, names = _flat(update), list(update)
    if c.sparsifier == "topk":
        kept: dict[str, torch.Tensor] | None = topk_indices(update, c.fraction, c.scope)
    elif c.sparsifier == "randomk":
        assert generator is not None
        kept = randomk_indices(update, c.fraction, generator, c.scope)
    else:
        kept = None
    total = sum(f.numel() for f in flats)
    total_kept = sum(int(i.numel()) for i in kept.values()) if kept is not None else total
    out: Message = {}
    for name, flat in zip(names, flats):
        shape = tuple(update[name].shape)
        idx = kept[name] if kept is not None else None
        v = (flat[idx] if idx is not None else flat).to(torch.float32)
        if c.sparsifier == "randomk" and c.unbiased and idx is not None and idx.numel():
            gain = total / total_kept if c.scope == "global" else flat.numel() / idx.numel()
            v = v * gain
        if c.quantizer == "sign":
            signs, scale = scaled_sign(v)
            out[name] = TensorMessage(shape, idx, "sign", signs, scale)
        elif c.quantizer in QSGD_LEVELS:
            assert generator is not None
            levels, scale = qsgd_quantize(v, QSGD_LEVELS[c.quantizer], generator, c.qsgd_norm)
            out[name] = TensorMessage(shape, idx, "int8" if c.quantizer == "qsgd8" else "int4", levels, scale)
        elif c.values == "fp16":
            out[name] = TensorMessage(shape, idx, "fp16", v.clamp(-FP16_MAX, FP16_MAX).to(torch.float16))
        else:
            out[name] = TensorMessage(shape, idx, "fp32", v.clone())
    return out


# ------------------------------------------------------------------------------------------ error feedback


def error_feedback_step(delta: Mapping[str, torch.Tensor], residual: Mapping[str, torch.Tensor] | None,
                        compressor: Compressor, generator: torch.Generator | None = None
                        ) -> tuple[Message, ParamDict]:
    """One EF step: ``p = delta + e``, ``m = C(p)``, ``e' = p - decompress(m)``; returns ``(m, e')``.

    ``residual=None`` means ``e = 0``. Per step ``decompress(m) + e' == p`` (exactly where ``C`` keeps a value
    as fp32 or drops it). A non-finite ``p`` gives ``e' = 0`` (the message carries the bad values to the server,
    which rejects them; the client starts over).
    """
    if residual is None:
        p = {n: t.detach().clone() for n, t in delta.items()}
    else:
        if list(residual) != list(delta) or any(residual[n].shape != delta[n].shape for n in delta):
            raise ValueError("error-feedback residual does not match the update (names or shapes differ)")
        p = {n: delta[n].detach() + residual[n].to(delta[n].dtype) for n in delta}
    message = compress(p, compressor, generator)
    sent = decompress(message)
    new = {n: p[n] - sent[n].to(p[n].dtype) for n in p}
    if not all(bool(torch.isfinite(t).all()) for t in new.values()):
        new = {n: torch.zeros_like(t) for n, t in new.items()}
    return message, new


def client_uplink(delta: Mapping[str, torch.Tensor], compressor: Compressor, generator: torch.Generator | None,
                  client_state: dict[str, Any] | None = None, error_feedback: bool = True) -> bytes:
    """Client side of the uplink: compress ``delta`` (with EF when ``error_feedback``, the residual read from and
    written to ``client_state[EF_KEY]``) and serialise it. Returns the payload (its length is the cost)."""
    if error_feedback:
        if client_state is None:
            raise ValueError("error feedback needs the client's state dict to keep its residual in")
        message, client_state[EF_KEY] = error_feedback_step(delta, client_state.get(EF_KEY), compressor, generator)
    else:
        message = compress(delta, compressor, generator)
    return encode_message(message)


def decode_update(payload: bytes | bytearray | memoryview) -> ParamDict:
    """Server side: payload -> dense float32 update (:class:`PayloadError` if malformed)."""
    return decompress(decode_message(payload))


# -------------------------------------------------------------------------------------------------- codec


def _varints(values: np.ndarray) -> bytes:
    """Concatenated minimal LEB128 encodings of non-negative integers (vectorised)."""
    v = np.asarray(values, dtype=np.uint64)
    if v.size == 0:
        return b""
    if int(v.max()) < 0x80:
        return v.astype(np.uint8).tobytes()
    width = 1 + int(math.floor(math.log2(int(v.max())) / 7))
    lengths = np.ones(v.size, dtype=np.int64)
    for j in range(1, width):
        lengths += (v >> np.uint64(7 * j)) > 0
    shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
    groups = ((v[:, None] >> shifts[None, :]) & np.uint64(0x7F)).astype(np.uint8)
    pos = np.arange(width)[None, :]
    groups |= np.where(pos < (lengths[:, None] - 1), 0x80, 0).astype(np.uint8)
    return groups[pos < lengths[:, None]].tobytes()


def _varints_size(values: np.ndarray) -> int:
    v = np.asarray(values, dtype=np.uint64)
    size = int(v.size)
    for j in range(1, 10):
        more = int(((v >> np.uint64(7 * j)) > 0).sum())
        if not more:
            break
        size += more
    return size


def _body_size(encoding: str, m: int) -> int:
    return {"fp32": 4 * m, "fp16": 2 * m, "int8": 4 + m, "int4": 4 + (m + 1) // 2, "sign": 4 + (m + 7) // 8}[encoding]


def _gaps(indices: torch.Tensor) -> np.ndarray:
    idx = indices.to(torch.int64).numpy()
    return np.diff(idx, prepend=-1) - 1


def _to_dense_layout(m: TensorMessage) -> TensorMessage:
    """The same message with zeros written out (only for formats that can represent 0)."""
    assert m.indices is not None and m.encoding != "sign"
    dense = torch.zeros(m.numel, dtype=m.values.dtype)
    dense[m.indices] = m.values
    return TensorMessage(m.shape, None, m.encoding, dense, m.scale)


def _wire_form(m: TensorMessage) -> tuple[TensorMessage, np.ndarray | None]:
    """Choose the layout: sparse, or dense when that is not larger and the format can represent zeros."""
    if m.indices is None:
        return m, None
    gaps = _gaps(m.indices)
    sparse = _varints_size(np.asarray([gaps.size])) + _varints_size(gaps) + _body_size(m.encoding, m.count)
    if m.encoding != "sign" and _body_size(m.encoding, m.numel) <= sparse:
        return _to_dense_layout(m), None
    return m, gaps


def _check_message(message: Mapping[str, TensorMessage]) -> None:
    if not isinstance(message, Mapping):
        raise ValueError(f"a message must be a name -> TensorMessage dict, got {type(message).__name__}")
    for name, m in message.items():
        if not isinstance(name, str) or not isinstance(m, TensorMessage):
            raise ValueError(f"message entry {name!r}: expected str -> TensorMessage")
        if len(m.shape) > MAX_NDIM:
            raise ValueError(f"message entry {name!r}: {len(m.shape)} dimensions exceed {MAX_NDIM}")


def _header(name: str, m: TensorMessage, layout: int) -> list[bytes]:
    raw = name.encode("utf-8")
    return [encode_varint(len(raw)), raw, bytes([len(m.shape)]), *[encode_varint(int(d)) for d in m.shape],
            bytes([layout, _FORMAT_CODES[m.encoding]])]


def _body(m: TensorMessage) -> bytes:
    v = m.values.detach().cpu().numpy()
    if m.encoding == "fp32":
        return v.astype("<f4").tobytes()
    if m.encoding == "fp16":
        return v.astype("<f2").tobytes()
    scale = np.asarray([m.scale], dtype="<f4").tobytes()
    if m.encoding == "int8":
        if v.size and (v.min() < -127):
            raise ValueError("int8 levels must lie in [-127, 127]")
        return scale + v.astype(np.int8).tobytes()
    if m.encoding == "int4":
        if v.size and (v.min() < -7 or v.max() > 7):
            raise ValueError("int4 levels must lie in [-7, 7]")
        nib = (v.astype(np.int16) + 7).astype(np.uint8)
        if nib.size % 2:
            nib = np.append(nib, np.uint8(0))
        return scale + (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()
    return scale + np.packbits(v.astype(np.uint8), bitorder="little").tobytes()


def encode_message(message: Mapping[str, TensorMessage]) -> bytes:
    """Serialise a message (layout in the module docstring). ``len`` of the result is the communication cost."""
    _check_message(message)
    parts: list[bytes] = [MAGIC, bytes([VERSION]), encode_varint(len(message))]
    for name, m in message.items():
        wire, gaps = _wire_form(m)
        if gaps is None:
            parts += _header(name, wire, _LAYOUT_DENSE)
        else:
            parts += _header(name, wire, _LAYOUT_SPARSE)
            parts += [encode_varint(int(gaps.size)), _varints(gaps)]
        parts.append(_body(wire))
    return b"".join(parts)


def message_size(message: Mapping[str, TensorMessage]) -> int:
    """``len(encode_message(message))`` without building the bytes."""
    _check_message(message)
    size = len(MAGIC) + 1 + len(encode_varint(len(message)))
    for name, m in message.items():
        wire, gaps = _wire_form(m)
        size += sum(len(p) for p in _header(name, wire, _LAYOUT_DENSE))
        if gaps is not None:
            size += len(encode_varint(int(gaps.size))) + _varints_size(gaps)
        size += _body_size(wire.encoding, wire.count)
    return size


def _read_gaps(r: PayloadReader, k: int, name: str) -> np.ndarray:
    """k varints from the reader (vectorised), each at most 9 bytes and minimal."""
    if k == 0:
        return np.zeros(0, dtype=np.uint64)
    start = r.pos
    window = np.frombuffer(r.data, dtype=np.uint8, count=min(len(r.data) - start, k * _MAX_GAP_BYTES),
                           offset=start)
    ends = np.flatnonzero(window < 0x80)[:k]
    if ends.size < k:
        at = start + (int(ends[-1]) + 1 if ends.size else 0)
        if window.size == k * _MAX_GAP_BYTES:  # k varints of at most 9 bytes each would have ended by now
            raise PayloadError(at, f"index gap #{ends.size} of {name!r}: varint longer than {_MAX_GAP_BYTES} bytes")
        raise PayloadError(at, f"truncated: {name!r} announces {k} indices, only {ends.size} varints follow")
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.size and lengths.max() > _MAX_GAP_BYTES:
        j = int(np.argmax(lengths > _MAX_GAP_BYTES))
        raise PayloadError(start + int(starts[j]), f"index gap #{j} of {name!r}: varint longer than "
                                                   f"{_MAX_GAP_BYTES} bytes")
    bad = (lengths > 1) & (window[ends] == 0)
    if bad.any():
        j = int(np.argmax(bad))
        raise PayloadError(start + int(starts[j]), f"index gap #{j} of {name!r}: non-minimal varint encoding")
    used = window[:int(ends[-1]) + 1]
    within = np.arange(used.size) - np.repeat(starts, lengths)
    contrib = (used & 0x7F).astype(np.uint64) << (within.astype(np.uint64) * np.uint64(7))
    values = np.add.reduceat(contrib, starts)
    r.pos = start + used.size
    return values


def _read_scale(r: PayloadReader, name: str) -> float:
    return float(np.frombuffer(r.take(4, f"scale of {name!r}"), dtype="<f4")[0])


def _read_values(r: PayloadReader, encoding: str, m: int, name: str) -> tuple[torch.Tensor, float]:
    need = _body_size(encoding, m)
    if need > len(r.data) - r.pos:
        raise PayloadError(r.pos, f"truncated: {encoding} body of {name!r} ({m} values) needs {need} bytes, only "
                                  f"{len(r.data) - r.pos} left")
    if encoding in ("fp32", "fp16"):
        dt = np.dtype("<f4") if encoding == "fp32" else np.dtype("<f2")
        arr = np.frombuffer(r.take(need, f"values of {name!r}"), dtype=dt).astype(dt.newbyteorder("="))
        return torch.from_numpy(arr), 0.0
    scale = _read_scale(r, name)
    at = r.pos
    raw = np.frombuffer(r.take(need - 4, f"values of {name!r}"), dtype=np.uint8)
    if encoding == "int8":
        levels = raw.view(np.int8).copy()
        if levels.size and levels.min() < -127:
            j = int(np.argmax(levels < -127))
            raise PayloadError(at + j, f"int8 level -128 in {name!r} (levels lie in [-127, 127])")
        return torch.from_numpy(levels), scale
    if encoding == "int4":
        nib = np.empty(raw.size * 2, dtype=np.uint8)
        nib[0::2], nib[1::2] = raw & 0x0F, raw >> 4
        if m % 2 and nib[m] != 0:
            raise PayloadError(at + raw.size - 1, f"non-zero padding nibble in {name!r}")
        nib = nib[:m]
        if nib.size and nib.max() > 14:
            j = int(np.argmax(nib > 14))
            raise PayloadError(at + j // 2, f"int4 code 15 in {name!r} (codes lie in [0, 14])")
        return torch.from_numpy(nib.astype(np.int8) - np.int8(7)), scale
    bits = np.unpackbits(raw, bitorder="little")
    if bits[m:].any():
        raise PayloadError(at + raw.size - 1, f"non-zero padding bits in the signs of {name!r}")
    return torch.from_numpy(bits[:m].astype(np.bool_)), scale


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Parse a payload of :func:`encode_message`; :class:`PayloadError` (with the byte offset) if malformed."""
    buf, r = open_payload(data, MAGIC, VERSION, "for a compressed update", "compressed-format")
    count = r.varint("tensor count")
    out: Message = {}
    for index in range(count):
        if r.pos >= len(buf):
            raise PayloadError(r.pos, f"truncated: header announces {count} tensors, payload ends after {index}")
        name_at = r.pos
        raw = r.take(r.varint(f"name length of tensor #{index}"), f"name of tensor #{index}")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PayloadError(name_at, f"name of tensor #{index} is not valid UTF-8 ({e.reason})") from None
        if name in out:
            raise PayloadError(name_at, f"duplicate tensor name {name!r}")
        ndim_at = r.pos
        ndim = r.byte(f"ndim of {name!r}")
        if ndim > MAX_NDIM:
            raise PayloadError(ndim_at, f"ndim {ndim} of {name!r} exceeds the limit of {MAX_NDIM}")
        shape = tuple(r.varint(f"dimension {d} of {name!r}") for d in range(ndim))
        numel, extent = 1, 1
        for d in shape:
            numel *= d
            extent *= max(d, 1)
        if extent >= _MAX_EXTENT:
            raise PayloadError(ndim_at, f"shape {shape} of {name!r} is too large")
        layout_at = r.pos
        layout = r.byte(f"layout of {name!r}")
        if layout not in (_LAYOUT_DENSE, _LAYOUT_SPARSE):
            raise PayloadError(layout_at, f"unknown layout {layout} for {name!r} (0 dense, 1 sparse)")
        code = r.byte(f"value format of {name!r}")
        if code not in _FORMAT_NAMES:
            raise PayloadError(layout_at + 1, f"unknown value format {code} for {name!r} "
                                              f"(known: {sorted(_FORMAT_NAMES)})")
        encoding = _FORMAT_NAMES[code]
        indices = None
        if layout == _LAYOUT_SPARSE:
            k_at = r.pos
            k = r.varint(f"index count of {name!r}")
            if k > numel:
                raise PayloadError(k_at, f"{name!r} announces {k} indices for {numel} coordinates")
            gaps_at = r.pos
            gaps = _read_gaps(r, k, name)
            if k and int(gaps.max()) >= numel:
                raise PayloadError(gaps_at, f"index of {name!r} out of range (numel {numel})")
            if sum(gaps.tolist()) + k > numel:
                raise PayloadError(gaps_at, f"indices of {name!r} run past its {numel} coordinates")
            indices = torch.from_numpy((np.cumsum(gaps.astype(np.int64) + 1) - 1).astype(np.int64))
            m = k
        else:
            m = numel
        values, scale = _read_values(r, encoding, m, name)
        out[name] = TensorMessage(shape, indices, encoding, values, scale)
    if r.pos != len(buf):
        raise PayloadError(r.pos, f"{len(buf) - r.pos} trailing bytes after the {count} tensors")
    return out


# ---------------------------------------------------------------------------------------------- downlink


def downlink_broadcast(state: dict[str, Any], global_params: Mapping[str, torch.Tensor], sampled: Sequence[int],
                       rnd: int, compressor: Compressor, generator: torch.Generator | None = None
                       ) -> tuple[ParamDict, list[int]]:
    """Server side of a compressed downlink for round ``rnd``; ``state`` is updated in place (checkpointable).

    The first call sets the reference ``r`` to ``global_params`` (every client then receives it dense on first
    contact). Each later round broadcasts ``m = C(x - r)`` and sets ``r <- r + decompress(m)`` (implicit error
    feedback: ``x - r`` is what has not been sent). A sampled client that last synchronised in round ``s``
    receives ``m_{s+1}, ..., m_rnd`` in order or the dense ``r``, whichever is smaller; history that can no
    longer be the cheaper option is dropped. Returns ``(r, per-client bytes)`` for ``sampled`` (in order).
    """
    ref = state.get("reference")
    if ref is None:
        ref = {n: t.detach().clone() for n, t in global_params.items()}
        state.update(reference=ref, synced={}, history=[])
    else:
        diff = {n: global_params[n].detach() - ref[n] for n in ref}
        payload = encode_message(compress(diff, compressor, generator))
        step = decode_update(payload)
        ref = {n: ref[n] + step[n].to(ref[n].dtype) for n in ref}
        state["reference"] = ref
        state["history"].append((rnd, payload))
    history: list[tuple[int, bytes]] = state["history"]
    synced: dict[int, int] = state["synced"]
    dense = payload_size(ref)
    while len(history) > 1 and sum(len(p) for _, p in history[1:]) >= dense:
        history.pop(0)
    first = history[0][0] if history else rnd + 1
    costs = []
    for c in sampled:
        s = synced.get(int(c))
        if s is None or s + 1 < first:
            costs.append(dense)
        else:
            costs.append(min(dense, sum(len(p) for r_, p in history if r_ > s)))
        synced[int(c)] = rnd
    return ref, costs


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class CompressionSpec:
    """Compression of a federation (``FederationSpec.compression``; ``None`` there = dense, as without it).

    Attributes:
        uplink: compressor name for client deltas (:data:`COMPRESSORS`); ``none``: dense fp32 deltas.
        downlink: compressor name for the global-model broadcast; ``none``: dense fp32 parameters.
        fraction: sparsifier fraction f of the uplink; ``downlink_fraction`` that of the downlink (None: same).
        scope, values, unbiased, qsgd_norm: see :class:`Compressor` (``values`` applies to the kept values of
            ``topk`` / ``randomk``; ``none`` is always fp32).
        error_feedback: uplink error feedback (client residuals). The downlink always tracks its reference
            (implicit error feedback).
        momentum_correction: DGC momentum correction + factor masking of the uplink (:mod:`spikefed.federated.dgc`),
            the velocity's decay m in [0, 1); 0: plain error feedback.
    """

    uplink: str = "none"
    downlink: str = "none"
    fraction: float = 0.01
    downlink_fraction: float | None = None
    scope: str = "global"
    values: str = "fp32"
    error_feedback: bool = True
    unbiased: bool = False
    qsgd_norm: str = "max"
    momentum_correction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum_correction < 1.0:
            raise ValueError(f"momentum_correction must lie in [0, 1), got {self.momentum_correction}")
        self.uplink_compressor()
        self.downlink_compressor()

    def _make(self, name: str, fraction: float) -> Compressor:
        values = self.values if name != "none" else "fp32"  # "none" is dense fp32 whatever ``values`` says
        return make_compressor(name, fraction, self.scope, values, self.unbiased, self.qsgd_norm)

    def uplink_compressor(self) -> Compressor:
        """The uplink compressor (``is_identity`` for ``none``: dense deltas)."""
        return self._make(self.uplink, self.fraction)

    def downlink_compressor(self) -> Compressor | None:
        """``None`` when the downlink is dense (exactly as without compression)."""
        c = self._make(self.downlink, self.fraction if self.downlink_fraction is None else self.downlink_fraction)
        return None if c.is_identity else c
