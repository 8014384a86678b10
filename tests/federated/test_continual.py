"""Continual federated learning: accuracy-matrix metrics, drift measure, stability terms, engines, runs, config."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from spikefed.data import load_digits_split
from spikefed.experiment.config import ConfigError, RunSettings, build_settings
from spikefed.experiment.runner import build_spec, run_experiment
from spikefed.federated.cohort import ClientData, cohort_forward, per_sample_loss, train_cohort, train_sequential
from spikefed.federated.continual import (StabilityPenalty, accuracy_matrix, domain_transform, average_accuracy,
                                          average_forgetting,
                                          backward_transfer, class_groups, continual_metrics, fisher_diagonal,
                                          gaussian_w2, input_drift, rotate_images, stack_penalties, stacked_penalty,
                                          step_forgetting, task_forgetting, task_of_round)
from spikefed.federated.serialization import encode_params
from spikefed.federated.simulation import Simulation
from spikefed.federated.types import FitInstructions, params_of
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig

# -- accuracy-matrix metrics against a hand-computed matrix --------------------------------------------------

R = [[0.60, 0.10, 0.05],
     [0.90, 0.80, 0.20],
     [0.50, 0.70, 0.95]]


def test_metrics_of_a_hand_computed_matrix() -> None:
    # ACC = (0.50 + 0.70 + 0.95) / 3
    assert average_accuracy(R) == pytest.approx(2.15 / 3)
    # BWT = ((0.50 - 0.60) + (0.70 - 0.80)) / 2
    assert backward_transfer(R) == pytest.approx(-0.10)
    # f_0 = max(0.60, 0.90) - 0.50 = 0.40 (the max is after task 1, not the diagonal); f_1 = 0.80 - 0.70
    assert task_forgetting(R) == pytest.approx([0.40, 0.10])
    assert average_forgetting(R) == pytest.approx(0.25)
    # step_i = R[i-1, i-1] - R[i, i-1]: 0.60 - 0.90, 0.80 - 0.70
    assert step_forgetting(R) == pytest.approx([-0.30, 0.10])


def test_metrics_of_a_partial_matrix_and_one_task() -> None:
    two = R[:2]  # two of three tasks done: the leading 2 x 2 block
    assert average_accuracy(two) == pytest.approx((0.90 + 0.80) / 2)
    assert backward_transfer(two) == pytest.approx(0.30)
    # f_0 = max_{0 <= l < 1} R[l, 0] - R[1, 0] = 0.60 - 0.90: learning task 1 helped task 0 (negative forgetting)
    assert task_forgetting(two) == pytest.approx([-0.30])
    assert average_forgetting(two) == pytest.approx(-0.30)
    one = continual_metrics([[0.7, 0.2]])
    assert one["average_accuracy"] == pytest.approx(0.7)
    assert one["backward_transfer"] is None and one["average_forgetting"] is None


def test_bad_matrices_are_refused() -> None:
    for bad in ([[0.5, 0.2], [0.1, 0.3], [0.2, 0.2]], [0.5, 0.4], [[math.nan]]):
        with pytest.raises(ValueError, match="accuracy matrix"):
            continual_metrics(bad)


def test_accuracy_matrix_reads_task_end_rows() -> None:
    rows = [{"task_end": None, "task_accuracy": [0.1, 0.0]}, {"task_end": 0, "task_accuracy": [0.8, 0.1]},
            {"task_end": None, "task_accuracy": None}, {"task_end": 1, "task_accuracy": [0.5, 0.9]}]
    assert accuracy_matrix(rows) == [[0.8, 0.1], [0.5, 0.9]]


# -- schedules, rotation, drift measure ----------------------------------------------------------------------

def test_task_schedule_and_class_groups() -> None:
    assert [task_of_round(r, 3, 2) for r in range(1, 9)] == [0, 0, 0, 1, 1, 1, 1, 1]  # past the end: last task
    assert [task_of_round(r, 3, 3, lag=2) for r in range(1, 10)] == [0, 0, 0, 0, 0, 1, 1, 1, 2]
    assert [g.tolist() for g in class_groups(10, 2)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert [len(g) for g in class_groups(10, 3)] == [4, 3, 3]
    with pytest.raises(ValueError, match="tasks"):
        class_groups(10, 11)


def test_rotation_by_90_degrees_is_rot90_and_360_is_identity() -> None:
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = rotate_images(x, 90.0).view(5, 8, 8)
    assert torch.allclose(r, torch.rot90(x.view(5, 8, 8), 1, (1, 2)), atol=1e-12)
    assert torch.allclose(rotate_images(x, 360.0), x, atol=1e-12)
    with pytest.raises(ValueError, match="square"):
        rotate_images(torch.zeros(2, 10), 30.0)


def test_drift_measure_is_the_gaussian_w2_formula() -> None:
    """100 points (+-1, +-1) have mean 0 and (ddof=1) covariance 100/99 I; b = m + diag(s) base has mean m and
    covariance 100/99 diag(s^2), so W2^2 = ||m||^2 + sum_i (sqrt(100/99) (1 - s_i))^2."""
    base = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]] * 25)
    m, s = np.array([0.7, -0.2]), np.array([1.8, 0.5])
    b = m + base * s
    expected = math.sqrt(float((m**2).sum()) + sum((math.sqrt(100 / 99) * (1 - si)) ** 2 for si in s))
    assert input_drift(base, b) == pytest.approx(expected, rel=1e-9)
    assert input_drift(base, base) == pytest.approx(0.0, abs=1e-7)


def test_gaussian_w2_against_scipy_sqrtm() -> None:
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    c1, c2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    m1, m2 = rng.standard_normal(5), rng.standard_normal(5)
    r2 = np.real(scipy_linalg.sqrtm(c2))
    ref = float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * np.real(scipy_linalg.sqrtm(r2 @ c1 @ r2))))
    assert gaussian_w2(m1, c1, m2, c2) == pytest.approx(math.sqrt(ref), rel=1e-8)
    assert gaussian_w2(m1, c1, m2, c2) == pytest.approx(gaussian_w2(m2, c2, m1, c1), rel=1e-8)  # symmetric


def test_drift_grows_with_rotation_on_digits() -> None:
    x = load_digits_split(seed=0).x_train[:400]
    d = [input_drift(x, rotate_images(x, deg)) for deg in (0.0, 15.0, 45.0, 90.0)]
    assert d[0] == pytest.approx(0.0, abs=1e-6)
    assert d[0] < d[1] < d[2] < d[3]


# -- stability penalties -------------------------------------------------------------------------------------

def _params(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 4, generator=g, dtype=torch.float64), "b": torch.randn(4, generator=g,
                                                                                       dtype=torch.float64)}


@pytest.mark.parametrize("kind", ["l2", "ewc"])
def test_penalty_gradient_is_lambda_f_times_displacement(kind: str) -> None:
    theta, anchor = _params(1), _params(2)
    fisher = {n: p.abs() + 0.1 for n, p in _params(3).items()} if kind == "ewc" else None
    lam = 2.5
    pen = StabilityPenalty(lam, anchor, fisher)
    leaves = {n: p.clone().requires_grad_(True) for n, p in theta.items()}
    value = pen.value(leaves)
    grads = torch.autograd.grad(value, list(leaves.values()))
    for (n, p), g in zip(theta.items(), grads):
        w = fisher[n] if fisher is not None else torch.ones_like(p)
        assert torch.allclose(g, lam * w * (p - anchor[n]), atol=1e-12)
    expected = 0.5 * lam * sum(((fisher[n] if fisher else 1.0) * (theta[n] - anchor[n]) ** 2).sum() for n in theta)
    assert float(value.detach()) == pytest.approx(float(expected), rel=1e-12)


def test_stacked_penalty_per_client_and_none_is_zero() -> None:
    theta, anchor = _params(1), _params(2)
    pens = [StabilityPenalty(1.5, anchor), None]
    anchors, coefs = stack_penalties(pens, theta, list(theta))
    leaves = {n: torch.stack([p, p]) for n, p in theta.items()}
    per = stacked_penalty(leaves, anchors, coefs, torch.tensor([0, 1]))
    assert float(per[0]) == pytest.approx(float(pens[0].value(theta)), rel=1e-12)
    assert float(per[1]) == 0.0
    assert stack_penalties([None, None], theta, list(theta)) is None


# -- engines -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")  # session: kept when the longest-first order leaves the module
def clients() -> list[ClientData]:
    d = load_digits_split(seed=0)
    x, y = d.x_train.double(), d.y_train
    sizes, out, start = [30, 17, 25], [], 0
    for i, n in enumerate(sizes):
        out.append(ClientData(i, x[start:start + n], y[start:start + n]))
        start += n
    return out


def _model() -> SpikingMLP:
    return SpikingMLP([64, 24, 10], generator=torch.Generator().manual_seed(0)).double()


def _gens(k: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(50 + i) for i in range(k)]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_cohort_equals_sequential_with_stability_terms(clients, optimizer: str) -> None:
    model = _model()
    g = params_of(model)
    anchor = {n: p + 0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(9), dtype=p.dtype)
              for n, p in g.items()}
    fisher = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(4), dtype=p.dtype) for n, p in g.items()}
    pens = [StabilityPenalty(3.0, anchor), None, StabilityPenalty(5.0, anchor, fisher)]
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.02, optimizer=optimizer, num_steps=5)
    fit = FitInstructions(1, prox_mu=0.1)  # FedProx and the stability term together
    a = train_cohort(model, g, clients, _gens(3), cfg, fit, penalties=pens)
    b = train_sequential(model, g, clients, _gens(3), cfg, fit, penalties=pens)
    plain = train_cohort(model, g, clients, _gens(3), cfg, fit)
    for ua, ub in zip(a, b):
        for n in ua.params:
            assert torch.allclose(ua.params[n], ub.params[n], atol=1e-10)
    assert all(torch.equal(a[1].params[n], plain[1].params[n]) for n in g)  # no penalty: unchanged
    assert any(not torch.allclose(a[0].params[n], plain[0].params[n]) for n in g)


def test_huge_lambda_keeps_clients_at_the_anchor(clients) -> None:
    """The penalised minimiser is ``anchor - grad L / lambda`` -> anchor; Adam's steps are bounded by lr, so with
    lambda -> infinity every coordinate stays within lr of the anchor, while lambda = 0 drifts far."""
    model = _model()
    g = params_of(model)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.01, num_steps=6)
    dist, worst = [], []
    for lam in (0.0, 10.0, 100.0, 1e8):
        ups = train_cohort(model, g, clients, _gens(3), cfg, FitInstructions(1),
                           penalties=[StabilityPenalty(lam, g)] * 3)
        dist.append(max(math.sqrt(sum(float(((u.params[n] - g[n]) ** 2).sum()) for n in g)) for u in ups))
        worst.append(max(float((u.params[n] - g[n]).abs().max()) for u in ups for n in g))
    assert dist[0] > dist[1] > dist[2]
    assert worst[3] <= cfg.lr
    assert worst[0] > 10 * cfg.lr


def test_fisher_diagonal_matches_per_sample_gradients_of_the_batched_forward(clients) -> None:
    model = _model()
    g = params_of(model)
    c = clients[0]
    cfg = TrainConfig(num_steps=5, loss="ce_count")
    fisher = fisher_diagonal(model, g, c.x, c.y, cfg, None, max_samples=12)
    # reference: every sample is its own "client" of the batched engine, so its gradient is its own
    n = 12
    stacked = {k: v.unsqueeze(0).repeat(n, *([1] * v.dim())).requires_grad_(True) for k, v in g.items()}
    x = c.x[:n].unsqueeze(1).unsqueeze(0).expand(cfg.num_steps, n, 1, 64)
    out, _ = cohort_forward(model, stacked, x)
    loss = per_sample_loss(out, c.y[:n].unsqueeze(1), cfg).sum()
    grads = torch.autograd.grad(loss, list(stacked.values()))
    for (k, _), gr in zip(stacked.items(), grads):
        assert torch.allclose(fisher[k], (gr**2).mean(0), atol=1e-12), k
    assert all(float(f.sum()) > 0 for f in fisher.values())


# -- simulations and runs ------------------------------------------------------------------------------------

def _small(*overrides: str) -> RunSettings:
    base = ["partition.num_clients=6", "partition.min_size=5", "federation.rounds=4", "federation.fraction=0.5",
            "model.hidden=[24]", "local.num_steps=5", "local.epochs=1"]
    return build_settings(RunSettings, None, base + list(overrides))


def test_cohort_and_sequential_simulations_agree_with_the_regularizer() -> None:
    """Both engines run the continual pipeline with the stability term and end in the same place. Their exact
    agreement is tested in float64 on the training itself (test_cohort_equals_sequential_with_stability_terms,
    1e-10); here, in float32, one rounding difference can flip a spike and the trajectories separate (about 1e-2
    after 3 rounds with seed 0), so the global models are compared by their accuracy on every task."""
    over = ["continual.stream=domain_drift", "continual.regularizer=l2", "continual.lam=2", "continual.rotation=40"]
    a = Simulation(build_spec(_small("federation.engine=cohort", *over)))
    b = Simulation(build_spec(_small("federation.engine=sequential", *over)))
    for _ in range(3):  # round 3 is in task 1: its clients train with the anchor of round 2
        ra, rb = a.run_round(), b.run_round()
    assert ra["task"] == 1 and a.state.server_state["continual"]["anchors"].keys() == {1}
    assert b.state.server_state["continual"]["anchors"].keys() == {1}
    assert ra["task_accuracy"] == pytest.approx(rb["task_accuracy"], abs=0.02)


def test_ewc_resume_across_a_task_boundary_is_bit_identical(tmp_path) -> None:
    """Straight through 4 rounds == 2 rounds, checkpoint, a fresh simulation resumed for 2 (round 2 ends task 0:
    anchor and Fisher are in the checkpoint)."""
    settings = _small("continual.stream=async_drift", "continual.max_lag=1", "continual.regularizer=ewc",
                      "continual.lam=5", "continual.fisher_samples=8")
    sims = [Simulation(build_spec(settings)) for _ in range(2)]
    straight = [sims[0].run_round() for _ in range(4)]
    assert straight[1]["fisher_bytes"] > 0 and straight[1]["task_end"] == 0  # the Fisher travels at the boundary
    assert straight[1]["bytes_up"] > straight[0]["bytes_up"]
    first = [sims[1].run_round() for _ in range(2)]
    sims[1].save_checkpoint(tmp_path / "c.pt")
    resumed = Simulation(build_spec(settings))
    resumed.load_checkpoint(tmp_path / "c.pt")
    rows = first + [resumed.run_round() for _ in range(2)]
    assert [{**r, "seconds": 0} for r in rows] == [{**r, "seconds": 0} for r in straight]
    done = sims[0].state
    for key in ("global_params", "fisher"):
        ref = done.global_params if key == "global_params" else done.server_state["continual"]["fisher"][1]
        got = (resumed.state.global_params if key == "global_params"
               else resumed.state.server_state["continual"]["fisher"][1])
        assert all(torch.equal(ref[n], got[n]) for n in ref), key


def test_domain_noise_has_the_scheduled_std() -> None:
    x = torch.zeros(4000, 64)
    assert torch.equal(domain_transform(x, 0, 0.0, 0.5, torch.Generator().manual_seed(0)), x)  # task 0: clean
    noisy = domain_transform(x, 3, 0.0, 0.5, torch.Generator().manual_seed(0))
    assert float(noisy.std()) == pytest.approx(1.5, rel=0.01)  # std = task * noise


def test_async_clients_switch_tasks_at_their_own_round() -> None:
    sim = Simulation(build_spec(_small("continual.stream=async_drift", "continual.max_lag=2",
                                       "federation.rounds=6", "continual.tasks=2")))
    lags = sim.stream.data.lags
    assert set(lags.tolist()) <= {0, 1, 2} and len(set(lags.tolist())) > 1
    for _ in range(4):  # round 4: the schedule is in task 1; a client lagging L is there from round 4 + L
        sim.run_round()
    for k, c in enumerate(sim.clients):
        task = 1 if lags[k] == 0 else 0
        assert torch.equal(c.x, sim.stream.data.clients[task][k].x)


def test_anchor_downlink_is_paid_once_per_client_and_task() -> None:
    over = ["continual.stream=domain_drift", "continual.regularizer=l2", "continual.lam=1", "federation.fraction=1"]
    sim = Simulation(build_spec(_small(*over)))
    plain = Simulation(build_spec(_small(*over[:1], "federation.fraction=1")))
    anchor = len(encode_params(sim.state.global_params))
    extra = [sim.run_round()["bytes_down"] - plain.run_round()["bytes_down"] for _ in range(4)]
    assert extra == [0, 0, 6 * anchor, 0]  # task 1 starts in round 3: all 6 clients get the anchor once


def test_class_incremental_clients_hold_only_their_task_classes() -> None:
    sim = Simulation(build_spec(_small("continual.stream=class_incremental")))
    sim.run_round()
    assert all(set(c.y.tolist()) <= {0, 1, 2, 3, 4} for c in sim.clients)
    sim.run_round()
    sim.run_round()
    assert all(set(c.y.tolist()) <= {5, 6, 7, 8, 9} for c in sim.clients)


@pytest.mark.slow
def test_end_to_end_class_incremental_run_measures_forgetting(tmp_path) -> None:
    settings = _small("federation.rounds=6", "partition.method=iid", "federation.fraction=1",
                      "continual.stream=class_incremental", "local.epochs=2")
    summary = run_experiment(settings, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    r = [rows[2]["task_accuracy"], rows[5]["task_accuracy"]]  # the rows that end task 0 and task 1
    cont = summary["continual"]
    assert cont["accuracy_matrix"] == r
    assert cont["average_forgetting"] == pytest.approx(r[0][0] - r[1][0])
    assert cont["backward_transfer"] == pytest.approx(r[1][0] - r[0][0])
    assert cont["average_accuracy"] == pytest.approx((r[1][0] + r[1][1]) / 2)
    assert r[0][0] > 0.6 and r[0][1] < 0.2  # task 1's classes were never seen in task 0
    assert cont["average_forgetting"] > 0.2  # no regulariser: catastrophic forgetting
    assert len(cont["drift"]) == 1 and cont["drift"][0] > 0
    assert "Continual learning" in (tmp_path / "run" / "report.html").read_text()


# -- configuration -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, match", [
    (["continual.lam=1"], "continual.lam is set but continual.stream=none"),
    (["continual.stream=class_incremental", "continual.tasks=3"], "federation.rounds=4 must equal"),
    (["continual.stream=sometimes"], "continual.stream"),
    (["continual.stream=domain_drift", "continual.lam=1"], "needs continual.regularizer"),
    (["continual.stream=class_incremental", "continual.rotation=10"], "rotation applies to domain_drift"),
    (["continual.stream=domain_drift", "continual.regularizer=ewc", "privacy.dp=true"], "Fisher"),
    (["continual.stream=domain_drift", "data.name=event_digits"], "event data"),
    (["continual.stream=domain_drift", "continual.regularizer=l2", "continual.lam=100", "local.optimizer=sgd",
      "local.lr=0.05"], "diverge"),
    (["continual.stream=class_incremental", "continual.regularizer=l2", "continual.lam=-1"], "continual.lam"),
])
def test_bad_continual_configs_name_the_key(overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _small(*overrides)


def test_resolved_config_of_a_continual_run_loads_again(tmp_path) -> None:
    """config.yaml lists every key at its value; loading it back (``--resume``) must not trip the checks."""
    from spikefed.experiment.config import dump_yaml

    for over in (["continual.stream=class_incremental"], ["continual.stream=domain_drift", "continual.noise=0.1"],
                 ["continual.stream=async_drift", "continual.regularizer=ewc", "continual.lam=3"], []):
        settings = _small(*over)
        path = tmp_path / "config.yaml"
        path.write_text(dump_yaml(settings))
        assert build_settings(RunSettings, path) == settings


def test_huge_lambda_keeps_the_global_model_at_the_previous_task_model() -> None:
    """Federated version of the limit: every client stays within Adam's lr of the anchor, so does their mean."""
    worst = {}
    for lam in (0.0, 1e8):
        sim = Simulation(build_spec(_small("continual.stream=domain_drift", "continual.rotation=60",
                                           "continual.regularizer=l2", f"continual.lam={lam}")))
        for _ in range(4):
            sim.run_round()
        anchor = sim.state.server_state["continual"]["anchors"][1]  # the global model after round 2
        worst[lam] = max(float((sim.state.global_params[n] - anchor[n]).abs().max()) for n in anchor)
    lr = sim.spec.local.lr
    assert worst[1e8] <= lr * (1 + 1e-5)
    assert worst[0.0] > 10 * lr


def test_report_figures_of_the_accuracy_matrix() -> None:
    from spikefed.experiment.report.figures_model import continual
    from spikefed.experiment.report.static import render_png

    rows = [{"round": 1, "task_end": 0, "task_accuracy": [0.8, 0.1]}, {"round": 2, "task_end": 1,
                                                                       "task_accuracy": [0.5, 0.9]}]
    figs = continual(rows, {"continual": {"accuracy_matrix": [[0.8, 0.1], [0.5, 0.9]],
                                          "forgetting_per_task": [0.3]}})
    assert [f.id for f in figs] == ["continual_matrix", "continual_tasks", "forgetting"]
    assert figs[0].spec["data"][0]["z"] == [[0.8, 0.1], [0.5, 0.9]] and figs[2].spec["data"][0]["y"] == [0.3]
    assert all(render_png(f.spec)[:8] == b"\x89PNG\r\n\x1a\n" for f in figs)
    assert continual([{"round": 1, "accuracy": 0.5}], {}) == []
