"""HTML run report: reading a run directory (finished or interrupted), the figures of every feature against values
computed here by hand, the interactive (plotly) and static pages, escaping, errors, and ``compare``."""

from __future__ import annotations

import base64
import json
import re
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from spikefed.experiment.digest import digest, mib
from spikefed.experiment.report import load_run, render_html, summary_from_rows, write_report
from spikefed.experiment.report import figures as rf
from spikefed.experiment.report import figures_model as mf
from spikefed.experiment.report.compare import compare_runs, render_compare
from spikefed.experiment.report.spec import percentile
from spikefed.experiment.report.static import render_png

PNG = b"\x89PNG\r\n\x1a\n"
IMG_RE = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
LABELS = [[30, 5, 0], [0, 25, 10], [12, 12, 11], [1, 2, 40]]
ENERGY = {"energy": {"e_ac": 0.9e-12, "e_mac": 4.6e-12, "e_spike": 0.0}}
CONFUSION = [[8, 2, 0], [1, 6, 3], [0, 0, 10]]  # rows: true class, columns: predicted


def _rows(rounds: int = 4) -> list[dict[str, Any]]:
    rows = []
    for r in range(1, rounds + 1):
        evaluated = r % 2 == 0 or r == rounds
        rows.append({
            "round": r, "clients": 3, "accepted": 2, "rejected": 1 if r == 2 else 0,
            "rejections": [{"client": 1, "round": r, "reason": "norm"}] if r == 2 else [],
            "dropped": 1 if r != 2 else 0, "late": 0, "malicious": 1,
            "participation": {"sampled": [0, 1, 3] if r != 2 else [1, 2, 3], "accepted": [0, 3] if r != 2 else [2, 3],
                              "dropped": [1] if r != 2 else [], "late": [], "malicious": [3]},
            "accuracy": 0.5 + 0.1 * r if evaluated else None, "loss": 1.5 - 0.2 * r if evaluated else None,
            "accuracy_ideal": 0.6 + 0.1 * r if evaluated else None,
            "accuracy_by_device": {"digital4": 0.4 + 0.1 * r, "analog20": 0.55 + 0.1 * r} if evaluated else None,
            "accuracy_by_client_device": [0.4, 0.5, 0.6, 0.7] if evaluated else None,
            "client_accuracy": [0.9, 0.7, None, 0.5] if evaluated else None,
            "confusion": CONFUSION if evaluated else None,
            "bytes_up": 1000 * 10 ** r, "bytes_down": 2000, "spikes": 100.0 + r, "acs": 4000.0 + r,
            "macs": 9000.0 - r, "energy_j": 1e-9 * r, "seconds": 0.25 * r, "elapsed_seconds": 0.3 * r, "session": 1,
            "firing_rate": [0.1 * r, 0.05 * r] if evaluated else None, "train_loss": 2.0 - 0.3 * r,
            "dp_epsilon": 0.5 * r, "dp_clip": 1.0,
        })
    return rows


def _summary() -> dict[str, Any]:
    return {"final_accuracy": 0.9, "best_accuracy": 0.93, "rounds": 4, "total_bytes_up": 11110000,
            "total_bytes_down": 8000, "wall_seconds": 75.0, "train_seconds": 2.5, "sessions": 2,
            "heterogeneity": {"mean_jsd": 0.2468, "mean_hellinger": 0.3579, "jsd": [0.1, 0.2, 0.3, 0.4],
                              "sizes": [35, 35, 35, 43]},
            "label_distribution": LABELS, "rejected_updates": 1, "dropped": 3, "late": 0,
            "malicious_sampled": 4, "sampled_clients": 12,
            "privacy": {"dp": True, "epsilon": 2.0, "delta": 1e-5, "rounds_composed": 4, "accountant": "rdp"},
            "devices": {"final_accuracy_ideal": 1.0, "final_accuracy_by_device": {"digital4": 0.8, "analog20": 0.95},
                        "client_profiles": ["digital4", "analog20", "digital4", "analog20"]}}


def _make_run(tmp_path: Path, rows: list[dict[str, Any]] | None = None, summary: dict[str, Any] | None = None,
              config: dict[str, Any] | None = None, name: str = "run") -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config if config is not None else {"seed": 0, **ENERGY}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (rows if rows is not None
                                                                             else _rows())))
    if summary is not False:
        (run / "summary.json").write_text(json.dumps(summary if summary is not None else _summary()))
    return run


# ------------------------------------------------------------------------------------------------ reading


def test_interrupted_run_summary_is_derived_from_the_rows(tmp_path: Path) -> None:
    rows = _rows(5)
    run = _make_run(tmp_path, rows, summary=False, config={"federation": {"rounds": 9}})
    (run / "partition.json").write_text(json.dumps({"label_distribution": LABELS,
                                                    "heterogeneity": {"mean_jsd": 0.25, "sizes": [1, 2, 3, 4]}}))
    data = load_run(run)
    s = data.summary
    assert not data.complete and s["status"] == "interrupted" and s["rounds_planned"] == 9 and s["rounds"] == 5
    assert s["final_accuracy"] == pytest.approx(0.5 + 0.1 * 5) and s["best_accuracy"] == pytest.approx(1.0)
    assert s["total_bytes_up"] == sum(1000 * 10 ** r for r in range(1, 6))
    assert s["rejected_updates"] == 1 and s["dropped"] == 4 and s["malicious_sampled"] == 5
    assert s["privacy"]["epsilon"] == 2.5 and s["wall_seconds"] == pytest.approx(1.5)
    assert s["label_distribution"] == LABELS and s["heterogeneity"]["mean_jsd"] == 0.25
    assert summary_from_rows([])["final_accuracy"] is None
    html = render_html(data, interactive=False)
    assert "did not finish" in html and "interrupted after round 5 of 9" in html


def test_interrupted_run_takes_the_checkpoints_rows_when_it_has_more(tmp_path: Path) -> None:
    from spikefed.federated.checkpoint import write_checkpoint

    rows = _rows(4)
    run = _make_run(tmp_path, rows[:3], summary=False)
    write_checkpoint(run / "checkpoint.pt", {"version": 2, "round": 4, "metrics": rows})
    assert [r["round"] for r in load_run(run).metrics] == [1, 2, 3, 4]
    (run / "checkpoint.pt").write_bytes(b"garbage")  # unreadable checkpoint: the rows of metrics.jsonl stand
    assert [r["round"] for r in load_run(run).metrics] == [1, 2, 3]


def test_errors_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        load_run(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        load_run(tmp_path / "empty")
    run = _make_run(tmp_path)
    (run / "metrics.jsonl").write_text('{"round": 1}\n{"round": 2,,}\n{"round": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2"):
        load_run(run)
    (run / "metrics.jsonl").write_text('{"round": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2: expected a JSON object"):
        load_run(run)
    (run / "metrics.jsonl").write_text('{"round": 1}\n{"round": 2, "accu')  # a row being written: not an error
    assert [r["round"] for r in load_run(run).metrics] == [1]
    (run / "summary.json").write_text("[1]")
    with pytest.raises(ValueError, match="summary.json"):
        load_run(run)


# ------------------------------------------------------------------------------------------------ figures


def test_percentile_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 20):
        v = rng.random(n).tolist()
        for q in (0, 10, 50, 90, 100):
            assert percentile(v, q) == pytest.approx(float(np.percentile(v, q)))


def test_client_accuracy_distribution_per_round() -> None:
    fig = rf.client_accuracy_distribution(_rows())
    traces = {t["name"]: t for t in fig.spec["data"]}
    assert traces["min (worst client)"]["x"] == [2, 4] and traces["min (worst client)"]["y"] == [0.5, 0.5]
    assert traces["max"]["y"] == [0.9, 0.9] and traces["mean"]["y"] == [pytest.approx(0.7)] * 2
    assert traces["10th percentile"]["y"][0] == pytest.approx(0.5 + 0.2 * 0.2)  # of [0.5, 0.7, 0.9]


def test_participation_codes_from_the_row() -> None:
    codes = rf.participation_codes(_rows()[0], 5)
    # client 0 accepted, 1 dropped, 2 not sampled, 3 an attacker whose update was accepted, 4 not sampled
    assert [rf.PARTICIPATION[c] for c in codes] == ["accepted", "dropped", "not sampled", "accepted (attacker)",
                                                    "not sampled"]
    codes = rf.participation_codes(_rows()[1], 4)
    assert [rf.PARTICIPATION[c] for c in codes] == ["not sampled", "rejected", "accepted", "accepted (attacker)"]
    fig = rf.participation_map(_rows(), 4)
    z = fig.spec["data"][0]["z"]
    assert len(z) == 4 and len(z[0]) == 4 and z[1] == [4, 3, 4, 4]


def test_outcomes_stack_to_the_counts_and_epsilon_follows_the_rows() -> None:
    rows = _rows()
    fig = rf.outcomes(rows)
    bars = {t["name"]: t["y"] for t in fig.spec["data"] if t["type"] == "bar"}
    assert bars["accepted"] == [2] * 4 and bars["rejected"] == [0, 1, 0, 0] and bars["dropped out"] == [1, 0, 1, 1]
    assert fig.spec["layout"]["barmode"] == "stack" and fig.spec["layout"]["yaxis"]["rangemode"] == "tozero"
    eps = rf.epsilon(rows, _summary())
    assert eps.spec["data"][0]["y"] == [0.5, 1.0, 1.5, 2.0] and "delta = 1e-05" in eps.caption
    # a run without faults, attacks or rejections has no outcomes figure, one without DP no epsilon figure
    plain = [{"round": 1, "accepted": 3, "rejected": 0, "accuracy": 0.5}]
    assert rf.outcomes(plain) is None and rf.epsilon(plain, {}) is None and rf.devices(plain) is None


def test_devices_figure_has_ideal_mean_and_every_profile() -> None:
    fig = rf.devices(_rows())
    names = [t["name"] for t in fig.spec["data"]]
    assert names == ["ideal hardware", "deployed, mean over all devices", "deployed on digital4",
                     "deployed on analog20"]
    assert fig.spec["data"][2]["y"] == [pytest.approx(0.6), pytest.approx(0.8)]
    final = rf.client_accuracy_final(_rows(), _summary())
    by_name = {t["name"]: t for t in final.spec["data"]}
    assert by_name["deployed on its digital4 device (test set)"]["x"] == [0, 2]
    assert by_name["deployed on its analog20 device (test set)"]["y"] == [0.5, 0.7]
    assert by_name["ideal hardware, client's data mix"]["x"] == [0, 1, 3]  # client 2 has no value


def test_energy_breakdown_is_stacked_from_zero_in_nanojoules() -> None:
    rows = _rows()
    fig = rf.energy_breakdown(rows, {"e_ac": 0.9e-12, "e_mac": 4.6e-12, "e_spike": 0.0})
    mac, ac = fig.spec["data"]
    for r, m, a in zip(rows, mac["y"], ac["y"]):
        assert m == pytest.approx(4.6e-12 * r["macs"] * 1e9) and a == pytest.approx(0.9e-12 * r["acs"] * 1e9)
    share = 4.6e-12 * rows[-1]["macs"] / (4.6e-12 * rows[-1]["macs"] + 0.9e-12 * rows[-1]["acs"])
    assert f"{share:.1%}" in fig.caption
    assert fig.spec["layout"]["barmode"] == "stack" and fig.spec["layout"]["yaxis"]["rangemode"] == "tozero"
    vs = rf.accuracy_vs_energy(rows)
    assert vs.spec["layout"]["xaxis"]["rangemode"] == "tozero" and vs.spec["data"][0]["x"] == [2.0, 4.0]


def test_accuracy_vs_bytes_is_cumulative_mebibytes() -> None:
    fig = rf.accuracy_vs_bytes(_rows())
    cum = np.cumsum([1000 * 10 ** r for r in range(1, 5)]) / 2 ** 20
    assert fig.spec["data"][0]["x"] == [pytest.approx(cum[1]), pytest.approx(cum[3])]
    assert "MiB" in fig.spec["layout"]["xaxis"]["title"]["text"]


def test_rate_histogram_bins() -> None:
    counts = mf.rate_histogram([0.0, 0.05, 0.0500001, 1.0, 0.5, 0.0, 0.97])
    expected = [0] * 21
    expected[0] = 2  # exactly 0: dead
    expected[1] += 1  # (0, 0.05]
    expected[2] += 1  # (0.05, 0.10]
    expected[20] += 2  # (0.95, 1]: 0.97 and 1.0
    expected[10] += 1  # (0.45, 0.50]
    assert counts == expected


def test_confusion_figure_takes_the_last_evaluation() -> None:
    fig = mf.confusion(_rows())
    assert fig.spec["data"][0]["z"] == [[float(v) for v in r] for r in CONFUSION]
    assert "24 of 30 on the diagonal" in fig.caption and "round 4" in fig.spec["layout"]["title"]["text"]


def test_model_activity_matches_evaluate_and_finds_dead_neurons() -> None:
    from spikefed.experiment.report.activity import model_activity
    from spikefed.hardware.energy import EnergyModel
    from spikefed.hardware.metrics import measure
    from spikefed.snn.models import SpikingMLP
    from spikefed.snn.train import TrainConfig, encode_inputs, evaluate

    torch.manual_seed(0)
    model = SpikingMLP([12, 16, 4])
    with torch.no_grad():
        model.linears[0].weight[3].fill_(-5.0)  # hidden neuron 3 can never reach threshold: dead
        model.linears[0].bias[3] = -5.0
    cfg = TrainConfig(num_steps=6, encoder="direct")
    x = torch.rand(32, 12) * 2
    y = torch.randint(0, 4, (32,))
    act = model_activity(model, encode_inputs(x, cfg, torch.Generator().manual_seed(0)), EnergyModel())
    ref = evaluate(model, x, y, cfg)
    assert [la["neurons"] for la in act["layers"]] == [16, 4]
    for la, rate in zip(act["layers"], ref.firing_rate):
        assert sum(la["rates"]) / la["neurons"] == pytest.approx(rate)
    assert act["layers"][0]["rates"][3] == 0.0 and act["layers"][0]["dead"] >= 1
    assert act["layers"][-1]["name"].endswith("(output)")
    out = model(encode_inputs(x[:1], cfg, torch.Generator().manual_seed(0)))
    assert len(act["raster"][0]["times"]) == int((out.hidden[0][:, 0] != 0).sum())
    m = measure(model, encode_inputs(x, cfg, torch.Generator().manual_seed(0)), EnergyModel()).per_inference()
    fig = mf.energy_per_layer(act)
    assert sum(sum(t["y"]) for t in fig.spec["data"]) == pytest.approx(m["energy_j"] * 1e9)
    assert fig.spec["layout"]["yaxis"]["rangemode"] == "tozero"


def test_evaluate_confusion_matches_sklearn_and_client_accuracy_matches_sample_weighting() -> None:
    from sklearn.metrics import confusion_matrix

    from spikefed.federated.simulation import client_accuracy, padded_confusion
    from spikefed.snn.models import SpikingMLP
    from spikefed.snn.train import TrainConfig, encode_inputs, evaluate, predict

    torch.manual_seed(1)
    model = SpikingMLP([10, 12, 5])
    cfg = TrainConfig(num_steps=5, encoder="direct")
    x, y = torch.rand(60, 10) * 3, torch.randint(0, 4, (60,))  # class 4 has no test sample
    res = evaluate(model, x, y, cfg, batch_size=16)
    with torch.no_grad():
        pred = predict(model(encode_inputs(x, cfg, torch.Generator().manual_seed(0))).output, cfg)
    m = padded_confusion(res.confusion, 5)
    assert m.tolist() == confusion_matrix(y.numpy(), pred.numpy(), labels=range(5)).tolist()
    counts = np.array([[3, 0, 1, 0, 9], [0, 0, 0, 0, 4], [1, 1, 1, 1, 0]])
    got = client_accuracy(m, counts)
    # reference: weight every test sample of class c by the client's share of c over the test samples of c
    yy, correct = y.numpy(), (pred == y).numpy()
    for k, row in enumerate(counts):
        w = np.array([row[c] / (yy == c).sum() if (yy == c).sum() else 0.0 for c in yy], dtype=float)
        if w.sum() == 0:
            assert np.isnan(got[k])  # client 1 holds only class 4, absent from the test set
        else:
            assert got[k] == pytest.approx(float((w * correct).sum() / w.sum()))


# ------------------------------------------------------------------------------------------------- pages


def test_interactive_page_embeds_plotly_once_and_every_feature(tmp_path: Path) -> None:
    pytest.importorskip("plotly")
    run = _make_run(tmp_path, config={"seed": 0, "note": "</script><b>x</b>", **ENERGY})
    path = write_report(run, measure=False)
    page = path.read_text()
    assert page.count("<script>") == 2  # plotly.js and the loader (the JSON island is a typed script)
    assert page.count("Plotly.newPlot") == 1 and len(page) > 1_000_000
    outside_js = re.sub(r"<script>.*?</script>", "", page, count=1, flags=re.S)  # plotly.js's own strings aside
    assert not re.search(r'(src|href)="(https?:)?//', outside_js) and "<link" not in page  # nothing fetched
    assert "<script src" not in page
    assert "&lt;/script&gt;&lt;b&gt;" in page
    specs = json.loads(re.search(r'<script id="figure-specs" type="application/json">(.*?)</script>', page,
                                 re.S).group(1).replace("<\\/", "</"))
    for fid in ("accuracy", "loss", "seconds", "firing_rate", "client_accuracy", "client_accuracy_final", "labels",
                "participation", "outcomes", "devices", "epsilon", "accuracy_vs_bytes", "accuracy_vs_energy",
                "energy", "confusion"):
        assert fid in specs and f'id="fig-{fid}"' in page, fid
    for sid in ("learning", "clients", "participation", "devices", "privacy", "efficiency", "model"):
        assert f'<h2 id="{sid}">' in page


def test_static_page_has_pngs_and_no_script(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    page = write_report(run, interactive=False, measure=False).read_text()
    images = [base64.b64decode(m, validate=True) for m in IMG_RE.findall(page)]
    assert len(images) == 15 and all(i.startswith(PNG) for i in images)  # every figure but the model's 3
    assert "<script" not in page
    assert "MiB" in page and "2.000 at delta 1e-05 after 4 rounds (rdp)" in page


def test_static_renderer_leaves_pyplot_alone() -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    for fig in (rf.participation_map(_rows(), 4), rf.outcomes(_rows()), mf.confusion(_rows()),
                rf.client_accuracy_final(_rows(), _summary())):
        assert render_png(fig.spec).startswith(PNG)
    assert plt.get_fignums() == before


def test_minimal_rows_render(tmp_path: Path) -> None:
    run = _make_run(tmp_path, rows=[{"round": 1}], summary={})
    page = write_report(run, interactive=False, measure=False).read_text()
    assert "Overview" in page and "<img" not in page


def test_digest_units() -> None:
    rows = dict(digest(_summary()))
    assert rows["uplink (client -> server)"] == f"{11110000 / 2 ** 20:.2f} MiB (11,110,000 B)"
    assert rows["final accuracy, ideal hardware"] == "1.0000"
    assert rows["deployed accuracy per device profile"] == "digital4 0.8000, analog20 0.9500"
    assert rows["client updates over all rounds"] == ("sampled 12, dropped 3, late 0, attackers sampled 4, "
                                                      "rejected 1")
    assert rows["wall time"] == "1 min 15 s over 2 sessions (resumed 1x)"
    assert mib(1048576) == "1.00 MiB (1,048,576 B)"


def test_compare_mean_and_sample_std(tmp_path: Path) -> None:
    finals = [0.81, 0.86, 0.9]
    dirs = []
    for i, f in enumerate(finals):
        dirs.append(_make_run(tmp_path, summary={**_summary(), "final_accuracy": f}, name=f"seed{i}"))
    cmp = compare_runs(dirs)
    st = cmp.stats("final_accuracy")
    assert st["mean"] == pytest.approx(statistics.mean(finals)) and st["std"] == pytest.approx(statistics.stdev(finals))
    assert st["min"] == 0.81 and st["max"] == 0.9 and cmp.names == ["seed0", "seed1", "seed2"]
    assert cmp.stats("uplink_mib")["mean"] == pytest.approx(11110000 / 2 ** 20)
    page = render_compare(cmp, interactive=False)
    assert f"{statistics.mean(finals):.4f} ± {statistics.stdev(finals):.4f}" in page and page.count("<img") == 1
    with pytest.raises(FileNotFoundError, match="absent"):
        compare_runs([dirs[0], tmp_path / "absent"])


def test_without_plotly_the_report_falls_back_to_static_images(tmp_path: Path, monkeypatch) -> None:
    import spikefed.experiment.report.html as page_module

    monkeypatch.setattr(page_module, "plotly_js", lambda: None)  # as if plotly were not installed
    run = _make_run(tmp_path)
    page = write_report(run, measure=False).read_text()
    assert "<script" not in page and len(IMG_RE.findall(page)) == 15 and "static images" in page
    with pytest.raises(ImportError, match=r"spikefed\[report\]"):
        write_report(run, interactive=True, measure=False)


def test_a_checkpoint_that_does_not_fit_the_config_still_renders_with_the_reason(tmp_path: Path) -> None:
    from spikefed.federated.checkpoint import write_checkpoint

    run = _make_run(tmp_path, config={"seed": 0, "model": {"hidden": [8]}, "local": {"num_steps": 3}, **ENERGY})
    write_checkpoint(run / "checkpoint.pt", {"version": 2, "round": 4, "metrics": _rows(),
                                             "global_params": {"w": torch.zeros(2)}})
    page = write_report(run, interactive=False).read_text()
    assert "Model activity not measured" in page and "checkpoint.pt" in page and "parameter names differ" in page
    assert 'id="fig-accuracy"' in page
