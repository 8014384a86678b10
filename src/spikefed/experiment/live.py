"""Live view of a running federation: ``spikefed watch DIR`` serves a small page on 127.0.0.1 that follows the
run directory's ``metrics.jsonl`` while the run goes.

The page (no external resources) polls ``/rows?after=N`` once a second; the server answers with the rows after the
first ``N`` (parsed from the file as it is now, a half-written last line skipped) and the run's state: planned
rounds (``config.yaml``), and whether ``summary.json`` exists yet (finished). The page appends the new rows to its
table and redraws an SVG accuracy curve. Only GET, only these two paths; the server reads the directory and
writes nothing.
"""

from __future__ import annotations

import json
import math
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from .report.data import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, read_metrics

#: the columns of the live table (those a row has), in this order
COLUMNS = ("round", "accuracy", "accuracy_ideal", "loss", "train_loss", "accepted", "rejected", "dropped", "late",
           "malicious", "dp_epsilon", "bytes_up", "energy_j", "seconds")
POLL_MS = 1000


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def snapshot(run_dir: Path, after: int = 0) -> dict[str, Any]:
    """What the page asks for: the rows after the first ``after`` (only :data:`COLUMNS`), how many rows there
    are, the planned rounds and whether the run has finished. A missing or unreadable ``metrics.jsonl`` (the run
    has not written its first round yet) gives no rows and its reason in ``note``."""
    note = None
    try:
        rows = read_metrics(run_dir / METRICS_FILE)
    except FileNotFoundError:
        rows, note = [], "waiting for metrics.jsonl"
    except ValueError as e:
        rows, note = [], str(e)
    planned = None
    try:
        cfg = yaml.safe_load((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        planned = cfg["federation"]["rounds"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        pass
    new = [{k: _clean(r.get(k)) for k in COLUMNS if k in r} for r in rows[max(0, after):]]
    return {"total": len(rows), "rows": new, "planned_rounds": planned,
            "finished": (run_dir / SUMMARY_FILE).is_file(), "note": note, "run_dir": str(run_dir)}


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>spikefed watch: __NAME__</title>
<style>body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:.9em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ccc;padding:.2em .6em;text-align:right}th{background:#f3f3f3}
#status{font-weight:600;margin:.5em 0}svg{border:1px solid #ddd;background:#fff}</style></head>
<body><h1>spikefed watch: __NAME__</h1>
<div id="status">connecting...</div>
<svg id="chart" width="720" height="240" viewBox="0 0 720 240" role="img" aria-label="accuracy per round"></svg>
<table id="rows"><thead><tr id="head"></tr></thead><tbody></tbody></table>
<script>
"use strict";
var COLUMNS = __COLUMNS__, seen = 0, rows = [], cols = [];
function fmt(k, v) {
  if (v === null || v === undefined) return "-";
  if (k === "bytes_up") return (v / 1048576).toFixed(2) + " MiB";
  if (k === "energy_j") return (v * 1e9).toFixed(1) + " nJ";
  if (k === "seconds") return v.toFixed(2) + " s";
  if (typeof v === "number" && !Number.isInteger(v)) return v.toFixed(4);
  return String(v);
}
function header() {
  var tr = document.getElementById("head"); tr.innerHTML = "";
  cols.forEach(function (k) { var th = document.createElement("th"); th.textContent = k; tr.appendChild(th); });
}
function draw(planned) {
  var svg = document.getElementById("chart"), W = 720, H = 240, L = 50, B = 30, pts = [];
  rows.forEach(function (r) { if (typeof r.accuracy === "number") pts.push([r.round, r.accuracy]); });
  var n = Math.max(planned || 0, rows.length ? rows[rows.length - 1].round : 1, 1);
  var x = function (v) { return L + (W - L - 10) * v / n; }, y = function (v) { return H - B - (H - B - 10) * v; };
  var s = '<line x1="' + L + '" y1="' + y(0) + '" x2="' + (W - 10) + '" y2="' + y(0) + '" stroke="#888"/>' +
          '<line x1="' + L + '" y1="' + y(0) + '" x2="' + L + '" y2="' + y(1) + '" stroke="#888"/>' +
          '<text x="5" y="' + y(1) + '" font-size="11">1.0</text>' +
          '<text x="5" y="' + y(0) + '" font-size="11">0.0</text>' +
          '<text x="' + (W / 2) + '" y="' + (H - 5) + '" font-size="12">round (of ' + n + ')</text>' +
          '<text x="5" y="' + (H / 2) + '" font-size="12">accuracy</text>';
  if (pts.length) s += '<polyline id="acc-line" fill="none" stroke="#1f77b4" stroke-width="2" points="' +
      pts.map(function (p) { return x(p[0]) + "," + y(p[1]); }).join(" ") + '"/>';
  svg.innerHTML = s;
}
function poll() {
  fetch("rows?after=" + seen, {cache: "no-store"}).then(function (r) { return r.json(); }).then(function (d) {
    if (d.total < seen) { seen = 0; rows = []; document.querySelector("#rows tbody").innerHTML = ""; }
    var body = document.querySelector("#rows tbody");
    d.rows.forEach(function (r) {
      COLUMNS.forEach(function (k) { if (k in r && cols.indexOf(k) < 0) { cols.push(k); header(); } });
      rows.push(r);
      var tr = document.createElement("tr"); tr.setAttribute("data-round", r.round);
      cols.forEach(function (k) {
        var td = document.createElement("td"); td.textContent = fmt(k, r[k]); tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    seen = d.total;
    var last = rows.length ? rows[rows.length - 1] : null;
    document.getElementById("status").textContent = (d.finished ? "finished: " : "running: ") +
      (last ? "round " + last.round : "no round yet") + (d.planned_rounds ? " of " + d.planned_rounds : "") +
      (last && typeof last.accuracy === "number" ? ", accuracy " + last.accuracy.toFixed(4) : "") +
      (d.note ? " (" + d.note + ")" : "");
    draw(d.planned_rounds);
    if (!d.finished) setTimeout(poll, __POLL__);
  }).catch(function (e) {
    document.getElementById("status").textContent = "server unreachable (" + e + "); retrying";
    setTimeout(poll, __POLL__);
  });
}
poll();
</script></body></html>
"""


def page(run_dir: Path) -> str:
    import html

    return (PAGE.replace("__NAME__", html.escape(run_dir.name or str(run_dir)))
            .replace("__COLUMNS__", json.dumps(list(COLUMNS))).replace("__POLL__", str(POLL_MS)))


class WatchServer(ThreadingHTTPServer):
    """HTTP server of one run directory's live view; ``requests`` counts the ``/rows`` polls answered."""

    daemon_threads = True

    def __init__(self, run_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.requests = 0
        self.lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: WatchServer

    def _send(self, body: bytes, ctype: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        if url.path in ("/", "/index.html"):
            self._send(page(self.server.run_dir).encode(), "text/html; charset=utf-8")
        elif url.path == "/rows":
            try:
                after = int(parse_qs(url.query).get("after", ["0"])[0])
            except ValueError:
                self._send(b'{"error": "after must be an integer"}', "application/json", HTTPStatus.BAD_REQUEST)
                return
            body = json.dumps(snapshot(self.server.run_dir, after)).encode()
            with self.server.lock:
                self.server.requests += 1
            self._send(body, "application/json")
        else:
            self._send(b"not found", "text/plain", HTTPStatus.NOT_FOUND)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per poll would flood the terminal
        pass


def start(run_dir: str | Path, host: str = "127.0.0.1", port: int = 0) -> tuple[WatchServer, threading.Thread]:
    """Serve the live view of ``run_dir`` in a background thread; returns the server (``.url``) and the thread.
    Stop it with ``server.shutdown()``."""
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run directory not found: {root}")
    server = WatchServer(root, host, port)
    thread = threading.Thread(target=server.serve_forever, name="spikefed-watch", daemon=True)
    thread.start()
    return server, thread
