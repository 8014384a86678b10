"""Server strategies: FedAvg/FedProx/FedAvgM/FedAdam/FedYogi/FedAdagrad/SCAFFOLD against hand-written numpy
implementations of the papers' server updates; validation, immutability, checkpoint/restore, factory.
"""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch

from spikefed.federated.aggregation import InvalidUpdate
from spikefed.federated.qffl import QFFL
from spikefed.federated.strategies import (
    STRATEGIES,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Scaffold,
    Strategy,
    make_strategy,
)
from spikefed.federated.types import ClientUpdate, FitInstructions
from spikefed.manifold import EPS, POSITIVE, UNIT_INTERVAL, circular

RING = circular(10.0)
MANIFOLDS = {"thr": POSITIVE, "decay": UNIT_INTERVAL, "delay": RING}


def np_logit(x):
    return np.log(x / (1.0 - x))


def np_sigmoid(y):
    return 1.0 / (1.0 + np.exp(-y))


def circ_dist(a, b, period=10.0):
    d = np.mod(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), period)
    return np.minimum(d, period - d)


def make_global(seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(3, 2, generator=g, dtype=torch.float64).to(dtype),
        "thr": (torch.rand(3, generator=g, dtype=torch.float64) + 0.5).to(dtype),
        "decay": (torch.rand(3, generator=g, dtype=torch.float64) * 0.8 + 0.1).to(dtype),
        "delay": (torch.rand(3, generator=g, dtype=torch.float64) * 10).to(dtype),
    }


def make_updates(
    glob: dict[str, torch.Tensor], seed: int, n: tuple[int, ...] = (10, 30, 60), ids: tuple[int, ...] | None = None,
    control: bool = False,
) -> list[ClientUpdate]:
    """Clients that moved away from ``glob`` by a random step, projected back onto their manifolds."""
    g = torch.Generator().manual_seed(seed)
    ids = ids if ids is not None else tuple(range(len(n)))
    out = []
    for cid, nk in zip(ids, n):
        p = {}
        for name, x in glob.items():
            step = 0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype)
            y = x + step
            if name in MANIFOLDS:
                MANIFOLDS[name].project_(y)
            p[name] = y
        cd = {k: torch.randn(v.shape, generator=g, dtype=torch.float64).to(v.dtype) for k, v in glob.items()}
        out.append(ClientUpdate(client_id=cid, num_samples=nk, params=p, control_delta=cd if control else None,
                                metrics={"start_loss": 0.5 + 0.25 * cid}))  # q-FFL's F_k
    return out


def euclidean_only(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"w": params["w"]}


def np_weighted_mean(updates: list[ClientUpdate], name: str) -> np.ndarray:
    n = np.array([u.num_samples for u in updates], dtype=np.float64)
    p = n / n.sum()
    return sum(pk * u.params[name].double().numpy() for pk, u in zip(p, updates))


# ------------------------------------------------------------------------------------------ FedAvg family


def test_fedavg_identical_clients_return_that_client_exactly() -> None:
    for dtype in (torch.float32, torch.float64):
        glob = make_global(1, dtype)
        client = make_updates(glob, seed=2, n=(5,))[0].params
        updates = [ClientUpdate(client_id=i, num_samples=n, params={k: v.clone() for k, v in client.items()})
                   for i, n in enumerate((3, 17, 40))]
        out = FedAvg().aggregate_fit(0, glob, updates, MANIFOLDS)
        for name in client:
            assert out[name].dtype == dtype
            assert torch.equal(out[name], client[name]), name


def test_fedavg_matches_numpy_weighted_mean_per_manifold() -> None:
    glob = make_global(3)
    updates = make_updates(glob, seed=4, n=(10, 25, 65))
    out = FedAvg().aggregate_fit(0, glob, updates, MANIFOLDS)
    n = np.array([10, 25, 65], dtype=np.float64)
    p = n / n.sum()
    np.testing.assert_allclose(out["w"].numpy(), np_weighted_mean(updates, "w"), rtol=1e-13, atol=1e-15)
    thr = np.stack([u.params["thr"].numpy() for u in updates])
    np.testing.assert_allclose(out["thr"].numpy(), np.exp(p @ np.log(thr)), rtol=1e-13)
    decay = np.stack([u.params["decay"].numpy() for u in updates])
    np.testing.assert_allclose(out["decay"].numpy(), np_sigmoid(p @ np_logit(decay)), rtol=1e-12)
    delay = np.stack([u.params["delay"].numpy() for u in updates])
    expected = np.mod(np.angle(p @ np.exp(2j * np.pi * delay / 10)) * 10 / (2 * np.pi), 10)
    assert circ_dist(out["delay"].numpy(), expected).max() < 1e-10
    assert bool(((out["delay"] >= 0) & (out["delay"] < 10)).all())


@pytest.mark.parametrize("server_lr", [1.0, 0.5])
def test_output_follows_global_order_and_dtype(server_lr: float) -> None:
    glob = {"b": torch.zeros(2), "a": torch.ones(3)}
    ups = [ClientUpdate(0, 1, {"a": torch.full((3,), 3.0, dtype=torch.float64), "b": torch.ones(2)}),
           ClientUpdate(1, 3, {"b": torch.full((2,), 5.0), "a": torch.full((3,), 7.0, dtype=torch.float64)})]
    out = FedAvg(server_lr=server_lr).aggregate_fit(0, glob, ups)
    assert list(out) == ["b", "a"]
    assert out["a"].dtype == torch.float32
    assert out["b"].tolist() == [4.0 * server_lr] * 2
    assert out["a"].tolist() == [1.0 + 5.0 * server_lr] * 3


def test_fedavg_circular_ring_average() -> None:
    glob = {"delay": torch.tensor([5.0])}
    ups = [ClientUpdate(0, 1, {"delay": torch.tensor([9.0])}), ClientUpdate(1, 1, {"delay": torch.tensor([1.0])})]
    out = FedAvg().aggregate_fit(0, glob, ups, {"delay": RING})
    assert 0.0 <= out["delay"].item() < 10.0 and circ_dist(out["delay"].item(), 0.0) < 1e-6


def test_fedavg_server_lr_in_chart_space() -> None:
    glob = make_global(5)
    updates = make_updates(glob, seed=6)
    lr = 0.5
    out = FedAvg(server_lr=lr).aggregate_fit(0, glob, updates, MANIFOLDS)
    target = FedAvg().aggregate_fit(0, glob, updates, MANIFOLDS)
    x, t = glob["w"].numpy(), target["w"].numpy()
    np.testing.assert_allclose(out["w"].numpy(), x - lr * (x - t), rtol=1e-13, atol=1e-15)
    x, t = glob["thr"].numpy(), target["thr"].numpy()  # log chart: geometric interpolation
    np.testing.assert_allclose(out["thr"].numpy(), np.exp(np.log(x) - lr * (np.log(x) - np.log(t))), rtol=1e-13)
    x, t = glob["decay"].numpy(), target["decay"].numpy()
    np.testing.assert_allclose(out["decay"].numpy(), np_sigmoid(np_logit(x) - lr * (np_logit(x) - np_logit(t))),
                               rtol=1e-12)
    # circular: half of the shortest arc from x to the target
    x, t = glob["delay"].numpy(), target["delay"].numpy()
    arc = np.mod(t - x + 5.0, 10.0) - 5.0
    assert circ_dist(out["delay"].numpy(), x + lr * arc).max() < 1e-10


def test_fedprox_configures_mu_and_aggregates_like_fedavg() -> None:
    glob = make_global(7)
    s = FedProx(mu=0.1)
    ins = s.configure_fit(4, glob)
    assert isinstance(ins, FitInstructions) and ins.round == 4 and ins.prox_mu == 0.1 and ins.server_control is None
    assert FedAvg().configure_fit(4, glob).prox_mu == 0.0
    updates = make_updates(glob, seed=8)
    a = s.aggregate_fit(0, glob, updates, MANIFOLDS)
    b = FedAvg().aggregate_fit(0, glob, updates, MANIFOLDS)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="mu"):
        FedProx(mu=-1.0)


def test_fedavgm_one_and_two_steps() -> None:
    lr, beta = 0.7, 0.9
    s = FedAvgM(server_lr=lr, momentum=beta)
    glob = euclidean_only(make_global(9))
    x = glob["w"].numpy().copy()
    v = np.zeros_like(x)
    for rnd in range(2):
        updates = [ClientUpdate(u.client_id, u.num_samples, euclidean_only(u.params))
                   for u in make_updates(glob, seed=10 + rnd)]
        target = np_weighted_mean(updates, "w")
        g = x - target
        v = beta * v + g
        x = x - lr * v
        glob = s.aggregate_fit(rnd, glob, updates)
        np.testing.assert_allclose(glob["w"].numpy(), x, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(s.state_dict()["buffers"]["momentum"]["w"].numpy(), v, rtol=1e-13, atol=1e-14)


def np_fedopt(rule: str, x, targets, lr, b1, b2, tau, v0):
    """Reddi et al. (2021) Algorithm 2, server side, written out directly. Returns the iterates x_1, x_2, ..."""
    m = np.zeros_like(x)
    v = np.full_like(x, v0)
    xs = []
    for target in targets:
        delta = target(x) - x
        m = b1 * m + (1 - b1) * delta
        if rule == "adagrad":
            v = v + delta**2
        elif rule == "adam":
            v = b2 * v + (1 - b2) * delta**2
        else:  # yogi
            v = v - (1 - b2) * delta**2 * np.sign(v - delta**2)
        x = x + lr * m / (np.sqrt(v) + tau)
        xs.append(x)
    return xs, m, v


@pytest.mark.parametrize("cls, rule", [(FedAdam, "adam"), (FedYogi, "yogi"), (FedAdagrad, "adagrad")])
def test_adaptive_one_and_two_steps_match_paper(cls, rule: str) -> None:
    lr, b1, b2, tau = 0.3, 0.8, 0.95, 1e-2
    kwargs = dict(server_lr=lr, beta1=b1, tau=tau)
    if rule != "adagrad":
        kwargs["beta2"] = b2
    s = cls(**kwargs)
    x0 = np.array([0.0, 1.0, -2.0, 0.5])
    # round 1: big moves; round 2: small moves in two coordinates so that Yogi's sign(v - Delta^2) flips
    moves = [np.array([1.0, -2.0, 0.5, 3.0]), np.array([0.001, -2.5, 0.002, 4.0])]
    # clients at target +- spread with equal weights average to the target
    glob = {"w": torch.from_numpy(x0.copy())}
    got = []
    for rnd, mv in enumerate(moves):
        target = glob["w"].numpy() + mv
        updates = [ClientUpdate(0, 5, {"w": torch.from_numpy(target + 0.25)}),
                   ClientUpdate(1, 5, {"w": torch.from_numpy(target - 0.25)})]
        glob = s.aggregate_fit(rnd, glob, updates)
        got.append(glob["w"].numpy().copy())
    targets = [lambda x, mv=mv: x + mv for mv in moves]
    xs, m, v = np_fedopt(rule, x0, targets, lr, b1, b2 if rule != "adagrad" else 0.0, tau, tau**2)
    np.testing.assert_allclose(got[0], xs[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got[1], xs[1], rtol=1e-12, atol=1e-14)
    state = s.state_dict()["buffers"]
    np.testing.assert_allclose(state["m"]["w"].numpy(), m, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(state["v"]["w"].numpy(), v, rtol=1e-12, atol=1e-15)
    if rule == "yogi":  # the test really exercises both signs
        d2 = np.array(moves[1]) ** 2
        v1 = np_fedopt(rule, x0, targets[:1], lr, b1, b2, tau, tau**2)[2]
        assert (v1 > d2).any() and (v1 < d2).any()


def test_adaptive_hand_values_first_step() -> None:
    # FedAdam, one coordinate, Delta = 2: m = 0.1 * 2 = 0.2; v = 0.99 * tau^2 + 0.01 * 4
    tau = 1e-3
    s = FedAdam(server_lr=0.5, beta1=0.9, beta2=0.99, tau=tau)
    out = s.aggregate_fit(0, {"w": torch.tensor([1.0], dtype=torch.float64)},
                          [ClientUpdate(0, 1, {"w": torch.tensor([3.0], dtype=torch.float64)})])
    v = 0.99 * tau**2 + 0.01 * 4.0
    assert out["w"].item() == pytest.approx(1.0 + 0.5 * 0.2 / (math.sqrt(v) + tau), rel=1e-14)
    # FedAdagrad defaults: beta1 = 0 -> m = Delta; v = tau^2 + Delta^2
    s = FedAdagrad(server_lr=0.5)
    out = s.aggregate_fit(0, {"w": torch.tensor([1.0], dtype=torch.float64)},
                          [ClientUpdate(0, 1, {"w": torch.tensor([3.0], dtype=torch.float64)})])
    assert out["w"].item() == pytest.approx(1.0 + 0.5 * 2.0 / (math.sqrt(1e-6 + 4.0) + 1e-3), rel=1e-14)


def test_adaptive_positive_parameter_steps_in_log_chart() -> None:
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    s = FedAdam(server_lr=lr, beta1=b1, beta2=b2, tau=tau)
    glob = {"thr": torch.tensor([0.5, 2.0], dtype=torch.float64)}
    updates = [ClientUpdate(0, 1, {"thr": torch.tensor([1.0, 1.0], dtype=torch.float64)}),
               ClientUpdate(1, 3, {"thr": torch.tensor([2.0, 0.5], dtype=torch.float64)})]
    out = s.aggregate_fit(0, glob, updates, {"thr": POSITIVE})
    y0 = np.log([0.5, 2.0])
    target = 0.25 * np.log([1.0, 1.0]) + 0.75 * np.log([2.0, 0.5])
    xs, _, _ = np_fedopt("adam", y0, [lambda y: target], lr, b1, b2, tau, tau**2)
    np.testing.assert_allclose(out["thr"].numpy(), np.exp(xs[0]), rtol=1e-13)


def test_server_steps_keep_parameters_on_their_manifolds() -> None:
    glob = make_global(11)
    for s in (FedAdam(server_lr=50.0), FedAvgM(server_lr=5.0, momentum=0.99), FedAvg(server_lr=30.0)):
        g = dict(glob)
        for rnd in range(3):
            g = s.aggregate_fit(rnd, g, make_updates(g, seed=20 + rnd), MANIFOLDS)
            for name, m in MANIFOLDS.items():
                assert m.contains(g[name]), (s, name)
            assert bool(((g["decay"] >= EPS) & (g["decay"] <= 1 - EPS)).all())


# ------------------------------------------------------------------------------------------------ SCAFFOLD


def test_scaffold_control_variate_and_model_update_by_hand() -> None:
    n_clients, lr = 10, 0.5
    s = Scaffold(num_clients=n_clients, server_lr=lr)
    x = np.array([1.0, -1.0, 0.0])
    glob = {"w": torch.from_numpy(x.copy())}
    ins = s.configure_fit(0, glob)
    assert ins.server_control is not None
    assert torch.equal(ins.server_control["w"], torch.zeros(3, dtype=torch.float64))
    c = np.zeros(3)
    rounds = [
        # (client id, num_samples, y_k, control_delta_k)
        [(2, 100, [2.0, 0.0, 1.0], [1.0, 0.0, -1.0]), (5, 1, [4.0, 2.0, -1.0], [3.0, 3.0, 3.0]),
         (9, 7, [0.0, 1.0, 0.0], [-1.0, 0.5, 0.0])],
        [(0, 3, [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]), (2, 4, [3.0, -3.0, 2.0], [0.0, 1.0, 2.0])],
    ]
    for rnd, clients in enumerate(rounds):
        updates = [ClientUpdate(cid, nk, {"w": torch.tensor(y, dtype=torch.float64)},
                                control_delta={"w": torch.tensor(dc, dtype=torch.float64)})
                   for cid, nk, y, dc in clients]
        ys = np.array([y for _, _, y, _ in clients])
        dcs = np.array([dc for _, _, _, dc in clients])
        x = x + lr * (ys - x).mean(0)                       # unweighted, as in the paper
        c = c + len(clients) / n_clients * dcs.mean(0)     # c + |S|/N mean(dc)
        glob = s.aggregate_fit(rnd, glob, updates)
        np.testing.assert_allclose(glob["w"].numpy(), x, rtol=1e-14, atol=1e-15)
        sent = s.configure_fit(rnd + 1, glob).server_control
        np.testing.assert_allclose(sent["w"].numpy(), c, rtol=1e-14, atol=1e-15)
    # round 1 hand values: c = 0.3 * mean([1,0,-1],[3,3,3],[-1,.5,0]) = [0.3, 0.35, 0.2]
    #                      then + 0.2 * mean([.5,.5,.5],[0,1,2]) = [0.35, 0.5, 0.45]
    np.testing.assert_allclose(c, [0.35, 0.5, 0.45], rtol=1e-14)


def test_scaffold_sample_weighted_and_lr1_exact() -> None:
    glob = {"w": torch.tensor([0.0, 0.0], dtype=torch.float64)}
    updates = [ClientUpdate(0, 1, {"w": torch.tensor([4.0, 0.0], dtype=torch.float64)},
                            control_delta={"w": torch.zeros(2, dtype=torch.float64)}),
               ClientUpdate(1, 3, {"w": torch.tensor([0.0, 8.0], dtype=torch.float64)},
                            control_delta={"w": torch.zeros(2, dtype=torch.float64)})]
    assert Scaffold(num_clients=2).aggregate_fit(0, glob, updates)["w"].tolist() == [2.0, 4.0]
    assert Scaffold(num_clients=2, sample_weighted=True).aggregate_fit(0, glob, updates)["w"].tolist() == [1.0, 6.0]


def test_scaffold_server_control_is_a_copy_and_errors() -> None:
    s = Scaffold(num_clients=3)
    glob = {"w": torch.zeros(2)}
    up = ClientUpdate(1, 5, {"w": torch.ones(2)}, control_delta={"w": torch.full((2,), 3.0)})
    s.aggregate_fit(0, glob, [up])
    sent = s.configure_fit(1, glob).server_control
    assert sent["w"].tolist() == [1.0, 1.0]  # 1/3 * 3
    sent["w"].add_(100.0)
    assert s.configure_fit(1, glob).server_control["w"].tolist() == [1.0, 1.0]
    with pytest.raises(InvalidUpdate, match="client 4:.*num_clients"):
        s.aggregate_fit(1, glob, [ClientUpdate(4, 5, {"w": torch.ones(2)}, control_delta={"w": torch.ones(2)})])
    with pytest.raises(InvalidUpdate, match="client 2:.*control_delta"):
        s.aggregate_fit(1, glob, [ClientUpdate(2, 5, {"w": torch.ones(2)})])
    with pytest.raises(InvalidUpdate, match="client 2:.*control_delta 'w'.*shape"):
        s.aggregate_fit(1, glob, [ClientUpdate(2, 5, {"w": torch.ones(2)}, control_delta={"w": torch.ones(3)})])
    with pytest.raises(ValueError, match="num_clients"):
        Scaffold(num_clients=0)


# --------------------------------------------------------------------------------- validation, immutability


def all_strategies() -> list[Strategy]:
    return [FedAvg(), FedAvg(server_lr=0.5), FedProx(mu=0.1), FedAvgM(), FedAdam(server_lr=0.1),
            FedYogi(server_lr=0.1), FedAdagrad(server_lr=0.1, beta1=0.5), Scaffold(num_clients=5),
            Scaffold(num_clients=5, server_lr=0.7)]


@pytest.mark.parametrize("strategy", all_strategies(), ids=repr)
def test_strategies_do_not_mutate_inputs(strategy: Strategy) -> None:
    glob = make_global(12, torch.float32)
    updates = make_updates(glob, seed=13, control=True)
    manifolds = dict(MANIFOLDS)
    glob_before, updates_before, man_before = copy.deepcopy(glob), copy.deepcopy(updates), dict(manifolds)
    for rnd in range(2):
        strategy.configure_fit(rnd, glob)
        out = strategy.aggregate_fit(rnd, glob, updates, manifolds)
        assert list(out) == list(glob)
        for k in glob:
            assert out[k].dtype == glob[k].dtype and out[k].shape == glob[k].shape
            assert out[k].data_ptr() not in {glob[k].data_ptr()} | {u.params[k].data_ptr() for u in updates}
    assert manifolds == man_before
    for k in glob:
        assert torch.equal(glob[k], glob_before[k])
    for u, b in zip(updates, updates_before):
        assert (u.client_id, u.num_samples, u.metrics, u.steps) == (b.client_id, b.num_samples, b.metrics, b.steps)
        for k in glob:
            assert torch.equal(u.params[k], b.params[k])
            assert torch.equal(u.control_delta[k], b.control_delta[k])
    # output is independent of the strategy's state: mutating it changes nothing inside
    sd = strategy.state_dict()
    out["w"].add_(1.0)
    for slot, buf in strategy.state_dict()["buffers"].items():
        assert all(torch.equal(buf[k], sd["buffers"][slot][k]) for k in buf)


@pytest.mark.parametrize("strategy", all_strategies(), ids=repr)
def test_bad_update_raises_and_leaves_state_unchanged(strategy: Strategy) -> None:
    glob = make_global(14)
    strategy.aggregate_fit(0, glob, make_updates(glob, seed=15, control=True), MANIFOLDS)
    before = strategy.state_dict()
    updates = make_updates(glob, seed=16, control=True)
    updates[1].params["w"][0, 0] = math.nan
    with pytest.raises(InvalidUpdate, match="client 1:.*'w'.*non-finite") as info:
        strategy.aggregate_fit(1, glob, updates, MANIFOLDS)
    assert info.value.client_id == 1
    updates = make_updates(glob, seed=16, control=True)
    updates[2].params["thr"][0] = -1.0  # off the positive manifold
    with pytest.raises(InvalidUpdate, match="client 2:.*'thr'.*manifold"):
        strategy.aggregate_fit(1, glob, updates, MANIFOLDS)
    updates = make_updates(glob, seed=16, ids=(3, 1, 3), control=True)
    with pytest.raises(InvalidUpdate, match="client 3:.*duplicate"):
        strategy.aggregate_fit(1, glob, updates, MANIFOLDS)
    with pytest.raises(ValueError, match="no client updates"):
        strategy.aggregate_fit(1, glob, [], MANIFOLDS)
    bad_glob = dict(glob, w=torch.full((3, 2), math.inf, dtype=torch.float64))
    with pytest.raises(ValueError, match="global parameter 'w'"):
        strategy.aggregate_fit(1, bad_glob, make_updates(glob, seed=16, control=True), MANIFOLDS)
    after = strategy.state_dict()
    assert after["rounds_aggregated"] == before["rounds_aggregated"] == 1
    for slot, buf in before["buffers"].items():
        assert all(torch.equal(buf[k], after["buffers"][slot][k]) for k in buf)


def test_non_finite_server_step_is_rejected_without_state_change() -> None:
    s = FedAvg(server_lr=1e6)  # exp overflows in the positive chart
    glob = {"thr": torch.tensor([1.0])}
    ups = [ClientUpdate(0, 1, {"thr": torch.tensor([100.0])})]
    with pytest.raises(ValueError, match="non-finite values for parameter 'thr'"):
        s.aggregate_fit(0, glob, ups, {"thr": POSITIVE})
    assert s.rounds_aggregated == 0


def test_state_buffers_must_match_the_model() -> None:
    s = FedAvgM()
    s.aggregate_fit(0, {"a": torch.zeros(2)}, [ClientUpdate(0, 1, {"a": torch.ones(2)})])
    with pytest.raises(ValueError, match=r"no state for \['b'\]"):
        s.aggregate_fit(1, {"a": torch.zeros(2), "b": torch.zeros(1)},
                        [ClientUpdate(0, 1, {"a": torch.ones(2), "b": torch.ones(1)})])
    with pytest.raises(ValueError, match="shape"):
        s.aggregate_fit(1, {"a": torch.zeros(3)}, [ClientUpdate(0, 1, {"a": torch.ones(3)})])


# ---------------------------------------------------------------------------------------------- checkpoint


def run_rounds(strategy: Strategy, glob, rounds: range):
    outs = []
    for rnd in rounds:
        ins = strategy.configure_fit(rnd, glob)
        updates = make_updates(glob, seed=100 + rnd, ids=(rnd % 3, 3, 4), control=True)
        if ins.server_control is not None:  # make the clients depend on what the server sent
            for u in updates:
                u.control_delta = {k: v + ins.server_control[k] for k, v in u.control_delta.items()}
                u.params["w"] = u.params["w"] - 0.1 * ins.server_control["w"]
        glob = strategy.aggregate_fit(rnd, glob, updates, MANIFOLDS)
        outs.append(glob)
    return glob, outs


@pytest.mark.parametrize("name", STRATEGIES)
def test_checkpoint_restore_continues_identically(name: str) -> None:
    kwargs = {"num_clients": 6} if name == "scaffold" else {}
    if name in ("fedavg", "fedprox", "scaffold"):
        kwargs["server_lr"] = 0.8  # exercise the chart step rather than the lr == 1 shortcut
    glob0 = make_global(30, torch.float32)
    _, uninterrupted = run_rounds(make_strategy(name, **kwargs), glob0, range(3))

    first = make_strategy(name, **kwargs)
    glob1, _ = run_rounds(first, glob0, range(1))
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    restored = make_strategy(name, **kwargs)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert restored.rounds_aggregated == 1 and restored.last_round == 0
    _, resumed = run_rounds(restored, glob1, range(1, 3))
    for a, b in zip(uninterrupted[1:], resumed):
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    # and a different run would not match (the test can fail): the state matters for stateful strategies
    if name in ("fedavgm", "fedadam", "fedyogi", "fedadagrad", "scaffold"):
        _, fresh = run_rounds(make_strategy(name, **kwargs), glob1, range(1, 3))
        assert not all(torch.equal(uninterrupted[2][k], fresh[1][k]) for k in fresh[1])


def test_state_dict_contents_and_mismatches() -> None:
    s = FedAdam(server_lr=0.1)
    sd = s.state_dict()
    assert sd["strategy"] == "fedadam" and sd["rounds_aggregated"] == 0 and sd["last_round"] == -1
    assert sd["config"] == {"server_lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3, "initial_accumulator": 1e-6}
    assert sd["buffers"] == {"m": {}, "v": {}}
    with pytest.raises(ValueError, match="fedadam.*not 'fedyogi'"):
        FedYogi(server_lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"differs in \['server_lr'\]"):
        FedAdam(server_lr=0.2).load_state_dict(sd)
    with pytest.raises(ValueError, match="keys"):
        s.load_state_dict({"strategy": "fedadam"})
    bad = copy.deepcopy(sd)
    bad["buffers"] = {"m": {}}
    with pytest.raises(ValueError, match="slots"):
        s.load_state_dict(bad)
    bad = copy.deepcopy(sd)
    bad["rounds_aggregated"] = -1
    with pytest.raises(ValueError, match="rounds_aggregated"):
        s.load_state_dict(bad)
    # the loaded buffers are copies
    s.aggregate_fit(0, {"w": torch.zeros(2)}, [ClientUpdate(0, 1, {"w": torch.ones(2)})])
    sd = s.state_dict()
    t = FedAdam(server_lr=0.1)
    t.load_state_dict(sd)
    sd["buffers"]["m"]["w"].add_(5.0)
    assert not torch.equal(t.state_dict()["buffers"]["m"]["w"], sd["buffers"]["m"]["w"])


def test_deterministic() -> None:
    glob = make_global(40, torch.float32)
    a, _ = run_rounds(FedYogi(server_lr=0.05), glob, range(3))
    b, _ = run_rounds(FedYogi(server_lr=0.05), glob, range(3))
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------- factory


def test_make_strategy_builds_every_strategy() -> None:
    classes = {"fedavg": FedAvg, "fedprox": FedProx, "fedavgm": FedAvgM, "fedadam": FedAdam, "fedyogi": FedYogi,
               "fedadagrad": FedAdagrad, "scaffold": Scaffold, "qffl": QFFL}
    assert set(classes) == set(STRATEGIES)
    for name, cls in classes.items():
        s = make_strategy(name, **({"num_clients": 4} if name == "scaffold" else {}))
        assert type(s) is cls and s.name == name
    s = make_strategy("FedAdam", server_lr=0.5, beta1=0.0)
    assert s.config()["server_lr"] == 0.5 and s.config()["beta1"] == 0.0
    assert make_strategy("fedprox", mu=0.3).configure_fit(0, {}).prox_mu == 0.3


def test_make_strategy_errors_list_valid_choices() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'fedsgd'; valid strategies: fedavg, fedprox, fedavgm"):
        make_strategy("fedsgd")
    valid = r"valid arguments: \['server_lr', 'momentum'\]"
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['lr'\].*" + valid):
        make_strategy("fedavgm", lr=0.1)
    with pytest.raises(ValueError, match=r"needs argument\(s\) \['num_clients'\]"):
        make_strategy("scaffold")
    with pytest.raises(ValueError, match="beta2"):
        make_strategy("fedadagrad", beta2=0.9)


@pytest.mark.parametrize(
    "factory",
    [lambda: FedAvg(server_lr=0.0), lambda: FedAvg(server_lr=math.nan), lambda: FedAvgM(momentum=1.0),
     lambda: FedAdam(beta1=-0.1), lambda: FedYogi(beta2=1.0), lambda: FedAdam(tau=0.0),
     lambda: FedAdagrad(initial_accumulator=-1.0), lambda: Scaffold(num_clients=2, sample_weighted=1)],
)
def test_bad_hyperparameters(factory) -> None:
    with pytest.raises(ValueError):
        factory()
