"""Aggregation weights (samples | uniform) against a plain mean, and q-FFL against a plain numpy q-FedAvg step;
q-FFL end to end (each client's loss at the received model travels in its upload); config refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec, fingerprint
from spikefed.federated.aggregation import InvalidUpdate
from spikefed.federated.qffl import QFFL, START_LOSS, qffl_step
from spikefed.federated.simulation import Simulation
from spikefed.federated.strategies import STRATEGIES, make_strategy
from spikefed.federated.types import ClientUpdate
from spikefed.manifold import POSITIVE, UNIT_INTERVAL


def _updates(seed: int = 0, n: tuple[int, ...] = (10, 30, 60)) -> tuple[dict, list[ClientUpdate]]:
    g = torch.Generator().manual_seed(seed)
    glob = {"w": torch.randn(4, 3, generator=g, dtype=torch.float64),
            "thr": torch.rand(3, generator=g, dtype=torch.float64) + 0.5,
            "decay": torch.rand(3, generator=g, dtype=torch.float64) * 0.8 + 0.1}
    ups = []
    for k, nk in enumerate(n):
        p = {"w": glob["w"] + 0.3 * torch.randn(4, 3, generator=g, dtype=torch.float64),
             "thr": glob["thr"] * torch.exp(0.2 * torch.randn(3, generator=g, dtype=torch.float64)),
             "decay": (glob["decay"] + 0.05 * torch.randn(3, generator=g, dtype=torch.float64)).clamp(0.05, 0.95)}
        ups.append(ClientUpdate(k, nk, p, metrics={START_LOSS: 0.5 + k}))
    return glob, ups


def test_uniform_weights_give_the_plain_mean_and_samples_the_weighted_one() -> None:
    glob, ups = _updates()
    for name in ("fedavg", "fedprox", "fedavgm"):
        s = make_strategy(name).set_weighting("uniform")
        assert s.client_weights(ups).tolist() == pytest.approx([1 / 3] * 3)
    new = make_strategy("fedavg").set_weighting("uniform").aggregate_fit(1, glob, ups, {"thr": POSITIVE})
    w = np.stack([u.params["w"].numpy() for u in ups])
    np.testing.assert_allclose(new["w"].numpy(), w.mean(0), atol=1e-12)  # plain 1/N mean
    thr = np.stack([u.params["thr"].numpy() for u in ups])
    np.testing.assert_allclose(new["thr"].numpy(), np.exp(np.log(thr).mean(0)), rtol=1e-12)  # geometric on R+
    new = make_strategy("fedavg").aggregate_fit(1, glob, ups)  # default: n_k / n
    np.testing.assert_allclose(new["w"].numpy(), np.tensordot(np.array([10, 30, 60]) / 100, w, 1), atol=1e-12)
    with pytest.raises(ValueError, match="weighting"):
        make_strategy("fedavg").set_weighting("median")


def _np_qffl(glob: dict, ups: list[ClientUpdate], q: float, lip: float) -> dict:
    """q-FedAvg (Li et al. 2020, Algorithm 2) in numpy, charts: identity / log / logit."""
    charts = {"w": (lambda x: x, lambda y: y), "thr": (np.log, np.exp),
              "decay": (lambda x: np.log(x / (1 - x)), lambda y: 1 / (1 + np.exp(-y)))}
    f = np.array([u.metrics[START_LOSS] for u in ups])
    dw = [{n: lip * (charts[n][0](glob[n].numpy()) - charts[n][0](u.params[n].numpy())) for n in glob} for u in ups]
    h = [q * f[k] ** (q - 1) * sum((d ** 2).sum() for d in dw[k].values()) + lip * f[k] ** q for k in range(len(ups))]
    out = {}
    for n in glob:
        step = sum(f[k] ** q * dw[k][n] for k in range(len(ups))) / sum(h)
        out[n] = charts[n][1](charts[n][0](glob[n].numpy()) - step)
    return out


@pytest.mark.parametrize("q,lip", [(0.0, 5.0), (1.0, 10.0), (2.0, 3.0), (0.5, 50.0)])
def test_qffl_step_matches_a_plain_implementation(q: float, lip: float) -> None:
    glob, ups = _updates(1)
    manifolds = {"thr": POSITIVE, "decay": UNIT_INTERVAL}
    got = QFFL(q, lip).aggregate_fit(1, glob, ups, manifolds)
    ref = _np_qffl(glob, ups, q, lip)
    for n in glob:
        np.testing.assert_allclose(got[n].numpy(), ref[n], rtol=1e-10, atol=1e-12)
    assert qffl_step(glob, [u.params for u in ups], [0.5, 1.5, 2.5], q, lip, manifolds)["w"].shape == (4, 3)


def test_qffl_with_q0_is_the_uniform_mean_and_larger_q_favours_the_high_loss_client() -> None:
    glob, ups = _updates(2)
    got = QFFL(0.0, 7.0).aggregate_fit(1, glob, ups)
    np.testing.assert_allclose(got["w"].numpy(), np.stack([u.params["w"].numpy() for u in ups]).mean(0), atol=1e-12)
    # one client with a much higher loss: the step moves towards its model as q grows
    ups[2].metrics[START_LOSS] = 20.0
    dist = [float((QFFL(q, 1.0).aggregate_fit(1, glob, ups)["w"] - ups[2].params["w"]).norm()) for q in (0, 1, 3)]
    assert dist[0] > dist[1] > dist[2]


def test_qffl_refuses_updates_without_a_loss_and_external_targets() -> None:
    glob, ups = _updates(3)
    del ups[1].metrics[START_LOSS]
    s = QFFL()
    with pytest.raises(InvalidUpdate, match="start_loss") as e:
        s.aggregate_fit(1, glob, ups)
    assert e.value.client_id == 1 and s.rounds_aggregated == 0
    with pytest.raises(ValueError, match="externally aggregated"):
        s.step_to_target(1, glob, glob)
    with pytest.raises(ValueError, match="q must be"):
        QFFL(-1.0)
    assert "qffl" in STRATEGIES and isinstance(make_strategy("qffl", q=2.0), QFFL)


def _small(*overrides: str) -> RunSettings:
    base = ["partition.num_clients=6", "partition.min_size=5", "federation.rounds=2", "federation.fraction=0.5",
            "model.hidden=[16]", "local.num_steps=4", "local.epochs=1"]
    return build_settings(RunSettings, None, base + list(overrides))


def test_qffl_run_sends_each_clients_loss_and_checkpoints(tmp_path) -> None:
    settings = _small("federation.strategy=qffl", "federation.qffl_q=1.0")
    sim = Simulation(build_spec(settings))
    assert sim.stage("fairness") is not None and sim.spec.strategy.lipschitz == pytest.approx(1 / settings.local.lr)
    seen: list[float] = []
    orig = sim.spec.strategy.aggregate_fit

    def spy(rnd, gp, ups, *a, **kw):  # type: ignore[no-untyped-def]
        seen.extend(u.metrics[START_LOSS] for u in ups)
        return orig(rnd, gp, ups, *a, **kw)

    sim.spec.strategy.aggregate_fit = spy  # type: ignore[method-assign]
    row = sim.run_round()
    assert row["accepted"] == 3 and len(seen) == 3 and all(v > 0 for v in seen)
    # reference for one client: its loss at the broadcast model on its own data
    from spikefed.seeding import Purpose, torch_generator
    from spikefed.snn.train import evaluate
    from spikefed.federated.types import load_params_

    fresh = Simulation(build_spec(settings))
    c = fresh.clients[row["participation"]["accepted"][0]]
    load_params_(fresh.spec.model, fresh.state.global_params)
    ref = evaluate(fresh.spec.model, c.x, c.y, fresh.spec.local,
                   torch_generator(settings.seed, Purpose.CLIENT_LOSS, 1, c.client_id)).loss
    assert seen[0] == pytest.approx(ref)
    sim.save_checkpoint(tmp_path / "c.pt")
    again = Simulation(build_spec(settings))
    again.load_checkpoint(tmp_path / "c.pt")
    assert again.run_round()["round"] == 2


def test_fingerprint_unchanged_at_defaults() -> None:
    """The new keys stay out of the fingerprint at their defaults (old checkpoints stay resumable); the refusals
    of q-FFL and uniform weights are tested row by row in tests/test_compat.py."""
    assert fingerprint(_small()) == fingerprint(_small("federation.weights=samples", "federation.qffl_q=1.0"))
    assert fingerprint(_small()) != fingerprint(_small("federation.weights=uniform"))


def test_config_sets_the_weighting() -> None:
    assert build_spec(_small("federation.weights=uniform")).strategy.weighting == "uniform"
    assert build_spec(_small()).strategy.weighting == "samples"
