"""A real localhost Flower federation in which one SuperNode sends garbage every round.

The node's ClientApp runs with ``SPIKEFED_TEST_GARBAGE_UPLOAD=1`` (a test hook in ``client_train``): its replies
are well-formed Flower messages whose payload is random bytes. The server's trust boundary must reject that
client in every round with a payload reason, aggregate the others, finish the run, and leave no process behind.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="Flower (flwr) is not installed: pip install 'flwr>=1.40,<1.42'")

from spikefed.deploy.flower import GARBAGE_UPLOAD_ENV
from spikefed.deploy.flower_launch import pid_alive, run_demo

ROOT = Path(__file__).resolve().parents[2]
GARBAGE_NODE = 1


def _assert_nothing_left(pids: list[int], work: Path) -> None:
    assert pids, "the demo reported no PIDs"
    assert not [p for p in pids if pid_alive(p)], "processes left behind"
    import os

    for entry in os.listdir("/proc"):  # nothing still runs with this federation's work dir in its command/env
        if entry.isdigit() and pid_alive(int(entry)):
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
                env = Path(f"/proc/{entry}/environ").read_bytes().decode(errors="replace")
            except OSError:
                continue
            assert str(work) not in cmd and str(work) not in env, f"process {entry} still belongs to the run: {cmd}"


@pytest.mark.slow
def test_real_federation_rejects_a_garbage_node_every_round_and_finishes(tmp_path, monkeypatch):
    # the SuperNodes (and their ClientApp processes) must import this checkout's code: an absolute PYTHONPATH
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))
    settings = {"local": {"epochs": 1}, "partition": {"num_clients": 3},
                "federation": {"fraction": 1.0, "engine": "sequential", "rounds": 3}}
    work = tmp_path / "garbage"
    pids: list[int] = []
    start = time.monotonic()
    summary = run_demo(work, 3, {"settings": json.dumps(settings)}, timeout=540, record=pids,
                       node_env={GARBAGE_NODE: {GARBAGE_UPLOAD_ENV: "1"}})
    seconds = time.monotonic() - start
    rows = [json.loads(ln) for ln in (work / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert (r["clients"], r["accepted"], r["rejected"]) == (3, 2, 1), r
        (rej,) = r["rejections"]
        assert rej["client"] == GARBAGE_NODE and rej["round"] == r["round"]
        assert "payload" in rej["reason"], rej
    assert summary["final_accuracy"] == rows[-1]["accuracy"] > 0.5  # chance is 0.1 on digits
    _assert_nothing_left(pids, work)
    print(f"garbage-node run: {len(rows)} rounds, rejections per round "
          f"{[r['rejected'] for r in rows]}, reasons {[r['rejections'][0]['reason'] for r in rows]}, "
          f"final accuracy {summary['final_accuracy']:.4f}, {seconds:.1f} s")
