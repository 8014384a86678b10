"""Self-contained HTML report of a federated run directory (``config.yaml``, ``metrics.jsonl``, ``summary.json``).

:func:`load_run` reads a run directory into :class:`RunData`; the ``plot_*`` functions turn that data (never
paths) into PNG bytes, or ``None`` when the data they need is absent; :func:`write_report` assembles
``run_dir/report.html`` with every image embedded as base64, so the file opens offline and can be mailed around.

Figures are drawn on :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas directly: nothing goes
through pyplot, so the process-wide backend and pyplot's figure registry are left untouched and the plot
functions are safe to call from any thread or an interactive session.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from ..io import write_atomic

__all__ = [
    "RunData",
    "load_run",
    "plot_accuracy_loss",
    "plot_accuracy_vs_bytes",
    "plot_label_heatmap",
    "plot_firing_rates",
    "plot_energy",
    "plot_continual",
    "render_html",
    "write_report",
]

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"

DPI = 100
# x-axis of accuracy-vs-bytes goes logarithmic when the cumulative uplink spans at least this factor
LOG_X_RATIO = 100.0
# cell annotations on the label heatmap only while the matrix is this small
ANNOTATE_MAX_CELLS = 400


@dataclass
class RunData:
    """The three files of a run directory, parsed. ``config`` is ``{}`` when ``config.yaml`` is absent."""

    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None


# --------------------------------------------------------------------------------------------------- loading


def _load_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _load_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{METRICS_FILE} not found: {path}")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {lineno}: malformed JSON: {exc.msg}") from exc
            if not isinstance(obj, dict):
                raise ValueError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
            rows.append(obj)
    return rows


def _load_summary(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{SUMMARY_FILE} not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: line {exc.lineno}: malformed JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Read ``config.yaml`` (optional), ``metrics.jsonl`` and ``summary.json`` from ``run_dir``.

    Raises :class:`FileNotFoundError` naming ``metrics.jsonl`` / ``summary.json`` when one is missing, and
    :class:`ValueError` naming the file (and the line number for ``metrics.jsonl``) when one is malformed.
    """
    root = Path(run_dir)
    summary = _load_summary(root / SUMMARY_FILE)
    metrics = _load_metrics(root / METRICS_FILE)
    config = _load_config(root / CONFIG_FILE)
    return RunData(config=config, metrics=metrics, summary=summary, run_dir=root)


# --------------------------------------------------------------------------------------------------- helpers


def _num(value: Any) -> float | None:
    """A finite float, or ``None`` for null / NaN / inf / bools / anything non-numeric."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _rounds(metrics: Sequence[Mapping[str, Any]]) -> list[float]:
    """The x coordinate of each metrics row: its ``round`` when numeric, else its 1-based position."""
    out = []
    for i, row in enumerate(metrics):
        r = _num(row.get("round")) if isinstance(row, Mapping) else None
        out.append(r if r is not None else float(i + 1))
    return out


def _series(metrics: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(rounds, values) for the rows where ``key`` holds a finite number."""
    xs, ys = [], []
    for x, row in zip(_rounds(metrics), metrics):
        v = _num(row.get(key)) if isinstance(row, Mapping) else None
        if v is not None:
            xs.append(x)
            ys.append(v)
    return xs, ys


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _integer_rounds(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # no "Software" chunk: keeps the bytes independent of the matplotlib version (and free of its URL)
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------- plots


def plot_accuracy_loss(metrics: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Test accuracy (top) and loss (bottom; test loss, plus train loss when logged) per round.

    Rounds where a value is null are skipped; a panel without any value is left out; ``None`` when neither
    accuracy nor any loss was logged.
    """
    acc = _series(metrics, "accuracy")
    loss = _series(metrics, "loss")
    train_loss = _series(metrics, "train_loss")
    panels = []
    if acc[0]:
        panels.append("accuracy")
    if loss[0] or train_loss[0]:
        panels.append("loss")
    if not panels:
        return None
    fig = _new_figure(7.0, 2.8 * len(panels) + 0.6)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels):
        if panel == "accuracy":
            ax.plot(acc[0], acc[1], marker="o", markersize=3, color="tab:blue", label="test accuracy")
            ax.set_ylabel("accuracy")
        else:
            if loss[0]:
                ax.plot(loss[0], loss[1], marker="o", markersize=3, color="tab:red", label="test loss")
            if train_loss[0]:
                ax.plot(train_loss[0], train_loss[1], linestyle="--", color="tab:orange", label="train loss")
            ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("round")
    _integer_rounds(axes[-1])
    fig.suptitle("Accuracy and loss per round")
    fig.tight_layout()
    return _png(fig)


def plot_accuracy_vs_bytes(metrics: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Accuracy against cumulative uplink bytes (summed over all rounds, null counts as 0).

    The x axis is logarithmic when the positive cumulative byte counts span at least :data:`LOG_X_RATIO`.
    ``None`` when no round has both an accuracy and a byte count so far.
    """
    if not any(_num(row.get("bytes_up")) is not None for row in metrics if isinstance(row, Mapping)):
        return None
    xs, ys = [], []
    total = 0.0
    for row in metrics:
        if not isinstance(row, Mapping):
            continue
        total += _num(row.get("bytes_up")) or 0.0
        a = _num(row.get("accuracy"))
        if a is not None:
            xs.append(total)
            ys.append(a)
    if not xs:
        return None
    positive = [x for x in xs if x > 0]
    log_x = bool(positive) and max(positive) / min(positive) >= LOG_X_RATIO
    if log_x:
        xs, ys = zip(*[(x, y) for x, y in zip(xs, ys) if x > 0])
    fig = _new_figure(7.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, ys, marker="o", markersize=3, color="tab:blue")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("cumulative uplink bytes" + (" (log scale)" if log_x else ""))
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs communication")
    ax.grid(True, alpha=0.3, which="both" if log_x else "major")
    fig.tight_layout()
    return _png(fig)


def _as_matrix(label_distribution: Any):
    import numpy as np

    if label_distribution is None or isinstance(label_distribution, (str, bytes, Mapping)):
        return None
    try:
        rows = [list(r) for r in label_distribution]
    except TypeError:
        return None
    if not rows:
        return None
    width = max(len(r) for r in rows)
    if width == 0:
        return None
    mat = np.zeros((len(rows), width), dtype=float)
    for i, r in enumerate(rows):  # ragged rows are padded with zeros; non-numbers count as 0
        for j, v in enumerate(r):
            mat[i, j] = _num(v) or 0.0
    return mat


def plot_label_heatmap(label_distribution: Any) -> bytes | None:
    """Clients x classes heatmap of sample counts with a colorbar (counts written in the cells when small).

    Ragged rows are zero-padded; ``None`` for a missing or empty matrix.
    """
    mat = _as_matrix(label_distribution)
    if mat is None:
        return None
    n_clients, n_classes = mat.shape
    width = min(max(4.5, 0.55 * n_classes + 2.5), 14.0)
    height = min(max(3.0, 0.35 * n_clients + 1.5), 14.0)
    fig = _new_figure(width, height)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(mat, aspect="auto", interpolation="nearest", cmap="viridis")
    fig.colorbar(im, ax=ax, label="samples")
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    ax.set_title("Label distribution per client")
    if n_classes <= 30:
        ax.set_xticks(range(n_classes))
    if n_clients <= 30:
        ax.set_yticks(range(n_clients))
    if mat.size <= ANNOTATE_MAX_CELLS:
        hi = float(mat.max()) if mat.size else 0.0
        for i in range(n_clients):
            for j in range(n_classes):
                v = mat[i, j]
                ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=7,
                        color="black" if hi > 0 and v > 0.6 * hi else "white")
    fig.tight_layout()
    return _png(fig)


def plot_firing_rates(metrics: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Mean firing rate of each spiking layer per round; ``None`` when no round logged ``firing_rate``."""
    rounds = _rounds(metrics)
    per_layer: dict[int, tuple[list[float], list[float]]] = {}
    for x, row in zip(rounds, metrics):
        rates = row.get("firing_rate") if isinstance(row, Mapping) else None
        if isinstance(rates, (int, float)) and not isinstance(rates, bool):
            rates = [rates]  # a single scalar: treat as one layer
        if not isinstance(rates, (list, tuple)):
            continue
        for layer, r in enumerate(rates):
            v = _num(r)
            if v is not None:
                xs, ys = per_layer.setdefault(layer, ([], []))
                xs.append(x)
                ys.append(v)
    if not per_layer:
        return None
    fig = _new_figure(7.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for layer in sorted(per_layer):
        xs, ys = per_layer[layer]
        ax.plot(xs, ys, marker="o", markersize=3, label=f"layer {layer}")
    ax.set_xlabel("round")
    _integer_rounds(ax)
    ax.set_ylabel("firing rate")
    ax.set_title("Firing rate per spiking layer")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small", ncol=2 if len(per_layer) > 6 else 1)
    fig.tight_layout()
    return _png(fig)


def plot_energy(metrics: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Estimated energy per inference (joules) per round; ``None`` when ``energy_j`` was never logged."""
    xs, ys = _series(metrics, "energy_j")
    if not xs:
        return None
    fig = _new_figure(7.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, ys, marker="o", markersize=3, color="tab:green")
    if all(y > 0 for y in ys) and max(ys) / min(ys) >= LOG_X_RATIO:
        ax.set_yscale("log")
    ax.set_xlabel("round")
    _integer_rounds(ax)
    ax.set_ylabel("energy per inference (J)")
    ax.set_title("Energy per inference")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def plot_continual(metrics: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> bytes | None:
    """Continual FL: the accuracy matrix ``R[i, j]`` (heatmap), the accuracy on every task per round (task ends
    dashed) and the forgetting of each task; ``None`` for a run without a task stream."""
    cont = summary.get("continual")
    r = _as_matrix(cont.get("accuracy_matrix")) if isinstance(cont, Mapping) else None
    curves: dict[int, tuple[list[float], list[float]]] = {}
    ends = []
    for x, row in zip(_rounds(metrics), metrics):
        accs = row.get("task_accuracy") if isinstance(row, Mapping) else None
        if isinstance(row, Mapping) and row.get("task_end") is not None:
            ends.append(x)
        if isinstance(accs, (list, tuple)):
            for j, a in enumerate(accs):
                v = _num(a)
                if v is not None:
                    curves.setdefault(j, ([], []))[0].append(x)
                    curves[j][1].append(v)
    if r is None and not curves:
        return None
    fig = _new_figure(13.0, 4.0)
    axes = fig.subplots(1, 3)
    if r is not None:
        im = axes[0].imshow(r, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest", aspect="auto")
        fig.colorbar(im, ax=axes[0], label="accuracy")
        for i in range(r.shape[0]):
            for j in range(r.shape[1]):
                axes[0].text(j, i, f"{r[i, j]:.2f}", ha="center", va="center", fontsize=8,
                             color="black" if r[i, j] > 0.6 else "white")
        axes[0].set_xticks(range(r.shape[1]))
        axes[0].set_yticks(range(r.shape[0]))
    axes[0].set_xlabel("evaluated on task j")
    axes[0].set_ylabel("after task i")
    axes[0].set_title("Accuracy matrix R[i, j]")
    for j in sorted(curves):
        axes[1].plot(*curves[j], marker="o", markersize=3, label=f"task {j}")
    for x in ends:
        axes[1].axvline(x, color="grey", linestyle="--", linewidth=0.8)
    axes[1].set_xlabel("round")
    axes[1].set_ylabel("test accuracy")
    axes[1].set_title("Accuracy on every task")
    axes[1].grid(True, alpha=0.3)
    if curves:
        axes[1].legend(loc="best", fontsize="small")
    _integer_rounds(axes[1])
    forgetting = cont.get("forgetting_per_task") if isinstance(cont, Mapping) else None
    values = [_num(v) or 0.0 for v in forgetting] if isinstance(forgetting, (list, tuple)) else []
    axes[2].bar(range(len(values)), values, color="tab:red")
    axes[2].set_xticks(range(len(values)))
    axes[2].axhline(0.0, color="black", linewidth=0.8)
    axes[2].set_xlabel("task j")
    axes[2].set_ylabel("forgetting f_j")
    axes[2].set_title("Forgetting per task" + ("" if values else " (needs two tasks)"))
    fig.tight_layout()
    return _png(fig)


def _continual_section(summary: Mapping[str, Any]) -> list[str]:
    """The Continual learning heading with ACC / BWT / forgetting / drift (from ``summary["continual"]``)."""
    cont = summary.get("continual")
    if not isinstance(cont, Mapping):
        return []
    rows = [(str(k), format_value(v, str(k))) for k, v in cont.items()
            if _is_scalar(v) or k in ("drift", "forgetting_per_task", "step_forgetting")]
    return ["<h2>Continual learning</h2>", _table(["key", "value"], rows, css="continual")]


# ------------------------------------------------------------------------------------------------------ HTML


def _human_bytes(n: float) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.0f} {units[i]}" if i == 0 else f"{n:.1f} {units[i]}"


def format_value(value: Any, key: str = "") -> str:
    """Plain-text rendering of a table cell (not yet HTML-escaped). Floats get 4 decimals (or 4 significant
    digits when very large/small), byte counts (key containing ``bytes``) get a human-readable suffix."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        if "bytes" in key and abs(value) >= 1024:
            return f"{value} ({_human_bytes(value)})"
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            text = f"{value:.4f}"
        else:
            text = f"{value:.4g}"
        if "bytes" in key and abs(value) >= 1024:
            text += f" ({_human_bytes(value)})"
        return text
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _table(headers: Sequence[str] | None, rows: Iterable[Sequence[str]], css: str = "") -> str:
    esc = html.escape
    parts = [f'<table class="{esc(css)}">' if css else "<table>"]
    if headers:
        parts.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead>")
    parts.append("<tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [(str(k), format_value(v, str(k))) for k, v in summary.items() if _is_scalar(v)]
    het = summary.get("heterogeneity")
    if isinstance(het, Mapping):
        for k, v in het.items():
            if _is_scalar(v):
                rows.append((f"heterogeneity.{k}", format_value(v, str(k))))
    return rows


def _privacy_section(summary: Mapping[str, Any]) -> list[str]:
    """The Privacy heading, a sentence with the spent budget, and a table of the privacy settings (from
    ``summary["privacy"]``); nothing when the run had neither DP nor secure aggregation."""
    privacy = summary.get("privacy")
    if not isinstance(privacy, Mapping):
        return []
    esc = html.escape
    out = ["<h2>Privacy</h2>"]
    if privacy.get("dp"):
        eps = privacy.get("epsilon")
        if isinstance(eps, (int, float)) and math.isfinite(eps):
            text = (f"Client-level differential privacy: epsilon = {format_value(float(eps))} at delta = "
                    f"{format_value(privacy.get('delta'))} after {privacy.get('rounds_composed')} rounds "
                    f"({privacy.get('accountant')} accountant, sampling rate q = "
                    f"{format_value(privacy.get('sampling_rate'))}).")
        else:
            text = "Differential privacy is on without noise (noise multiplier 0): epsilon is infinite."
        out.append(f"<p>{esc(text)}</p>")
    if privacy.get("secure_aggregation"):
        t = privacy.get("secagg_threshold")
        text = ("Secure aggregation (simulated): the server saw masked updates and only their sum; "
                f"threshold t = {t} survivors per round.")
        out.append(f"<p>{esc(text)}</p>")
    out.append(_table(["key", "value"], [(str(k), format_value(v, str(k))) for k, v in privacy.items()
                                         if _is_scalar(v)], css="privacy"))
    return out


def _client_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per-client table: size, JSD, Hellinger (from ``heterogeneity``) and label counts, where present."""
    het = summary.get("heterogeneity") if isinstance(summary.get("heterogeneity"), Mapping) else {}
    cols: list[tuple[str, list[Any]]] = []
    for key in ("sizes", "jsd", "hellinger"):
        v = het.get(key)
        if isinstance(v, (list, tuple)) and v:
            cols.append((key.rstrip("s") if key == "sizes" else key, list(v)))
    labels = summary.get("label_distribution")
    if isinstance(labels, (list, tuple)) and labels and all(isinstance(r, (list, tuple)) for r in labels):
        cols.append(("label counts", [list(r) for r in labels]))
    if not cols:
        return [], []
    n = max(len(c) for _, c in cols)
    headers = ["client"] + [name for name, _ in cols]
    rows = []
    for i in range(n):
        rows.append([str(i)] + [format_value(c[i]) if i < len(c) else "—" for _, c in cols])
    return headers, rows


def _metrics_table(metrics: Sequence[Mapping[str, Any]]) -> str:
    columns: list[str] = []
    for row in metrics:
        for k in row:
            if k not in columns:
                columns.append(k)
    rows = [[format_value(row.get(c), c) for c in columns] for row in metrics]
    return _table(columns, rows, css="metrics")


def _config_yaml(config: Mapping[str, Any]) -> str:
    try:
        return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False, allow_unicode=True)
    except yaml.YAMLError:
        return json.dumps(config, indent=2, default=str)


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}table.metrics td{white-space:nowrap;font-variant-numeric:tabular-nums}
figure{margin:1em 0;text-align:center}figure img{max-width:100%;height:auto}
figcaption{font-size:.9em;color:#555;margin-top:.3em}
pre{background:#f7f7f7;border:1px solid #ddd;padding:.8em;overflow-x:auto;font-size:.85em}
details summary{cursor:pointer;font-weight:600}.muted{color:#777}
"""


def build_plots(run: RunData) -> list[tuple[str, bytes]]:
    """(caption, PNG bytes) for every plot that has data, in report order."""
    metrics = run.metrics
    candidates = [
        ("Test accuracy and loss per round.", lambda: plot_accuracy_loss(metrics)),
        ("Accuracy against cumulative uplink bytes.", lambda: plot_accuracy_vs_bytes(metrics)),
        ("Label distribution: sample counts per client and class.",
         lambda: plot_label_heatmap(run.summary.get("label_distribution"))),
        ("Mean firing rate of each spiking layer per round.", lambda: plot_firing_rates(metrics)),
        ("Estimated energy per inference per round.", lambda: plot_energy(metrics)),
        ("Continual learning: accuracy matrix, accuracy on every task per round, forgetting per task.",
         lambda: plot_continual(metrics, run.summary)),
    ]
    out = []
    for caption, make in candidates:
        png = make()
        if png:
            out.append((caption, png))
    return out


def render_html(run: RunData, title: str | None = None) -> str:
    """The complete, self-contained report page for ``run`` (no external resources, no scripts)."""
    esc = html.escape
    if title is None:
        name = run.run_dir.name if run.run_dir is not None else "run"
        title = f"spikefed report: {name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if run.run_dir is not None:
        parts.append(f'<p class="muted">Run directory: <code>{esc(str(run.run_dir))}</code></p>')

    parts.append("<h2>Summary</h2>")
    summary_rows = _summary_rows(run.summary)
    parts.append(_table(["key", "value"], summary_rows, css="summary") if summary_rows
                 else '<p class="muted">No scalar summary values.</p>')
    headers, client_rows = _client_rows(run.summary)
    if client_rows:
        parts.append(f"<details><summary>Per-client data ({len(client_rows)} clients)</summary>")
        parts.append(_table(headers, client_rows, css="clients"))
        parts.append("</details>")
    parts.extend(_privacy_section(run.summary))
    parts.extend(_continual_section(run.summary))

    parts.append("<h2>Plots</h2>")
    plots = build_plots(run)
    if not plots:
        parts.append('<p class="muted">No plottable data.</p>')
    for caption, png in plots:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
                     f"<figcaption>{esc(caption)}</figcaption></figure>")

    parts.append("<h2>Per-round metrics</h2>")
    if run.metrics:
        parts.append(f"<details><summary>{len(run.metrics)} rounds</summary>")
        parts.append(_metrics_table(run.metrics))
        parts.append("</details>")
    else:
        parts.append('<p class="muted">No rounds logged.</p>')

    parts.append("<h2>Configuration</h2>")
    parts.append(f"<pre>{esc(_config_yaml(run.config))}</pre>" if run.config
                 else '<p class="muted">No config.yaml.</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(run_dir: str | os.PathLike[str], title: str | None = None) -> Path:
    """Load ``run_dir`` and write ``run_dir/report.html`` atomically; returns its path."""
    run = load_run(run_dir)
    out = Path(run_dir) / REPORT_FILE
    write_atomic(out, render_html(run, title))
    return out
