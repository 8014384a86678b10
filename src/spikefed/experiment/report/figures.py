"""The report's per-round figures: learning curves, per-client accuracy, participation, devices, privacy and
efficiency. Each function takes the metrics rows (and summary) and returns a :class:`~.spec.Figure`, or ``None``
when the run did not log what it needs (the figure is then left out)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .data import num
from .spec import (COLORS, MIB, Figure, bar, categorical, figure, heatmap, line, lists, percentile, rounds_of,
                   series)

Rows = Sequence[Mapping[str, Any]]
#: x of accuracy-vs-bytes goes logarithmic when the cumulative uplink spans at least this factor
LOG_X_RATIO = 100.0


def layer_names(rows: Rows, activity: Mapping[str, Any] | None) -> list[str]:
    """Names of the spiking layers (from the measured model; ``layer i`` without it)."""
    if activity and activity.get("layers"):
        return [f"{la['name']} ({la['neurons']} neurons)" for la in activity["layers"]]
    width = max((len(v) for _, v in lists(rows, "firing_rate")), default=0)
    return [f"layer {i}" for i in range(width)]


def accuracy(rows: Rows) -> Figure | None:
    """Test accuracy per round; on a device fleet also the ideal-hardware accuracy of the same global model."""
    xs, ys = series(rows, "accuracy")
    if not xs:
        return None
    fleet = any("accuracy_ideal" in r for r in rows)
    traces = [line(xs, ys, "deployed on the clients' devices (mean)" if fleet else "test accuracy")]
    if fleet:
        traces.append(line(*series(rows, "accuracy_ideal"), "ideal hardware", line={"dash": "dash"}))
    traces.append(line(*series(rows, "train_accuracy"), "train accuracy (accepted clients, weighted)",
                       mode="lines", line={"dash": "dot"}))
    caption = ("Accuracy of the global model on the held-out test set after each evaluated round (fraction "
               "correct, 0 to 1)." + (" Deployed: the mean over every client's simulated device; ideal: the "
                                      "same weights on ideal hardware." if fleet else ""))
    return Figure("accuracy", caption, figure("Accuracy per round", traces, "round", "accuracy (fraction)",
                                              y_range=[0, 1.02], integer_x=True))


def loss(rows: Rows) -> Figure | None:
    test, train = series(rows, "loss"), series(rows, "train_loss")
    if not test[0] and not train[0]:
        return None
    traces = [t for t in (line(*test, "test loss") if test[0] else None,
                          line(*train, "train loss", mode="lines", line={"dash": "dot"}) if train[0] else None) if t]
    return Figure("loss", "Test loss of the global model and mean train loss of the accepted clients (the "
                  "configured loss, summed over time steps).",
                  figure("Loss per round", traces, "round", "loss", y_from_zero=True, integer_x=True))


def seconds(rows: Rows) -> Figure | None:
    xs, ys = series(rows, "seconds")
    if not xs:
        return None
    total = sum(ys)
    return Figure("seconds", f"Wall-clock seconds of each round (local training, aggregation, evaluation; "
                  f"the checkpoint write is not included); {total:.1f} s over {len(ys)} rounds.",
                  figure("Seconds per round", [bar(xs, ys, "seconds")], "round", "seconds", y_from_zero=True,
                         integer_x=True))


def firing_rates(rows: Rows, activity: Mapping[str, Any] | None) -> Figure | None:
    data = lists(rows, "firing_rate")
    if not data:
        return None
    names = layer_names(rows, activity)
    traces = []
    for i, name in enumerate(names):
        pts = [(x, v[i]) for x, v in data if i < len(v) and v[i] is not None]
        if pts:
            traces.append(line([p[0] for p in pts], [p[1] for p in pts], name))
    return Figure("firing_rate", "Mean firing rate of each spiking layer on the test set (spikes per neuron per "
                  "time step, 0 to 1).", figure("Firing rate per spiking layer", traces, "round",
                                                "spikes / neuron / step", y_from_zero=True, integer_x=True))


def client_accuracy_distribution(rows: Rows) -> Figure | None:
    """Min, 10th percentile, median, mean and max of the per-client accuracy of the global model per round."""
    data = [(x, [v for v in vals if v is not None]) for x, vals in lists(rows, "client_accuracy")]
    data = [(x, v) for x, v in data if v]
    if not data:
        return None
    xs = [x for x, _ in data]
    stats = {"max": [max(v) for _, v in data], "median": [percentile(v, 50) for _, v in data],
             "mean": [sum(v) / len(v) for _, v in data], "10th percentile": [percentile(v, 10) for _, v in data],
             "min (worst client)": [min(v) for _, v in data]}
    dashes = {"max": "dot", "median": "solid", "mean": "dash", "10th percentile": "dashdot",
              "min (worst client)": "dot"}
    traces = [line(xs, ys, name, line={"dash": dashes[name]}) for name, ys in stats.items()]
    return Figure("client_accuracy", f"Accuracy of the global model on each client's data mix, summarised over "
                  f"the {len(data[-1][1])} clients per evaluated round (each client's label shares applied to the "
                  "per-class test accuracy: what a held-out set drawn like that client's data would score). A wide "
                  "band means the one global model serves some clients much worse than others.",
                  figure("Per-client accuracy of the global model", traces, "round", "accuracy (fraction)",
                         y_range=[0, 1.02], integer_x=True))


def fairness(rows: Rows) -> Figure | None:
    """Mean, worst-10 % mean and Jain index of the per-client accuracy per evaluated round."""
    mean, worst, jain = (series(rows, k) for k in ("client_accuracy_mean", "client_accuracy_worst10",
                                                   "client_accuracy_jain"))
    if not mean[0]:
        return None
    traces = [line(*mean, "mean over clients"), line(*worst, "worst 10% of clients (mean)", line={"dash": "dash"}),
              line(*jain, "Jain index (sum a)^2 / (n sum a^2)", line={"dash": "dot"})]
    return Figure("fairness", "Fairness of the global model across clients per evaluated round: the mean of the "
                  "per-client accuracies, the mean of the worst 10% of clients (at least one), and Jain's index "
                  "(1: every client scores the same; 1/n: one client gets everything). A gap between mean and "
                  "worst 10% is the price the worst-served clients pay.",
                  figure("Fairness across clients", traces, "round", "accuracy (fraction) / index",
                         y_range=[0, 1.02], integer_x=True))


def client_accuracy_final(rows: Rows, summary: Mapping[str, Any]) -> Figure | None:
    data = lists(rows, "client_accuracy")
    if not data:
        return None
    x, vals = data[-1]
    clients = [i for i, v in enumerate(vals) if v is not None]
    acc = [vals[i] for i in clients]
    traces: list[dict[str, Any]] = [bar(clients, acc, "ideal hardware, client's data mix", offsetgroup="ideal")]
    fleet = lists(rows, "accuracy_by_client_device")
    profiles = (summary.get("devices") or {}).get("client_profiles") if isinstance(summary.get("devices"),
                                                                                  Mapping) else None
    if fleet:
        _, dev = fleet[-1]
        names = list(profiles) if isinstance(profiles, list) and len(profiles) == len(dev) else ["device"] * len(dev)
        for j, name in enumerate(dict.fromkeys(names)):
            ids = [i for i, n in enumerate(names) if n == name and dev[i] is not None]
            traces.append(bar(ids, [dev[i] for i in ids], f"deployed on its {name} device (test set)",
                              marker={"color": COLORS[(j + 1) % len(COLORS)]}, offsetgroup="deployed"))
    return Figure("client_accuracy_final", f"Per-client accuracy at round {x:.0f}: the global model on each "
                  "client's data mix" + (", and deployed on each client's own simulated device (its mismatch and "
                                         "quantization; full test set)" if fleet else "") + ".",
                  figure("Accuracy per client (last evaluation)", traces, "client", "accuracy (fraction)",
                         y_range=[0, 1.02], barmode="group" if fleet else None))


PARTICIPATION = ("not sampled", "accepted", "accepted (attacker)", "rejected", "dropped", "late")
PARTICIPATION_COLORS = ("#eeeeee", "#2ca02c", "#ff7f0e", "#d62728", "#222222", "#9467bd")


def participation_codes(row: Mapping[str, Any], num_clients: int) -> list[int] | None:
    """The fate of every client in one round (index into :data:`PARTICIPATION`), from the row's
    ``participation`` and ``rejections``; ``None`` when the row has no ``participation``."""
    p = row.get("participation")
    if not isinstance(p, Mapping):
        return None
    codes = [0] * num_clients

    def ids(key: str) -> list[int]:
        v = p.get(key)
        return [c for c in v if isinstance(c, int) and 0 <= c < num_clients] if isinstance(v, list) else []

    bad = set(ids("malicious"))
    for c in ids("accepted"):
        codes[c] = 2 if c in bad else 1
    for rej in row.get("rejections") or []:
        c = rej.get("client") if isinstance(rej, Mapping) else None
        if isinstance(c, int) and 0 <= c < num_clients:
            codes[c] = 3
    for c in ids("dropped"):
        codes[c] = 4
    for c in ids("late"):
        if codes[c] == 0:
            codes[c] = 5
    return codes


def participation_map(rows: Rows, num_clients: int | None) -> Figure | None:
    if not num_clients:
        sampled = [c for r in rows if isinstance(r.get("participation"), Mapping)
                   for c in r["participation"].get("sampled") or [] if isinstance(c, int)]
        num_clients = max(sampled) + 1 if sampled else 0
    cols = [(x, participation_codes(r, num_clients)) for x, r in zip(rounds_of(rows), rows)]
    cols = [(x, c) for x, c in cols if c is not None]
    if not cols or not num_clients:
        return None
    z = [[c[k] for _, c in cols] for k in range(num_clients)]
    trace = heatmap(z, [x for x, _ in cols], list(range(num_clients)), "participation",
                    **categorical(PARTICIPATION, PARTICIPATION_COLORS), xgap=1, ygap=1)
    return Figure("participation", "Who took part in each round: a cell per client and round. Grey: not sampled; "
                  "green: its update entered the aggregate; orange: an attacker's update that entered it; red: "
                  "rejected at the trust boundary or by the defence; black: dropped out; purple: missed the "
                  "deadline.", figure("Participation map", [trace], "round", "client", integer_x=True,
                                      height=max(300, min(900, 18 * num_clients + 120))))


def outcomes(rows: Rows) -> Figure | None:
    """Per round: accepted, rejected, dropped and late clients (stacked: they add up to the sampled ones)
    and the attackers among the sampled."""
    keys = [("accepted", "accepted", "#2ca02c"), ("rejected", "rejected", "#d62728"),
            ("dropped", "dropped out", "#222222"), ("late", "late (missed the deadline)", "#9467bd")]
    xs = rounds_of(rows)
    if not any(num(r.get("rejected")) for r in rows) and not any(k in r for r in rows
                                                                 for k in ("dropped", "late", "malicious")):
        return None  # no faults, no attack and nothing rejected: every sampled client was accepted
    traces: list[dict[str, Any]] = []
    for key, name, color in keys:
        if any(key in r for r in rows):
            traces.append(bar(xs, [num(r.get(key)) or 0 for r in rows], name, marker={"color": color}))
    if any("malicious" in r for r in rows):
        traces.append(line(xs, [num(r.get("malicious")) or 0 for r in rows], "attackers among the sampled",
                           mode="markers", marker={"color": "#ff7f0e", "symbol": "x", "size": 9}))
    return Figure("outcomes", "Fate of the sampled clients per round (counts): accepted into the aggregate, "
                  "rejected (schema, norm bound, robust defence, privacy), dropped out, late; crosses count the "
                  "attackers among the sampled clients.",
                  figure("Rejected / attackers / dropped / late per round", traces, "round", "clients",
                         y_from_zero=True, barmode="stack", integer_x=True))


def devices(rows: Rows) -> Figure | None:
    """Deployed (mean over devices and per device profile) vs ideal accuracy per round."""
    ideal = series(rows, "accuracy_ideal")
    if not ideal[0]:
        return None
    traces = [line(*ideal, "ideal hardware", line={"dash": "dash", "color": "#000000"}),
              line(*series(rows, "accuracy"), "deployed, mean over all devices")]
    profiles: dict[str, tuple[list[float], list[float]]] = {}
    for x, r in zip(rounds_of(rows), rows):
        by = r.get("accuracy_by_device")
        if isinstance(by, Mapping):
            for name, v in by.items():
                if num(v) is not None:
                    profiles.setdefault(str(name), ([], []))[0].append(x)
                    profiles[str(name)][1].append(float(v))
    for name, (xs, ys) in profiles.items():
        traces.append(line(xs, ys, f"deployed on {name}"))
    return Figure("devices", "Deployed vs ideal accuracy per device profile: the same global model evaluated on "
                  "the test set through every client's simulated device (mismatch, quantization, lost steps), "
                  "averaged per profile, against ideal hardware. The gap is what the hardware costs.",
                  figure("Deployed vs ideal accuracy per device profile", traces, "round", "accuracy (fraction)",
                         y_range=[0, 1.02], integer_x=True))


def epsilon(rows: Rows, summary: Mapping[str, Any]) -> Figure | None:
    xs, ys = series(rows, "dp_epsilon")
    if not xs:
        return None
    privacy = summary.get("privacy") if isinstance(summary.get("privacy"), Mapping) else {}
    delta = privacy.get("delta")
    traces = [line(xs, ys, "epsilon")]
    clip = series(rows, "dp_clip")
    caption = ("Privacy budget spent so far: client-level (epsilon, delta)-DP of the whole run up to each round"
               + (f", delta = {delta:g}" if isinstance(delta, (int, float)) else "")
               + f" ({privacy.get('accountant', 'configured')} accountant). Lower is more private; it only grows.")
    if clip[0] and len(set(clip[1])) > 1:
        caption += " The clip norm adapts each round (see the metrics table, dp_clip)."
    return Figure("epsilon", caption, figure("Differential privacy: epsilon vs round", traces, "round", "epsilon",
                                             y_from_zero=True, integer_x=True))


def accuracy_vs_bytes(rows: Rows) -> Figure | None:
    if not any(num(r.get("bytes_up")) is not None for r in rows):
        return None
    xs, ys, total = [], [], 0.0
    for r in rows:
        total += num(r.get("bytes_up")) or 0.0
        a = num(r.get("accuracy"))
        if a is not None:
            xs.append(total / MIB)
            ys.append(a)
    if not xs:
        return None
    pos = [x for x in xs if x > 0]
    log_x = bool(pos) and max(pos) / min(pos) >= LOG_X_RATIO
    return Figure("accuracy_vs_bytes", "Accuracy against the cumulative uplink: the length of every serialized "
                  "client upload, summed over the rounds (MiB = 2^20 bytes)."
                  + (" Logarithmic x axis." if log_x else ""),
                  figure("Accuracy vs communication", [line(xs, ys, "accuracy")], "cumulative uplink (MiB)",
                         "accuracy (fraction)", y_range=[0, 1.02], x_log=log_x))


def accuracy_vs_energy(rows: Rows) -> Figure | None:
    pts = [(num(r.get("energy_j")), num(r.get("accuracy")), x) for x, r in zip(rounds_of(rows), rows)]
    pts = [(e * 1e9, a, x) for e, a, x in pts if e is not None and a is not None]
    if not pts:
        return None
    trace = line([p[0] for p in pts], [p[1] for p in pts], "evaluated rounds", mode="lines+markers",
                 text=[f"round {p[2]:.0f}" for p in pts])
    return Figure("accuracy_vs_energy", "Accuracy against the estimated energy of one inference of the global "
                  "model (nJ, from the counted ACs, MACs and spikes), one point per evaluated round; the x axis "
                  "starts at 0 so small changes look small.",
                  _from_zero_x(figure("Accuracy vs energy per inference", [trace], "energy per inference (nJ)",
                                      "accuracy (fraction)", y_range=[0, 1.02])))


def _from_zero_x(spec: dict[str, Any]) -> dict[str, Any]:
    spec["layout"]["xaxis"]["rangemode"] = "tozero"
    return spec


def energy_breakdown(rows: Rows, energy_model: Mapping[str, Any]) -> Figure | None:
    """Energy per inference per round split into ACs, MACs and spikes (stacked, from 0, nJ)."""
    e_ac, e_mac, e_spike = (num(energy_model.get(k)) for k in ("e_ac", "e_mac", "e_spike"))
    if e_ac is None or e_mac is None:
        return None
    data = [(x, num(r.get("acs")), num(r.get("macs")), num(r.get("spikes"))) for x, r in zip(rounds_of(rows), rows)]
    data = [d for d in data if d[1] is not None and d[2] is not None]
    if not data:
        return None
    xs = [d[0] for d in data]
    traces = [bar(xs, [e_mac * d[2] * 1e9 for d in data], f"MACs x {e_mac * 1e12:g} pJ"),
              bar(xs, [e_ac * d[1] * 1e9 for d in data], f"ACs x {e_ac * 1e12:g} pJ")]
    if e_spike:
        traces.append(bar(xs, [e_spike * (d[3] or 0) * 1e9 for d in data], f"spikes x {e_spike * 1e12:g} pJ"))
    last = data[-1]
    total = e_mac * last[2] + e_ac * last[1] + (e_spike or 0) * (last[3] or 0)
    share = e_mac * last[2] / total if total else 0.0
    return Figure("energy", f"Estimated energy of one inference, split by operation (nJ, stacked from 0): MACs "
                  f"(multiply-accumulates on non-binary inputs) and ACs (accumulates driven by spikes). At the last "
                  f"evaluation MACs are {share:.1%} of the total.",
                  figure("Energy per inference: MACs vs ACs", traces, "round", "energy per inference (nJ)",
                         y_from_zero=True, barmode="stack", integer_x=True))
