"""Crash safety of ``spikefed run``: SIGKILL mid-round or mid-checkpoint, then ``--resume`` reaches bit-identical
results; corrupt or mismatched checkpoints are refused with a one-line error (real processes)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from spikefed.federated.simulation import CHECKPOINT_PAUSE_ENV

# a tiny federation with every fault switched on; enough rounds that a kill always lands before the end
CONFIG = """\
seed: 3
partition: {num_clients: 8, min_size: 5}
model: {hidden: [16]}
local: {num_steps: 4, epochs: 1}
federation: {rounds: 40, fraction: 0.5}
faults: {dropout: 0.2, deadline: 4.0, straggler_sigma: 0.5, jitter_sigma: 0.2, late_policy: fednova}
"""
WALL_CLOCK = {"seconds", "wall_seconds", "train_seconds"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != CHECKPOINT_PAUSE_ENV}
    env["OMP_NUM_THREADS"] = "1"  # light on a shared machine, and the same arithmetic in every process
    env.update(extra)
    return env


def _start(config: Path, out: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "spikefed.cli", "run", str(config), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(**env))


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spikefed.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env())


def _rows(run: Path) -> list[dict[str, Any]]:
    """Complete rows of metrics.jsonl (a torn last line is not a row)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def _wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def _strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]


def _assert_same_run(a: Path, b: Path) -> None:
    """Same metrics rows (all but wall-clock seconds), same final model (torch.equal), same summary."""
    rows_a, rows_b = _rows(a), _rows(b)
    assert [r["round"] for r in rows_b] == list(range(1, 41))  # no row missing or duplicated
    assert _strip(rows_a) == _strip(rows_b)
    for key in ("accuracy", "loss", "bytes_up", "bytes_down", "dropped", "late", "mean_tau"):
        assert [r[key] for r in rows_a] == [r[key] for r in rows_b], key
    pa, pb = _checkpoint(a / "checkpoint.pt")["global_params"], _checkpoint(b / "checkpoint.pt")["global_params"]
    assert pa.keys() == pb.keys() and all(torch.equal(pa[n], pb[n]) for n in pa)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert {k: v for k, v in sa.items() if k not in WALL_CLOCK} == {k: v for k, v in sb.items() if k not in WALL_CLOCK}
    assert not (b / "checkpoint.pt.tmp").exists()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The config file and an uninterrupted run of it."""
    root = tmp_path_factory.mktemp("resume")
    config = root / "tiny.yaml"
    config.write_text(CONFIG)
    out = root / "reference"
    r = _cli("run", str(config), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    return config, out


@pytest.mark.slow
def test_sigkill_mid_round_then_resume_is_bit_identical(reference: tuple[Path, Path], tmp_path: Path) -> None:
    config, ref = reference
    out = tmp_path / "killed"
    proc = _start(config, out)
    _wait_until(lambda: len(_rows(out)) >= 2, proc, "2 rounds in metrics.jsonl")
    _kill(proc)
    # every row on disk is in the checkpoint (the checkpoint is written before the row is appended)
    ckpt = _checkpoint(out / "checkpoint.pt")
    rows = _rows(out)
    assert 2 <= len(rows) <= ckpt["round"] < 40
    assert _strip(rows) == _strip(ckpt["metrics"][:len(rows)])
    with open(out / "metrics.jsonl", "a") as f:  # as if the kill had torn the append of the next row
        f.write('{"round": ' + str(len(rows) + 1) + ', "accur')
    r = _cli("run", "--resume", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["rounds"] == 40
    _assert_same_run(ref, out)


@pytest.mark.slow
def test_sigkill_between_checkpoint_write_and_rename(reference: tuple[Path, Path], tmp_path: Path) -> None:
    """The hook holds the process after round 3's checkpoint.pt.tmp is written and fsynced, before the rename:
    killed there, the run still has round 2's checkpoint, and the resume ignores the stale temp file."""
    config, ref = reference
    out = tmp_path / "killed"
    proc = _start(config, out, **{CHECKPOINT_PAUSE_ENV: "3:60"})
    tmp = out / "checkpoint.pt.tmp"
    # the hook creates checkpoint.pt.paused once round 3's temp file is written and fsynced (then holds 60 s);
    # waiting for the temp file itself would race with its writing
    _wait_until((out / "checkpoint.pt.paused").exists, proc, "round 3's paused checkpoint write")
    _kill(proc)
    assert _checkpoint(out / "checkpoint.pt")["round"] == 2 and _checkpoint(tmp)["round"] == 3
    assert [r["round"] for r in _rows(out)] == [1, 2]
    r = _cli("run", "--resume", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    _assert_same_run(ref, out)


def test_resume_refuses_corrupt_and_mismatched_checkpoints(tmp_path: Path) -> None:
    """No silent restart: a bad checkpoint is an error (``ValueError``; from the CLI exit 2 with one line) and
    the run directory is left untouched. The run is made in-process; the CLI is checked on two cases."""
    from spikefed.experiment.config import RunSettings, build_settings
    from spikefed.experiment.runner import Run, run_experiment

    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG.replace("rounds: 40", "rounds: 2"))
    good = tmp_path / "good"
    run_experiment(build_settings(RunSettings, config, []), good)
    blob = (good / "checkpoint.pt").read_bytes()
    cases = {
        "truncated": (blob[:len(blob) // 2], [], "corrupt"),
        "random": (os.urandom(len(blob)), [], "corrupt"),
        "empty": (b"", [], "corrupt"),
        "other_config": (blob, ["faults.dropout=0.5"], "different experiment"),
        "other_seed": (blob, ["seed=4"], "different experiment"),
    }
    for name, (content, extra, needle) in cases.items():
        run = tmp_path / name
        shutil.copytree(good, run)
        (run / "checkpoint.pt").write_bytes(content)
        before = {p.name: p.read_bytes() for p in run.iterdir()}
        with pytest.raises(ValueError, match=needle):
            Run(build_settings(RunSettings, run / "config.yaml", ["federation.rounds=3", *extra]), run, resume=True)
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before, name
        if name in ("truncated", "other_config"):
            r = _cli("run", "--resume", str(run), "--set", "federation.rounds=3", *[f"--set={e}" for e in extra])
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            assert r.returncode == 2, (name, r.stderr[-2000:])
            assert len(lines) == 1 and needle in lines[0], (name, r.stderr)
            assert {p.name: p.read_bytes() for p in run.iterdir()} == before, name
    missing = tmp_path / "missing"
    shutil.copytree(good, missing)
    (missing / "checkpoint.pt").unlink()
    with pytest.raises(ValueError, match="no checkpoint.pt"):
        Run(build_settings(RunSettings, missing / "config.yaml", []), missing, resume=True)
