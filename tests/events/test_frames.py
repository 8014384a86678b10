"""Binning events into frames: bins, counts, binary mode, downsampling, batches."""

from __future__ import annotations

import numpy as np
import pytest

from spikefed.events.aer import EventBatch, make_events
from spikefed.events.frames import (
    batch_bin_counts,
    batch_to_frames,
    bin_counts,
    bin_index,
    downsampled_shape,
    events_to_frames,
)


def random_stream(rng: np.random.Generator, n: int, shape: tuple[int, int], t_max: int) -> np.ndarray:
    t = np.sort(rng.integers(0, t_max, size=n))
    return make_events(t, rng.integers(0, shape[0] * shape[1], size=n), rng.integers(0, 2, size=n))


def test_bin_index_by_hand() -> None:
    t = np.array([0, 9, 10, 29, 99, 100, -1])
    assert bin_index(t, 10, 0, 100).tolist() == [0, 0, 1, 2, 9, -1, -1]
    assert bin_index(np.array([5, 6, 7]), 3, 5, 8).tolist() == [0, 1, 2]


@pytest.mark.parametrize("seed", range(4))
def test_bin_counts_sum_to_event_counts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (7, 9)
    ev = random_stream(rng, int(rng.integers(0, 500)), shape, 1000)
    bins = int(rng.integers(1, 20))
    counts = bin_counts(ev, bins, t_end=1000)
    assert counts.sum() == len(ev)
    frames = events_to_frames(ev, shape, bins, t_end=1000, mode="count")
    assert frames.shape == (bins, 2, 7, 9)
    np.testing.assert_array_equal(frames.sum(axis=(1, 2, 3)), counts)
    # channel 0 holds ON (p = 1), channel 1 OFF
    assert frames[:, 0].sum() == (ev["p"] == 1).sum()
    binary = events_to_frames(ev, shape, bins, t_end=1000, mode="binary")
    np.testing.assert_array_equal(binary, (frames > 0).astype(np.float32))
    merged = events_to_frames(ev, shape, bins, t_end=1000, polarity=False)
    np.testing.assert_array_equal(merged[:, 0], frames.sum(axis=1))


def test_window_drops_outside_events() -> None:
    ev = make_events([0, 5, 10, 15], [0, 1, 2, 3])
    assert bin_counts(ev, 2, t_start=5, t_end=15).tolist() == [1, 1]
    assert bin_counts(ev, 4).sum() == 4  # default window: up to the last timestamp


def test_downsampling_is_sum_pooling() -> None:
    rng = np.random.default_rng(1)
    shape = (9, 8)
    ev = random_stream(rng, 400, shape, 100)
    full = events_to_frames(ev, shape, 4, t_end=100)
    pooled = events_to_frames(ev, shape, 4, t_end=100, downsample=2)
    assert downsampled_shape(shape, 2) == (5, 4) and pooled.shape == (4, 2, 5, 4)
    padded = np.zeros((4, 2, 10, 8), dtype=np.float32)
    padded[:, :, :9] = full
    expected = padded.reshape(4, 2, 5, 2, 4, 2).sum(axis=(3, 5))
    np.testing.assert_array_equal(pooled, expected)


def test_batch_frames_match_per_sample_frames() -> None:
    rng = np.random.default_rng(2)
    shape = (6, 6)
    streams = [random_stream(rng, int(n), shape, 500) for n in rng.integers(0, 80, size=9)]
    batch = EventBatch.from_list(streams, shape, polarity=True, time_unit=1e-6, duration=500)
    for mode in ("count", "binary"):
        frames = batch_to_frames(batch, 5, mode=mode, downsample=2, block=4)
        assert frames.shape == (9, 5, 2, 3, 3)
        for i, s in enumerate(streams):
            np.testing.assert_array_equal(frames[i], events_to_frames(s, shape, 5, t_end=500, mode=mode,
                                                                      downsample=2))
    counts = batch_bin_counts(batch, 5)
    np.testing.assert_array_equal(counts.sum(axis=1), batch.counts())
    np.testing.assert_array_equal(counts, batch_to_frames(batch, 5).sum(axis=(2, 3, 4)))
