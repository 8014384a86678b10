"""``spikefed convert`` and ``spikefed regress``: JSON results, config validation, one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from spikefed.cli import app
from spikefed.experiment.config import ConfigError, ConvertSettings, RegressSettings, build_settings


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_convert_json_reports_every_step_and_the_hybrid_rows() -> None:
    r = _invoke("convert", "--json", "--set", "convert.hidden=[32]", "--set", "convert.ann_epochs=3",
                "--set", "convert.steps=[2,32]", "--set", "convert.finetune_epochs=1",
                "--set", "convert.finetune_steps=4")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert [row["steps"] for row in out["converted"]] == [2, 32]
    assert [row["steps"] for row in out["hybrid"]] == [2, 32]
    assert out["sizes"] == [64, 32, 10] and len(out["scales"]) == 2
    assert out["gap_at_max_steps"] == pytest.approx(out["ann_accuracy"] - out["converted"][-1]["accuracy"])
    first, last = out["converted"]
    assert last["spikes_per_sample"] > first["spikes_per_sample"] and last["energy_j"] > first["energy_j"]


def test_regress_json_compares_with_persistence() -> None:
    r = _invoke("regress", "--json", "--set", "data.length=600", "--set", "data.window=60", "--set", "data.discard=100",
                "--set", "train.epochs=2", "--set", "train.hidden=8", "--set", "train.warmup=5",
                "--set", "train.tbptt=20")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("mse", "smape", "persistence_mse", "persistence_smape", "beats_persistence", "horizon"):
        assert key in out
    assert out["beats_persistence"] == (out["mse"] < out["persistence_mse"])
    assert out["steps"] == out["test_windows"] * 55


@pytest.mark.parametrize("schema,override,needle", [
    (ConvertSettings, "convert.norm=mean", "convert.norm"),
    (ConvertSettings, "convert.percentile=0", "convert.percentile"),
    (ConvertSettings, "convert.steps=[]", "convert.steps"),
    (ConvertSettings, "convert.initial_membrane=1", "convert.initial_membrane"),
    (ConvertSettings, "data.name=event_digits", "static images"),
    (ConvertSettings, "convert.nope=1", "unknown key 'convert.nope'"),
    (RegressSettings, "data.dt=0.3", "tau / dt"),
    (RegressSettings, "train.warmup=500", "warmup=500 must be smaller than data.window=200"),
    (RegressSettings, "train.neuron=if", "train.neuron"),
])
def test_bad_settings_name_the_key(schema: type, override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_settings(schema, None, [override])
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_cli_errors_are_one_line() -> None:
    r = _invoke("regress", "--set", "train.lr=-1")
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: train.lr")
    r = _invoke("regress", "--set", "data.length=150", "--set", "data.window=120", "--set", "data.discard=0")
    assert r.exit_code == 1
    assert "the training part of the series has 105 samples, fewer than window + horizon = 125" in r.stderr
