"""The batched cohort engine gives the same client updates as training clients one by one."""

from __future__ import annotations

import pytest
import torch

from spikefed.data import load_digits_split
from spikefed.federated.cohort import ClientData, client_schedule, train_cohort, train_sequential
from spikefed.federated.types import FitInstructions, params_of
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig


@pytest.fixture(scope="module")
def clients64() -> list[ClientData]:
    d = load_digits_split(seed=0)
    x, y = d.x_train.double(), d.y_train
    sizes = [50, 23, 37, 11]  # unequal sizes: padded, masked batches and clients that stop early
    out, start = [], 0
    for i, n in enumerate(sizes):
        out.append(ClientData(i, x[start:start + n], y[start:start + n]))
        start += n
    return out


def _model(**kw) -> SpikingMLP:
    return SpikingMLP([64, 24, 10], generator=torch.Generator().manual_seed(0), **kw).double()


def _gens(k: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(100 + i) for i in range(k)]


def _max_diff(a, b) -> float:
    return max((ua.params[n] - ub.params[n]).abs().max().item() for ua, ub in zip(a, b) for n in ua.params)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("variant", ["plain", "fedprox", "scaffold", "regularized", "learnable"])
def test_cohort_equals_sequential(clients64, optimizer: str, variant: str) -> None:
    model = _model(learn_beta=True, learn_threshold=True) if variant == "learnable" else _model()
    g = params_of(model)
    cfg_kw = dict(epochs=2, batch_size=16, lr=0.01, optimizer=optimizer, num_steps=6, weight_decay=1e-3,
                  grad_clip=0.5)
    if variant == "regularized":
        cfg_kw.update(reg_l1=0.01, reg_l2=0.01, reg_bounds=0.5, rate_lower=0.05, rate_upper=0.3)
    cfg = TrainConfig(**cfg_kw)
    fit = FitInstructions(1)
    controls = None
    if variant == "fedprox":
        fit = FitInstructions(1, prox_mu=0.3)
    if variant == "scaffold":
        gen = torch.Generator().manual_seed(5)
        fit = FitInstructions(1, server_control={n: torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.01
                                                 for n, p in g.items()})
        controls = [None, {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.01 for n, p in g.items()},
                    None, None]
    a = train_cohort(model, g, clients64, _gens(4), cfg, fit, controls)
    b = train_sequential(model, g, clients64, _gens(4), cfg, fit, controls)
    moved = max((u.params[n] - g[n]).abs().max().item() for u in a for n in u.params)
    assert moved > 1e-3  # training really happened
    assert _max_diff(a, b) < 1e-10
    for ua, ub in zip(a, b):
        assert ua.steps == ub.steps == len(client_schedule(ua.num_samples, cfg, torch.Generator()))
        assert ua.metrics["loss"] == pytest.approx(ub.metrics["loss"], rel=1e-9)
        assert ua.metrics["accuracy"] == pytest.approx(ub.metrics["accuracy"])
        if variant == "scaffold":
            for n in ua.params:
                assert torch.allclose(ua.control_delta[n], ub.control_delta[n], atol=1e-9)


def test_rate_encoded_cohort_matches(clients64) -> None:
    unit = [ClientData(c.client_id, (c.x - c.x.min()) / (c.x.max() - c.x.min()), c.y) for c in clients64]
    model = _model()
    g = params_of(model)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.01, num_steps=5, encoder="rate")
    a = train_cohort(model, g, unit, _gens(4), cfg, FitInstructions(1))
    b = train_sequential(model, g, unit, _gens(4), cfg, FitInstructions(1))
    assert _max_diff(a, b) < 1e-10


def test_local_steps_cap_and_schedule_covers_data() -> None:
    cfg = TrainConfig(epochs=3, batch_size=4)
    sched = client_schedule(10, cfg, torch.Generator().manual_seed(0))
    assert len(sched) == 9  # 3 epochs x ceil(10 / 4)
    for e in range(3):
        assert sorted(torch.cat(sched[3 * e:3 * e + 3]).tolist()) == list(range(10))
    capped = TrainConfig(epochs=3, batch_size=4, local_steps=4)
    assert len(client_schedule(10, capped, torch.Generator().manual_seed(0))) == 4


def test_fedprox_large_mu_keeps_clients_near_global(clients64) -> None:
    """Local minimiser of L + mu/2 ||w - w_t||^2 lies within |grad L| / mu of w_t: drift shrinks as mu grows."""
    model = _model()
    g = params_of(model)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.005, optimizer="sgd", momentum=0.0, num_steps=6)
    drift = []
    for mu in (0.0, 20.0, 200.0):  # lr * mu <= 1: gradient descent on the proximal term is stable
        ups = train_cohort(model, g, clients64, _gens(4), cfg, FitInstructions(1, prox_mu=mu))
        drift.append(max(torch.sqrt(sum(((u.params[n] - g[n]) ** 2).sum() for n in u.params)).item() for u in ups))
    assert drift[0] > drift[1] > drift[2]
    assert drift[2] < 0.25 * drift[0]


def test_sequential_keeps_learnable_decays_on_their_manifold(clients64) -> None:
    """Regression: the sequential engine's private model copy must keep the manifold declarations, so a decay
    pushed past 1 by a large step is projected back (as in the cohort engine) and the update stays valid."""
    from spikefed.federated.aggregation import validate_updates
    from spikefed.manifold import manifold_of

    model = _model(reset="none", learn_beta=True)
    g = params_of(model)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.02, num_steps=5, loss="ce_membrane")
    a = train_cohort(model, g, clients64[:2], _gens(2), cfg, FitInstructions(1))
    b = train_sequential(model, g, clients64[:2], _gens(2), cfg, FitInstructions(1))
    manifolds = {n: manifold_of(p) for n, p in model.named_parameters()}
    for ups in (a, b):
        accepted, rejected = validate_updates(ups, g, None, manifolds)
        assert not rejected, [str(e) for e in rejected]
        assert max(float(u.params["neurons.0.beta"].max()) for u in ups) < 1.0
    assert _max_diff(a, b) < 1e-10


def test_supports_cohort_names_what_stays_sequential() -> None:
    """The generic engine covers conv nets and every neuron; it refuses (with the reason) in-place running
    statistics, random draws in the forward, truncated BPTT and e-prop, and an unknown forward path."""
    from spikefed.experiment.compat import engine_for
    from spikefed.federated.cohort import supports_cohort
    from spikefed.snn.models import SpikingConvNet
    from spikefed.snn.stacked import forward_path

    cfg = TrainConfig(num_steps=4)
    assert supports_cohort(SpikingConvNet((1, 8, 8), 3, channels=(2,)), cfg) is None
    assert supports_cohort(SpikingMLP([4, 3], neuron="ralif"), cfg) is None
    bn = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    assert "running statistics" in supports_cohort(bn, cfg)
    drop = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5))
    assert "random" in supports_cohort(drop, cfg)
    assert "tbptt" in supports_cohort(SpikingMLP([4, 3]), TrainConfig(num_steps=4, tbptt=2))
    assert engine_for("cohort", bn, cfg) == ("sequential", supports_cohort(bn, cfg))
    assert forward_path(SpikingMLP([4, 3])) == "mlp"
    assert forward_path(SpikingMLP([4, 3], neuron="alif")) == "vmap"
    with pytest.raises(ValueError, match="cannot run this model"):
        forward_path(SpikingMLP([4, 3], neuron="alif"), "mlp")
    with pytest.raises(ValueError, match="unknown cohort forward path"):
        forward_path(SpikingMLP([4, 3]), "fast")


def test_a_forward_that_is_not_vmap_friendly_trains_sequentially() -> None:
    """The generic engine probes the forward once under vmap: a layer that branches on data is refused with
    the error as the reason (the run then trains on the sequential engine), not a failure mid-round."""
    from spikefed.federated.cohort import supports_cohort

    class Branchy(SpikingMLP):
        def forward(self, x, state=None):
            out = super().forward(x, state)
            if bool(out.output.sum() > 0):  # data-dependent Python control flow
                return out
            return out

    assert "does not run under torch.func.vmap" in supports_cohort(Branchy([4, 3]), TrainConfig(num_steps=4))
    assert supports_cohort(SpikingMLP([4, 3]), TrainConfig(num_steps=4)) is None
