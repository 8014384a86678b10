"""Device placement (runtime.device) and the cohort loop without host syncs.

Without a GPU the device-specific paths are checked on the CPU (where every move is a no-op, so the CPU path is
the code path of every device) and against plain references; the CUDA tests run where torch sees a CUDA device."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from spikefed.data import load_digits_split
from spikefed.experiment.config import RunSettings
from spikefed.experiment.runner import build_spec
from spikefed.federated.cohort import ClientData, train_cohort, train_sequential
from spikefed.federated.placement import DeviceData, client_to, model_on, params_to, updates_to_host
from spikefed.federated.simulation import Simulation
from spikefed.federated.types import ClientUpdate, FitInstructions, params_of
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig

CUDA = torch.cuda.is_available()


def _clients(sizes: list[int]) -> list[ClientData]:
    d = load_digits_split(seed=0)
    out, start = [], 0
    for i, n in enumerate(sizes):
        out.append(ClientData(i, d.x_train[start:start + n].double(), d.y_train[start:start + n]))
        start += n
    return out


def _model() -> SpikingMLP:
    return SpikingMLP([64, 20, 10], generator=torch.Generator().manual_seed(0)).double()


def test_cpu_moves_are_no_ops() -> None:
    cpu = torch.device("cpu")
    c = _clients([5])[0]
    assert client_to(c, cpu) is c and DeviceData(cpu).get(c) is c
    m = _model()
    assert model_on(m, cpu) is m
    p = params_of(m)
    assert all(params_to(p, cpu)[n] is p[n] for n in p)
    ups = [ClientUpdate(0, 5, p)]
    assert updates_to_host(ups)[0] is ups[0]


class _Counter:
    """Counts the tensor methods that read a value back to the host (a device sync on an accelerator)."""

    NAMES = ("item", "tolist", "nonzero", "__bool__", "__int__", "__float__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def wrapped(t, *a, _original=original, **kw):  # noqa: ANN001
                self.calls += 1
                return _original(t, *a, **kw)
            monkeypatch.setattr(torch.Tensor, name, wrapped)


@pytest.mark.parametrize("encoder", ["direct"])
def test_cohort_loop_has_no_host_sync_per_step(monkeypatch: pytest.MonkeyPatch, encoder: str) -> None:
    """The number of host reads does not grow with the number of steps (1 vs 4 epochs): none per step.
    (Stochastic encoders check their input range per call, one read per client and step: not covered.)"""
    clients = _clients([30, 9, 21])  # unequal: clients stop at different steps (the active set shrinks)
    model, gens = _model(), lambda: [torch.Generator().manual_seed(7 + i) for i in range(3)]
    calls = []
    for epochs in (1, 4):
        cfg = TrainConfig(epochs=epochs, batch_size=8, lr=0.01, num_steps=5, encoder=encoder, grad_clip=1.0)
        g = params_of(model)
        counter = _Counter(monkeypatch)
        train_cohort(model, g, clients, gens(), cfg, FitInstructions(1, prox_mu=0.1), max_clients=3)
        calls.append(counter.calls)
        monkeypatch.undo()
    assert calls[0] == calls[1], calls


def test_cohort_order_independent_of_input_order() -> None:
    """Clients are trained longest-schedule first internally; updates come back in the given order and equal
    the sequential engine's (float64)."""
    clients = _clients([7, 40, 18, 25])
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.01, num_steps=5, optimizer="sgd", momentum=0.9)
    model = _model()
    g = params_of(model)
    gens = lambda: [torch.Generator().manual_seed(3 + i) for i in range(4)]  # noqa: E731
    a = train_cohort(model, g, clients, gens(), cfg, FitInstructions(1), step_budgets=[None, 3, None, 5])
    b = train_sequential(model, g, clients, gens(), cfg, FitInstructions(1), step_budgets=[None, 3, None, 5])
    assert [u.client_id for u in a] == [0, 1, 2, 3]
    assert [u.steps for u in a] == [u.steps for u in b] == [2, 3, 6, 5]
    for ua, ub in zip(a, b):
        for n in ua.params:
            assert torch.allclose(ua.params[n], ub.params[n], rtol=0, atol=1e-10)
        assert ua.metrics["loss"] == pytest.approx(ub.metrics["loss"], rel=1e-9)


def _settings(device: str, rounds: int = 2) -> RunSettings:
    return RunSettings.model_validate({
        "partition": {"method": "iid", "num_clients": 6}, "model": {"hidden": [32]},
        "local": {"epochs": 1, "num_steps": 6}, "runtime": {"device": device},
        "federation": {"rounds": rounds, "fraction": 0.5, "strategy": "scaffold"}})


def test_placed_training_equals_plain_on_cpu() -> None:
    """Simulation.train_placed (the accelerator path, run on the CPU here) gives the updates of Simulation.train."""
    sim = Simulation(build_spec(_settings("cpu")))
    ctx = sim.round_context(1)
    ctx.received = sim.state.global_params
    ctx.controls = [None] * len(ctx.plan.trained)
    plain = sim.train(ctx)
    placed = sim.train_placed(ctx)
    assert [u.client_id for u in plain] == [u.client_id for u in placed]
    for a, b in zip(plain, placed):
        assert all(torch.equal(a.params[n], b.params[n]) for n in a.params)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_run_trains_and_measures_the_same_bytes() -> None:
    cpu, gpu = Simulation(build_spec(_settings("cpu"))), Simulation(build_spec(_settings("cuda")))
    for _ in range(2):
        rc, rg = cpu.run_round(), gpu.run_round()
        assert rc["bytes_up"] == rg["bytes_up"] and rc["bytes_down"] == rg["bytes_down"]
        assert rg["accuracy"] is not None and rg["accuracy"] > 0.2
    assert all(v.device.type == "cpu" and torch.isfinite(v).all() for v in gpu.state.global_params.values())


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_updates_to_host_one_stack_per_name() -> None:
    p = {"w": torch.arange(6.0).view(2, 3), "b": torch.ones(3)}
    ups = [ClientUpdate(i, 1, {n: (v + i).cuda() for n, v in p.items()}) for i in range(3)]
    back = updates_to_host(ups)
    for i, u in enumerate(back):
        assert all(u.params[n].device.type == "cpu" and torch.equal(u.params[n], p[n] + i) for n in p)
    assert replace(back[0]).client_id == 0
