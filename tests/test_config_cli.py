"""Config schema, overrides, files, and the ``spikefed train`` command (exit codes, JSON, errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spikefed.experiment.config import ConfigError, TrainSettings, apply_overrides, build_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))  # tests/forkserver.py (importlib import mode)
from forkserver import run_python  # noqa: E402


def test_overrides_parse_types_and_nest() -> None:
    data = apply_overrides({"train": {"epochs": 3}}, ["train.lr=0.01", "model.hidden=[32, 16]",
                                                      "model.learn_beta=true", "train.grad_clip=null"])
    assert data == {"train": {"epochs": 3, "lr": 0.01, "grad_clip": None},
                    "model": {"hidden": [32, 16], "learn_beta": True}}
    s = build_settings(TrainSettings, None, ["model.hidden=[32,16]", "train.epochs=2"])
    assert s.model.hidden == [32, 16] and s.train.epochs == 2 and s.train.lr == 2e-3


@pytest.mark.parametrize("override,needle", [
    ("model.nope=1", "unknown key 'model.nope'; valid keys here: kind, hidden"),
    ("train.optimizer=lbfgs", "train.optimizer: valid: adam, sgd"),
    ("model.beta=1.5", "model.beta"),
    ("data.test_size=0", "data.test_size"),
    ("model.surrogate=relu", "valid: atan, fast_sigmoid"),
    ("train.epochs=two", "train.epochs"),
])
def test_bad_values_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_settings(TrainSettings, None, [override])
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_and_toml_files(tmp_path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("seed: 7\ntrain:\n  epochs: 4\n")
    t = tmp_path / "c.toml"
    t.write_text("seed = 8\n[model]\nhidden = [10]\n")
    assert build_settings(TrainSettings, y).seed == 7
    s = build_settings(TrainSettings, t, ["train.epochs=1"])
    assert s.seed == 8 and s.model.hidden == [10] and s.train.epochs == 1
    bad = tmp_path / "c.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        build_settings(TrainSettings, bad)
    with pytest.raises(ConfigError, match="not found"):
        build_settings(TrainSettings, tmp_path / "missing.yaml")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_python(["-m", "spikefed.cli", *args], timeout=300)


def test_cli_train_json() -> None:
    r = _cli("train", "--json", "--set", "train.epochs=2", "--set", "model.hidden=[32]", "--set", "train.num_steps=6")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("test_accuracy", "firing_rate", "seconds", "test_loss", "firing_rate_per_layer"):
        assert key in out
    assert 0.3 < out["test_accuracy"] <= 1.0
    assert 0.0 < out["firing_rate"] < 1.0


def test_cli_bad_key_exits_2_with_one_line() -> None:
    r = _cli("train", "--set", "train.epoch=3")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "train.epoch" in lines[0] and "epochs" in lines[0]
