"""Single-pass stack checks and blocked float64 sums (spikefed.federated.stack_ops) against plain references:
``torch.isfinite`` element by element, sums written out in Python floats, the numpy drift formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spikefed.federated import stack_ops
from spikefed.federated.aggregation import weighted_mean
from spikefed.federated.dissimilarity import client_drift
from spikefed.federated.stack_ops import all_finite, drift_sums, finite_rows, weighted_sum64
from spikefed.federated.types import ClientUpdate


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few rows, so that every loop over blocks runs several times on small test stacks."""
    monkeypatch.setattr(stack_ops, "ROW_BLOCK_BYTES", 64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_finite_rows_equals_elementwise_isfinite(dtype: torch.dtype) -> None:
    big = torch.finfo(dtype).max
    stack = torch.ones(7, 3, 4, dtype=dtype)
    stack[1, 0, 0] = math.nan
    stack[2, 2, 3] = math.inf
    stack[3, 1, 1] = -math.inf
    stack[4] = big  # every value finite, the row sum overflows: must still count as finite
    stack[5, 0, 0], stack[5, 0, 1] = math.inf, -math.inf  # sums to nan
    stack[6] = -big
    expect = [bool(torch.isfinite(stack[i]).all()) for i in range(7)]
    assert finite_rows(stack).tolist() == expect == [True, False, False, False, True, False, True]
    assert all_finite(stack[4]) and all_finite(stack[0]) and not all_finite(stack[:2])
    assert finite_rows(torch.zeros(3, 0)).tolist() == [True] * 3


def test_weighted_sum64_equals_the_sum_written_out(small_blocks: None) -> None:
    g = torch.Generator().manual_seed(3)
    stack = torch.randn(11, 2, 3, generator=g)
    p = torch.rand(11, dtype=torch.float64, generator=g)
    got = weighted_sum64(stack, p)
    assert got.dtype == torch.float64 and got.shape == (2, 3)
    flat = stack.reshape(11, -1).tolist()
    for j in range(6):
        expect = math.fsum(float(p[k]) * flat[k][j] for k in range(11))
        assert float(got.reshape(-1)[j]) == pytest.approx(expect, rel=1e-14, abs=1e-15)


def test_weighted_mean_float32_is_the_rounded_float64_mean_and_keeps_ties(small_blocks: None) -> None:
    g = torch.Generator().manual_seed(4)
    stack = torch.randn(9, 5, generator=g)
    stack[:, 2] = 0.3  # every client agrees here
    w = [float(x) for x in range(1, 10)]
    got = weighted_mean(stack, w)
    p = np.array(w) / sum(w)
    expect = (p[:, None] * stack.double().numpy()).sum(0).astype(np.float32)
    np.testing.assert_array_equal(got.numpy(), expect)
    assert float(got[2]) == float(stack[0, 2])
    with pytest.raises(ValueError, match="non-finite"):
        weighted_mean(torch.tensor([[1.0, math.nan], [2.0, 3.0]]), [1, 1])


def _numpy_drift(d: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    p = w / w.sum()
    mean = sum(p[k] * d[k] for k in range(len(d)))
    cos = sum(p[k] * (1 - d[k] @ mean / (np.linalg.norm(d[k]) * np.linalg.norm(mean))) for k in range(len(d)))
    return float(cos), float(sum(p[k] * d[k] @ d[k] for k in range(len(d))) / (mean @ mean))


def test_drift_sums_and_client_drift_equal_numpy(small_blocks: None) -> None:
    rng = np.random.default_rng(5)
    base = {"a": torch.from_numpy(rng.normal(size=(3, 4))).float(), "b": torch.from_numpy(rng.normal(size=5)).float()}
    ups = [ClientUpdate(k, 3, {n: t + torch.from_numpy(rng.normal(size=t.shape)).float() + 0.5
                               for n, t in base.items()}) for k in range(13)]
    w = rng.uniform(1, 5, size=13)
    d = np.stack([np.concatenate([(u.params[n].double() - base[n].double()).numpy().ravel() for n in base])
                  for u in ups])
    p = torch.from_numpy(w / w.sum())
    stacks = {n: torch.stack([u.params[n] for u in ups]) for n in base}
    mean_sq, norm_sq, dots = drift_sums(stacks, base, p)
    mean = (p.numpy()[:, None] * d).sum(0)
    assert mean_sq == pytest.approx(float(mean @ mean), rel=1e-12)
    np.testing.assert_allclose(norm_sq.numpy(), (d * d).sum(1), rtol=1e-12)
    np.testing.assert_allclose(dots.numpy(), d @ mean, rtol=1e-12)
    row = client_drift(ups, base, w.tolist())
    cos, norm = _numpy_drift(d, w)
    assert row["client_drift_cosine"] == pytest.approx(cos, rel=1e-12)
    assert row["client_drift_norm"] == pytest.approx(norm, rel=1e-12)
    with pytest.raises(ValueError, match="one weight per update"):
        client_drift(ups, base, w.tolist()[:3])
