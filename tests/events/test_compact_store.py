"""The compact frame store of event runs: binned counts held as uint8 (widened for counts above 255, never
clipped) give exactly the run of the float32 store, on both engines, with natural and sensor-skewed partitions."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from spikefed.events.aer import EVENT_DTYPE, EventBatch
from spikefed.events.sources import batch_source
from spikefed.events.stream import FrameSpec, cached_frames, load_compact
from spikefed.experiment.config import RunSettings
from spikefed.experiment.runner import build_spec_and_report
from spikefed.federated.simulation import Simulation

sys.path.insert(0, str(Path(__file__).parent))  # the byte-by-byte writers (importlib import mode)
from official_formats import write_nmnist_set  # noqa: E402


def _pile_up(count: int) -> np.ndarray:
    """``count`` ON events on pixel 5 in the first bin, one OFF event on pixel 0 in the last."""
    ev = np.zeros(count + 1, dtype=EVENT_DTYPE)
    ev["t"][:count] = np.arange(count) % 10
    ev["addr"][:count] = 5
    ev["p"][:count] = 1
    ev[-1] = (99, 0, 0)
    return ev


def _source(counts: list[int]) -> Any:
    batch = EventBatch.from_list([_pile_up(c) for c in counts], (3, 4), polarity=True, time_unit=1e-6, duration=100)
    return batch_source(batch, np.zeros(len(counts), dtype=np.int64), name="pile", num_classes=1)


def _want(counts: list[int], bins: int, binary: bool) -> np.ndarray:
    # channel 0 = ON, 1 = OFF (frames [T, 2 * H * W]); counts written out by hand
    out = np.zeros((len(counts), bins, 2 * 12), dtype=np.int64)
    for i, c in enumerate(counts):
        out[i, 0, 5] = min(c, 1) if binary else c
        out[i, bins - 1, 12 + 0] = 1
    return out


@pytest.mark.parametrize("counts, dtype", [([3, 255], np.uint8), ([3, 256, 40], np.int16),
                                           ([40000, 2], np.int32)])
def test_counts_widen_the_store_and_are_never_clipped(counts: list[int], dtype: type, tmp_path: Path) -> None:
    src = _source(counts)
    spec = FrameSpec(bins=4, mode="count")
    got = load_compact(src, spec, block=1)  # the wide sample may come after uint8 blocks were filled
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, _want(counts, 4, binary=False))
    keyed = type(src)(src.name, src.shape, src.polarity, src.time_unit, src.duration, src.labels, 1,
                      src.events, {}, key="pile-files")
    cached = cached_frames(keyed, spec, tmp_path)
    assert cached.dtype == dtype
    np.testing.assert_array_equal(cached, _want(counts, 4, binary=False))
    binary = load_compact(src, FrameSpec(bins=4, mode="binary"))
    assert binary.dtype == np.uint8
    np.testing.assert_array_equal(binary, _want(counts, 4, binary=True))


@pytest.fixture(scope="module")
def nmnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nmnist")
    write_nmnist_set(root, 96, 32)
    return root


def _simulate(settings: dict[str, Any], store: str) -> tuple[Simulation, list[dict[str, Any]], dict[str, Any]]:
    spec, report = build_spec_and_report(RunSettings.model_validate(copy.deepcopy(settings)), frame_store=store)
    sim = Simulation(spec)
    rows = [sim.run_round() for _ in range(spec.rounds)]
    return sim, rows, report


@pytest.mark.parametrize("engine, method, mode", [("cohort", "iid", "count"), ("sequential", "iid", "binary"),
                                                  ("cohort", "feature", "binary")])
def test_compact_store_runs_exactly_as_the_float_store(nmnist_root: Path, engine: str, method: str,
                                                       mode: str) -> None:
    settings = {"data": {"name": "nmnist", "root": str(nmnist_root), "bins": 5, "frame_mode": mode},
                "model": {"hidden": [24]}, "local": {"epochs": 1, "batch_size": 16},
                "partition": {"num_clients": 3, "method": method},
                "federation": {"rounds": 2, "fraction": 1.0, "engine": engine}}
    ref, ref_rows, ref_report = _simulate(settings, "float")
    got, got_rows, got_report = _simulate(settings, "compact")
    assert ref.spec.data.x_train.dtype == torch.float32 and got.spec.data.x_train.dtype == torch.uint8
    assert got.spec.data.x_test.dtype == torch.uint8 and got.clients[0].x.dtype == torch.uint8
    assert torch.equal(got.spec.data.x_train.float(), ref.spec.data.x_train)  # the same counts
    for name, value in ref.state.global_params.items():
        assert torch.equal(got.state.global_params[name], value), name
    for a, b in zip(ref_rows, got_rows):
        assert a["accuracy"] == b["accuracy"] and a["loss"] == b["loss"] and a["synops"] == b["synops"]
    assert got.heterogeneity["hellinger"] == ref.heterogeneity["hellinger"]
    assert got_report == ref_report
