"""Wire format for parameter dicts; its byte length is the reported communication cost.

Layout (all integers unsigned; ``varint`` = LEB128, 7 bits per byte, least significant group first, minimal
length; multi-byte tensor data little-endian, C order)::

    payload := MAGIC (4 bytes b"SPKF") VERSION (1 byte = 1) count (varint) entry * count
    entry   := name_len (varint) name (name_len bytes, UTF-8) dtype (1 byte code) ndim (1 byte)
               dim (varint) * ndim  data (numel * itemsize bytes)

So ``len(payload) = 5 + |varint(count)| + sum_entries (|varint(len(name))| + len(name) + 2
+ sum_dims |varint(d)| + numel * itemsize)``; a varint of a value below 128 is one byte.

dtype codes: 1 float32, 2 float16, 3 float64, 4 int64, 5 int8, 6 uint8, 7 bool, 8 bfloat16, 9 int32,
10 int16. Booleans are one byte each (0 or 1); bfloat16 travels as its raw 16-bit pattern.

:func:`decode_params` raises :class:`PayloadError` (a ``ValueError``) with the byte offset and what is wrong
for any malformed payload (bad magic or version, truncation, unknown dtype, over-long or non-minimal varint,
invalid UTF-8, duplicate name, bad boolean byte, trailing bytes); it never raises anything else on bytes input.
No pickle is involved.

Batches (a round's K uploads of one model): :func:`encode_params_batch` writes K payloads from stacks ``[K, ...]``,
each byte for byte what :func:`encode_params` writes for that client's tensors; :func:`decode_params_batch` reads
the payloads whose bytes outside the tensor data equal the model's header (:class:`WireLayout`) as stacks in one
pass. Any float32 (or float16/float64) bit pattern is valid data, so such a payload decodes by
:func:`decode_params` to exactly these values; every other payload is left to :func:`decode_params` (and to its
error message).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from spikefed.federated.types import ParamDict

__all__ = ["MAGIC", "MAX_NDIM", "VERSION", "PayloadError", "WireLayout", "decode_params", "decode_params_batch",
           "encode_params", "encode_params_batch", "payload_size"]

MAGIC = b"SPKF"
VERSION = 1
#: Largest number of tensor dimensions on the wire (numpy's historical limit).
MAX_NDIM = 32
_MAX_VARINT_BYTES = 10  # enough for 64-bit values
_MAX_EXTENT = 2**63  # product of the non-zero dimensions must fit torch's int64 sizes

# code -> (torch dtype, little-endian numpy dtype used on the wire)
_CODES: dict[int, tuple[torch.dtype, np.dtype]] = {
    1: (torch.float32, np.dtype("<f4")),
    2: (torch.float16, np.dtype("<f2")),
    3: (torch.float64, np.dtype("<f8")),
    4: (torch.int64, np.dtype("<i8")),
    5: (torch.int8, np.dtype("i1")),
    6: (torch.uint8, np.dtype("u1")),
    7: (torch.bool, np.dtype("u1")),
    8: (torch.bfloat16, np.dtype("<u2")),
    9: (torch.int32, np.dtype("<i4")),
    10: (torch.int16, np.dtype("<i2")),
}
_CODE_OF: dict[torch.dtype, int] = {td: code for code, (td, _) in _CODES.items()}


class PayloadError(ValueError):
    """A malformed payload. ``offset`` is the byte position where decoding failed, ``reason`` says why."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"corrupt parameter payload at byte {offset}: {reason}")
        self.offset = offset
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[int, str]]:  # keep pickling working with the two-argument constructor
        return (type(self), (self.offset, self.reason))


# ------------------------------------------------------------------------------------------------ varint


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"varint values must be >= 0, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint_len(value: int) -> int:
    n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


# ---------------------------------------------------------------------------------------------- encoding


def _wire_tensor(name: str, t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"parameter {name!r}: expected a tensor, got {type(t).__name__}")
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    if t.dtype not in _CODE_OF:
        raise ValueError(f"parameter {name!r}: dtype {t.dtype} is not supported on the wire; supported: "
                         f"{', '.join(str(td) for td, _ in _CODES.values())}")
    if t.ndim > MAX_NDIM:
        raise ValueError(f"parameter {name!r}: {t.ndim} dimensions exceed the wire limit of {MAX_NDIM}")
    return t


def _check_args(params: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> None:
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a name -> tensor dict, got {type(params).__name__}")
    if dtype is not None and (
        not isinstance(dtype, torch.dtype) or not dtype.is_floating_point or dtype not in _CODE_OF
    ):
        raise ValueError(f"dtype must be None or a supported floating dtype (float16, bfloat16, float32, "
                         f"float64), got {dtype!r}")
    for name in params:
        if not isinstance(name, str):
            raise ValueError(f"parameter names must be strings, got {name!r}")


def _name_bytes(name: str) -> bytes:
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"parameter name {name!r} is not valid UTF-8: {e}") from None


def encode_params(params: Mapping[str, torch.Tensor], dtype: torch.dtype | None = torch.float32) -> bytes:
    """Serialise ``params`` (order kept). Floating tensors are cast to ``dtype`` (``None``: keep each one's own);
    integer and bool tensors are sent as they are. ValueError for unsupported dtypes or names.
    """
    _check_args(params, dtype)
    parts: list[bytes] = [MAGIC, bytes([VERSION]), encode_varint(len(params))]
    for name, t in params.items():
        t = _wire_tensor(name, t, dtype)
        raw = _name_bytes(name)
        code = _CODE_OF[t.dtype]
        parts += [encode_varint(len(raw)), raw, bytes([code, t.ndim])]
        parts += [encode_varint(int(d)) for d in t.shape]
        src = t.detach().cpu().contiguous()
        if src.dtype == torch.bfloat16:
            src = src.view(torch.int16)
        arr = src.numpy()
        parts.append(np.ascontiguousarray(arr, dtype=_CODES[code][1]).tobytes())
    return b"".join(parts)


def payload_size(params: Mapping[str, torch.Tensor], dtype: torch.dtype | None = torch.float32) -> int:
    """``len(encode_params(params, dtype))``, computed without serialising."""
    _check_args(params, dtype)
    size = len(MAGIC) + 1 + _varint_len(len(params))
    for name, t in params.items():
        t_dtype = _wire_tensor(name, t, None).dtype
        if dtype is not None and t.is_floating_point():
            t_dtype = dtype
        raw_len = len(_name_bytes(name))
        itemsize = _CODES[_CODE_OF[t_dtype]][1].itemsize
        size += _varint_len(raw_len) + raw_len + 2 + sum(_varint_len(int(d)) for d in t.shape)
        size += t.numel() * itemsize
    return size


# ---------------------------------------------------------------------------------------------- decoding


class PayloadReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise PayloadError(self.pos, f"truncated: {what} needs {n} bytes, only {len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str) -> int:
        start = self.pos
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            if self.pos >= len(self.data):
                raise PayloadError(self.pos, f"truncated: {what} (varint started at byte {start}) is incomplete")
            b = self.data[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if b == 0 and i > 0:
                    raise PayloadError(start, f"{what}: non-minimal varint encoding")
                return value
        raise PayloadError(start, f"{what}: varint longer than {_MAX_VARINT_BYTES} bytes")


def open_payload(data: bytes | bytearray | memoryview, magic: bytes, version: int, kind: str = "",
                  format_name: str = "format") -> tuple[bytes, PayloadReader]:
    """Check the type, magic bytes and version of a payload; returns it as bytes and a reader past the header.

    ``kind`` extends the bad-magic message (``"for a compressed update"``), ``format_name`` names the format in
    the bad-version message."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PayloadError(0, f"expected bytes, got {type(data).__name__}")
    buf = bytes(data)
    r = PayloadReader(buf)
    got = r.take(len(magic), "magic")
    if got != magic:
        raise PayloadError(0, f"bad magic {got!r} (expected {magic!r}{' ' + kind if kind else ''})")
    v = r.byte("version")
    if v != version:
        raise PayloadError(len(magic), f"unsupported {format_name} version {v} (expected {version})")
    return buf, r


def decode_params(data: bytes | bytearray | memoryview) -> ParamDict:
    """Parse a payload from :func:`encode_params` back into a ``name -> tensor`` dict (fresh, writable tensors).

    Raises :class:`PayloadError` naming the byte offset for any malformed input.
    """
    buf, r = open_payload(data, MAGIC, VERSION)
    count_at = r.pos
    count = r.varint("tensor count")
    out: ParamDict = {}
    for index in range(count):
        if r.pos >= len(buf):
            raise PayloadError(r.pos, f"truncated: header announces {count} tensors, payload ends after {index}")
        name_at = r.pos
        name_len = r.varint(f"name length of tensor #{index}")
        raw = r.take(name_len, f"name of tensor #{index}")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PayloadError(name_at, f"name of tensor #{index} is not valid UTF-8 ({e.reason})") from None
        if name in out:
            raise PayloadError(name_at, f"duplicate tensor name {name!r}")
        code_at = r.pos
        code = r.byte(f"dtype code of {name!r}")
        if code not in _CODES:
            raise PayloadError(code_at, f"unknown dtype code {code} for {name!r} (known: {sorted(_CODES)})")
        ndim_at = r.pos
        ndim = r.byte(f"ndim of {name!r}")
        if ndim > MAX_NDIM:
            raise PayloadError(ndim_at, f"ndim {ndim} of {name!r} exceeds the limit of {MAX_NDIM}")
        shape = [r.varint(f"dimension {d} of {name!r}") for d in range(ndim)]
        torch_dtype, np_dtype = _CODES[code]
        numel, extent = 1, 1
        for d in shape:
            numel *= d
            extent *= max(d, 1)
        if extent >= _MAX_EXTENT:
            raise PayloadError(ndim_at, f"shape {tuple(shape)} of {name!r} is too large")
        nbytes = numel * np_dtype.itemsize
        data_at = r.pos
        if nbytes > len(buf) - data_at:
            raise PayloadError(data_at, f"truncated: data of {name!r} (shape {tuple(shape)}, {torch_dtype}) needs "
                                        f"{nbytes} bytes, only {len(buf) - data_at} left")
        arr = np.frombuffer(buf, dtype=np_dtype, count=numel, offset=data_at).astype(
            np_dtype.newbyteorder("="), copy=True
        )
        r.pos += nbytes
        if torch_dtype == torch.bool:
            if arr.size and arr.max() > 1:
                bad = int(np.argmax(arr > 1))
                raise PayloadError(data_at + bad, f"boolean {name!r} holds byte {int(arr[bad])} (must be 0 or 1)")
            tensor = torch.from_numpy(arr.astype(np.bool_)).reshape(shape)
        elif torch_dtype == torch.bfloat16:
            tensor = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16).reshape(shape)
        else:
            tensor = torch.from_numpy(arr).reshape(shape)
        out[name] = tensor
    if r.pos != len(buf):
        raise PayloadError(r.pos, f"{len(buf) - r.pos} trailing bytes after the {count} tensors announced at byte "
                                  f"{count_at}")
    return out


# ------------------------------------------------------------------------------------------------ batches


class WireLayout:
    """Where each tensor's data sits in the payload of a fixed ``name -> shape`` dict sent in one float ``dtype``.

    ``template``: the payload of all-zero tensors (``encode_params`` of zeros); ``spans``: ``(name, start, stop,
    shape)`` of each tensor's data bytes; ``header``: the positions of every other byte (magic, version, count,
    names, dtype codes, dimensions). Two payloads of this layout differ only inside the spans.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], dtype: torch.dtype = torch.float32) -> None:
        zeros = {n: torch.zeros(tuple(s), dtype=dtype) for n, s in shapes.items()}
        if dtype not in _CODE_OF or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating wire dtype, got {dtype!r}")
        self.dtype = dtype
        self.wire_dtype = _CODES[_CODE_OF[dtype]][1]
        self.template = np.frombuffer(encode_params(zeros, dtype), dtype=np.uint8)
        self.spans: list[tuple[str, int, int, tuple[int, ...]]] = []
        pos = len(MAGIC) + 1 + _varint_len(len(zeros))
        for name, t in zeros.items():
            raw_len = len(_name_bytes(name))
            pos += _varint_len(raw_len) + raw_len + 2 + sum(_varint_len(int(d)) for d in t.shape)
            stop = pos + t.numel() * self.wire_dtype.itemsize
            self.spans.append((name, pos, stop, tuple(t.shape)))
            pos = stop
        data = np.zeros(len(self.template), dtype=bool)
        for _, start, stop, _ in self.spans:
            data[start:stop] = True
        self.header = np.flatnonzero(~data)

    @property
    def size(self) -> int:
        """Bytes of one payload."""
        return len(self.template)


def encode_params_batch(stacks: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> list[bytes]:
    """K payloads from floating stacks ``[K, *shape]`` (one per parameter, order kept): payload ``k`` equals
    ``encode_params({n: stacks[n][k] for n in stacks}, dtype)`` byte for byte. ValueError for an empty dict, a
    non-floating stack or stacks of different K."""
    _check_args(stacks, dtype)
    if not stacks:
        raise ValueError("encode_params_batch needs at least one stack")
    ks = {int(t.shape[0]) if isinstance(t, torch.Tensor) and t.ndim >= 1 else -1 for t in stacks.values()}
    if len(ks) != 1 or -1 in ks:
        raise ValueError(f"stacks must be tensors [K, ...] with one K, got leading sizes {sorted(ks)}")
    for name, t in stacks.items():
        if not t.is_floating_point():
            raise ValueError(f"stack {name!r}: expected a floating tensor, got {t.dtype}")
        if t.ndim - 1 > MAX_NDIM:
            raise ValueError(f"parameter {name!r}: {t.ndim - 1} dimensions exceed the wire limit of {MAX_NDIM}")
    k = ks.pop()
    layout = WireLayout({n: tuple(t.shape[1:]) for n, t in stacks.items()}, dtype)
    out = np.empty((k, layout.size), dtype=np.uint8)
    out[:, layout.header] = layout.template[layout.header]  # the data spans are written below
    for name, start, stop, _ in layout.spans:
        src = stacks[name].detach().to(dtype).cpu().contiguous().reshape(k, -1)
        if src.dtype == torch.bfloat16:
            src = src.view(torch.int16)
        arr = np.ascontiguousarray(src.numpy(), dtype=layout.wire_dtype)
        out[:, start:stop] = arr.view(np.uint8).reshape(k, stop - start)
    return [row.tobytes() for row in out]


def decode_params_batch(payloads: list[bytes | bytearray | memoryview | None], layout: WireLayout
                        ) -> tuple[list[int | None], dict[str, torch.Tensor]]:
    """The payloads of ``layout`` as stacks: ``(rows, stacks)`` with ``rows[i]`` the row of payload ``i`` in
    ``stacks[name]`` (``[R, *shape]``, ``layout.dtype``), or ``None`` for a payload that is not bytes of exactly
    the layout's size and header bytes (parse that one with :func:`decode_params`). A payload given a row
    decodes by :func:`decode_params` to the same names, order, shapes, dtype and values.

    Each payload's data is copied once, straight into its row (no joined buffer: one pass over the bytes)."""
    rows: list[int | None] = [None] * len(payloads)
    header = layout.template.tobytes()
    pieces, pos = [], 0  # the header runs between the data spans
    for _, start, stop, _ in layout.spans:
        pieces.append((pos, start, header[pos:start]))
        pos = stop
    pieces.append((pos, layout.size, header[pos:]))
    fits: list[memoryview] = []
    for i, p in enumerate(payloads):
        if isinstance(p, memoryview):
            p = p.tobytes()  # as decode_params reads it: bytes(data)
        if not isinstance(p, (bytes, bytearray)) or len(p) != layout.size:
            continue
        view = memoryview(p)
        if all(view[a:b] == want for a, b, want in pieces):
            rows[i] = len(fits)
            fits.append(view)
    native = layout.wire_dtype.newbyteorder("=")
    stacks: dict[str, torch.Tensor] = {}
    for name, start, stop, shape in layout.spans:
        count = (stop - start) // layout.wire_dtype.itemsize
        data = np.empty((len(fits), count), dtype=native)
        for r, view in enumerate(fits):
            data[r] = np.frombuffer(view, dtype=layout.wire_dtype, count=count, offset=start)
        t = torch.from_numpy(data.view(np.int16) if layout.dtype == torch.bfloat16 else data)
        if layout.dtype == torch.bfloat16:
            t = t.view(torch.bfloat16)
        stacks[name] = t.reshape((len(fits),) + shape)
    return rows, stacks
