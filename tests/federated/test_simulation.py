"""Federated engine: seed formulas (FedAvg = centralized step), reproducibility, resume, bytes, rejection."""

from __future__ import annotations

import pytest
import torch

from spikefed.data import load_digits_split
from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.cohort import ClientData, train_cohort
from spikefed.federated.serialization import encode_params
from spikefed.federated.simulation import Simulation
from spikefed.federated.strategies import make_strategy
from spikefed.federated.types import FitInstructions, params_of
from spikefed.snn.losses import mse_count_loss
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig


def _small(*overrides: str) -> RunSettings:
    base = ["partition.num_clients=6", "partition.min_size=5", "federation.rounds=3", "federation.fraction=0.5",
            "model.hidden=[32]", "local.num_steps=6", "local.epochs=1"]
    return build_settings(RunSettings, None, base + list(overrides))


def test_fedavg_full_batch_one_epoch_equals_centralized_step() -> None:
    """Seed 000/003: sum_k p_k (w - lr grad L_k(w)) = w - lr grad L(w) on the union, p_k = n_k / n."""
    d = load_digits_split(seed=0)
    x, y = d.x_train.double(), d.y_train
    sizes = [40, 17, 63]
    clients, start = [], 0
    for i, n in enumerate(sizes):
        clients.append(ClientData(i, x[start:start + n], y[start:start + n]))
        start += n
    model = SpikingMLP([64, 20, 10], generator=torch.Generator().manual_seed(1)).double()
    w = params_of(model)
    lr = 0.05
    cfg = TrainConfig(epochs=1, batch_size=1000, lr=lr, optimizer="sgd", momentum=0.0, num_steps=8)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    updates = train_cohort(model, w, clients, gens, cfg, FitInstructions(1))
    new = make_strategy("fedavg").aggregate_fit(1, w, updates, None)
    # centralized: one gradient step on the union (mean loss over all samples)
    xu, yu = x[:start], y[:start]
    out = model(xu.unsqueeze(0).expand(8, *xu.shape))
    loss = mse_count_loss(out.output, yu)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for (name, p), g in zip(model.named_parameters(), grads):
        assert torch.allclose(new[name], p.detach() - lr * g, atol=1e-12), name


def test_fedavg_of_identical_clients_returns_that_client() -> None:
    d = load_digits_split(seed=0)
    same = [ClientData(i, d.x_train[:30], d.y_train[:30]) for i in range(4)]
    model = SpikingMLP([64, 16, 10], generator=torch.Generator().manual_seed(0))
    w = params_of(model)
    cfg = TrainConfig(epochs=2, batch_size=8, num_steps=5)
    updates = train_cohort(model, w, same, [torch.Generator().manual_seed(7) for _ in range(4)], cfg,
                           FitInstructions(1))
    assert all(torch.equal(updates[0].params[n], u.params[n]) for u in updates for n in w)
    new = make_strategy("fedavg").aggregate_fit(1, w, updates, None)
    for n in w:
        assert torch.allclose(new[n], updates[0].params[n], atol=1e-7)
        assert not torch.allclose(new[n], w[n])  # the clients did move


def test_same_seed_same_numbers_and_resume_is_bit_identical(tmp_path) -> None:
    settings = _small("federation.rounds=4")
    a = Simulation(build_spec(settings))
    rows_a = [a.run_round() for _ in range(4)]
    b = Simulation(build_spec(settings))
    for _ in range(2):
        b.run_round()
    ckpt = tmp_path / "c.pt"
    b.save_checkpoint(ckpt)
    c = Simulation(build_spec(settings))
    c.load_checkpoint(ckpt)
    rows_c = [c.run_round() for _ in range(2)]
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [strip(r) for r in rows_a[2:]] == [strip(r) for r in rows_c]
    for n in a.state.global_params:
        assert torch.equal(a.state.global_params[n], c.state.global_params[n])
    other = Simulation(build_spec(_small("federation.rounds=4", "seed=1")))
    assert strip(other.run_round()) != strip(rows_a[0])


def test_bytes_are_serialized_payload_lengths() -> None:
    sim = Simulation(build_spec(_small()))
    row = sim.run_round()
    size = len(encode_params(params_of(sim.spec.model)))  # a float32 delta has the model's layout
    assert row["clients"] == 3
    assert row["bytes_up"] == 3 * size
    assert row["bytes_down"] == 3 * size
    n_params = sum(p.numel() for p in sim.spec.model.parameters())
    assert 4 * n_params < size < 4 * n_params + 1024  # raw float32 values plus a small header


def test_sampling_fraction_and_min_clients() -> None:
    sim = Simulation(build_spec(_small("federation.fraction=0.1", "federation.min_clients=2")))
    picks = [sim.sample_clients(r) for r in range(1, 20)]
    assert all(len(p) == 2 and len(set(p)) == 2 for p in picks)
    assert len({tuple(p) for p in picks}) > 3  # varies by round
    assert picks == [sim.sample_clients(r) for r in range(1, 20)]  # seeded


def test_bad_updates_are_rejected_not_averaged() -> None:
    sim = Simulation(build_spec(_small("federation.max_update_norm=1e-9")))
    before = {n: v.clone() for n, v in sim.state.global_params.items()}
    row = sim.run_round()
    assert row["accepted"] == 0 and row["rejected"] == 3
    assert {r["client"] for r in row["rejections"]} == set(sim.sample_clients(1))
    assert all("norm" in r["reason"] for r in row["rejections"])
    for n in before:
        assert torch.equal(before[n], sim.state.global_params[n])


@pytest.mark.parametrize("strategy", ["fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "scaffold"])
def test_every_strategy_runs_and_checkpoints(strategy: str, tmp_path) -> None:
    extra = ["local.optimizer=sgd", "local.lr=0.05"] if strategy == "scaffold" else []
    settings = _small(f"federation.strategy={strategy}", *extra)
    sim = Simulation(build_spec(settings))
    initial = {n: v.clone() for n, v in sim.state.global_params.items()}
    sim.run_round()
    sim.save_checkpoint(tmp_path / "c.pt")
    r2 = sim.run_round()
    again = Simulation(build_spec(settings))
    again.load_checkpoint(tmp_path / "c.pt")
    r2b = again.run_round()
    assert r2["accuracy"] == r2b["accuracy"] and r2["loss"] == r2b["loss"]
    assert any(not torch.equal(initial[n], sim.state.global_params[n]) for n in initial)
    for n in initial:
        assert torch.equal(sim.state.global_params[n], again.state.global_params[n])
    if strategy == "scaffold":
        held = [s["scaffold_control"] for s in sim.state.client_state.values() if "scaffold_control" in s]
        assert len(held) > 0  # client control variates are kept with the clients (and checkpointed)
        resumed = again.state.client_state
        assert all(torch.equal(t, resumed[c]["scaffold_control"][n]) for c, s in sim.state.client_state.items()
                   for n, t in s.get("scaffold_control", {}).items())


def test_cohort_and_sequential_engines_agree() -> None:
    a = Simulation(build_spec(_small("federation.engine=cohort")))
    b = Simulation(build_spec(_small("federation.engine=sequential")))
    ra, rb = a.run_round(), b.run_round()
    assert ra["bytes_up"] == rb["bytes_up"]
    for n in a.state.global_params:
        assert torch.allclose(a.state.global_params[n], b.state.global_params[n], atol=1e-5)


def test_corrupt_and_mismatched_checkpoints(tmp_path) -> None:
    sim = Simulation(build_spec(_small()))
    sim.run_round()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        Simulation(build_spec(_small())).load_checkpoint(bad)
    good = tmp_path / "good.pt"
    sim.save_checkpoint(good, {"sha256": "a"})
    with pytest.raises(ValueError, match="different experiment"):
        Simulation(build_spec(_small())).load_checkpoint(good, {"sha256": "b"})
    with pytest.raises(ValueError, match="different model"):
        Simulation(build_spec(_small("model.hidden=[8]"))).load_checkpoint(good)


def test_energy_and_synops_match_hand_count() -> None:
    sim = Simulation(build_spec(_small()))
    row = sim.run_round()
    model, data = sim.spec.model, sim.spec.data
    x = data.x_test.unsqueeze(0).expand(6, *data.x_test.shape)
    with torch.no_grad():
        out = model(x)
    n = data.x_test.shape[0]
    macs = float((x != 0).sum()) * 32 / n  # direct-current input: non-binary -> multiply-accumulates
    acs = float(out.hidden[0].sum()) * 10 / n  # hidden spikes -> accumulates
    assert row["synops"] == pytest.approx(macs + acs)
    assert row["energy_j"] == pytest.approx(0.9e-12 * acs + 4.6e-12 * macs)
    assert row["spikes"] == pytest.approx(float(sum(h.sum() for h in out.hidden)) / n)


@pytest.mark.slow
def test_default_run_reaches_095() -> None:
    """Must-show: default spikefed run (20 clients, Dirichlet 0.5, 10 per round, FedAvg) >= 0.95 in 30 rounds."""
    sim = Simulation(build_spec(RunSettings()))
    rows = [sim.run_round() for _ in range(30)]
    assert rows[-1]["accuracy"] >= 0.95


def test_scaffold_beats_fedavg_on_a_convex_skewed_problem() -> None:
    """SCAFFOLD's control variates remove client drift: on a convex model (linear read-out, CE on the last
    membrane step) under strong label skew with many local steps it reaches a lower test loss than FedAvg."""
    base = ["partition.alpha=0.1", "partition.num_clients=10", "federation.fraction=1.0", "federation.rounds=8",
            "local.optimizer=sgd", "local.lr=0.05", "local.momentum=0.0", "local.epochs=10", "model.hidden=[]",
            "model.readout=membrane", "local.loss=ce_membrane", "local.membrane_reduction=last",
            "local.num_steps=2"]
    losses = {}
    for strategy in ("fedavg", "scaffold"):
        sim = Simulation(build_spec(build_settings(RunSettings, None, base + [f"federation.strategy={strategy}"])))
        rows = [sim.run_round() for _ in range(8)]
        losses[strategy] = rows[-1]["loss"]
    assert losses["scaffold"] < losses["fedavg"]
