"""e-prop (spikefed.snn.online) against autograd: equal to BPTT where they coincide, equal to a hand-written
truncated gradient (BPTT with e-prop's stop-gradients) where they do not, and its use as a local trainer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from spikefed.experiment.config import ConfigError, RunSettings, TrainSettings, build_settings
from spikefed.experiment.centralized import build_model
from spikefed.federated.cohort import ClientData, supports_cohort, train_clients, train_sequential
from spikefed.federated.types import FitInstructions, params_of
from spikefed.snn import losses
from spikefed.snn.models import SpikingMLP
from spikefed.snn.online import (EpropLayer, Readout, eprop_backward, eprop_modules, eprop_run, eprop_support,
                                 feedback_matrix, state_bytes)
from spikefed.snn.surrogate import get_surrogate
from spikefed.snn.train import TrainConfig, backward_batch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/forkserver.py (importlib import mode)
from forkserver import run_python  # noqa: E402

D = torch.float64


def _model(neuron: str = "lif", sizes=(5, 7, 3), seed: int = 1, **kw) -> SpikingMLP:
    return SpikingMLP(list(sizes), neuron=neuron, readout="membrane", generator=torch.Generator().manual_seed(seed),
                      **kw).double()


def _batch(steps: int = 20, batch: int = 4, features: int = 5, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(steps, batch, features, generator=g, dtype=D) * 1.5
    return x, torch.randint(0, 3, (batch,), generator=g)


def _bptt(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, reduction: str) -> dict[str, torch.Tensor]:
    out = model(x)
    hidden = out.hidden[0]
    assert 0.05 < float(hidden.detach().mean()) < 0.7  # the layer spikes, but not always: the surrogate terms matter
    loss = losses.ce_membrane_loss(out.output, y, reduction)
    names = [n for n, p in model.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(model.parameters()))))


def _eprop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, reduction: str, **kw) -> dict[str, torch.Tensor]:
    for p in model.parameters():
        p.grad = None
    eprop_backward(model, x, y, reduction, **kw)
    return {n: p.grad for n, p in model.named_parameters()}


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-10, atol=1e-12, msg=n)


def _rel_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# -- where e-prop and BPTT coincide -------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["time_mean", "last"])
@pytest.mark.parametrize("neuron,kw", [
    ("lif", {}),                                            # reset by subtraction, detached (the default)
    ("lif", {"reset": "zero"}),                             # the reset gates the membrane memory
    ("lif", {"reset": "none", "detach_reset": False}),
    ("if", {}),
    ("alif", {}),                                           # detached: spikes do not feed the threshold gradient
    ("alif", {"reset": "none", "detach_reset": False}),     # Bellec's adaptation component eps_a is exact here
])
def test_eprop_equals_bptt_single_layer_no_recurrence_no_reset_path(neuron, kw, reduction) -> None:
    model = _model(neuron, surrogate="fast_sigmoid", slope=5.0, **kw)
    x, y = _batch()
    _close(_eprop(model, x, y, reduction), _bptt(model, x, y, reduction))


def test_alif_adaptation_component_is_exercised() -> None:
    """With spikes feeding the threshold, the adaptation path changes the gradient (so the exact match above
    needs eps_a): the gradient with that path cut (detach_reset=True) differs."""
    x, y = _batch()
    with_path = _bptt(_model("alif", reset="none", detach_reset=False, gamma=1.0), x, y, "time_mean")
    without = _bptt(_model("alif", reset="none", detach_reset=True, gamma=1.0), x, y, "time_mean")
    assert _rel_gap(with_path["linears.0.weight"], without["linears.0.weight"]) > 0.05
    _close(_eprop(_model("alif", reset="none", detach_reset=False, gamma=1.0), x, y, "time_mean"), with_path)


def test_forward_and_loss_match_the_model() -> None:
    model = _model("alif", detach_reset=False)
    x, y = _batch()
    out = model(x)
    loss, ys = eprop_backward(model, x, y, "time_mean")
    torch.testing.assert_close(ys, out.output, rtol=0, atol=1e-12)
    assert loss == pytest.approx(float(losses.ce_membrane_loss(out.output.detach(), y, "time_mean")), rel=1e-12)


# -- where they differ: e-prop equals BPTT with its truncations written out by hand --------------------------

def _truncated_reference(w_in, bias, rec, w_out, b_out, x, y, *, beta, thr, kappa, reset, reduction,
                         surrogate, rho=None, gamma=None, adapt_grad=False):
    """BPTT (autograd) of the network with e-prop's stop-gradients: the reset signal and the recurrent input
    are constants (``.detach()``); the spike -> own threshold path is kept when ``adapt_grad``. Returns the loss
    and the fraction of neurons that spiked at least once."""
    steps, batch = x.shape[:2]
    hidden = w_in.shape[0]
    v = a = z = x.new_zeros(batch, hidden)
    out = x.new_zeros(batch, w_out.shape[0])
    loss = x.new_zeros(())
    fired = torch.zeros(batch, hidden, dtype=torch.bool)
    for t in range(steps):
        drive = x[t] @ w_in.t() + bias
        if rec is not None:
            drive = drive + z.detach() @ rec.t()
        r = z.detach()
        theta = thr
        if rho is not None:
            a = rho * a + (z if adapt_grad else z.detach())
            theta = thr + gamma * a
        if reset == "subtract":
            v = beta * v + drive - r * thr
        elif reset == "zero":
            v = beta * (1 - r) * v + drive
        else:
            v = beta * v + drive
        z = surrogate(v - theta)
        fired |= z.detach() > 0
        out = kappa * out + z @ w_out.t() + b_out
        if reduction == "time_mean":
            loss = loss + F.cross_entropy(out, y) / steps
        elif t == steps - 1:
            loss = loss + F.cross_entropy(out, y)
    return loss, float(fired.double().mean())


def _reference_grads(model: SpikingMLP, x, y, reduction: str) -> dict[str, torch.Tensor]:
    n = model.neurons[0]
    lin, out = model.linears
    rec = getattr(n, "recurrent", None)
    kw = {}
    if hasattr(n, "rho"):
        kw = dict(rho=float(n.rho), gamma=float(n.gamma), adapt_grad=not n.detach_reset)
    loss, _ = _truncated_reference(lin.weight, lin.bias, rec, out.weight, out.bias, x, y, beta=float(n.beta),
                                   thr=float(n.threshold), kappa=float(model.integrator.beta), reset=n.reset,
                                   reduction=reduction, surrogate=n.surrogate, **kw)
    names = [m for m, _ in model.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(model.parameters()))))


@pytest.mark.parametrize("neuron,kw,differing", [
    ("lif", {"detach_reset": False}, ["linears.0.weight", "linears.0.bias"]),  # reset path dropped
    ("lif", {"reset": "zero", "detach_reset": False}, ["linears.0.weight"]),
    ("alif", {"detach_reset": False}, ["linears.0.weight"]),  # reset dropped, adaptation kept
    ("rlif", {}, ["linears.0.weight", "neurons.0.recurrent"]),  # paths through other neurons' spikes dropped
    ("rlif", {"recurrent_scale": 2.0}, ["linears.0.weight", "neurons.0.recurrent"]),
    ("ralif", {}, ["linears.0.weight", "neurons.0.recurrent"]),  # recurrent ALIF (LSNN)
    ("ralif", {"detach_reset": False, "reset": "none"}, ["linears.0.weight", "neurons.0.recurrent"]),
])
def test_eprop_differs_from_bptt_and_equals_the_truncated_gradient(neuron, kw, differing) -> None:
    model = _model(neuron, **kw)
    x, y = _batch()
    full = _bptt(model, x, y, "time_mean")
    ep = _eprop(model, x, y, "time_mean")
    for name in differing:
        assert _rel_gap(ep[name], full[name]) > 0.01, name  # far beyond rounding (the match below: 1e-12)
    # the read-out gradient is exact whatever the hidden layer does
    torch.testing.assert_close(ep["linears.1.weight"], full["linears.1.weight"], rtol=1e-10, atol=1e-12)
    _close(ep, _reference_grads(model, x, y, "time_mean"))


@pytest.mark.parametrize("reset,per_neuron", [("subtract", False), ("zero", True)])
def test_recurrent_alif_layer_matches_truncated_reference(reset: str, per_neuron: bool) -> None:
    """The step functions on a recurrent ALIF layer (no SpikingMLP builds one) against the hand reference;
    also with per-neuron decays / adaptation (tensors of shape [H])."""
    g = torch.Generator().manual_seed(4)
    n_in, hidden, classes = 4, 6, 3
    w_in = torch.randn(hidden, n_in, generator=g, dtype=D) * 0.8 + 0.4
    bias = torch.randn(hidden, generator=g, dtype=D) * 0.1 + 0.2
    rec = torch.randn(hidden, hidden, generator=g, dtype=D) * 0.5
    w_out = torch.randn(classes, hidden, generator=g, dtype=D)
    b_out = torch.randn(classes, generator=g, dtype=D) * 0.1
    x, y = _batch(steps=25, features=n_in, seed=5)
    sur = get_surrogate("sigmoid", 4.0)
    t = lambda v: torch.tensor(v, dtype=D)  # noqa: E731
    beta, rho, gamma = t(0.85), t(0.9), t(0.7)
    if per_neuron:
        beta, rho, gamma = (torch.linspace(0.7, 0.95, hidden, dtype=D), torch.linspace(0.8, 0.97, hidden, dtype=D),
                            torch.linspace(0.2, 1.0, hidden, dtype=D))
    layer = EpropLayer(torch.cat([w_in, rec, bias[:, None]], 1), True, True, beta, t(1.0), t(0.0), reset,
                       sur, rho, gamma, True)
    state, _ = eprop_run(layer, Readout(w_out, b_out, t(0.8), w_out), x, y, "time_mean", record=False)
    params = [p.clone().requires_grad_(True) for p in (w_in, bias, rec, w_out, b_out)]
    loss, fired = _truncated_reference(*params, x, y, beta=beta, thr=1.0, kappa=0.8, reset=reset,
                                       reduction="time_mean", surrogate=sur, rho=rho, gamma=gamma, adapt_grad=True)
    assert fired > 0.5
    g_in, g_b, g_rec, g_out, g_bout = torch.autograd.grad(loss, params)
    torch.testing.assert_close(state.grad, torch.cat([g_in, g_rec, g_b[:, None]], 1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(state.grad_out, g_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(state.grad_out_bias, g_bout, rtol=1e-10, atol=1e-12)
    assert float(state.loss) == pytest.approx(float(loss.detach()), rel=1e-12)


def test_random_feedback_routes_the_learning_signal_through_b() -> None:
    """Random e-prop: the hidden gradient is BPTT's with dE/dz taken through B instead of W_out."""
    model = _model("lif")
    x, y = _batch()
    B = feedback_matrix((3, 7), seed=11, dtype=D)
    lin, out = model.linears
    v = torch.zeros(4, 7, dtype=D)
    mem = torch.zeros(4, 3, dtype=D)
    loss = torch.zeros((), dtype=D)
    n = model.neurons[0]
    z = torch.zeros_like(v)
    for t in range(x.shape[0]):
        v = float(n.beta) * v + x[t] @ lin.weight.t() + lin.bias - z.detach() * float(n.threshold)
        z = n.surrogate(v - float(n.threshold))
        routed = z.detach() @ out.weight.t() + z @ B.t() - (z @ B.t()).detach()  # value W_out z, gradient via B
        mem = float(model.integrator.beta) * mem + routed + out.bias
        loss = loss + F.cross_entropy(mem, y) / x.shape[0]
    ref = dict(zip([m for m, _ in model.named_parameters()], torch.autograd.grad(loss, list(model.parameters()))))
    ep = _eprop(model, x, y, "time_mean", feedback="random", feedback_seed=11)
    _close(ep, ref)
    assert _rel_gap(ep["linears.0.weight"], _bptt(model, x, y, "time_mean")["linears.0.weight"]) > 0.05


def test_feedback_matrix_is_seeded() -> None:
    a, b = feedback_matrix((3, 50), 1), feedback_matrix((3, 50), 1)
    assert torch.equal(a, b) and not torch.equal(a, feedback_matrix((3, 50), 2))
    assert float(a.std()) == pytest.approx(50 ** -0.5, rel=0.25)


# -- the recurrent ALIF layer (LSNN) -----------------------------------------------------------------------

def test_recurrent_alif_layer_follows_its_equations() -> None:
    """RecurrentALIF against the equations written out: a = rho a + s', u = beta u + x + V s' - s' thr,
    s = H(u - thr - gamma a) (s': spikes of the previous step); values and surrogate gradients; step == run."""
    from spikefed.snn.neurons import RecurrentALIF

    layer = RecurrentALIF(6, beta=0.8, rho=0.9, gamma=0.6, threshold=1.0, generator=torch.Generator().manual_seed(3),
                          recurrent_scale=2.0, surrogate="fast_sigmoid").double()
    x = (torch.rand(15, 3, 6, generator=torch.Generator().manual_seed(4), dtype=D) * 1.2).requires_grad_(True)
    out = layer.run(x)
    v = a = s = torch.zeros(3, 6, dtype=D)
    beta, rho, gamma, thr = (float(getattr(layer, n)) for n in ("beta", "rho", "gamma", "threshold"))
    ref_s, ref_u = [], []
    for t in range(15):
        prev = s
        a = rho * a + prev.detach()
        v = beta * v + x[t] + prev @ layer.recurrent.t() - prev.detach() * thr
        s = layer.surrogate(v - thr - gamma * a)
        ref_s.append(s)
        ref_u.append(v)
    ref = torch.stack(ref_s)
    assert 0.1 < float(ref.detach().mean()) < 0.8
    torch.testing.assert_close(out.spikes, ref, rtol=0, atol=0)
    torch.testing.assert_close(out.membrane, torch.stack(ref_u), rtol=0, atol=1e-12)
    w = torch.randn(15, 3, 6, generator=torch.Generator().manual_seed(5), dtype=D)
    got = torch.autograd.grad((out.spikes * w).sum(), [x, layer.recurrent])
    want = torch.autograd.grad((ref * w).sum(), [x, layer.recurrent])
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
    state, steps = None, []
    for t in range(15):
        spk, state = layer.step(x[t].detach(), state)
        steps.append(spk)
    torch.testing.assert_close(torch.stack(steps), out.spikes.detach(), rtol=0, atol=0)


def test_recurrent_alif_is_refused_by_nir_export() -> None:
    pytest.importorskip("nir")
    from spikefed.interop.nir import UnsupportedLayerError, to_nir

    with pytest.raises(UnsupportedLayerError, match="ALIF"):
        to_nir(SpikingMLP([4, 5, 3], neuron="ralif", reset="zero"))


# -- memory ------------------------------------------------------------------------------------------------

def test_no_graph_and_state_independent_of_T() -> None:
    model = _model("alif", detach_reset=False)
    saved = []
    sizes = []
    for steps in (10, 80):
        x, y = _batch(steps=steps)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            state, ys = eprop_run(*eprop_modules(model), x, y, record=False)
        assert ys is None
        sizes.append(state_bytes(state))
    assert saved == [] and sizes[0] == sizes[1]
    # three [B, H, P] tensors + eps_v [B, 1, P] + the rest; P = 5 inputs + bias
    assert sizes[0] >= 8 * (3 * 4 * 7 * 6 + 4 * 6)


# -- refusals ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model,reduction,needle", [
    (SpikingMLP([5, 7, 3]), "time_mean", "model.readout=membrane"),
    (SpikingMLP([5, 7, 6, 3], neuron="alif", readout="membrane"), "time_mean", "lif, if, rlif"),
    (SpikingMLP([5, 3], readout="membrane"), "time_mean", "model.hidden must not be empty"),
    (SpikingMLP([5, 7, 3], neuron="synaptic", readout="membrane"), "time_mean", "lif, if, alif, rlif"),
    (SpikingMLP([5, 7, 3], readout="membrane", learn_beta=True), "time_mean", "learn_beta"),
    (SpikingMLP([5, 7, 3], readout="membrane", refractory=2), "time_mean", "refractory"),
    (SpikingMLP([5, 7, 3], readout="membrane"), "max", "decomposes over time"),
])
def test_unsupported_models_are_refused(model, reduction, needle) -> None:
    reason = eprop_support(model, reduction)
    assert reason is not None and needle in reason
    x, y = _batch()
    with pytest.raises(ValueError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        eprop_backward(model, x.float(), y, reduction)


@pytest.mark.parametrize("kw,needle", [
    ({"loss": "mse_count"}, "decomposes over time"),
    ({"loss": "ce_count"}, "loss=ce_count"),
    ({"membrane_reduction": "max"}, "membrane_reduction=max"),
    ({"tbptt": 5}, "unset tbptt"),
    ({"reg_l1": 0.1}, "reg_l1"),
    ({"population": 2}, "population=1"),
    ({"eprop_feedback": "dfa"}, "eprop_feedback"),
])
def test_train_config_refuses_what_eprop_cannot_do(kw, needle) -> None:
    base = dict(method="eprop", loss="ce_membrane", membrane_reduction="time_mean")
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**{**base, **kw})


def test_config_errors_name_the_keys() -> None:
    with pytest.raises(ConfigError, match="train: method=eprop needs a loss that decomposes") as info:
        build_settings(TrainSettings, None, ["train.method=eprop"])
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="local.method"):
        build_settings(RunSettings, None, ["local.method=rtrl"])
    ok = ["train.method=eprop", "train.loss=ce_membrane", "train.membrane_reduction=time_mean"]
    s = build_settings(TrainSettings, None, ok)
    with pytest.raises(ConfigError, match="model.readout=membrane"):
        build_model(s, 64, 10, torch.Generator().manual_seed(0))
    s = build_settings(TrainSettings, None, ok + ["model.readout=membrane", "model.neuron=alif"])
    assert build_model(s, 64, 10, torch.Generator().manual_seed(0)).neurons[0].rho is not None


# -- as a local trainer ------------------------------------------------------------------------------------

def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"method": "eprop", "loss": "ce_membrane", "membrane_reduction": "time_mean",
                          "num_steps": 8, "batch_size": 8, "epochs": 1, "lr": 0.01, **kw})


def test_backward_batch_eprop_equals_bptt_with_fedprox_term() -> None:
    """Through the trainer: e-prop (exact case) and BPTT give the same gradient, proximal term included."""
    x, y = _batch(steps=8)
    grads = []
    for method in ("eprop", "bptt"):
        model = _model("lif")
        anchor = {n: p.detach() + 0.1 for n, p in model.named_parameters()}
        params = dict(model.named_parameters())
        extra = lambda: 0.5 * 0.3 * sum(((params[n] - anchor[n]) ** 2).sum() for n in params)  # noqa: E731
        loss, out = backward_batch(model, x, y, _cfg(method=method), extra)
        grads.append({n: p.grad for n, p in model.named_parameters()})
        assert out.output.shape == (8, 4, 3)
    _close(grads[0], grads[1])


def test_federated_clients_train_with_eprop_on_the_sequential_engine() -> None:
    g = torch.Generator().manual_seed(3)
    clients = [ClientData(i, torch.rand(12, 5, generator=g, dtype=D), torch.randint(0, 3, (12,), generator=g))
               for i in range(2)]
    model = _model("lif")  # a model the batched engine would run with BPTT
    cfg = _cfg()
    assert supports_cohort(model, _cfg(method="bptt", loss="mse_count")) is None
    assert "sequential" in supports_cohort(model, cfg)
    gens = lambda: [torch.Generator().manual_seed(10 + i) for i in range(2)]  # noqa: E731
    with pytest.raises(ValueError, match="engine=cohort cannot train this model"):  # no silent fallback
        train_clients("cohort", model, params_of(model), clients, gens(), cfg, FitInstructions(1))
    from spikefed.experiment.compat import engine_for

    engine, note = engine_for("cohort", model, cfg)  # what a run picks, printed and recorded
    assert engine == "sequential" and "sequential" in note
    via_cohort = train_clients(engine, model, params_of(model), clients, gens(), cfg, FitInstructions(1))
    direct = train_sequential(model, params_of(model), clients, gens(), cfg, FitInstructions(1))
    start = params_of(model)
    for a, b in zip(via_cohort, direct):
        assert a.steps == b.steps == 2
        for n in start:
            torch.testing.assert_close(a.params[n], b.params[n], rtol=0, atol=0)
        assert any(not torch.equal(a.params[n], start[n]) for n in start)  # training moved the weights


def test_eprop_learns_digits() -> None:
    """A few e-prop epochs on a digits subset lift test accuracy far above chance (0.1)."""
    from spikefed.data import load_digits_split
    from spikefed.snn.train import evaluate, fit

    d = load_digits_split(seed=0)
    cfg = _cfg(epochs=3, num_steps=10, batch_size=32, lr=0.01)
    gen = torch.Generator().manual_seed(0)
    model = SpikingMLP([64, 32, 10], neuron="rlif", readout="membrane", generator=gen)
    before = evaluate(model, d.x_test, d.y_test, cfg).accuracy
    fit(model, d.x_train[:400], d.y_train[:400], cfg, gen)
    after = evaluate(model, d.x_test, d.y_test, cfg).accuracy
    assert after > 0.6 and after > before + 0.3


def test_simulation_round_with_eprop_clients() -> None:
    from spikefed.experiment.runner import build_spec
    from spikefed.federated.simulation import Simulation

    settings = build_settings(RunSettings, None, [
        "partition.num_clients=3", "federation.fraction=1", "federation.rounds=1", "model.hidden=[16]",
        "model.readout=membrane", "local.method=eprop", "local.loss=ce_membrane",
        "local.membrane_reduction=last", "local.local_steps=2", "local.num_steps=6"])
    sim = Simulation(build_spec(settings))
    before = {n: p.clone() for n, p in sim.state.global_params.items()}
    row = sim.run_round()
    assert row["round"] == 1 and 0 <= row["accuracy"] <= 1
    assert any(not torch.equal(before[n], sim.state.global_params[n]) for n in before)


@pytest.mark.slow
def test_cli_train_with_eprop() -> None:
    base = ["-m", "spikefed.cli", "train"]
    sets = ["train.method=eprop", "train.loss=ce_membrane", "train.membrane_reduction=time_mean",
            "model.readout=membrane", "model.hidden=[32]", "train.epochs=2", "train.num_steps=8", "train.lr=0.01"]
    r = run_python(base + ["--json"] + [a for s in sets for a in ("--set", s)], timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["test_accuracy"] > 0.6
    bad = run_python(base + ["--set", "train.method=eprop"], timeout=300)
    assert bad.returncode == 2 and "decomposes over time" in bad.stderr + bad.stdout
