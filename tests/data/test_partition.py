from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spikefed.data import load_digits_split
from spikefed.data.heterogeneity import js_divergence
from spikefed.data.partition import (
    PARTITIONS,
    FeatureTransform,
    dirichlet,
    feature_skew,
    feature_transforms,
    iid,
    label_distribution,
    partition,
    quantity_skew,
    shards,
)


@pytest.fixture(scope="module")
def digits_labels() -> np.ndarray:
    return load_digits_split().y_train.numpy()


def assert_partition(parts: list[np.ndarray], n: int, num_clients: int) -> None:
    """Each part is a sorted 1-D int64 array and every index of range(n) appears exactly once overall."""
    assert len(parts) == num_clients
    for p in parts:
        assert isinstance(p, np.ndarray) and p.dtype == np.int64 and p.ndim == 1
        assert np.all(np.diff(p) > 0), "indices must be sorted and distinct within a client"
    everything = np.concatenate(parts)
    assert everything.size == n
    assert np.array_equal(np.sort(everything), np.arange(n))


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def mean_jsd(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> float:
    glob = np.bincount(labels, minlength=num_classes)
    return float(np.mean([js_divergence(np.bincount(labels[p], minlength=num_classes), glob) for p in parts]))


# --------------------------------------------------------------------------------------------------- iid


@pytest.mark.parametrize(
    ("n", "k", "sizes"),
    [(10, 3, [4, 3, 3]), (7, 7, [1] * 7), (5, 1, [5]), (1437, 10, [144] * 7 + [143] * 3)],
)
def test_iid_is_a_partition_with_sizes_within_one(n: int, k: int, sizes: list[int]) -> None:
    parts = iid(n, k, np.random.default_rng(0))
    assert_partition(parts, n, k)
    assert [p.size for p in parts] == sizes


def test_iid_seeding() -> None:
    a = iid(100, 4, 7)
    assert same(a, iid(100, 4, 7))
    assert same(a, iid(100, 4, np.random.default_rng(7)))  # an int seed is a fresh default_rng(seed)
    assert not same(a, iid(100, 4, 8))
    g = np.random.default_rng(7)
    first, second = iid(100, 4, g), iid(100, 4, g)  # a shared generator advances
    assert same(first, a) and not same(first, second)


def test_iid_is_uniform() -> None:
    # P(sample j lands in client i) = 1/N for every j, i: check sample 0 and sample 11 over many seeds.
    g = np.random.default_rng(123)
    trials = 3000
    hits = np.zeros((2, 3))
    for _ in range(trials):
        parts = iid(12, 3, g)
        for row, j in enumerate((0, 11)):
            hits[row, [j in p for p in parts].index(True)] += 1
    sigma = math.sqrt((1 / 3) * (2 / 3) / trials)
    assert np.all(np.abs(hits / trials - 1 / 3) < 5 * sigma)


def test_iid_bad_input() -> None:
    with pytest.raises(ValueError, match="num_clients must be >= 1, got 0"):
        iid(10, 0, 0)
    with pytest.raises(ValueError, match=r"num_clients \* min_size must be <= num_samples = 10"):
        iid(10, 11, 0)
    with pytest.raises(ValueError, match="num_samples must be"):
        iid(0, 1, 0)
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator or an int seed"):
        iid(10, 2, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rng must be"):
        iid(10, 2, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_clients must be an int"):
        iid(10, True, 0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- dirichlet


def test_dirichlet_partition_and_min_size(digits_labels: np.ndarray) -> None:
    n = digits_labels.size
    for seed in range(3):
        parts = dirichlet(digits_labels, 10, 0.1, seed, min_size=25)
        assert_partition(parts, n, 10)
        assert min(p.size for p in parts) >= 25
        assert same(parts, dirichlet(digits_labels, 10, 0.1, seed, min_size=25))
    assert not same(dirichlet(digits_labels, 10, 0.1, 0), dirichlet(digits_labels, 10, 0.1, 1))


def test_dirichlet_small_alpha_is_more_skewed(digits_labels: np.ndarray) -> None:
    skewed = np.mean([mean_jsd(digits_labels, dirichlet(digits_labels, 10, 0.1, s), 10) for s in range(3)])
    balanced = np.mean([mean_jsd(digits_labels, dirichlet(digits_labels, 10, 100.0, s), 10) for s in range(3)])
    assert skewed > 0.3 > 0.02 > balanced
    # Each client sees only a few classes under alpha = 0.1, all ten under alpha = 100.
    few = label_distribution(digits_labels, dirichlet(digits_labels, 10, 0.1, 0), 10)
    many = label_distribution(digits_labels, dirichlet(digits_labels, 10, 100.0, 0), 10)
    assert (few > 0).sum(axis=1).mean() < 7 and (many > 0).all()


def test_dirichlet_huge_alpha_splits_every_class_evenly() -> None:
    # q_c -> (1/N, ..., 1/N) as alpha -> inf, and counts are n_c q_i up to rounding (< 1 away).
    labels = np.repeat(np.arange(3), [40, 57, 23])
    counts = label_distribution(labels, dirichlet(labels, 4, 1e7, 0, min_size=0), 3)
    expected = np.array([40, 57, 23]) / 4
    assert np.all(np.abs(counts - expected) <= 1.0 + 1e-9)
    assert (counts.sum(axis=0) == [40, 57, 23]).all()


def test_dirichlet_impossible_min_size_raises() -> None:
    # Two classes and a nearly one-hot q: at most two of the four clients get any sample.
    labels = np.repeat([0, 1], 20)
    with pytest.raises(ValueError, match=r"min_size = 5 was impossible to meet: in 3 Dirichlet draws"):
        dirichlet(labels, 4, 1e-4, 0, min_size=5, max_retries=2)
    # min_size = 0 accepts empty clients and still covers every sample once.
    assert_partition(dirichlet(labels, 4, 1e-4, 0, min_size=0), 40, 4)


@pytest.mark.parametrize("alpha", [0, -1.0, math.nan, math.inf])
def test_dirichlet_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha must be > 0"):
        dirichlet(np.zeros(100, dtype=np.int64), 2, alpha, 0)


def test_dirichlet_bad_input(digits_labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"num_clients \* min_size must be <= num_samples = 1437, got 144 \* 10"):
        dirichlet(digits_labels, 144, 1.0, 0)
    with pytest.raises(ValueError, match="num_clients must be >= 1"):
        dirichlet(digits_labels, 0, 1.0, 0)
    with pytest.raises(ValueError, match="max_retries must be >= 0"):
        dirichlet(digits_labels, 2, 1.0, 0, max_retries=-1)
    with pytest.raises(ValueError, match="min_size must be >= 0"):
        dirichlet(digits_labels, 2, 1.0, 0, min_size=-1)
    with pytest.raises(ValueError, match="labels must be >= 0"):
        dirichlet(np.array([0, -1, 1]), 1, 1.0, 0, min_size=1)
    with pytest.raises(ValueError, match="labels must be a non-empty 1-D array"):
        dirichlet(np.zeros((4, 2), dtype=np.int64), 1, 1.0, 0, min_size=1)
    with pytest.raises(ValueError, match="labels must be integer class ids"):
        dirichlet(np.array([0.5, 1.0]), 1, 1.0, 0, min_size=1)


# ------------------------------------------------------------------------------------------------ shards


def test_shards_balanced_classes_by_hand() -> None:
    labels = np.random.default_rng(5).permutation(np.repeat(np.arange(10), 20))
    # 10 clients x 1 shard: 10 shards of 20 = exactly one whole class per client, all classes used once.
    counts = label_distribution(labels, shards(labels, 10, 1, 0), 10)
    assert sorted(np.flatnonzero(row).item() for row in counts) == list(range(10))
    assert set(counts.ravel().tolist()) == {0, 20}
    # 10 clients x 2 shards: 20 shards of 10, each inside one class -> <= 2 classes, counts in {0, 10, 20}.
    parts = shards(labels, 10, 2, 0)
    assert_partition(parts, 200, 10)
    counts = label_distribution(labels, parts, 10)
    assert set(counts.ravel().tolist()) <= {0, 10, 20}
    assert ((counts > 0).sum(axis=1) <= 2).all() and (counts.sum(axis=1) == 20).all()


@pytest.mark.parametrize("k", [2, 3, 5])
def test_shards_on_digits_class_bound(digits_labels: np.ndarray, k: int) -> None:
    n, num_clients = digits_labels.size, 10
    shard_hi = math.ceil(n / (num_clients * k))
    # Precondition of the documented guarantee: shards no larger than the smallest class + 1.
    assert shard_hi <= np.bincount(digits_labels).min() + 1
    parts = shards(digits_labels, num_clients, k, 1)
    assert_partition(parts, n, num_clients)
    counts = label_distribution(digits_labels, parts, 10)
    assert ((counts > 0).sum(axis=1) <= 2 * k).all()
    sizes = np.array([p.size for p in parts])
    assert sizes.min() >= k * (n // (num_clients * k)) and sizes.max() <= k * shard_hi
    assert mean_jsd(digits_labels, parts, 10) > mean_jsd(digits_labels, iid(n, num_clients, 1), 10) + 0.2


def test_shards_seeding_and_bad_input(digits_labels: np.ndarray) -> None:
    assert same(shards(digits_labels, 5, 2, 3), shards(digits_labels, 5, 2, 3))
    assert not same(shards(digits_labels, 5, 2, 3), shards(digits_labels, 5, 2, 4))
    with pytest.raises(ValueError, match="shards_per_client must be >= 1, got 0"):
        shards(digits_labels, 5, 0, 0)
    with pytest.raises(ValueError, match=r"num_clients \* shards_per_client must be <= num_samples = 6"):
        shards(np.arange(6), 4, 2, 0)


# ---------------------------------------------------------------------------------------------- quantity


def test_quantity_sizes_follow_documented_pareto_shares() -> None:
    n, k, a, m = 1437, 10, 1.5, 10
    for seed in range(4):
        parts = quantity_skew(n, k, seed, exponent=a, min_size=m)
        assert_partition(parts, n, k)
        sizes = np.array([p.size for p in parts])
        assert sizes.sum() == n and sizes.min() >= m
        assert sizes.max() > 2 * sizes.min()  # unequal
        # Independent draw: numpy's Pareto II (Lomax) + 1 is the scale-1 Pareto of the docstring.
        w = 1.0 + np.random.default_rng(seed).pareto(a, size=k)
        expected = m + (n - k * m) * w / w.sum()
        assert np.all(np.abs(sizes - expected) < 1.0)


def test_quantity_heavier_tail_is_more_unequal() -> None:
    def largest_share(a: float) -> float:
        biggest = [max(p.size for p in quantity_skew(1000, 10, s, exponent=a, min_size=0)) for s in range(30)]
        return float(np.mean(biggest))

    assert largest_share(0.5) > largest_share(5.0) + 150


def test_quantity_bad_input() -> None:
    with pytest.raises(ValueError, match="exponent must be > 0"):
        quantity_skew(100, 2, 0, exponent=0.0)
    with pytest.raises(ValueError, match=r"num_clients \* min_size must be <= num_samples = 100"):
        quantity_skew(100, 11, 0)
    assert [p.size for p in quantity_skew(100, 10, 0)] == [10] * 10  # nothing left above the floor


# ------------------------------------------------------------------------------------------ feature skew


def test_feature_transforms_draws() -> None:
    ts = feature_transforms(2000, 0, noise_std=0.3, scale_range=(0.5, 2.0), shift_std=0.2)
    scales = np.array([t.scale for t in ts])
    shifts = np.array([t.shift for t in ts])
    assert all(isinstance(t, FeatureTransform) and t.noise_std == 0.3 for t in ts)
    assert scales.min() >= 0.5 and scales.max() < 2.0
    assert abs(scales.mean() - 1.25) < 5 * 1.5 / math.sqrt(12 * 2000)
    assert abs(shifts.mean()) < 5 * 0.2 / math.sqrt(2000) and abs(shifts.std() / 0.2 - 1) < 0.1
    assert len({t.seed for t in ts}) == 2000
    assert feature_transforms(5, 1) == feature_transforms(5, np.random.default_rng(1))
    assert feature_transforms(5, 1) != feature_transforms(5, 2)
    assert all(t.shift == 0.0 for t in feature_transforms(3, 0, shift_std=0.0))


def test_feature_transform_apply() -> None:
    x = torch.tensor([[1.0, 2.0], [-3.0, 0.5]])
    exact = FeatureTransform(scale=2.0, shift=-1.0, noise_std=0.0, seed=0).apply(x)
    assert torch.equal(exact, torch.tensor([[1.0, 3.0], [-7.0, 0.0]]))

    t = FeatureTransform(scale=0.5, shift=0.25, noise_std=0.2, seed=11)
    big = torch.ones(200, 500, dtype=torch.float64)
    noise = t.apply(big, torch.Generator().manual_seed(3)) - 0.75
    assert noise.dtype == torch.float64 and noise.shape == big.shape
    assert abs(noise.mean().item()) < 5 * 0.2 / math.sqrt(big.numel())
    assert abs(noise.std().item() / 0.2 - 1) < 0.01
    # noise comes from the generator: same seed same noise; a shared generator advances; None -> own seed.
    assert torch.equal(t.apply(x, torch.Generator().manual_seed(3)), t.apply(x, 3))
    g = torch.Generator().manual_seed(3)
    assert not torch.equal(t.apply(x, g), t.apply(x, g))
    assert torch.equal(t.apply(x), t.apply(x, t.make_generator()))
    assert torch.equal(t.apply(x), t.apply(x, 11))


def test_feature_transform_bad_input() -> None:
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        FeatureTransform(1.0, 0.0, -0.1, 0)
    with pytest.raises(ValueError, match="scale must be a finite float"):
        FeatureTransform(math.inf, 0.0, 0.1, 0)
    with pytest.raises(ValueError, match="x must be a floating-point torch.Tensor"):
        FeatureTransform(1.0, 0.0, 0.1, 0).apply(torch.ones(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="scale_range must be finite with low <= high"):
        feature_transforms(2, 0, scale_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="shift_std must be >= 0"):
        feature_transforms(2, 0, shift_std=-1.0)


def test_feature_skew_is_iid_plus_transforms() -> None:
    labels = np.arange(50) % 3
    parts, ts = feature_skew(50, 4, 9)
    assert same(parts, iid(50, 4, 9)) and same(parts, partition(labels, 4, "feature", 9))
    g = np.random.default_rng(9)
    iid(50, 4, g)
    assert ts == feature_transforms(4, g)


# -------------------------------------------------------------------------------------------- dispatcher


def test_partition_dispatches(digits_labels: np.ndarray) -> None:
    y, n = digits_labels, digits_labels.size
    assert PARTITIONS == ("iid", "dirichlet", "shards", "quantity", "feature")
    assert same(partition(y, 5, "iid", 0), iid(n, 5, 0))
    assert same(partition(y, 5, "dirichlet", 0, alpha=0.5, min_size=20), dirichlet(y, 5, 0.5, 0, min_size=20))
    assert same(partition(y, 5, "shards", 0, shards_per_client=3), shards(y, 5, 3, 0))
    assert same(partition(y, 5, "quantity", 0, exponent=2.0), quantity_skew(n, 5, 0, exponent=2.0))
    assert same(partition(torch.from_numpy(y), 5, "iid", 0), iid(n, 5, 0))  # tensors accepted
    for method, kwargs in [("iid", {}), ("dirichlet", {"alpha": 1.0}), ("shards", {"shards_per_client": 2}),
                           ("quantity", {}), ("feature", {})]:
        assert_partition(partition(y, 7, method, 1, **kwargs), n, 7)


def test_partition_errors(digits_labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"unknown partition method 'pathological'; valid choices: 'iid', 'dirichlet'"):
        partition(digits_labels, 5, "pathological", 0)
    with pytest.raises(ValueError, match=r"argument\(s\) for partition method 'iid': alpha; valid: none"):
        partition(digits_labels, 5, "iid", 0, alpha=1.0)
    with pytest.raises(ValueError, match=r"'dirichlet': shards_per_client; valid: alpha, min_size, max_retries"):
        partition(digits_labels, 5, "dirichlet", 0, alpha=1.0, shards_per_client=2)
    with pytest.raises(ValueError, match="partition method 'dirichlet' needs keyword argument"):
        partition(digits_labels, 5, "dirichlet", 0)
    with pytest.raises(ValueError, match="partition method 'shards' needs keyword argument"):
        partition(digits_labels, 5, "shards", 0)


# ------------------------------------------------------------------------------------ label distribution


def test_label_distribution_by_hand() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    counts = label_distribution(labels, [np.array([0, 1]), np.array([2, 3, 4, 5])], 4)
    assert counts.dtype == np.int64
    assert counts.tolist() == [[1, 1, 0, 0], [0, 1, 3, 0]]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        label_distribution(labels, [np.arange(6)], 2)
    with pytest.raises(ValueError, match=r"parts\[1\] indices must lie in \[0, 6\)"):
        label_distribution(labels, [np.arange(3), np.array([6])], 3)
