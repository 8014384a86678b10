"""The report page: sections that say what each feature is for, their figures and tables.

Interactive (plotly installed, the ``report`` extra): every figure is a plotly.js plot; plotly.js is embedded once,
inline, so the page opens offline. Static (no plotly, or ``interactive=False``): every figure is a PNG drawn by
:mod:`.static`, embedded as base64. Either way the file is self-contained.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import yaml

from ..digest import digest
from . import figures as rf
from . import figures_model as mf
from .data import RunData
from .spec import Figure

#: list values in the per-round table longer than this are shown as their length
MAX_LIST_CELL = 12


@dataclass
class Section:
    id: str
    title: str
    purpose: str
    figures: list[Figure] = field(default_factory=list)
    html: list[str] = field(default_factory=list)


def plotly_js() -> str | None:
    """The plotly.js bundle shipped inside the ``plotly`` Python package, or ``None`` when it is not installed."""
    try:
        from importlib.resources import files

        return (files("plotly") / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    except (ImportError, ModuleNotFoundError, FileNotFoundError, OSError):
        return None


def format_value(value: Any, key: str = "") -> str:
    """Plain-text rendering of a table cell (not yet HTML-escaped): floats with 4 decimals (4 significant digits
    when very large or small), byte counts (key containing ``bytes``) also in KiB/MiB."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        text = str(value) if isinstance(value, int) else (
            f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.4g}")
        if "bytes" in key and abs(value) >= 1024:
            text += f" ({value / 1024 ** 2:.2f} MiB)" if abs(value) >= 1024 ** 2 else f" ({value / 1024:.1f} KiB)"
        return text
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LIST_CELL:
            return f"[{len(value)} values]"
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def table(headers: Sequence[str] | None, rows: Iterable[Sequence[str]], css: str = "") -> str:
    esc = html.escape
    parts = [f'<table class="{esc(css)}">' if css else "<table>"]
    if headers:
        parts.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead>")
    parts.append("<tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _num_clients(run: RunData) -> int | None:
    labels = run.summary.get("label_distribution")
    if isinstance(labels, list) and labels:
        return len(labels)
    clients = run.summary.get("clients")
    return clients if isinstance(clients, int) else None


def _client_table(run: RunData) -> str:
    """Per client: samples, label JSD, feature Hellinger, last per-client accuracy, device and its accuracy."""
    het = run.summary.get("heterogeneity") if isinstance(run.summary.get("heterogeneity"), Mapping) else {}
    acc = rf.lists(run.metrics, "client_accuracy")
    dev = rf.lists(run.metrics, "accuracy_by_client_device")
    devices = run.summary.get("devices") if isinstance(run.summary.get("devices"), Mapping) else {}
    cols: list[tuple[str, list[Any]]] = []
    for key, name in (("sizes", "samples"), ("jsd", "label JSD"), ("hellinger", "feature Hellinger")):
        if isinstance(het.get(key), list):
            cols.append((name, het[key]))
    if acc:
        cols.append(("accuracy on its data mix", acc[-1][1]))
    if isinstance(devices.get("client_profiles"), list):
        cols.append(("device", devices["client_profiles"]))
    if dev:
        cols.append(("deployed accuracy", dev[-1][1]))
    labels = run.summary.get("label_distribution")
    if isinstance(labels, list):
        cols.append(("label counts", labels))
    if not cols:
        return ""
    n = max(len(c) for _, c in cols)
    rows = [[str(i)] + [format_value(c[i]) if i < len(c) else "—" for _, c in cols] for i in range(n)]
    return (f"<details><summary>Per-client table ({n} clients)</summary>"
            + table(["client"] + [name for name, _ in cols], rows, css="clients") + "</details>")


def sections(run: RunData) -> list[Section]:
    """The report's sections for ``run``, each with the figures it has data for."""
    rows, summary, act = run.metrics, run.summary, run.activity
    why = f"Model activity not measured: {act['error']}" if act and "error" in act else \
        "Model activity not measured (no checkpoint or config)."
    act = act if act and "error" not in act else None
    energy = (act or {}) if act else (run.config.get("energy") if isinstance(run.config.get("energy"), Mapping)
                                      else {})
    out = [
        Section("learning", "Learning", "Does the federation learn, and how fast? Accuracy and loss of the global "
                "model per round, the activity of its spiking layers, and the time each round took.",
                [f for f in (rf.accuracy(rows), rf.loss(rows), rf.firing_rates(rows, act), rf.seconds(rows)) if f]),
        Section("clients", "Clients", "Who does the one global model serve? Per-client accuracy (the distribution "
                "over clients per round: a fairness view) and the label skew of the partition.",
                [f for f in (rf.client_accuracy_distribution(rows), rf.fairness(rows),
                             rf.client_accuracy_final(rows, summary),
                             mf.label_heatmap(summary.get("label_distribution"))) if f], [_client_table(run)]),
        Section("participation", "Participation, faults and attacks", "Which clients took part in each round, and "
                "which updates were dropped, late, sent by attackers or rejected before aggregation.",
                [f for f in (rf.participation_map(rows, _num_clients(run)), rf.outcomes(rows)) if f]),
        Section("devices", "Neuromorphic devices", "What the hardware costs: the global model deployed on every "
                "client's simulated device (mismatch, quantization, lost steps) against ideal hardware.",
                [f for f in (rf.devices(rows),) if f]),
        Section("privacy", "Privacy", "How much privacy the run spent: the client-level DP budget epsilon, which "
                "grows with every round that releases a noised aggregate.", [f for f in (rf.epsilon(rows, summary),)
                                                                            if f], _privacy_html(summary)),
        Section("efficiency", "Communication and energy", "What the accuracy costs: bytes sent by the clients and "
                "the estimated energy of one inference, split into multiply-accumulates (MACs) and "
                "spike-driven accumulates (ACs), per round and per layer.",
                [f for f in (rf.accuracy_vs_bytes(rows), rf.accuracy_vs_energy(rows),
                             rf.energy_breakdown(rows, energy), mf.energy_per_layer(act)) if f]),
        Section("model", "The trained model", "What the trained spiking network does: its spikes on one sample, "
                "the firing rate of every neuron (dead and saturated neurons), and which classes it confuses.",
                [f for f in (mf.raster(act), mf.firing_histogram(act), mf.confusion(rows)) if f],
                [] if act else [f'<p class="muted">{html.escape(why)}</p>']),
        Section("continual", "Continual learning", "How much the federation forgets old tasks while learning new "
                "ones.", mf.continual(rows, summary), _continual_html(summary)),
    ]
    return out


def _privacy_html(summary: Mapping[str, Any]) -> list[str]:
    privacy = summary.get("privacy")
    if not isinstance(privacy, Mapping):
        return []
    return [table(["setting", "value"], [(str(k), format_value(v, str(k))) for k, v in privacy.items()
                                         if v is None or isinstance(v, (str, int, float, bool))], css="privacy")]


def _continual_html(summary: Mapping[str, Any]) -> list[str]:
    cont = summary.get("continual")
    if not isinstance(cont, Mapping):
        return []
    keep = [(str(k), format_value(v, str(k))) for k, v in cont.items()
            if v is None or isinstance(v, (str, int, float, bool)) or k in ("drift", "forgetting_per_task")]
    return [table(["key", "value"], keep, css="continual")]


def _metrics_table(rows: Sequence[Mapping[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        for k in row:
            if k not in columns and k not in ("confusion", "participation", "rejections"):
                columns.append(k)
    return table(columns, [[format_value(r.get(c), c) for c in columns] for r in rows], css="metrics")


CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;
color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.3em;margin-top:1.8em;border-bottom:1px solid #ddd}
nav a{margin-right:1em}p.purpose{color:#333;font-style:italic}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}table.metrics td{white-space:nowrap;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure img{max-width:100%;height:auto}
figcaption{font-size:.9em;color:#444;margin-top:.3em}
pre{background:#f7f7f7;border:1px solid #ddd;padding:.8em;overflow-x:auto;font-size:.85em}
details summary{cursor:pointer;font-weight:600}.muted{color:#777}.warn{color:#a40}
"""


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (JSON has no NaN; plotly skips nulls)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_script(obj: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``</``, no ``<!--``)."""
    return json.dumps(finite(obj), allow_nan=False).replace("</", "<\\/").replace("<!--", "<\\!--")


def render_html(run: RunData, title: str | None = None, interactive: bool | None = None) -> str:
    """The complete, self-contained report page. ``interactive``: plotly.js figures (``None``: when plotly is
    installed); otherwise static PNGs."""
    from .static import render_png

    esc = html.escape
    js = plotly_js() if interactive is not False else None
    if interactive and js is None:
        raise ImportError("the interactive report needs plotly: pip install 'spikefed[report]'")
    if title is None:
        title = f"spikefed report: {run.run_dir.name if run.run_dir is not None else 'run'}"
    secs = sections(run)
    shown = [s for s in secs if s.figures or any(h for h in s.html)]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title><style>{CSS}</style>"]
    if js is not None:
        parts.append(f"<script>{js}</script>")
    parts += ["</head><body>", f"<h1>{esc(title)}</h1>"]
    if run.run_dir is not None:
        parts.append(f'<p class="muted">Run directory: <code>{esc(str(run.run_dir))}</code> · '
                     f'{"interactive (plotly)" if js else "static images"}</p>')
    if not run.complete:
        parts.append('<p class="warn">This run did not finish (no summary.json: stopped, or still running): the '
                     "summary below is derived from metrics.jsonl and the model from the last checkpoint.</p>")
    parts.append('<nav><a href="#overview">Overview</a>' + "".join(
        f'<a href="#{s.id}">{esc(s.title)}</a>' for s in shown) + '<a href="#rounds">Per-round metrics</a>'
        '<a href="#config">Configuration</a></nav>')
    parts.append('<h2 id="overview">Overview</h2>')
    parts.append(table(["", "value"], digest(run.summary), css="summary"))
    specs: dict[str, Any] = {}
    for s in shown:
        parts.append(f'<h2 id="{s.id}">{esc(s.title)}</h2><p class="purpose">{esc(s.purpose)}</p>')
        for f in s.figures:
            if js is not None:
                specs[f.id] = f.spec
                parts.append(f'<figure><div id="fig-{f.id}" class="plot"></div>'
                             f"<figcaption>{esc(f.caption)}</figcaption></figure>")
            else:
                data = base64.b64encode(render_png(f.spec)).decode("ascii")
                parts.append(f'<figure id="fig-{f.id}"><img src="data:image/png;base64,{data}" '
                             f'alt="{esc(f.spec["layout"]["title"]["text"])}"><figcaption>{esc(f.caption)}'
                             "</figcaption></figure>")
        parts.extend(h for h in s.html if h)
    parts.append('<h2 id="rounds">Per-round metrics</h2>')
    parts.append(f"<details><summary>{len(run.metrics)} rounds</summary>{_metrics_table(run.metrics)}</details>"
                 if run.metrics else '<p class="muted">No rounds logged.</p>')
    parts.append('<h2 id="config">Configuration</h2>')
    parts.append(f"<pre>{esc(yaml.safe_dump(dict(run.config), sort_keys=False))}</pre>" if run.config
                 else '<p class="muted">No config.yaml.</p>')
    if js is not None:
        parts.append(f'<script id="figure-specs" type="application/json">{json_script(specs)}</script>')
        parts.append("<script>(function(){var s=JSON.parse(document.getElementById('figure-specs').textContent);"
                     "for(var k in s){Plotly.newPlot('fig-'+k,s[k].data,s[k].layout,"
                     "{responsive:true,displaylogo:false});}})();</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
