"""Live view (``spikefed watch``): the JSON endpoint against rows written byte by byte, and the page in a real
headless Chromium that must show rows appended to metrics.jsonl after it was opened.

The browser is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON messages
separated by NUL bytes on file descriptors 3 and 4), so no websocket client is needed. Without Chromium the
browser test is skipped locally and FAILS under ``CI=true`` (.ci/run installs it with apt-get).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from spikefed.experiment.live import snapshot, start

ROWS = [
    {"round": 1, "accuracy": 0.5125, "loss": 2.25, "bytes_up": 3 * 1048576, "seconds": 0.5, "rejected": 0},
    {"round": 2, "accuracy": None, "loss": None, "bytes_up": 1048576, "seconds": 0.25, "rejected": 1},
    {"round": 3, "accuracy": 0.6875, "loss": 1.5, "bytes_up": 2 * 1048576, "seconds": 0.75, "rejected": 0,
     "dp_epsilon": 1.5},
    {"round": 4, "accuracy": 0.8125, "loss": 1.0, "bytes_up": 1048576, "seconds": 1.25, "rejected": 2,
     "dp_epsilon": 2.25},
]


def _line(row: dict[str, Any]) -> str:
    return json.dumps(row) + "\n"


def _run_dir(tmp_path: Path, rows: list[dict[str, Any]], rounds: int = 4) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"federation:\n  rounds: {rounds}\n", encoding="utf-8")
    (run / "metrics.jsonl").write_text("".join(_line(r) for r in rows), encoding="utf-8")
    return run


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_endpoint_returns_rows_after_n_and_skips_a_half_written_line(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, ROWS[:2])
    server, _ = start(run)
    try:
        status, body = _get(server.url + "rows?after=0")
        got = json.loads(body)
        assert status == 200 and got["total"] == 2 and got["planned_rounds"] == 4 and got["finished"] is False
        assert [r["round"] for r in got["rows"]] == [1, 2] and got["rows"][0]["accuracy"] == 0.5125
        assert got["rows"][1]["accuracy"] is None
        with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(_line(ROWS[2]) + _line(ROWS[3])[:20])  # round 4 half written (no newline yet)
        got = json.loads(_get(server.url + "rows?after=2")[1])
        assert got["total"] == 3 and [r["round"] for r in got["rows"]] == [3]
        assert got["rows"][0]["dp_epsilon"] == 1.5
        assert _get(server.url + "rows?after=x")[0] == 400
        assert _get(server.url + "nothing")[0] == 404
        assert _get(server.url)[0] == 200 and server.requests == 2
    finally:
        server.shutdown()


def test_snapshot_of_a_directory_without_metrics_yet(tmp_path: Path) -> None:
    got = snapshot(tmp_path)
    assert got["rows"] == [] and got["total"] == 0 and "waiting" in got["note"]
    (tmp_path / "metrics.jsonl").write_text('{"round": 1}\nnot json\n{"round": 3}\n', encoding="utf-8")
    assert "line 2" in snapshot(tmp_path)["note"]


def test_watch_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        start(tmp_path / "absent")


# ------------------------------------------------------------------------------------------------- the browser


def _chromium() -> str | None:
    for name in (os.environ.get("SPIKEFED_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class DevTools:
    """A headless Chromium driven over ``--remote-debugging-pipe`` (fd 3: commands in, fd 4: replies out)."""

    def __init__(self, binary: str, profile: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()

        def child_fds() -> None:  # runs in the child before exec: the pipe ends become fds 3 and 4
            a = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)  # first out of the way of 3 and 4, then into place
            b = fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=child_fds)
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._id = 0
        self.session: str | None = None

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no DevTools reply to {method}")
            ready, _, _ = select.select([self._out_r], [], [], 1.0)
            if ready:
                chunk = os.read(self._out_r, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium exited (code {self.proc.poll()})")
                self._buf += chunk

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def js(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.2)
        status = self.js("document.getElementById('status').textContent")
        raise AssertionError(f"the page never satisfied {expression!r}; status: {status!r}")

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5.0)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._out_r)


@pytest.fixture
def browser(tmp_path: Path):
    binary = _chromium()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but no chromium on PATH: the live-view browser test must run in CI "
                        "(.ci/run installs it: apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    tools = DevTools(binary, tmp_path / "profile")
    try:
        yield tools
    finally:
        tools.close()


def test_page_in_headless_chromium_shows_rows_appended_after_it_opened(tmp_path: Path, browser: DevTools) -> None:
    run = _run_dir(tmp_path, ROWS[:2])
    server, _ = start(run)
    try:
        browser.open(server.url)
        rows_js = "document.querySelectorAll('#rows tbody tr').length"
        assert browser.wait_for(f"{rows_js} === 2 && {rows_js}") == 2
        polls = server.requests
        # appended after the page loaded: round 3 whole, round 4 first half only (a write in progress)
        with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(_line(ROWS[2]) + _line(ROWS[3])[:25])
        assert browser.wait_for(f"{rows_js} === 3 && {rows_js}") == 3
        with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(_line(ROWS[3])[25:])
        assert browser.wait_for(f"{rows_js} === 4 && {rows_js}") == 4
        assert server.requests > polls  # the page kept polling after it was opened
        header = browser.js("Array.from(document.querySelectorAll('#head th')).map(e => e.textContent)")
        cells = browser.js("Array.from(document.querySelectorAll('#rows tbody tr:last-child td'))"
                           ".map(e => e.textContent)")
        last = dict(zip(header, cells))
        r4 = ROWS[3]
        assert last["round"] == "4" and last["accuracy"] == f"{r4['accuracy']:.4f}"
        assert last["bytes_up"] == f"{r4['bytes_up'] / 2 ** 20:.2f} MiB" and last["seconds"] == "1.25 s"
        assert last["dp_epsilon"] == f"{r4['dp_epsilon']:.4f}" and last["rejected"] == "2"
        second = browser.js("Array.from(document.querySelectorAll('#rows tbody tr:nth-child(2) td'))"
                            ".map(e => e.textContent)")
        assert dict(zip(header, second))["accuracy"] == "-"  # a round without evaluation
        status = browser.js("document.getElementById('status').textContent")
        assert status.startswith("running: round 4 of 4") and f"{r4['accuracy']:.4f}" in status
        # the accuracy curve: one vertex per evaluated round (1, 3, 4)
        points = browser.js("document.getElementById('acc-line').getAttribute('points')")
        assert len(points.split()) == 3
        (run / "summary.json").write_text("{}", encoding="utf-8")
        assert browser.wait_for("document.getElementById('status').textContent.startsWith('finished')")
    finally:
        server.shutdown()
