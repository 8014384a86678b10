"""Client faults: dropout, stragglers and the round deadline, FedNova normalization, all-dropped rounds."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from spikefed.experiment.config import ConfigError, RunSettings, build_settings
from spikefed.experiment.runner import build_spec, fault_spec, fingerprint
from spikefed.federated.checkpoint import read_checkpoint, write_checkpoint
from spikefed.federated.cohort import client_schedule, planned_steps, train_clients
from spikefed.federated.faults import FaultSpec, client_speed, fednova_rescale, fednova_scales, plan_round
from spikefed.federated.simulation import Simulation
from spikefed.seeding import Purpose, torch_generator
from spikefed.federated.strategies import make_strategy
from spikefed.federated.types import ClientUpdate, FitInstructions
from spikefed.manifold import POSITIVE, circular
from spikefed.snn.train import TrainConfig

BASE = ["partition.num_clients=6", "partition.min_size=5", "federation.rounds=3", "federation.fraction=0.5",
        "model.hidden=[16]", "local.num_steps=4", "local.epochs=1"]


def _settings(*overrides: str) -> RunSettings:
    return build_settings(RunSettings, None, BASE + list(overrides))


def _gens(seed: int, rnd: int, clients: list[int]) -> list[torch.Generator]:
    return [torch_generator(seed, Purpose.CLIENT, rnd, c) for c in clients]


def _rngs(seed: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng([seed, i]) for i in range(n)]


# -- dropout ------------------------------------------------------------------------------------------------

def test_dropout_fraction_is_p_and_seeded() -> None:
    """Over 400 rounds x 3 sampled clients the dropped fraction is p = 0.3 within 4 binomial sigmas."""
    sim = Simulation(build_spec(_settings("faults.dropout=0.3", "federation.rounds=400")))
    plans = [sim.stage("faults").plan(sim.round_context(r)) for r in range(1, 401)]
    sampled = sum(len(p.sampled) for p in plans)
    dropped = sum(len(p.dropped) for p in plans)
    p = 0.3
    assert abs(dropped / sampled - p) < 4 * math.sqrt(p * (1 - p) / sampled)
    for plan in plans:  # partition of the sampled clients; nobody is late without a deadline
        assert sorted(plan.trained + plan.dropped) == plan.sampled and not plan.late and plan.active
    again = Simulation(build_spec(_settings("faults.dropout=0.3", "federation.rounds=400")))
    assert [again.stage("faults").plan(again.round_context(r)).dropped for r in range(1, 401)] == [
        p.dropped for p in plans]
    # the dropout draws do not depend on the straggler settings (u is drawn before the jitter)
    other = Simulation(build_spec(_settings("faults.dropout=0.3", "faults.deadline=3", "faults.straggler_sigma=1",
                                            "faults.jitter_sigma=0.5")))
    assert [other.stage("faults").plan(other.round_context(r)).dropped for r in range(1, 401)] == [
        p.dropped for p in plans]
    seed1 = Simulation(build_spec(_settings("faults.dropout=0.3", "seed=1")))
    assert [seed1.stage("faults").plan(seed1.round_context(r)).dropped for r in range(1, 60)] != [
        p.dropped for p in plans[:59]]


def test_dropped_clients_never_enter_the_aggregate() -> None:
    """The new global model is the FedAvg mean sum_k n_k w_k / sum_k n_k over the survivors only."""
    for seed in range(50):  # the first seed whose round 1 has both dropped clients and survivors
        settings = _settings("faults.dropout=0.5", "federation.fraction=1.0", f"seed={seed}")
        sim = Simulation(build_spec(settings))
        plan = sim.stage("faults").plan(sim.round_context(1))
        if 2 <= len(plan.trained) and plan.dropped:
            break
    else:  # pragma: no cover
        pytest.fail("no seed with both dropped and surviving clients")
    spec = sim.spec
    w0 = {n: v.clone() for n, v in sim.state.global_params.items()}
    row = sim.run_round()
    assert row["dropped"] == len(plan.dropped) and row["accepted"] == len(plan.trained) and row["late"] == 0
    assert row["clients"] == 6 and row["bytes_up"] == row["bytes_down"] // 6 * len(plan.trained)
    # by hand: train every sampled client from w0 with its own generator, average the survivors
    everyone = plan.sampled
    ups = train_clients(spec.engine, spec.model, w0, [sim.clients[c] for c in everyone], _gens(seed, 1, everyone),
                        spec.local, FitInstructions(1))
    by_id = {u.client_id: u for u in ups}

    def mean(ids: list[int]) -> dict[str, torch.Tensor]:
        n = torch.tensor([float(by_id[c].num_samples) for c in ids], dtype=torch.float64)
        return {k: sum(n[i] * by_id[c].params[k].double() for i, c in enumerate(ids)) / n.sum() for k in w0}

    survivors, all_clients = mean(plan.trained), mean(everyone)
    for k in w0:
        assert torch.allclose(sim.state.global_params[k].double(), survivors[k], atol=1e-6), k
    assert max(float((sim.state.global_params[k].double() - all_clients[k]).abs().max()) for k in w0) > 1e-4


# -- deadline and stragglers --------------------------------------------------------------------------------

def test_plan_round_deadline_policies() -> None:
    """Step time t = s exp(sigma_j z); completion T = tau t; late iff T > D; FedNova budget min(floor(D/t), tau-1)."""
    planned, speeds = [3, 5, 8, 12, 4], [1.0, 1.0, 1.0, 2.0, 10.0]
    sampled = [0, 1, 2, 3, 4]
    drop = plan_round(FaultSpec(deadline=5.0), sampled, planned, speeds, _rngs(0, 5))
    assert drop.late == [2, 3, 4] and drop.trained == [0, 1] and drop.budgets == [3, 5] and not drop.partial
    assert drop.completion == {0: 3.0, 1: 5.0, 2: 8.0, 3: 24.0, 4: 40.0}  # T == D is on time
    nova = plan_round(FaultSpec(deadline=5.0, late_policy="fednova"), sampled, planned, speeds, _rngs(0, 5))
    # client 4: one step takes 10 > D, nothing to return -> late, not trained
    assert nova.late == [2, 3, 4] and nova.partial == [2, 3]
    assert nova.trained == [0, 1, 2, 3] and nova.budgets == [3, 5, 5, 2]
    assert nova.metrics([]) == {"dropped": 0, "late": 3, "partial": 2, "mean_tau": None}
    # no deadline: stragglers are slow but never late
    free = plan_round(FaultSpec(straggler_sigma=2.0, jitter_sigma=1.0), sampled, planned, speeds, _rngs(0, 5))
    assert free.trained == sampled and free.budgets == planned and not free.late
    # jitter: the same generator draws u then z, so T = tau s exp(sigma_j z) with that z
    ref = np.random.default_rng([7, 0])
    u, z = ref.random(), ref.standard_normal()
    plan = plan_round(FaultSpec(jitter_sigma=0.5, dropout=u + 1e-9), [9], [6], [1.5], _rngs(7, 1))
    assert plan.dropped == [9] and not plan.completion  # dropped iff u < dropout
    plan = plan_round(FaultSpec(jitter_sigma=0.5, dropout=u), [9], [6], [1.5], _rngs(7, 1))
    assert plan.completion[9] == pytest.approx(6 * 1.5 * math.exp(0.5 * z))
    with pytest.raises(ValueError, match="one planned"):
        plan_round(FaultSpec(), [0, 1], [1], [1.0], _rngs(0, 2))


def test_speed_factor_is_lognormal_with_median_one() -> None:
    speeds = np.array([client_speed(0.5, np.random.default_rng([3, c])) for c in range(4000)])
    assert abs(np.median(speeds) - 1.0) < 0.05
    assert abs(np.log(speeds).std() - 0.5) < 0.03
    # raising sigma stretches the same z: the order of clients by speed does not change
    faster = np.array([client_speed(1.0, np.random.default_rng([3, c])) for c in range(4000)])
    assert np.array_equal(np.argsort(speeds), np.argsort(faster))


def test_fault_spec_validation() -> None:
    for bad in ({"dropout": 1.5}, {"dropout": -0.1}, {"deadline": 0.0}, {"deadline": math.inf},
                {"straggler_sigma": -1.0}, {"jitter_sigma": math.nan}, {"late_policy": "wait"}):
        with pytest.raises(ValueError):
            FaultSpec(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="faults.late_policy"):
        _settings("faults.late_policy=wait")
    with pytest.raises(ConfigError, match="faults.dropout"):
        _settings("faults.dropout=2")


def test_planned_steps_matches_the_schedule() -> None:
    for n, epochs, batch, cap in [(1, 1, 32, None), (33, 2, 32, None), (100, 3, 7, 10), (64, 1, 32, 5)]:
        cfg = TrainConfig(epochs=epochs, batch_size=batch, local_steps=cap)
        full = client_schedule(n, cfg, torch.Generator().manual_seed(0))
        assert planned_steps(n, cfg) == len(full)
        budgeted = client_schedule(n, cfg, torch.Generator().manual_seed(0), budget=2)
        assert len(budgeted) == min(2, len(full))
        assert all(torch.equal(a, b) for a, b in zip(budgeted, full))  # a prefix, drawn identically


def test_step_budgets_are_a_prefix_of_local_training() -> None:
    """A client trained with a budget of b steps ends where the same client stops after b steps alone
    (cohort and sequential engines; the others in the cohort are unaffected)."""
    sim = Simulation(build_spec(_settings()))
    spec, w0 = sim.spec, sim.state.global_params
    clients = [sim.clients[c] for c in (0, 1, 2)]
    budgets = [2, None, 1]
    capped = [TrainConfig(**{**spec.local.to_dict(), "local_steps": b}) for b in budgets]
    for engine in ("cohort", "sequential"):
        ups = train_clients(engine, spec.model, w0, clients, _gens(0, 1, [0, 1, 2]), spec.local, FitInstructions(1),
                            step_budgets=budgets)
        assert [u.steps for u in ups] == [2, planned_steps(clients[1].num_samples, spec.local), 1]
        for c, cfg, u in zip(clients, capped, ups):
            alone = train_clients(engine, spec.model, w0, [c], _gens(0, 1, [c.client_id]), cfg, FitInstructions(1))[0]
            for n in w0:
                assert torch.allclose(u.params[n], alone.params[n], atol=1e-6), (engine, c.client_id, n)


def test_deadline_drop_and_fednova_in_the_simulation() -> None:
    common = ["faults.deadline=4", "faults.straggler_sigma=0.7", "federation.fraction=1.0", "federation.rounds=4"]
    drop = Simulation(build_spec(_settings(*common)))
    nova = Simulation(build_spec(_settings(*common, "faults.late_policy=fednova")))
    saw_partial = False
    for r in range(1, 5):
        plan_d = drop.stage("faults").plan(drop.round_context(r))
        plan_n = nova.stage("faults").plan(nova.round_context(r))
        assert plan_d.late == plan_n.late  # same draws; only what happens to late work differs
        row_d, row_n = drop.run_round(), nova.run_round()
        assert row_d["late"] == len(plan_d.late) and row_d["accepted"] == len(plan_d.trained)
        assert row_d["partial"] == 0 and set(plan_d.trained).isdisjoint(plan_d.late)
        size = row_d["bytes_down"] // row_d["clients"]
        assert row_d["bytes_up"] == size * len(plan_d.trained) and row_n["bytes_up"] == size * len(plan_n.trained)
        assert row_n["partial"] == len(plan_n.partial) and row_n["accepted"] == len(plan_n.trained)
        assert plan_n.budgets is not None
        assert row_n["mean_tau"] == pytest.approx(np.mean(plan_n.budgets))
        saw_partial |= bool(plan_n.partial)
    assert saw_partial  # the settings do produce partial work


# -- FedNova ------------------------------------------------------------------------------------------------

def _update(cid: int, n: int, steps: int, params: dict[str, torch.Tensor]) -> ClientUpdate:
    return ClientUpdate(cid, n, params, {}, None, steps)


def test_fednova_matches_the_formula_on_synthetic_deltas() -> None:
    """x_new = x + tau_eff sum_k p_k (x_k - x) / tau_k, tau_eff = sum_k p_k tau_k, p_k = n_k / n, in each
    parameter's chart (log for positive values, wrapped difference for circular ones)."""
    g = torch.Generator().manual_seed(0)
    x = {"w": torch.randn(3, 4, generator=g, dtype=torch.float64),
         "thr": torch.rand(5, generator=g, dtype=torch.float64) + 0.5,
         "delay": torch.tensor([0.5, 9.5, 5.0], dtype=torch.float64)}
    manifolds = {"thr": POSITIVE, "delay": circular(10.0)}
    n, taus = [10, 20, 30], [1, 3, 6]
    clients = [{"w": x["w"] + torch.randn(3, 4, generator=g, dtype=torch.float64),
                "thr": x["thr"] * torch.exp(0.3 * torch.randn(5, generator=g, dtype=torch.float64)),
                "delay": torch.remainder(x["delay"] + torch.tensor([0.4, 0.6, -0.2], dtype=torch.float64) * (k + 1),
                                         10.0)}
               for k in range(3)]
    updates = [_update(k, n[k], taus[k], clients[k]) for k in range(3)]
    p = np.array(n, dtype=np.float64) / sum(n)
    tau_eff = float(np.dot(p, taus))
    scales, te = fednova_scales(taus, p)
    assert te == pytest.approx(tau_eff) and scales == pytest.approx([tau_eff / t for t in taus])
    strategy = make_strategy("fedavg")
    new = strategy.aggregate_fit(1, x, fednova_rescale(updates, x, strategy.client_weights(updates), manifolds),
                                 manifolds)
    d_w = sum(p[k] * (clients[k]["w"] - x["w"]) / taus[k] for k in range(3))
    assert torch.allclose(new["w"], x["w"] + tau_eff * d_w, atol=1e-12)
    d_log = sum(p[k] * (clients[k]["thr"].log() - x["thr"].log()) / taus[k] for k in range(3))
    assert torch.allclose(new["thr"], torch.exp(x["thr"].log() + tau_eff * d_log), atol=1e-12)
    # circular: the strategy's phasor mean of the rescaled values x + (tau_eff / tau_k) arc_k
    arcs = [torch.tensor([0.4, 0.6, -0.2], dtype=torch.float64) * (k + 1) for k in range(3)]  # all < P/2
    phasor = sum(p[k] * torch.exp(1j * 2 * math.pi * (x["delay"] + tau_eff / taus[k] * arcs[k]) / 10.0)
                 for k in range(3))
    expected = torch.remainder(torch.angle(phasor) * 10.0 / (2 * math.pi), 10.0)
    assert torch.allclose(new["delay"], expected, atol=1e-12)
    # plain FedAvg gives a different point (the test discriminates)
    fedavg = make_strategy("fedavg").aggregate_fit(1, x, updates, manifolds)
    assert not torch.allclose(fedavg["w"], new["w"], atol=1e-3)


def test_fednova_with_equal_steps_is_fedavg_bit_for_bit() -> None:
    x = {"w": torch.zeros(4)}
    ups = [_update(k, 5 + k, 3, {"w": torch.full((4,), float(k))}) for k in range(3)]
    out = fednova_rescale(ups, x, make_strategy("fedavg").client_weights(ups))
    assert all(a is b for a, b in zip(out, ups))
    with pytest.raises(ValueError, match=">= 1 local step"):
        fednova_scales([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="one weight per update"):
        fednova_scales([1, 2], [1.0])


def test_fednova_simulation_matches_hand_normalization() -> None:
    """In the simulation, fednova = FedAvg over x + (tau_eff / tau_k) (x_k - x) with the reported tau_k."""
    settings = _settings("faults.deadline=4", "faults.straggler_sigma=0.7", "faults.late_policy=fednova",
                         "federation.fraction=1.0")
    sim = Simulation(build_spec(settings))
    spec = sim.spec
    plan = sim.stage("faults").plan(sim.round_context(1))
    assert plan.partial and plan.budgets is not None
    w0 = {n: v.clone() for n, v in sim.state.global_params.items()}
    sim.run_round()
    ups = train_clients(spec.engine, spec.model, w0, [sim.clients[c] for c in plan.trained],
                        _gens(0, 1, plan.trained), spec.local, FitInstructions(1), step_budgets=plan.budgets)
    assert [u.steps for u in ups] == plan.budgets
    n = np.array([u.num_samples for u in ups], dtype=np.float64)
    p = n / n.sum()
    tau_eff = float(np.dot(p, plan.budgets))
    for k in w0:
        expected = w0[k].double() + tau_eff * sum(
            p[i] * (u.params[k].double() - w0[k].double()) / u.steps for i, u in enumerate(ups))
        assert torch.allclose(sim.state.global_params[k].double(), expected, atol=1e-5), k


# -- all dropped, defaults, resume --------------------------------------------------------------------------

def test_all_dropped_round_keeps_the_global_model(caplog: pytest.LogCaptureFixture) -> None:
    for extra in (["faults.dropout=1.0"], ["faults.deadline=0.01"], ["faults.deadline=0.01",
                                                                      "faults.late_policy=fednova"]):
        sim = Simulation(build_spec(_settings(*extra)))
        before = {n: v.clone() for n, v in sim.state.global_params.items()}
        with caplog.at_level(logging.WARNING, logger="spikefed.federated.faults"):
            row = sim.run_round()
        assert row["accepted"] == 0 and row["bytes_up"] == 0 and row["mean_tau"] is None
        assert row["dropped"] + row["late"] == row["clients"] == 3
        assert row["train_loss"] is None and row["accuracy"] is not None  # the kept model is still evaluated
        assert all(torch.equal(before[n], sim.state.global_params[n]) for n in before)
        assert "the global model is kept" in caplog.text
        caplog.clear()


def test_default_faults_change_nothing() -> None:
    """No faults section (or one with only defaults) -> spec.faults is None and the rows are today's; a
    FaultSpec that cannot fire gives bit-identical parameters."""
    assert fault_spec(RunSettings()) is None and build_spec(_settings()).faults is None
    assert fingerprint(_settings()) == fingerprint(_settings("faults.late_policy=drop"))
    assert fingerprint(_settings()) != fingerprint(_settings("faults.dropout=0.1"))
    plain = Simulation(build_spec(_settings()))
    spec = build_spec(_settings())
    spec.faults = FaultSpec()
    inert = Simulation(spec)
    for _ in range(2):
        a, b = plain.run_round(), inert.run_round()
        assert "dropped" not in a and b["dropped"] == 0 and b["late"] == 0
        assert a["accuracy"] == b["accuracy"] and a["bytes_up"] == b["bytes_up"]
    for n in plain.state.global_params:
        assert torch.equal(plain.state.global_params[n], inert.state.global_params[n])


def test_resume_with_faults_is_bit_identical(tmp_path) -> None:
    settings = _settings("faults.dropout=0.3", "faults.deadline=4", "faults.straggler_sigma=0.7",
                         "faults.jitter_sigma=0.3", "faults.late_policy=fednova", "federation.rounds=5")
    a = Simulation(build_spec(settings))
    rows_a = [a.run_round() for _ in range(5)]
    b = Simulation(build_spec(settings))
    for _ in range(2):
        b.run_round()
    b.save_checkpoint(tmp_path / "c.pt")
    c = Simulation(build_spec(settings))
    c.load_checkpoint(tmp_path / "c.pt")
    rows_c = [c.run_round() for _ in range(3)]
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [strip(r) for r in rows_a[2:]] == [strip(r) for r in rows_c]
    assert sum(r["dropped"] for r in rows_a) > 0 and sum(r["partial"] for r in rows_a) > 0
    for n in a.state.global_params:
        assert torch.equal(a.state.global_params[n], c.state.global_params[n])


def test_checkpoint_with_inconsistent_metrics_is_refused(tmp_path) -> None:
    sim = Simulation(build_spec(_settings()))
    sim.run_round()
    sim.state.metrics.append(dict(sim.state.metrics[-1]))  # a duplicated row
    sim.save_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="inconsistent"):
        Simulation(build_spec(_settings())).load_checkpoint(tmp_path / "c.pt")
    data = read_checkpoint(tmp_path / "c.pt")
    del data["global_params"]
    write_checkpoint(tmp_path / "d.pt", data)
    with pytest.raises(ValueError, match="incomplete"):
        Simulation(build_spec(_settings())).load_checkpoint(tmp_path / "d.pt")
