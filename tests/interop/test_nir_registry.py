"""NIR registries: the built-in converters cover every layer type the exporter supported before the package split,
unsupported types fail with the same messages, and users can register converters for their own types."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")

from spikefed.interop import (  # noqa: E402
    CurrentIntegrator,
    Flatten,
    Gained,
    GraphExecutor,
    PerfectIntegrator,
    Scale,
    SumPool2d,
    Threshold,
    UnsupportedLayerError,
    from_nir,
    to_nir,
)
from spikefed.interop.nir import (  # noqa: E402
    CONVERTERS,
    LAYER_RULES,
    MODEL_VIEWS,
    Refusal,
    apply_folded,
    converter_for,
    register_converter,
    register_layer,
)
from spikefed.snn import IF, LIF, Delay, LeakyIntegrator, RecurrentRegressor, SpikingConvNet, SpikingMLP  # noqa: E402
from spikefed.snn.neurons import ALIF, RecurrentALIF, RecurrentLIF, Synaptic  # noqa: E402

SUPPORTED = ("nn.Linear, nn.Conv2d, nn.MaxPool2d (of binary spikes), nn.AvgPool2d, nn.Flatten, LIF, IF, Synaptic, "
             "RecurrentLIF, LeakyIntegrator, Delay and this module's Threshold, Scale, Flatten, SumPool2d, "
             "PerfectIntegrator, CurrentIntegrator, Gained")

# one instance of every layer type the single-module exporter handled (its isinstance chain: nn.Linear, nn.Conv2d,
# nn.MaxPool2d, nn.AvgPool2d, SumPool2d, nn.Flatten, Flatten, Threshold, Scale, Delay, then the cells: Gained,
# LeakyIntegrator, PerfectIntegrator, CurrentIntegrator and the LIF family IF / Synaptic / RecurrentLIF / LIF)
LAYERS = {
    "nn.Linear": lambda: nn.Linear(2, 2),
    "nn.Conv2d": lambda: nn.Conv2d(1, 1, 1),
    "nn.MaxPool2d": lambda: nn.MaxPool2d(2),
    "nn.AvgPool2d": lambda: nn.AvgPool2d(2),
    "SumPool2d": lambda: SumPool2d((2, 2), (2, 2)),
    "nn.Flatten": lambda: nn.Flatten(),
    "Flatten": lambda: Flatten(),
    "Threshold": lambda: Threshold(0.5),
    "Scale": lambda: Scale(2.0),
    "Delay": lambda: Delay(2, 3),
    "Gained": lambda: Gained(LIF(2), torch.tensor(2.0)),
    "LeakyIntegrator": lambda: LeakyIntegrator(2),
    "PerfectIntegrator": lambda: PerfectIntegrator(),
    "CurrentIntegrator": lambda: CurrentIntegrator(0.5, 0.5),
    "IF": lambda: IF(2),
    "Synaptic": lambda: Synaptic(2),
    "RecurrentLIF": lambda: RecurrentLIF(2),
    "LIF": lambda: LIF(2),
}


@pytest.fixture
def registries():
    """Restore the process-wide registries after a test that registers its own types."""
    saved = dict(CONVERTERS), dict(LAYER_RULES)
    yield
    for registry, before in zip((CONVERTERS, LAYER_RULES), saved):
        registry.clear()
        registry.update(before)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_previously_supported_layer_has_a_converter_and_a_runner(kind: str) -> None:
    layer = LAYERS[kind]()
    convert = converter_for(layer)
    assert convert is not None and not isinstance(convert, Refusal)
    GraphExecutor.sequential(layer)  # runnable by the executor that export traces through


def test_every_previously_supported_model_has_a_view() -> None:
    for cls in (SpikingMLP, SpikingConvNet, RecurrentRegressor, GraphExecutor, nn.Sequential, list, tuple):
        assert cls in MODEL_VIEWS


def test_adaptive_neurons_are_refused_through_the_registry() -> None:
    for layer in (ALIF(2), RecurrentALIF(2)):
        assert isinstance(converter_for(layer), Refusal)


def test_subclasses_use_the_converter_of_their_base() -> None:
    class MyLIF(LIF):
        pass

    model = GraphExecutor.sequential(nn.Linear(3, 4), MyLIF(4, reset="zero", beta=0.8), input_shape=(3,))
    graph = to_nir(model)
    assert isinstance(graph.nodes["lif_0"], nir.LIF)  # named and written like LIF
    x = torch.rand(10, 2, 3, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        assert torch.equal(model(x).output, from_nir(graph)(x).output)


def test_unsupported_types_give_the_same_errors_as_before() -> None:
    with pytest.raises(UnsupportedLayerError) as err:
        to_nir(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), input_shape=(3,))
    assert str(err.value) == (f"layer 'relu_0' (ReLU) is not supported by GraphExecutor (nor by NIR export); "
                              f"supported: {SUPPORTED}")
    with pytest.raises(UnsupportedLayerError) as err:
        to_nir(nn.GRU(3, 4))
    assert str(err.value) == ("cannot export GRU to NIR; supported: SpikingMLP, SpikingConvNet, RecurrentRegressor, "
                              "GraphExecutor, nn.Sequential/lists of supported layers, or a single supported layer")
    with pytest.raises(UnsupportedLayerError) as err:
        to_nir(SpikingMLP([4, 5, 3], neuron="alif", reset="zero"))
    assert str(err.value) == ("layer 'alif_0' (ALIF): the adaptive threshold theta[t] = thr + gamma a[t] has no NIR "
                              "node; replace it by LIF (or Synaptic) before exporting")


class Negate(nn.Module):
    """A user's own layer: ``y = -x``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -x


def test_a_runnable_type_without_converter_is_refused_before_anything_runs(registries) -> None:
    register_layer(Negate, name="negate", apply=apply_folded)
    with pytest.raises(UnsupportedLayerError) as err:
        to_nir(nn.Sequential(nn.Linear(3, 4), Negate()), input_shape=(3,))
    assert str(err.value) == f"layer 'negate_0' (Negate) cannot be exported to NIR; supported: {SUPPORTED}"


def test_user_registered_converter(registries) -> None:
    # the example of docs/nir.md
    register_layer(Negate, name="negate", apply=apply_folded)  # how GraphExecutor runs it

    @register_converter(Negate)
    def export_negate(ctx, name, op, in_shape, out_shape, binary_in):
        ctx.add(name, nir.Scale(scale=np.full(in_shape, -1.0)))
        return name, name, False  # entry node, exit node, output is binary

    model = nn.Sequential(nn.Linear(3, 4), Negate(), LIF(4, reset="zero", threshold=0.3))
    graph = to_nir(model, input_shape=(3,))
    assert isinstance(graph.nodes["negate_0"], nir.Scale)
    assert ("linear_0", "negate_0") in graph.edges and ("negate_0", "lif_0") in graph.edges
    back = from_nir(graph)
    assert isinstance(back, GraphExecutor) and isinstance(back.node("negate_0"), Scale)
    x = torch.rand(12, 2, 3, generator=torch.Generator().manual_seed(1)) * 4 - 2
    with torch.no_grad():
        want = GraphExecutor.sequential(model, input_shape=(3,))(x)
        got = back(x)
    assert want.hidden[0].any()
    assert torch.equal(got.output, want.output) and torch.equal(got.membrane, want.membrane)
