"""Metrics rows in a run directory: full in ``metrics.jsonl``, compact in memory and in ``checkpoint.pt``.

A round's row lists clients: who was sampled, accepted, dropped, late, malicious (``participation``), the rejected
ones with their reasons (``rejections``), and at an evaluation the global model's accuracy on every client's data
(``client_accuracy``; on a device fleet also ``accuracy_by_client_device``). At 100,000 clients with 10% sampled
that is about 0.24 MiB per round; kept in memory and re-encoded into every checkpoint, it made memory, checkpoint
size and checkpoint time grow with the round count. What a run needs of its earlier rows (the summary's totals,
the best accuracy, the wall time of earlier sessions, the continual accuracy matrix) is all in the other keys.

So :class:`~spikefed.experiment.runner.Run` keeps each row whole only until it is in ``metrics.jsonl``: the
checkpoint of round ``r`` holds the compact rows ``1 .. r-1`` (:func:`compact_row`: the row without
:data:`PER_CLIENT_KEYS`) and the whole row ``r``, which is appended to ``metrics.jsonl`` right after the
checkpoint. The file keeps every key of every row, as before.

On ``--resume`` (:func:`restore_rows`) the file is rebuilt from its own complete lines for rounds ``1 .. r-1``
(each must be the row the checkpoint holds in compact form: the same keys and values apart from
:data:`PER_CLIENT_KEYS`) and from the checkpoint's whole row ``r`` (the one a kill may have kept out of the
file). Lines of rounds after the checkpoint, a torn last line, a line that does not match its compact row, and
a line whose per-client lists fail their schema (:func:`_lists_ok`: ids, lengths against the row's counts,
finite accuracies in [0, 1]) are dropped. A round the file does not hold (the file deleted or edited) gets its
compact row, and the caller is told which rounds lost their per-client lists.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..io import json_safe

__all__ = ["PER_CLIENT_KEYS", "compact_row", "restore_rows", "row_line", "whole_rows"]

#: row keys that list clients (their length grows with the population or the sampled clients)
PER_CLIENT_KEYS = ("participation", "rejections", "client_accuracy", "accuracy_by_client_device")


def compact_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` without its per-client lists (:data:`PER_CLIENT_KEYS`); every other key as it is."""
    return {k: v for k, v in row.items() if k not in PER_CLIENT_KEYS}


def row_line(row: dict[str, Any]) -> str:
    """The row's line of ``metrics.jsonl`` (standard JSON, non-finite floats as null, newline-terminated)."""
    return json.dumps(json_safe(row)) + "\n"


def _normal(row: dict[str, Any]) -> Any:
    """The row as its JSON line reads back (tuples as lists, non-finite floats as null): rows compare so."""
    return json.loads(json.dumps(json_safe(row)))


def _file_rows(path: Path) -> dict[int, tuple[str, dict[str, Any]]]:
    """``round -> (line, row)`` of the complete JSON-object lines of ``path`` (first line of a round wins)."""
    out: dict[int, tuple[str, dict[str, Any]]] = {}
    if not path.is_file():
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # a torn append
            try:
                row = json.loads(line)
            except ValueError:
                continue
            rnd = row.get("round") if isinstance(row, dict) else None
            if isinstance(rnd, int) and not isinstance(rnd, bool) and rnd not in out:
                out[rnd] = (line, row)
    return out


def _match(found: dict[int, tuple[str, dict[str, Any]]], row: dict[str, Any], last: bool
           ) -> tuple[str, dict[str, Any]] | None:
    """The file's line and row for the checkpoint's ``row`` (``None``: use the checkpoint's own)."""
    rnd = row.get("round") if isinstance(row, dict) else None
    if last or not isinstance(row, dict) or any(k in row for k in PER_CLIENT_KEYS) or not isinstance(rnd, int):
        return None  # a whole row (the last one; or a checkpoint written before rows were compacted)
    hit = found.get(rnd)
    if hit is not None and _normal(compact_row(hit[1])) == _normal(row) and _lists_ok(hit[1]):
        return hit
    return None


def _finite(value: Any) -> bool:
    """Whether a JSON value holds only finite numbers (``json`` reads ``NaN``, ``Infinity`` and ``1e400``)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in value)


def _accuracies(value: Any) -> bool:
    """``None`` or a list of accuracies in [0, 1] (``None`` for a client without one)."""
    return value is None or isinstance(value, list) and all(
        a is None or isinstance(a, (int, float)) and not isinstance(a, bool) and 0.0 <= a <= 1.0 for a in value)


def _lists_ok(row: dict[str, Any]) -> bool:
    """The file row's per-client lists against their schema and the row's own counts (checked by the checkpoint):
    client ids are non-negative ints, ``participation.sampled`` / ``accepted`` as long as ``clients`` /
    ``accepted``, one rejection ``{client, reason, ...}`` per ``rejected``, accuracies finite in [0, 1] or null.
    A file row that fails is not used (its round is restored compact)."""
    if not _finite([row.get(k) for k in PER_CLIENT_KEYS]):
        return False
    part = row.get("participation")
    if part is not None:
        if not isinstance(part, dict) or not all(_ids(v) for v in part.values()):
            return False
        for key, count in (("sampled", row.get("clients")), ("accepted", row.get("accepted"))):
            if isinstance(count, int) and key in part and len(part[key]) != count:
                return False
    rej = row.get("rejections")
    if rej is not None and not (isinstance(rej, list) and len(rej) == row.get("rejected") and all(
            isinstance(r, dict) and _ids([r.get("client")]) and isinstance(r.get("reason"), str) for r in rej)):
        return False
    return _accuracies(row.get("client_accuracy")) and _accuracies(row.get("accuracy_by_client_device"))


def whole_rows(path: Path, rows: list[dict[str, Any]], last_whole: bool = True) -> list[dict[str, Any]]:
    """``rows`` (a checkpoint's: ``last_whole``; a finished :class:`Run`'s, all compact: ``last_whole=False``)
    with their per-client lists taken from the matching rows of the ``metrics.jsonl`` at ``path`` (as JSON reads
    them back; the other values stay those of ``rows``, in the file's key order); a row the file does not hold
    stays as it is."""
    found = _file_rows(path)
    out = []
    for i, row in enumerate(rows):
        hit = _match(found, row, last_whole and i == len(rows) - 1)
        out.append(row if hit is None else {k: hit[1][k] if k in PER_CLIENT_KEYS else row[k] for k in hit[1]})
    return out


def restore_rows(path: Path, rows: list[dict[str, Any]]) -> tuple[str, list[int]]:
    """The text of ``metrics.jsonl`` for the checkpoint's ``rows`` (compact rows ``1 .. r-1``, whole row ``r``),
    taking each earlier round's whole row from the file at ``path`` where it matches; and the rounds whose
    per-client lists were not found there (written compact)."""
    found = _file_rows(path)
    lines: list[str] = []
    missing: list[int] = []
    for i, row in enumerate(rows):
        hit = _match(found, row, i == len(rows) - 1)
        lines.append(hit[0] if hit is not None else row_line(row))
        if hit is None and i < len(rows) - 1 and not any(k in row for k in PER_CLIENT_KEYS):
            rnd = row.get("round")  # a dict: the checkpoint's structure was checked before a resume
            missing.append(int(rnd) if isinstance(rnd, int) else i + 1)
    return "".join(lines), missing
