"""NIR export/import: exact round trips, HDF5 files, an independent numpy simulation of NIR semantics, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")

from spikefed.interop import (  # noqa: E402
    Gained,
    GraphExecutor,
    NIRConversionError,
    UnsupportedLayerError,
    from_nir,
    load_nir,
    save_nir,
    to_nir,
)
from spikefed.manifold import EUCLIDEAN, POSITIVE, UNIT_INTERVAL, manifold_of  # noqa: E402
from spikefed.snn import (  # noqa: E402
    IF,
    LIF,
    Delay,
    LeakyIntegrator,
    RecurrentRegressor,
    SpikingConvNet,
    SpikingMLP,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _input(*shape: int, seed: int = 1, scale: float = 2.0) -> torch.Tensor:
    return torch.rand(*shape, generator=_gen(seed)) * scale


def _assert_identical(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
    assert torch.equal(out_a.output, out_b.output)
    assert torch.equal(out_a.membrane, out_b.membrane)
    assert len(out_a.hidden) == len(out_b.hidden)
    for ha, hb in zip(out_a.hidden, out_b.hidden):
        assert torch.equal(ha, hb)


def _fires(model: nn.Module, x: torch.Tensor) -> None:
    """Guard against vacuous comparisons: every hidden spiking layer must spike somewhere, but not everywhere."""
    with torch.no_grad():
        out = model(x)
    for h in out.hidden:
        assert 0 < float((h != 0).float().mean()) < 1


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("neuron", ["lif", "if", "synaptic", "rlif"])
@pytest.mark.parametrize("readout", ["spikes", "membrane"])
def test_mlp_round_trip_is_identical(neuron: str, readout: str) -> None:
    kw = {} if neuron == "if" else {"beta": 0.83}
    model = SpikingMLP([8, 16, 12, 4], neuron=neuron, readout=readout, reset="zero", threshold=0.7,
                       generator=_gen(), **kw)
    x = _input(25, 3, 8)
    _fires(model, x)
    back = from_nir(to_nir(model))
    assert type(back) is SpikingMLP and back.readout == readout
    assert [type(n) for n in back.neurons] == [type(n) for n in model.neurons]
    _assert_identical(model, back, x)


def test_mlp_subtract_reset_round_trip_through_metadata() -> None:
    model = SpikingMLP([8, 16, 4], generator=_gen())  # spikefed's default reset: subtract
    x = _input(25, 3, 8)
    _fires(model, x)
    graph = to_nir(model, reset="metadata")
    lif = graph.nodes["lif_0"]
    assert isinstance(lif, nir.LIF) and np.all(lif.v_reset == 0)  # what other tools simulate: reset to 0
    assert lif.metadata["spikefed"]["reset"] == "subtract"
    back = from_nir(graph)
    assert all(n.reset == "subtract" for n in back.neurons)
    _assert_identical(model, back, x)


def test_reset_none_is_exported_exactly_as_integrator_plus_threshold() -> None:
    model = SpikingMLP([8, 10, 4], neuron="lif", reset="none", threshold=1.5, generator=_gen(2))
    x = _input(20, 2, 8)
    _fires(model, x)
    graph = to_nir(model)
    assert isinstance(graph.nodes["lif_0"], nir.LI) and isinstance(graph.nodes["lif_0_spike"], nir.Threshold)
    assert ("lif_0", "lif_0_spike") in graph.edges
    back = from_nir(graph)
    assert type(back) is SpikingMLP and back.neurons[0].reset == "none"
    _assert_identical(model, back, x)
    # the unfused graph (plain LI + Threshold executor ops, as another tool's graph would run) is identical too
    back_ex = from_nir(graph, structured=False)
    assert isinstance(back_ex, GraphExecutor)
    _assert_identical(model, back_ex, x)


@pytest.mark.parametrize("neuron", ["if", "synaptic"])
def test_reset_none_if_and_synaptic(neuron: str) -> None:
    model = SpikingMLP([6, 9, 3], neuron=neuron, reset="none", threshold=2.0, generator=_gen())
    graph = to_nir(model)
    expected = {"if": nir.I, "synaptic": nir.CubaLI}[neuron]
    assert isinstance(graph.nodes[f"{neuron}_0"], expected)
    _assert_identical(model, from_nir(graph), _input(20, 2, 6))


def test_graded_recurrent_round_trip() -> None:
    model = SpikingMLP([8, 12, 4], neuron="rlif", reset="zero", graded=True, generator=_gen())
    with torch.no_grad():
        for n in model.neurons:
            n.amplitude.copy_(torch.rand(n.amplitude.shape, generator=_gen(3)) + 0.5)
    graph = to_nir(model)
    assert ("rlif_0", "rlif_0_rec") in graph.edges and ("rlif_0_rec", "rlif_0") in graph.edges  # the cycle
    assert isinstance(graph.nodes["rlif_0_amplitude"], nir.Scale)
    back = from_nir(graph)
    assert back.neurons[0].graded
    assert torch.equal(back.neurons[0].recurrent, model.neurons[0].recurrent)
    _assert_identical(model, back, _input(25, 3, 8))


def test_convnet_round_trip_is_identical() -> None:
    model = SpikingConvNet((1, 8, 8), 5, channels=(4, 6), reset="zero", beta=0.8, threshold=0.5, generator=_gen())
    x = _input(12, 2, 1, 8, 8, scale=3.0)
    _fires(model, x)
    graph = to_nir(model)
    types = {type(n).__name__ for n in graph.nodes.values()}
    assert {"Conv2d", "LIF", "SumPool2d", "Threshold", "Flatten", "Affine"} <= types
    back = from_nir(graph)
    assert type(back) is SpikingConvNet
    _assert_identical(model, back, x)


def test_convnet_membrane_readout_synaptic() -> None:
    model = SpikingConvNet((2, 6, 6), 3, channels=(4,), neuron="synaptic", readout="membrane", reset="zero",
                           generator=_gen())
    back = from_nir(to_nir(model))
    assert type(back) is SpikingConvNet and back.readout == "membrane"
    _assert_identical(model, back, _input(10, 2, 2, 6, 6, scale=3.0))


def test_recurrent_regressor_round_trip() -> None:
    model = RecurrentRegressor(3, 10, 2, reset="zero", generator=_gen())
    back = from_nir(to_nir(model))
    assert type(back) is RecurrentRegressor
    _assert_identical(model, back, _input(30, 2, 3))


@pytest.mark.parametrize("learnable", [False, True])
def test_delay_round_trip(learnable: bool) -> None:
    model = GraphExecutor.sequential(
        nn.Linear(5, 6), Delay(6, 4, init="uniform", learnable=learnable, generator=2),
        LIF(6, reset="zero", beta=0.9), nn.Linear(6, 3), LeakyIntegrator(3, beta=0.7), input_shape=(5,))
    x = _input(20, 3, 5)
    graph = to_nir(model, dt=0.25)
    node = graph.nodes["delay_0"]
    assert isinstance(node, nir.Delay)
    np.testing.assert_allclose(node.delay, model.node("delay_0").effective_delays().double().numpy() * 0.25)
    back = from_nir(graph)
    assert isinstance(back, GraphExecutor)
    delay = back.node("delay_0")
    assert delay.max_delay == 4 and delay.learnable == learnable
    _assert_identical(model, back, x)


def test_sequential_with_skip_connection_and_avgpool() -> None:
    lif = LIF((2, 4, 4), reset="zero", threshold=0.3)
    nodes = {"conv": nn.Conv2d(1, 2, 3, padding=1), "lif": lif, "pool": nn.AvgPool2d(2),
             "flat": nn.Flatten(), "fc": nn.Linear(8, 3), "fc_skip": nn.Linear(16, 3),
             "flat_in": nn.Flatten(), "out": LIF(3, reset="zero", threshold=0.2)}
    edges = [("input", "conv"), ("conv", "lif"), ("lif", "pool"), ("pool", "flat"), ("flat", "fc"),
             ("input", "flat_in"), ("flat_in", "fc_skip"), ("fc", "out"), ("fc_skip", "out"), ("out", "output")]
    model = GraphExecutor(nodes, edges, input_shape=(1, 4, 4))
    back = from_nir(to_nir(model))
    assert isinstance(back, GraphExecutor)
    _assert_identical(model, back, _input(15, 2, 1, 4, 4))


# ------------------------------------------------------------------------------------------ exact values, options


def test_fields_follow_the_euler_mapping() -> None:
    dt = 0.5
    model = SpikingMLP([4, 6, 3], neuron="synaptic", readout="membrane", reset="zero", alpha=0.6, beta=0.85,
                       threshold=0.9, generator=_gen())
    graph = to_nir(model, dt=dt, fold_r=False)  # the unfolded mapping (fold_r: tests/interop/test_nir_tools.py)
    cuba, li = graph.nodes["synaptic_0"], graph.nodes["li_0"]
    beta, alpha = float(torch.tensor(0.85)), float(torch.tensor(0.6))  # the float32 values, in float64
    np.testing.assert_allclose(cuba.tau_mem, dt / (1 - beta), rtol=1e-15)
    np.testing.assert_allclose(cuba.tau_syn, dt / (1 - alpha), rtol=1e-15)
    np.testing.assert_allclose(cuba.r, cuba.tau_mem / dt, rtol=1e-15)
    np.testing.assert_allclose(cuba.w_in, cuba.tau_syn / dt, rtol=1e-15)
    assert np.all(cuba.v_leak == 0) and np.all(cuba.v_reset == 0)
    np.testing.assert_allclose(cuba.v_threshold, float(torch.tensor(0.9)))
    np.testing.assert_allclose(li.tau, dt / (1 - beta), rtol=1e-15)
    assert graph.metadata["spikefed"]["dt"] == dt
    # an IF neuron: dv/dt = R I with R = 1/dt
    if_graph = to_nir(SpikingMLP([4, 3], neuron="if", reset="zero"), dt=dt, fold_r=False)
    np.testing.assert_allclose(if_graph.nodes["if_0"].r, 1 / dt)


@pytest.mark.parametrize("dt", [1.0, 0.1, 1e-3])
def test_float64_fields_alone_reproduce_float32_decays_exactly(dt: float) -> None:
    """Without any metadata, beta -> tau (float64) -> beta rounds back to the same float32 values."""
    model = SpikingMLP([8, 20, 4], neuron="synaptic", readout="membrane", reset="zero", generator=_gen())
    with torch.no_grad():  # per-neuron decays: many different float32 values
        n = model.neurons[0]
        n.beta = torch.rand(20, generator=_gen(5)) * 0.5 + 0.49
        n.alpha = torch.rand(20, generator=_gen(6)) * 0.9 + 0.05
        n.threshold = torch.rand(20, generator=_gen(7)) + 0.3
    graph = to_nir(model, dt=dt, metadata=False, fold_r=False)  # folded weights are rounded: not exact
    assert all(not node.metadata for node in graph.nodes.values())
    back = from_nir(graph, dt=dt)
    assert torch.equal(back.neurons[0].beta, model.neurons[0].beta)
    assert torch.equal(back.neurons[0].alpha, model.neurons[0].alpha)
    _assert_identical(model, back, _input(20, 3, 8))


def test_float64_model_round_trips_through_metadata() -> None:
    model = SpikingMLP([8, 16, 4], readout="membrane", reset="zero", beta=0.93, generator=_gen()).double()
    back = from_nir(to_nir(model, dt=0.3))
    assert back.linears[0].weight.dtype == torch.float64
    _assert_identical(model, back, _input(20, 3, 8).double())


def test_training_options_and_learnable_parameters_are_restored() -> None:
    model = SpikingMLP([6, 8, 3], reset="zero", learn_beta=True, learn_threshold=True, learn_reset=True,
                       surrogate="fast_sigmoid", slope=10.0, detach_reset=False, generator=_gen())
    with torch.no_grad():
        for n in model.neurons:
            n.beta.copy_(torch.rand(n.beta.shape, generator=_gen(8)) * 0.5 + 0.4)
            n.threshold.copy_(torch.rand(n.threshold.shape, generator=_gen(9)) + 0.5)
    back = from_nir(to_nir(model))
    for a, b in zip(model.neurons, back.neurons):
        assert isinstance(b.beta, nn.Parameter) and manifold_of(b.beta) == UNIT_INTERVAL
        assert isinstance(b.threshold, nn.Parameter) and manifold_of(b.threshold) == POSITIVE
        assert isinstance(b.reset_value, nn.Parameter) and manifold_of(b.reset_value) == EUCLIDEAN
        assert b.surrogate.name == "fast_sigmoid" and b.surrogate.slope == 10.0
        assert b.detach_reset is False and b.reset == "zero"
    sd_a, sd_b = model.state_dict(), back.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    # identical gradients too (surrogate, detach_reset and learnable flags all came back)
    x = _input(15, 2, 6)
    for m in (model, back):
        m.zero_grad()
        m(x).membrane.sum().backward()
    for (name, pa), (_, pb) in zip(model.named_parameters(), back.named_parameters()):
        assert torch.equal(pa.grad, pb.grad), name


def test_refractory_period_through_metadata() -> None:
    model = SpikingMLP([6, 8, 3], reset="zero", refractory=2, generator=_gen())
    back = from_nir(to_nir(model, refractory="metadata"))
    assert back.neurons[0].refractory == 2
    _assert_identical(model, back, _input(20, 2, 6))


# ------------------------------------------------------------------------------------------ HDF5 files


def test_save_and_load_hdf5(tmp_path) -> None:
    model = SpikingMLP([8, 12, 4], neuron="rlif", learn_beta=True, generator=_gen())  # subtract reset
    path = tmp_path / "mlp.nir"
    save_nir(model, path, dt=0.5, reset="metadata")
    back = load_nir(path)
    assert type(back) is SpikingMLP and back.neurons[0].reset == "subtract"
    assert isinstance(back.neurons[0].beta, nn.Parameter)
    _assert_identical(model, back, _input(20, 3, 8))

    conv = SpikingConvNet((1, 8, 8), 4, channels=(3,), reset="zero", threshold=0.5, generator=_gen())
    save_nir(conv, tmp_path / "conv.nir")
    back_conv = load_nir(tmp_path / "conv.nir")
    assert type(back_conv) is SpikingConvNet
    _assert_identical(conv, back_conv, _input(10, 2, 1, 8, 8, scale=3.0))

    seq = GraphExecutor.sequential(nn.Linear(4, 5), Delay(5, 3, init=torch.tensor([0.0, 1.0, 2.0, 1.5, 0.25])),
                                   LIF(5, reset="none"), input_shape=(4,))
    save_nir(seq, tmp_path / "delay.nir")
    _assert_identical(seq, load_nir(tmp_path / "delay.nir"), _input(12, 2, 4))


@pytest.mark.parametrize("case", ["graded_none", "synaptic_f64", "if_refractory", "regressor"])
def test_file_round_trip_keeps_every_option(tmp_path, case: str) -> None:
    if case == "graded_none":
        model: nn.Module = SpikingMLP([6, 9, 3], neuron="rlif", reset="none", graded=True, learn_threshold=True,
                                      generator=_gen())
        x = _input(15, 2, 6)
    elif case == "synaptic_f64":
        model = SpikingMLP([6, 9, 3], neuron="synaptic", learn_alpha=True, alpha=0.7, generator=_gen()).double()
        x = _input(15, 2, 6).double()
    elif case == "if_refractory":
        model = SpikingMLP([6, 9, 3], neuron="if", refractory=3, reset_value=-0.2, generator=_gen())
        x = _input(15, 2, 6)
    else:
        model = RecurrentRegressor(4, 7, 2, slope=5.0, surrogate="sigmoid", generator=_gen())
        x = _input(15, 2, 4)
    path = tmp_path / f"{case}.nir"
    save_nir(model, path, dt=0.2, reset="metadata", refractory="metadata")
    back = load_nir(path)
    assert type(back) is type(model)
    sd_a, sd_b = model.state_dict(), back.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert sd_a[k].dtype == sd_b[k].dtype and torch.equal(sd_a[k], sd_b[k]), k
    for (name, pa), (_, pb) in zip(model.named_parameters(), back.named_parameters()):
        assert manifold_of(pa) == manifold_of(pb), name
    _assert_identical(model, back, x)


# ------------------------------------------------------------------------------------------ independent reference


def _simulate_nir(graph, x: np.ndarray, dt: float) -> dict[str, np.ndarray]:
    """Forward-Euler simulation of a feed-forward NIR graph from its node fields only (numpy, float64).

    Each step: every node's input is the sum of its predecessors' outputs at this step; neurons integrate
    ``v += dt/tau (v_leak - v + R I)`` (IF: ``v += dt R I``; CubaLIF: the synaptic current first), spike when
    ``v > v_threshold`` and are then set to ``v_reset``. Returns each node's output (spikes / potential) and, for
    neurons, the potential before the reset under ``name + ".v"``.
    """
    names = list(graph.nodes)
    preds = {n: [a for a, b in graph.edges if b == n] for n in names}
    order: list[str] = []
    while len(order) < len(names):
        for n in names:
            if n not in order and all(p in order for p in preds[n]):
                order.append(n)
    steps = x.shape[0]
    state: dict[str, dict[str, np.ndarray]] = {}
    rec: dict[str, list[np.ndarray]] = {}
    for t in range(steps):
        out: dict[str, np.ndarray] = {}
        for n in order:
            node = graph.nodes[n]
            inp = x[t] if isinstance(node, nir.Input) else sum(out[p] for p in preds[n])
            st = state.setdefault(n, {})
            if isinstance(node, (nir.Input, nir.Output)):
                y = inp
            elif isinstance(node, nir.Affine):
                y = inp @ node.weight.T.astype(np.float64) + node.bias
            elif isinstance(node, nir.Linear):
                y = inp @ node.weight.T.astype(np.float64)
            elif isinstance(node, (nir.LIF, nir.LI)):
                v = st.get("v", np.zeros_like(inp))
                v = v + dt / node.tau * (node.v_leak - v + node.r * inp)
                rec.setdefault(n + ".v", []).append(v)
                if isinstance(node, nir.LIF):
                    y = (v > node.v_threshold).astype(np.float64)
                    v = np.where(y > 0, node.v_reset, v)
                else:
                    y = v
                st["v"] = v
            elif isinstance(node, nir.IF):
                v = st.get("v", np.zeros_like(inp)) + dt * node.r * inp
                rec.setdefault(n + ".v", []).append(v)
                y = (v > node.v_threshold).astype(np.float64)
                st["v"] = np.where(y > 0, node.v_reset, v)
            elif isinstance(node, nir.CubaLIF):
                i = st.get("i", np.zeros_like(inp))
                i = i + dt / node.tau_syn * (-i + node.w_in * inp)
                v = st.get("v", np.zeros_like(inp))
                v = v + dt / node.tau_mem * (node.v_leak - v + node.r * i)
                rec.setdefault(n + ".v", []).append(v)
                y = (v > node.v_threshold).astype(np.float64)
                st["i"], st["v"] = i, np.where(y > 0, node.v_reset, v)
            else:
                raise NotImplementedError(type(node).__name__)
            out[n] = y
            rec.setdefault(n, []).append(y)
    return {k: np.stack(v) for k, v in rec.items()}


@pytest.mark.parametrize("neuron", ["lif", "if", "synaptic"])
@pytest.mark.parametrize("dt", [1.0, 0.5])
def test_spikefed_matches_independent_euler_simulation_of_the_nir_graph(neuron: str, dt: float) -> None:
    kw = {} if neuron == "if" else {"beta": 0.8}
    model = SpikingMLP([6, 14, 10, 4], neuron=neuron, readout="membrane", reset="zero", threshold=0.8,
                       generator=_gen(), **kw).double()
    x = _input(30, 4, 6, seed=3).double()
    _fires(model, x)
    graph = to_nir(model, dt=dt, metadata=False)
    ref = _simulate_nir(graph, x.numpy(), dt)
    with torch.no_grad():
        out = model(x)
    for i, h in enumerate(out.hidden):
        assert np.array_equal(h.numpy(), ref[f"{neuron}_{i}"]), f"spikes of layer {i}"
        # spikefed reports the potential before the reset, as the reference records it
        np.testing.assert_allclose(model.neurons[i].run(
            _layer_input(model, x, i)).membrane.detach().numpy(), ref[f"{neuron}_{i}.v"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out.output.numpy(), ref["output"], rtol=1e-9, atol=1e-9)


def _layer_input(model: SpikingMLP, x: torch.Tensor, layer: int) -> torch.Tensor:
    with torch.no_grad():
        h = x
        for i in range(layer + 1):
            h = model.linears[i](h)
            if i < layer:
                h = model.neurons[i].run(h).spikes
    return h


def test_what_other_tools_see_for_a_subtract_reset_export() -> None:
    """reset='metadata': standard fields say reset-to-zero; importing without metadata gives exactly that."""
    model = SpikingMLP([6, 12, 4], readout="membrane", beta=0.9, generator=_gen()).double()  # subtract
    x = _input(30, 3, 6, seed=4).double()
    graph = to_nir(model, reset="metadata", fold_r=False)  # r = tau/dt: imported fields-only as a SpikingMLP
    plain = from_nir(graph, use_metadata=False, dtype=torch.float64)
    assert plain.neurons[0].reset == "zero"
    ref = _simulate_nir(graph, x.numpy(), 1.0)
    with torch.no_grad():
        assert np.array_equal(plain(x).hidden[0].numpy(), ref["lif_0"])
        assert not torch.equal(model(x).hidden[0], plain(x).hidden[0])  # the dynamics really differ
    _assert_identical(model, from_nir(graph), x)  # ... and the metadata restores spikefed's exactly


def test_foreign_graph_with_unit_resistance_and_leak() -> None:
    """A hand-written NIR graph in another convention (R = 1, v_leak != 0) imports with an input gain/bias."""
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(5, 3)), rng.normal(size=5) * 0.1
    w2 = rng.normal(size=(2, 5))
    nodes = {
        "in": nir.Input(input_type=np.array([3])),
        "fc1": nir.Affine(weight=w1, bias=b1),
        "lif": nir.LIF(tau=np.full(5, 5.0), r=np.ones(5), v_leak=np.full(5, 0.1), v_threshold=np.full(5, 0.3),
                       v_reset=np.full(5, -0.1)),
        "fc2": nir.Linear(weight=w2),
        "li": nir.LI(tau=np.full(2, 4.0), r=np.ones(2), v_leak=np.zeros(2)),
        "out": nir.Output(output_type=np.array([2])),
    }
    edges = [("in", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "li"), ("li", "out")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges)
    model = from_nir(graph, dtype=torch.float64)
    assert isinstance(model, GraphExecutor) and isinstance(model.node("lif"), Gained)
    x = rng.uniform(0, 3, size=(40, 2, 3))
    ref = _simulate_nir(graph, x, 1.0)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    assert 0 < ref["lif"].mean() < 1
    assert np.array_equal(out.hidden[0].numpy(), ref["lif"])
    np.testing.assert_allclose(out.output.numpy(), ref["out"], rtol=1e-9, atol=1e-12)
    # and it exports back to the same fields
    again = to_nir(model)
    for field in ("tau", "r", "v_leak", "v_threshold", "v_reset"):
        np.testing.assert_allclose(getattr(again.nodes["lif"], field), getattr(nodes["lif"], field), rtol=1e-12)


# ------------------------------------------------------------------------------------------ errors


def test_subtract_reset_is_refused_by_default_naming_the_layer() -> None:
    with pytest.raises(NIRConversionError, match=r"'lif_0'.*subtract.*reset='metadata'"):
        to_nir(SpikingMLP([4, 5, 3]))


def test_alif_is_unsupported() -> None:
    with pytest.raises(UnsupportedLayerError, match=r"'alif_0' \(ALIF\)"):
        to_nir(SpikingMLP([4, 5, 3], neuron="alif", reset="zero"))


def test_refractory_is_refused_by_default() -> None:
    with pytest.raises(NIRConversionError, match=r"'lif_0'.*refractory"):
        to_nir(SpikingMLP([4, 5, 3], reset="zero", refractory=1))


def test_unknown_layer_is_unsupported() -> None:
    with pytest.raises(UnsupportedLayerError, match=r"'relu_0' \(ReLU\)"):
        to_nir(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), input_shape=(3,))
    with pytest.raises(UnsupportedLayerError, match="cannot export"):
        to_nir(nn.GRU(3, 4))


def test_maxpool_needs_binary_input() -> None:
    with pytest.raises(NIRConversionError, match=r"'maxpool_0'.*binary"):
        to_nir(nn.Sequential(nn.MaxPool2d(2)), input_shape=(1, 4, 4))
    graded = SpikingConvNet((1, 4, 4), 2, channels=(2,), reset="zero", graded=True)
    with pytest.raises(NIRConversionError, match="binary"):
        to_nir(graded)


def test_bad_options() -> None:
    with pytest.raises(NIRConversionError, match="input_shape"):
        to_nir(nn.Sequential(nn.Linear(3, 4)))
    with pytest.raises(ValueError, match="metadata=True"):
        to_nir(SpikingMLP([3, 2]), reset="metadata", metadata=False)
    with pytest.raises(ValueError, match="reset policy"):
        to_nir(SpikingMLP([3, 2]), reset="zero")  # type: ignore[arg-type]


def test_import_errors() -> None:
    conv1d = nir.NIRGraph.from_list(nir.Conv1d(input_shape=8, weight=np.ones((2, 1, 3)), stride=1, padding=0,
                                               dilation=1, groups=1, bias=np.zeros(2)))
    with pytest.raises(UnsupportedLayerError, match="Conv1d"):
        from_nir(conv1d)
    lif = nir.LIF(tau=np.full(3, 2.0), r=np.full(3, 2.0), v_leak=np.zeros(3), v_threshold=np.ones(3))
    cycle = nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([3])), "lif": lif,
               "rec": nir.Affine(weight=np.eye(3), bias=np.ones(3)), "output": nir.Output(output_type=np.array([3]))},
        edges=[("input", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")])
    with pytest.raises(UnsupportedLayerError, match="cycle"):
        from_nir(cycle)
    with pytest.raises(NIRConversionError, match=r"'lif'.*tau > dt"):
        from_nir(nir.NIRGraph.from_list(nir.LIF(tau=np.full(2, 0.5), r=np.ones(2), v_leak=np.zeros(2),
                                                v_threshold=np.ones(2))))
    with pytest.raises(TypeError, match="NIRGraph"):
        from_nir("model.nir")  # type: ignore[arg-type]


def test_edited_fields_win_over_stale_metadata() -> None:
    model = SpikingMLP([4, 5, 3], reset="zero", beta=0.9, generator=_gen())
    graph = to_nir(model, fold_r=False)
    graph.nodes["lif_0"].tau = np.full(5, 4.0)  # another tool changed the time constant (and R = tau / dt)
    graph.nodes["lif_0"].r = np.full(5, 4.0)
    with pytest.warns(UserWarning, match="disagrees"):
        back = from_nir(graph)
    assert torch.allclose(back.neurons[0].beta, torch.tensor(0.75))


def test_callable_surrogate_falls_back_with_a_warning() -> None:
    model = SpikingMLP([4, 5, 3], reset="zero", surrogate=lambda v: (v.abs() < 0.5).to(v.dtype))
    with pytest.warns(UserWarning, match="atan"):
        back = from_nir(to_nir(model))
    assert back.neurons[0].surrogate.name == "atan"


def test_if_layer_alone_and_executor_state() -> None:
    layer = IF(4, reset="zero", threshold=0.5)
    back = from_nir(to_nir(layer))
    assert isinstance(back, GraphExecutor)
    x = _input(10, 2, 4)
    out = back(x)
    # explicit state: running two halves equals one run
    first = back(x[:5])
    second = back(x[5:], first.state)
    assert torch.equal(torch.cat([first.output, second.output]), out.output)
    assert torch.equal(out.output, layer.run(x).spikes)


# -- fold_r: R moved into the weights (r = 1 on every neuron node) ------------------------------------------------


@pytest.mark.parametrize("neuron", ["lif", "synaptic", "if"])  # the reference is feed-forward only
def test_folded_graph_is_the_same_system_for_the_euler_reference(neuron: str) -> None:
    """The reference simulator (fields only) sees the same spikes with R folded into the weights as without."""
    decay = {} if neuron == "if" else {"beta": 0.8}
    model = SpikingMLP([5, 9, 3], neuron=neuron, readout="membrane", reset="zero", threshold=0.7, **decay,
                       generator=_gen()).double()
    x = _input(25, 4, 5, seed=9).double().numpy()
    folded, plain = to_nir(model, dt=0.5), to_nir(model, dt=0.5, fold_r=False)
    for name, node in folded.nodes.items():
        if hasattr(node, "r"):
            assert np.all(node.r == 1.0), name
    ref_folded, ref_plain = _simulate_nir(folded, x, 0.5), _simulate_nir(plain, x, 0.5)
    spiking = f"{neuron}_0"
    assert np.array_equal(ref_folded[spiking], ref_plain[spiking])
    np.testing.assert_allclose(ref_folded["li_0"], ref_plain["li_0"], rtol=1e-9, atol=1e-9)


def test_folded_weights_are_the_rows_scaled_by_r() -> None:
    model = SpikingMLP([4, 6, 3], reset="zero", beta=0.75, generator=_gen())
    folded, plain = to_nir(model, dt=0.1), to_nir(model, dt=0.1, fold_r=False)
    r = plain.nodes["lif_0"].r  # tau / dt = 1 / (1 - beta) = 4
    np.testing.assert_allclose(r, 4.0, rtol=1e-7)
    np.testing.assert_allclose(folded.nodes["linear_0"].weight, model.linears[0].weight.detach().numpy() * 4.0,
                               rtol=1e-6)
    np.testing.assert_allclose(folded.nodes["linear_0"].bias, model.linears[0].bias.detach().numpy() * 4.0,
                               rtol=1e-6)
    _assert_identical(model, from_nir(folded), _input(20, 3, 4))  # exact again through the metadata


def test_unfoldable_neuron_keeps_r_and_is_listed() -> None:
    seq = GraphExecutor.sequential(nn.Linear(4, 5), Delay(5, 3, init=torch.tensor([0.0, 1.0, 2.0, 1.5, 0.25])),
                                   LIF(5, reset="zero"), input_shape=(4,))
    graph = to_nir(seq)
    assert not np.all(graph.nodes["lif_0"].r == 1.0)  # fed by a Delay, not by weights
    assert graph.metadata["spikefed"]["r_not_folded"] == "lif_0"
