"""Datasets as seeded, validated train/test splits, and minibatch iteration."""

from __future__ import annotations

from spikefed.data.digits import SCALES, DatasetSplit, iterate_batches, load_digits_split

__all__ = ["SCALES", "DatasetSplit", "iterate_batches", "load_digits_split"]
