"""Rows stay whole in metrics.jsonl and compact in memory and in the checkpoint; a resume rebuilds the file with
every row whole, byte for byte what an uninterrupted run writes (apart from wall-clock keys)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import spikefed
from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.metrics_rows import PER_CLIENT_KEYS, compact_row, restore_rows, whole_rows
from spikefed.experiment.runner import Run
from spikefed.federated.checkpoint import read_checkpoint

WALL_CLOCK = {"seconds", "elapsed_seconds", "session"}
SMALL = ["partition.num_clients=12", "partition.min_size=5", "model.hidden=[8]", "local.num_steps=4",
         "local.epochs=1", "federation.fraction=0.5", "federation.eval_every=2", "faults.dropout=0.2"]


def _settings(rounds: int) -> RunSettings:
    return build_settings(RunSettings, None, [*SMALL, f"federation.rounds={rounds}"])


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 5-round run, and the checkpoint sizes it wrote after each round."""
    out = tmp_path_factory.mktemp("rows") / "ref"
    run = Run(_settings(5), out)
    sizes = []
    while not run.done:
        run.step()
        sizes.append(run.checkpoint.stat().st_size)
        rows = run.sim.state.metrics
        assert all(not (set(r) & set(PER_CLIENT_KEYS)) for r in rows)  # memory: compact rows only
    run.finish()
    (out / "sizes.json").write_text(json.dumps(sizes))
    return out


def test_file_rows_whole_checkpoint_rows_compact_but_the_last(reference: Path) -> None:
    rows = _lines(reference / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:  # the per-client lists, against the row's own counts
        p = r["participation"]
        assert len(p["sampled"]) == r["clients"] == 6 and len(p["accepted"]) == r["accepted"]
        assert len(p["dropped"]) == r["dropped"]
        assert (r["client_accuracy"] is None) == (r["round"] % 2 == 1 and r["round"] != 5)
        if r["client_accuracy"] is not None:
            assert len(r["client_accuracy"]) == 12
    ckpt = read_checkpoint(reference / "checkpoint.pt")["metrics"]
    assert [set(r) & set(PER_CLIENT_KEYS) for r in ckpt[:-1]] == [set()] * 4
    assert "participation" in ckpt[-1] and "client_accuracy" in ckpt[-1]
    assert json.loads(json.dumps(ckpt[-1])) == rows[-1]
    assert [json.loads(json.dumps(r)) for r in ckpt[:-1]] == [compact_row(r) for r in rows[:-1]]


def test_checkpoint_grows_by_compact_rows_only(reference: Path) -> None:
    """From round 2 to 4 the checkpoint grows by the two compact rows (plus number formatting), not by the
    per-client lists of those rounds."""
    sizes = json.loads((reference / "sizes.json").read_text())
    rows = _lines(reference / "metrics.jsonl")
    compact = sum(len(json.dumps(compact_row(r), separators=(",", ":"))) for r in rows[1:3])
    lists = sum(len(json.dumps({k: r[k] for k in PER_CLIENT_KEYS if k in r}, separators=(",", ":")))
                for r in rows[1:3])
    growth = sizes[3] - sizes[1]
    assert growth <= compact + 400 < compact + lists


@pytest.mark.parametrize("kill", ["before_append", "torn_append", "after_append"])
def test_resume_rebuilds_whole_rows(reference: Path, tmp_path: Path, kill: str) -> None:
    out = tmp_path / "run"
    run = Run(_settings(5), out)
    for _ in range(3):
        run.step()
    run.sim.state.client_state.close()
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    if kill != "after_append":  # the process died after the checkpoint, before (or while) appending row 3
        path.write_text("".join(lines[:2]) + ('{"round": 3, "accur' if kill == "torn_append" else ""))
    resumed = Run(_settings(5), out, resume=True)
    assert [r["round"] for r in _lines(path)] == [1, 2, 3]
    while not resumed.done:
        resumed.step()
    resumed.finish()
    assert _strip(_lines(path)) == _strip(_lines(reference / "metrics.jsonl"))
    loaded = spikefed.load_run(out)
    assert _strip(json.loads(json.dumps(loaded.metrics))) == _strip(_lines(path))


def test_rows_missing_from_the_file_are_rewritten_compact_with_a_warning(reference: Path, tmp_path: Path) -> None:
    ckpt = read_checkpoint(reference / "checkpoint.pt")["metrics"]
    rows = _lines(reference / "metrics.jsonl")
    damaged = tmp_path / "metrics.jsonl"
    edited = dict(rows[1], accuracy=0.123456)  # round 2 no longer matches its compact row
    damaged.write_text("".join(json.dumps(r) + "\n" for r in [rows[0], edited, rows[3]]))
    text, missing = restore_rows(damaged, ckpt)
    assert missing == [2, 3]
    back = [json.loads(line) for line in text.splitlines()]
    assert back[0] == rows[0] and back[3] == rows[3] and back[4] == rows[4]
    assert back[1] == compact_row(rows[1]) and back[2] == compact_row(rows[2])
    merged = whole_rows(damaged, ckpt)
    assert "participation" in merged[0] and "participation" not in merged[1] and merged[4] is ckpt[4]
    with pytest.warns(UserWarning, match=r"round\(s\) 2, 3 were not in the file"):
        out = tmp_path / "copy"
        out.mkdir()
        for name in ("checkpoint.pt", "config.yaml"):
            (out / name).write_bytes((reference / name).read_bytes())
        (out / "metrics.jsonl").write_text(damaged.read_text())
        Run(_settings(5), out, resume=True).sim.state.client_state.close()



MALFORMED = {  # round 2's line of metrics.jsonl, damaged: (name, function of the whole line -> damaged text)
    "nan_accuracy": lambda r: json.dumps({**r, "client_accuracy": [float("nan"), *r["client_accuracy"][1:]]}),
    "huge_accuracy": lambda r: json.dumps(r).replace(json.dumps(r["client_accuracy"]),
                                                      "[1e400" + json.dumps(r["client_accuracy"])[1:]),
    "accuracy_above_one": lambda r: json.dumps({**r, "client_accuracy": [1.5, *r["client_accuracy"][1:]]}),
    "accuracy_not_a_list": lambda r: json.dumps({**r, "client_accuracy": "0.5"}),
    "string_client_id": lambda r: json.dumps({**r, "participation": {**r["participation"], "sampled": [
        "0", *r["participation"]["sampled"][1:]]}}),
    "bool_client_id": lambda r: json.dumps({**r, "participation": {**r["participation"], "accepted": [
        True] * len(r["participation"]["accepted"])}}),
    "negative_client_id": lambda r: json.dumps({**r, "participation": {**r["participation"], "sampled": [
        -1, *r["participation"]["sampled"][1:]]}}),
    "sampled_too_short": lambda r: json.dumps({**r, "participation": {**r["participation"], "sampled":
                                                                      r["participation"]["sampled"][:-1]}}),
    "participation_a_list": lambda r: json.dumps({**r, "participation": [1, 2]}),
    "stray_rejection": lambda r: json.dumps({**r, "rejections": [{"client": 0, "reason": "x"}]}),
    "truncated_line": lambda r: json.dumps(r)[:-20],
    "not_an_object": lambda r: "[2, 3]",
    "flipped_byte": lambda r: json.dumps(r).replace('"participation"', '"participatioN"'),
}


@pytest.mark.parametrize("damage", sorted(MALFORMED))
def test_malformed_file_lines_restore_compact_never_crash(reference: Path, tmp_path: Path, damage: str) -> None:
    """A line of metrics.jsonl whose per-client lists break their schema (non-finite or out-of-range accuracy,
    ids that are not non-negative ints, lengths against the row's own counts, wrong types, a torn or non-object
    line, a renamed key) is not used: its round comes back compact and is reported missing; the other rows stay
    whole, byte for byte the file's."""
    ckpt = read_checkpoint(reference / "checkpoint.pt")["metrics"]
    rows = _lines(reference / "metrics.jsonl")
    assert rows[1]["client_accuracy"] is not None and "rejections" not in rows[1]  # round 2 was evaluated
    damaged = tmp_path / "metrics.jsonl"
    bad = MALFORMED[damage](rows[1]).replace("\n", " ")
    damaged.write_text("".join(json.dumps(r) + "\n" for r in rows[:1]) + bad + "\n"
                       + "".join(json.dumps(r) + "\n" for r in rows[2:]))
    text, missing = restore_rows(damaged, ckpt)
    assert missing == [2]
    back = [json.loads(line) for line in text.splitlines()]
    assert back[1] == compact_row(rows[1])
    assert back[:1] + back[2:] == rows[:1] + rows[2:]
    merged = whole_rows(damaged, ckpt)
    assert "participation" not in merged[1] and "participation" in merged[0] and "participation" in merged[2]
