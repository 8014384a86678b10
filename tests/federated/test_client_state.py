"""The compact per-client state store against a plain ``dict[int, dict[str, Any]]`` reference, in memory and in
files, through checkpoints, inside the round's stages, and with malformed checkpoints."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import Run, build_spec
from spikefed.federated.checkpoint import read_checkpoint, write_checkpoint
from spikefed.federated.client_state import STATE_DIR, ClientStateStore
from spikefed.federated.simulation import Simulation

LAYOUT = {"w": (3, 4), "b": (4,)}
D = 16


def _params(gen: torch.Generator, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {n: torch.randn(s, generator=gen).to(dtype) for n, s in LAYOUT.items()}


def _same_state(store: ClientStateStore, ref: dict[int, dict[str, Any]]) -> None:
    assert sorted(store) == sorted(ref)
    for c, held in ref.items():
        assert sorted(store[c]) == sorted(held)
        for key, value in held.items():
            got = store[c][key]
            if isinstance(value, dict):
                assert list(got) == list(value)
                for n in value:  # bit-identical, dtype kept
                    assert got[n].dtype == value[n].dtype and torch.equal(got[n], value[n]), (c, key, n)
            else:
                assert got == value


def _drive(store: ClientStateStore, ref: dict[int, dict[str, Any]], seed: int, steps: int,
           commit_every: int = 0) -> None:
    """The same random writes, reads and deletions on the store and on the reference dict."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        c = int(rng.integers(0, store.num_clients))
        op = rng.integers(0, 10)
        if op < 6:
            kind = ("ef_residual", "scaffold_control")[int(rng.integers(0, 2))]
            value = _params(gen)
            store.setdefault(c, {})[kind] = value
            ref.setdefault(c, {})[kind] = {n: t.clone() for n, t in value.items()}
        elif op < 8:
            store.setdefault(c, {})["continual_task"] = int(rng.integers(0, 3))
            ref.setdefault(c, {})["continual_task"] = store[c]["continual_task"]
        elif c in ref:  # delete one key, or the whole client
            if op == 8:
                key = sorted(ref[c])[0]
                del store[c][key], ref[c][key]
                if not ref[c]:
                    del ref[c]
            else:
                del store[c], ref[c]
        assert (c in store) == (c in ref)
        if commit_every and step % commit_every == 0:
            store.committed()


@pytest.mark.parametrize("limit", [None, 0, 3 * 4 * D])  # memory; files from the start; spilling on the way
def test_store_equals_a_plain_dict_and_round_trips_through_checkpoints(tmp_path: Path, limit: int | None) -> None:
    store = ClientStateStore(40, LAYOUT, tmp_path / STATE_DIR if limit is not None else None,
                             memory_limit=limit or 0)
    ref: dict[int, dict[str, Any]] = {}
    _drive(store, ref, seed=1, steps=300, commit_every=7)
    _same_state(store, ref)
    assert store.as_dict().keys() == ref.keys()
    assert store.in_file == (limit is not None)
    write_checkpoint(tmp_path / "checkpoint.pt", {"client_state": store.checkpoint_tree(tmp_path)})
    store.committed()
    back = ClientStateStore.from_tree(read_checkpoint(tmp_path / "checkpoint.pt")["client_state"], 40, LAYOUT,
                                      tmp_path)
    _same_state(back, ref)
    store.close()
    _drive(back, ref, seed=2, steps=100)  # the loaded store goes on like the dict
    _same_state(back, ref)
    back.close()


def test_a_checkpoint_stays_valid_while_the_next_round_writes_the_files(tmp_path: Path) -> None:
    """Copy on write: rows written after a checkpoint never overwrite rows it references, so a crash before the
    next checkpoint resumes from exactly the checkpointed values; freed rows are reused (bounded file)."""
    store = ClientStateStore(20, LAYOUT, tmp_path / STATE_DIR, memory_limit=0)
    ref: dict[int, dict[str, Any]] = {}
    _drive(store, ref, seed=3, steps=80)
    write_checkpoint(tmp_path / "checkpoint.pt", {"client_state": store.checkpoint_tree(tmp_path)})
    store.committed()
    saved = {c: {k: (dict(v) if isinstance(v, dict) else v) for k, v in held.items()} for c, held in ref.items()}
    holders = len([c for c in ref if "ef_residual" in ref[c]])
    for _ in range(3):  # three "rounds" rewriting every holder, then a crash (no checkpoint)
        gen = torch.Generator().manual_seed(9)
        for c in list(ref):
            if "ef_residual" in ref[c]:
                store[c]["ef_residual"] = _params(gen)
    rows = (tmp_path / STATE_DIR / "ef_residual.bin").stat().st_size // (D * 4)
    assert rows <= 2 * holders + 1  # referenced rows + one round's rewrites (the free rows are reused)
    store.close()
    back = ClientStateStore.from_tree(read_checkpoint(tmp_path / "checkpoint.pt")["client_state"], 20, LAYOUT,
                                      tmp_path)
    _same_state(back, saved)
    back.close()


def test_memory_bound_of_the_rows(tmp_path: Path) -> None:
    store = ClientStateStore(1000, LAYOUT)
    gen = torch.Generator().manual_seed(0)
    for c in range(0, 1000, 10):  # 100 clients hold a residual
        store.setdefault(c, {})["ef_residual"] = _params(gen)
    assert 100 * D * 4 <= store.resident_bytes <= 2 * 100 * D * 4
    store.set_directory(tmp_path / STATE_DIR, memory_limit=0)
    assert store.in_file and store.resident_bytes == 0
    assert (tmp_path / STATE_DIR / "ef_residual.bin").stat().st_size == 100 * D * 4


def test_store_refuses_state_that_does_not_fit() -> None:
    store = ClientStateStore(5, LAYOUT)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"client 1: state names \['b', 'w'\]"):
        store.setdefault(1, {})["ef_residual"] = dict(reversed(list(_params(gen).items())))
    store.setdefault(1, {})["ef_residual"] = _params(gen)
    with pytest.raises(ValueError, match=r"client 2: state \['w'\] is not a torch.float32 tensor"):
        store.setdefault(2, {})["ef_residual"] = _params(gen, torch.float64)
    with pytest.raises(KeyError):
        store.setdefault(5, {})
    with pytest.raises(ValueError, match="at least one client"):
        ClientStateStore(0, LAYOUT)


def _small(*overrides: str) -> RunSettings:
    base = ["partition.num_clients=12", "partition.min_size=5", "federation.rounds=4", "federation.fraction=0.5",
            "model.hidden=[8]", "local.num_steps=4", "local.epochs=1"]
    return build_settings(RunSettings, None, base + list(overrides))


FEATURES = [
    ("compression.uplink=topk", "compression.fraction=0.1"),  # error feedback
    ("federation.strategy=scaffold", "local.optimizer=sgd", "local.lr=0.05", "compression.uplink=topk",
     "compression.fraction=0.2", "compression.momentum_correction=0.5"),  # SCAFFOLD + DGC velocity + residual
]


@pytest.mark.parametrize("extra", FEATURES)
def test_stages_with_the_store_equal_the_plain_dict(tmp_path: Path, extra: tuple[str, ...]) -> None:
    settings = _small(*extra)
    plain = Simulation(build_spec(settings))
    plain.state.client_state = {}  # the reference: per-client dicts, as before the store
    compact = Simulation(build_spec(settings))
    compact.state.client_state.set_directory(tmp_path / STATE_DIR, memory_limit=0)  # in files from the start
    for _ in range(3):
        a, b = plain.run_round(), compact.run_round()
        assert {**a, "seconds": 0} == {**b, "seconds": 0}
    assert compact.state.client_state.in_file
    assert plain.state.global_params.keys() == compact.state.global_params.keys()
    assert all(torch.equal(t, compact.state.global_params[n]) for n, t in plain.state.global_params.items())
    _same_state(compact.state.client_state, plain.state.client_state)


@pytest.mark.slow
@pytest.mark.parametrize("extra", FEATURES)
def test_run_resumed_from_files_equals_the_straight_run(tmp_path: Path, extra: tuple[str, ...]) -> None:
    straight = Run(_small(*extra), tmp_path / "straight")
    while not straight.done:
        straight.step()
    assert not straight.sim.state.client_state.in_file  # 256 MiB default: in memory
    filed = _small(*extra, "federation.client_state_memory_mb=0")
    part = Run(_small(*extra, "federation.client_state_memory_mb=0", "federation.rounds=2"), tmp_path / "filed")
    part.step(), part.step()
    assert (tmp_path / "filed" / STATE_DIR / "ef_residual.bin").is_file()
    tree = read_checkpoint(tmp_path / "filed" / "checkpoint.pt")["client_state"]
    assert "file" in tree["kinds"]["ef_residual"] and "values" not in tree["kinds"]["ef_residual"]
    part.sim.run_round()  # a round whose checkpoint never gets written (a crash): the files change
    part.sim.state.client_state.close()
    resumed = Run(filed, tmp_path / "filed", resume=True)
    while not resumed.done:
        resumed.step()
    rows_a, rows_b = straight.sim.state.metrics, resumed.sim.state.metrics
    assert [{**r, "seconds": 0, "elapsed_seconds": 0, "session": 0} for r in rows_a] == \
        [{**r, "seconds": 0, "elapsed_seconds": 0, "session": 0} for r in rows_b]
    _same_state(resumed.sim.state.client_state, straight.sim.state.client_state.as_dict())


def test_malformed_client_state_in_a_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    settings = _small("compression.uplink=topk", "compression.fraction=0.1")
    sim = Simulation(build_spec(settings))
    sim.state.client_state.set_directory(tmp_path / STATE_DIR, memory_limit=0)
    sim.run_round()
    sim.save_checkpoint(tmp_path / "checkpoint.pt")
    good = read_checkpoint(tmp_path / "checkpoint.pt")
    node = good["client_state"]["kinds"]["ef_residual"]
    first_row, first_client = int(node["rows"][0]), int(node["clients"][0])
    width = sum(p.numel() for p in sim.spec.model.parameters())
    bin_path = tmp_path / STATE_DIR / "ef_residual.bin"
    original = bin_path.read_bytes()
    kinds = "client_state kinds['ef_residual']"

    def flip(_: dict[str, Any]) -> None:
        raw = bytearray(original)
        raw[first_row * width * 4 + 5] ^= 0x40
        bin_path.write_bytes(bytes(raw))

    def nan_row(_: dict[str, Any]) -> None:  # a forged file whose CRC matches: the value check still refuses it
        import zlib
        raw = bytearray(original)
        raw[first_row * width * 4:first_row * width * 4 + 4] = np.float32(math.nan).tobytes()
        bin_path.write_bytes(bytes(raw))
        row = bytes(raw[first_row * width * 4:(first_row + 1) * width * 4])
        node_ = _["client_state"]["kinds"]["ef_residual"]
        node_["crc"][0] = zlib.crc32(row)

    cases = {
        "damaged row": (flip, f"row {first_row} of {bin_path} (client {first_client}) does not match its CRC-32"),
        "non-finite row": (nan_row, "holds a non-finite value"),
        "truncated file": (lambda d: bin_path.write_bytes(original[:width * 4]), "the checkpoint references row"),
        "missing file": (lambda d: bin_path.unlink(), "cannot read"),
        "other file name": (lambda d: d["client_state"]["kinds"]["ef_residual"].__setitem__("file", "../x.bin"),
                            "must be ef_residual.bin"),
        "unknown kind": (lambda d: d["client_state"]["kinds"].__setitem__("momentum", {}), "unknown kind"),
        "bad dtype": (lambda d: d["client_state"]["kinds"]["ef_residual"].__setitem__("dtype", "int8"),
                      "dtype must be one of"),
        "missing crc": (lambda d: d["client_state"]["kinds"]["ef_residual"].pop("crc"), "must hold exactly"),
        "float rows": (lambda d: d["client_state"]["kinds"]["ef_residual"].__setitem__("rows", torch.zeros(2)),
                       f"{kinds}['rows'] must be a one-dimensional int64 tensor"),
        "repeated client": (lambda d: d["client_state"]["kinds"]["ef_residual"]["clients"].fill_(first_client),
                            "repeats a client"),
        "repeated row": (lambda d: d["client_state"]["kinds"]["ef_residual"]["rows"].fill_(first_row),
                         "negative or repeated row"),
        "short crc": (lambda d: d["client_state"]["kinds"]["ef_residual"].__setitem__("crc", torch.zeros(
            1, dtype=torch.int64)), "same length"),
        "extra key": (lambda d: d["client_state"].__setitem__("more", 1), "exactly format, kinds and extras"),
        "tensor kind in extras": (lambda d: d["client_state"]["extras"].__setitem__(1, {"ef_residual": 1}),
                                  "extras[1] must map plain keys"),
        "extras of an unknown client": (lambda d: d["client_state"]["extras"].__setitem__(12, {"t": 1}),
                                        "outside 0..11"),
    }
    for case, (mutate, needle) in cases.items():
        data = read_checkpoint(tmp_path / "checkpoint.pt")
        mutate(data)
        write_checkpoint(tmp_path / "checkpoint.bad", data)
        fresh = Simulation(build_spec(settings))
        with pytest.raises(ValueError) as e:
            fresh.load_checkpoint(tmp_path / "checkpoint.bad")
        assert needle in str(e.value) and "\n" not in str(e.value), (case, str(e.value))
        assert fresh.state.round == 0 and len(fresh.state.client_state) == 0, case
        bin_path.write_bytes(original)
    sim.state.client_state.close()
