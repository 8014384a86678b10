"""Wire format: exact round trips, byte sizes computed by hand, and corrupt payloads."""

from __future__ import annotations

import random
import struct
import warnings

import pytest
import torch

from spikefed.federated.serialization import (
    MAGIC,
    VERSION,
    PayloadError,
    decode_params,
    encode_params,
    payload_size,
)

ALL_DTYPES = [torch.float32, torch.float16, torch.float64, torch.bfloat16, torch.int64, torch.int32, torch.int16,
              torch.int8, torch.uint8, torch.bool]
ITEMSIZE = {torch.float32: 4, torch.float16: 2, torch.float64: 8, torch.bfloat16: 2, torch.int64: 8, torch.int32: 4,
            torch.int16: 2, torch.int8: 1, torch.uint8: 1, torch.bool: 1}


def sample(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        t = (torch.randn(shape, generator=g, dtype=torch.float64) * 100).to(dtype)
        flat = t.view(-1)
        specials = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan")], dtype=dtype)
        flat[: min(5, flat.numel())] = specials[: min(5, flat.numel())]
        return t
    info = torch.iinfo(dtype)
    t = torch.randint(info.min, info.max, shape, generator=g, dtype=torch.int64).to(dtype)
    flat = t.view(-1)
    extremes = torch.tensor([info.min, info.max], dtype=torch.int64).to(dtype)
    flat[: min(2, flat.numel())] = extremes[: min(2, flat.numel())]
    return t


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (so nan payloads and -0.0 count)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.is_floating_point:
        view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.contiguous().view(view), b.contiguous().view(view))
    return torch.equal(a, b)


# ------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_round_trip_exact_for_each_dtype(dtype: torch.dtype) -> None:
    params = {"a": sample(dtype, (3, 4), 1), "scalar": sample(dtype, (), 2), "empty": sample(dtype, (0, 5), 3),
              "vec": sample(dtype, (7,), 4)}
    data = encode_params(params, dtype=None)
    out = decode_params(data)
    assert list(out) == list(params)
    for k in params:
        assert bit_equal(out[k], params[k]), k
    # dtype only affects floating tensors: with the tensor's own floating dtype the bytes are the same
    if dtype.is_floating_point:
        assert encode_params(params, dtype=dtype) == data
    else:
        assert encode_params(params, dtype=torch.float16) == data


def test_empty_dict_and_golden_bytes() -> None:
    assert encode_params({}) == b"SPKF\x01\x00"
    assert decode_params(b"SPKF\x01\x00") == {}
    # hand-assembled: magic, version 1, 1 tensor; name "a" (length 1); float32 code 1; ndim 1; dim 2; data
    expected = b"SPKF" + bytes([1, 1, 1]) + b"a" + bytes([1, 1, 2]) + struct.pack("<2f", 1.5, -2.0)
    assert encode_params({"a": torch.tensor([1.5, -2.0])}) == expected
    out = decode_params(expected)
    assert out["a"].dtype == torch.float32 and out["a"].tolist() == [1.5, -2.0]
    # a 0-dim bool: code 7, ndim 0, one byte
    assert encode_params({"b": torch.tensor(True)}) == b"SPKF" + bytes([1, 1, 1]) + b"b" + bytes([7, 0, 1])


def test_default_casts_floats_to_float32_only() -> None:
    params = {"w": torch.tensor([0.1, 1e300], dtype=torch.float64), "i": torch.tensor([2**40]),
              "h": torch.tensor([1.0], dtype=torch.float16)}
    out = decode_params(encode_params(params))
    assert out["w"].dtype == torch.float32 and out["h"].dtype == torch.float32
    assert torch.equal(out["w"], params["w"].float())  # 1e300 -> inf, as a float32 cast does
    assert out["i"].dtype == torch.int64 and out["i"].item() == 2**40
    half = decode_params(encode_params(params, dtype=torch.float16))
    assert half["w"].dtype == torch.float16 and torch.equal(half["w"], params["w"].half())


def test_layout_handling_and_fresh_writable_output() -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    params = {"t": base.t(), "grad": torch.nn.Parameter(torch.ones(2)), "slice": base[:, 1]}
    data = encode_params(params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = decode_params(bytearray(data))
    assert torch.equal(out["t"], base.t()) and out["t"].is_contiguous()
    assert torch.equal(out["slice"], base[:, 1])
    assert not out["grad"].requires_grad
    out["t"].add_(1.0)  # writable and independent of the payload
    assert decode_params(data)["t"].equal(base.t())
    assert decode_params(memoryview(data))["slice"].equal(base[:, 1])


def test_unicode_and_long_names() -> None:
    params = {"délai.τ": torch.zeros(1), "x" * 200: torch.zeros(1)}
    data = encode_params(params)
    assert list(decode_params(data)) == list(params)
    # "délai.τ" is 9 UTF-8 bytes (é and τ take two); the 200-byte name needs a 2-byte length varint
    assert len(data) == 6 + (1 + 9 + 3 + 4) + (2 + 200 + 3 + 4)


# ------------------------------------------------------------------------------------------------ sizes


def test_size_by_hand() -> None:
    params = {
        "layer.weight": torch.zeros(10, 20),                   # 1 + 12 + 1 + 1 + (1 + 1) + 800
        "b": torch.zeros(300, dtype=torch.float64),            # 1 + 1 + 1 + 1 + 2 (300 >= 128) + 2400
        "s": torch.tensor(3, dtype=torch.int8),                # 1 + 1 + 1 + 1 + 0 + 1
        "m": torch.zeros(2, 0, 3, dtype=torch.bool),           # 1 + 1 + 1 + 1 + 3 + 0
    }
    header = 4 + 1 + 1
    per_tensor = [(1 + 12 + 2 + 2, 10 * 20 * 4), (1 + 1 + 2 + 2, 300 * 8), (1 + 1 + 2 + 0, 1), (1 + 1 + 2 + 3, 0)]
    expected = header + sum(o + d for o, d in per_tensor)
    assert expected == 6 + 817 + 2406 + 5 + 7
    assert len(encode_params(params, dtype=None)) == expected
    assert payload_size(params, dtype=None) == expected
    # default dtype float32: the float64 tensor is sent as 4-byte values
    assert payload_size(params) == len(encode_params(params)) == expected - 300 * 4


@pytest.mark.parametrize("dtype", [None, torch.float32, torch.float16, torch.float64, torch.bfloat16], ids=str)
def test_payload_size_equals_encoded_length(dtype) -> None:
    params = {f"p{i}.{'q' * i * 9}": sample(d, (i, 130 if i % 2 else 3), i) for i, d in enumerate(ALL_DTYPES)}
    params["big_count"] = torch.zeros(20000, dtype=torch.uint8)  # 3-byte varint dimension
    expected = 6 + sum(
        (1 if len(k) < 128 else 2) + len(k) + 2
        + sum(1 if d < 128 else (2 if d < 2**14 else 3) for d in t.shape)
        + t.numel() * (ITEMSIZE[dtype] if dtype is not None and t.is_floating_point() else ITEMSIZE[t.dtype])
        for k, t in params.items()
    )
    assert payload_size(params, dtype) == len(encode_params(params, dtype)) == expected


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="not supported"):
        encode_params({"c": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(ValueError, match="names must be strings"):
        encode_params({3: torch.zeros(1)})
    with pytest.raises(ValueError, match="dtype"):
        encode_params({"a": torch.zeros(1)}, dtype=torch.int64)
    with pytest.raises(ValueError, match="expected a tensor"):
        encode_params({"a": [1.0]})
    with pytest.raises(ValueError, match="UTF-8"):
        encode_params({"bad\ud800": torch.zeros(1)})
    with pytest.raises(ValueError, match="not supported"):
        payload_size({"c": torch.zeros(2, dtype=torch.complex64)})


# ------------------------------------------------------------------------------------------ corrupt data


def small_payload() -> bytes:
    return encode_params({"w": torch.tensor([[1.0, 2.0]]), "flag": torch.tensor([True, False]),
                          "n": torch.tensor(5, dtype=torch.int64)}, dtype=None)


def test_every_truncation_raises_payload_error() -> None:
    data = small_payload()
    for cut in range(len(data)):
        with pytest.raises(PayloadError) as info:
            decode_params(data[:cut])
        assert 0 <= info.value.offset <= cut
        assert f"byte {info.value.offset}" in str(info.value)
    assert set(decode_params(data)) == {"w", "flag", "n"}


def test_byte_flips_decode_or_raise_payload_error_only() -> None:
    data = small_payload()
    rng = random.Random(0)
    for pos in range(len(data)):
        for value in {data[pos] ^ 0xFF, data[pos] ^ 0x01, 0x80, 0x00, rng.randrange(256)}:
            corrupt = bytearray(data)
            corrupt[pos] = value
            try:
                decode_params(bytes(corrupt))
            except PayloadError:
                pass


def test_specific_corruptions() -> None:
    data = small_payload()
    with pytest.raises(PayloadError, match="byte 0: bad magic") as info:
        decode_params(b"SPKG" + data[4:])
    assert info.value.offset == 0 and isinstance(info.value, ValueError)
    with pytest.raises(PayloadError, match="byte 4: unsupported format version 2"):
        decode_params(MAGIC + bytes([VERSION + 1]) + data[5:])
    with pytest.raises(PayloadError, match="3 trailing bytes"):
        decode_params(data + b"xyz")
    # name "w" at byte 7, dtype code at byte 8
    assert data[6:9] == b"\x01w\x01"
    with pytest.raises(PayloadError, match="byte 8: unknown dtype code 99"):
        decode_params(data[:8] + bytes([99]) + data[9:])
    with pytest.raises(PayloadError, match="byte 9: ndim 200"):
        decode_params(data[:9] + bytes([200]) + data[10:])
    with pytest.raises(PayloadError, match="not valid UTF-8"):
        decode_params(data[:7] + b"\xff" + data[8:])
    with pytest.raises(PayloadError, match="duplicate tensor name 'w'"):
        decode_params(b"SPKF\x01\x02" + (b"\x01w\x01\x01\x01" + bytes(4)) * 2)
    flag = b"\x04flag\x07\x01\x02"
    at = data.index(flag) + len(flag)
    with pytest.raises(PayloadError, match=f"byte {at + 1}: boolean 'flag' holds byte 7"):
        decode_params(data[:at + 1] + b"\x07" + data[at + 2:])
    # tensor count larger than what follows
    with pytest.raises(PayloadError, match="announces 4 tensors"):
        decode_params(data[:5] + b"\x04" + data[6:])
    # varints: non-minimal, over-long, huge dimension
    with pytest.raises(PayloadError, match="non-minimal"):
        decode_params(b"SPKF\x01\x80\x00")
    with pytest.raises(PayloadError, match="longer than 10 bytes"):
        decode_params(b"SPKF\x01" + b"\xff" * 11)
    with pytest.raises(PayloadError, match="needs 400 bytes"):
        decode_params(b"SPKF\x01\x01\x01a\x01\x01\x64" + bytes(8))
    with pytest.raises(PayloadError, match="too large"):
        decode_params(b"SPKF\x01\x01\x01a\x01\x02\x00" + b"\xff" * 9 + b"\x01")
    with pytest.raises(PayloadError, match="expected bytes"):
        decode_params("SPKF")  # type: ignore[arg-type]


def test_payload_error_pickles() -> None:
    import pickle

    e = PayloadError(12, "oops")
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.offset, e2.reason, str(e2)) == (12, "oops", str(e))
