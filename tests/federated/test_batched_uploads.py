"""The batched round bookkeeping equals the per-client path it replaces.

References: payloads written byte by byte here (the layout of spikefed.federated.serialization's docstring),
``encode_params`` / ``decode_params`` / ``parse_upload`` / ``client_upload`` applied client by client (the
per-client path, kept as the reference), ``torch.stack`` and a plain-Python drift formula.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.aggregation import InvalidUpdate, stacked_rows, validate_updates
from spikefed.federated.boundary import parse_upload, parse_uploads
from spikefed.federated.dissimilarity import client_drift
from spikefed.federated.serialization import (
    WireLayout,
    decode_params,
    decode_params_batch,
    encode_params,
    encode_params_batch,
)
from spikefed.federated.simulation import Simulation, client_generator, client_upload, train_local
from spikefed.federated.stages.channel import dense_uploads
from spikefed.federated.types import ClientUpdate, ParamDict, Upload
from spikefed.manifold import POSITIVE, circular

SHAPES = {"w": (3, 2), "thr": (4,), "d": (2,), "s": ()}


def _global() -> ParamDict:
    g = torch.Generator().manual_seed(1)
    return {"w": torch.randn(3, 2, generator=g), "thr": torch.rand(4, generator=g) + 0.5,
            "d": torch.rand(2, generator=g) * 4.0, "s": torch.tensor(0.3)}


def _deltas(k: int, seed: int = 2) -> list[ParamDict]:
    g = torch.Generator().manual_seed(seed)
    return [{n: torch.randn(s, generator=g) * 0.1 for n, s in SHAPES.items()} for _ in range(k)]


def _by_hand(params: dict[str, torch.Tensor]) -> bytes:
    """The wire format written out field by field (float32 data, little-endian)."""
    out = bytearray(b"SPKF\x01") + bytes([len(params)])
    for name, t in params.items():
        out += bytes([len(name)]) + name.encode() + bytes([1, t.ndim]) + bytes(t.shape)
        out += struct.pack(f"<{t.numel()}f", *t.flatten().tolist())
    return bytes(out)


def test_layout_template_and_spans_match_a_payload_written_by_hand():
    layout = WireLayout(SHAPES)
    zeros = {n: torch.zeros(s) for n, s in SHAPES.items()}
    assert layout.template.tobytes() == _by_hand(zeros)
    assert layout.size == len(_by_hand(zeros))
    data = [(start, stop) for _, start, stop, _ in layout.spans]
    assert [stop - start for start, stop in data] == [24, 16, 8, 4]
    header = set(range(layout.size)) - {i for start, stop in data for i in range(start, stop)}
    assert sorted(header) == layout.header.tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64, torch.bfloat16])
def test_encode_batch_equals_encode_params_client_by_client(dtype):
    deltas = _deltas(5)
    stacks = {n: torch.stack([d[n] for d in deltas]).double() for n in SHAPES}  # cast on the way, as one by one
    payloads = encode_params_batch(stacks, dtype)
    assert payloads == [encode_params({n: stacks[n][k] for n in SHAPES}, dtype) for k in range(5)]
    if dtype == torch.float32:
        assert payloads[0] == _by_hand({n: stacks[n][0].float() for n in SHAPES})


def test_encode_batch_refuses_bad_stacks():
    with pytest.raises(ValueError, match="one K"):
        encode_params_batch({"a": torch.zeros(2, 3), "b": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="floating"):
        encode_params_batch({"a": torch.zeros(2, 3, dtype=torch.int64)})
    with pytest.raises(ValueError, match="at least one"):
        encode_params_batch({})


def test_decode_batch_reads_layout_payloads_and_leaves_every_other_one():
    deltas = _deltas(4)
    good = [encode_params(d) for d in deltas]
    nan = dict(deltas[0], w=torch.full((3, 2), math.nan))
    other_dim = _by_hand({**{n: torch.zeros(s) for n, s in SHAPES.items()}, "w": torch.zeros(2, 3)})
    payloads: list[Any] = [good[0], encode_params(deltas[1], torch.float64), good[1][:-1], good[2] + b"\x00",
                           other_dim, None, "text", encode_params(nan), good[3], bytearray(good[2])]
    rows, stacks = decode_params_batch(payloads, WireLayout(SHAPES))
    # same size and header: read (the NaN row too: finiteness is the boundary's check); other dims: same size,
    # another header -> left to decode_params
    assert [r is not None for r in rows] == [True, False, False, False, False, False, False, True, True, True]
    for i, r in enumerate(rows):
        if r is not None:
            ref = decode_params(payloads[i])
            assert list(stacks) == list(ref)
            for n in ref:  # bit for bit, NaN included
                assert torch.equal(stacks[n][r].view(torch.int32), ref[n].view(torch.int32))


def _uploads(g: ParamDict, k: int) -> list[Upload]:
    return [Upload(c, 10 + c, encode_params(d), {"loss": 0.1 * c}, 2) for c, d in enumerate(_deltas(k))]


def _one_by_one(uploads: list[Upload], mode: str, g: ParamDict, manifolds: Any, expected: set[int]
                ) -> tuple[list[ClientUpdate], list[tuple[int, str]]]:
    """The receive loop as it was: parse_upload for each upload in turn."""
    expected, answered, parsed, rejected = set(expected), set(), [], []
    for up in uploads:
        try:
            parsed.append(parse_upload(up, mode, g, g, manifolds, expected, answered))
            expected.discard(up.client_id)
            answered.add(up.client_id)
        except InvalidUpdate as e:
            rejected.append((e.client_id, e.reason))
    return parsed, rejected


def _assert_same(got: tuple[list[ClientUpdate], list[InvalidUpdate]],
                 want: tuple[list[ClientUpdate], list[tuple[int, str]]]) -> None:
    (ok, bad), (ok_ref, bad_ref) = got, want
    assert [(e.client_id, e.reason) for e in bad] == bad_ref
    assert [u.client_id for u in ok] == [u.client_id for u in ok_ref]
    for u, r in zip(ok, ok_ref):
        assert (u.num_samples, u.metrics, u.steps) == (r.num_samples, r.metrics, r.steps)
        assert list(u.params) == list(r.params)
        for n in r.params:
            assert u.params[n].dtype == r.params[n].dtype and torch.equal(u.params[n], r.params[n])
        assert (u.control_delta is None) == (r.control_delta is None)
        if r.control_delta is not None:
            assert all(torch.equal(u.control_delta[n], r.control_delta[n]) for n in r.control_delta)


@pytest.mark.parametrize("mode", ["dense", "dense-received"])
def test_parse_uploads_equals_parse_upload_one_after_another(mode):
    g = _global()
    manifolds = {"thr": POSITIVE, "d": circular(4.0)}
    ups = _uploads(g, 12)
    d = _deltas(1, seed=9)[0]
    ups[1].payload = encode_params(dict(d, w=torch.full((3, 2), math.inf)))  # non-finite
    ups[2].payload = ups[2].payload[:-3]  # truncated
    ups[3].payload = encode_params(d, torch.float16)  # another dtype: accepted, one by one
    ups[4].num_samples = 0  # bad metadata on a well-formed payload
    ups[5].error = "node crashed"
    ups[6].client_id = 99  # not asked
    ups[7].control_payload = encode_params({n: torch.ones(s) for n, s in SHAPES.items()})
    ups[8].payload = encode_params(dict(d, thr=torch.full((4,), -5.0)))  # leaves the positive manifold
    ups.append(Upload(0, 10, encode_params(d), {}, 1))  # client 0 again: answered twice
    ups.append(Upload(2, 12, encode_params(d), {}, 1))  # client 2's second try after a truncated one: accepted
    ups.append(Upload(9, 19, encode_params(dict(d, s=torch.tensor(math.nan))), {}, 1))  # also a second answer
    expected = set(range(12))
    want = _one_by_one(ups, mode, g, manifolds, expected)
    got = parse_uploads(ups, mode, g, g, manifolds, expected)
    _assert_same(got, want)
    rejected = {c for c, _ in want[1]}
    assert rejected == {0, 1, 2, 4, 5, 9, 99} and 2 in {u.client_id for u in want[0]}  # 2: its second try
    if mode == "dense-received":  # the projection happened (thr of client 8 clamped onto the manifold)
        assert bool((next(u for u in got[0] if u.client_id == 8).params["thr"] > 0).all())


def test_one_bad_upload_among_many_is_rejected_alone():
    g = _global()
    ups = _uploads(g, 64)
    bad = _deltas(1, seed=5)[0]
    bad["thr"][2] = math.nan
    ups[37].payload = encode_params(bad)
    ok, rejected = parse_uploads(ups, "dense", g, g, {}, set(range(64)))
    assert [(e.client_id, e.reason) for e in rejected] == [(37, "delta 'thr': contains non-finite values (nan/inf)")]
    assert [u.client_id for u in ok] == [c for c in range(64) if c != 37]
    _assert_same((ok, rejected), _one_by_one(ups, "dense", g, {}, set(range(64))))
    # every accepted tensor is a row of one stack per parameter: read back without a copy
    for n in g:
        rows = [u.params[n] for u in ok]
        stack = stacked_rows(rows)
        assert stack.data_ptr() == rows[0].data_ptr() and torch.equal(stack, torch.stack(rows))


def test_stacked_rows_copies_unless_given_all_rows_in_order():
    base = torch.arange(24.0).reshape(4, 3, 2)
    rows = list(base.unbind(0))
    assert stacked_rows(rows).data_ptr() == base.data_ptr() and torch.equal(stacked_rows(rows), base)
    assert torch.equal(stacked_rows(rows[1:3]), base[1:3])  # a run of rows: a view as well
    for pick in ([1, 0, 2, 3], [0, 0, 1, 2], [0, 2, 3]):
        got = stacked_rows([rows[i] for i in pick])
        assert got.data_ptr() != base.data_ptr() and torch.equal(got, torch.stack([rows[i] for i in pick]))
    loose = [torch.ones(2), torch.zeros(2)]
    assert torch.equal(stacked_rows(loose, dtype=torch.float64), torch.stack(loose).double())


def test_dense_uploads_equal_client_upload_byte_for_byte():
    g = _global()
    updates = [ClientUpdate(c, 5 + c, {n: g[n] + d[n] for n in g}, {"loss": 1.0}, None, 3)
               for c, d in enumerate(_deltas(6))]
    updates[4].control_delta = {n: torch.full(s, 0.5) for n, s in SHAPES.items()}
    got = dense_uploads(updates, g)
    for up, u in zip(got, updates):
        assert up.payload == encode_params({n: u.params[n] - g[n] for n in u.params})
        assert up.control_payload == (encode_params(u.control_delta) if u.control_delta else None)
        assert (up.client_id, up.num_samples, up.metrics, up.steps) == (u.client_id, u.num_samples, u.metrics, 3)
    # another order of names: one by one, the client's own order on the wire
    odd = ClientUpdate(9, 1, {n: updates[0].params[n] for n in reversed(list(g))})
    assert dense_uploads([updates[0], odd], g)[1].payload == encode_params({n: odd.params[n] - g[n]
                                                                            for n in reversed(list(g))})


def test_client_drift_of_stacked_rows_matches_the_formula():
    g = _global()
    ups = _uploads(g, 7)
    ok, _ = parse_uploads(ups, "dense", g, g, {}, set(range(7)))
    weights = [float(u.num_samples) for u in ok]
    got = client_drift(ok, g, weights)
    deltas = [[float(x) for n in g for x in (u.params[n].double() - g[n].double()).flatten()] for u in ok]
    p = [w / sum(weights) for w in weights]
    mean = [sum(pk * d[i] for pk, d in zip(p, deltas)) for i in range(len(deltas[0]))]
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    cos = sum(pk * (1 - dot(d, mean) / math.sqrt(dot(d, d) * dot(mean, mean))) for pk, d in zip(p, deltas))
    norm = sum(pk * dot(d, d) for pk, d in zip(p, deltas)) / dot(mean, mean)
    assert got["client_drift_cosine"] == pytest.approx(cos, rel=1e-12)
    assert got["client_drift_norm"] == pytest.approx(norm, rel=1e-12)


# -- a whole round: the batched path against the per-client one ----------------------------------------------------
class _PerClientSimulation(Simulation):
    """The receive loop as it was before batching: parse_upload for each upload in turn."""

    def receive(self, ctx: Any) -> None:
        spec, st = self.spec, self.state
        expected, answered, parsed = set(ctx.plan.trained), set(), []
        for up in ctx.uploads:
            ctx.bytes_up += len(up.payload) + (len(up.control_payload) if up.control_payload else 0)
            try:
                parsed.append(parse_upload(up, "dense", st.global_params, ctx.received, self.manifolds, expected,
                                           answered))
                expected.discard(up.client_id)
                answered.add(up.client_id)
            except InvalidUpdate as e:
                ctx.reject(e.client_id, e.reason)
        ctx.accepted, invalid = validate_updates(parsed, st.global_params, spec.max_update_norm, self.manifolds,
                                                 spec.norm_bound)
        for bad in invalid:
            ctx.reject(bad.client_id, bad.reason)


def _trainer(sim: Simulation, encode: Any, malformed: bool) -> Any:
    """A remote trainer: the round's clients trained in this process, their uploads made by ``encode``."""

    def remote(rnd: int, received: ParamDict, trained: list[int], fit: Any, budgets: Any) -> list[Upload]:
        gens = [client_generator(sim.spec.seed, rnd, c) for c in trained]
        held = sim.state.client_state
        controls = ([held.get(c, {}).get("scaffold_control") for c in trained]
                    if fit.server_control is not None else None)
        updates = train_local(sim.spec, received, [sim.clients[c] for c in trained], gens, fit, controls, budgets)
        uploads = encode(sim, rnd, updates)
        if malformed:  # one truncated upload in each round: rejected by both paths
            uploads[1].payload = uploads[1].payload[:-1]
        return uploads

    return remote


def _per_client_uploads(sim: Simulation, rnd: int, updates: list[ClientUpdate]) -> list[Upload]:
    return [client_upload(sim.spec, rnd, u, sim.state.global_params, {}) for u in updates]


@pytest.mark.parametrize("strategy,malformed", [("fedavg", False), ("fedavg", True), ("scaffold", True)])
def test_rounds_equal_the_per_client_path_in_bytes_rows_and_weights(strategy, malformed):
    settings = build_settings(RunSettings, None, [
        "partition.num_clients=8", "partition.min_size=5", "federation.rounds=2", "federation.fraction=0.75",
        "federation.eval_every=2", "model.hidden=[16]", "local.num_steps=6", f"federation.strategy={strategy}"])
    batched, reference = Simulation(build_spec(settings)), _PerClientSimulation(build_spec(settings))
    # batched: the channel stage's own uplink (dense_uploads) in process, or the same encoder through a remote
    batched_remote = (_trainer(batched, lambda sim, rnd, ups: dense_uploads(ups, sim.state.global_params), True)
                      if malformed else None)
    reference_remote = _trainer(reference, _per_client_uploads, malformed)
    for _ in range(2):
        rows = batched.run_round(remote=batched_remote), reference.run_round(remote=reference_remote)
        got, want = ({k: v for k, v in r.items() if k != "seconds"} for r in rows)
        assert got == want and got["rejected"] == int(malformed)
    assert batched.state.bytes_up == reference.state.bytes_up > 0
    for n, t in reference.state.global_params.items():
        assert torch.equal(batched.state.global_params[n], t)
