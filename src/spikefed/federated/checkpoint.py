"""Checkpoint files: a state tree in a verified format that never unpickles anything.

A checkpoint holds a *state tree*: dicts (keys ``str`` or ``int``), lists, tuples, ``str``, ``int``, ``float``
(``nan`` and infinities included), ``bool``, ``None``, ``bytes`` and tensors. The top level is a dict.

File layout (integers unsigned, little-endian)::

    offset    size  field
    0         8     magic b"SPKFCKPT"
    8         1     format version (= 1)
    9         8     J: length of the JSON document
    17        J     JSON document (ASCII): the tree, tensors and bytes replaced by references
    17+J      8     T: length of the tensor section
    25+J      T     tensor section: ``serialization.encode_params({"0": t0, "1": t1, ...}, dtype=None)``
    25+J+T    32    SHA-256 of bytes [0, 25+J+T) (the content hash)

so a file is exactly ``57 + J + T`` bytes. Nodes of the JSON document::

    null | true | false | string | number     None, bool, str, int (no fraction or exponent), finite float
    [node, ...]                                 list
    {"dict": [[key, node], ...]}                dict; key a string or an integer, unique, order kept
    {"tuple": [node, ...]}                      tuple
    {"tensor": i}                               tensor i of the tensor section
    {"bytes": i}                                bytes: tensor i, one-dimensional uint8
    {"float": "nan" | "inf" | "-inf"}           a non-finite float

An object has exactly one member, one of these five. Tensors are numbered in the order the depth-first walk of
the tree meets them, and each is referenced exactly once (a tensor that appears twice in the tree is stored
twice: aliasing is not kept). Every tensor keeps its dtype (the wire format's dtypes: float16/32/64, bfloat16,
int8/16/32/64, uint8, bool); tensors come back on the CPU, contiguous, without ``requires_grad``.

Reading (:func:`decode_state`, :func:`read_checkpoint`) checks, in order: magic, version, the content hash over
the whole file (before any length field or byte of content is trusted), the two lengths, the JSON document
against the grammar above, the tensor section (parsed by :func:`~spikefed.federated.serialization.decode_params`,
no pickle), that the tensor names are ``"0" .. "n-1"`` and each is referenced exactly once, and that every
floating tensor is finite. Anything else is a :class:`CheckpointError` (a ``ValueError``) whose one-line
message names the file and what is wrong. The hash detects damage (a flipped bit, a truncated copy), not a
deliberate forgery: whoever can write the file can recompute it; what a forged file can do is bounded by the
strict parse (no code runs, no non-finite weight is loaded) and by the caller's own structure checks.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import write_atomic
from .serialization import decode_params, encode_params, payload_size

__all__ = ["FORMAT_VERSION", "MAGIC", "CheckpointError", "decode_state", "encode_state", "read_checkpoint",
           "write_checkpoint"]

MAGIC = b"SPKFCKPT"
FORMAT_VERSION = 1
#: deepest nesting of containers in a state tree
MAX_DEPTH = 64
_LEN = struct.Struct("<Q")
_HASH_BYTES = 32
_HEADER = len(MAGIC) + 1  # magic + version
_MIN_SIZE = _HEADER + 2 * _LEN.size + _HASH_BYTES
_TAGS = ("dict", "tuple", "tensor", "bytes", "float")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: malformed, truncated, tampered with, or holding a non-finite tensor."""


# ------------------------------------------------------------------------------------------------ paths


def _path(parts: tuple[Any, ...]) -> str:
    """``client_state[3]['ef_residual']['fc.weight']``: where a node sits in the tree."""
    if not parts:
        return "the top level"
    head, rest = parts[0], parts[1:]
    text = (head if isinstance(head, str) else f"[{head!r}]") + "".join(f"[{p!r}]" for p in rest)
    return text if len(text) <= 120 else f"{text[:80]}...{text[-37:]}"


# ------------------------------------------------------------------------------------------------ encoding


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def add(self, t: torch.Tensor) -> int:
        index = len(self.tensors)
        self.tensors[str(index)] = t
        return index

    def node(self, value: Any, parts: tuple[Any, ...]) -> Any:
        if len(parts) > MAX_DEPTH:
            raise ValueError(f"state tree nested deeper than {MAX_DEPTH} at {_path(parts)}")
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, (float, np.floating)):
            f = float(value)
            if math.isfinite(f):
                return f
            return {"float": "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")}
        if isinstance(value, torch.Tensor):
            t = value.detach()
            if t.layout != torch.strided:
                raise ValueError(f"tensor at {_path(parts)}: layout {t.layout} cannot be checkpointed")
            try:
                payload_size({"t": t}, dtype=None)  # checks the dtype and ndim without serialising
            except ValueError as e:
                raise ValueError(f"tensor at {_path(parts)} cannot be checkpointed: {e}") from None
            return {"tensor": self.add(t)}
        if isinstance(value, bytes):
            return {"bytes": self.add(torch.from_numpy(np.frombuffer(value, dtype=np.uint8).copy()))}
        if isinstance(value, list):
            return [self.node(v, parts + (i,)) for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {"tuple": [self.node(v, parts + (i,)) for i, v in enumerate(value)]}
        if isinstance(value, dict):
            pairs = []
            for k, v in value.items():
                if isinstance(k, bool) or not isinstance(k, (str, numbers.Integral)):
                    raise ValueError(f"dict key {k!r} at {_path(parts)}: keys must be str or int")
                key = k if isinstance(k, str) else int(k)
                pairs.append([key, self.node(v, parts + (key,))])
            return {"dict": pairs}
        raise ValueError(f"{type(value).__name__} at {_path(parts)} cannot be checkpointed (supported: dict, "
                         "list, tuple, str, int, float, bool, None, bytes, tensor)")


def encode_state(obj: dict[Any, Any]) -> bytes:
    """The checkpoint bytes of a state tree (layout in the module docstring); ``ValueError`` for a value the
    format cannot hold (the message names where it sits in the tree)."""
    if not isinstance(obj, dict):
        raise ValueError(f"a checkpoint's top level must be a dict, got {type(obj).__name__}")
    enc = _Encoder()
    doc = json.dumps(enc.node(obj, ()), allow_nan=False, separators=(",", ":")).encode("ascii")
    tensors = encode_params(enc.tensors, dtype=None)
    body = b"".join([MAGIC, bytes([FORMAT_VERSION]), _LEN.pack(len(doc)), doc, _LEN.pack(len(tensors)), tensors])
    return body + hashlib.sha256(body).digest()


# ------------------------------------------------------------------------------------------------ decoding


class _Invalid(Exception):
    """Internal: what is wrong, turned into a CheckpointError with the file's name by decode_state."""


class _Version(_Invalid):
    """Internal: a format version this module does not read."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version


def _reject_constant(name: str) -> Any:
    raise _Invalid(f"the JSON document holds the non-standard constant {name}")


def _finite_float(text: str) -> float:
    f = float(text)
    if not math.isfinite(f):
        raise _Invalid(f"the JSON document holds the number {text}, which overflows a float")
    return f


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Invalid("a JSON object of the document repeats a member name")
    return out


class _Decoder:
    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.used: set[int] = set()

    def take(self, ref: Any, parts: tuple[Any, ...]) -> torch.Tensor:
        if isinstance(ref, bool) or not isinstance(ref, int):
            raise _Invalid(f"{_path(parts)}: a tensor reference must be an integer, got {ref!r}")
        if not 0 <= ref < len(self.tensors):
            raise _Invalid(f"{_path(parts)} references tensor {ref}, but the tensor section holds "
                           f"{len(self.tensors)}")
        if ref in self.used:
            raise _Invalid(f"{_path(parts)} references tensor {ref}, which another node references too")
        self.used.add(ref)
        return self.tensors[str(ref)]

    def node(self, value: Any, parts: tuple[Any, ...]) -> Any:
        if len(parts) > MAX_DEPTH:
            raise _Invalid(f"the tree is nested deeper than {MAX_DEPTH} at {_path(parts)}")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self.node(v, parts + (i,)) for i, v in enumerate(value)]
        if not isinstance(value, dict):  # pragma: no cover - json.loads yields nothing else
            raise _Invalid(f"{_path(parts)}: unexpected JSON value {type(value).__name__}")
        if len(value) != 1 or next(iter(value)) not in _TAGS:
            raise _Invalid(f"{_path(parts)}: a JSON object must have exactly one member, one of {list(_TAGS)}; "
                           f"got {sorted(value)[:5]}")
        tag, body = next(iter(value.items()))
        if tag == "tensor":
            return self.take(body, parts)
        if tag == "bytes":
            t = self.take(body, parts)
            if t.dtype != torch.uint8 or t.ndim != 1:
                raise _Invalid(f"{_path(parts)}: bytes must be a 1-D uint8 tensor, tensor {body} is "
                               f"{t.dtype} of shape {tuple(t.shape)}")
            return t.numpy().tobytes()
        if tag == "float":
            if not isinstance(body, str) or body not in _NONFINITE:
                raise _Invalid(f"{_path(parts)}: a float node must be one of {list(_NONFINITE)}, got {body!r}")
            return _NONFINITE[body]
        if not isinstance(body, list):
            raise _Invalid(f"{_path(parts)}: a {tag} node must hold a JSON array, got {type(body).__name__}")
        if tag == "tuple":
            return tuple(self.node(v, parts + (i,)) for i, v in enumerate(body))
        out: dict[Any, Any] = {}
        for pair in body:
            if not isinstance(pair, list) or len(pair) != 2:
                raise _Invalid(f"{_path(parts)}: a dict entry must be a [key, value] pair, got {pair!r:.60}")
            key, v = pair
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise _Invalid(f"{_path(parts)}: dict key {key!r:.60} is neither a string nor an integer")
            if key in out:
                raise _Invalid(f"{_path(parts)}: dict key {key!r:.60} appears twice")
            out[key] = self.node(v, parts + (key,))
        return out


def _check_finite(t: torch.Tensor, parts: tuple[Any, ...]) -> None:
    if not t.is_floating_point() or t.numel() == 0:
        return
    ok = torch.isfinite(t)
    if bool(ok.all()):
        return
    flat = int((~ok).flatten().nonzero()[0, 0])
    index = tuple(int(i) for i in np.unravel_index(flat, tuple(t.shape))) if t.ndim else ()
    raise _Invalid(f"tensor {_path(parts)} holds a non-finite value ({float(t[index])} at index {list(index)})")


def _walk_tensors(obj: Any, parts: tuple[Any, ...], visit: Callable[[torch.Tensor, tuple[Any, ...]], None]) -> None:
    if isinstance(obj, torch.Tensor):
        visit(obj, parts)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _walk_tensors(v, parts + (k,), visit)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _walk_tensors(v, parts + (i,), visit)


def _decode(data: bytes) -> dict[Any, Any]:
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        hint = ""
        if data[:4] == b"PK\x03\x04" or data[:1] == b"\x80":
            hint = " (it looks like a torch.save/pickle file: checkpoints are no longer pickles, and pickles are " \
                   "never loaded)"
        raise _Invalid(f"not a spikefed checkpoint: bad magic {data[:len(MAGIC)]!r} (expected {MAGIC!r}){hint}")
    if len(data) < _HEADER:
        raise _Invalid(f"truncated: {len(data)} bytes, the header alone has {_HEADER}")
    if data[len(MAGIC)] != FORMAT_VERSION:
        raise _Version(data[len(MAGIC)])
    if len(data) < _MIN_SIZE:
        raise _Invalid(f"truncated: {len(data)} bytes, the smallest checkpoint has {_MIN_SIZE}")
    body, digest = data[:-_HASH_BYTES], data[-_HASH_BYTES:]
    if hashlib.sha256(body).digest() != digest:
        raise _Invalid("content hash mismatch (SHA-256 over the file): it was damaged, truncated or modified")
    pos = _HEADER
    (doc_len,) = _LEN.unpack_from(body, pos)
    pos += _LEN.size
    if doc_len > len(body) - pos - _LEN.size:
        raise _Invalid(f"the JSON length {doc_len} at byte {_HEADER} runs past the end of the file")
    doc = body[pos:pos + doc_len]
    pos += doc_len
    (section_len,) = _LEN.unpack_from(body, pos)
    pos += _LEN.size
    if section_len != len(body) - pos:
        raise _Invalid(f"the tensor section length {section_len} at byte {pos - _LEN.size} does not match the "
                       f"{len(body) - pos} bytes before the hash")
    try:
        tree = json.loads(doc.decode("ascii"), parse_constant=_reject_constant, parse_float=_finite_float,
                          object_pairs_hook=_unique_members)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _Invalid(f"the JSON document is malformed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    try:
        tensors = decode_params(body[pos:])
    except ValueError as e:  # PayloadError names the byte offset within the section
        raise _Invalid(f"the tensor section (from byte {pos}) is malformed: {e}") from None
    expected = [str(i) for i in range(len(tensors))]
    if list(tensors) != expected:
        raise _Invalid(f"the tensor section's names {list(tensors)[:5]} are not 0 .. {len(tensors) - 1} in order")
    dec = _Decoder(tensors)
    state = dec.node(tree, ())
    if not isinstance(state, dict):
        raise _Invalid(f"the top level must be a dict, got {type(state).__name__}")
    unused = sorted(set(range(len(tensors))) - dec.used)
    if unused:
        raise _Invalid(f"the tensor section holds {len(unused)} tensor(s) no node references (first: {unused[0]})")
    _walk_tensors(state, (), _check_finite)
    return state


def decode_state(data: bytes | bytearray | memoryview, *, source: str = "checkpoint") -> dict[Any, Any]:
    """Parse checkpoint bytes from :func:`encode_state` back into the state tree (fresh tensors).

    :class:`CheckpointError` for anything malformed (see the module docstring); ``source`` begins its message
    (``"checkpoint runs/x/checkpoint.pt"``). No pickle is involved.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CheckpointError(f"{source}: expected bytes, got {type(data).__name__}")
    try:
        return _decode(bytes(data))
    except _Version as e:
        raise CheckpointError(f"{source} has format version {e.version}, which this spikefed does not read "
                              f"(it reads version {FORMAT_VERSION})") from None
    except _Invalid as e:
        raise CheckpointError(f"{source} is corrupt: {e}") from None


def read_checkpoint(path: str | os.PathLike[str]) -> dict[Any, Any]:
    """Read and verify the checkpoint file ``path``; :class:`CheckpointError` naming the file on any problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {e.strerror or e}") from None
    return decode_state(data, source=f"checkpoint {path}")


def write_checkpoint(path: str | os.PathLike[str], state: dict[Any, Any], *,
                     before_replace: Callable[[Path], None] | None = None) -> None:
    """Write ``state`` to ``path`` atomically (:func:`spikefed.io.write_atomic`; ``before_replace`` is its test
    hook, run once the temp file is complete)."""
    write_atomic(path, encode_state(state), before_replace=before_replace)
