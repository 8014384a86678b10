"""``spikefed run`` on each recorded format (files generated in the official layouts), with natural partitions,
and the sensor-skew run with its measured divergence of event statistics. Small enough for CI (slow tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the byte-by-byte writers (importlib import mode)
from official_formats import write_gesture_set, write_nmnist_set, write_shd_set  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/forkserver.py (importlib import mode)
from forkserver import run_python  # noqa: E402

SMALL = ["model.hidden=[64]", "local.epochs=2", "federation.rounds=3", "federation.fraction=1.0",
         "data.bins=6", "local.batch_size=16"]


def _run(out: Path, *sets: str) -> dict:
    args = [a for s in [*SMALL, *sets] for a in ("--set", s)]
    r = run_python(["-m", "spikefed.cli", "run", "--out", str(out), "--json", *args], timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@pytest.mark.slow
def test_nmnist_files_run_and_sensor_skew_is_measured(tmp_path: Path) -> None:
    write_nmnist_set(tmp_path / "nmnist", 300, 100)
    base = ["data.name=nmnist", f"data.root={tmp_path / 'nmnist'}", "partition.num_clients=4"]
    iid = _run(tmp_path / "iid", *base, "partition.method=iid")
    assert iid["final_accuracy"] > 0.3  # chance 0.1
    skew = _run(tmp_path / "skew", *base, "partition.method=feature")
    ev = skew["heterogeneity"]["events"]
    assert ev["sensors"] == ["living_room", "street_corner"] * 2
    # the street-corner sensors move the clients' event statistics away from the living-room ones
    assert ev["mean_event_hellinger"] > ev["recorded_mean_event_hellinger"] + 0.2
    assert skew["heterogeneity"]["mean_hellinger"] > iid["heterogeneity"]["mean_hellinger"]


@pytest.mark.slow
def test_dvs_gesture_files_run_by_subject(tmp_path: Path) -> None:
    write_gesture_set(tmp_path / "gesture", 240, 80)
    summary = _run(tmp_path / "run", "data.name=dvs_gesture", f"data.root={tmp_path / 'gesture'}",
                   "data.crop=[54,54,20,20]", "data.downsample=1", "data.window_ms=300",
                   "partition.method=subject", "partition.num_clients=4")
    assert summary["clients"] == 4 and summary["heterogeneity"]["sizes"] == [60, 60, 60, 60]
    assert summary["final_accuracy"] > 0.3  # chance 1/11
    assert "mean_event_hellinger" in summary["heterogeneity"]["events"]


@pytest.mark.slow
def test_shd_files_run_by_speaker(tmp_path: Path) -> None:
    write_shd_set(tmp_path / "shd", 250, 80)
    summary = _run(tmp_path / "run", "data.name=shd", f"data.root={tmp_path / 'shd'}", "data.window_ms=300",
                   "data.crop=[0,400]", "partition.method=speaker", "partition.num_clients=5")
    assert summary["clients"] == 5 and summary["heterogeneity"]["sizes"] == [50] * 5
    assert summary["final_accuracy"] > 0.3  # chance 1/20 (10 used)


@pytest.mark.slow
def test_event_domain_drift_run(tmp_path: Path) -> None:
    write_nmnist_set(tmp_path / "nmnist", 200, 60)
    summary = _run(tmp_path / "run", "data.name=nmnist", f"data.root={tmp_path / 'nmnist'}", "partition.method=iid",
                   "partition.num_clients=3", "federation.rounds=2", "continual.stream=domain_drift",
                   "continual.tasks=2", "continual.rotation=0", "continual.noise=0.05", "continual.regularizer=l2",
                   "continual.lam=1")
    c = summary["continual"]
    assert c["tasks"] == 2 and len(c["drift"]) == 1 and c["drift"][0] > 0
    assert len(c["accuracy_matrix"]) == 2
