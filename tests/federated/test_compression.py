"""Update compression: compressors against plain references, error feedback, wire codec, simulation integration."""

from __future__ import annotations

import math
import random

import pytest
import torch

from spikefed.experiment.config import ConfigError, RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated import compression as comp
from spikefed.federated.stages import channel as simmod
from spikefed.federated.compression import (
    COMPRESSORS, EF_KEY, CompressionSpec, TensorMessage, decode_message, decode_update, decompress,
    downlink_broadcast, encode_message, error_feedback_step, make_compressor, message_size, num_kept,
    qsgd_quantize, randomk_indices, scaled_sign, topk_indices,
)
from spikefed.federated.serialization import PayloadError, encode_params
from spikefed.federated.simulation import Simulation
from spikefed.federated.types import params_of


def _update(seed: int = 0, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = shapes or {"a.weight": (16, 8), "a.bias": (16,), "b.weight": (4, 16)}
    return {n: torch.randn(s, generator=g) * (i + 1) for i, (n, s) in enumerate(shapes.items())}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _small(*overrides: str) -> RunSettings:
    base = ["partition.num_clients=6", "partition.min_size=5", "federation.rounds=4", "federation.fraction=0.5",
            "model.hidden=[32]", "local.num_steps=6", "local.epochs=1"]
    return build_settings(RunSettings, None, base + list(overrides))


# ------------------------------------------------------------------------------------------ sparsifiers


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.37, 1.0])
def test_topk_global_keeps_exactly_the_k_largest_magnitudes(fraction: float) -> None:
    x = _update(1)
    kept = topk_indices(x, fraction, "global")
    flat = [(abs(float(v)), name, i) for name, t in x.items() for i, v in enumerate(t.reshape(-1).tolist())]
    k = num_kept(fraction, len(flat))
    expected = sorted(flat, reverse=True)[:k]  # plain sort (magnitudes of random normals are distinct)
    got = {(name, int(i)) for name, idx in kept.items() for i in idx}
    assert got == {(name, i) for _, name, i in expected}
    assert sum(len(i) for i in kept.values()) == k
    for idx in kept.values():
        assert torch.equal(idx, idx.sort().values) and idx.unique().numel() == idx.numel()


def test_topk_per_tensor_keeps_the_largest_of_each_tensor() -> None:
    x = _update(2)
    kept = topk_indices(x, 0.2, "tensor")
    for name, t in x.items():
        vals = t.reshape(-1).tolist()
        k = math.ceil(0.2 * len(vals))
        ref = sorted(range(len(vals)), key=lambda i: -abs(vals[i]))[:k]
        assert kept[name].tolist() == sorted(ref)


def test_num_kept_formula() -> None:
    assert num_kept(0.01, 19210) == 193  # ceil(192.1)
    assert num_kept(0.07, 100) == 7  # not 8 from 7.000000000000001
    assert num_kept(1e-9, 50) == 1 and num_kept(1.0, 50) == 50 and num_kept(0.5, 0) == 0


def test_topk_contraction_and_message_values() -> None:
    x = _update(3)
    msg = make_compressor("topk", 0.1).compress(x)
    dense = decompress(msg)
    err = sum(float(((dense[n] - x[n]) ** 2).sum()) for n in x)
    norm = sum(float((x[n] ** 2).sum()) for n in x)
    n = sum(t.numel() for t in x.values())
    assert err <= (1 - num_kept(0.1, n) / n) * norm
    for name, m in msg.items():  # kept values are the exact float32 values
        assert torch.equal(dense[name].reshape(-1)[m.indices], x[name].reshape(-1)[m.indices])


def test_randomk_is_seeded_and_its_expectation_is_known() -> None:
    x = _update(4)
    n = sum(t.numel() for t in x.values())
    a = randomk_indices(x, 0.1, _gen(7))
    b = randomk_indices(x, 0.1, _gen(7))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sum(i.numel() for i in a.values()) == num_kept(0.1, n)
    k = num_kept(0.1, n)
    draws = 2000
    plain = make_compressor("randomk", 0.1)
    scaled = make_compressor("randomk", 0.1, unbiased=True)
    g = _gen(11)
    sum_plain = {name: torch.zeros_like(t) for name, t in x.items()}
    sum_scaled = {name: torch.zeros_like(t) for name, t in x.items()}
    for _ in range(draws):
        for acc, c in ((sum_plain, plain), (sum_scaled, scaled)):
            d = decompress(c.compress(x, g))
            for name in acc:
                acc[name] += d[name]
    p = k / n
    for name, t in x.items():
        # a kept indicator is Bernoulli(p): the mean over `draws` has std sqrt(p(1-p)/draws) |x_i|
        tol = 6 * math.sqrt(p * (1 - p) / draws) * t.abs() + 1e-6
        assert ((sum_plain[name] / draws - p * t).abs() <= tol).all()  # unscaled: E[C(x)] = (k/n) x
        assert ((sum_scaled[name] / draws - t).abs() <= tol / p).all()  # scaled by n/k: E[C(x)] = x


def test_randomk_needs_a_generator() -> None:
    with pytest.raises(ValueError, match="Generator"):
        make_compressor("randomk", 0.1).compress(_update())


# ------------------------------------------------------------------------------------------- quantizers


def test_scaled_sign_formula() -> None:
    x = {"w": torch.tensor([[1.0, -2.0], [0.0, 5.0]]), "b": torch.tensor([-0.5, -1.5, 3.0])}
    msg = make_compressor("sign").compress(x)
    out = decompress(msg)
    assert msg["w"].scale == pytest.approx((1 + 2 + 0 + 5) / 4)
    assert msg["b"].scale == pytest.approx((0.5 + 1.5 + 3.0) / 3)
    assert torch.equal(out["w"], torch.tensor([[2.0, -2.0], [2.0, 2.0]]))  # sign(0) = +1
    signs, scale = scaled_sign(x["b"])
    assert signs.tolist() == [False, False, True] and scale == pytest.approx(5 / 3)


def _qsgd_exact_variance(x: torch.Tensor, s: int, norm: str) -> float:
    """sum_i (N/s)^2 tau_i (1 - tau_i), tau_i = frac(s |x_i| / N): the exact E||Q(x) - x||^2."""
    x = x.double().reshape(-1)
    big = float(x.abs().max()) if norm == "max" else float(x.norm())
    r = x.abs() / big * s
    tau = r - r.floor()
    return float(((big / s) ** 2 * tau * (1 - tau)).sum())


@pytest.mark.parametrize("name,s", [("qsgd8", 127), ("qsgd4", 7)])
@pytest.mark.parametrize("norm", ["max", "l2"])
def test_qsgd_is_unbiased_and_within_the_variance_bound(name: str, s: int, norm: str) -> None:
    x = torch.randn(200, generator=_gen(5)) * torch.linspace(0.01, 2.0, 200)
    c = make_compressor(name, qsgd_norm=norm)
    g = _gen(6)
    draws = 3000
    acc = torch.zeros(200, dtype=torch.float64)
    sq_err = 0.0
    for _ in range(draws):
        msg = c.compress({"x": x}, g)
        levels = msg["x"].values
        assert int(levels.abs().max()) <= s
        q = decompress(msg)["x"].double()
        acc += q
        sq_err += float(((q - x.double()) ** 2).sum())
    big = float(x.abs().max()) if norm == "max" else float(x.norm())
    # each coordinate is (N/s)(l + Bernoulli): its mean over `draws` has std <= (N/s) / (2 sqrt(draws))
    assert ((acc / draws - x.double()).abs() <= 6 * (big / s) / (2 * math.sqrt(draws))).all()
    exact = _qsgd_exact_variance(x, s, norm)
    n, norm2 = x.numel(), float((x.double() ** 2).sum())
    assert exact <= min(n / s**2, math.sqrt(n) / s) * norm2  # QSGD Lemma 3.1
    assert sq_err / draws == pytest.approx(exact, rel=0.1)


def test_qsgd_edge_cases() -> None:
    levels, scale = qsgd_quantize(torch.zeros(5), 127, _gen())
    assert scale == 0.0 and not levels.any()
    levels, scale = qsgd_quantize(torch.tensor([1.0, float("nan")]), 7, _gen())
    assert math.isnan(scale)  # the receiver sees non-finite values and the server rejects them
    x = torch.tensor([3.0, -3.0, 0.0])
    levels, scale = qsgd_quantize(x, 7, _gen())
    assert levels.tolist() == [7, -7, 0] and scale == pytest.approx(3 / 7)  # the max hits the top level exactly


def test_composition_quantizes_only_the_kept_values() -> None:
    x = _update(8)
    topk = make_compressor("topk", 0.1).compress(x)
    both = make_compressor("topk+qsgd8", 0.1).compress(x, _gen())
    for name in x:
        assert torch.equal(topk[name].indices, both[name].indices)
        assert both[name].encoding == "int8"
        kept = x[name].reshape(-1)[both[name].indices]
        if kept.numel():
            assert both[name].scale == pytest.approx(float(kept.abs().max()) / 127)


def test_bad_inputs_give_clear_errors() -> None:
    for bad in (0, 0.0, -0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
            make_compressor("topk", bad)
    with pytest.raises(ValueError, match="unknown compressor 'gzip'; valid: none, topk"):
        make_compressor("gzip")
    with pytest.raises(ValueError, match="unknown scope"):
        make_compressor("topk", 0.1, scope="layer")
    with pytest.raises(ValueError, match="unknown value format"):
        make_compressor("topk", 0.1, values="bf16")
    with pytest.raises(ValueError, match="floating-point"):
        make_compressor("topk", 0.1).compress({"w": torch.arange(4)})
    with pytest.raises(ValueError, match="unknown compressor"):
        CompressionSpec(uplink="topk+topk")
    with pytest.raises(ConfigError, match="compression.uplink"):
        _small("compression.uplink=zip")
    with pytest.raises(ConfigError, match="compression.fraction"):
        _small("compression.fraction=0")
    with pytest.raises(ConfigError, match="unknown key 'compression.ratio'"):
        _small("compression.ratio=0.1")


# ------------------------------------------------------------------------------------------ error feedback


@pytest.mark.parametrize("name", ["topk", "randomk", "topk+qsgd8"])
def test_error_feedback_loses_nothing(name: str) -> None:
    """sum_t m_t + e_T = sum_t delta_t. Integer-valued deltas keep float32 sums exact for the sparsifiers."""
    c = make_compressor(name, 0.05)
    g = _gen(3)
    residual = None
    sent = {n: torch.zeros(s, dtype=torch.float64) for n, s in (("w", (8, 16)), ("b", (16,)))}
    total = {n: torch.zeros_like(t) for n, t in sent.items()}
    for t in range(12):
        delta = {n: torch.randint(-50, 50, tuple(v.shape), generator=g).float() for n, v in sent.items()}
        p = {n: delta[n] + (residual[n] if residual is not None else 0) for n in delta}
        msg, residual = error_feedback_step(delta, residual, c, g)
        m = decompress(msg)
        for n in delta:
            if name in ("topk", "randomk"):
                assert torch.equal(m[n] + residual[n], p[n])  # per step, exactly
            sent[n] += m[n].double()
            total[n] += delta[n].double()
    for n in sent:
        lhs = sent[n] + residual[n].double()
        if name in ("topk", "randomk"):
            assert torch.equal(lhs, total[n])
        else:
            assert torch.allclose(lhs, total[n], atol=1e-3)


def test_error_feedback_residual_checks_and_nonfinite_reset() -> None:
    c = make_compressor("topk", 0.5)
    with pytest.raises(ValueError, match="residual does not match"):
        error_feedback_step({"w": torch.ones(4)}, {"w": torch.ones(5)}, c)
    msg, res = error_feedback_step({"w": torch.tensor([1.0, float("nan"), 2.0, 0.5])}, None, c)
    assert torch.equal(res["w"], torch.zeros(4))
    state: dict = {}
    comp.client_uplink({"w": torch.tensor([1.0, 2.0, 3.0, 4.0])}, c, None, state, True)
    assert torch.equal(state[EF_KEY]["w"], torch.tensor([1.0, 2.0, 0.0, 0.0]))


# ---------------------------------------------------------------------------------------------- codec


@pytest.mark.parametrize("name", COMPRESSORS)
@pytest.mark.parametrize("values", ["fp32", "fp16"])
def test_codec_round_trip_and_size(name: str, values: str) -> None:
    x = _update(9, {"w": (20, 33), "b": (33,), "s": (), "empty": (0, 3)})
    for scope in ("global", "tensor"):
        msg = make_compressor(name, 0.07, scope, values).compress(x, _gen(1))
        payload = encode_message(msg)
        assert len(payload) == message_size(msg)
        back = decode_message(payload)
        assert list(back) == list(x)
        for n in x:
            assert back[n].shape == tuple(x[n].shape)
            assert torch.equal(back[n].dense(), msg[n].dense())
        assert all(torch.equal(a, b) for a, b in zip(decode_update(payload).values(), decompress(msg).values()))


def test_byte_length_by_hand() -> None:
    """300-element tensor "w", indices 5, 130, 299 sent as fp32: gaps 5, 124, 168 -> varints of 1, 1, 2 bytes."""
    m = TensorMessage((300,), torch.tensor([5, 130, 299]), "fp32", torch.tensor([1.0, -2.0, 0.5]))
    payload = encode_message({"w": m})
    # magic 4 + version 1 + count 1 | name_len 1 + "w" 1 + ndim 1 + dim 300 (2) + layout 1 + format 1
    # + k 1 + gaps (1 + 1 + 2) + 3 * 4 value bytes
    assert len(payload) == 6 + (1 + 1 + 1 + 2 + 1 + 1) + 1 + 4 + 12 == 30
    assert payload[:6] == b"SPKC\x01\x01"
    assert payload[6:18] == bytes([1, ord("w"), 1, 0xAC, 0x02, 1, 1, 3, 5, 124, 0xA8, 0x01])
    assert decode_message(payload)["w"].indices.tolist() == [5, 130, 299]
    # the same with 4-bit levels: scale 4 bytes + ceil(3/2) = 2 bytes of nibbles (level + 7, low nibble first)
    m4 = TensorMessage((300,), torch.tensor([5, 130, 299]), "int4", torch.tensor([7, -7, 1], dtype=torch.int8), 0.5)
    p4 = encode_message({"w": m4})
    assert len(p4) == 6 + 7 + 1 + 4 + 4 + 2 and p4[-2:] == bytes([14 | (0 << 4), 8])
    # signs: 10 dense values -> scale + 2 bytes, least significant bit first
    ms = TensorMessage((10,), None, "sign", torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 0, 1], dtype=torch.bool), 0.25)
    ps = encode_message({"w": ms})
    assert len(ps) == 6 + (1 + 1 + 1 + 1 + 1 + 1) + 4 + 2 and ps[-2:] == bytes([0b00001101, 0b00000010])


def test_dense_layout_when_sparse_is_larger() -> None:
    x = {"w": torch.randn(50, generator=_gen())}
    msg = make_compressor("topk", 0.9).compress(x)
    payload = encode_message(msg)
    assert payload[4 + 1 + 1 + 1 + 1 + 1 + 1] == 0  # layout byte: dense
    assert len(payload) == 6 + 6 + 50 * 4
    assert torch.equal(decode_update(payload)["w"], decompress(msg)["w"])


def test_dense_payload_cost_is_unchanged_and_topk_is_much_smaller() -> None:
    x = _update(10, {"w": (256, 64), "b": (256,), "o": (10, 256)})
    dense = len(encode_params(x))
    sparse = len(encode_message(make_compressor("topk", 0.01).compress(x)))
    assert dense / sparse > 50


def _valid_payloads() -> list[bytes]:
    x = _update(12, {"w": (9, 7), "b": (5,)})
    return [encode_message(make_compressor(n, 0.2, values=v).compress(x, _gen(2)))
            for n in ("topk", "randomk+sign", "qsgd4", "topk+qsgd8", "sign") for v in ("fp32", "fp16")]


def test_corrupt_payloads_raise_payload_error() -> None:
    for payload in _valid_payloads():
        for cut in range(len(payload)):
            with pytest.raises(PayloadError):
                decode_message(payload[:cut])
        with pytest.raises(PayloadError, match="trailing"):
            decode_message(payload + b"\x00")
    rng = random.Random(0)
    for payload in _valid_payloads():
        for _ in range(300):
            b = bytearray(payload)
            b[rng.randrange(len(b))] = rng.randrange(256)
            try:
                decode_message(bytes(b))
            except PayloadError:
                pass
    with pytest.raises(PayloadError, match="bad magic"):
        decode_message(b"SPKF\x01\x00")
    with pytest.raises(PayloadError, match="expected bytes"):
        decode_message("SPKC")  # type: ignore[arg-type]


def _entry(fmt: int, layout: int, tail: bytes, dim: int = 3) -> bytes:
    return b"SPKC\x01\x01" + bytes([1, ord("w"), 1, dim, layout, fmt]) + tail


def test_specific_corruptions_are_named() -> None:
    f32 = b"\x00\x00\x80\x3f"
    with pytest.raises(PayloadError, match="unknown value format 9"):
        decode_message(_entry(9, 0, b""))
    with pytest.raises(PayloadError, match="unknown layout 2"):
        decode_message(_entry(1, 2, b""))
    with pytest.raises(PayloadError, match="announces 4 indices for 3"):
        decode_message(_entry(1, 1, b"\x04"))
    with pytest.raises(PayloadError, match="out of range"):
        decode_message(_entry(1, 1, b"\x01\x03" + f32))
    with pytest.raises(PayloadError, match="run past"):
        decode_message(_entry(1, 1, b"\x02\x01\x01" + f32 * 2))
    with pytest.raises(PayloadError, match="non-minimal"):
        decode_message(_entry(1, 1, b"\x01\x81\x00" + f32, dim=100))
    with pytest.raises(PayloadError, match="int8 level -128"):
        decode_message(_entry(3, 0, f32 + bytes([0, 0x80, 1])))
    with pytest.raises(PayloadError, match="int4 code 15"):
        decode_message(_entry(4, 0, f32 + bytes([0xF0, 0x00])))
    with pytest.raises(PayloadError, match="padding nibble"):
        decode_message(_entry(4, 0, f32 + bytes([0x77, 0x17])))
    with pytest.raises(PayloadError, match="padding bits"):
        decode_message(_entry(5, 0, f32 + bytes([0b1000])))
    with pytest.raises(PayloadError, match="duplicate"):
        decode_message(b"SPKC\x01\x02" + bytes([1, ord("w"), 0, 0, 1]) + f32 + bytes([1, ord("w"), 0, 0, 1]) + f32)


# ------------------------------------------------------------------------------------------- downlink


def test_downlink_catch_up_is_exact_and_costs_what_was_missed() -> None:
    c = make_compressor("topk", 0.05)
    state: dict = {}
    g = _gen(4)
    x = _update(13)
    ref, costs = downlink_broadcast(state, x, [0, 1], 1, c, g)
    dense = len(encode_params(x))
    assert costs == [dense, dense]  # first contact: the dense model
    snapshot = {n: t.clone() for n, t in ref.items()}
    for rnd in range(2, 6):
        x = {n: t + 0.1 * torch.randn(t.shape, generator=g) for n, t in x.items()}
        ref, costs = downlink_broadcast(state, x, [0] if rnd < 5 else [0, 1], rnd, c, g)
        assert costs[0] == len(state["history"][-1][1])  # client 0 syncs every round: one message
    # client 1 last synced in round 1: it pays for messages 2..5 (cheaper than dense here) and, applying them in
    # order to what it held, gets exactly the server's reference
    missed = [p for r, p in state["history"] if r > 1]
    assert costs[1] == sum(len(p) for p in missed) < dense
    replay = snapshot
    for p in missed:
        step = decode_update(p)
        replay = {n: replay[n] + step[n] for n in replay}
    assert all(torch.equal(replay[n], ref[n]) for n in ref)
    # the reference tracks the global model with implicit error feedback: x - r is what was not sent yet
    assert sum(float((x[n] - ref[n]).norm() ** 2) for n in x) < sum(float((x[n] - snapshot[n]).norm() ** 2)
                                                                     for n in x)


def test_downlink_history_is_bounded_by_the_dense_size() -> None:
    c = make_compressor("topk", 0.5)
    state: dict = {}
    x = _update(14)
    downlink_broadcast(state, x, [0, 1], 1, c)
    for rnd in range(2, 30):
        x = {n: t + 1.0 for n, t in x.items()}
        _, costs = downlink_broadcast(state, x, [0], rnd, c)
    dense = len(encode_params(x))
    assert sum(len(p) for _, p in state["history"][1:]) < dense
    _, costs = downlink_broadcast(state, x, [1], 30, c)
    assert costs == [dense]  # too far behind: the dense model is cheaper


# ---------------------------------------------------------------------------------------------- simulation


def test_config_defaults_are_dense_and_build_spec_wires_the_section() -> None:
    assert _small().compression.to_spec() is None
    assert build_spec(_small()).compression is None
    spec = build_spec(_small("compression.uplink=topk+qsgd8", "compression.fraction=0.1",
                             "compression.error_feedback=false"))
    assert spec.compression == CompressionSpec(uplink="topk+qsgd8", fraction=0.1, error_feedback=False)
    # values applies to sparsifier outputs only: "none" stays dense fp32 (exactly the uncompressed bytes)
    sim = Simulation(build_spec(_small("compression.values=fp16", "compression.uplink=none",
                                       "compression.downlink=topk")))
    row = sim.run_round()
    assert row["bytes_up"] == 3 * len(encode_params(params_of(sim.spec.model)))


def test_reported_bytes_are_the_payload_lengths(monkeypatch) -> None:
    lengths: list[int] = []
    real = simmod.client_uplink

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003
        payload = real(*args, **kwargs)
        lengths.append(len(payload))
        return payload

    monkeypatch.setattr(simmod, "client_uplink", spy)
    sim = Simulation(build_spec(_small("compression.uplink=topk", "compression.fraction=0.01")))
    row = sim.run_round()
    assert len(lengths) == 3 and row["bytes_up"] == sum(lengths)
    dense = len(encode_params(params_of(sim.spec.model)))
    assert row["bytes_down"] == 3 * dense
    assert dense / max(lengths) > 40  # 2,410 parameters: 25 kept values, the names are a fifth of the bytes
    assert set(sim.state.client_state) == set(sim.sample_clients(1))
    assert all(EF_KEY in s for s in sim.state.client_state.values())


@pytest.mark.parametrize("extra", [
    ("compression.uplink=topk", "compression.fraction=0.05"),
    ("compression.uplink=randomk+qsgd4", "compression.fraction=0.2", "compression.downlink=topk+qsgd8",
     "compression.downlink_fraction=0.1"),
    ("compression.uplink=topk", "compression.fraction=0.05", "compression.momentum_correction=0.9"),
])
def test_resumed_run_with_error_feedback_is_bit_identical(tmp_path, extra: tuple[str, ...]) -> None:
    settings = _small(*extra)
    a = Simulation(build_spec(settings))
    rows_a = [a.run_round() for _ in range(3)]
    b = Simulation(build_spec(settings))
    b.run_round()
    b.save_checkpoint(tmp_path / "c.pt")
    c = Simulation(build_spec(settings))
    c.load_checkpoint(tmp_path / "c.pt")
    assert set(c.state.client_state) == set(b.state.client_state)
    rows_c = [c.run_round() for _ in range(2)]
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [strip(r) for r in rows_a[1:]] == [strip(r) for r in rows_c]
    for n in a.state.global_params:
        assert torch.equal(a.state.global_params[n], c.state.global_params[n])
    for cid, st in a.state.client_state.items():
        for n, t in st[EF_KEY].items():
            assert torch.equal(t, c.state.client_state[cid][EF_KEY][n])
        if any("momentum_correction" in e for e in extra):  # the DGC velocity travels in the checkpoint too
            assert all(torch.equal(t, c.state.client_state[cid]["dgc_velocity"][n])
                       for n, t in st["dgc_velocity"].items())
    if any("downlink=" in e and not e.endswith("none") for e in extra):
        ref_a = a.state.server_state["channel"]["downlink"]["reference"]
        ref_c = c.state.server_state["channel"]["downlink"]["reference"]
        assert all(torch.equal(ref_a[n], ref_c[n]) for n in ref_a)
        assert sum(r["bytes_down"] for r in rows_a) < 3 * 3 * len(encode_params(params_of(a.spec.model)))


def test_compressed_updates_still_go_through_validation() -> None:
    sim = Simulation(build_spec(_small("compression.uplink=topk+qsgd8", "compression.fraction=0.1",
                                       "federation.max_update_norm=1e-9")))
    row = sim.run_round()
    assert row["accepted"] == 0 and row["rejected"] == 3
