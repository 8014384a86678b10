"""Reading a run directory for the report: ``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``partition.json``.

A finished run has all four. An interrupted run (killed, Ctrl-C, SIGTERM, a time limit) has no ``summary.json``:
:func:`load_run` then derives the summary from the metrics rows (:func:`summary_from_rows`) and the partition file,
and marks it ``status: interrupted``. When the checkpoint holds more rows than ``metrics.jsonl`` (a process killed
between writing the checkpoint and appending the row) the checkpoint's rows the file lacks are added (the
checkpoint keeps earlier rows without their per-client lists: :mod:`spikefed.experiment.metrics_rows`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
PARTITION_FILE = "partition.json"
CHECKPOINT_FILE = "checkpoint.pt"
REPORT_FILE = "report.html"


@dataclass
class RunData:
    """A run directory, parsed. ``config`` is ``{}`` when ``config.yaml`` is absent; ``complete`` is False for an
    interrupted run (its ``summary`` derived from the rows); ``activity`` holds the trained model's spiking activity
    (:mod:`.activity`) when it could be measured."""

    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    complete: bool = True
    activity: dict[str, Any] | None = None


def num(value: Any) -> float | None:
    """A finite float, or ``None`` for null / NaN / inf / bools / anything non-numeric."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _load_mapping(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"{what} not readable: {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: line {exc.lineno}: malformed JSON: {exc.msg}") from None
    if data is None and path.suffix in (".yaml", ".yml"):
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``; ``ValueError`` naming the file and line of a malformed one. A last line
    without its newline that does not parse is a row being written right now (a live run): it is skipped."""
    if not path.is_file():
        raise FileNotFoundError(f"{METRICS_FILE} not found: {path}")
    rows: list[dict[str, Any]] = []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == len(lines):  # no trailing newline yet: a partial write, not a corrupt file
                break
            raise ValueError(f"{path}: line {lineno}: malformed JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
        rows.append(obj)
    return rows


def _checkpoint_rows(path: Path) -> list[dict[str, Any]] | None:
    """The metrics rows inside a verified checkpoint, or ``None`` (no checkpoint / unreadable: not fatal here)."""
    if not path.is_file():
        return None
    from ...federated.checkpoint import CheckpointError, read_checkpoint

    try:
        rows = read_checkpoint(path).get("metrics")
    except (CheckpointError, ValueError):
        return None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else None


def summary_from_rows(rows: Sequence[Mapping[str, Any]], partition: Mapping[str, Any] | None = None,
                      config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``summary.json`` would say, from the metrics rows alone (an interrupted run): accuracies, rounds,
    bytes, summed round seconds, counts of rejected / dropped / late clients, the last epsilon, the last
    evaluation's activity and energy, and the partition's heterogeneity and label counts."""
    evaluated = [r for r in rows if num(r.get("accuracy")) is not None]
    accs = [float(r["accuracy"]) for r in evaluated]
    last = evaluated[-1] if evaluated else {}
    fed = (config or {}).get("federation") if isinstance((config or {}).get("federation"), Mapping) else {}
    out: dict[str, Any] = {
        "status": "interrupted",
        "final_accuracy": accs[-1] if accs else None,
        "best_accuracy": max(accs) if accs else None,
        "final_loss": last.get("loss"),
        "rounds": int(num(rows[-1].get("round")) or len(rows)) if rows else 0,
        "rounds_planned": fed.get("rounds") if isinstance(fed, Mapping) else None,
        "total_bytes_up": sum(int(num(r.get("bytes_up")) or 0) for r in rows),
        "total_bytes_down": sum(int(num(r.get("bytes_down")) or 0) for r in rows),
        "train_seconds": sum(num(r.get("seconds")) or 0.0 for r in rows),
        "wall_seconds": num(rows[-1].get("elapsed_seconds")) if rows else None,
        "spikes_per_inference": last.get("spikes"),
        "synops_per_inference": last.get("synops"),
        "energy_per_inference_j": last.get("energy_j"),
        "rejected_updates": sum(int(num(r.get("rejected")) or 0) for r in rows),
        "sampled_clients": sum(int(num(r.get("clients")) or 0) for r in rows),
    }
    for key in ("dropped", "late"):
        if any(key in r for r in rows):
            out[key] = sum(int(num(r.get(key)) or 0) for r in rows)
    if any("malicious" in r for r in rows):
        out["malicious_sampled"] = sum(int(num(r.get("malicious")) or 0) for r in rows)
    eps = [r.get("dp_epsilon") for r in rows if "dp_epsilon" in r]
    if eps:
        priv = (config or {}).get("privacy")
        delta = priv.get("delta") if isinstance(priv, Mapping) else None
        out["privacy"] = {"dp": True, "epsilon": eps[-1], "rounds_composed": len(eps),
                          **({"delta": delta} if delta is not None else {})}
    if "accuracy_ideal" in last:
        out["devices"] = {"final_accuracy_ideal": last.get("accuracy_ideal"),
                          "final_accuracy_by_device": last.get("accuracy_by_device")}
    if partition:
        het = partition.get("heterogeneity")
        if isinstance(het, Mapping):
            out["heterogeneity"] = {k: het[k] for k in ("mean_jsd", "max_jsd", "mean_hellinger", "max_hellinger",
                                                        "jsd", "hellinger", "sizes") if k in het}
        if "label_distribution" in partition:
            out["label_distribution"] = partition["label_distribution"]
    return out


def load_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Read a run directory. ``metrics.jsonl`` is required; ``summary.json`` is optional (missing: an interrupted
    run, whose summary is derived from the rows); ``config.yaml`` and ``partition.json`` are optional.

    Raises :class:`FileNotFoundError` naming ``metrics.jsonl`` when it is missing (or the directory does not
    exist), and :class:`ValueError` naming the file (and line, for ``metrics.jsonl``) of a malformed one.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run directory not found: {root}")
    metrics = read_metrics(root / METRICS_FILE)
    config = _load_mapping(root / CONFIG_FILE, CONFIG_FILE) if (root / CONFIG_FILE).is_file() else {}
    if (root / SUMMARY_FILE).is_file():
        return RunData(config, metrics, _load_mapping(root / SUMMARY_FILE, SUMMARY_FILE), root, complete=True)
    kept = _checkpoint_rows(root / CHECKPOINT_FILE)
    if kept is not None and len(kept) > len(metrics):  # the file's whole rows, then the checkpoint's newer ones
        metrics = [*metrics, *kept[len(metrics):]]  # (earlier checkpoint rows are compact: metrics_rows)
    partition = _load_mapping(root / PARTITION_FILE, PARTITION_FILE) if (root / PARTITION_FILE).is_file() else None
    return RunData(config, metrics, summary_from_rows(metrics, partition, config), root, complete=False)
