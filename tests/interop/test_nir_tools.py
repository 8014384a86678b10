"""A spikefed NIR export read by other tools: snnTorch (``snntorch.import_nir.import_from_nir``) and Norse
(``norse.torch.from_nir``) must classify the digits test set as spikefed does (the peer libraries are the
independent reference; their NIR readers are what a user of the file runs)."""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")
snntorch_nir = pytest.importorskip("snntorch.import_nir")
norse_torch = pytest.importorskip("norse.torch")

from spikefed.data import load_digits_split  # noqa: E402
from spikefed.interop import to_nir  # noqa: E402
from spikefed.snn import SpikingMLP, TrainConfig, fit  # noqa: E402
from spikefed.snn.train import encode_inputs  # noqa: E402

#: snnTorch's NIR reader computes beta = 1 - 1e-4 / tau whatever the file says, so the export uses that step
SNNTORCH_DT = 1e-4


@pytest.fixture(scope="session")  # session: kept when the longest-first order leaves the module
def trained() -> tuple[SpikingMLP, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A spiking MLP trained on digits (reset to zero: the dynamics NIR neurons have), the encoded test set,
    the labels and spikefed's own predictions (spike counts, argmax)."""
    data = load_digits_split(test_size=0.2, seed=0, scale="standard")
    gen = torch.Generator().manual_seed(0)
    model = SpikingMLP([64, 128, 10], neuron="lif", beta=0.9, threshold=1.0, reset="zero", generator=gen)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=3e-3, num_steps=25, encoder="direct", loss="mse_count")
    fit(model, data.x_train, data.y_train, cfg, gen)
    model.eval()
    x = encode_inputs(data.x_test, cfg, None)  # [T, B, 64]
    with torch.no_grad():
        pred = model(x).output.sum(0).argmax(1)
    return model, x, data.y_test, pred


def _snntorch_predict(graph, x: torch.Tensor) -> torch.Tensor:
    import snntorch.utils

    with contextlib.redirect_stdout(io.StringIO()):  # its reader prints a note per rescaled layer
        net = snntorch_nir.import_from_nir(graph)
    snntorch.utils.reset(net)  # init_hidden neurons: state lives in the modules
    counts = torch.zeros(x.shape[1], 10)
    with torch.no_grad():
        for t in range(x.shape[0]):
            out = net(x[t])
            counts += out[0] if isinstance(out, tuple) else out
    return counts.argmax(1)


def _norse_predict(graph, x: torch.Tensor, dt: float) -> torch.Tensor:
    logging.disable(logging.WARNING)  # Norse logs that r != 1 is ignored (the point of the unfolded case)
    try:
        net = norse_torch.from_nir(graph, dt=dt)
    finally:
        logging.disable(logging.NOTSET)
    state, counts = None, torch.zeros(x.shape[1], 10)
    with torch.no_grad():
        for t in range(x.shape[0]):
            out, state = net(x[t], state)
            counts += out
    return counts.argmax(1)


@pytest.mark.slow
def test_snntorch_and_norse_classify_a_spikefed_export_as_spikefed_does(trained, tmp_path) -> None:
    model, x, y, pred = trained
    acc = (pred == y).float().mean().item()
    assert acc > 0.8  # a trained model (chance is 0.1), so agreement below is not agreement on noise
    path = tmp_path / "digits.nir"
    nir.write(str(path), to_nir(model, dt=SNNTORCH_DT))  # R folded into the Affine rows by default
    graph = nir.read(str(path))
    for name, node in graph.nodes.items():
        if isinstance(node, (nir.LIF, nir.CubaLIF)):
            assert np.all(node.r == 1.0), name
    for tool, other in (("snntorch", _snntorch_predict(graph, x)), ("norse", _norse_predict(graph, x, SNNTORCH_DT))):
        agreement = (other == pred).float().mean().item()
        other_acc = (other == y).float().mean().item()
        print(f"{tool}: accuracy {other_acc:.4f} (spikefed {acc:.4f}), agreement {agreement:.4f}")
        assert agreement >= 0.99, tool
        assert abs(other_acc - acc) <= 0.01, tool


@pytest.mark.slow
def test_norse_ignores_r_so_an_unfolded_export_is_at_chance(trained) -> None:
    """Why fold_r is the default: with R = tau/dt left on the LIF node, Norse simulates r = 1 (inputs 10x too
    small for beta = 0.9) and the network stays silent: chance accuracy."""
    model, x, y, pred = trained
    other = _norse_predict(to_nir(model, dt=SNNTORCH_DT, fold_r=False), x, SNNTORCH_DT)
    assert (other == pred).float().mean().item() < 0.5


@pytest.mark.slow
def test_spikefed_export_of_a_run_directory(tmp_path) -> None:
    """``spikefed export DIR --nir FILE`` on a (default: subtract-reset) run: nir.read loads the file, every
    LIF/CubaLIF node has r == 1, and snnTorch / Norse compute what the file says (spikefed reading the fields
    alone, i.e. reset to v_reset) on the digits test set."""
    from typer.testing import CliRunner

    import spikefed
    from spikefed.cli import app
    from spikefed.interop import from_nir

    run_dir, path = tmp_path / "run", tmp_path / "out" / "model.nir"
    result = CliRunner().invoke(app, ["run", "--out", str(run_dir), "--json", "--set", "federation.rounds=2",
                                      "--set", "partition.num_clients=4", "--set", "local.epochs=1",
                                      "--set", "model.hidden=[32]"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["export", str(run_dir), "--nir", str(path)])
    assert result.exit_code == 0, result.output
    graph = nir.read(str(path))
    lifs = [n for n, v in graph.nodes.items() if isinstance(v, (nir.LIF, nir.CubaLIF))]
    assert lifs == ["lif_0", "lif_1"] and all(np.all(graph.nodes[n].r == 1) for n in lifs)
    run = spikefed.load_run(run_dir)
    x = encode_inputs(run.dataset().x_test, run.train_config, None)
    with torch.no_grad():
        fields = from_nir(graph, SNNTORCH_DT, use_metadata=False)(x).output.sum(0).argmax(1)
        exact = from_nir(graph)(x).output  # with the metadata: spikefed's own (subtractive) model again
        assert torch.equal(exact, run.model(x).output)
    for other in (_snntorch_predict(graph, x), _norse_predict(graph, x, SNNTORCH_DT)):
        assert (other == fields).float().mean().item() >= 0.99
    bad = CliRunner().invoke(app, ["export", str(tmp_path / "nowhere"), "--nir", str(path)])
    assert bad.exit_code == 2 and "not a spikefed run directory" in bad.output
