"""The batched cohort engine against its reference, the sequential engine with ``torch.optim``.

One parametrised test, float64, atol 1e-10, over model kind x neuron x loss x encoder x read-out x population x
regulariser x FedProx/SCAFFOLD/continual x optimizer x forward path. The full product is ~60,000 cases; the
cases below cover every *pair* of values (all-pairs coverage, built greedily at collection time and checked
below), which catches every fault that needs two settings to show.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch import nn

from spikefed.federated.aggregation import aggregate_params, normalized_weights
from spikefed.federated.cohort import ClientData, supports_cohort, train_cohort, train_sequential
from spikefed.federated.continual import StabilityPenalty
from spikefed.federated.types import FitInstructions, params_of
from spikefed.manifold import manifold_of
from spikefed.snn.delay import Delay
from spikefed.snn.models import ModelOutput, SpikingConvNet, SpikingMLP, init_linear
from spikefed.snn.neurons import LeakyIntegrator, make_neuron
from spikefed.snn.stacked import forward_path

CLASSES = 3

DIMENSIONS: dict[str, tuple[str, ...]] = {
    "model": ("mlp", "conv", "delay", "mlp_delays"),
    "neuron": ("lif", "if", "synaptic", "alif", "rlif", "ralif", "refractory", "graded", "learnable"),
    "loss": ("mse_count", "ce_count", "ce_membrane", "ce_temporal", "mse_membrane"),
    "reduction": ("max", "last", "time_mean"),
    "encoder": ("direct", "rate", "latency"),
    "readout": ("spikes", "membrane"),
    "population": ("1", "2"),
    "regulariser": ("none", "l1", "l2", "bounds"),
    "term": ("none", "fedprox", "scaffold", "continual"),
    "optimizer": ("adam", "sgd"),
    "path": ("auto", "vmap"),
}

#: neuron name -> (make_neuron kind, keyword arguments)
NEURONS: dict[str, tuple[str, dict[str, Any]]] = {
    "lif": ("lif", {}),
    "if": ("if", {}),
    "synaptic": ("synaptic", {"learn_alpha": True}),
    "alif": ("alif", {"learn_adaptation": True}),
    "rlif": ("rlif", {}),
    "ralif": ("ralif", {}),
    "refractory": ("lif", {"refractory": 2}),
    "graded": ("lif", {"graded": True}),
    "learnable": ("lif", {"learn_beta": True, "learn_threshold": True, "learn_reset": True}),
}


def _valid(case: dict[str, str]) -> bool:
    # SpikingConvNet refuses recurrent neurons (a recurrent matrix over a feature map)
    if case.get("loss") == "mse_membrane" and case.get("readout") == "spikes":
        return False  # the membrane rate loss regresses the output potential (model.readout=membrane)
    return not (case.get("model") == "conv" and case.get("neuron") in ("rlif", "ralif"))


def _all_pairs(dims: dict[str, tuple[str, ...]]) -> list[dict[str, str]]:
    """Greedy all-pairs design: every valid pair of values of two dimensions appears in some case."""
    names = list(dims)
    todo = {((a, va), (b, vb)) for a, b in itertools.combinations(names, 2) for va in dims[a] for vb in dims[b]
            if _valid({a: va, b: vb})}
    cases: list[dict[str, str]] = []
    while todo:
        (a, va), (b, vb) = min(todo)
        case = {a: va, b: vb}
        for n in names:
            if n in case:
                continue
            best = max((v for v in dims[n] if _valid({**case, n: v})),
                       key=lambda v: sum(((m, case[m]), (n, v)) in todo or ((n, v), (m, case[m])) in todo
                                         for m in case))
            case[n] = best
        for a2, b2 in itertools.combinations(names, 2):
            todo.discard(((a2, case[a2]), (b2, case[b2])))
        cases.append(case)
    return cases


CASES = _all_pairs(DIMENSIONS)


def test_design_covers_every_pair() -> None:
    """The design itself: every valid pair is in some case, and no case is invalid."""
    names = list(DIMENSIONS)
    for a, b in itertools.combinations(names, 2):
        for va, vb in itertools.product(DIMENSIONS[a], DIMENSIONS[b]):
            if _valid({a: va, b: vb}):
                assert any(c[a] == va and c[b] == vb for c in CASES), (a, va, b, vb)
    assert all(_valid(c) for c in CASES)
    assert len(CASES) < 70  # far fewer than the product


class DelayNet(nn.Module):
    """Test-only model with a learnable axonal delay between two layers:
    ``Linear -> neuron -> Delay -> Linear -> neuron | leaky integrator``."""

    def __init__(self, sizes: tuple[int, int, int], neuron: str, readout: str, generator: torch.Generator,
                 **kw: Any) -> None:
        super().__init__()
        a, h, c = sizes
        self.fc1, self.fc2 = nn.Linear(a, h), nn.Linear(h, c)
        init_linear([self.fc1, self.fc2], generator)
        extra = {"generator": generator} if neuron in ("rlif", "ralif") else {}
        self.n1 = make_neuron(neuron, h, **kw, **extra)
        self.delay = Delay(h, max_delay=3, init="uniform", learnable=True, generator=generator)
        self.n2 = make_neuron(neuron, c, **kw, **extra) if readout == "spikes" else None
        self.out = LeakyIntegrator(c, beta=0.8) if readout == "membrane" else None

    def forward(self, x: torch.Tensor, state: Any = None) -> ModelOutput:
        s1 = self.n1.run(self.fc1(x)).spikes
        d, _ = self.delay(s1)
        z = self.fc2(d)
        if self.n2 is not None:
            o = self.n2.run(z)
            return ModelOutput(o.spikes, o.membrane, [s1, o.spikes], [])
        assert self.out is not None
        y, _ = self.out(z)
        return ModelOutput(y, y, [s1], [])


def _model(case: dict[str, str]) -> nn.Module:
    kind, kw = NEURONS[case["neuron"]]
    gen = torch.Generator().manual_seed(3)
    width = CLASSES * int(case["population"])
    readout = case["readout"]
    if case["model"] == "mlp":
        model: nn.Module = SpikingMLP([12, 10, width], neuron=kind, readout=readout, generator=gen, **kw)
    elif case["model"] == "mlp_delays":  # the run's own delay model (model.delays)
        model = SpikingMLP([12, 10, width], neuron=kind, readout=readout, generator=gen, delays=3, **kw)
    elif case["model"] == "conv":
        model = SpikingConvNet((1, 6, 6), width, channels=(3,), kernel_size=3, neuron=kind, readout=readout,
                               generator=gen, **kw)
    else:
        model = DelayNet((12, 10, width), kind, readout, gen, **kw)
    return model.double()


def _clients(case: dict[str, str]) -> list[ClientData]:
    gen = torch.Generator().manual_seed(11)
    shape = (1, 6, 6) if case["model"] == "conv" else (12,)
    out = []
    for i, n in enumerate([9, 5, 7]):  # unequal: padded batches, clients that stop early
        x = torch.rand((n, *shape), generator=gen, dtype=torch.float64) * 1.5
        if case["encoder"] != "direct":
            x = x.clamp(max=1.0)  # rate / latency code intensities in [0, 1]
        out.append(ClientData(i, x, torch.randint(0, CLASSES, (n,), generator=gen)))
    return out


def _config(case: dict[str, str]) -> Any:
    from spikefed.snn.train import TrainConfig

    reg = {"none": {}, "l1": {"reg_l1": 0.05}, "l2": {"reg_l2": 0.05},
           "bounds": {"reg_bounds": 0.5, "rate_lower": 0.1, "rate_upper": 0.3}}[case["regulariser"]]
    return TrainConfig(epochs=1, batch_size=4, lr=0.02, optimizer=case["optimizer"], num_steps=5,
                       encoder=case["encoder"], loss=case["loss"], membrane_reduction=case["reduction"],
                       population=int(case["population"]), weight_decay=1e-3, grad_clip=2.0, **reg)


def _terms(case: dict[str, str], g: dict[str, torch.Tensor]) -> tuple[FitInstructions, Any, Any]:
    gen = torch.Generator().manual_seed(5)

    def noise(scale: float) -> dict[str, torch.Tensor]:
        return {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale for n, p in g.items()}

    if case["term"] == "fedprox":
        return FitInstructions(1, prox_mu=0.5), None, None
    if case["term"] == "scaffold":
        return FitInstructions(1, server_control=noise(0.05)), [None, noise(0.05), noise(0.05)], None
    if case["term"] == "continual":  # L2 anchor for one client, EWC (Fisher weights) for another, none for one
        anchor = {n: p + d for (n, p), d in zip(g.items(), noise(0.1).values())}
        fisher = {n: v.abs() for n, v in noise(1.0).items()}
        return FitInstructions(1), None, [StabilityPenalty(0.3, anchor), None, StabilityPenalty(0.2, anchor, fisher)]
    return FitInstructions(1), None, None


def _case_id(case: dict[str, str]) -> str:
    return "-".join(case[n] for n in DIMENSIONS)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_cohort_matches_sequential(case: dict[str, str]) -> None:
    model = _model(case)
    cfg = _config(case)
    assert supports_cohort(model, cfg) is None  # every case trains on the batched engine
    g = {n: p for n, p in params_of(model).items() if dict(model.named_parameters())[n].requires_grad}
    fit, controls, penalties = _terms(case, g)
    clients = _clients(case)

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(100 + i) for i in range(len(clients))]

    a = train_cohort(model, g, clients, gens(), cfg, fit, controls, penalties=penalties, path=case["path"])
    b = train_sequential(model, g, clients, gens(), cfg, fit, controls, penalties=penalties)
    if case["path"] == "auto" and case["model"] == "mlp" and case["neuron"] in ("lif", "if", "graded",
                                                                                  "learnable"):
        assert forward_path(model) == "mlp"  # the hand-written path was the one compared here
    moved = max(float((u.params[n] - g[n]).abs().max()) for u in b for n in u.params)
    assert moved > 1e-4  # training really happened
    for ua, ub in zip(a, b):
        assert ua.steps == ub.steps
        assert set(ua.params) == set(ub.params) == set(g)
        for n in ua.params:
            assert torch.allclose(ua.params[n], ub.params[n], rtol=0, atol=1e-10), (n, ua.client_id)
        assert ua.metrics["loss"] == pytest.approx(ub.metrics["loss"], rel=1e-9, abs=1e-12)
        assert ua.metrics["accuracy"] == pytest.approx(ub.metrics["accuracy"])
        if fit.server_control is not None:
            for n in ua.params:
                assert torch.allclose(ua.control_delta[n], ub.control_delta[n], rtol=0, atol=1e-8)
    manifolds = {n: manifold_of(p) for n, p in model.named_parameters() if n in g}
    weights = normalized_weights([u.num_samples for u in b])
    agg_a = aggregate_params([u.params for u in a], weights, manifolds)
    agg_b = aggregate_params([u.params for u in b], weights, manifolds)
    for n in agg_a:
        assert torch.allclose(agg_a[n], agg_b[n], rtol=0, atol=1e-10), n


@pytest.mark.parametrize("conv", ["loop", "grouped"])
@pytest.mark.parametrize("max_clients", [1, 2, None])
def test_chunked_cohort_matches_sequential(max_clients: int | None, conv: str) -> None:
    """Chunks of the cohort (federated.cohort_memory): the same updates as the sequential engine, with per-client
    SCAFFOLD controls, step budgets and continual penalties sliced along with the clients; both convolution
    rules of the stacked forward (snn/client_conv.py: one convolution per client, or PyTorch's grouped one)."""
    case = {"model": "conv", "neuron": "lif", "loss": "ce_count", "reduction": "max", "encoder": "rate",
            "readout": "spikes", "population": "1", "regulariser": "l1", "term": "scaffold", "optimizer": "adam",
            "path": "vmap"}
    model, cfg, clients = _model(case), _config(case), _clients(case)
    g = {n: p for n, p in params_of(model).items() if dict(model.named_parameters())[n].requires_grad}
    fit, controls, _ = _terms(case, g)
    budgets = [2, None, 1]

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(100 + i) for i in range(len(clients))]

    a = train_cohort(model, g, clients, gens(), cfg, fit, controls, budgets, path="vmap", max_clients=max_clients,
                     conv=conv)
    b = train_sequential(model, g, clients, gens(), cfg, fit, controls, budgets)
    assert [u.client_id for u in a] == [u.client_id for u in b] and [u.steps for u in a] == [u.steps for u in b]
    for ua, ub in zip(a, b):
        for n in ua.params:
            assert torch.allclose(ua.params[n], ub.params[n], rtol=0, atol=1e-10), (n, ua.client_id)
            assert torch.allclose(ua.control_delta[n], ub.control_delta[n], rtol=0, atol=1e-8)
