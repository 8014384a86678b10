"""Static fallback of the report (no plotly): the figure specs of :mod:`.spec` drawn with matplotlib into PNGs.

Figures are drawn on :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas directly: nothing goes
through pyplot, so the process-wide backend and pyplot's figure registry are left untouched.
"""

from __future__ import annotations

import io
from typing import Any, Mapping

from .spec import COLORS

DPI = 100
DASHES = {"solid": "-", "dash": "--", "dot": ":", "dashdot": "-."}
MARKERS = {"x": "x", "square": "s", "circle": "o"}
ANNOTATE_MAX_CELLS = 400


def _title(obj: Any) -> str:
    return str(obj.get("text", "")) if isinstance(obj, Mapping) else str(obj or "")


def _scatter(ax: Any, t: Mapping[str, Any], color: str) -> None:
    mode = t.get("mode", "lines")
    style = t.get("line", {}) or {}
    marker = t.get("marker", {}) or {}
    kw = {"label": t.get("name"), "color": style.get("color") or marker.get("color") or color}
    if "lines" in mode:
        ax.plot(t["x"], t["y"], linestyle=DASHES.get(style.get("dash", "solid"), "-"),
                marker="o" if "markers" in mode else None, markersize=3, **kw)
    else:
        ax.scatter(t["x"], t["y"], s=float(marker.get("size", 6)) ** 2 / 2,
                   marker=MARKERS.get(marker.get("symbol", "circle"), "o"), **kw)


def _bars(ax: Any, traces: list[Mapping[str, Any]], mode: str) -> None:
    categories: list[Any] = []
    for t in traces:
        for x in t["x"]:
            if x not in categories:
                categories.append(x)
    numeric = all(isinstance(c, (int, float)) for c in categories)
    pos = {c: (float(c) if numeric else float(i)) for i, c in enumerate(categories)}
    xs = sorted(pos.values())
    step = min((b - a for a, b in zip(xs, xs[1:]) if b > a), default=1.0)
    groups = list(dict.fromkeys(t.get("offsetgroup", i) for i, t in enumerate(traces)))
    width = 0.8 * step / (len(groups) if mode == "group" else 1)
    base = {c: 0.0 for c in categories}
    for i, t in enumerate(traces):
        color = (t.get("marker") or {}).get("color") or COLORS[i % len(COLORS)]
        g = groups.index(t.get("offsetgroup", i))
        shift = (g - (len(groups) - 1) / 2) * width if mode == "group" else 0.0
        px = [pos[x] + shift for x in t["x"]]
        bottoms = [base[x] for x in t["x"]] if mode == "stack" else None
        ax.bar(px, t["y"], width=width, bottom=bottoms, color=color, label=t.get("name"))
        if mode == "stack":
            for x, y in zip(t["x"], t["y"]):
                base[x] += float(y or 0)
    if not numeric:
        ax.set_xticks([pos[c] for c in categories])
        ax.set_xticklabels([str(c) for c in categories], rotation=45 if len(categories) > 6 else 0,
                           ha="right" if len(categories) > 6 else "center", fontsize=8)


def _heatmap(fig: Any, ax: Any, t: Mapping[str, Any]) -> None:
    import numpy as np
    from matplotlib.colors import BoundaryNorm, ListedColormap

    z = np.asarray(t["z"], dtype=float)
    meta = t.get("meta") or {}
    kw: dict[str, Any] = {"aspect": "auto", "interpolation": "nearest", "origin": "upper"}
    if meta.get("colors"):
        n = len(meta["colors"])
        kw.update(cmap=ListedColormap(meta["colors"]), norm=BoundaryNorm([i - 0.5 for i in range(n + 1)], n))
    else:
        scale = t.get("colorscale")
        kw["cmap"] = {"Blues": "Blues", "Viridis": "viridis"}.get(scale, "viridis") if isinstance(scale, str) \
            else "viridis"
        if t.get("zmin") is not None:
            kw.update(vmin=t["zmin"], vmax=t["zmax"])
    xs, ys = list(t.get("x") or range(z.shape[1])), list(t.get("y") or range(z.shape[0]))
    im = ax.imshow(z, extent=(-0.5, z.shape[1] - 0.5, z.shape[0] - 0.5, -0.5), **kw)
    cb = fig.colorbar(im, ax=ax)
    if meta.get("categories"):
        cb.set_ticks(list(range(len(meta["categories"]))))
        cb.set_ticklabels(meta["categories"])
    step_x = max(1, len(xs) // 20)
    step_y = max(1, len(ys) // 30)
    ax.set_xticks(range(0, len(xs), step_x))
    ax.set_xticklabels([f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in xs[::step_x]], fontsize=8)
    ax.set_yticks(range(0, len(ys), step_y))
    ax.set_yticklabels([f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in ys[::step_y]], fontsize=8)
    if t.get("texttemplate") and z.size <= ANNOTATE_MAX_CELLS:
        hi = float(np.nanmax(z)) if z.size else 0.0
        fmt = "{:.2f}" if ".2f" in t["texttemplate"] else "{:.0f}"
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                ax.text(j, i, fmt.format(z[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if hi > 0 and z[i, j] > 0.6 * hi else "black")


def render_png(spec: Mapping[str, Any]) -> bytes:
    """PNG bytes of a figure spec (see :mod:`.spec` for the supported subset)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    layout = spec.get("layout", {})
    traces = list(spec.get("data", []))
    height = float(layout.get("height", 380)) / DPI
    fig = MplFigure(figsize=(8.0, max(3.0, height)), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bars = [t for t in traces if t.get("type") == "bar"]
    if bars:
        _bars(ax, bars, layout.get("barmode", "group"))
    for i, t in enumerate(traces):
        if t.get("type") == "scatter":
            _scatter(ax, t, COLORS[i % len(COLORS)])
        elif t.get("type") == "heatmap":
            _heatmap(fig, ax, t)
    xa, ya = layout.get("xaxis", {}), layout.get("yaxis", {})
    ax.set_xlabel(_title(xa.get("title")))
    ax.set_ylabel(_title(ya.get("title")))
    ax.set_title(_title(layout.get("title")))
    if xa.get("type") == "log":
        ax.set_xscale("log")
    if ya.get("range"):
        ax.set_ylim(*ya["range"])
    elif ya.get("rangemode") == "tozero":
        ax.set_ylim(bottom=0)
    if xa.get("rangemode") == "tozero":
        ax.set_xlim(left=0)
    if xa.get("range"):
        ax.set_xlim(*xa["range"])
    if xa.get("tickformat") == "d":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not any(t.get("type") == "heatmap" for t in traces):
        ax.grid(True, alpha=0.3)
        if any(t.get("name") for t in traces):
            ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()
