"""Every ``model.kind`` and neuron trains federated; delays are averaged on the circle; bad model settings are one
line naming the key."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from spikefed.experiment.config import ConfigError, RunSettings, TrainSettings, build_settings
from spikefed.experiment.runner import build_spec, run_experiment

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))  # tests/forkserver.py (importlib import mode)
from forkserver import run_python  # noqa: E402

TINY = ["federation.rounds=2", "partition.num_clients=2", "federation.fraction=1", "partition.method=iid",
        "local.epochs=1", "local.local_steps=2", "local.batch_size=8", "local.num_steps=3", "federation.eval_every=2"]


def _settings(*overrides: str) -> RunSettings:
    return build_settings(RunSettings, None, [*TINY, *overrides])


@pytest.mark.parametrize("overrides", [
    ("model.kind=mlp", "model.neuron=if", "model.hidden=[8]", "model.refractory=2"),
    ("model.kind=mlp", "model.neuron=synaptic", "model.hidden=[8]", "model.learn_reset=true", "model.graded=true"),
    ("model.kind=conv", "model.neuron=lif", "model.channels=[2]", "model.pooling=avg"),
    ("model.kind=conv", "model.neuron=alif", "model.channels=[2, 2]", "model.residual=true", "model.pooling=sum"),
    ("model.kind=recurrent", "model.neuron=lif", "model.hidden=[8]"),
    ("model.kind=recurrent", "model.neuron=ralif", "model.hidden=[8]", "model.delays=2"),
])
def test_every_kind_trains_two_federated_rounds(overrides: tuple[str, ...], tmp_path: Path) -> None:
    settings = _settings(*overrides)
    summary = run_experiment(settings, tmp_path / "run")
    assert summary["rounds"] == 2
    assert 0.0 <= summary["final_accuracy"] <= 1.0
    # every kind, neuron and the delays train on the batched engine (its generic vmap forward)
    assert summary["engine"] == "cohort" and not summary["engine_note"], summary.get("engine_note")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["accuracy"] == summary["final_accuracy"]


def test_delays_are_averaged_on_the_circle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The global delays after a round equal atan2(mean sin, mean cos) of the clients' trained delays."""
    import spikefed.federated.simulation as simulation
    from spikefed.federated.simulation import Simulation

    uploads: list = []
    real = simulation.train_clients

    def recording(*args, **kwargs):
        updates = real(*args, **kwargs)
        uploads.extend(updates)
        return updates

    monkeypatch.setattr(simulation, "train_clients", recording)
    settings = _settings("model.hidden=[6]", "model.delays=4", "partition.num_clients=3", "federation.weights=uniform",
                         "local.lr=0.5", "local.local_steps=3", "federation.norm_bound=null")
    sim = Simulation(build_spec(settings))
    sim.run_round()
    assert len(uploads) == 3
    name = "delays.0.delays"
    period = 4.0
    client = torch.stack([u.params[name].double() for u in uploads])
    assert float((client.max(0).values - client.min(0).values).max()) > 0.05  # the clients moved apart
    angle = client * 2 * math.pi / period
    mean = torch.atan2(angle.sin().mean(0), angle.cos().mean(0)) * period / (2 * math.pi)
    mean = torch.remainder(mean, period)
    got = sim.state.global_params[name].double()
    gap = torch.remainder(got - mean + period / 2, period) - period / 2  # distance on the ring
    assert float(gap.abs().max()) < 1e-5
    linear = client.mean(0)  # and not the linear mean, where a client wrapped across the seam
    wrapped = (client.max(0).values - client.min(0).values) > period / 2
    if bool(wrapped.any()):
        assert float((got - linear)[wrapped].abs().max()) > 0.1


@pytest.mark.parametrize("overrides,needle", [
    (["model.kind=transformer"], "model.kind"),
    (["model.kernel=0"], "model.kernel"),
    (["model.channels=[4]"], "model.channels applies to model.kind=conv only"),
    (["model.kind=conv", "model.hidden=[8]"], "model.hidden applies to mlp and recurrent"),
    (["model.kind=conv", "model.neuron=rlif"], "model.neuron=rlif"),
    (["model.kind=recurrent", "model.neuron=synaptic"], "no recurrent synaptic"),
    (["model.neuron=alif", "model.refractory=2"], "model.refractory=2"),
    (["model.kind=conv", "model.kernel=3", "model.padding=3"], "model.padding=3"),
    (["local.loss=mse_membrane"], "model.readout=membrane"),
    (["model.kind=conv", "data.name=shd", "data.root=/nonexistent"], "1-D array of cochlea channels"),
    (["model.delays=-1"], "model.delays"),
])
def test_bad_model_settings_are_one_line_errors(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_settings(RunSettings, None, overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_kernel_larger_than_the_input_is_one_line_naming_the_model() -> None:
    settings = _settings("model.kind=conv", "model.kernel=11", "model.padding=0", "model.channels=[2]")
    with pytest.raises(ConfigError) as e:
        build_spec(settings)
    assert "model (kind=conv)" in str(e.value) and "kernel 11" in str(e.value) and "\n" not in str(e.value)


def test_centralized_train_builds_every_kind() -> None:
    from spikefed.experiment.centralized import run_centralized

    s = build_settings(TrainSettings, None, ["model.kind=conv", "model.channels=[2]", "train.epochs=1",
                                             "train.num_steps=2", "train.batch_size=64"])
    result = run_centralized(s)
    assert 0.0 <= result["test_accuracy"] <= 1.0 and len(result["firing_rate_per_layer"]) == 2


@pytest.mark.slow
def test_spikefed_run_conv_on_event_mnist5k(tmp_path: Path) -> None:
    """``spikefed run --set model.kind=conv --set data.name=event_mnist5k``, made small."""
    r = run_python(["-m", "spikefed.cli", "run", "--out", str(tmp_path / "run"), "--json",
                        "--set", "model.kind=conv", "--set", "data.name=event_mnist5k", "--set", "federation.rounds=2",
                        "--set", "partition.num_clients=2", "--set", "local.local_steps=1",
                        "--set", "partition.method=iid", "--set", "data.bins=2", "--set", "federation.eval_every=2"],
                   timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["rounds"] == 2 and summary["engine"] == "cohort" and not summary["engine_note"]


@pytest.mark.parametrize("kind", ["mlp", "conv", "recurrent"])
def test_the_resolved_config_loads_again(kind: str, tmp_path: Path) -> None:
    """config.yaml lists every key (those of the other kinds at their defaults): it must validate again."""
    from spikefed.experiment.config import dump_yaml

    settings = build_settings(RunSettings, None, [f"model.kind={kind}", "model.delays=2"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(settings))
    assert build_settings(RunSettings, path) == settings
