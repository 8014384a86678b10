"""The end-of-run summary in words and units, shared by the CLI table and the report's overview.

:func:`digest` turns a ``summary.json`` mapping (or the summary derived for an interrupted run) into
``(label, value)`` rows: accuracy deployed vs ideal, privacy budget, client fates, traffic in MiB (binary:
1 MiB = 2^20 bytes, the exact byte count beside it), energy, heterogeneity, wall time across resumes.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

MIB = 1024 * 1024


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def fmt(v: Any, spec: str) -> str:
    """``format(v, spec)`` for a finite number, ``-`` otherwise."""
    x = _num(v)
    return format(x, spec) if x is not None else "-"


def mib(n: Any) -> str:
    """Bytes as binary mebibytes with the exact count: ``2.20 MiB (2,307,810 B)``."""
    x = _num(n)
    if x is None:
        return "-"
    return f"{x / MIB:.2f} MiB ({int(x):,} B)"


def duration(seconds: Any) -> str:
    """``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    s = _num(seconds)
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def epsilon_text(privacy: Mapping[str, Any]) -> str:
    eps = _num(privacy.get("epsilon"))
    if eps is None:
        return "infinite (no noise: no DP guarantee)"
    delta = _num(privacy.get("delta"))
    acct = privacy.get("accountant")
    return (f"{eps:.3f}" + (f" at delta {delta:g}" if delta is not None else "")
            + f" after {privacy.get('rounds_composed', '?')} rounds" + (f" ({acct})" if acct else ""))


def digest(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(label, value)`` rows of a run summary, every value with its unit."""
    rows: list[tuple[str, str]] = []
    dev = summary.get("devices") if isinstance(summary.get("devices"), Mapping) else None
    if summary.get("status") == "interrupted":
        planned = summary.get("rounds_planned")
        rows.append(("status", f"interrupted after round {summary.get('rounds')}"
                     + (f" of {planned}" if planned else "") + " (no summary.json; from metrics.jsonl)"))
    if dev is not None:
        rows.append(("final accuracy, deployed (mean over devices)", fmt(summary.get("final_accuracy"), ".4f")))
        rows.append(("final accuracy, ideal hardware", fmt(dev.get("final_accuracy_ideal"), ".4f")))
        by = dev.get("final_accuracy_by_device")
        if isinstance(by, Mapping) and by:
            rows.append(("deployed accuracy per device profile",
                         ", ".join(f"{k} {fmt(v, '.4f')}" for k, v in by.items())))
    else:
        rows.append(("final accuracy", fmt(summary.get("final_accuracy"), ".4f")))
    rows.append(("best accuracy", fmt(summary.get("best_accuracy"), ".4f")))
    rows.append(("rounds", str(summary.get("rounds", "-"))))
    privacy = summary.get("privacy") if isinstance(summary.get("privacy"), Mapping) else None
    if privacy is not None and privacy.get("dp"):
        rows.append(("privacy: epsilon", epsilon_text(privacy)))
    if privacy is not None and privacy.get("secure_aggregation"):
        rows.append(("secure aggregation", f"on (threshold {privacy.get('secagg_threshold', '?')} survivors)"))
    fates = [(k, summary.get(k)) for k in ("sampled_clients", "dropped", "late",
                                           "malicious_sampled", "rejected_updates") if summary.get(k) is not None]
    if fates:
        names = {"sampled_clients": "sampled", "dropped": "dropped", "late": "late",
                 "malicious_sampled": "attackers sampled", "rejected_updates": "rejected"}
        rows.append(("client updates over all rounds", ", ".join(f"{names[k]} {v}" for k, v in fates)))
    rows.append(("uplink (client -> server)", mib(summary.get("total_bytes_up"))))
    rows.append(("downlink (server -> client)", mib(summary.get("total_bytes_down"))))
    energy = _num(summary.get("energy_per_inference_j"))
    rows.append(("energy per inference", f"{energy * 1e9:.1f} nJ" if energy is not None else "-"))
    rows.append(("synaptic ops per inference", fmt(summary.get("synops_per_inference"), ",.0f")))
    het = summary.get("heterogeneity") if isinstance(summary.get("heterogeneity"), Mapping) else {}
    if het:
        rows.append(("label skew: mean JSD (0 = IID)", fmt(het.get("mean_jsd"), ".3f")))
        rows.append(("feature skew: mean Hellinger", fmt(het.get("mean_hellinger"), ".3f")))
    rows.extend(fairness_rows(summary))
    cont = summary.get("continual")
    if isinstance(cont, Mapping):
        rows.append(("continual: ACC / BWT / forgetting", " / ".join(
            fmt(cont.get(k), ".4f") for k in ("average_accuracy", "backward_transfer", "average_forgetting"))))
    sessions = summary.get("sessions")
    wall = duration(summary.get("wall_seconds"))
    if isinstance(sessions, int) and sessions > 1:
        wall += f" over {sessions} sessions (resumed {sessions - 1}x)"
    rows.append(("wall time", wall))
    rows.append(("time in rounds", duration(summary.get("train_seconds"))))
    return rows


def fairness_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The fairness of the final global model across clients (mean / worst 10 % / Jain index of the per-client
    accuracy), when the summary has it."""
    fair = summary.get("fairness")
    if not isinstance(fair, Mapping) or _num(fair.get("client_accuracy_mean")) is None:
        return []
    return [("per-client accuracy: mean / worst 10% / Jain index",
             " / ".join(fmt(fair.get(k), ".4f") for k in ("client_accuracy_mean", "client_accuracy_worst10",
                                                           "client_accuracy_jain")))]
