"""Issue 17 (part B) options through `spikefed train` / `spikefed run`: one-line config errors, small runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spikefed.experiment.centralized import build_model
from spikefed.experiment.config import ConfigError, TrainSettings, build_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))  # tests/forkserver.py (importlib import mode)
from forkserver import run_python  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    return run_python(["-m", "spikefed.cli", *args], cwd=ROOT, env=env, timeout=600)


@pytest.mark.parametrize("override, needle", [
    ("train.adversarial=fgsm;train.encoder=rate", "needs encoder=direct"),
    ("model.neuron_options={tau_m: 3}", "neuron_options apply to the izhikevich"),
    ("model.neuron=srm;model.neuron_options={tau_x: 3}", "unknown option(s) ['tau_x'] for neuron srm"),
    ("model.neuron=srm;model.neuron_options={tau_m: 1}", "tau_m > tau_s"),
    ("train.distill=0.5", "ce_count or ce_membrane"),
    ("model.init=variance_preserving;model.neuron=if", "init=variance_preserving needs a leaky membrane"),
    ("model.norm=batch", "model.norm"),
    ("model.dropout=1.0", "model.dropout"),
])
def test_bad_options_give_one_line_errors(override: str, needle: str) -> None:
    with pytest.raises((ConfigError, ValueError)) as info:
        settings = build_settings(TrainSettings, overrides=override.split(";"))
        build_model(settings, 64, 10, torch.Generator().manual_seed(0))
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_cli_reports_a_bad_encoder_option_in_one_line() -> None:
    r = _cli("train", "--set", "train.encoder=n_of_m", "--set", "train.encoder_kwargs={m: 3}", "--set",
             "train.epochs=1", "--set", "model.hidden=[8]")
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode != 0 and len(errors) == 1 and "n_of_m" in errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_train_with_every_option_and_coding() -> None:
    r = _cli("train", "--json", "--set", "train.epochs=2", "--set", "model.hidden=[24,24]", "--set",
             "train.num_steps=6", "--set", "model.neuron=dendritic", "--set", "model.norm=tdbn", "--set",
             "model.residual=true", "--set", "model.dropout=0.1", "--set", "model.init=variance_preserving",
             "--set", "train.loss=ce_count", "--set", "train.ib_weight=0.05", "--set", "train.adversarial=fgsm",
             "--set", "train.distill=0.5", "--set", "train.distill_epochs=2")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["test_accuracy"] > 0.3  # 2 epochs on digits, well above chance (0.1)
    r = _cli("train", "--json", "--set", "train.epochs=1", "--set", "model.hidden=[16]", "--set",
             "train.encoder=rank_order", "--set", "train.num_steps=8", "--set", "data.scale=unit")
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow
def test_two_round_federated_run_with_robust_local_training(tmp_path: Path) -> None:
    r = _cli("run", "--out", str(tmp_path / "run"), "--json", "--set", "partition.num_clients=4", "--set",
             "partition.min_size=5", "--set", "model.hidden=[16,16]", "--set", "local.num_steps=5", "--set",
             "local.epochs=1", "--set", "federation.rounds=2", "--set", "model.neuron=izhikevich", "--set",
             "model.norm=tdbn", "--set", "model.residual=true", "--set", "model.dropout=0.1", "--set",
             "local.adversarial=pgd", "--set", "local.adv_steps=2", "--set", "local.ib_weight=0.1", "--set",
             "local.loss=ce_count", "--set", "local.distill=0.5", "--set", "local.distill_epochs=1")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["engine"] == "sequential"
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    assert len(rows) >= 2
