"""Checkpoint format (spikefed.federated.checkpoint): exact round trips of every kind of leaf, and every malformed,
truncated, damaged or tampered file refused with one CheckpointError line; the simulation state of real runs
(strategy buffers, SCAFFOLD controls, error feedback, downlink history, continual anchors) round-trips exactly."""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.checkpoint import (FORMAT_VERSION, MAGIC, MAX_DEPTH, CheckpointError, decode_state,
                                           encode_state, read_checkpoint, write_checkpoint)
from spikefed.federated.serialization import encode_params
from spikefed.federated.simulation import Simulation

_U64 = struct.Struct("<Q")


# ------------------------------------------------------------------------------------------------ helpers


def _bits(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor's elements in C order (bit-exact comparison, NaN payloads and -0.0 included)."""
    return t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()


def _same(a: Any, b: Any, where: str = "top") -> None:
    """Independent structural equality: same types all the way down (int keys stay int, tuples stay tuples),
    floats compared by bit pattern (so NaN equals NaN and -0.0 differs from 0.0), tensors by dtype, shape and
    bytes."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        assert [type(k) for k in a] == [type(k) for k in b], f"{where}: key types"
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{where}: {a!r} vs {b!r}"
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, \
            f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        assert _bits(a) == _bits(b), f"{where}: tensor bytes differ"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def _tree() -> dict[Any, Any]:
    """Every kind of leaf the format holds, and the shapes the simulation state takes."""
    g = torch.Generator().manual_seed(0)
    return {
        "version": 2,
        "round": 3,
        "global_params": {"fc1.weight": torch.randn(4, 3, generator=g), "fc1.bias": torch.randn(4, generator=g)},
        "dtypes": {
            "float64": torch.randn(5, generator=g, dtype=torch.float64),
            "float16": torch.randn(2, 2, generator=g).half(),
            "bfloat16": torch.randn(3, generator=g).bfloat16(),
            "int64": torch.tensor([-(2**63), -1, 0, 2**63 - 1], dtype=torch.int64),
            "int32": torch.tensor([-7, 2**31 - 1], dtype=torch.int32),
            "int16": torch.tensor([[-3, 4]], dtype=torch.int16),
            "int8": torch.tensor([-128, 127], dtype=torch.int8),
            "uint8": torch.tensor([0, 255], dtype=torch.uint8),
            "bool": torch.tensor([[True, False], [False, True]]),
            "scalar": torch.tensor(2.5),
            "empty": torch.zeros(0, 3),
            "transposed": torch.arange(6.0).reshape(2, 3).t(),
            "negative_zero": torch.tensor([-0.0, 0.0, 1e-45, 3.4e38]),
        },
        "controls": {0: {"fc1.weight": torch.ones(4, 3)}, 5: {"fc1.weight": torch.zeros(4, 3)}},
        "client_state": {2: {"ef_residual": {"fc1.bias": torch.full((4,), 0.25)}, "continual_task": 1},
                         -1: {}, 2**40: {"x": None}},
        "server_state": {
            "privacy": {"clip": 1.5, "rounds": 2},
            "downlink": {"reference": {"w": torch.ones(2)}, "synced": {0: 1, 3: 2},
                         "history": [(2, b"\x00\x01payload"), (3, b"")]},
            "continual": {"anchors": {1: {"w": torch.ones(2)}}, "fisher": {1: {"w": torch.full((2,), 0.5)}}},
        },
        "metrics": [{"round": 1, "accuracy": 0.5, "loss": math.nan, "dp_epsilon": math.inf, "low": -math.inf,
                     "clients": [0, 3], "accuracy_by_device": {"loihi": 0.25}, "task_accuracy": None}],
        "scalars": [True, False, None, 0, -1, 2**70, -(2**70), 0.1, -0.0, 1e308, 5e-324, 1.0, "", "ünïcödé \u2603",
                    "\ud800 lone surrogate", "tensor", "$dict"],
        "nesting": {"tuple": (1, (2.0, [3, {"deep": (None,)}])), "empty": {}, "empty_list": [], "empty_tuple": ()},
        "look_alike": {"tensor": 0, "dict": [["a", 1]], "float": "nan"},  # user keys equal to the format's tags
        "fingerprint": {"sha256": "ab" * 32},
    }


def _file(doc: Any, tensors: dict[str, torch.Tensor] | None = None, *, raw_doc: bytes | None = None,
          section: bytes | None = None, version: int = FORMAT_VERSION) -> bytes:
    """A checkpoint built by hand with a correct content hash: what a writer with a bug (or a forger) produces."""
    body_doc = raw_doc if raw_doc is not None else json.dumps(doc).encode("ascii")
    body_sec = section if section is not None else encode_params(tensors or {}, dtype=None)
    body = MAGIC + bytes([version]) + _U64.pack(len(body_doc)) + body_doc + _U64.pack(len(body_sec)) + body_sec
    return body + hashlib.sha256(body).digest()


def _reseal(data: bytes) -> bytes:
    return data[:-32] + hashlib.sha256(data[:-32]).digest()


def _section_start(blob: bytes) -> int:
    (doc_len,) = _U64.unpack_from(blob, len(MAGIC) + 1)
    return len(MAGIC) + 1 + 8 + doc_len + 8


def _flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)


# ------------------------------------------------------------------------------------------------ round trips


def test_round_trip_of_every_kind_of_leaf_is_exact() -> None:
    tree = _tree()
    blob = encode_state(tree)
    back = decode_state(blob)
    _same(tree, back)
    assert list(back["controls"]) == [0, 5] and all(type(k) is int for k in back["client_state"])
    assert math.isnan(back["metrics"][0]["loss"]) and back["metrics"][0]["dp_epsilon"] == math.inf
    assert back["look_alike"] == {"tensor": 0, "dict": [["a", 1]], "float": "nan"}
    assert encode_state(back) == blob  # deterministic: re-encoding the decoded tree gives the same bytes
    assert blob[:len(MAGIC)] == MAGIC and blob[-32:] == hashlib.sha256(blob[:-32]).digest()


def test_decoded_tensors_are_fresh_plain_cpu_tensors() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    tree = {"p": p, "alias": {"a": p}}
    back = decode_state(encode_state(tree))
    assert type(back["p"]) is torch.Tensor and not back["p"].requires_grad
    back["p"].add_(1.0)  # writable, and not shared with the other reference (aliasing is not kept)
    assert torch.equal(back["alias"]["a"], torch.ones(3)) and torch.equal(p.detach(), torch.ones(3))


def test_numpy_scalars_are_stored_as_python_numbers() -> None:
    np = pytest.importorskip("numpy")
    back = decode_state(encode_state({"i": np.int64(7), np.int32(3): np.float32(0.5), "b": np.bool_(True),
                                      "n": np.float64("nan")}))
    _same(back, {"i": 7, 3: 0.5, "b": True, "n": math.nan})


@pytest.mark.parametrize("value, needle", [
    ({"s": {1, 2}}, "set at s"),
    ({"o": [object()]}, "object at o[0]"),
    ({(1, 2): 0}, "keys must be str or int"),
    ({True: 0}, "keys must be str or int"),
    ({"c": {"z": torch.zeros(2, dtype=torch.complex64)}}, "tensor at c['z']"),
    ({"sparse": torch.eye(2).to_sparse()}, "layout"),
    ([1, 2], "top level must be a dict"),
])
def test_encoding_refuses_what_the_format_cannot_hold(value: Any, needle: str) -> None:
    with pytest.raises(ValueError) as e:
        encode_state(value)
    assert needle in str(e.value)


def test_encoding_refuses_too_deep_nesting() -> None:
    deep: Any = 0
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ValueError, match="deeper"):
        encode_state({"d": deep})


# ------------------------------------------------------------------------------------------------ malformed input


def _good() -> bytes:
    g = torch.Generator().manual_seed(1)
    return encode_state({"round": 1, "w": torch.randn(16, generator=g), "metrics": [{"round": 1, "loss": 0.5}]})


def _cases() -> dict[str, tuple[bytes, str]]:
    good = _good()
    sec = _section_start(good)
    w = torch.ones(2)
    torch_pickle = io.BytesIO()
    torch.save({"round": 1}, torch_pickle)
    cases: dict[str, tuple[bytes, str]] = {
        "empty": (b"", "bad magic"),
        "bad magic": (b"NOTSPKF!" + good[8:], "bad magic"),
        "torch.save file": (torch_pickle.getvalue(), "pickle"),
        "raw pickle": (pickle.dumps({"round": 1}), "pickle"),
        "unknown version": (_reseal(good[:8] + bytes([FORMAT_VERSION + 1]) + good[9:]), "format version 2"),
        "hash mismatch": (good[:-1] + bytes([good[-1] ^ 0xFF]), "hash mismatch"),
        "bit flip in the tensor data": (_flip(good, len(good) - 32 - 5, 3), "hash mismatch"),
        "bit flip in the tensor header": (_flip(good, sec + 2), "hash mismatch"),
        "bit flip in the JSON": (_flip(good, 20, 1), "hash mismatch"),
        "bit flip in a length": (_flip(good, 9, 6), "hash mismatch"),
        "trailing byte": (good + b"\x00", "hash mismatch"),
        "missing tensor": (_file({"dict": [["w", {"tensor": 1}]]}, {"0": w}), "references tensor 1"),
        "tensor referenced twice": (_file({"dict": [["a", {"tensor": 0}], ["b", {"tensor": 0}]]}, {"0": w}),
                                    "another node references"),
        "unreferenced tensor": (_file({"dict": [["a", {"tensor": 0}]]}, {"0": w, "1": w}), "no node references"),
        "bool reference": (_file({"dict": [["a", {"tensor": True}]]}, {"0": w}), "must be an integer"),
        "non-finite tensor": (_file({"dict": [["global_params", {"dict": [["fc.w", {"tensor": 0}]]}]]},
                                    {"0": torch.tensor([[1.0, 2.0], [3.0, math.nan]])}),
                              "tensor global_params['fc.w'] holds a non-finite value (nan at index [1, 1])"),
        "infinite bfloat16": (_file({"dict": [[7, {"tuple": [{"tensor": 0}]}]]},
                                    {"0": torch.tensor([math.inf]).bfloat16()}), "tensor [7][0] holds a non-finite"),
        "non-dict top level": (_file([1, 2]), "top level must be a dict"),
        "top-level tuple": (_file({"tuple": []}), "top level must be a dict"),
        "unknown tag": (_file({"dict": [["a", {"set": [1]}]]}), "exactly one member"),
        "two tags": (_file({"dict": [], "tuple": []}), "exactly one member"),
        "repeated member": (_file(None, raw_doc=b'{"dict":[],"dict":[]}'), "repeats a member"),
        "duplicate key": (_file({"dict": [["a", 1], ["a", 2]]}), "appears twice"),
        "int and str keys are different": (_file({"dict": [["1", 1], [1, 2]]}), None),  # valid: see below
        "bool key": (_file({"dict": [[True, 1]]}), "neither a string nor an integer"),
        "float key": (_file({"dict": [[1.5, 1]]}), "neither a string nor an integer"),
        "dict entry not a pair": (_file({"dict": [["a", 1, 2]]}), "[key, value] pair"),
        "dict body not a list": (_file({"dict": {"a": 1}}), "must hold a JSON array"),
        "bad float tag": (_file({"dict": [["x", {"float": "NaN"}]]}), "float node"),
        "bytes from a float tensor": (_file({"dict": [["b", {"bytes": 0}]]}, {"0": w}), "bytes must be"),
        "NaN literal": (_file(None, raw_doc=b'{"dict":[["x",NaN]]}'), "non-standard constant NaN"),
        "overflowing number": (_file(None, raw_doc=b'{"dict":[["x",1e999]]}'), "overflows"),
        "malformed JSON": (_file(None, raw_doc=b'{"dict":['), "JSON document is malformed"),
        "non-ASCII JSON": (_file(None, raw_doc='{"dict":[["é",1]]}'.encode()), "JSON document is malformed"),
        "too deep": (_file(None, raw_doc=b'{"dict":[["x",' + b"[" * (MAX_DEPTH + 2) + b"]" * (MAX_DEPTH + 2)
                           + b"]]}"), "deeper"),
        "very deep JSON": (_file(None, raw_doc=b"[" * 100_000 + b"]" * 100_000), "malformed"),
        "garbage tensor section": (_file({"dict": []}, section=b"SPKF\x01\x05garbage"), "tensor section"),
        "tensor section of another format": (_file({"dict": []}, section=b"JUNK"), "tensor section"),
        "tensor names not numbered": (_file({"dict": [["a", {"tensor": 0}]]}, {"a": w}), "names"),
    }
    # the two length fields, forged with a valid hash
    body = good[:-32]
    (doc_len,) = _U64.unpack_from(body, 9)
    cases["JSON length past the end"] = (_reseal(body[:9] + _U64.pack(2**40) + body[17:] + bytes(32)),
                                         "runs past the end")
    cases["tensor section length wrong"] = (_reseal(body[:17 + doc_len] + _U64.pack(3) + body[25 + doc_len:]
                                                    + bytes(32)), "does not match")
    for cut in (1, 8, 9, 12, 17, 30, sec - 1, sec + 3, len(good) // 2, len(good) - 33, len(good) - 1):
        cases[f"truncated at {cut}"] = (good[:cut], "corrupt")
    return cases


_CASES = _cases()


@pytest.mark.parametrize("name", list(_CASES))
def test_malformed_checkpoints_are_refused_with_one_line(name: str) -> None:
    data, needle = _CASES[name]
    if needle is None:
        assert decode_state(data) == {"1": 1, 1: 2}
        return
    with pytest.raises(CheckpointError) as e:
        decode_state(data, source="checkpoint X")
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    assert msg.startswith("checkpoint X ") and "\n" not in msg and needle in msg, msg


def test_every_single_bit_flip_is_detected() -> None:
    good = _good()
    for offset in range(len(good)):
        for bit in (0, 7):
            with pytest.raises(CheckpointError):
                decode_state(_flip(good, offset, bit))


def test_every_truncation_is_detected() -> None:
    good = _good()
    for cut in range(len(good)):
        with pytest.raises(CheckpointError, match="corrupt"):
            decode_state(good[:cut])


def test_decode_state_refuses_non_bytes() -> None:
    with pytest.raises(CheckpointError, match="expected bytes"):
        decode_state("SPKFCKPT")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ files


def test_files_name_themselves_in_errors_and_are_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(path, {"a": torch.ones(2)})
    _same(read_checkpoint(path), {"a": torch.ones(2)})
    old = path.read_bytes()

    seen = []

    def hook(tmp: Path) -> None:
        seen.append((tmp.name, path.read_bytes() == old, decode_state(tmp.read_bytes())["a"].sum().item()))
        raise KeyboardInterrupt  # a kill in the window: the old checkpoint stays, no temp file is left

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(path, {"a": torch.zeros(2)}, before_replace=hook)
    assert seen == [("checkpoint.pt.tmp", True, 0.0)]
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]

    path.write_bytes(old[:-1])
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is corrupt: content hash mismatch"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="unreadable"):
        read_checkpoint(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------------------ simulation state


def _small(*overrides: str) -> RunSettings:
    base = ["partition.num_clients=6", "partition.min_size=5", "federation.rounds=6", "federation.fraction=0.5",
            "model.hidden=[16]", "local.num_steps=4", "local.epochs=1"]
    return build_settings(RunSettings, None, base + list(overrides))


def _state_tree(sim: Simulation) -> dict[str, Any]:
    st = sim.state
    return {"round": st.round, "global_params": st.global_params, "strategy_state": st.strategy_state,
            "metrics": st.metrics, "bytes_up": st.bytes_up, "bytes_down": st.bytes_down,
            "seconds": st.seconds, "client_state": st.client_state.checkpoint_tree(),
            "server_state": st.server_state}


@pytest.mark.parametrize("extra", [
    # SCAFFOLD controls by client id, a strategy with buffers, error feedback, downlink history (round, bytes)
    ("federation.strategy=scaffold", "local.optimizer=sgd", "local.lr=0.05", "compression.uplink=topk",
     "compression.fraction=0.1", "compression.downlink=topk+qsgd8", "compression.downlink_fraction=0.2"),
    ("federation.strategy=fedadam", "privacy.dp=true", "privacy.adaptive_clip=true"),
    # continual anchors and Fisher keyed by task, the task each client holds
    ("continual.stream=async_drift", "continual.max_lag=1", "continual.regularizer=ewc", "continual.lam=5",
     "continual.fisher_samples=8", "federation.rounds=4"),  # round 2 ends task 0: the anchor of task 1
])
def test_simulation_state_round_trips_exactly_and_resumes_bit_identically(tmp_path: Path,
                                                                           extra: tuple[str, ...]) -> None:
    settings = _small(*extra)
    straight = Simulation(build_spec(settings))
    rows = [straight.run_round() for _ in range(3)]
    partial = Simulation(build_spec(settings))
    for _ in range(2):
        partial.run_round()
    partial.save_checkpoint(tmp_path / "checkpoint.pt", {"sha256": "x"})
    loaded = read_checkpoint(tmp_path / "checkpoint.pt")
    _same({k: loaded[k] for k in _state_tree(partial)}, _state_tree(partial))
    resumed = Simulation(build_spec(settings))
    resumed.load_checkpoint(tmp_path / "checkpoint.pt", {"sha256": "x"})
    row = resumed.run_round()
    assert {**row, "seconds": 0} == {**rows[-1], "seconds": 0}
    _same({k: v for k, v in _state_tree(resumed).items() if k not in ("seconds", "metrics")},
          {k: v for k, v in _state_tree(straight).items() if k not in ("seconds", "metrics")})
    if "compression.downlink=topk+qsgd8" in extra:
        history = partial.state.server_state["channel"]["downlink"]["history"]
        assert history and all(type(h) is tuple and type(h[1]) is bytes for h in history)
        held = {c for c, s in partial.state.client_state.items() if "scaffold_control" in s}
        assert held and all(type(c) is int for c in held)
        assert set(loaded["client_state"]["kinds"]["scaffold_control"]["clients"].tolist()) == held
    if "privacy.dp=true" in extra:
        assert partial.state.server_state["privacy"]["rounds"] == 2
    if "continual.regularizer=ewc" in extra:
        assert list(loaded["server_state"]["continual"]["fisher"]) == [1]


def test_load_checkpoint_refuses_a_non_finite_weight_and_wrong_kinds(tmp_path: Path) -> None:
    sim = Simulation(build_spec(_small("compression.uplink=topk", "compression.fraction=0.1")))
    sim.run_round()
    good = _saved(sim, tmp_path / "good.pt")
    name = next(iter(good["global_params"]))
    cases = {
        "nan weight": (lambda d: d["global_params"][name].view(-1).__setitem__(0, math.nan),
                       f"global_params['{name}'] holds a non-finite value (nan"),
        "inf residual": (lambda d: d["client_state"]["kinds"]["ef_residual"]["values"].view(-1).__setitem__(
            0, math.inf), "client_state['kinds']['ef_residual']['values']"),
        "float64 weights": (lambda d: d["global_params"].__setitem__(name, d["global_params"][name].double()),
                            "different model"),
        "client_state not a dict": (lambda d: d.__setitem__("client_state", [1]), "client_state is not a dict"),
        "string key client (plain form)": (lambda d: d.__setitem__("client_state", {"0": {}}), "client '0'"),
        "client out of range": (lambda d: d["client_state"]["kinds"]["ef_residual"].__setitem__(
            "clients", torch.tensor([99] * len(d["client_state"]["kinds"]["ef_residual"]["clients"]))),
            "outside 0..5"),
        "control of another model (plain form)": (lambda d: d.__setitem__("client_state", {1: {"scaffold_control": {
            "other": torch.ones(1)}}}), "client_state[1]['scaffold_control']"),
        "residual of another shape": (lambda d: d["client_state"]["kinds"]["ef_residual"].__setitem__(
            "values", torch.ones(1, 3)), "client_state kinds['ef_residual']['values'] must be a torch.float32"),
        "negative bytes": (lambda d: d.__setitem__("bytes_up", -1), "bytes_up"),
        "seconds not a number": (lambda d: d.__setitem__("seconds", "soon"), "seconds"),
        "missing server_state": (lambda d: d.pop("server_state"), "incomplete"),
        "round far beyond its rows": (lambda d: d.__setitem__("round", 10**30), "inconsistent"),
        "old version": (lambda d: d.__setitem__("version", 1), "unknown format"),
    }
    fresh = Simulation(build_spec(_small("compression.uplink=topk", "compression.fraction=0.1")))
    for case, (mutate, needle) in cases.items():
        data = read_checkpoint(tmp_path / "good.pt")
        mutate(data)
        write_checkpoint(tmp_path / "bad.pt", data)
        with pytest.raises(ValueError) as e:
            fresh.load_checkpoint(tmp_path / "bad.pt")
        assert needle in str(e.value) and "\n" not in str(e.value), (case, str(e.value))
        assert fresh.state.round == 0 and fresh.state.metrics == [], case  # nothing restored
    fresh.load_checkpoint(tmp_path / "good.pt")  # and the unmodified file loads
    _same(fresh.state.global_params, sim.state.global_params)


def _saved(sim: Simulation, path: Path) -> dict[str, Any]:
    sim.save_checkpoint(path)
    return read_checkpoint(path)


def test_stage_state_that_does_not_fit_the_run_is_refused_and_nothing_changes(tmp_path) -> None:
    """A checkpoint whose stage state is damaged in content (a forged file with a valid hash) is one error line on
    load, before any round runs; every stage keeps its state."""
    settings = _small("compression.uplink=topk", "compression.downlink=topk", "compression.fraction=0.1")
    sim = Simulation(build_spec(settings))
    sim.run_round()
    sim.run_round()
    sim.save_checkpoint(tmp_path / "good.pt")
    name = next(iter(sim.state.global_params))
    cases = {
        "reference of another shape": (lambda d: d["server_state"]["channel"]["downlink"]["reference"].__setitem__(
            name, torch.ones(1)), "downlink reference"),
        "history of strings": (lambda d: d["server_state"]["channel"]["downlink"].__setitem__("history", ["x"]),
                               "history"),
        "synced round negative": (lambda d: d["server_state"]["channel"]["downlink"]["synced"].__setitem__(0, -1),
                                  "synced round"),
        "a stage this run lacks": (lambda d: d["server_state"].__setitem__("privacy", {"clip": 1.0, "rounds": 1}),
                                   "stages this run does not have"),
    }
    for case, (mutate, needle) in cases.items():
        data = read_checkpoint(tmp_path / "good.pt")
        mutate(data)
        write_checkpoint(tmp_path / "bad.pt", data)
        fresh = Simulation(build_spec(settings))
        with pytest.raises(ValueError) as e:
            fresh.load_checkpoint(tmp_path / "bad.pt")
        assert needle in str(e.value) and "\n" not in str(e.value), (case, str(e.value))
        assert fresh.state.round == 0 and fresh.stage("channel").state_dict() == {}, case
