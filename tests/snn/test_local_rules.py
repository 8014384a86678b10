"""The local rules as training methods: config keys and errors, `spikefed train`, and federated clients."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spikefed.data import load_digits_split
from spikefed.experiment.config import ConfigError, RunSettings, TrainSettings, build_settings
from spikefed.snn.models import SpikingMLP
from spikefed.snn.train import TrainConfig, backward_batch, evaluate, fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/forkserver.py (importlib import mode)
from forkserver import run_python  # noqa: E402

RULES = ["stdp", "decolle", "fa", "dfa", "drtp"]


@pytest.mark.parametrize("kw, needle", [
    ({"method": "dfa", "tbptt": 4}, "unset tbptt"),
    ({"method": "decolle", "reg_l1": 0.1}, "reg_l1"),
    ({"method": "decolle", "decolle_alpha": 1.5}, "decolle_alpha"),
    ({"method": "stdp", "stdp_tau_plus": -1.0}, "stdp_tau_plus"),
    ({"method": "stdp", "stdp_variant": "oja"}, "stdp_variant"),
    ({"method": "hebb"}, "unknown method"),
])
def test_train_config_refuses_bad_rule_settings(kw: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**kw)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="stdp_w_min"):
        build_settings(TrainSettings, None, ["train.method=stdp", "train.stdp_w_min=2"])
    with pytest.raises(ConfigError, match="decolle_alpha"):
        build_settings(RunSettings, None, ["local.method=decolle", "local.decolle_alpha=1"])
    with pytest.raises(ConfigError, match="method"):
        build_settings(RunSettings, None, ["local.method=backprop"])
    s = build_settings(RunSettings, None, ["local.method=stdp", "local.stdp_variant=multiplicative",
                                           "local.stdp_reward=true"])
    cfg = s.local.to_train_config()
    assert cfg.stdp_params().variant == "multiplicative" and cfg.stdp_params().reward


@pytest.mark.parametrize("method", RULES)
def test_fedprox_term_is_added_to_the_rule_update(method: str) -> None:
    model = SpikingMLP([4, 5, 3], readout="membrane", generator=torch.Generator().manual_seed(0))
    x = torch.rand(6, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 1])
    cfg = TrainConfig(method=method, loss="ce_membrane", membrane_reduction="time_mean")
    backward_batch(model, x, y, cfg)
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    anchor = model.linears[1].weight.detach() + 0.5
    w = model.linears[1].weight
    if method == "stdp":  # STDP changed the hidden weights in place: start again from the same weights
        model = SpikingMLP([4, 5, 3], readout="membrane", generator=torch.Generator().manual_seed(0))
        w = model.linears[1].weight
    backward_batch(model, x, y, cfg, extra_loss=lambda: ((w - anchor) ** 2).sum())
    torch.testing.assert_close(model.linears[1].weight.grad, plain["linears.1.weight"] + 2 * (w.detach() - anchor))
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("method, floor", [("dfa", 0.75), ("decolle", 0.75), ("fa", 0.75), ("drtp", 0.6),
                                           ("stdp", 0.6)])
def test_rules_learn_digits(method: str, floor: float) -> None:
    d = load_digits_split(test_size=0.2, seed=0)
    gen = torch.Generator().manual_seed(0)
    model = SpikingMLP([64, 48, 10], readout="membrane", generator=gen)
    cfg = TrainConfig(epochs=2, num_steps=8, method=method, loss="ce_membrane", membrane_reduction="time_mean",
                      lr=1e-2)
    before = evaluate(model, d.x_test, d.y_test, cfg).accuracy
    fit(model, d.x_train, d.y_train, cfg, gen)
    after = evaluate(model, d.x_test, d.y_test, cfg).accuracy
    assert after > floor and after > before + 0.1


@pytest.mark.parametrize("method", RULES)
def test_two_federated_rounds_with_rule_clients(method: str) -> None:
    from spikefed.experiment.runner import build_spec
    from spikefed.federated.simulation import Simulation

    settings = build_settings(RunSettings, None, [
        "partition.num_clients=3", "federation.fraction=1", "federation.rounds=2", "model.hidden=[12, 10]",
        "model.readout=membrane", f"local.method={method}", "local.loss=ce_membrane",
        "local.membrane_reduction=time_mean", "local.local_steps=2", "local.num_steps=5"])
    spec = build_spec(settings)
    assert spec.engine == "sequential"
    sim = Simulation(spec)
    before = {n: p.clone() for n, p in sim.state.global_params.items()}
    rows = [sim.run_round(), sim.run_round()]
    assert [r["round"] for r in rows] == [1, 2] and all(0 <= r["accuracy"] <= 1 for r in rows)
    changed = [n for n in before if not torch.equal(before[n], sim.state.global_params[n])]
    assert "linears.0.weight" in changed and "linears.2.weight" in changed


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_python(["-m", "spikefed.cli", *args], timeout=300)


@pytest.mark.slow
def test_cli_run_and_train_with_local_rules(tmp_path: Path) -> None:
    sets = ["local.method=stdp", "model.hidden=[16]", "model.readout=membrane", "local.loss=ce_membrane",
            "local.membrane_reduction=time_mean", "local.num_steps=5", "local.epochs=1", "partition.num_clients=4",
            "partition.min_size=5", "federation.rounds=2"]
    r = _cli("run", "--out", str(tmp_path / "run"), "--json", *[a for s in sets for a in ("--set", s)])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rounds"] == 2
    train = [s.replace("local.", "train.").replace("=stdp", "=dfa") for s in sets
             if not s.startswith(("partition", "federation"))]
    r = _cli("train", "--json", *[a for s in train for a in ("--set", s)])
    assert r.returncode == 0, r.stderr
    assert 0 <= json.loads(r.stdout)["test_accuracy"] <= 1
    bad = _cli("train", "--set", "train.method=decolle", "--set", "train.tbptt=3")
    assert bad.returncode == 2 and "tbptt" in bad.stderr + bad.stdout
