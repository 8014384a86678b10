from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from spikefed.data import DatasetSplit, iterate_batches, load_digits_split


@pytest.fixture(scope="module")
def raw() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float64), y.astype(np.int64)


@pytest.fixture(scope="module")
def unit() -> DatasetSplit:
    return load_digits_split()


@pytest.fixture(scope="module")
def standard() -> DatasetSplit:
    return load_digits_split(scale="standard")


# ------------------------------------------------------------------------------------------- split


def test_split_sizes_types_and_metadata(unit: DatasetSplit) -> None:
    assert unit.x_train.shape == (1437, 64) and unit.x_test.shape == (360, 64)
    assert unit.y_train.shape == (1437,) and unit.y_test.shape == (360,)
    assert unit.x_train.dtype == torch.float32 and unit.y_train.dtype == torch.int64
    assert unit.num_classes == 10 and unit.feature_shape == (64,) and unit.num_features == 64
    assert unit.name == "digits" and unit.num_train == 1437 and unit.num_test == 360


def test_split_is_stratified_and_a_partition(unit: DatasetSplit, raw: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = raw
    overall = np.bincount(y, minlength=10)
    test_counts = np.bincount(unit.y_test.numpy(), minlength=10)
    train_counts = np.bincount(unit.y_train.numpy(), minlength=10)
    assert (train_counts + test_counts == overall).all()
    for c in range(10):
        assert abs(test_counts[c] - overall[c] / len(y) * 360) <= 1.0, c
    # Every sample appears exactly once across train and test: the multisets of (pixels, label) rows agree.
    def rows(xs: torch.Tensor, ys: torch.Tensor) -> list[tuple]:
        return [tuple(r) + (int(lab),) for r, lab in zip((xs * 16).round().int().tolist(), ys.tolist())]

    ours = sorted(rows(unit.x_train, unit.y_train) + rows(unit.x_test, unit.y_test))
    theirs = sorted(tuple(int(v) for v in r) + (int(lab),) for r, lab in zip(x, y))
    assert ours == theirs


def test_same_seed_same_split_different_seed_different() -> None:
    a = load_digits_split(seed=1)
    b = load_digits_split(seed=1)
    c = load_digits_split(seed=2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_test, c.x_test)


def test_test_size_sets_split_size() -> None:
    split = load_digits_split(test_size=0.5)
    assert split.num_test == math.ceil(0.5 * 1797) and split.num_train == 1797 - split.num_test


# ------------------------------------------------------------------------------------------- scaling


def test_unit_scaling(unit: DatasetSplit) -> None:
    for x in (unit.x_train, unit.x_test):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        scaled = x * 16
        assert torch.equal(scaled, scaled.round())  # raw pixels are integers 0..16 divided by 16


def test_standard_scaling_on_train(standard: DatasetSplit, unit: DatasetSplit) -> None:
    raw_train = unit.x_train.double().numpy() * 16
    varying = raw_train.std(axis=0) > 0
    assert 0 < (~varying).sum() < 64  # some pixels are constant (always 0) in train
    x = standard.x_train.double().numpy()
    assert np.allclose(x[:, varying].mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(x[:, varying].std(axis=0), 1.0, atol=1e-4)
    assert np.allclose(x[:, ~varying], 0.0)


def test_standard_scaling_fits_on_train_only(standard: DatasetSplit, unit: DatasetSplit) -> None:
    # Same seed, so the unit split holds the same samples: undo its /16 and fit with numpy on train only.
    raw_train = unit.x_train.double().numpy() * 16
    raw_test = unit.x_test.double().numpy() * 16
    mean = raw_train.mean(axis=0)
    std = raw_train.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std)  # constant pixels are only centred
    expected = (raw_test - mean) / std
    got = standard.x_test.double().numpy()
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-4)
    # Fitting on train + test would give a visibly different test set (so this check can fail).
    both = np.concatenate([raw_train, raw_test])
    leaked = (raw_test - both.mean(axis=0)) / np.maximum(both.std(axis=0), 1e-6)
    assert not np.allclose(got, leaked, rtol=1e-5, atol=1e-4)


def test_as_images(unit: DatasetSplit) -> None:
    images = load_digits_split(as_images=True)
    assert images.x_train.shape == (1437, 1, 8, 8) and images.x_test.shape == (360, 1, 8, 8)
    assert images.feature_shape == (1, 8, 8) and images.num_features == 64
    assert torch.equal(images.x_train.reshape(1437, 64), unit.x_train)
    # Row-major 8x8: pixel (r, c) is flat feature 8r + c.
    assert float(images.x_test[5, 0, 3, 6]) == float(unit.x_test[5, 3 * 8 + 6])


# ------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("test_size", [0.0, 1.0, -0.1, 1.5, float("nan"), "0.2", True])
def test_bad_test_size_raises(test_size: object) -> None:
    with pytest.raises(ValueError, match="test_size"):
        load_digits_split(test_size=test_size)  # type: ignore[arg-type]


def test_bad_scale_raises() -> None:
    with pytest.raises(ValueError, match="valid choices: 'unit', 'standard'"):
        load_digits_split(scale="minmax")


def _split(**overrides: object) -> DatasetSplit:
    fields: dict[str, object] = dict(
        x_train=torch.zeros(4, 3),
        y_train=torch.tensor([0, 1, 2, 1]),
        x_test=torch.zeros(2, 3),
        y_test=torch.tensor([2, 0]),
        num_classes=3,
        feature_shape=(3,),
        name="toy",
    )
    fields.update(overrides)
    return DatasetSplit(**fields)  # type: ignore[arg-type]


def test_dataset_split_validates() -> None:
    assert _split().num_features == 3
    with pytest.raises(ValueError, match="y_train"):
        _split(y_train=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"y_test labels must lie in \[0, 3\)"):
        _split(y_test=torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="y_train labels"):
        _split(y_train=torch.tensor([0, -1, 2, 1]))
    with pytest.raises(ValueError, match="float32"):
        _split(x_test=torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="int64"):
        _split(y_test=torch.tensor([2, 0], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"expected x_test of shape \[N, 3\]"):
        _split(x_test=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="num_classes"):
        _split(num_classes=0)


# ------------------------------------------------------------------------------------------- batches


def test_batches_cover_every_sample_once() -> None:
    x = torch.arange(103, dtype=torch.float32).unsqueeze(1) * 10
    y = torch.arange(103)
    batches = list(iterate_batches(x, y, 16, generator=torch.Generator().manual_seed(0)))
    assert [len(yb) for _, yb in batches] == [16] * 6 + [7]
    seen = torch.cat([yb for _, yb in batches])
    assert sorted(seen.tolist()) == list(range(103))
    assert not torch.equal(seen, y)  # actually shuffled
    for xb, yb in batches:  # pairs stay aligned
        assert torch.equal(xb[:, 0], yb.float() * 10)


def test_batches_drop_last_and_no_shuffle() -> None:
    x, y = torch.zeros(10, 2), torch.arange(10)
    kept = list(iterate_batches(x, y, 4, generator=0, drop_last=True))
    assert [len(yb) for _, yb in kept] == [4, 4]
    assert len(set(torch.cat([yb for _, yb in kept]).tolist())) == 8
    ordered = [yb.tolist() for _, yb in iterate_batches(x, y, 4, shuffle=False)]
    assert ordered == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(iterate_batches(x[:3], y[:3], 4, shuffle=False, drop_last=True)) == []


def test_batches_are_seeded() -> None:
    x, y = torch.zeros(50, 1), torch.arange(50)

    def order(gen: torch.Generator | int) -> list[int]:
        return torch.cat([yb for _, yb in iterate_batches(x, y, 7, generator=gen)]).tolist()

    assert order(torch.Generator().manual_seed(3)) == order(torch.Generator().manual_seed(3)) == order(3)
    assert order(3) != order(4)
    shared = torch.Generator().manual_seed(3)
    assert order(shared) != order(shared)  # a shared generator advances between epochs


def test_batches_bad_arguments_raise() -> None:
    x, y = torch.zeros(10, 2), torch.arange(10)
    with pytest.raises(ValueError, match="generator"):
        iterate_batches(x, y, 4)
    with pytest.raises(ValueError, match="batch_size"):
        iterate_batches(x, y, 0, shuffle=False)
    with pytest.raises(ValueError, match="same N"):
        iterate_batches(x, y[:9], 4, shuffle=False)
