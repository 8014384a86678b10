"""spikefed's metrics beside NeuroBench's (the ``neurobench`` package is the independent reference).

NeuroBench measures through its own model wrappers: static metrics (footprint, connection sparsity, parameter
count) on any ``torch`` module (``TorchModel``), workload metrics (synaptic operations, activation sparsity)
through hooks on an snnTorch network stepped by ``SNNTorchModel``. The workload side therefore runs on an
snnTorch twin of the spikefed model (same weights; ``snn.Leaky`` with the same decay, threshold and subtractive
reset), checked to spike exactly as spikefed does. The mapping of names is in docs/energy.md.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from torch import nn

neurobench = pytest.importorskip("neurobench")
snn = pytest.importorskip("snntorch")

from neurobench.benchmarks import Benchmark  # noqa: E402
from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount  # noqa: E402
from neurobench.metrics.workload import ActivationSparsity, SynapticOperations  # noqa: E402
from neurobench.models import SNNTorchModel, TorchModel  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from spikefed.data import load_digits_split  # noqa: E402
from spikefed.hardware.metrics import connection_sparsity, footprint_bytes, measure  # noqa: E402
from spikefed.snn import SpikingMLP  # noqa: E402

STEPS, SAMPLES = 12, 120


class Twin(nn.Module):
    """The spikefed MLP in snnTorch, one time step per call (what SNNTorchModel drives)."""

    def __init__(self, model: SpikingMLP) -> None:
        super().__init__()
        self.fc = nn.ModuleList()
        self.lif = nn.ModuleList()
        last = len(model.linears) - 1
        for i, lin in enumerate(model.linears):
            fc = nn.Linear(lin.in_features, lin.out_features)
            fc.load_state_dict(lin.state_dict())
            self.fc.append(fc)
            # snnTorch's default subtractive reset (delayed by one step) is spikefed's u = beta u + x - s[t-1] thr
            self.lif.append(snn.Leaky(beta=0.9, threshold=1.0, init_hidden=True, output=i == last,
                                      reset_mechanism="subtract"))

    def reset(self) -> None:
        """Zero every membrane (SNNTorchModel calls it before each batch; snntorch.utils.reset does not look
        inside a ModuleList)."""
        for lif in self.lif:
            lif.reset_mem()

    def forward(self, x: torch.Tensor):
        for fc, lif in zip(self.fc[:-1], self.lif[:-1]):
            x = lif(fc(x))
        return self.lif[-1](self.fc[-1](x))


@pytest.fixture(scope="module")
def setup():
    data = load_digits_split(test_size=0.2, seed=0)
    model = SpikingMLP([64, 48, 10], beta=0.9, threshold=1.0, reset="subtract",
                       generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.linears[0].weight[:, :8] = 0.0  # pruned inputs: connection sparsity and events must see them
        model.linears[1].weight[::3] = 0.0
    x = data.x_test[:SAMPLES]
    return model, x, data.y_test[:SAMPLES]


def _neurobench(model: SpikingMLP, x: torch.Tensor, y: torch.Tensor) -> dict:
    twin = Twin(model)
    series = x.unsqueeze(1).repeat(1, STEPS, 1)  # NeuroBench data: (batch, time, features)
    loader = DataLoader(TensorDataset(series, y), batch_size=SAMPLES)
    twin.reset()
    with torch.no_grad():
        spikes = torch.stack([twin(x)[0] for _ in range(STEPS)])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        bench = Benchmark(SNNTorchModel(twin), loader, [], [], [[], [SynapticOperations, ActivationSparsity]])
        out = bench.run()
    out["output_spikes"] = spikes
    return out


def test_static_metrics_equal_neurobench(setup) -> None:
    model, _, _ = setup
    wrapped = TorchModel(model)
    print(f"\n| footprint (bytes) | {footprint_bytes(model)} | {Footprint()(wrapped)} |\n"
          f"| connection sparsity | {connection_sparsity(model):.6f} | {ConnectionSparsity()(wrapped)} |\n"
          f"| parameters | {sum(p.numel() for p in model.parameters())} | {ParameterCount()(wrapped)} |")
    assert footprint_bytes(model) == Footprint()(wrapped)
    assert connection_sparsity(model) == pytest.approx(ConnectionSparsity()(wrapped), abs=5e-5)  # NB rounds to 4
    assert sum(p.numel() for p in model.parameters()) == ParameterCount()(wrapped)


@pytest.mark.parametrize("time_constant", [False, True], ids=["materialised", "direct-coded view"])
def test_workload_metrics_equal_neurobench(setup, time_constant: bool) -> None:
    """Synaptic operations (effective ACs, effective MACs, dense) per sample and activation sparsity agree
    exactly. ``time_constant``: spikefed's direct coding passes one step broadcast over time (computed once);
    spikefed still counts the T steps the hardware integrates, as NeuroBench does stepping the twin."""
    model, x, y = setup
    xt = x.unsqueeze(0).expand(STEPS, -1, -1)
    if not time_constant:
        xt = xt.contiguous()
    ours = measure(model, xt, "45nm")
    per = ours.per_inference()
    ref = _neurobench(model, x, y)
    with torch.no_grad():
        assert torch.equal(model(xt).output, ref["output_spikes"])  # the twin is the same network
    ops = ref["SynapticOperations"]
    print(f"\n| metric | spikefed | NeuroBench |\n|---|---|---|\n"
          f"| effective ACs / sample | {per['effective_acs']:.2f} | {ops['Effective_ACs']:.2f} |\n"
          f"| effective MACs / sample | {per['effective_macs']:.2f} | {ops['Effective_MACs']:.2f} |\n"
          f"| dense ops / sample | {per['dense_ops']:.0f} | {ops['Dense']:.0f} |\n"
          f"| activation sparsity | {ours.activation_sparsity:.6f} | {ref['ActivationSparsity']:.6f} |")
    assert per["effective_acs"] == pytest.approx(ops["Effective_ACs"], rel=1e-12)
    assert per["effective_macs"] == pytest.approx(ops["Effective_MACs"], rel=1e-12)
    assert per["dense_ops"] == pytest.approx(ops["Dense"], rel=1e-12)
    assert per["synops"] == pytest.approx(ops["Effective_ACs"] + ops["Effective_MACs"], rel=1e-12)
    assert ours.activation_sparsity == pytest.approx(ref["ActivationSparsity"], rel=1e-12)
    assert per["effective_acs"] > 0 and per["effective_macs"] > 0  # both kinds of layer took part
