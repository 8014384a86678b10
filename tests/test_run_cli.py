"""``spikefed run`` end to end: run directory, JSON summary, resume, Ctrl-C, config errors (real processes)."""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))  # tests/forkserver.py (importlib import mode)
from forkserver import run_python  # noqa: E402

SMALL = ["--set", "partition.num_clients=6", "--set", "partition.min_size=5", "--set", "model.hidden=[24]",
         "--set", "local.num_steps=5", "--set", "local.epochs=1"]


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_python(["-m", "spikefed.cli", *args], timeout=timeout)


def test_run_writes_the_run_directory_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = _cli("run", "--out", str(out), "--json", *SMALL, "--set", "federation.rounds=2")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    for key in ("final_accuracy", "best_accuracy", "rounds", "total_bytes_up", "wall_seconds", "heterogeneity"):
        assert key in summary
    assert summary["rounds"] == 2
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt", "report.html", "partition.json"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == [1, 2]
    for key in ("round", "accuracy", "loss", "clients", "bytes_up", "bytes_down", "spikes", "synops", "energy_j",
                "seconds"):
        assert key in rows[0], key
    assert summary["total_bytes_up"] == sum(row["bytes_up"] for row in rows)
    assert "mean_jsd" in summary["heterogeneity"] and "mean_hellinger" in summary["heterogeneity"]
    # resume: extend the same run to 3 rounds
    r = _cli("run", "--resume", str(out), "--json", "--set", "federation.rounds=3")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == [1, 2, 3]
    assert json.loads(r.stdout)["rounds"] == 3
    # resuming with a different experiment is refused
    r = _cli("run", "--resume", str(out), "--set", "federation.rounds=4", "--set", "seed=5")
    assert r.returncode == 2 and "different experiment" in r.stderr


@pytest.mark.parametrize("override,needle", [
    ("partition.alpha=0", "partition.alpha"),
    ("partition.num_clients=5000", "exceeds the 1437 training samples"),
    ("federation.fraction=1.5", "federation.fraction"),
    ("federation.strategy=fedsgd", "federation.strategy"),
    ("federation.roundz=3", "unknown key 'federation.roundz'"),
])
def test_run_config_errors_exit_2(override: str, needle: str) -> None:
    r = _cli("run", "--set", override)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_config_show_and_partition_table() -> None:
    r = _cli("config", "show")
    assert r.returncode == 0 and "num_clients: 20" in r.stdout and "# Dirichlet concentration" in r.stdout
    r = _cli("config", "show", "--for", "regress", "--set", "data.horizon=3")
    assert r.returncode == 0 and "horizon: 3  # predict the sample" in r.stdout and "num_clients" not in r.stdout
    r = _cli("config", "show", "--for", "convert")
    assert r.returncode == 0 and "percentile" in r.stdout and "spikefed convert configuration" in r.stdout
    r = _cli("config", "show", "--for", "fly")
    assert r.returncode == 2 and "--for: unknown command 'fly'" in r.stderr
    r = _cli("partition", "--json", "--set", "partition.num_clients=5")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert len(report["jsd"]) == 5 and sum(report["sizes"]) == 1437


def _default_sigint() -> None:
    """Shells start background jobs with SIGINT ignored, and children inherit it (CI may run us that way);
    give the child the default disposition so Python installs its KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_saves_checkpoint_and_prints_resume_hint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "spikefed.cli", "run", "--out", str(out), *SMALL,
                             "--set", "federation.rounds=500"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint.pt").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume with: spikefed run --resume" in err
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) >= 1
    r = _cli("run", "--resume", str(out), "--json", "--set", f"federation.rounds={len(rows) + 1}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rounds"] == len(rows) + 1


def test_out_dir_holding_a_run_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _cli("run", "--out", str(out), "--json", *SMALL, "--set", "federation.rounds=1").returncode == 0
    before = (out / "metrics.jsonl").read_text()
    r = _cli("run", "--out", str(out), *SMALL, "--set", "federation.rounds=1", "--set", "seed=3")
    assert r.returncode == 2 and "already holds a run" in r.stderr and "--resume" in r.stderr
    assert (out / "metrics.jsonl").read_text() == before


def test_feature_skew_with_rate_coding_runs(tmp_path: Path) -> None:
    """Feature transforms may leave [0, 1]; rate/latency coding clamps them back instead of failing."""
    r = _cli("run", "--out", str(tmp_path / "r"), "--json", *SMALL, "--set", "federation.rounds=1",
             "--set", "partition.method=feature", "--set", "local.encoder=rate", "--set", "data.scale=unit",
             "--set", "partition.shift_std=0.5")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["rounds"] == 1


def test_partial_local_overrides_keep_federated_defaults() -> None:
    from spikefed.experiment.config import RunSettings, build_settings

    s = build_settings(RunSettings, None, ["local.batch_size=16"])
    default = RunSettings()
    assert s.local.batch_size == 16
    assert (s.local.epochs, s.local.lr, s.local.cosine_schedule) == (default.local.epochs, default.local.lr, False)


FLEET_DP = ["--set", "devices.fleet=[{profile: digital4, fraction: 0.5}, {profile: analog20, fraction: 0.5}]",
            "--set", "privacy.dp=true", "--set", "faults.dropout=0.2", "--set", "faults.deadline=8",
            "--set", "faults.straggler_sigma=0.5", "--set", "robustness.attack=boost",
            "--set", "robustness.attack_fraction=0.2", "--set", "federation.rounds=3"]


@pytest.mark.slow
def test_fleet_dp_run_summary_rows_report_and_compare(tmp_path: Path) -> None:
    """The end-of-run table says epsilon, dropped/late, attackers, deployed vs ideal, MiB; the rows carry what the
    report plots; `spikefed compare` of two seeds gives their mean and sample std."""
    out = tmp_path / "fleet"
    r = _cli("run", "--out", str(out), *SMALL, *FLEET_DP)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for needle in ("final accuracy, deployed (mean over devices)", "final accuracy, ideal hardware",
                   f"{summary['privacy']['epsilon']:.3f} at delta", "dropped", "late", "attackers sampled",
                   f"{summary['total_bytes_up'] / 2 ** 20:.2f} MiB ({summary['total_bytes_up']:,} B)",
                   "MiB = 2^20 bytes"):
        assert needle in r.stdout, needle
    assert " MB" not in r.stdout and " KB" not in r.stderr
    assert summary["dropped"] == sum(row["dropped"] for row in rows)
    assert summary["late"] == sum(row["late"] for row in rows)
    assert summary["malicious_sampled"] == sum(row["malicious"] for row in rows) > 0
    assert summary["sampled_clients"] == sum(len(row["participation"]["sampled"]) for row in rows)
    assert summary["devices"]["client_profiles"].count("digital4") == 3
    for row in rows:
        p = row["participation"]
        rejected = [x["client"] for x in row.get("rejections", [])]
        fates = p["accepted"] + p["dropped"] + rejected
        assert len(set(fates)) == len(fates) and set(fates) | set(p["late"]) <= set(p["sampled"])
        assert len(p["dropped"]) == row["dropped"] and len(p["malicious"]) == row["malicious"]
        assert len(row["client_accuracy"]) == 6 and len(row["accuracy_by_client_device"]) == 6
        # deployed accuracy = mean over the clients' devices
        assert row["accuracy"] == pytest.approx(sum(row["accuracy_by_client_device"]) / 6)
        assert sum(map(sum, row["confusion"])) == 360  # every test sample once
        assert row["dp_epsilon"] > 0
    page = (out / "report.html").read_text()
    for fid in ("devices", "epsilon", "participation", "outcomes", "client_accuracy", "raster", "firing_histogram",
                "energy_layers", "confusion"):
        assert f'id="fig-{fid}"' in page, fid
    second = tmp_path / "fleet-seed1"
    assert _cli("run", "--out", str(second), *SMALL, *FLEET_DP, "--set", "seed=1").returncode == 0
    r = _cli("compare", str(out), str(second), "--out", str(tmp_path / "cmp.html"), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    finals = [json.loads((d / "summary.json").read_text())["final_accuracy"] for d in (out, second)]
    assert got["stats"]["final_accuracy"]["mean"] == pytest.approx(statistics.mean(finals))
    assert got["stats"]["final_accuracy"]["std"] == pytest.approx(statistics.stdev(finals))
    assert (tmp_path / "cmp.html").is_file()
