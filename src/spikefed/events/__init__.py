"""Neuromorphic event data: AER codec and file format, N-MNIST-style synthesis, binning, loaders, datasets.

See ``docs/events.md``. Submodules: :mod:`~spikefed.events.aer` (events, spike tensors, the SFAER file format),
:mod:`~spikefed.events.synth` (saccade recordings with a DVS pixel model), :mod:`~spikefed.events.frames`
(binning), :mod:`~spikefed.events.loaders` (N-MNIST, SHD), :mod:`~spikefed.events.datasets` (``DatasetSplit``s).
"""

from __future__ import annotations

from .aer import (
    EVENT_DTYPE,
    AERHeader,
    AERReader,
    AERSize,
    AERWriter,
    EventBatch,
    EventFormatError,
    aer_size,
    bitmap_bytes,
    decode_events,
    encode_events,
    events_to_tensor,
    iter_events,
    make_events,
    read_events,
    tensor_to_events,
    write_events,
)
from .datasets import (
    EVENT_DATASETS,
    event_digits,
    event_mnist5k,
    load_event_digits_split,
    load_event_mnist5k_split,
    split_events,
)
from .frames import FRAME_MODES, batch_bin_counts, batch_to_frames, bin_counts, events_to_frames
from .loaders import decode_nmnist, encode_nmnist, load_nmnist_dir, read_nmnist, read_shd, write_nmnist
from .synth import Saccades, SensorModel, saccade_events, video_to_events

__all__ = [
    "EVENT_DTYPE", "AERHeader", "AERReader", "AERSize", "AERWriter", "EventBatch", "EventFormatError", "aer_size",
    "bitmap_bytes", "decode_events", "encode_events", "events_to_tensor", "iter_events", "make_events",
    "read_events", "tensor_to_events", "write_events",
    "EVENT_DATASETS", "event_digits", "event_mnist5k", "load_event_digits_split", "load_event_mnist5k_split",
    "split_events",
    "FRAME_MODES", "batch_bin_counts", "batch_to_frames", "bin_counts", "events_to_frames",
    "decode_nmnist", "encode_nmnist", "load_nmnist_dir", "read_nmnist", "read_shd", "write_nmnist",
    "Saccades", "SensorModel", "saccade_events", "video_to_events",
]
