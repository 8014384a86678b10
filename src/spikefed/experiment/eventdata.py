"""Event data of a run: config -> sources (recorded files or the synthetic sets) -> frames, partition, sensor skew.

Every event data set goes through one path: an :class:`~spikefed.events.sources.EventSource` per split, binned
block by block (:mod:`spikefed.events.stream`) into the ``x [N, bins, F]`` tensors of a
:class:`~spikefed.data.digits.DatasetSplit`, held as a compact uint8 store (:mod:`spikefed.data.compact`: widened
for counts above 255, never clipped) and made float one batch at a time where a model takes it; the events
themselves are never all in memory.

- Recorded sets (``nmnist``, ``dvs_gesture``, ``shd``, ``ssc``): the official train/test split under
  ``data.root`` (``data.test_size`` does not apply); ``data.limit`` keeps that many samples per split, evenly
  spaced over the (label-sorted) files.
- Synthetic sets (``event_digits``, ``event_mnist5k``): synthesised in memory, then the stratified seeded split of
  :func:`~spikefed.data.digits.load_digits_split` (same samples as before this path existed).

With ``partition.method=feature`` every client records through its own sensor (``partition.sensors``; by default
the ``living_room`` and ``street_corner`` presets, alternating): its training samples are re-binned from the
events its sensor would have produced (:mod:`spikefed.events.sensors`), and the divergence of the clients' event
statistics is measured. ``subject``/``speaker``/``session`` give every client whole groups
(:func:`~spikefed.data.natural.group_partition`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.digits import DatasetSplit
from ..data.natural import group_partition
from ..events.datasets import NATURAL_GROUPS, RECORDED_DATASETS, event_digits, event_mnist5k
from ..events.sensors import (SENSOR_PRESETS, SensorSkew, apply_sensor_batch, event_statistics,
                              hot_pixel_addresses, sensor_shift, statistics_divergence)
from ..events.sources import EventSource, batch_source, open_source
from ..data.compact import write_rows
from ..events.stream import FrameSpec, bin_batch, cached_frames, load_compact, load_frames
from ..events.synth import SensorModel
from ..seeding import Purpose, numpy_rng
from .config import ConfigError, DataSettings

__all__ = ["EventData", "frame_spec", "event_sources", "load_event_data", "natural_parts", "client_sensors",
           "apply_sensor_skew"]

#: Default spatial pooling per data set (``data.downsample=None``).
DEFAULT_DOWNSAMPLE: dict[str, int] = {"event_digits": 1, "event_mnist5k": 2, "nmnist": 2, "dvs_gesture": 4,
                                      "shd": 1, "ssc": 1}
BLOCK = 256


@dataclass
class EventData:
    """The binned split, and the training source it came from (for partitions and sensor skew)."""

    split: DatasetSplit
    train: EventSource
    spec: FrameSpec
    report: dict[str, Any] = field(default_factory=dict)


def frame_spec(data: DataSettings) -> FrameSpec:
    down = DEFAULT_DOWNSAMPLE[data.name] if data.downsample is None else data.downsample
    return FrameSpec(bins=data.bins, mode=data.frame_mode, downsample=down,
                     crop=None if data.crop is None else tuple(data.crop))


def _evenly(n: int, limit: int | None) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(np.int64))


def event_sources(data: DataSettings, seed: int) -> tuple[EventSource, EventSource]:
    """``(train, test)`` sources of the configured event data set."""
    if data.name in RECORDED_DATASETS:
        if data.root is None:
            raise ConfigError(f"data.name={data.name} reads the official files: set data.root=DIR (docs/events.md)")
        window = None if data.window_ms is None else int(round(data.window_ms * 1000))
        try:
            train, test = (open_source(data.name, data.root, s, window_us=window) for s in ("train", "test"))
        except FileNotFoundError as e:
            raise ConfigError(f"data.root: {e}") from None
        return train.subset(_evenly(len(train), data.limit)), test.subset(_evenly(len(test), data.limit))
    from sklearn.model_selection import train_test_split

    make = event_digits if data.name == "event_digits" else event_mnist5k
    batch, labels = make(seed, sensor=SensorModel(noise_rate=data.noise_rate))
    source = batch_source(batch, labels, name=data.name, num_classes=10)
    idx_train, idx_test = train_test_split(np.arange(len(batch)), test_size=float(data.test_size), stratify=labels,
                                           random_state=int(seed))
    return source.subset(idx_train), source.subset(idx_test)


#: how a run holds its frames: ``compact`` (uint8 counts, :mod:`spikefed.data.compact`; the default) or
#: ``float`` (float32, ``4 N T F`` bytes: the reference the compact store is tested against)
FRAME_STORES = ("compact", "float")


def _frames(source: EventSource, spec: FrameSpec, data: DataSettings, store: str) -> torch.Tensor:
    if store == "float":
        if data.cache_dir is not None and source.key:
            return torch.from_numpy(np.asarray(cached_frames(source, spec, data.cache_dir), dtype=np.float32))
        return torch.from_numpy(load_frames(source, spec, block=BLOCK))
    if data.cache_dir is not None and source.key:
        return torch.from_numpy(np.array(cached_frames(source, spec, data.cache_dir)))  # writable, in memory
    return torch.from_numpy(load_compact(source, spec, block=BLOCK))


def load_event_data(data: DataSettings, seed: int, *, store: str = "compact") -> EventData:
    """The configured event data binned into a :class:`DatasetSplit` (``sequence=True``); ``store`` is one of
    :data:`FRAME_STORES`."""
    if store not in FRAME_STORES:
        raise ValueError(f"unknown frame store {store!r}; valid: {', '.join(FRAME_STORES)}")
    train, test = event_sources(data, seed)
    spec = frame_spec(data)
    try:
        x_train, x_test = _frames(train, spec, data, store), _frames(test, spec, data, store)
    except ValueError as e:
        if "crop" in str(e):
            raise ConfigError(f"data.crop: {e}") from None
        raise
    split = DatasetSplit(x_train=x_train, y_train=torch.from_numpy(train.labels.copy()), x_test=x_test,
                         y_test=torch.from_numpy(test.labels.copy()), num_classes=train.num_classes,
                         feature_shape=(spec.bins, int(x_train.shape[2])), name=data.name, sequence=True)
    return EventData(split, train, spec)


def natural_parts(method: str, source: EventSource, num_clients: int) -> list[np.ndarray]:
    """Whole ``method`` groups (subject / speaker / session) per client."""
    if method not in source.groups:
        have = ", ".join(NATURAL_GROUPS.get(source.name, ())) or "none"
        raise ConfigError(f"partition.method={method}: data.name={source.name} has no {method} groups "
                          f"(it has: {have})")
    try:
        return group_partition(source.groups[method], num_clients)
    except ValueError as e:
        raise ConfigError(f"partition: {e}") from None


def client_sensors(sensors: list[Any], num_clients: int) -> list[SensorSkew]:
    """Client ``k``'s sensor: ``sensors[k mod len]`` (settings objects or dicts), or the presets alternating."""
    pool = [SensorSkew(**(s.model_dump() if hasattr(s, "model_dump") else dict(s))) for s in sensors] or \
        list(SENSOR_PRESETS.values())
    return [pool[k % len(pool)] for k in range(num_clients)]


def apply_sensor_skew(events: EventData, parts: list[np.ndarray], sensors: list[SensorSkew],
                      seed: int) -> dict[str, Any]:
    """Re-bin every client's training samples from its own sensor's events (in place in ``events.split``) and
    return the divergence of the event statistics as the clients see them (and as recorded, for reference)."""
    x = events.split.x_train
    source = events.train
    n = len(source)
    seen = np.zeros((n, 4))
    raw = np.zeros((n, 4))
    for k, (idx, sensor) in enumerate(zip(parts, sensors)):
        rng = numpy_rng(seed, Purpose.EVENT_SENSOR, client=k)
        hot = None
        for s in range(0, len(idx), BLOCK):
            block = np.asarray(idx[s:s + BLOCK], dtype=np.int64)
            batch = source.batch(block)
            raw[block] = event_statistics(batch)
            if hot is None:
                hot = hot_pixel_addresses(sensor, int(np.prod(batch.shape)), rng)
            skewed = apply_sensor_batch(batch, sensor, rng, hot=hot)
            seen[block] = event_statistics(skewed)
            x = write_rows(x, block, bin_batch(skewed, events.spec))  # widens a compact store, never clips
    if x is not events.split.x_train:
        events.split = dataclasses.replace(events.split, x_train=x)
    out = statistics_divergence(seen, parts)
    out["recorded_mean_event_hellinger"] = statistics_divergence(raw, parts)["mean_event_hellinger"]
    # how far each client's sensor moved its own samples' statistics from the recording (same samples)
    out["sensor_shift_hellinger"] = [sensor_shift(raw[np.asarray(p)], seen[np.asarray(p)]) for p in parts]
    out["sensors"] = [s.name for s in sensors]
    return out


def event_statistics_report(events: EventData, parts: list[np.ndarray]) -> dict[str, Any]:
    """The divergence of the clients' event statistics (no skew applied): one pass over the training events."""
    source = events.train
    stats = np.zeros((len(source), 4))
    for s in range(0, len(source), BLOCK):
        block = np.arange(s, min(s + BLOCK, len(source)))
        stats[block] = event_statistics(source.batch(block))
    return statistics_divergence(stats, parts)
