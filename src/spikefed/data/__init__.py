"""Datasets as seeded, validated train/test splits, and minibatch iteration."""

from __future__ import annotations

from spikefed.data.compact import as_float_batch, to_compact
from spikefed.data.digits import SCALES, DatasetSplit, iterate_batches, load_digits_split

__all__ = ["SCALES", "DatasetSplit", "as_float_batch", "iterate_batches", "load_digits_split", "to_compact"]

from spikefed.data.heterogeneity import (
    TABLE_COLUMNS,
    client_heterogeneity,
    format_table,
    hellinger_gaussian,
    js_divergence,
)
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

__all__ += [
    "PARTITIONS",
    "TABLE_COLUMNS",
    "FeatureTransform",
    "client_heterogeneity",
    "dirichlet",
    "feature_skew",
    "feature_transforms",
    "format_table",
    "hellinger_gaussian",
    "iid",
    "js_divergence",
    "label_distribution",
    "partition",
    "quantity_skew",
    "shards",
]
