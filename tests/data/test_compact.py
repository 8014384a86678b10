"""Compact frame stores (spikefed.data.compact): the dtype rule, exact float batches, widening, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikefed.data.compact import as_float_batch, compact_dtype, to_compact, write_rows
from spikefed.data import heterogeneity
from spikefed.data.digits import DatasetSplit
from spikefed.data.heterogeneity import REPORT_SETTINGS, client_heterogeneity


@pytest.mark.parametrize("top, dtype", [(0, torch.uint8), (1, torch.uint8), (255, torch.uint8), (256, torch.int16),
                                        (32767, torch.int16), (32768, torch.int32), (2**31 - 1, torch.int32)])
def test_the_narrowest_dtype_holding_the_count(top: int, dtype: torch.dtype) -> None:
    assert compact_dtype(top) == dtype
    assert torch.tensor([top]).to(dtype).item() == top  # holds it exactly


def test_counts_beyond_int32_and_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="exceeds the largest compact dtype"):
        compact_dtype(2**31)
    with pytest.raises(ValueError, match=">= 0"):
        to_compact(np.array([[0.0, -1.0]]))
    with pytest.raises(ValueError, match="whole event counts"):
        to_compact(np.array([0.5]))
    with pytest.raises(ValueError, match="whole event counts"):
        to_compact(np.array([np.nan]))


def test_to_compact_keeps_every_value() -> None:
    rng = np.random.default_rng(0)
    for top, dtype in ((1, torch.uint8), (300, torch.int16), (70000, torch.int32)):
        frames = rng.integers(0, top + 1, size=(5, 3, 7)).astype(np.float32)
        frames[0, 0, 0] = top
        got = to_compact(frames)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.numpy().astype(np.float64), frames.astype(np.float64))


def test_float_batches_are_exact_and_float_data_is_passed_through() -> None:
    counts = np.arange(256, dtype=np.uint8).reshape(4, 2, 32)
    for dtype, np_dtype in ((torch.float32, np.float32), (torch.float64, np.float64)):
        got = as_float_batch(torch.from_numpy(counts), dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.numpy(), counts.astype(np_dtype))
    dense = torch.randn(3, 4)
    assert as_float_batch(dense, torch.float32) is dense  # no copy
    assert as_float_batch(torch.tensor([300], dtype=torch.int16), torch.float32).item() == 300.0


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool, torch.complex64])
def test_a_wrong_store_dtype_is_a_clear_error(dtype: torch.dtype) -> None:
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(TypeError, match=f"dtype {name}: a frame store is floating point or compact"):
        as_float_batch(torch.zeros(2, 3, dtype=dtype), torch.float32)
    with pytest.raises(TypeError, match="floating target dtype"):
        as_float_batch(torch.zeros(2, dtype=torch.uint8), torch.int32)


def test_write_rows_widens_a_store_and_never_clips() -> None:
    store = torch.tensor([[1, 2], [3, 4], [5, 6]], dtype=torch.uint8)
    same = write_rows(store, np.array([0]), np.array([[7.0, 255.0]]))
    assert same is store and store[0].tolist() == [7, 255]
    wide = write_rows(store, np.array([2]), np.array([[1000.0, 0.0]]))
    assert wide.dtype == torch.int16 and wide.tolist() == [[7, 255], [3, 4], [1000, 0]]
    flt = torch.zeros(2, 2)
    assert write_rows(flt, np.array([1]), np.array([[400.0, 2.5]])) is flt and flt[1].tolist() == [400.0, 2.5]
    with pytest.raises(ValueError, match="whole event counts"):
        write_rows(store, np.array([0]), np.array([[0.5, 0.0]]))


def _split(x_train: torch.Tensor, x_test: torch.Tensor, sequence: bool) -> DatasetSplit:
    return DatasetSplit(x_train, torch.zeros(len(x_train), dtype=torch.int64), x_test,
                        torch.zeros(len(x_test), dtype=torch.int64), 2, tuple(x_train.shape[1:]), "t", sequence)


def test_dataset_split_takes_compact_sequences_only() -> None:
    x = torch.zeros(4, 3, 5, dtype=torch.uint8)
    assert _split(x, x[:2], True).x_train.dtype == torch.uint8
    with pytest.raises(ValueError, match="x_train must be a float32 torch.Tensor"):
        _split(x, x[:2], False)  # static (dense) data stays float
    with pytest.raises(ValueError, match="uint8 / int16 / int32 counts"):
        _split(x.long(), x[:2], True)


@pytest.mark.parametrize("block_bytes", [32 << 20, 8 * 1050 * 100])  # one block; 11 blocks of 100 rows
def test_heterogeneity_of_a_large_compact_store_equals_the_float_path(block_bytes: int,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heterogeneity, "PROJECTION_BLOCK_BYTES", block_bytes)
    # min(N, D) > EXACT_PCA_MAX: the integer store is projected block by block (never made float64 whole)
    rng = np.random.default_rng(3)
    n, d = 1100, 1050
    x = (rng.random((n, d)) < np.linspace(0.02, 0.3, d)).astype(np.uint8)
    x[: n // 2, : d // 3] += 2  # clients 0-1 differ from 2-3
    y = rng.integers(0, 3, n)
    parts = np.array_split(np.arange(n), 4)
    ref = client_heterogeneity(x.astype(np.float64), y, parts, 3, **REPORT_SETTINGS)
    got = client_heterogeneity(torch.from_numpy(x), y, parts, 3, **REPORT_SETTINGS)
    np.testing.assert_allclose(got["hellinger"], ref["hellinger"], rtol=0, atol=1e-8)
    assert got["jsd"] == ref["jsd"]
    assert got["mean_hellinger"] > 0.1
