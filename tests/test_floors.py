"""benchmarks/floors.py: the compute floor's FLOP count against torch's own FLOP counter on the computation it
describes (a time-constant first layer, a second layer stepped over T, forward and backward)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from floors import gemm_flops, gemm_rate, gemm_shapes  # noqa: E402


def test_gemm_flops_match_torch_flop_counter() -> None:
    samples, steps, sizes = 7, 5, [6, 9, 4]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(samples, sizes[0], generator=g)  # data: no gradient
    w1 = torch.randn(sizes[1], sizes[0], generator=g, requires_grad=True)
    w2 = torch.randn(sizes[2], sizes[1], generator=g, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        z = x @ w1.t()  # direct input: the same at every step, one product per sample
        h = torch.sigmoid(z).unsqueeze(0).expand(steps, *z.shape) * torch.rand(steps, 1, 1, generator=g)
        y = h.reshape(steps * samples, -1) @ w2.t()  # every step
        y.square().sum().backward()
    assert counter.get_total_flops() == gemm_flops(samples, steps, sizes)


def test_gemm_shapes_cover_the_count_and_the_rate_is_positive() -> None:
    k, b, steps, sizes = 3, 4, 5, [6, 9, 4]
    shapes = gemm_shapes(k, b, steps, sizes)
    assert sum(2 * n * m * kd * o for _, n, m, kd, o in shapes) == gemm_flops(k * b, steps, sizes)
    rate, rows = gemm_rate(k, b, steps, sizes, repeats=1)
    assert rate > 0 and len(rows) == len(shapes)
