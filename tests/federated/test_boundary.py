"""The server's trust boundary (spikefed.federated.boundary): malformed uploads through the remote path.

Every kind below replaces ONE sampled client's upload (client 3 of the sampled 0, 3, 5; model 64-16-10, so
``linears.0.weight`` is [16, 64]) in a round whose other clients train honestly in this process. For each kind:
the round finishes, that upload is rejected with a reason containing the expected word, the others are accepted,
and the global parameters are finite and bit-identical (``torch.equal``) to those of an independent Simulation
whose remote trainer simply leaves the client out.

=================================== ===========================================================================
kind                                reason (as logged in ``row["rejections"]``; "payload: ..." abbreviates
                                    "delta payload: corrupt parameter payload at byte N: ...")
=================================== ===========================================================================
truncated payload                   payload: truncated: data of 'linears.0.weight' (shape (16, 64),
                                    torch.float32) needs 4096 bytes, only 2435 left
bad magic                           payload (byte 0): bad magic b'EVIL' (expected b'SPKF')
trailing bytes                      payload: 1 trailing bytes after the 4 tensors announced at byte 5
empty payload                       payload (byte 0): truncated: magic needs 4 bytes, only 0 left
1-element tensor for a weight       delta 'linears.0.weight': expected shape (16, 64), got (1,)
[3, 3] tensor for a [16, 64] weight delta 'linears.0.weight': expected shape (16, 64), got (3, 3)
extra tensor name                   delta: missing parameters [], unexpected parameters ['evil.weight']
missing tensor                      delta: missing parameters ['linears.1.bias'], unexpected parameters []
int64 tensor                        delta 'linears.0.bias': expected a floating-point dtype, got torch.int64
bool tensor                         delta 'linears.0.bias': expected a floating-point dtype, got torch.bool
float16 tensor                      ACCEPTED (decision: float dtypes are accepted, added in the global dtype)
NaN value / inf value               delta 'linears.0.weight': contains non-finite values (nan/inf)
huge-norm delta (norm 1e9)          update norm 1e+09 exceeds norm_bound = 10 x the round's median update
                                    norm 0.843197
num_samples 0, -3, 2.5, True, "10"  num_samples must be an integer >= 1, got 0 (-3, 2.5, True, '10')
steps -1                            steps must be an integer >= 0, got -1
metric NaN / a string               metric 'loss' must be a finite number, got nan ('low')
client id not sampled               client was not asked to train in this round
same client answering twice         client answered twice in this round (its first accepted answer counts)
payload None / a str                payload must be bytes, got NoneType (str)
Upload with error set               node crashed: CUDA OOM  (the error text itself)
topk: header claims a huge shape    delta 'linears.0.weight': expected shape (16, 64), got (1073741824,
                                    1073741824)  (from the header: nothing dense is allocated)
topk: index out of range            payload: index of 'linears.0.weight' out of range (numel 1024)
topk: indices run past the end      payload: indices of 'linears.0.weight' run past its 1024 coordinates
=================================== ===========================================================================

The compressed (topk) kinds run with ``TensorMessage.dense`` guarded: expanding a tensor of more than 10**6
coordinates fails the test, so the huge shape is refused from the header, before any dense tensor exists.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import pytest
import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.aggregation import InvalidUpdate
from spikefed.federated.boundary import check_metadata, parse_upload
from spikefed.federated.compression import TensorMessage, decode_message, encode_message
from spikefed.federated.serialization import decode_params, encode_params
from spikefed.federated.simulation import (
    Simulation,
    client_generator,
    client_upload,
    train_local,
)
from spikefed.federated.types import ParamDict, Upload

BASE = ["partition.num_clients=6", "partition.min_size=5", "federation.rounds=1", "federation.fraction=0.5",
        "model.hidden=[16]", "local.num_steps=6", "local.epochs=1", "federation.engine=sequential"]
SAMPLED, VICTIM = [0, 3, 5], 3
W0 = "linears.0.weight"


def _settings(compressed: bool) -> RunSettings:
    extra = ["compression.uplink=topk", "compression.fraction=0.1"] if compressed else []
    return build_settings(RunSettings, None, BASE + extra)


@dataclass
class Federation:
    """One config: the honest uploads of round 1, the reference model (victim absent), a reusable simulation."""

    sim: Simulation
    initial: Any
    honest: dict[int, Upload]
    reference: ParamDict

    def run(self, victim_upload: Upload | None) -> dict[str, Any]:
        """Round 1 from the initial state with the victim's upload replaced (``None``: left out)."""
        self.sim.state = copy.deepcopy(self.initial)
        self.sim.spec.strategy.load_state_dict(self.initial.strategy_state)
        self.sim.load_stage_states(self.initial.server_state)
        uploads = [victim_upload if c == VICTIM else self.honest[c] for c in SAMPLED]

        def remote(rnd: int, received: ParamDict, trained: list[int], fit: Any, budgets: Any) -> list[Upload]:
            assert (rnd, trained) == (1, SAMPLED)
            return [u for u in uploads if u is not None]

        return self.sim.run_round(remote=remote)


def _honest_remote(sim: Simulation, store: dict[int, Upload]) -> Callable[..., list[Upload]]:
    """A remote trainer that trains every client in this process and leaves the victim out."""

    def remote(rnd: int, received: ParamDict, trained: list[int], fit: Any, budgets: Any) -> list[Upload]:
        gens = [client_generator(sim.spec.seed, rnd, c) for c in trained]
        updates = train_local(sim.spec, received, [sim.clients[c] for c in trained], gens, fit, None, budgets)
        uploads = [client_upload(sim.spec, rnd, u, received, {}) for u in updates]
        store.update({u.client_id: u for u in uploads})
        return [u for u in uploads if u.client_id != VICTIM]

    return remote


_FEDERATIONS: dict[bool, Federation] = {}


def _federation(compressed: bool) -> Federation:
    if compressed not in _FEDERATIONS:
        ref_sim, honest = Simulation(build_spec(_settings(compressed))), {}
        assert ref_sim.sample_clients(1) == SAMPLED
        row = ref_sim.run_round(remote=_honest_remote(ref_sim, honest))
        assert (row["accepted"], row["rejected"]) == (2, 0)
        sim = Simulation(build_spec(_settings(compressed)))
        _FEDERATIONS[compressed] = Federation(sim, copy.deepcopy(sim.state), honest, ref_sim.state.global_params)
    return _FEDERATIONS[compressed]


# -- malformed uploads: each takes the victim's honest upload and returns what the victim sends instead ----------
def _delta(up: Upload) -> ParamDict:
    return decode_params(up.payload)


def _with_delta(up: Upload, change: Callable[[ParamDict], ParamDict]) -> Upload:
    return replace(up, payload=encode_params(change(_delta(up))))


def _set(name: str, value: Any) -> Callable[[ParamDict], ParamDict]:
    return lambda d: {**d, name: value}


def _poison(value: float) -> Callable[[ParamDict], ParamDict]:
    def change(d: ParamDict) -> ParamDict:
        w = d[W0].clone()
        w[3, 7] = value
        return {**d, W0: w}

    return change


def _huge(d: ParamDict) -> ParamDict:
    norm = math.sqrt(sum(float(t.double().pow(2).sum()) for t in d.values()))
    return {n: t * (1e9 / norm) for n, t in d.items()}


def _compressed(up: Upload, name: str, entry: Callable[[TensorMessage], TensorMessage]) -> Upload:
    message = decode_message(up.payload)
    message[name] = entry(message[name])
    return replace(up, payload=encode_message(message))


def _huge_shape(m: TensorMessage) -> TensorMessage:
    return TensorMessage((2**30, 2**30), torch.tensor([0, 5]), "fp32", torch.tensor([1.0, 2.0]))


def _out_of_range(m: TensorMessage) -> TensorMessage:
    return TensorMessage(m.shape, torch.tensor([m.numel + 5]), "fp32", torch.tensor([1.0]))


def _run_past(m: TensorMessage) -> TensorMessage:
    return TensorMessage(m.shape, torch.tensor([1, m.numel]), "fp32", torch.tensor([1.0, 2.0]))


OTHER = 0  # an honest client's upload, for the duplicate
KINDS: list[tuple[str, bool, Callable[[Upload, Federation], Upload], str]] = [
    ("truncated payload", False, lambda u, f: replace(u, payload=u.payload[: len(u.payload) // 2]), "truncated"),
    ("bad magic", False, lambda u, f: replace(u, payload=b"EVIL" + u.payload[4:]), "magic"),
    ("trailing bytes", False, lambda u, f: replace(u, payload=u.payload + b"\x00"), "trailing"),
    ("empty payload", False, lambda u, f: replace(u, payload=b""), "truncated"),
    ("1-element tensor for a weight", False, lambda u, f: _with_delta(u, _set(W0, torch.full((1,), 5.0))), "shape"),
    ("[3,3] tensor for a [16,64] weight", False, lambda u, f: _with_delta(u, _set(W0, torch.ones(3, 3))), "shape"),
    ("extra tensor name", False, lambda u, f: _with_delta(u, _set("evil.weight", torch.ones(2))), "unexpected"),
    ("missing tensor", False,
     lambda u, f: _with_delta(u, lambda d: {n: t for n, t in d.items() if n != "linears.1.bias"}), "missing"),
    ("int64 tensor", False,
     lambda u, f: _with_delta(u, _set("linears.0.bias", torch.zeros(16, dtype=torch.int64))), "floating"),
    ("bool tensor", False,
     lambda u, f: _with_delta(u, _set("linears.0.bias", torch.zeros(16, dtype=torch.bool))), "floating"),
    ("NaN value", False, lambda u, f: _with_delta(u, _poison(math.nan)), "non-finite"),
    ("inf value", False, lambda u, f: _with_delta(u, _poison(math.inf)), "non-finite"),
    ("huge-norm delta (1e9)", False, lambda u, f: _with_delta(u, _huge), "norm_bound"),
    ("num_samples 0", False, lambda u, f: replace(u, num_samples=0), "num_samples"),
    ("num_samples -3", False, lambda u, f: replace(u, num_samples=-3), "num_samples"),
    ("num_samples 2.5", False, lambda u, f: replace(u, num_samples=2.5), "num_samples"),
    ("num_samples True", False, lambda u, f: replace(u, num_samples=True), "num_samples"),
    ("num_samples '10'", False, lambda u, f: replace(u, num_samples="10"), "num_samples"),
    ("steps -1", False, lambda u, f: replace(u, steps=-1), "steps"),
    ("metric NaN", False, lambda u, f: replace(u, metrics={**u.metrics, "loss": math.nan}), "metric"),
    ("metric a string", False, lambda u, f: replace(u, metrics={**u.metrics, "loss": "low"}), "metric"),
    ("client id not sampled", False, lambda u, f: replace(u, client_id=1), "not asked"),
    ("same client answering twice", False, lambda u, f: f.honest[OTHER], "answered twice"),
    ("payload None", False, lambda u, f: replace(u, payload=None), "bytes"),
    ("payload a str", False, lambda u, f: replace(u, payload=u.payload.decode("latin-1")), "bytes"),
    ("Upload with error set", False, lambda u, f: Upload(u.client_id, 0, b"", error="node crashed: CUDA OOM"),
     "crashed"),
    ("topk: header claims a huge shape", True, lambda u, f: _compressed(u, W0, _huge_shape), "shape"),
    ("topk: index out of range", True, lambda u, f: _compressed(u, W0, _out_of_range), "out of range"),
    ("topk: indices run past the end", True, lambda u, f: _compressed(u, W0, _run_past), "run past"),
]


@pytest.fixture
def dense_guard(monkeypatch):
    """Expanding a compressed tensor of more than 10**6 coordinates fails the test."""
    original = TensorMessage.dense

    def guarded(self: TensorMessage) -> torch.Tensor:
        assert self.numel <= 10**6, f"a dense tensor of shape {self.shape} was about to be allocated"
        return original(self)

    monkeypatch.setattr(TensorMessage, "dense", guarded)


@pytest.mark.parametrize("kind,compressed,make,word", KINDS, ids=[k[0] for k in KINDS])
def test_malformed_upload_is_rejected_and_the_round_equals_the_round_without_it(kind, compressed, make, word,
                                                                                 dense_guard):
    fed = _federation(compressed)
    bad = make(fed.honest[VICTIM], fed)
    row = fed.run(bad)
    (rejection,) = row["rejections"]
    assert rejection["client"] == bad.client_id and rejection["round"] == 1
    assert word in rejection["reason"], rejection["reason"]
    assert (row["accepted"], row["rejected"]) == (2, 1)
    assert row["accuracy"] is not None and math.isfinite(row["accuracy"])
    for n, t in fed.sim.state.global_params.items():
        assert bool(torch.isfinite(t).all()), n
        assert torch.equal(t, fed.reference[n]), f"{kind}: {n} differs from the round without the client"


def test_float16_delta_is_accepted_and_added_in_the_global_dtype():
    """Decision: any floating dtype is accepted (the delta is added to the float32 parameters); int/bool are not."""
    fed = _federation(False)
    half = {n: t.half() for n, t in _delta(fed.honest[VICTIM]).items()}
    row = fed.run(replace(fed.honest[VICTIM], payload=encode_params(half)))
    assert (row["accepted"], row["rejected"]) == (3, 0)
    got = copy.deepcopy(fed.sim.state.global_params)
    row = fed.run(replace(fed.honest[VICTIM], payload=encode_params({n: t.float() for n, t in half.items()})))
    assert row["accepted"] == 3
    for n, t in got.items():
        assert t.dtype == torch.float32 and torch.equal(t, fed.sim.state.global_params[n]), n


def test_float64_delta_is_added_in_the_global_dtype():
    g = _params()
    delta = {n: torch.full(t.shape, 1 / 3, dtype=torch.float64) for n, t in g.items()}
    upd = parse_upload(_upload(delta), "dense", g, g, {}, {2})
    for n in g:
        assert upd.params[n].dtype == torch.float32
        assert torch.equal(upd.params[n], g[n] + delta[n].float())


def test_a_clean_round_through_the_same_remote_path_accepts_everyone():
    fed = _federation(False)
    row = fed.run(fed.honest[VICTIM])
    assert (row["accepted"], row["rejected"]) == (3, 0) and "rejections" not in row
    assert any(not torch.equal(t, fed.reference[n]) for n, t in fed.sim.state.global_params.items())


# -- parse_upload and check_metadata directly ---------------------------------------------------------------------
def _params() -> ParamDict:
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(4, generator=g)}


def _upload(delta: ParamDict, **fields: Any) -> Upload:
    return Upload(**{"client_id": 2, "num_samples": 10, "payload": encode_params(delta),
                     "metrics": {"loss": 0.5}, "steps": 3, **fields})


def test_parse_upload_adds_the_delta_to_the_global_parameters():
    g = _params()
    delta = {n: torch.full_like(t, 0.25) for n, t in g.items()}
    upd = parse_upload(_upload(delta), "dense", g, g, {}, {2})
    assert (upd.client_id, upd.num_samples, upd.steps, upd.metrics) == (2, 10, 3, {"loss": 0.5})
    for n in g:
        assert torch.equal(upd.params[n], g[n] + 0.25)


@pytest.mark.parametrize("fields,word", [
    ({"client_id": 7}, "not asked"), ({"client_id": "2"}, "client id"), ({"client_id": True}, "client id"),
    ({"num_samples": 0}, "num_samples"), ({"num_samples": 1.0}, "num_samples"), ({"steps": -1}, "steps"),
    ({"metrics": [("loss", 1.0)]}, "metrics"), ({"metrics": {"loss": math.inf}}, "metric"),
    ({"metrics": {"acc": True}}, "metric"), ({"payload": 3}, "bytes"), ({"control_payload": "x"}, "control"),
    ({"error": "boom"}, "boom"),
])
def test_check_metadata_refuses_each_bad_field(fields, word):
    up = _upload({n: torch.zeros_like(t) for n, t in _params().items()}, **fields)
    with pytest.raises(InvalidUpdate) as info:
        check_metadata(up, {2})
    assert word in info.value.reason
    assert info.value.client_id == (fields["client_id"] if fields.get("client_id") == 7 else
                                    -1 if "client_id" in fields else 2)


def test_check_metadata_tells_a_stranger_from_a_second_answer():
    up = _upload({"w": torch.zeros(4, 3)})
    with pytest.raises(InvalidUpdate, match="answered twice"):
        check_metadata(up, set(), {2})
    with pytest.raises(InvalidUpdate, match="not asked"):
        check_metadata(up, {1}, {0})


def test_check_metadata_passes_a_sane_upload_and_error_wins_over_everything_else():
    check_metadata(_upload({"w": torch.zeros(4, 3)}), {2})
    with pytest.raises(InvalidUpdate, match="node said no"):
        check_metadata(Upload(2, -5, None, error="node said no"), {2})  # type: ignore[arg-type]


class _Spy(torch.Tensor):
    """A tensor that records every torch function applied to it."""

    calls: ClassVar[list[str]] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


ARITHMETIC = {"add", "__add__", "__radd__", "add_", "sub", "__sub__", "__rsub__", "mul", "__mul__", "__rmul__",
              "div", "__truediv__", "to", "copy_", "expand", "expand_as", "broadcast_to"}


@pytest.mark.parametrize("delta,word", [
    ({"w": torch.ones(1), "b": torch.ones(4)}, "shape"),  # would broadcast over w
    ({"w": torch.ones(1, 3), "b": torch.ones(4)}, "shape"),  # would broadcast too
    ({"w": torch.ones(4, 3), "b": torch.tensor([1.0, math.nan, 0, 0])}, "non-finite"),
    ({"w": torch.ones(4, 3, dtype=torch.int64), "b": torch.ones(4)}, "floating"),
    ({"w": torch.ones(4, 3)}, "missing"),
])
def test_no_arithmetic_with_the_global_parameters_before_the_checks(delta, word):
    g = {n: t.as_subclass(_Spy) for n, t in _params().items()}
    _Spy.calls = []
    with pytest.raises(InvalidUpdate, match=word):
        parse_upload(_upload(delta), "dense", g, g, {}, {2})
    assert not ARITHMETIC & set(_Spy.calls), _Spy.calls
    _Spy.calls = []  # the positive control: a valid delta does reach the addition
    parse_upload(_upload({n: torch.ones_like(t.as_subclass(torch.Tensor)) for n, t in g.items()}), "dense", g, g,
                 {}, {2})
    assert ARITHMETIC & set(_Spy.calls)


def test_compressed_header_is_checked_before_expansion(monkeypatch):
    """parse_upload refuses a compressed message whose header names a wrong shape without calling decompress."""
    from spikefed.federated import boundary

    g = _params()
    expanded: list[int] = []
    monkeypatch.setattr(boundary, "decompress", lambda m: expanded.append(1) or {})
    msg = {"w": TensorMessage((2**31, 2**31), torch.tensor([0]), "fp32", torch.tensor([1.0])),
           "b": TensorMessage((4,), None, "fp32", torch.zeros(4))}
    with pytest.raises(InvalidUpdate, match="expected shape"):
        parse_upload(Upload(2, 10, encode_message(msg)), "compressed", g, g, {}, {2})
    assert expanded == []


def test_unknown_uplink_mode_is_a_programming_error():
    g = _params()
    with pytest.raises(ValueError, match="uplink mode"):
        parse_upload(_upload(g), "sparse", g, g, {}, {2})
