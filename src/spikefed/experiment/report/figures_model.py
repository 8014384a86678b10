"""The report's figures of the trained model and the data: spike raster, per-neuron firing histogram, energy per
layer, confusion matrix, label distribution per client, continual-learning matrices."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from .activity import SATURATED_RATE
from .data import num
from .spec import COLORS, Figure, bar, figure, heatmap, line, lists, rounds_of

Rows = Sequence[Mapping[str, Any]]
#: cell values are written in heatmaps up to this many cells
ANNOTATE_MAX_CELLS = 400
#: the firing-rate histogram's bins: exactly 0 (dead), then (0, 0.05], (0.05, 0.1], ... (0.95, 1]
RATE_BINS = 20


def matrix(value: Any) -> list[list[float]] | None:
    """A list of numeric rows (ragged rows zero-padded, non-numbers 0), or ``None``."""
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(r, (list, tuple)) for r in value):
        return None
    width = max(len(r) for r in value)
    if width == 0:
        return None
    return [[num(v) or 0.0 for v in r] + [0.0] * (width - len(r)) for r in value]


def raster(activity: Mapping[str, Any] | None) -> Figure | None:
    if not activity or not activity.get("raster"):
        return None
    traces, offset, ticks = [], 0, []
    sizes = {la["name"]: la["neurons"] for la in activity.get("layers", [])}
    for i, layer in enumerate(activity["raster"]):
        n = int(sizes.get(layer["name"], max(layer["neurons"], default=-1) + 1))
        traces.append(line(layer["times"], [offset + k for k in layer["neurons"]], f"{layer['name']} ({n} neurons)",
                           mode="markers", marker={"size": 4, "symbol": "square", "color": COLORS[i % len(COLORS)]}))
        ticks.append(offset)
        offset += n
    spec = figure("Spike raster (one test sample)", traces, "time step", "neuron (layers stacked)",
                  height=max(320, min(800, offset * 2 + 120)))
    spec["layout"]["xaxis"]["range"] = [-0.5, activity.get("time_steps", 1) - 0.5]
    spec["layout"]["yaxis"]["range"] = [-0.5, offset - 0.5]
    count = sum(len(la["times"]) for la in activity["raster"])
    return Figure("raster", f"Every spike of the trained global model on the first test sample ({count} spikes in "
                  f"{activity.get('time_steps')} time steps); one row per neuron, layers stacked bottom to top in "
                  "the order the input flows through them.", spec)


def rate_histogram(rates: Sequence[float]) -> list[int]:
    """Counts of neurons per bin: exactly 0, then ``RATE_BINS`` equal bins (k/RATE_BINS, (k+1)/RATE_BINS]."""
    counts = [0] * (RATE_BINS + 1)
    for r in rates:
        if r <= 0:
            counts[0] += 1
        else:
            counts[1 + min(RATE_BINS - 1, max(0, math.ceil(r * RATE_BINS) - 1))] += 1
    return counts


def firing_histogram(activity: Mapping[str, Any] | None) -> Figure | None:
    if not activity or not activity.get("layers"):
        return None
    labels = ["0 (dead)"] + [f"{(k + 1) / RATE_BINS:.2f}" for k in range(RATE_BINS)]
    traces, notes = [], []
    for i, la in enumerate(activity["layers"]):
        traces.append(bar(labels, rate_histogram(la["rates"]), f"{la['name']} ({la['neurons']} neurons)",
                          marker={"color": COLORS[i % len(COLORS)]}))
        notes.append(f"{la['name']}: {la['dead']} of {la['neurons']} dead, {la['saturated']} saturated")
    spec = figure("Firing rate of every neuron", traces, "firing rate bin: up to this many spikes per time step",
                  "neurons",
                  y_from_zero=True, barmode="group")
    spec["layout"]["xaxis"]["type"] = "category"
    return Figure("firing_histogram", f"How many neurons fire at each rate (spikes per step, averaged over "
                  f"{activity.get('samples')} test samples). Dead neurons never spiked; saturated ones spiked in at "
                  f"least {SATURATED_RATE:.0%} of the steps. " + "; ".join(notes) + ".", spec)


def energy_per_layer(activity: Mapping[str, Any] | None) -> Figure | None:
    if not activity or not activity.get("ops"):
        return None
    e_ac, e_mac = float(activity["e_ac"]), float(activity["e_mac"])
    syn = [la for la in activity["ops"] if la["kind"] != "neuron"]
    if not syn:
        return None
    names = [f"{la['name']} ({la['kind']})" for la in syn]
    mac = [la["effective_macs"] * e_mac * 1e9 for la in syn]
    ac = [la["effective_acs"] * e_ac * 1e9 for la in syn]
    traces = [bar(names, mac, f"MACs x {e_mac * 1e12:g} pJ"), bar(names, ac, f"ACs x {e_ac * 1e12:g} pJ")]
    total = sum(mac) + sum(ac)
    biggest = max(range(len(syn)), key=lambda i: mac[i] + ac[i])
    share = (mac[biggest] + ac[biggest]) / total if total else 0.0
    kind = "MACs" if mac[biggest] >= ac[biggest] else "ACs"
    spec = figure("Energy per inference by synaptic layer", traces, "layer", "energy per inference (nJ)",
                  y_from_zero=True, barmode="stack")
    spec["layout"]["xaxis"]["type"] = "category"
    return Figure("energy_layers", f"Where the energy of one inference goes (nJ, from 0), per synaptic layer of the "
                  f"trained model: {names[biggest]} takes {share:.1%}, mostly {kind}. A layer fed by a non-spiking "
                  "input (direct coding) pays a MAC per weight and step; a layer fed by spikes pays an AC per spike "
                  "and outgoing weight.", spec)


def confusion(rows: Rows) -> Figure | None:
    found = [(x, matrix(r.get("confusion"))) for x, r in zip(rounds_of(rows), rows)]
    found = [(x, m) for x, m in found if m]
    if not found:
        return None
    x, m = found[-1]
    classes = list(range(len(m)))
    extra: dict[str, Any] = {"colorscale": "Blues", "reversescale": True,
                             "colorbar": {"title": {"text": "test samples"}}}
    if len(m) * len(m) <= ANNOTATE_MAX_CELLS:
        extra["texttemplate"] = "%{z:.0f}"
    spec = figure(f"Confusion matrix (round {x:.0f})", [heatmap(m, classes, classes, "samples", **extra)],
                  "predicted class", "true class", height=460)
    spec["layout"]["yaxis"]["autorange"] = "reversed"
    total = sum(map(sum, m))
    correct = sum(m[i][i] for i in classes)
    return Figure("confusion", f"Test samples of each true class (rows) by predicted class (columns) at the last "
                  f"evaluation; {correct:.0f} of {total:.0f} on the diagonal.", spec)


def label_heatmap(label_distribution: Any) -> Figure | None:
    m = matrix(label_distribution)
    if m is None:
        return None
    extra: dict[str, Any] = {"colorscale": "Viridis", "colorbar": {"title": {"text": "samples"}}}
    if len(m) * len(m[0]) <= ANNOTATE_MAX_CELLS:
        extra["texttemplate"] = "%{z:.0f}"
    spec = figure("Label distribution per client", [heatmap(m, list(range(len(m[0]))), list(range(len(m))),
                                                            "samples", **extra)], "class", "client",
                  height=max(300, min(900, 18 * len(m) + 120)))
    return Figure("labels", "Training samples of each class held by each client (the partition's label skew).", spec)


def continual(rows: Rows, summary: Mapping[str, Any]) -> list[Figure]:
    cont = summary.get("continual") if isinstance(summary.get("continual"), Mapping) else {}
    out = []
    r = matrix(cont.get("accuracy_matrix"))
    if r:
        tasks = list(range(len(r[0])))
        spec = figure("Accuracy matrix R[i, j]", [heatmap(r, tasks, list(range(len(r))), "accuracy",
                                                          colorscale="Viridis", zmin=0, zmax=1,
                                                          texttemplate="%{z:.2f}")],
                      "evaluated on task j", "after task i")
        spec["layout"]["yaxis"]["autorange"] = "reversed"
        out.append(Figure("continual_matrix", "Accuracy on task j (columns) after training task i (rows).", spec))
    curves = lists(rows, "task_accuracy")
    if curves:
        width = max(len(v) for _, v in curves)
        traces = []
        for j in range(width):
            pts = [(x, v[j]) for x, v in curves if j < len(v) and v[j] is not None]
            traces.append(line([p[0] for p in pts], [p[1] for p in pts], f"task {j}"))
        ends = [x for x, row in zip(rounds_of(rows), rows) if row.get("task_end") is not None]
        out.append(Figure("continual_tasks", "Test accuracy on every task per round; task ends at rounds "
                          + (", ".join(f"{x:.0f}" for x in ends) or "-") + ".",
                          figure("Accuracy on every task", traces, "round", "accuracy (fraction)",
                                 y_range=[0, 1.02], integer_x=True)))
    forgetting = cont.get("forgetting_per_task")
    if isinstance(forgetting, (list, tuple)) and forgetting:
        vals = [num(v) or 0.0 for v in forgetting]
        out.append(Figure("forgetting", "Forgetting of each task: its best accuracy minus its final accuracy.",
                          figure("Forgetting per task", [bar(list(range(len(vals))), vals, "forgetting")],
                                 "task j", "forgetting f_j (accuracy)", y_from_zero=True)))
    return out
