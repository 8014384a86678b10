"""Several runs side by side (``spikefed compare DIR...``): the same experiment over seeds, or different settings.

:func:`compare_runs` reads each run directory (finished or interrupted) and returns one row of key numbers per run
plus their mean and spread (sample standard deviation, ``n - 1`` in the denominator, and min / max);
:func:`render_compare` writes a self-contained page with the table and the accuracy curves of every run with their
mean per round.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..digest import MIB
from .data import RunData, load_run, num
from .spec import Figure, figure, line, series

#: (key, label with its unit, format spec) of the numbers compared
METRICS: tuple[tuple[str, str, str], ...] = (
    ("final_accuracy", "final accuracy", ".4f"),
    ("best_accuracy", "best accuracy", ".4f"),
    ("final_accuracy_ideal", "final accuracy, ideal hardware", ".4f"),
    ("epsilon", "DP epsilon", ".3f"),
    ("rejected_updates", "rejected updates", ".0f"),
    ("dropped", "dropped clients", ".0f"),
    ("late", "late clients", ".0f"),
    ("uplink_mib", "uplink (MiB)", ".2f"),
    ("energy_nj", "energy per inference (nJ)", ".1f"),
    ("wall_seconds", "wall time (s)", ".1f"),
    ("rounds", "rounds", ".0f"),
)


@dataclass
class Comparison:
    runs: list[RunData]
    names: list[str]
    values: list[dict[str, float | None]]  # per run: metric key -> value
    keys: list[str]  # the metrics at least one run has

    def stats(self, key: str) -> dict[str, float | None]:
        """Mean, sample standard deviation (``None`` for one run), min and max of ``key`` over the runs that
        have it, and ``n``."""
        xs = [v[key] for v in self.values if v.get(key) is not None]
        xs = [float(x) for x in xs if x is not None]
        if not xs:
            return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
        return {"n": len(xs), "mean": mean, "std": std, "min": min(xs), "max": max(xs)}


def run_values(run: RunData) -> dict[str, float | None]:
    s = run.summary
    dev = s.get("devices") if isinstance(s.get("devices"), dict) else {}
    priv = s.get("privacy") if isinstance(s.get("privacy"), dict) else {}
    up = num(s.get("total_bytes_up"))
    energy = num(s.get("energy_per_inference_j"))
    return {"final_accuracy": num(s.get("final_accuracy")), "best_accuracy": num(s.get("best_accuracy")),
            "final_accuracy_ideal": num(dev.get("final_accuracy_ideal")), "epsilon": num(priv.get("epsilon")),
            "rejected_updates": num(s.get("rejected_updates")), "dropped": num(s.get("dropped")),
            "late": num(s.get("late")), "uplink_mib": up / MIB if up is not None else None,
            "energy_nj": energy * 1e9 if energy is not None else None, "wall_seconds": num(s.get("wall_seconds")),
            "rounds": num(s.get("rounds"))}


def _names(dirs: Sequence[Path]) -> list[str]:
    names = [d.name or str(d) for d in dirs]
    if len(set(names)) < len(names):
        names = [str(d) for d in dirs]
    return names


def compare_runs(run_dirs: Sequence[str | os.PathLike[str]]) -> Comparison:
    """Read every run directory (``FileNotFoundError`` / ``ValueError`` naming the bad one)."""
    if not run_dirs:
        raise ValueError("compare needs at least one run directory")
    dirs = [Path(d) for d in run_dirs]
    runs = [load_run(d) for d in dirs]
    values = [run_values(r) for r in runs]
    keys = [k for k, _, _ in METRICS if any(v.get(k) is not None for v in values)]
    return Comparison(runs, _names(dirs), values, keys)


def accuracy_curves(cmp: Comparison) -> Figure | None:
    """Accuracy per round of every run (thin) and, per round, the mean over the runs that evaluated it (thick)."""
    traces, by_round = [], {}
    for name, run in zip(cmp.names, cmp.runs):
        xs, ys = series(run.metrics, "accuracy")
        if xs:
            traces.append(line(xs, ys, name, mode="lines", line={"width": 1}))
            for x, y in zip(xs, ys):
                by_round.setdefault(x, []).append(y)
    if not traces:
        return None
    rounds = sorted(by_round)
    traces.append(line(rounds, [sum(by_round[r]) / len(by_round[r]) for r in rounds], "mean over runs",
                       line={"width": 3, "color": "#000000"}))
    return Figure("accuracy", "Test accuracy per round of every run (thin lines) and their mean (thick).",
                  figure("Accuracy per round", traces, "round", "accuracy (fraction)", y_range=[0, 1.02],
                         integer_x=True))


def table_rows(cmp: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table: one row per run, then mean ± std and min..max per metric."""
    labels = {k: (label, spec) for k, label, spec in METRICS}
    header = ["run"] + [labels[k][0] for k in cmp.keys]

    def f(v: float | None, spec: str) -> str:
        return format(v, spec) if v is not None else "-"

    rows = [[name] + [f(v.get(k), labels[k][1]) for k in cmp.keys] for name, v in zip(cmp.names, cmp.values)]
    stats = {k: cmp.stats(k) for k in cmp.keys}
    rows.append([f"mean ± std (n={len(cmp.runs)})"] + [
        f(stats[k]["mean"], labels[k][1]) + (f" ± {f(stats[k]['std'], labels[k][1])}" if stats[k]["std"]
                                              is not None else "") for k in cmp.keys])
    rows.append(["min .. max"] + [f"{f(stats[k]['min'], labels[k][1])} .. {f(stats[k]['max'], labels[k][1])}"
                                  for k in cmp.keys])
    return header, rows


def render_compare(cmp: Comparison, interactive: bool | None = None) -> str:
    """Self-contained comparison page (plotly.js inline when installed, else a PNG)."""
    import base64

    from .html import CSS, json_script, plotly_js, table
    from .static import render_png

    esc = html.escape
    js = plotly_js() if interactive is not False else None
    header, rows = table_rows(cmp)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>spikefed compare: {len(cmp.runs)} runs</title><style>{CSS}</style>"]
    if js:
        parts.append(f"<script>{js}</script>")
    parts += ["</head><body>", f"<h1>spikefed compare: {len(cmp.runs)} runs</h1>",
              '<p class="purpose">The same numbers for every run, then their mean ± sample standard deviation '
              "(n - 1) and range: is a difference larger than the spread over seeds?</p>",
              table(header, rows, css="summary")]
    for name, run in zip(cmp.names, cmp.runs):
        if not run.complete:
            parts.append(f'<p class="warn">{esc(name)}: interrupted run (no summary.json), numbers from '
                         "metrics.jsonl.</p>")
    fig = accuracy_curves(cmp)
    if fig is not None:
        if js:
            parts.append(f'<figure><div id="fig-{fig.id}"></div><figcaption>{esc(fig.caption)}</figcaption></figure>'
                         f'<script>Plotly.newPlot("fig-{fig.id}",{json_script(fig.spec["data"])},'
                         f'{json_script(fig.spec["layout"])},{{responsive:true,displaylogo:false}});</script>')
        else:
            data = base64.b64encode(render_png(fig.spec)).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="accuracy per round">'
                         f"<figcaption>{esc(fig.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
