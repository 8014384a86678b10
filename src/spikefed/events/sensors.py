"""Sensor-level heterogeneity of event data: each client's camera (or cochlea) differs, applied to recorded events.

A :class:`SensorSkew` turns a recording into what another sensor would have produced from the same scene, in this
order (every draw from the client's generator)::

    pool        resolution: coordinates (y, x) -> (y // r * r, x // r * r) (an r-times coarser sensor drawn at
                full size; 1-D channel arrays: channel // r * r)
    contrast    a contrast threshold c times the reference fires 1/c as many events for the same log-intensity
                change: each event is kept with probability min(1, 1 / c)
    refractory  an event is dropped when the same address had an event (kept or not) less than ``refractory_us``
                earlier
    noise       background activity: Poisson(noise_rate * pixels * window) events, uniform in address, time and
                polarity
    hot pixels  ``hot_pixels`` addresses (drawn once per client) fire Poisson(hot_rate * window) events each,
                uniform in time and polarity

The "living room vs street corner" setting is two profiles: an indoor camera with little noise, and an outdoor one
with a higher contrast threshold (glare), strong background activity and a few hot pixels
(:data:`SENSOR_PRESETS`).

:func:`event_statistics` summarises every sample by four numbers (log events per second, ON fraction, log active
addresses, log mean events per active address); :func:`statistics_divergence` fits a Gaussian to each client's
summaries and reports the Hellinger distance of every client to the pooled population (and the largest pairwise
one), a divergence of the event statistics that needs no model (a ridge ``eps = 1e-4`` on the covariances keeps a
statistic without spread, e.g. an ON fraction of exactly 0.5 in every synthetic recording, from deciding alone);
:func:`sensor_shift` compares the same samples as recorded and as one sensor sees them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..data.heterogeneity import fit_gaussian, hellinger_gaussian
from .aer import EVENT_DTYPE, EventBatch

__all__ = ["SensorSkew", "SENSOR_PRESETS", "apply_sensor", "apply_sensor_batch", "hot_pixel_addresses",
           "event_statistics", "statistics_divergence", "sensor_shift"]


@dataclass(frozen=True)
class SensorSkew:
    """One sensor's departure from the reference sensor (the defaults change nothing)."""

    name: str = "reference"
    contrast: float = 1.0  # contrast threshold relative to the reference (>= 1 thins events)
    refractory_us: int = 0
    noise_rate: float = 0.0  # background events per address per second
    hot_pixels: int = 0
    hot_rate: float = 0.0  # events per second of each hot pixel
    pool: int = 1  # resolution reduction factor

    def __post_init__(self) -> None:
        for name in ("contrast",):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"sensor {self.name}: {name} must be a finite number > 0, got {v!r}")
        for name in ("noise_rate", "hot_rate"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"sensor {self.name}: {name} must be a finite number >= 0, got {v!r}")
        for name, low in (("refractory_us", 0), ("hot_pixels", 0), ("pool", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"sensor {self.name}: {name} must be an int >= {low}, got {v!r}")


#: The two sensors of the seeds' example.
SENSOR_PRESETS: dict[str, SensorSkew] = {
    "living_room": SensorSkew("living_room", contrast=1.0, refractory_us=0, noise_rate=0.2),
    "street_corner": SensorSkew("street_corner", contrast=1.5, refractory_us=1000, noise_rate=2.0, hot_pixels=4,
                                hot_rate=200.0, pool=1),
}


def hot_pixel_addresses(sensor: SensorSkew, num_addresses: int, rng: np.random.Generator) -> np.ndarray:
    """The ``hot_pixels`` addresses of one sensor (distinct, drawn once)."""
    k = min(int(sensor.hot_pixels), int(num_addresses))
    return np.sort(rng.choice(int(num_addresses), size=k, replace=False)).astype(np.int64)


def _pool(addr: np.ndarray, shape: tuple[int, ...], r: int) -> np.ndarray:
    if r == 1:
        return addr
    coords = np.unravel_index(addr.astype(np.int64), shape)
    return np.ravel_multi_index(tuple(c // r * r for c in coords), shape)


def apply_sensor(events: np.ndarray, shape: Sequence[int], duration: int, time_unit: float, sensor: SensorSkew,
                 rng: np.random.Generator, hot: np.ndarray | None = None, polarity: bool = True) -> np.ndarray:
    """One sample's events as ``sensor`` would record them (see the module doc); sorted by ``t`` (stable).
    ``hot``: the sensor's hot-pixel addresses (default: drawn now from ``rng``)."""
    dims = tuple(int(d) for d in shape)
    n_addr = math.prod(dims)
    ev = np.array(events, dtype=EVENT_DTYPE, copy=True)
    ev["addr"] = _pool(ev["addr"], dims, int(sensor.pool))
    if sensor.contrast > 1.0:
        ev = ev[rng.random(ev.size) < 1.0 / sensor.contrast]
    if sensor.refractory_us > 0 and ev.size:
        ticks = int(round(sensor.refractory_us * 1e-6 / time_unit))
        order = np.lexsort((ev["t"], ev["addr"]))
        a, t = ev["addr"][order], ev["t"][order]
        close = np.zeros(ev.size, dtype=bool)
        close[1:] = (a[1:] == a[:-1]) & (t[1:] - t[:-1] < ticks)
        ev = ev[np.sort(order[~close])]
    seconds = duration * time_unit
    extra: list[np.ndarray] = [ev]
    n_noise = rng.poisson(sensor.noise_rate * n_addr * seconds) if sensor.noise_rate > 0 else 0
    if n_noise:
        noise = np.empty(n_noise, dtype=EVENT_DTYPE)
        noise["t"] = rng.integers(0, duration, n_noise)
        noise["addr"] = _pool(rng.integers(0, n_addr, n_noise), dims, int(sensor.pool))
        noise["p"] = rng.integers(0, 2, n_noise) if polarity else 1
        extra.append(noise)
    if sensor.hot_pixels and sensor.hot_rate > 0:
        where = hot_pixel_addresses(sensor, n_addr, rng) if hot is None else np.asarray(hot, dtype=np.int64)
        counts = rng.poisson(sensor.hot_rate * seconds, where.size)
        h = np.empty(int(counts.sum()), dtype=EVENT_DTYPE)
        h["t"] = rng.integers(0, duration, h.size)
        h["addr"] = np.repeat(where, counts)
        h["p"] = rng.integers(0, 2, h.size) if polarity else 1
        extra.append(h)
    out = np.concatenate(extra) if len(extra) > 1 else ev
    return out[np.argsort(out["t"], kind="stable")]


def apply_sensor_batch(batch: EventBatch, sensor: SensorSkew, rng: np.random.Generator,
                       hot: np.ndarray | None = None) -> EventBatch:
    """Every sample of ``batch`` through one sensor; its hot pixels ``hot`` (default: drawn once now) are shared
    by the samples."""
    if hot is None:
        hot = hot_pixel_addresses(sensor, math.prod(batch.shape), rng)
    streams = [apply_sensor(batch[i], batch.shape, batch.duration, batch.time_unit, sensor, rng, hot,
                            batch.polarity) for i in range(len(batch))]
    return EventBatch.from_list(streams, batch.shape, polarity=batch.polarity, time_unit=batch.time_unit,
                                duration=batch.duration)


def event_statistics(batch: EventBatch) -> np.ndarray:
    """Per sample ``[N, 4]``: ``log1p(events per second)``, ON fraction (0.5 without events), ``log1p(active
    addresses)``, ``log1p(events per active address)``; events at or after the window are left out."""
    n = len(batch)
    inside = batch.events["t"] < batch.duration
    sample = batch.sample_index()[inside]
    count = np.bincount(sample, minlength=n).astype(np.float64)
    on = np.bincount(sample, weights=batch.events["p"][inside].astype(np.float64), minlength=n)
    n_addr = math.prod(batch.shape)
    pairs = np.unique(sample * n_addr + batch.events["addr"][inside].astype(np.int64))
    active = np.bincount(pairs // n_addr, minlength=n).astype(np.float64)
    seconds = batch.duration * batch.time_unit
    on_frac = np.where(count > 0, on / np.maximum(count, 1), 0.5)
    per_addr = np.where(active > 0, count / np.maximum(active, 1), 0.0)
    return np.stack([np.log1p(count / seconds), on_frac, np.log1p(active), np.log1p(per_addr)], axis=1)


def statistics_divergence(stats: np.ndarray, parts: Sequence[np.ndarray], eps: float = 1e-4) -> dict[str, Any]:
    """Hellinger distances of Gaussian fits (full covariance) of the event statistics: each client against the
    pooled population, their mean and max, and the largest between two clients."""
    x = np.asarray(stats, dtype=np.float64)
    mu, cov = fit_gaussian(x, diag=False)
    fits = [fit_gaussian(x[np.asarray(p, dtype=np.int64)], diag=False) for p in parts]
    to_pool = [hellinger_gaussian(m, c, mu, cov, eps) for m, c in fits]
    pairwise = max((hellinger_gaussian(*fits[i], *fits[j], eps) for i in range(len(fits))
                    for j in range(i + 1, len(fits))), default=0.0)
    return {"event_hellinger": to_pool, "mean_event_hellinger": float(np.mean(to_pool)),
            "max_event_hellinger": float(np.max(to_pool)), "max_pairwise_event_hellinger": float(pairwise)}


def sensor_shift(recorded: np.ndarray, seen: np.ndarray, eps: float = 1e-4) -> float:
    """Hellinger distance between Gaussian fits (full covariance) of the same samples' event statistics as
    recorded and as one sensor sees them: 0 for the reference sensor, towards 1 as the sensor departs from it."""
    m1, c1 = fit_gaussian(np.asarray(recorded, dtype=np.float64), diag=False)
    m2, c2 = fit_gaussian(np.asarray(seen, dtype=np.float64), diag=False)
    return hellinger_gaussian(m1, c1, m2, c2, eps)
