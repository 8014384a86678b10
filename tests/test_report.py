"""HTML run report: loading, error messages, self-contained output, embedded PNGs, escaping, null tolerance."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from spikefed.experiment.report import (
    RunData,
    load_run,
    plot_accuracy_loss,
    plot_accuracy_vs_bytes,
    plot_energy,
    plot_firing_rates,
    plot_label_heatmap,
    render_html,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG_RE = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
LABELS = [[30, 5, 0], [0, 25, 10], [12, 12, 11], [1, 2, 40]]


def _metrics(rounds: int = 4) -> list[dict[str, Any]]:
    rows = []
    for r in range(1, rounds + 1):
        rows.append({
            "round": r,
            "accuracy": 0.5 + 0.1 * r if r % 2 == 0 or r == rounds else None,  # evaluated every other round
            "loss": 1.5 - 0.2 * r if r % 2 == 0 or r == rounds else None,
            "clients": 4,
            "bytes_up": 1000 * 10 ** r,
            "bytes_down": 2000,
            "spikes": 100.0 + r,
            "synops": 5000.0 + r,
            "energy_j": 1e-6 * r,
            "seconds": 0.25,
            "firing_rate": [0.1 * r, 0.05 * r],
            "train_loss": 2.0 - 0.3 * r,
            "rejected": 0,
        })
    return rows


def _summary() -> dict[str, Any]:
    return {
        "final_accuracy": 0.912345,
        "best_accuracy": 0.93,
        "rounds": 4,
        "total_bytes_up": 11110000,
        "total_bytes_down": 8000,
        "wall_seconds": 1.75,
        "algorithm": "fedavg",
        "heterogeneity": {
            "mean_jsd": 0.2468,
            "max_jsd": 0.4,
            "mean_hellinger": 0.3579,
            "max_hellinger": 0.5,
            "jsd": [0.1, 0.2, 0.3, 0.4],
            "hellinger": [0.2, 0.3, 0.4, 0.5],
            "sizes": [35, 35, 35, 43],
        },
        "label_distribution": LABELS,
    }


def _make_run(tmp_path: Path, metrics: list[dict[str, Any]] | None = None, summary: dict[str, Any] | None = None,
              config: dict[str, Any] | None = None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    cfg = config if config is not None else {"seed": 0, "federated": {"rounds": 4, "clients": 4}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    rows = metrics if metrics is not None else _metrics()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (run / "summary.json").write_text(json.dumps(summary if summary is not None else _summary()),
                                      encoding="utf-8")
    return run


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m, validate=True) for m in IMG_RE.findall(text)]


def test_load_run_parses_all_three_files(tmp_path: Path) -> None:
    run = load_run(_make_run(tmp_path))
    assert isinstance(run, RunData)
    assert run.config["federated"]["clients"] == 4
    assert [m["round"] for m in run.metrics] == [1, 2, 3, 4]
    assert run.summary["final_accuracy"] == pytest.approx(0.912345)


def test_report_is_self_contained_with_all_plots(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path)
    out = write_report(run_dir, title="My run")
    assert out == run_dir / "report.html" and out.is_file()
    text = out.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text
    assert text.count("data:image/png;base64,") == 5
    images = _images(text)
    assert len(images) == 5
    assert all(img.startswith(PNG_SIGNATURE) for img in images)
    assert "<title>My run</title>" in text
    # summary numbers, heterogeneity means, non-numeric scalars and the config all appear
    assert "0.9123" in text  # final accuracy, formatted
    assert "0.9300" in text and "11110000" in text and "fedavg" in text
    assert "0.2468" in text and "0.3579" in text
    assert "<details>" in text and "<pre>" in text and "clients: 4" in text
    # no temp file left behind by the atomic write
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "metrics.jsonl", "report.html",
                                                         "summary.json"]


def test_report_overwrites_previous(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path, metrics=[{"round": 1}], summary={"rounds": 1})
    (run_dir / "report.html").write_text("stale", encoding="utf-8")
    write_report(run_dir)
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "stale" not in text and "spikefed report: run" in text


@pytest.mark.parametrize(
    ("nulled", "expected"),
    [
        (("energy_j",), 4),  # only the energy plot goes
        (("firing_rate",), 4),  # only the firing-rate plot goes
        (("accuracy",), 4),  # accuracy-vs-bytes goes; loss panels keep the first plot alive
        (("accuracy", "loss", "train_loss"), 3),  # both accuracy plots go
    ],
)
def test_nulls_drop_only_the_affected_plot(tmp_path: Path, nulled: tuple[str, ...], expected: int) -> None:
    rows = _metrics()
    for row in rows:
        for key in nulled:
            row[key] = None
    if "firing_rate" in nulled:  # missing entirely, not just null
        for row in rows:
            del row["firing_rate"]
    text = write_report(_make_run(tmp_path, metrics=rows)).read_text(encoding="utf-8")
    images = _images(text)
    assert len(images) == expected
    assert all(img.startswith(PNG_SIGNATURE) for img in images)


def test_sparse_summary_and_minimal_metrics_do_not_crash(tmp_path: Path) -> None:
    rows = [{"round": 1}, {"round": 2, "accuracy": float("nan"), "firing_rate": None, "energy_j": None}]
    run_dir = _make_run(tmp_path, metrics=rows, summary={"rounds": 2, "heterogeneity": None})
    text = write_report(run_dir).read_text(encoding="utf-8")
    assert "data:image/png;base64," not in text
    assert "No plottable data" in text


def test_missing_summary_raises_file_not_found(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path)
    (run_dir / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="summary.json"):
        load_run(run_dir)
    with pytest.raises(FileNotFoundError, match="summary.json"):
        write_report(run_dir)
    assert not (run_dir / "report.html").exists()


def test_missing_metrics_raises_file_not_found(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path)
    (run_dir / "metrics.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        load_run(run_dir)


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path)
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    lines[2] = '{"round": 3, "accuracy": '  # truncated write on line 3
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"metrics\.jsonl.*line 3\b"):
        load_run(run_dir)


def test_non_object_json_line_is_rejected(tmp_path: Path) -> None:
    run_dir = _make_run(tmp_path)
    with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as fh:
        fh.write("\n[1, 2]\n")  # blank line 5 is skipped, the list on line 6 is not a row
    with pytest.raises(ValueError, match=r"line 6\b"):
        load_run(run_dir)


def test_text_is_html_escaped(tmp_path: Path) -> None:
    evil = "<script>alert('x')</script>"
    summary = {"rounds": 1, "note": evil}
    metrics = [{"round": 1, "status": "<em>ok</em>"}]
    config = {"name": evil, "nested": {"tag": "<b>&"}}
    run_dir = _make_run(tmp_path, metrics=metrics, summary=summary, config=config)
    text = write_report(run_dir, title="<i>title</i>").read_text(encoding="utf-8")
    assert "<script" not in text and "<b>" not in text and "<i>" not in text and "<em>" not in text
    assert "&lt;em&gt;ok&lt;/em&gt;" in text
    assert "&lt;script&gt;" in text
    assert "&lt;b&gt;&amp;" in text
    assert "&lt;i&gt;title&lt;/i&gt;" in text


def test_label_heatmap_png_dimensions() -> None:
    import matplotlib.image as mpimg

    png = plot_label_heatmap(LABELS)
    assert png is not None and png.startswith(PNG_SIGNATURE)
    img = mpimg.imread(io.BytesIO(png), format="png")
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    height, width = img.shape[:2]
    assert width > height > 100  # landscape figure, not a degenerate image
    # more clients -> taller figure
    tall = mpimg.imread(io.BytesIO(plot_label_heatmap([[1, 2, 3]] * 20)), format="png")
    assert tall.shape[0] > height


def test_plot_functions_return_none_without_data() -> None:
    empty: list[dict[str, Any]] = [{"round": 1, "accuracy": None, "loss": None}]
    assert plot_accuracy_loss(empty) is None
    assert plot_accuracy_vs_bytes(empty) is None
    assert plot_firing_rates(empty) is None
    assert plot_energy(empty) is None
    assert plot_label_heatmap(None) is None
    assert plot_label_heatmap([]) is None
    # ragged label matrix is padded, not rejected
    assert plot_label_heatmap([[1, 2, 3], [4]]).startswith(PNG_SIGNATURE)


def test_plots_are_pure_and_leave_pyplot_alone() -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    rows = _metrics()
    first = plot_accuracy_vs_bytes(rows)
    assert first is not None and first == plot_accuracy_vs_bytes(rows)  # deterministic bytes
    assert plot_accuracy_loss(rows).startswith(PNG_SIGNATURE)
    assert matplotlib.get_backend() == backend
    assert rows == _metrics()  # inputs not mutated


def test_render_html_without_run_dir() -> None:
    text = render_html(RunData(metrics=_metrics(), summary=_summary()))
    assert text.startswith("<!DOCTYPE html>")
    assert len(_images(text)) == 5
