"""e-prop with several hidden layers against autograd: the top layer equals BPTT with the lower spikes held fixed,
each lower layer a direct-feedback update sending (dE/d read-out current) B_l into its spikes."""

from __future__ import annotations

import pytest
import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.snn.eprop_deep import deep_eprop_backward, deep_modules
from spikefed.snn.local import fixed_matrix
from spikefed.snn.losses import ce_membrane_loss
from spikefed.snn.models import SpikingMLP
from spikefed.snn.online import eprop_backward, eprop_support

SIZES = [6, 9, 8, 7, 4]


def _model() -> SpikingMLP:
    return SpikingMLP(SIZES, readout="membrane", generator=torch.Generator().manual_seed(4), beta=0.7,
                      threshold=0.6).double()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.rand(7, 5, SIZES[0], generator=g, dtype=torch.float64) * 2, torch.randint(0, SIZES[-1], (5,),
                                                                                           generator=g)


def _reference(model: SpikingMLP, x: torch.Tensor, y: torch.Tensor, reduction: str, seed: int) -> None:
    """Autograd: every hidden layer on its detached input; the read-out loss back-propagated into the top layer;
    each lower layer gets (dE/d current) @ B_l into its spikes."""
    h, spikes = x, []
    for lin, neuron in zip(model.linears[:-1], model.neurons):
        s = neuron.run(lin(h.detach())).spikes
        spikes.append(s)
        h = s
    current = model.linears[-1](spikes[-1])
    current.retain_grad()
    mem, _ = model.integrator(current)
    ce_membrane_loss(mem, y, reduction).backward(retain_graph=True)
    for i, s in enumerate(spikes[:-1]):
        torch.autograd.backward(s, current.grad @ fixed_matrix((SIZES[-1], SIZES[i + 1]), seed, i, s.dtype))


@pytest.mark.parametrize("reduction", ["time_mean", "last"])
def test_deep_eprop_matches_its_autograd_reference(reduction: str) -> None:
    model, reference = _model(), _model()
    x, y = _batch()
    loss, ys = eprop_backward(model, x, y, reduction, feedback_seed=3)
    _reference(reference, x, y, reduction, 3)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
        assert float(q.grad.abs().sum()) > 0, name
    out = reference(x)
    torch.testing.assert_close(ys, out.output.detach())
    assert loss == pytest.approx(float(ce_membrane_loss(out.output.detach(), y, reduction)))


def test_random_feedback_only_changes_the_top_layer_signal() -> None:
    sym, rnd = _model(), _model()
    x, y = _batch()
    deep_eprop_backward(sym, x, y, feedback="symmetric", feedback_seed=1)
    deep_eprop_backward(rnd, x, y, feedback="random", feedback_seed=1)
    torch.testing.assert_close(sym.linears[0].weight.grad, rnd.linears[0].weight.grad)
    assert not torch.allclose(sym.linears[2].weight.grad, rnd.linears[2].weight.grad)
    layers, readout, mats = deep_modules(sym, "random", 1)
    assert len(mats) == 3 and mats[-1] is readout.feedback


def test_recurrent_layers_are_supported_and_alif_is_refused() -> None:
    model = SpikingMLP([6, 8, 7, 4], neuron="rlif", readout="membrane").double()
    assert eprop_support(model) is None
    x, y = _batch()
    eprop_backward(model, x, y)
    assert model.neurons[1].recurrent.grad is not None
    assert "lif, if, rlif" in eprop_support(SpikingMLP([6, 8, 7, 4], neuron="alif", readout="membrane"))


def test_run_config_accepts_eprop_with_two_hidden_layers() -> None:
    from spikefed.experiment.runner import build_spec
    from spikefed.federated.simulation import Simulation

    settings = build_settings(RunSettings, None, [
        "partition.num_clients=3", "federation.fraction=1", "federation.rounds=2", "model.hidden=[12, 10]",
        "model.readout=membrane", "local.method=eprop", "local.loss=ce_membrane",
        "local.membrane_reduction=time_mean", "local.local_steps=2", "local.num_steps=5"])
    sim = Simulation(build_spec(settings))
    before = sim.state.global_params["linears.0.weight"].clone()
    rows = [sim.run_round(), sim.run_round()]
    assert rows[-1]["round"] == 2
    assert not torch.equal(before, sim.state.global_params["linears.0.weight"])
