"""Real multi-process runs (gloo on CPU): ``torchrun --nproc_per_node 2 -m spikefed run`` against the one-process
``spikefed run`` (the same global model bits, rows, bytes and accuracy), a rank killed mid-run (the survivor exits
non-zero naming it, the last checkpoint intact) and ``--resume`` to the uninterrupted result, and a start-up error
on rank 0 that ends every rank. Every process runs with one torch thread (as torchrun sets it), so the float64
diagnostics in the rows are summed the same way too.

The one-process reference runs are made once per configuration for the whole test session, whichever xdist
worker asks first (tests/session_once.py), and shared by the tests that compare against them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from spikefed.federated.checkpoint import read_checkpoint
from spikefed.federated.distributed import KILL_ENV

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/session_once.py (importlib import mode)
from session_once import once  # noqa: E402

pytestmark = pytest.mark.slow

WALL_CLOCK = {"seconds", "elapsed_seconds", "wall_seconds", "train_seconds", "session", "sessions"}
# every stage that keeps state between rounds, on a small federation
STATEFUL = """\
seed: 3
partition: {num_clients: 10, min_size: 5}
model: {hidden: [16]}
local: {num_steps: 4, epochs: 1}
federation: {rounds: 3, fraction: 0.8, strategy: fedavgm}
faults: {dropout: 0.2, deadline: 4.0, straggler_sigma: 0.5, jitter_sigma: 0.2, late_policy: fednova}
compression: {uplink: topk, fraction: 0.1}
robustness: {attack: sign_flip, attack_fraction: 0.2, defense: trimmed_mean}
devices: {fleet: [{profile: analog10, fraction: 0.5}, {profile: digital8, fraction: 0.5}]}
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (KILL_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _one_process(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spikefed", "run", *args, "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=300, env=_env())


#: the reference configurations: the default (three rounds) and every stateful stage
CONFIGS = {"default": ["--set", "federation.rounds=3"], "stateful": ["{dir}/c.yaml"]}


def _config_args(config: str, where: Path) -> list[str]:
    if config == "stateful":
        (where / "c.yaml").write_text(STATEFUL)
    return [a.format(dir=where) for a in CONFIGS[config]]


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[list[str], Path, dict[str, Any]]]:
    """``reference(config)`` -> (its arguments, the one-process run's directory, its JSON summary), run once per
    session and configuration (shared by the xdist workers)."""

    def get(config: str) -> tuple[list[str], Path, dict[str, Any]]:
        def make(where: Path) -> None:
            one = _one_process(where / "one", *_config_args(config, where))
            assert one.returncode == 0, one.stderr[-2000:]
            (where / "summary.out").write_text(one.stdout)

        where = once(tmp_path_factory, f"distributed-{config}", make)
        return ([a.format(dir=where) for a in CONFIGS[config]], where / "one",
                json.loads((where / "summary.out").read_text()))

    return get


def _torchrun(*args: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "spikefed", "run", *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(**env))


def _rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_tree(x: Any, y: Any, where: str) -> None:
    """Nested dicts/lists of tensors and plain values: the same keys, the same bits."""
    if isinstance(x, dict):
        assert isinstance(y, dict) and sorted(x, key=str) == sorted(y, key=str), where
        for key in x:
            _assert_same_tree(x[key], y[key], f"{where}.{key}")
    elif isinstance(x, (list, tuple)):
        assert isinstance(y, (list, tuple)) and len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            _assert_same_tree(u, v, f"{where}[{i}]")
    elif isinstance(x, torch.Tensor):
        assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y), where
    else:
        assert x == y, where


def _assert_same_run(a: Path, b: Path) -> None:
    """Same global model (bits), per-client state, rows (but wall-clock times) and summary."""
    ca, cb = read_checkpoint(a / "checkpoint.pt"), read_checkpoint(b / "checkpoint.pt")
    assert ca["round"] == cb["round"]
    assert all(torch.equal(ca["global_params"][n], cb["global_params"][n]) for n in ca["global_params"])
    assert ca["bytes_up"] == cb["bytes_up"] and ca["bytes_down"] == cb["bytes_down"]
    _assert_same_tree(ca["client_state"], cb["client_state"], "client_state")
    ra, rb = _rows(a), _rows(b)
    assert len(ra) == len(rb) == ca["round"]
    for x, y in zip(ra, rb):
        assert _timeless(x) == _timeless(y)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert _timeless(sa) == _timeless(sb)


def _timeless(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in WALL_CLOCK}


@pytest.mark.parametrize("config", ["default", "stateful"])
def test_two_ranks_equal_one_process(tmp_path: Path, config: str, reference) -> None:
    args, one, ref = reference(config)
    two = _torchrun(*args, "--out", str(tmp_path / "two"), "--json")
    assert two.returncode == 0, two.stderr[-3000:]
    summaries = [json.loads(line) for line in two.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # printed by rank 0 only
    assert summaries[0]["final_accuracy"] == ref["final_accuracy"]
    assert summaries[0]["total_bytes_up"] == ref["total_bytes_up"]
    _assert_same_run(one, tmp_path / "two")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_dead_rank_ends_the_run_and_resume_reaches_the_uninterrupted_result(tmp_path: Path, reference) -> None:
    """On the stateful configuration (10 clients, 3 rounds, every stage that keeps state between rounds): the
    resumed two-rank run ends where the one-process run does."""
    args, one, _ = reference("stateful")
    run = tmp_path / "run"
    port = str(_free_port())
    # two ranks as torchrun starts them but without its agent (which would stop rank 0 itself): rank 0 must notice
    procs = [subprocess.Popen([sys.executable, "-m", "spikefed", "run", *args, "--out", str(run),
                               "--dist-timeout", "120"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port, **{KILL_ENV: "1:2"}))
             for r in range(2)]
    start = time.monotonic()
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert time.monotonic() - start < 120  # no hang: well before the collective timeout
    assert procs[1].returncode == -9  # the hook killed rank 1 as round 2 began
    assert procs[0].returncode == 1, errs[0][-2000:]
    last = errs[0].strip().splitlines()[-1]
    assert "round 2 stopped: rank 1 stopped (died or hung)" in last and "--resume" in last
    state = read_checkpoint(run / "checkpoint.pt")  # intact, verified, at the last complete round
    assert state["round"] == 1 and len(_rows(run)) == 1
    assert not (run / "summary.json").exists()
    again = _torchrun("--resume", str(run), "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_same_run(one, run)


def test_a_hung_rank_ends_the_run_after_the_timeout(tmp_path: Path) -> None:
    args = ["--set", "federation.rounds=3", "--set", "partition.num_clients=6", "--set", "model.hidden=[8]",
            "--set", "local.epochs=1", "--out", str(tmp_path / "run"), "--dist-timeout", "15"]
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "spikefed", "run", *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True,
                              env=_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port, **{KILL_ENV: "1:2:hang"})) for r in range(2)]
    try:
        start = time.monotonic()
        err = procs[0].communicate(timeout=120)[1]
        assert time.monotonic() - start < 100
        assert procs[0].returncode == 1, err[-2000:]
        assert "rank 1 stopped (died or hung)" in err.strip().splitlines()[-1]
        assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["round"] == 1
    finally:
        procs[1].kill()  # stopped by the hook: SIGKILL ends it
        procs[1].communicate(timeout=30)


def test_a_start_up_error_on_rank_0_ends_every_rank(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")  # "already holds a run": only rank 0 looks
    out = _torchrun("--set", "federation.rounds=1", "--out", str(run), timeout=180)
    assert out.returncode != 0
    assert out.stderr.count("already holds a run") >= 2, out.stderr[-3000:]  # each rank says why it stops
