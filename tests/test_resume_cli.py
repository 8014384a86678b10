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

from spikefed.experiment.metrics_rows import compact_row
from spikefed.federated.checkpoint import read_checkpoint
from spikefed.federated.simulation import CHECKPOINT_PAUSE_ENV

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))  # tests/forkserver.py (importlib import mode)
from forkserver import run_python  # noqa: E402
from session_once import once  # noqa: E402

# a tiny federation with every fault switched on; enough rounds that a kill always lands before the end
CONFIG = """\
seed: 3
partition: {num_clients: 8, min_size: 5}
model: {hidden: [16]}
local: {num_steps: 4, epochs: 1}
federation: {rounds: 40, fraction: 0.5}
faults: {dropout: 0.2, deadline: 4.0, straggler_sigma: 0.5, jitter_sigma: 0.2, late_policy: fednova}
"""
WALL_CLOCK = {"seconds", "wall_seconds", "train_seconds", "elapsed_seconds", "session", "sessions"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != CHECKPOINT_PAUSE_ENV}
    env["OMP_NUM_THREADS"] = "1"  # light on a shared machine, and the same arithmetic in every process
    env.update(extra)
    return env


def _start(config: Path, out: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "spikefed.cli", "run", str(config), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(**env))


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return run_python(["-m", "spikefed.cli", *args], timeout=timeout, env=_env())


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
    return read_checkpoint(path)


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
    """The config file and an uninterrupted run of it (once per session, shared by the xdist workers)."""

    def make(root: Path) -> None:
        (root / "tiny.yaml").write_text(CONFIG)
        r = _cli("run", str(root / "tiny.yaml"), "--out", str(root / "reference"), "--json")
        assert r.returncode == 0, r.stderr[-2000:]

    root = once(tmp_path_factory, "resume-reference", make)
    return root / "tiny.yaml", root / "reference"


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
    # ... compact but for the checkpoint's last row, which the file may lack (metrics_rows)
    last = ckpt["round"]
    earlier = [compact_row(r) for r in rows if r["round"] < last]
    assert _strip(earlier) == _strip(ckpt["metrics"][:len(earlier)])
    if len(rows) == last:
        assert _strip(rows[-1:]) == _strip(ckpt["metrics"][-1:])
    assert all("participation" not in r for r in ckpt["metrics"][:-1]) and "participation" in ckpt["metrics"][-1]
    with open(out / "metrics.jsonl", "a") as f:  # as if the kill had torn the append of the next row
        f.write('{"round": ' + str(len(rows) + 1) + ', "accur')
    r = _cli("run", "--resume", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["rounds"] == 40
    _assert_same_run(ref, out)


@pytest.mark.slow
def test_sigterm_checkpoints_prints_resume_and_exits_143_then_wall_time_spans_sessions(
        reference: tuple[Path, Path], tmp_path: Path) -> None:
    """SIGTERM (a time limit, SLURM, Kubernetes) stops the run like Ctrl-C: the checkpoint holds every finished
    round, stderr names the resume command, the exit code is 128 + 15. The interrupted run renders a report
    (no summary.json). After the resume, the summary's wall time covers both sessions."""
    config, ref = reference
    out = tmp_path / "terminated"
    first_start = time.monotonic()
    proc = _start(config, out)
    _wait_until(lambda: len(_rows(out)) >= 12, proc, "12 rounds in metrics.jsonl", timeout=120)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    first = time.monotonic() - first_start
    assert proc.returncode == 143, stderr[-2000:]
    ckpt = _checkpoint(out / "checkpoint.pt")
    assert f"terminated (SIGTERM) after round {ckpt['round']}" in stderr
    assert f"spikefed run --resume {out}" in stderr
    assert 12 <= ckpt["round"] < 40 and not (out / "summary.json").exists()
    assert [r["round"] for r in _rows(out)] == list(range(1, ckpt["round"] + 1))
    assert all(r["session"] == 1 for r in ckpt["metrics"])

    r = _cli("report", str(out), "--static")  # the interrupted run: rows from metrics.jsonl, model from checkpoint
    assert r.returncode == 0, r.stderr[-2000:]
    page = (out / "report.html").read_text()
    assert "did not finish" in page and f"interrupted after round {ckpt['round']} of 40" in page
    assert 'id="fig-raster"' in page and 'id="fig-participation"' in page

    second_start = time.monotonic()
    r = _cli("run", "--resume", str(out), "--json")
    second = time.monotonic() - second_start
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    rows = _rows(out)
    assert summary["sessions"] == 2 and {row["session"] for row in rows} == {1, 2}
    # wall time spans both sessions: at least every round's own time (a physical lower bound), at least the
    # first session's elapsed time at its last checkpoint, and at most the two processes' lifetimes
    assert summary["wall_seconds"] >= sum(row["seconds"] for row in rows)
    assert summary["wall_seconds"] >= ckpt["metrics"][-1]["elapsed_seconds"]
    assert summary["wall_seconds"] <= first + second
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


class _Exploit:
    """Unpickling this opens (creates) ``marker`` for writing: a stand-in for any code a crafted pickle runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _snapshot(run: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``run`` (bytes, modification time in ns, mode), and the directory's own mtime (which a
    temp file created and removed again would change)."""
    files = {str(p.relative_to(run)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode)
             for p in sorted(run.rglob("*")) if p.is_file()}
    return {**files, ".": (b"", run.stat().st_mtime_ns, run.stat().st_mode)}


def test_resume_never_unpickles_and_refuses_damaged_checkpoints_untouched(tmp_path: Path) -> None:
    """A crafted pickle (what ``torch.load(weights_only=False)`` would have executed), a flipped bit in the tensor
    bytes, a truncated file, a wrong content hash and a NaN weight (with a valid hash): ``--resume`` exits 2 with
    one ``error:`` line naming the file and the problem, the crafted code never runs, and no file in the run
    directory changes (bytes, mtime, mode)."""
    import pickle

    from spikefed.experiment.config import RunSettings, build_settings
    from spikefed.experiment.runner import run_experiment
    from spikefed.federated.checkpoint import write_checkpoint

    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG.replace("rounds: 40", "rounds: 2"))
    good = tmp_path / "good"
    run_experiment(build_settings(RunSettings, config, []), good)
    blob = (good / "checkpoint.pt").read_bytes()
    marker = tmp_path / "pwned"

    crafted = pickle.dumps({"version": 1, "round": 2, "payload": _Exploit(marker)})
    with open(tmp_path / "crafted.pt", "wb") as f:
        torch.save({"version": 1, "round": 2, "payload": _Exploit(marker)}, f)
    crafted_torch = (tmp_path / "crafted.pt").read_bytes()
    # control: the crafted files do run code when unpickled the old way
    pickle.loads(crafted)["payload"].close()
    assert marker.exists()
    marker.unlink()
    torch.load(tmp_path / "crafted.pt", weights_only=False)["payload"].close()
    assert marker.exists()
    marker.unlink()

    nan_state = read_checkpoint(good / "checkpoint.pt")
    name = next(iter(nan_state["global_params"]))
    nan_state["global_params"][name].view(-1)[0] = float("nan")
    write_checkpoint(tmp_path / "nan.pt", nan_state)
    flipped = bytearray(blob)
    flipped[len(blob) - 32 - 3] ^= 0x10  # a byte of the last tensor's data

    cases = {
        "crafted pickle": (crafted, "pickle"),
        "crafted torch.save": (crafted_torch, "pickle"),
        "bit flip": (bytes(flipped), "content hash mismatch"),
        "truncated": (blob[:len(blob) - 100], "content hash mismatch"),
        "wrong hash": (blob[:-32] + bytes(32), "content hash mismatch"),
        "nan weight": ((tmp_path / "nan.pt").read_bytes(), f"global_params['{name}'] holds a non-finite value"),
    }
    for case, (content, needle) in cases.items():
        run = tmp_path / case.replace(" ", "_")
        shutil.copytree(good, run)
        (run / "checkpoint.pt").write_bytes(content)
        for p in [*run.rglob("*"), run]:
            os.utime(p, ns=(10**18, 10**18))  # a rewrite with the same bytes still shows in the mtime
        before = _snapshot(run)
        r = _cli("run", "--resume", str(run), "--set", "federation.rounds=3")
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2, (case, r.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: checkpoint "), (case, r.stderr)
        assert str(run / "checkpoint.pt") in lines[0] and needle in lines[0], (case, lines[0])
        assert not marker.exists(), case
        assert _snapshot(run) == before, case
