"""Figure specifications: plain dicts in plotly's JSON schema (``{"data": [traces], "layout": {...}}``).

Building a figure needs no plotting library: :mod:`.html` hands the dict to plotly.js (interactive report) or
:mod:`.static` draws it with matplotlib (the fallback without plotly). Only the subset drawn by both is used:
``scatter`` (lines and/or markers), ``bar`` (stacked, grouped or overlaid) and ``heatmap`` (continuous or
categorical colours, optional cell text).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .data import num

MIB = 1024 * 1024
#: plotly's default colour cycle (also used by the static renderer so both look alike)
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")


@dataclass
class Figure:
    """One plot of the report: an id (HTML anchor), what it shows (caption, with units) and its spec."""

    id: str
    caption: str
    spec: dict[str, Any]


def line(x: Sequence[Any], y: Sequence[Any], name: str, mode: str = "lines+markers", **extra: Any) -> dict[str, Any]:
    return {"type": "scatter", "mode": mode, "x": list(x), "y": list(y), "name": name, **extra}


def bar(x: Sequence[Any], y: Sequence[Any], name: str, **extra: Any) -> dict[str, Any]:
    return {"type": "bar", "x": list(x), "y": list(y), "name": name, **extra}


def heatmap(z: Sequence[Sequence[Any]], x: Sequence[Any], y: Sequence[Any], name: str, **extra: Any) -> dict[str, Any]:
    return {"type": "heatmap", "z": [list(r) for r in z], "x": list(x), "y": list(y), "name": name, **extra}


def categorical(names: Sequence[str], colors: Sequence[str]) -> dict[str, Any]:
    """Heatmap attributes for integer codes ``0..n-1`` drawn as ``n`` named colours (a stepwise colour scale)."""
    n = len(names)
    scale: list[list[Any]] = []
    for i, c in enumerate(colors):
        scale += [[i / n, c], [(i + 1) / n, c]]
    return {"colorscale": scale, "zmin": -0.5, "zmax": n - 0.5,
            "colorbar": {"tickvals": list(range(n)), "ticktext": list(names)},
            "meta": {"categories": list(names), "colors": list(colors)}}


def figure(title: str, traces: Sequence[Mapping[str, Any]], x_title: str, y_title: str, *,
           y_from_zero: bool = False, y_range: Sequence[float] | None = None, x_log: bool = False,
           barmode: str | None = None, integer_x: bool = False, height: int = 380) -> dict[str, Any]:
    """A spec with titled axes. ``y_from_zero``: the y axis starts at 0 (magnitudes: energy, counts, time)."""
    xaxis: dict[str, Any] = {"title": {"text": x_title}}
    yaxis: dict[str, Any] = {"title": {"text": y_title}}
    if x_log:
        xaxis["type"] = "log"
    if integer_x:
        xaxis["tickformat"] = "d"
    if y_range is not None:
        yaxis["range"] = list(y_range)
    elif y_from_zero:
        yaxis["rangemode"] = "tozero"
    layout: dict[str, Any] = {"title": {"text": title}, "xaxis": xaxis, "yaxis": yaxis, "height": height + 40,
                              "margin": {"l": 70, "r": 30, "t": 50, "b": 60},
                              "legend": {"orientation": "h", "y": -0.25, "yanchor": "top"}}
    if barmode:
        layout["barmode"] = barmode
    return {"data": [dict(t) for t in traces], "layout": layout}


# ----------------------------------------------------------------------------------------------- row helpers


def rounds_of(rows: Sequence[Mapping[str, Any]]) -> list[float]:
    """The x of each row: its ``round`` when numeric, else its 1-based position."""
    return [num(r.get("round")) or float(i + 1) for i, r in enumerate(rows)]


def series(rows: Sequence[Mapping[str, Any]], key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
    """(rounds, values * scale) of the rows where ``key`` holds a finite number."""
    xs, ys = [], []
    for x, r in zip(rounds_of(rows), rows):
        v = num(r.get(key))
        if v is not None:
            xs.append(x)
            ys.append(v * scale)
    return xs, ys


def lists(rows: Sequence[Mapping[str, Any]], key: str) -> list[tuple[float, list[float | None]]]:
    """(round, list) of the rows where ``key`` holds a list (entries: finite floats or ``None``)."""
    out = []
    for x, r in zip(rounds_of(rows), rows):
        v = r.get(key)
        if isinstance(v, (list, tuple)):
            out.append((x, [num(e) for e in v]))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
