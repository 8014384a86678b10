"""NeuroBench-style metrics: hand counts on tiny nets, loop references for convolutions, energy formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from spikefed.hardware.energy import ENERGY_PRESETS, EnergyModel, energy_preset, mlp_operations
from spikefed.hardware.metrics import (
    InferenceMetrics,
    connection_sparsity,
    footprint_bytes,
    measure,
)
from spikefed.snn.delay import Delay
from spikefed.snn.models import RecurrentRegressor, SpikingConvNet, SpikingMLP
from spikefed.snn.neurons import ALIF, LIF, RecurrentLIF


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _layer(metrics: InferenceMetrics, name: str):
    (layer,) = [layer for layer in metrics.layers if layer.name == name]
    return layer


# --------------------------------------------------------------------------------------------------- hand MLP


def _hand_mlp() -> SpikingMLP:
    """3-2-2 IF network (threshold 1, no bias) with hand-chosen weights, three of them zero.

    W1 = [[2, 0, .3], [0, .5, .6]]: fan-out of inputs 0, 1, 2 = 1, 1, 2.
    W2 = [[1.5, 0], [-1, 2.5]]:      fan-out of hidden 0, 1 = 2, 1.
    """
    model = SpikingMLP([3, 2, 2], neuron="if", threshold=1.0)
    with torch.no_grad():
        model.linears[0].weight.copy_(torch.tensor([[2.0, 0.0, 0.3], [0.0, 0.5, 0.6]]))
        model.linears[1].weight.copy_(torch.tensor([[1.5, 0.0], [-1.0, 2.5]]))
        for lin in model.linears:
            lin.bias.zero_()
    return model


# spike input; by hand (IF, reset by subtraction, spike iff u > 1):
#   layer 1: t0 u=[2.3, .6] s=[1,0]; t1 u=[1.3, 1.1] s=[1,1]
#   layer 2: t0 u=[1.5, -1] s=[1,0]; t1 u=[2.0, .5]  s=[1,0]
#   ACs layer 1: t0 inputs 0, 2 -> 1 + 2; t1 input 1 -> 1       = 4
#   ACs layer 2: t0 hidden 0 -> 2; t1 hidden 0, 1 -> 2 + 1      = 5
SPIKE_INPUT = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
# graded input; by hand:
#   layer 1: t0 u=[1.3, .6] s=[1,0]; t1 u=[.3, 1.1] s=[0,1]
#   layer 2: t0 u=[1.5, -1] s=[1,0]; t1 u=[.5, 1.5] s=[0,1]
#   MACs layer 1: t0 inputs 0, 2 -> 1 + 2; t1 input 1 -> 1      = 4
#   ACs layer 2: t0 hidden 0 -> 2; t1 hidden 1 -> 1             = 3
GRADED_INPUT = [[0.5, 0.0, 1.0], [0.0, 1.0, 0.0]]


def test_hand_counted_mlp_with_spike_input() -> None:
    x = torch.tensor(SPIKE_INPUT).unsqueeze(1)  # [T=2, B=1, 3]
    m = measure(_hand_mlp(), x)
    assert (m.effective_acs, m.effective_macs, m.spikes, m.neuron_outputs) == (9, 0, 5, 8)
    assert m.dense_ops == 2 * 3 * 2 + 2 * 2 * 2  # T * in * out per layer, B = 1
    assert m.synops == 9
    assert _layer(m, "linears.0").effective_acs == 4 and _layer(m, "linears.1").effective_acs == 5
    assert _layer(m, "neurons.0").spikes == 3 and _layer(m, "neurons.1").spikes == 2
    assert m.activation_sparsity == pytest.approx(3 / 8)
    assert m.connection_sparsity == pytest.approx(3 / 10)
    assert m.energy_j == pytest.approx(9 * 0.9e-12)
    assert (m.samples, m.time_steps) == (1, 2)


def test_hand_counted_mlp_with_graded_input_counts_macs() -> None:
    x = torch.tensor(GRADED_INPUT).unsqueeze(1)
    m = measure(_hand_mlp(), x)
    assert _layer(m, "linears.0").effective_macs == 4 and _layer(m, "linears.0").effective_acs == 0
    assert _layer(m, "linears.1").effective_acs == 3 and _layer(m, "linears.1").effective_macs == 0
    assert m.spikes == 4
    assert m.energy_j == pytest.approx(4 * 4.6e-12 + 3 * 0.9e-12)


def test_batch_totals_and_per_inference() -> None:
    # one layer input holding any non-binary value is a MAC layer for the whole batch (per-layer rule)
    x = torch.stack([torch.tensor(SPIKE_INPUT), torch.tensor(GRADED_INPUT)], dim=1)  # [2, B=2, 3]
    m = measure(_hand_mlp(), x)
    assert (m.effective_macs, m.effective_acs, m.spikes, m.dense_ops) == (8, 8, 9, 40)
    per = m.per_inference()
    assert per == pytest.approx({"dense_ops": 20.0, "effective_macs": 4.0, "effective_acs": 4.0, "synops": 8.0,
                                 "spikes": 4.5, "energy_j": (8 * 4.6e-12 + 8 * 0.9e-12) / 2})
    d = m.to_dict()
    assert d["effective_macs"] == 4.0 and d["samples"] == 2 and d["time_steps"] == 2
    assert [row["name"] for row in d["layers"]] == ["linears.0", "neurons.0", "linears.1", "neurons.1"]
    assert d["layers"][0]["effective_macs"] == 4.0 and d["layers"][2]["effective_acs"] == 4.0
    assert sum(row["energy_j"] for row in d["layers"]) == pytest.approx(d["energy_j"])


def test_mlp_operations_hand_counts() -> None:
    model = _hand_mlp()
    x = torch.tensor(SPIKE_INPUT).unsqueeze(1)
    ops = mlp_operations(model, x, model(x))
    assert ops == {"acs": 9.0, "macs": 0.0, "synops": 9.0, "dense_ops": 20.0, "spikes": 5.0}


# --------------------------------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("readout", ["spikes", "membrane"])
@pytest.mark.parametrize("coding", ["rate", "direct_view", "direct_copy"])
def test_measure_agrees_with_mlp_operations(readout: str, coding: str) -> None:
    model = SpikingMLP([20, 16, 12, 5], readout=readout, beta=0.8, threshold=0.5, generator=_gen(1))
    with torch.no_grad():  # prune about a third of the weights
        for lin in model.linears:
            lin.weight[torch.rand(lin.weight.shape, generator=_gen(4)) < 0.3] = 0.0
    x0 = torch.rand(7, 20, generator=_gen(2))
    if coding == "rate":
        x = (torch.rand(9, 7, 20, generator=_gen(3)) < x0).float()
    else:
        x = x0.unsqueeze(0).expand(9, 7, 20)
        if coding == "direct_copy":
            x = x.contiguous()
    ops = mlp_operations(model, x, model(x))
    m = measure(model, x)
    assert (m.effective_acs, m.effective_macs, m.dense_ops, m.spikes) == (
        ops["acs"], ops["macs"], ops["dense_ops"], ops["spikes"])
    assert ops["synops"] > 0 and ops["spikes"] > 0


def test_time_constant_input_counts_every_step() -> None:
    model = SpikingMLP([10, 8, 4], beta=0.8, threshold=0.5, generator=_gen(1))
    x0 = torch.rand(3, 10, generator=_gen(2))
    x0[:, 0] = 0.0  # one silent input feature
    view = x0.unsqueeze(0).expand(6, 3, 10)
    a, b = measure(model, view), measure(model, view.contiguous())
    assert a.layers == b.layers
    first = _layer(a, "linears.0")
    assert first.dense_ops == 6 * 3 * 10 * 8
    assert first.effective_macs == 6 * 3 * 9 * 8  # T * B * non-zero inputs * fan-out


class _StepMLP(nn.Module):
    """The same network as a SpikingMLP, run one time step at a time through ``step``."""

    def __init__(self, mlp: SpikingMLP) -> None:
        super().__init__()
        self.linears, self.neurons = mlp.linears, mlp.neurons

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [None] * len(self.neurons)
        outs = []
        for t in range(x.shape[0]):
            h = x[t]
            for i, (lin, neuron) in enumerate(zip(self.linears, self.neurons)):
                h, states[i] = neuron.step(lin(h), states[i])
            outs.append(h)
        return torch.stack(outs)


@pytest.mark.parametrize("neuron", ["lif", "alif"])
def test_step_by_step_model_matches_sequence_model(neuron: str) -> None:
    # the direct-coded view makes every x[t] one step of a time-constant input: each call counts once
    mlp = SpikingMLP([10, 8, 4], neuron=neuron, beta=0.8, threshold=0.4, generator=_gen(4))
    x = torch.rand(5, 3, 10, generator=_gen(5)).mul(2)[:1].expand(5, 3, 10)
    a, b = measure(mlp, x), measure(_StepMLP(mlp), x)
    assert a.spikes > 0
    assert [(la.dense_ops, la.effective_macs, la.effective_acs, la.spikes, la.outputs) for la in a.layers] == [
        (lb.dense_ops, lb.effective_macs, lb.effective_acs, lb.spikes, lb.outputs) for lb in b.layers]


def test_graded_spikes_make_the_next_layer_macs() -> None:
    model = SpikingMLP([6, 5, 3], graded=True, beta=0.8, threshold=0.3, generator=_gen(6))
    with torch.no_grad():
        model.neurons[0].amplitude.fill_(0.5)
    x = (torch.rand(8, 4, 6, generator=_gen(7)) < 0.5).float()
    m = measure(model, x)
    hidden = model(x).hidden[0]
    assert _layer(m, "linears.0").effective_acs > 0 and _layer(m, "linears.0").effective_macs == 0
    assert _layer(m, "linears.1").effective_acs == 0
    assert _layer(m, "linears.1").effective_macs == int((hidden != 0).sum()) * 3


# --------------------------------------------------------------------------------------------------- pruning


def test_pruned_weights_reduce_events_exactly() -> None:
    model = SpikingMLP([6, 4, 3], beta=0.8, threshold=0.5, generator=_gen(8))
    x = (torch.rand(5, 2, 6, generator=_gen(9)) < 0.6).float()
    nnz = [int((x[..., i] != 0).sum()) for i in range(6)]  # spikes of each input feature over T and B
    base = _layer(measure(model, x), "linears.0").effective_acs
    assert base == sum(nnz) * 4
    with torch.no_grad():
        model.linears[0].weight[:, 2] = 0.0  # input 2 loses all 4 synapses
        model.linears[0].weight[1, 5] = 0.0  # input 5 loses one
    m = measure(model, x)
    assert _layer(m, "linears.0").effective_acs == base - 4 * nnz[2] - nnz[5]
    assert _layer(m, "linears.0").dense_ops == 5 * 2 * 6 * 4  # a dense implementation still does them
    assert m.connection_sparsity == pytest.approx(5 / (24 + 12))
    assert connection_sparsity(model) == pytest.approx(5 / 36)


# --------------------------------------------------------------------------------------------------- convolution


def _conv_reference(z: torch.Tensor, w: torch.Tensor, stride: int, padding: int, dilation: int,
                    groups: int) -> tuple[int, int]:
    """(events, dense ops) of a 2-d convolution by plain loops over inputs, outputs and kernel taps."""
    rows, cin, height, width = z.shape
    cout, cin_g, kh_n, kw_n = w.shape
    cout_g = cout // groups
    hout = (height + 2 * padding - dilation * (kh_n - 1) - 1) // stride + 1
    wout = (width + 2 * padding - dilation * (kw_n - 1) - 1) // stride + 1
    events = dense = 0
    for r in range(rows):
        for oc in range(cout):
            g = oc // cout_g
            for oh in range(hout):
                for ow in range(wout):
                    for ci in range(cin_g):
                        c = g * cin_g + ci
                        for kh in range(kh_n):
                            for kw in range(kw_n):
                                ih = oh * stride - padding + kh * dilation
                                iw = ow * stride - padding + kw * dilation
                                if not (0 <= ih < height and 0 <= iw < width):
                                    continue  # padding: no synapse
                                dense += 1
                                if z[r, c, ih, iw] != 0 and w[oc, ci, kh, kw] != 0:
                                    events += 1
    return events, dense


class _TinyConv(nn.Module):
    def __init__(self, stride: int, padding: int, dilation: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False)
        self.lif = LIF(beta=0.5, threshold=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[:2]
        y = self.conv(x.reshape(t * b, *x.shape[2:]))
        return self.lif.run(y.reshape(t, b, *y.shape[1:])).spikes


@pytest.mark.parametrize("stride,padding,dilation,groups", [(2, 1, 1, 1), (1, 2, 2, 2), (1, 0, 1, 1)])
def test_conv_counts_match_loop_reference(stride: int, padding: int, dilation: int, groups: int) -> None:
    model = _TinyConv(stride, padding, dilation, groups)
    with torch.no_grad():
        model.conv.weight.copy_(torch.randn(model.conv.weight.shape, generator=_gen(10)))
        model.conv.weight[0, 0] = 0.0  # prune a whole 3x3 kernel
        model.conv.weight[3, 0, 1, 2] = 0.0
    x = (torch.rand(3, 2, 2, 5, 6, generator=_gen(11)) < 0.3).float()
    m = measure(model, x)
    events, dense = _conv_reference(x.reshape(6, 2, 5, 6), model.conv.weight, stride, padding, dilation, groups)
    conv = _layer(m, "conv")
    assert (conv.kind, conv.effective_acs, conv.effective_macs, conv.dense_ops) == ("conv2d", events, 0, dense)
    spikes = model(x)
    assert m.spikes == int((spikes != 0).sum()) and m.neuron_outputs == spikes.numel()
    n_weights = model.conv.weight.numel()
    assert m.connection_sparsity == pytest.approx(10 / n_weights)


def test_spiking_convnet_against_loop_reference() -> None:
    model = SpikingConvNet((1, 4, 4), num_classes=3, channels=(2,), beta=0.7, threshold=0.3, generator=_gen(12))
    x = torch.rand(2, 2, 1, 4, 4, generator=_gen(13))
    x[x < 0.4] = 0.0
    m = measure(model, x)
    conv = model.convs[0]
    events, dense = _conv_reference(x.reshape(4, 1, 4, 4), conv.weight, 1, 1, 1, 1)
    assert (_layer(m, "convs.0").effective_macs, _layer(m, "convs.0").dense_ops) == (events, dense)
    # head: Linear(2*2*2 -> 3) on the pooled spikes; events = non-zero inputs x non-zero fan-out, by loops
    out = model(x)
    pooled = out.hidden[0].flatten(2)
    w = model.head.linears[0].weight
    head_events = sum(1 for t in range(2) for b in range(2) for i in range(8) for o in range(3)
                      if pooled[t, b, i] != 0 and w[o, i] != 0)
    assert _layer(m, "head.linears.0").effective_acs == head_events
    assert _layer(m, "head.linears.0").dense_ops == 2 * 2 * 8 * 3
    # spikes: the conv neurons (before pooling) and the output layer
    with torch.no_grad():
        conv_spikes = model.conv_neurons[0].run(conv(x.reshape(4, 1, 4, 4)).reshape(2, 2, 2, 4, 4)).spikes
    spikes = int((conv_spikes != 0).sum()) + int((out.output != 0).sum())
    outputs = conv_spikes.numel() + out.output.numel()
    assert (m.spikes, m.neuron_outputs) == (spikes, outputs)
    assert m.activation_sparsity == pytest.approx(1 - spikes / outputs)
    assert [layer.name for layer in m.layers] == ["convs.0", "conv_neurons.0", "head.linears.0", "head.neurons.0"]


# --------------------------------------------------------------------------------------------------- recurrent


def _hand_recurrent(neuron: str = "rlif") -> RecurrentRegressor:
    """in 2 -> RLIF 2 (beta .5, thr 1) -> 1. Encoder = identity, V = [[0, 0], [2, 0]], decoder = [[1, 0]].
    ``neuron="ralif"``: the recurrent ALIF with gamma = 0 (no adaptation), the same dynamics."""
    kw = {"gamma": 0.0} if neuron == "ralif" else {}
    model = RecurrentRegressor(2, 2, 1, neuron=neuron, beta=0.5, threshold=1.0, **kw)
    with torch.no_grad():
        model.encoder.weight.copy_(torch.eye(2))
        model.encoder.bias.zero_()
        model.neuron.recurrent.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
        model.decoder.weight.copy_(torch.tensor([[1.0, 0.0]]))
        model.decoder.bias.zero_()
    return model


@pytest.mark.parametrize("neuron", ["rlif", "ralif"])
def test_hand_counted_recurrent_layer(neuron: str) -> None:
    # x: t0 [1.5, 0], then zeros. By hand:
    #   t0 drive [1.5, 0]            u [1.5, 0]      s0 [1, 0]
    #   t1 drive [0, 0] + V s0 = [0, 2]; u = .5 u - s0 = [-.25, 2]   s1 [0, 1]
    #   t2 drive V s1 = [0, 0];      u = [-.125, 0]  s2 [0, 0]
    # encoder: one non-zero (non-binary) input with fan-out 1 -> 1 MAC
    # recurrent: input s[t-1]: t1 neuron 0 (fan-out 1 in V) -> 1 AC; t2 neuron 1 (fan-out 0) -> 0
    # decoder: s0 neuron 0 (fan-out 1) -> 1 AC; s1 neuron 1 (fan-out 0) -> 0
    x = torch.zeros(3, 1, 2)
    x[0, 0, 0] = 1.5
    m = measure(_hand_recurrent(neuron), x, energy="loihi")
    rec = _layer(m, "neuron.recurrent")
    assert (rec.kind, rec.effective_acs, rec.effective_macs, rec.dense_ops) == ("recurrent", 1, 0, 3 * 2 * 2)
    assert (_layer(m, "encoder").effective_macs, _layer(m, "encoder").dense_ops) == (1, 12)
    assert (_layer(m, "decoder").effective_acs, _layer(m, "decoder").dense_ops) == (1, 6)
    assert (m.effective_macs, m.effective_acs, m.dense_ops, m.spikes, m.neuron_outputs) == (1, 2, 30, 2, 6)
    assert m.connection_sparsity == pytest.approx(6 / 10)
    assert m.energy_j == pytest.approx(3 * 23.6e-12)
    assert [layer.name for layer in m.layers] == ["encoder", "neuron", "neuron.recurrent", "decoder"]


class _ChunkedRecurrent(nn.Module):
    """Runs a RecurrentLIF on two chunks with the state carried over, or one step at a time."""

    def __init__(self, lin: nn.Linear, neuron: RecurrentLIF, mode: str) -> None:
        super().__init__()
        self.lin, self.neuron, self.mode = lin, neuron, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        if self.mode == "whole":
            return self.neuron.run(h).spikes
        if self.mode == "chunks":
            a = self.neuron.run(h[:3])
            return torch.cat([a.spikes, self.neuron.run(h[3:], a.state).spikes])
        state, outs = None, []
        for t in range(h.shape[0]):
            s, state = self.neuron.step(h[t], state)
            outs.append(s)
        return torch.stack(outs)


def test_recurrent_counts_carry_across_chunks_and_steps() -> None:
    lin = nn.Linear(4, 6)
    neuron = RecurrentLIF(6, beta=0.8, threshold=0.5, generator=_gen(14), recurrent_scale=2.0)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(6, 4, generator=_gen(15)))
        neuron.recurrent[:, 1] = 0.0  # neuron 1 has no outgoing recurrent synapses
    x = (torch.rand(8, 3, 4, generator=_gen(16)) < 0.5).float()
    results = [measure(_ChunkedRecurrent(lin, neuron, mode), x) for mode in ("whole", "chunks", "steps")]
    spikes = _ChunkedRecurrent(lin, neuron, "whole")(x)
    fan = [6, 0, 6, 6, 6, 6]  # non-zero entries of each column of V (random init has no zeros)
    expected = sum(int(spikes[t - 1, :, j].sum()) * fan[j] for t in range(1, 8) for j in range(6))
    assert expected > 0
    for m in results:
        assert _layer(m, "neuron.recurrent").effective_acs == expected
        assert _layer(m, "neuron.recurrent").dense_ops == 8 * 3 * 36
        assert m.spikes == int(spikes.sum())


# --------------------------------------------------------------------------------------------------- delays


class _DelayedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(5, 4), LIF(4, beta=0.7, threshold=0.3)
        self.delay = Delay(4, max_delay=4, init=torch.tensor([0.0, 1.0, 3.0, 2.0]), learnable=False)
        self.fc2, self.lif2 = nn.Linear(4, 3), LIF(3, beta=0.7, threshold=0.3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s1 = self.lif1.run(self.fc1(x)).spikes
        delayed, _ = self.delay(s1)
        return s1, self.lif2.run(self.fc2(delayed)).spikes


def test_integer_delays_shift_events_out_of_the_window() -> None:
    model = _DelayedNet()
    x = torch.rand(6, 2, 5, generator=_gen(17))
    m = measure(model, x)
    s1, _ = model(x)
    delays = [0, 1, 3, 2]
    # a spike of feature i at step t reaches fc2 at t + d_i, inside the window only when t + d_i < T
    expected = sum(int(s1[: 6 - d, :, i].sum()) * 3 for i, d in enumerate(delays))
    assert _layer(m, "fc2").effective_acs == expected and _layer(m, "fc2").effective_macs == 0


# --------------------------------------------------------------------------------------------------- static


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 2)  # 6 + 2 float32 = 32 bytes
        self.b = self.a  # tied: counts once
        self.p16 = nn.Parameter(torch.zeros(5, dtype=torch.float16))  # 10 bytes
        self.register_buffer("f64", torch.zeros(3, dtype=torch.float64))  # 24 bytes
        self.register_buffer("i8", torch.zeros(7, dtype=torch.int8), persistent=False)  # 7 bytes


def test_footprint_bytes() -> None:
    assert footprint_bytes(_Mixed()) == 32 + 10 + 24 + 7
    model = SpikingMLP([12, 7, 3], neuron="alif", learn_threshold=True, generator=_gen(18))
    expected = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert footprint_bytes(model) == expected
    x = torch.rand(2, 1, 12, generator=_gen(19))
    assert measure(model, x).footprint_bytes == expected


def test_connection_sparsity_counts_recurrent_weights() -> None:
    model = RecurrentRegressor(3, 4, 2, generator=_gen(20))
    with torch.no_grad():
        model.neuron.recurrent[0, :] = 0.0  # 4 zeros
        model.encoder.weight[1, 1] = 0.0  # 1 zero
    assert connection_sparsity(model) == pytest.approx(5 / (12 + 16 + 8))


# --------------------------------------------------------------------------------------------------- energy


def test_energy_presets_and_custom_model() -> None:
    assert energy_preset("45nm") == EnergyModel(0.9e-12, 4.6e-12, 0.0)
    assert energy_preset("loihi") == EnergyModel(23.6e-12, 23.6e-12, 0.0)
    assert set(ENERGY_PRESETS) == {"45nm", "loihi"}
    x = torch.stack([torch.tensor(SPIKE_INPUT), torch.tensor(GRADED_INPUT)], dim=1)
    custom = EnergyModel(e_ac=1.0, e_mac=10.0, e_spike=100.0)
    m = measure(_hand_mlp(), x, energy=custom)
    assert m.energy_total_j == 8 * 1.0 + 8 * 10.0 + 9 * 100.0
    assert m.energy_j == (8 + 80 + 900) / 2
    loihi = measure(_hand_mlp(), x, energy="loihi")
    assert loihi.energy_j == pytest.approx(16 * 23.6e-12 / 2)


@pytest.mark.parametrize("bad", [-1e-12, float("nan"), float("inf"), "1pJ"])
def test_energy_model_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match="e_mac"):
        EnergyModel(e_mac=bad)  # type: ignore[arg-type]


def test_unknown_preset_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="'45nm', 'loihi'"):
        energy_preset("7nm")
    with pytest.raises(ValueError, match="unknown energy preset"):
        measure(_hand_mlp(), torch.zeros(2, 1, 3), energy="tpu")
    with pytest.raises(ValueError, match="EnergyModel or a preset"):
        measure(_hand_mlp(), torch.zeros(2, 1, 3), energy=4.6e-12)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------- errors, hygiene


def test_bad_inputs_raise_value_errors() -> None:
    model = _hand_mlp()
    with pytest.raises(ValueError, match="time-major"):
        measure(model, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="floating-point"):
        measure(model, torch.zeros(2, 1, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="B >= 1"):
        measure(model, torch.zeros(2, 0, 3))
    with pytest.raises(ValueError, match="nn.Module"):
        measure(lambda x: x, torch.zeros(2, 1, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no synaptic layer"):
        measure(LIF(3), torch.zeros(2, 1, 3))
    with pytest.raises(ValueError, match="no synaptic layer"):
        connection_sparsity(nn.Sequential(nn.ReLU()))


def _clean(model: nn.Module) -> bool:
    return all(not m._forward_hooks and "run" not in m.__dict__ and "step" not in m.__dict__
               for m in model.modules())


def test_no_hooks_or_wrappers_left_behind() -> None:
    model = RecurrentRegressor(3, 5, generator=_gen(21))
    x = torch.rand(4, 2, 3, generator=_gen(22))
    before = model(x).output
    measure(model, x)
    assert _clean(model)
    assert torch.equal(model(x).output, before)
    with pytest.raises(ValueError, match="expected input of shape"):
        measure(model, torch.rand(4, 2, 7))  # the model's own check fails inside the forward
    assert _clean(model)


def test_alif_step_is_not_counted_twice() -> None:
    neuron = ALIF(4, beta=0.8, threshold=0.3)

    class StepOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.neuron = nn.Linear(3, 4), neuron

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            state, outs = None, []
            for t in range(x.shape[0]):
                s, state = self.neuron.step(self.fc(x[t]), state)  # ALIF.step calls run internally
                outs.append(s)
            return torch.stack(outs)

    model = StepOnly()
    with torch.no_grad():  # seeded, positive weights: the layer spikes whatever the global RNG state
        model.fc.weight.copy_(torch.rand(4, 3, generator=_gen(24)))
        model.fc.bias.zero_()
    x = torch.rand(6, 2, 3, generator=_gen(23)) * 3
    m = measure(model, x)
    spikes = model(x)
    assert m.neuron_outputs == 6 * 2 * 4
    assert m.spikes == int(spikes.sum()) > 0
    assert math.isclose(m.activation_sparsity, 1 - int(spikes.sum()) / 48)
