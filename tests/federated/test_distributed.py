"""Pieces of the multi-process simulation that need no second process: the split of the trained clients, the
block codec between ranks (round trip and every malformed input), the launcher environment, the backend, and
the property the split rests on (a client's update does not depend on which clients share its cohort).
The real two-process runs are in test_distributed_run.py."""

from __future__ import annotations

import pytest
import torch

from spikefed.experiment.config import ConfigError, RunSettings, build_settings
from spikefed.experiment.distributed import torchrun_env
from spikefed.experiment.runner import build_spec
from spikefed.federated.distributed import (BLOCK_HEAD, backend_for, decode_block, encode_block, params_digest,
                                            rank_slice)
from spikefed.federated.serialization import encode_params
from spikefed.federated.simulation import Simulation, client_generator, train_local
from spikefed.federated.types import ClientUpdate

REF = {"fc.weight": torch.zeros(3, 2), "fc.bias": torch.zeros(3)}


def _update(cid: int, control: bool = False, seed: int = 0) -> ClientUpdate:
    g = torch.Generator().manual_seed(seed + cid)
    params = {n: torch.randn(t.shape, generator=g) for n, t in REF.items()}
    delta = {n: torch.randn(t.shape, generator=g, dtype=torch.float64) for n, t in REF.items()} if control else None
    return ClientUpdate(cid, 10 + cid, params, {"loss": 0.25 * cid, "accuracy": 0.5, "steps": 3 + cid,
                                                "partial": cid % 2 == 0}, delta, 3 + cid)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 10, 11, 1000])
@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_rank_slices_cover_the_list_in_order(n: int, world: int) -> None:
    slices = [rank_slice(n, world, r) for r in range(world)]
    joined = [i for lo, hi in slices for i in range(lo, hi)]
    assert joined == list(range(n))  # every client exactly once, in the fixed order
    sizes = [hi - lo for lo, hi in slices]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n


def test_rank_slice_refuses_a_rank_outside_the_world() -> None:
    with pytest.raises(ValueError, match="rank 2 is outside a world of 2"):
        rank_slice(10, 2, 2)


def test_block_round_trip_keeps_every_field_and_bit() -> None:
    ups = [_update(4, control=True), _update(7), _update(9, control=True)]
    ups[1].params["fc.bias"][0] = float("nan")  # a bad update travels as it is: the trust boundary rejects it
    back = decode_block(encode_block(ups), [4, 7, 9], REF)
    for a, b in zip(ups, back):
        assert (b.client_id, b.num_samples, b.steps) == (a.client_id, a.num_samples, a.steps)
        assert b.metrics == a.metrics and [type(v) for v in b.metrics.values()] == [type(v) for v in a.metrics.values()]
        assert list(b.params) == list(a.params)
        for n in a.params:
            assert b.params[n].dtype == a.params[n].dtype
            assert torch.equal(b.params[n].view(torch.int32), a.params[n].view(torch.int32))  # bits, NaN included
        assert (b.control_delta is None) == (a.control_delta is None)
        for n in (a.control_delta or {}):
            assert b.control_delta is not None and torch.equal(b.control_delta[n], a.control_delta[n])
    assert decode_block(encode_block([]), [], REF) == []


def _entries(cid: int = 4) -> dict[str, torch.Tensor]:
    """A valid one-update block, entry by entry (written here, not by encode_block)."""
    return {"0/head": torch.tensor([cid, 14, 7, 0]), "0/metric/loss": torch.tensor(0.5, dtype=torch.float64),
            "0/param/fc.weight": torch.ones(3, 2), "0/param/fc.bias": torch.ones(3)}


def test_a_hand_written_block_parses() -> None:
    (u,) = decode_block(encode_params(_entries(), dtype=None), [4], REF)
    assert (u.client_id, u.num_samples, u.steps, u.metrics, u.control_delta) == (4, 14, 7, {"loss": 0.5}, None)
    assert torch.equal(u.params["fc.weight"], torch.ones(3, 2))


@pytest.mark.parametrize("change, message", [
    (lambda e: e.update({"0/head": torch.tensor([5, 14, 7, 0])}), "is client 5, expected client 4"),
    (lambda e: e.update({"0/head": torch.tensor([4, 14, 7])}), "'head' must be 4 int64 values"),
    (lambda e: e.update({"0/head": torch.tensor([4.0, 14, 7, 0])}), "'head' must be 4 int64 values"),
    (lambda e: e.update({"0/head": torch.tensor([4, -1, 7, 0])}), "out of range"),
    (lambda e: e.update({"0/head": torch.tensor([4, 14, 7, 2])}), "out of range"),
    (lambda e: e.pop("0/head"), "'head' must be"),
    (lambda e: e.update({"0/param/fc.weight": torch.ones(2, 3)}), "expected a float tensor of shape \\(3, 2\\)"),
    (lambda e: e.update({"0/param/fc.bias": torch.ones(3, dtype=torch.int64)}), "expected a float tensor"),
    (lambda e: e.update({"0/param/other": torch.ones(3)}), "update 0: unexpected entry 'param/other'"),
    (lambda e: e.update({"0/metric/loss": torch.ones(2, dtype=torch.float64)}), "metric 'loss' must be one"),
    (lambda e: e.update({"0/control/fc.bias": torch.ones(3)}), "control entries without has_control"),
    (lambda e: e.update({"0/head": torch.tensor([4, 14, 7, 1]), "0/control/fc.bias": torch.ones(3)}),
     "control delta must cover the same parameters"),
    (lambda e: e.update({"1/head": torch.tensor([4, 14, 7, 0])}), "unexpected entry '1/head'"),
    (lambda e: e.update({"x/head": torch.tensor([4, 14, 7, 0])}), "unexpected entry 'x/head'"),
    (lambda e: e.update({"00/head": torch.tensor([4, 14, 7, 0])}), "unexpected entry '00/head'"),
    (lambda e: [e.pop(k) for k in list(e) if k.startswith("0/param/")], "holds no parameters"),
])
def test_malformed_blocks_are_refused_naming_the_rank(change, message) -> None:
    entries = _entries()
    change(entries)
    with pytest.raises(ValueError, match=f"updates from rank 3.*{message}"):
        decode_block(encode_params(entries, dtype=None), [4], REF, rank=3)


def test_a_block_with_missing_updates_or_broken_bytes_is_refused() -> None:
    good = encode_params(_entries(), dtype=None)
    with pytest.raises(ValueError, match=r"holds updates \[0\], expected 2"):
        decode_block(good, [4, 5], REF)
    with pytest.raises(ValueError, match="rank 1: corrupt parameter payload at byte"):
        decode_block(good[:-3], [4], REF, rank=1)
    with pytest.raises(ValueError, match="bad magic"):
        decode_block(b"\x80\x04pickle", [4], REF, rank=1)


def test_metrics_of_another_type_do_not_travel() -> None:
    u = _update(1)
    u.metrics["note"] = "text"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="client 1: metric 'note' is a str"):
        encode_block([u])


def test_digest_sees_a_single_flipped_bit() -> None:
    a = {n: t.clone() for n, t in _update(2).params.items()}
    b = {n: t.clone() for n, t in a.items()}
    assert params_digest(a) == params_digest(b)
    b["fc.bias"].view(torch.int32)[1] ^= 1
    assert params_digest(a) != params_digest(b)


def test_backend_follows_the_device() -> None:
    assert backend_for(None) == "gloo" and backend_for("cpu") == "gloo"
    assert backend_for("auto") == ("nccl" if torch.cuda.is_available() else "gloo")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="asks for CUDA"):
            backend_for("cuda:1")


def test_the_backend_reads_the_runs_device_setting() -> None:
    from types import SimpleNamespace

    from spikefed.experiment.distributed import run_device

    assert run_device(SimpleNamespace(runtime=SimpleNamespace(device="cuda:1"))) == "cuda:1"
    assert run_device(SimpleNamespace(device="auto")) == "auto"
    assert run_device(SimpleNamespace()) is None


def test_torchrun_environment_is_read_and_checked() -> None:
    assert torchrun_env({}) is None
    assert torchrun_env({"WORLD_SIZE": "1", "RANK": "0"}) is None  # one process: a plain run
    env = torchrun_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.2",
                        "MASTER_PORT": "29500"})
    assert env is not None and (env.rank, env.world, env.local_rank, env.addr, env.port) == (1, 2, 1, "10.0.0.2",
                                                                                           29500)
    for bad, message in [({"WORLD_SIZE": "2", "RANK": "x", "MASTER_PORT": "1"}, "RANK='x' is not an integer"),
                         ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_PORT": "1"}, "RANK=2 is outside WORLD_SIZE=2"),
                         ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_PORT is not set"),
                         ({"RANK": "0"}, "WORLD_SIZE is not set"),
                         ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "70000"}, "is not a port")]:
        with pytest.raises(ConfigError, match=message):
            torchrun_env(bad)


def test_a_clients_update_does_not_depend_on_its_cohort() -> None:
    """What makes the split bit-identical: each trained client of a round gets the same bits whether the whole
    cohort trains together (one process) or in slices (ranks), here alone and in halves."""
    settings = build_settings(RunSettings, None, ["federation.rounds=1", "partition.num_clients=8",
                                                  "federation.fraction=1.0", "model.hidden=[16]",
                                                  "local.num_steps=5", "local.batch_size=16", "local.epochs=1"])
    sim = Simulation(build_spec(settings))
    ctx = sim.round_context(1)
    for s in sim.stages:
        s.begin(ctx)
    for s in sim.stages:
        s.configure(ctx)
    trained = list(ctx.plan.trained)
    assert len({sim.clients[c].num_samples % 16 for c in trained}) > 1  # ragged last batches: padding matters

    def train(clients: list[int]) -> list[ClientUpdate]:
        gens = [client_generator(sim.spec.seed, 1, c) for c in clients]
        return train_local(sim.spec, ctx.received, [sim.clients[c] for c in clients], gens, ctx.fit, None, None)

    whole = train(trained)
    for split in ([[c] for c in trained], [trained[:3], trained[3:]]):
        parts = [u for chunk in split for u in train(chunk)]
        for a, b in zip(whole, parts):
            assert a.client_id == b.client_id and a.metrics == b.metrics
            assert all(torch.equal(a.params[n], b.params[n]) for n in a.params), a.client_id


def test_block_head_names_match_the_docs() -> None:
    assert BLOCK_HEAD == ("client_id", "num_samples", "steps", "has_control")
