"""``spikefed.deploy.flower_supernode``: the SuperNode heartbeat interval (``spikefed flower demo --heartbeat``).

References: Flower's own bounds (``flwr.common.constant.HEARTBEAT_MIN_INTERVAL`` / ``_MAX_INTERVAL``, which the
SuperLink enforces) and the pace Flower documents for its heartbeat thread (next heartbeat after
(interval - call timeout) x uniform(0.7, 0.9)), timed on Flower's own ``HeartbeatSender``. The end-to-end effect (a
hung node listed offline in about 20 s instead of 37-60 s) is asserted in tests/deploy/test_flower_faults_real.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="Flower (flwr) is not installed")

from flwr.common import constant  # noqa: E402

from spikefed.deploy.flower_supernode import (HEARTBEAT_MODULES, HeartbeatError, check_heartbeat,  # noqa: E402
                                              set_heartbeat, split_argv)

ROOT = Path(__file__).resolve().parents[2]


def test_bounds_are_flowers():
    assert check_heartbeat(constant.HEARTBEAT_MIN_INTERVAL) == float(constant.HEARTBEAT_MIN_INTERVAL)
    assert check_heartbeat(constant.HEARTBEAT_MAX_INTERVAL) == float(constant.HEARTBEAT_MAX_INTERVAL)
    for bad in (constant.HEARTBEAT_MIN_INTERVAL - 0.5, constant.HEARTBEAT_MAX_INTERVAL + 1, 0, -10):
        with pytest.raises(HeartbeatError, match=r"--heartbeat must be between 10 and 1800 seconds"):
            check_heartbeat(bad)


def test_argv_takes_the_interval_first_and_passes_the_rest_unchanged():
    assert split_argv(["--heartbeat", "12.5", "--insecure", "--node-config", "partition-id=1 x=2"]) == (
        12.5, ["--insecure", "--node-config", "partition-id=1 x=2"])
    with pytest.raises(HeartbeatError, match="usage"):
        split_argv(["--insecure", "--heartbeat", "10"])
    with pytest.raises(HeartbeatError, match="a number of seconds, got 'ten'"):
        split_argv(["--heartbeat", "ten"])
    with pytest.raises(HeartbeatError, match="between 10 and 1800"):
        split_argv(["--heartbeat", "3"])


def test_the_shell_refuses_a_bad_interval_in_one_line_before_flower_starts():
    done = subprocess.run([sys.executable, "-m", "spikefed.deploy.flower_supernode", "--heartbeat", "5",
                           "--insecure"], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --heartbeat must be between 10 and 1800 seconds (the SuperLink refuses other intervals), got 5.0"]


def test_set_heartbeat_sets_what_the_node_announces_and_the_pace_of_its_heartbeats(monkeypatch):
    import importlib

    mods = [importlib.import_module(m) for m in HEARTBEAT_MODULES]
    for m in mods:  # restored after the test
        monkeypatch.setattr(m, "HEARTBEAT_DEFAULT_INTERVAL", m.HEARTBEAT_DEFAULT_INTERVAL)
    set_heartbeat(10)
    assert [m.HEARTBEAT_DEFAULT_INTERVAL for m in mods] == [10.0, 10.0]
    from flwr.supercore.heartbeat import HeartbeatSender

    beats: list[float] = []
    two = threading.Event()

    def beat() -> bool:
        beats.append(time.monotonic())
        if len(beats) >= 2:
            two.set()
        return True

    sender = HeartbeatSender(beat)
    sender.start()
    try:
        assert two.wait(30)
    finally:
        sender.stop()
    gap = beats[1] - beats[0]
    pace = 10 - constant.HEARTBEAT_CALL_TIMEOUT
    low, high = (pace * (constant.HEARTBEAT_BASE_MULTIPLIER + r) for r in constant.HEARTBEAT_RANDOM_RANGE)
    assert low - 0.05 <= gap <= high + 2.0, gap  # 3.5-4.5 s (Flower's default 30 s: 17.5-22.5 s)


def test_cli_refuses_a_bad_heartbeat_before_starting_anything():
    from typer.testing import CliRunner

    from spikefed.cli import app

    res = CliRunner().invoke(app, ["flower", "demo", "--heartbeat", "2"])
    assert res.exit_code == 2 and "--heartbeat must be between 10 and 1800 seconds" in res.output
    assert "SuperLink +" not in res.output  # refused before the banner: no process was started
