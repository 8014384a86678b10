"""The DVS pixel model and the saccade recordings: no motion no events, edges, thresholds, refractory period."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spikefed.events.synth import (
    Saccades,
    SensorModel,
    render,
    resize_matrix,
    saccade_events,
    saccade_path,
    shift_matrix,
    video_to_events,
)

EPS = 0.1


def intensity(log_level: np.ndarray | float) -> np.ndarray:
    """The intensity whose log(EPS + I) is ``log_level``."""
    return np.exp(np.asarray(log_level, dtype=np.float64)) - EPS


def test_render_matrices() -> None:
    np.testing.assert_allclose(resize_matrix(8, 16).sum(axis=1), 1.0)
    np.testing.assert_allclose(resize_matrix(5, 5), np.eye(5))
    np.testing.assert_allclose(shift_matrix(3, 5, 1.0)[1:4], np.eye(3))
    half = shift_matrix(1, 3, 0.5)[:, 0]
    np.testing.assert_allclose(half, [0.5, 0.5, 0.0])
    img = np.arange(4.0).reshape(1, 2, 2)
    canvas = render(img, (4, 4), (1.0, 2.0))
    np.testing.assert_allclose(canvas[0, 1:3, 2:4], img[0])
    assert canvas.sum() == pytest.approx(img.sum())


def test_saccade_path_is_a_closed_triangle() -> None:
    sac = Saccades(amplitude=2.0, saccade_ticks=1000, steps=4)
    times, offsets = saccade_path(sac, border=2)
    assert times.tolist() == [0, 250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2250, 2500, 2750, 3000]
    np.testing.assert_allclose(offsets[0], [1.0, 1.0])
    np.testing.assert_allclose(offsets[4], [3.0, 2.0])  # vertex (A, A/2)
    np.testing.assert_allclose(offsets[8], [1.0, 3.0])  # vertex (0, A)
    np.testing.assert_allclose(offsets[-1], offsets[0])
    assert sac.duration == 3001


def test_static_scene_emits_nothing() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((5, 8, 8))
    batch = saccade_events(images, size=12, border=2, saccades=Saccades(amplitude=0.0), rng=1)
    assert len(batch) == 5 and batch.events.size == 0
    frames = [images] * 10
    assert video_to_events(frames, np.arange(10) * 100).events.size == 0


def test_moving_bright_bar_on_at_leading_off_at_trailing_edge() -> None:
    height, width, bar = 6, 20, 4
    steps = 10
    frames = []
    for k in range(steps + 1):
        f = np.zeros((1, height, width))
        f[0, :, k:k + bar] = 1.0  # the bar moves right by one pixel per frame
        frames.append(f)
    times = np.arange(steps + 1) * 1000
    sensor = SensorModel(c_on=0.2, c_off=0.2, eps=EPS, refractory=0)
    ev = video_to_events(frames, times, sensor=sensor)[0]
    x = ev["addr"] % width
    step = -(-ev["t"] // 1000)  # events of frame interval (t_{k-1}, t_k] belong to step k
    assert ev["t"].min() > 0
    on, off = ev["p"] == 1, ev["p"] == 0
    assert on.any() and off.any()
    np.testing.assert_array_equal(x[on], step[on] - 1 + bar)  # leading edge: the column the bar enters
    np.testing.assert_array_equal(x[off], step[off] - 1)  # trailing edge: the column the bar leaves
    # each entered pixel climbs log(1.1) - log(0.1) = 2.398 -> floor(2.398 / 0.2) = 11 ON events
    per_pixel = np.bincount(ev["addr"][on], minlength=height * width)
    entered = per_pixel[per_pixel > 0]
    assert entered.size == height * steps and np.all(entered == math.floor((math.log(1.1) - math.log(0.1)) / 0.2))


def test_threshold_count_and_times_for_a_log_ramp() -> None:
    # one pixel, L rising linearly by 0.95 over 1000 ticks, then falling by 1.0 over the next 1000
    c_on, c_off = 0.1, 0.15
    up = np.linspace(0.0, 0.95, 11)
    down = 0.95 - np.linspace(0.0, 1.0, 11)[1:]
    levels = np.concatenate([up, down])
    times = np.arange(levels.size) * 100
    frames = [np.full((1, 1), intensity(v)) for v in levels]
    sensor = SensorModel(c_on=c_on, c_off=c_off, eps=EPS, refractory=0)
    ev = video_to_events(frames, times, sensor=sensor)[0]
    on = ev[ev["p"] == 1]
    off = ev[ev["p"] == 0]
    # ON: levels 0.1, 0.2, ..., 0.9 (floor(0.95 / 0.1) = 9), crossed at t = 1000 * j * 0.1 / 0.95
    assert len(on) == 9
    assert on["t"].tolist() == [math.ceil(1000 * j * c_on / 0.95) for j in range(1, 10)]
    # OFF: from ref 0.9 down to L = -0.05: floor(0.95 / 0.15) = 6 levels, 0.75 ... 0.0
    assert len(off) == 6
    expected = [1000 + math.ceil(1000 * (0.95 - (0.9 - j * c_off)) / 1.0) for j in range(1, 7)]
    assert off["t"].tolist() == expected


def test_refractory_period_delays_and_limits_events() -> None:
    levels = np.linspace(0.0, 0.95, 11)
    times = np.arange(11) * 100
    frames = [np.full((1, 1), intensity(v)) for v in levels]
    refractory = 250
    ev = video_to_events(frames, times, sensor=SensorModel(c_on=0.1, eps=EPS, refractory=refractory))[0]
    # by hand: crossings at ceil(105.26 j); each event waits until refractory has passed since the last one
    expected: list[int] = []
    for j in range(1, 10):
        t = math.ceil(1000 * j * 0.1 / 0.95)
        if expected:
            t = max(t, expected[-1] + refractory)
        if t > 1000:
            break
        expected.append(t)
    assert ev["t"].tolist() == expected == [106, 356, 606, 856]


def test_no_pixel_fires_twice_within_the_refractory_period() -> None:
    rng = np.random.default_rng(4)
    images = rng.random((6, 8, 8))
    refractory = 7000
    sac = Saccades(amplitude=2.0, saccade_ticks=30_000, steps=15)
    batch = saccade_events(images, size=12, border=2, saccades=sac, rng=0,
                           sensor=SensorModel(refractory=refractory, threshold_sigma=0.1))
    assert batch.events.size > 0
    for i in range(len(batch)):
        ev = batch[i]
        order = np.lexsort((ev["t"], ev["addr"]))
        addr, t = ev["addr"][order], ev["t"][order]
        same = addr[1:] == addr[:-1]
        gaps = (t[1:] - t[:-1])[same]
        assert gaps.size and gaps.min() >= refractory
        assert np.all(np.diff(ev["t"]) >= 0) and ev["t"].max() < batch.duration


def test_seeded_noise_and_mismatch() -> None:
    images = np.random.default_rng(0).random((4, 8, 8))
    sensor = SensorModel(noise_rate=50.0, threshold_sigma=0.2)
    kw = dict(size=8, border=2, saccades=Saccades(amplitude=0.0, saccade_ticks=100_000, steps=5), sensor=sensor)
    a = saccade_events(images, rng=np.random.default_rng(11), **kw)
    b = saccade_events(images, rng=11, **kw)
    c = saccade_events(images, rng=12, **kw)
    np.testing.assert_array_equal(a.events, b.events)
    assert not np.array_equal(a.events, c.events)
    # static scene: only noise, Poisson with mean rate * pixels * duration per sample
    mean = 50.0 * 12 * 12 * (300_001 * 1e-6)
    assert abs(a.counts().mean() - mean) < 5 * math.sqrt(mean / 4)
    assert set(np.unique(a.events["p"]).tolist()) == {0, 1}


def test_digits_conversion_has_events_in_every_sample() -> None:
    from spikefed.events.datasets import event_digits

    batch, labels = event_digits(seed=0)
    assert len(batch) == labels.size == 1797
    assert batch.shape == (20, 20) and batch.polarity
    counts = batch.counts()
    assert counts.min() > 100
    assert (batch.events["p"] == 1).any() and (batch.events["p"] == 0).any()
