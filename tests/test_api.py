"""The Python API: own model / data / strategy through the CLI's run directory, load_run, per-client accuracy."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import spikefed
from spikefed.federated.aggregation import normalized_weights
from spikefed.federated.cohort import ClientData
from spikefed.federated.strategies import make_strategy, register_strategy, strategy_names
from spikefed.federated.types import ClientUpdate
from spikefed.snn import LIF, TrainConfig

SMALL = ["federation.rounds=2", "partition.num_clients=4", "partition.method=iid", "federation.fraction=1.0",
         "local.epochs=1", "local.num_steps=6", "local.batch_size=64"]


class TinySNN(nn.Module):
    """A plain module returning the output spikes [T, B, C] as one tensor."""

    def __init__(self, features: int = 64, classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)  # the test's own module; spikefed never touches global RNG
        self.fc1, self.lif1 = nn.Linear(features, 24), LIF(24)
        self.fc2, self.lif2 = nn.Linear(24, classes), LIF(classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif2(self.fc2(self.lif1(self.fc1(x))[0]))[0]


def _blobs(n: int = 240, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 5)) * 0.3 + np.eye(3, 5)[y] * 2.0
    return {"x_train": x[: n * 3 // 4], "y_train": y[: n * 3 // 4], "x_test": x[n * 3 // 4:], "y_test": y[n * 3 // 4:]}


class Median(spikefed.Strategy):
    name = "test_median"

    def __init__(self, lr: float = 0.5) -> None:
        super().__init__()
        self.lr = lr

    def config(self) -> dict:
        return {"lr": self.lr}

    def aggregate(self, global_params, client_params, weights, manifolds):
        return {n: torch.stack([p[n] for p in client_params]).median(0).values for n in global_params}

    def server_step(self, name, x, g, out):
        return x - self.lr * g


@pytest.fixture(autouse=True, scope="module")
def _registered():
    register_strategy("test_median", Median, replace=True)
    yield


def test_strategy_hooks_compute_median_then_damped_step() -> None:
    """Plain reference: x + lr (median_k w_k - x), coordinate by coordinate."""
    gen = torch.Generator().manual_seed(0)
    x = {"w": torch.randn(3, 4, generator=gen), "b": torch.randn(4, generator=gen)}
    ups = [ClientUpdate(k, 10 + k, {n: t + torch.randn(t.shape, generator=gen) for n, t in x.items()})
           for k in range(5)]
    new = make_strategy("test_median", lr=0.5).aggregate_fit(1, x, ups)
    for n in x:
        vals = np.stack([u.params[n].numpy() for u in ups])
        ref = x[n].numpy() + 0.5 * (np.median(vals, axis=0) - x[n].numpy())
        np.testing.assert_allclose(new[n].numpy(), ref, rtol=1e-6)
    assert normalized_weights([1, 3]).tolist() == [0.25, 0.75]


def test_register_strategy_refuses_bad_names() -> None:
    with pytest.raises(ValueError, match="built-in"):
        register_strategy("fedavg", Median)
    with pytest.raises(ValueError, match="registered already"):
        register_strategy("test_median", Median)
    with pytest.raises(ValueError, match="lower-case"):
        register_strategy("My Strategy", Median)
    with pytest.raises(ValueError, match="unknown strategy 'nope'.*test_median"):
        make_strategy("nope")
    assert "test_median" in strategy_names()


def test_own_model_data_and_strategy_get_a_full_run_directory(tmp_path) -> None:
    rows = []
    run = spikefed.federate(overrides=SMALL + ["federation.strategy=test_median", "federation.strategy_args={lr: 0.5}"],
                            model=TinySNN(5, 3), data=_blobs(), out=tmp_path / "run", on_round=rows.append)
    files = {p.name for p in run.dir.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "checkpoint.pt", "summary.json", "report.html", "custom.json"} <= files
    assert [r["round"] for r in rows] == [1, 2] and run.round == 2
    custom = json.loads((run.dir / "custom.json").read_text())
    assert custom["model"]["class"].endswith("TinySNN") and custom["data"]["train"] == 180
    assert custom["model"]["parameters"]["fc1.weight"] == [24, 5]
    lines = (run.dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2]
    # the model the run returns and the one reloaded from the checkpoint are the same weights
    loaded = spikefed.load_run(run.dir, model=TinySNN(5, 3, seed=1), data=_blobs())
    for (n, a), (_, b) in zip(run.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), n
    assert loaded.evaluate().accuracy == pytest.approx(run.summary["final_accuracy"])
    with pytest.raises(ValueError, match="your own model"):
        spikefed.load_run(run.dir)
    with pytest.raises(ValueError, match="SHA-256"):
        spikefed.load_run(run.dir, model=TinySNN(5, 3), data=_blobs(seed=1))
    with pytest.raises(ValueError, match="does not fit"):
        spikefed.load_run(run.dir, model=TinySNN(5, 4), data=_blobs())


@pytest.mark.slow
def test_resume_of_an_own_model_equals_the_straight_run(tmp_path) -> None:
    over = SMALL[1:] + ["federation.strategy=test_median"]
    straight = spikefed.federate(overrides=over + ["federation.rounds=3"], model=TinySNN(5, 3), data=_blobs(),
                                 out=tmp_path / "a")
    spikefed.federate(overrides=over + ["federation.rounds=2"], model=TinySNN(5, 3), data=_blobs(), out=tmp_path / "b")
    resumed = spikefed.federate(overrides=over + ["federation.rounds=3"], model=TinySNN(5, 3), data=_blobs(),
                                out=tmp_path / "b", resume=True)
    for (n, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), n
    class Other(TinySNN):  # same parameter shapes, another model: refused by the checkpoint's fingerprint
        pass

    with pytest.raises(ValueError, match="different experiment"):
        spikefed.federate(overrides=over + ["federation.rounds=4"], model=Other(5, 3), data=_blobs(),
                          out=tmp_path / "b", resume=True)


def test_model_returning_something_else_gets_a_clear_error(tmp_path) -> None:
    class Counts(TinySNN):
        def forward(self, x):
            return super().forward(x).sum(0)  # [B, C]: the time axis is gone

    class Pair(TinySNN):
        def forward(self, x):
            out = super().forward(x)
            return out, out

    for model, needle in ((Counts(5, 3), r"Counts returned a tensor of shape \[\d+, 3\].*\[T, B, classes\]"),
                          (Pair(5, 3), "Pair returned a tuple of 2 items")):
        with pytest.raises(TypeError, match=needle):
            spikefed.federate(overrides=SMALL, model=model, data=_blobs(), out=tmp_path / type(model).__name__)


def test_per_client_accuracy_matches_a_plain_count() -> None:
    model = TinySNN(5, 3)
    d = _blobs()
    x, y = torch.as_tensor(d["x_train"], dtype=torch.float32), torch.as_tensor(d["y_train"])
    clients = [ClientData(0, x[:50], y[:50]), ClientData(1, x[50:120], y[50:120])]
    cfg = TrainConfig(num_steps=7, encoder="direct", loss="ce_count")
    rows = spikefed.evaluate_clients(model, clients, cfg)
    for c, row in zip(clients, rows):
        with torch.no_grad():
            counts = model(c.x.unsqueeze(0).expand(7, -1, -1)).sum(0)  # direct coding: the input at every step
        assert row["samples"] == c.num_samples
        assert row["accuracy"] == pytest.approx(float((counts.argmax(1) == c.y).float().mean()))
    s = spikefed.summarize_clients(rows)
    assert s["min"] == min(r["accuracy"] for r in rows)
    assert s["weighted"] == pytest.approx((rows[0]["accuracy"] * 50 + rows[1]["accuracy"] * 70) / 120)


def test_load_run_of_a_cli_run_rebuilds_the_model(tmp_path) -> None:
    from spikefed.experiment.runner import run_experiment
    from spikefed.experiment.config import build_settings, RunSettings

    settings = build_settings(RunSettings, None, SMALL + ["model.hidden=[16]"])
    summary = run_experiment(settings, tmp_path / "cli")
    run = spikefed.load_run(tmp_path / "cli")
    assert type(run.model).__name__ == "SpikingMLP" and run.round == 2 and run.summary is not None
    assert run.evaluate().accuracy == pytest.approx(summary["final_accuracy"])  # the run's own last evaluation
    rows = run.client_accuracy()
    assert [r["client"] for r in rows] == [0, 1, 2, 3] and sum(r["samples"] for r in rows) == 1437
    (tmp_path / "cli" / "summary.json").unlink()  # an interrupted run: no summary, the checkpoint's model
    assert spikefed.load_run(tmp_path / "cli").summary is None


def test_import_spikefed_is_cheap() -> None:
    code = "import sys, spikefed; print('torch' in sys.modules); spikefed.load_run; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
