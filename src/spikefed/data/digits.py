"""scikit-learn's bundled handwritten digits (offline): 1797 images of 8x8 pixels, values 0..16, 10 classes.

Scalings (fitted on the training split only)::

    unit:      x' = x / 16                         in [0, 1]
    standard:  x' = (x - mu_train) / sigma_train   per pixel, sigma with ddof = 0; a pixel constant in the
               training set (sigma < 1e-6) is only centred (sigma taken as 1), as scikit-learn's StandardScaler does
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from spikefed.manifold import check_open_interval

from .compact import COMPACT_DTYPES

#: Valid ``scale`` choices of :func:`load_digits_split`.
SCALES: tuple[str, ...] = ("unit", "standard")

#: Largest pixel value of the digits images.
DIGITS_MAX_PIXEL = 16.0

#: Floor on the per-pixel standard deviation in ``scale="standard"``.
STD_FLOOR = 1e-6
COMPACT_STORE = frozenset(dt for dt, _ in COMPACT_DTYPES)


@dataclass(frozen=True, eq=False)
class DatasetSplit:
    """A labelled train/test split.

    ``x_*`` are float32 tensors ``[N, *feature_shape]`` (sequence data may instead be a compact integer store,
    :mod:`spikefed.data.compact`: batches go through ``as_float_batch``); ``y_*`` are int64 tensors ``[N]`` with
    labels in ``[0, num_classes)``. Checked on construction (``ValueError`` on any mismatch).

    ``sequence=True`` marks pre-binned sequences (event data, :mod:`spikefed.events`): ``x`` is
    ``[N, T, *step_shape]`` with ``feature_shape = (T, *step_shape)``, fed to the network one time bin per step
    (encoder ``"events"``); :attr:`step_features` is then the input width of the network.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    feature_shape: tuple[int, ...]
    name: str
    sequence: bool = False

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(s) for s in self.feature_shape)
        except TypeError:
            raise ValueError(f"feature_shape must be a tuple of ints, got {self.feature_shape!r}") from None
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"feature_shape must be a non-empty tuple of ints >= 1, got {self.feature_shape!r}")
        object.__setattr__(self, "feature_shape", shape)
        n = self.num_classes
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {n!r}")
        if not isinstance(self.name, str):
            raise ValueError(f"name must be a str, got {self.name!r}")
        if not isinstance(self.sequence, bool):
            raise ValueError(f"sequence must be a bool, got {self.sequence!r}")
        if self.sequence and len(shape) < 2:
            raise ValueError(f"sequence data needs feature_shape (T, *step_shape), got {shape!r}")
        dims = ", ".join(str(s) for s in shape)
        for part in ("train", "test"):
            x = getattr(self, f"x_{part}")
            y = getattr(self, f"y_{part}")
            compact = self.sequence and isinstance(x, torch.Tensor) and x.dtype in COMPACT_STORE
            if not isinstance(x, torch.Tensor) or (x.dtype != torch.float32 and not compact):
                kinds = "float32 (sequence data: or uint8 / int16 / int32 counts)" if self.sequence else "float32"
                raise ValueError(f"x_{part} must be a {kinds} torch.Tensor, got {_describe(x)}")
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64:
                raise ValueError(f"y_{part} must be an int64 torch.Tensor, got {_describe(y)}")
            if tuple(x.shape[1:]) != shape or x.dim() != len(shape) + 1:
                raise ValueError(f"expected x_{part} of shape [N, {dims}], got {list(x.shape)}")
            if y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(
                    f"expected y_{part} of shape [N] with N = len(x_{part}) = {x.shape[0]}, got {list(y.shape)}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n):
                raise ValueError(
                    f"y_{part} labels must lie in [0, {n}), got range [{int(y.min())}, {int(y.max())}]"
                )

    @property
    def num_features(self) -> int:
        """Number of scalar features per sample: the product of ``feature_shape``."""
        return math.prod(self.feature_shape)

    @property
    def num_steps(self) -> int | None:
        """T of sequence data (``feature_shape[0]``), ``None`` for static data."""
        return self.feature_shape[0] if self.sequence else None

    @property
    def step_features(self) -> int:
        """Input width of the network: features per time step for sequence data, else :attr:`num_features`."""
        return math.prod(self.feature_shape[1:]) if self.sequence else self.num_features

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of dtype {value.dtype}"
    return type(value).__name__


def load_digits_split(
    test_size: float = 0.2,
    seed: int = 0,
    scale: str = "unit",
    as_images: bool = False,
) -> DatasetSplit:
    """Stratified, seeded train/test split of scikit-learn's digits.

    Args:
        test_size: fraction of samples in the test set, in (0, 1). It must leave at least one sample per
            class on each side (scikit-learn raises ``ValueError`` otherwise).
        seed: ``random_state`` of ``train_test_split(..., stratify=y)``.
        scale: ``"unit"`` (``x / 16``) or ``"standard"`` (train-set mean/std per pixel; a pixel constant on the
            training set is only centred).
        as_images: features ``[N, 1, 8, 8]`` instead of ``[N, 64]``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)):
        raise ValueError(f"test_size must be a float in (0, 1), got {test_size!r}")
    check_open_interval("test_size", float(test_size), 0.0, 1.0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid choices: {', '.join(map(repr, SCALES))}")

    x, y = load_digits(return_X_y=True)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=float(test_size), stratify=y, random_state=int(seed)
    )
    if scale == "unit":
        x_train = x_train / DIGITS_MAX_PIXEL
        x_test = x_test / DIGITS_MAX_PIXEL
    else:
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std = np.where(std < STD_FLOOR, 1.0, std)
        x_train = (x_train - mean) / std
        x_test = (x_test - mean) / std

    feature_shape: tuple[int, ...] = (1, 8, 8) if as_images else (64,)

    def features(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(-1, *feature_shape)

    return DatasetSplit(
        x_train=features(x_train),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train)),
        x_test=features(x_test),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test)),
        num_classes=10,
        feature_shape=feature_shape,
        name="digits",
    )


def iterate_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | int | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x[idx], y[idx])`` minibatches along the first dim.

    With ``shuffle`` the order is ``torch.randperm(N, generator=generator)``, drawn when this is called: the
    generator (a ``torch.Generator``, or an int seed for a fresh one) is required, and a shared generator
    advances, so successive epochs differ. Without ``shuffle`` the batches are contiguous slices in order. The last
    batch is shorter than ``batch_size`` unless ``drop_last``. Arguments are checked when called, not when iterated.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"x and y must be torch.Tensors, got {_describe(x)} and {_describe(y)}")
    if x.dim() < 1 or y.dim() < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"expected x of shape [N, ...] and y of shape [N, ...] with the same N, "
            f"got {list(x.shape)} and {list(y.shape)}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    n = int(x.shape[0])
    order: torch.Tensor | None = None
    if shuffle:
        if isinstance(generator, int) and not isinstance(generator, bool):
            generator = torch.Generator().manual_seed(generator)
        if not isinstance(generator, torch.Generator):
            raise ValueError(
                f"shuffle=True needs generator: a torch.Generator or an int seed, got {generator!r} "
                "(or pass shuffle=False)"
            )
        order = torch.randperm(n, generator=generator, device=generator.device)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            end = min(start + batch_size, n)
            if order is None:
                yield x[start:end], y[start:end]
            else:
                idx = order[start:end]
                yield x[idx.to(x.device)], y[idx.to(y.device)]

    return batches()
