"""Event data in the trainer and the federated engine: the events encoder, sequence splits, config, a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spikefed.data.digits import DatasetSplit, load_digits_split
from spikefed.data.heterogeneity import REPORT_SETTINGS, client_heterogeneity
from spikefed.data.partition import partition
from spikefed.events.datasets import load_event_digits_split, split_events
from spikefed.events.synth import Saccades, saccade_events
from spikefed.experiment.config import ConfigError, RunSettings, TrainSettings, build_settings
from spikefed.snn import encoding as enc
from spikefed.snn.train import TrainConfig, encode_inputs


@pytest.fixture(scope="session")  # session: kept when the longest-first order leaves the module
def small() -> DatasetSplit:
    return load_event_digits_split(num_bins=4, downsample=2, seed=1)


def test_events_encoder_is_a_transposed_view() -> None:
    x = torch.rand(3, 5, 7)
    out = enc.events(x, 5)
    assert out.shape == (5, 3, 7) and out.data_ptr() == x.data_ptr()
    assert torch.equal(out, x.transpose(0, 1))
    assert torch.equal(enc.encode("events", x, 5), out)
    with pytest.raises(ValueError, match=r"num_steps=4 must equal the number of time bins .* x.shape\[1\] = 5"):
        enc.encode("events", x, 4)
    cfg = TrainConfig(encoder="events", num_steps=5)
    assert encode_inputs(x, cfg, None).data_ptr() == x.data_ptr()
    with pytest.raises(ValueError, match="num_steps"):
        encode_inputs(x, TrainConfig(encoder="events", num_steps=6), None)
    with pytest.raises(ValueError, match="unknown encoder"):
        TrainConfig(encoder="delta")


def test_event_digits_split(small: DatasetSplit) -> None:
    assert small.sequence and small.name == "event_digits"
    assert small.feature_shape == (4, 2 * 10 * 10)
    assert small.num_steps == 4 and small.step_features == 200
    assert small.x_train.shape == (1437, 4, 200) and small.x_test.shape == (360, 4, 200)
    assert set(torch.unique(small.x_train).tolist()) <= {0.0, 1.0}
    # the same stratified split as the static digits with the same seed
    static = load_digits_split(seed=1)
    assert torch.equal(small.y_test, static.y_test) and torch.equal(small.y_train, static.y_train)
    assert not load_digits_split().sequence and load_digits_split().step_features == 64


def test_sequence_split_validation() -> None:
    x = torch.zeros(4, 3, 2)
    y = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="sequence data needs feature_shape"):
        DatasetSplit(x[:, 0], y, x[:, 0], y, 2, (2,), "t", sequence=True)
    split = DatasetSplit(x, y, x, y, 2, (3, 2), "t", sequence=True)
    assert split.num_features == 6 and split.step_features == 2


def test_heterogeneity_and_partition_accept_sequence_features(small: DatasetSplit, monkeypatch) -> None:
    from spikefed.data import heterogeneity

    x = small.x_train[:300].numpy()  # [300, 4, 200], flattened to [300, 800]
    y = small.y_train[:300].numpy()
    parts = partition(y, 5, "iid", np.random.default_rng(0))
    exact = client_heterogeneity(x, y, parts, 10, **REPORT_SETTINGS)
    # large sets take the randomized principal axes: force that path here, it must agree with the SVD
    monkeypatch.setattr(heterogeneity, "EXACT_PCA_MAX", 100)
    report = client_heterogeneity(x, y, parts, 10, **REPORT_SETTINGS)
    assert report["hellinger"] == pytest.approx(exact["hellinger"], abs=1e-4)  # approximate axes: ~1e-5
    # the exact path is the fit on the top principal axes computed by hand
    centred = x.reshape(300, -1).astype(np.float64)
    centred -= centred.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:REPORT_SETTINGS["pca_dims"]].T
    expected = client_heterogeneity(projected, y, parts, 10, covariance=REPORT_SETTINGS["covariance"],
                                    eps=REPORT_SETTINGS["eps"])
    assert exact["hellinger"] == pytest.approx(expected["hellinger"], rel=1e-9)
    assert 0 <= report["mean_hellinger"] <= 1


def test_split_events_from_any_batch() -> None:
    images = np.random.default_rng(0).random((20, 8, 8))
    batch = saccade_events(images, border=1, saccades=Saccades(amplitude=1.0, saccade_ticks=3000, steps=3))
    labels = np.arange(20) % 2
    split = split_events(batch, labels, name="toy", test_size=0.5, num_bins=3, mode="count")
    assert split.x_train.shape == (10, 3, 2 * 10 * 10) and split.num_classes == 2
    assert float(split.x_train.sum() + split.x_test.sum()) == len(batch.events)


def test_cohort_engine_encodes_event_batches() -> None:
    from spikefed.federated.cohort import _encode_cohort

    x = torch.rand(2, 3, 4, 5)  # [K, B, T, F]
    cfg = TrainConfig(encoder="events", num_steps=4)
    out = _encode_cohort(x, torch.ones(2, 3, dtype=torch.bool), cfg, [torch.Generator(), torch.Generator()])
    assert out.shape == (4, 2, 3, 5) and torch.equal(out, x.permute(2, 0, 1, 3))
    with pytest.raises(ValueError, match="num_steps"):
        _encode_cohort(x, torch.ones(2, 3, dtype=torch.bool), TrainConfig(encoder="events", num_steps=3),
                       [torch.Generator(), torch.Generator()])


def test_config_sets_the_events_encoder() -> None:
    s = build_settings(RunSettings, None, ["data.name=event_digits", "data.bins=7"])
    assert s.local.encoder == "events" and s.local.num_steps == 7
    assert s.local.epochs == 4  # the federated local defaults still apply
    t = build_settings(TrainSettings, None, ["data.name=event_mnist5k"])
    assert t.train.encoder == "events" and t.train.num_steps == 10
    same = build_settings(RunSettings, None, ["data.name=event_digits", "local.num_steps=10",
                                              "local.encoder=events"])
    assert same.local.num_steps == 10
    static = build_settings(RunSettings, None, [])
    assert static.local.encoder == "direct" and static.local.num_steps == 25


@pytest.mark.parametrize("overrides,needle", [
    (["data.name=event_digits", "local.encoder=rate"], "local.encoder must be 'events'"),
    (["data.name=event_digits", "local.num_steps=5"], "local.num_steps must equal it"),
    (["local.encoder=events"], "local.encoder=events needs event data"),
    (["data.name=event_digits", "data.bins=0"], "data.bins"),
    (["data.name=nmnist"], "set data.root=DIR"),
    (["data.name=shd", "partition.method=subject", "data.root=x"], "does not record"),
])
def test_config_errors(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        build_settings(RunSettings, None, overrides)
    assert "LocalTrainSettings" not in str(info.value)  # a one-line message, not a dump of the section


def test_config_file_is_valid() -> None:
    path = Path(__file__).resolve().parents[2] / "configs" / "event_digits.yaml"
    s = build_settings(RunSettings, path, [])
    assert s.data.name == "event_digits" and s.local.encoder == "events" and s.local.num_steps == s.data.bins


@pytest.mark.slow
def test_federated_run_on_event_digits_beats_chance(tmp_path: Path) -> None:
    from spikefed.experiment.runner import run_experiment

    settings = build_settings(RunSettings, None, [
        "data.name=event_digits", "data.bins=6", "data.downsample=2", "partition.method=iid",
        "partition.num_clients=4", "model.hidden=[64]", "local.epochs=1", "federation.rounds=3",
        "federation.fraction=1.0"])
    summary = run_experiment(settings, tmp_path / "run")
    assert summary["rounds"] == 3
    assert summary["final_accuracy"] > 0.5  # chance is 0.1
    assert (tmp_path / "run" / "summary.json").is_file()
