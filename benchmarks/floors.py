"""The compute floor of a federated round: FLOPs of its matrix products over a GEMM rate measured here.

``benchmarks/fl_round.py`` prints it beside the bandwidth floor (bytes / measured copy bandwidth). Counted for
the K-client workload (spiking MLP ``sizes = [64, 256, 10]``, T steps, direct input, every client trains 1
epoch), in float32, per trained sample:

- a layer whose input changes every step (every layer after the first): forward ``x W^T``, input gradient
  ``g W`` and weight gradient ``g^T x``, each ``2 * in * out`` FLOPs per step: ``3 * 2 * in * out * T``;
- the first layer under direct input (the same input at every step): the forward once and the weight gradient
  once (its gradient summed over T first), no input gradient (the data needs none): ``2 * 2 * in * out``.
  Counting it T times would count products that no engine needs to do, which a floor must not.

The rate: ``torch.bmm`` of the round's own stacked shapes (K clients, ``b`` samples per client: the width at
which the cohort engine computes a full batch; it runs each step's clients in width groups, a batch of ``s``
samples at ``ceil(s / 8) * 8``, ``federated/cohort_widths.py``; float32, torch's current threads), each of the
products above timed (best of ``repeats`` after a warm-up); rate = their FLOPs / their seconds. The compute
floor = the round's GEMM FLOPs / that rate.
"""

from __future__ import annotations

import math
import time

import torch


def gemm_shapes(k: int, b: int, steps: int, sizes: list[int]) -> list[tuple[str, int, int, int, int]]:
    """The round's stacked products as ``(name, batch, m, kdim, n)`` (``batch`` matmuls of ``[m, kdim] x
    [kdim, n]``) for K clients of ``b`` samples each (see the module docstring)."""
    out = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        rows = b if i == 0 else steps * b  # direct input: the first layer's input is the same at every step
        out.append((f"layer{i} forward", k, rows, fan_in, fan_out))
        out.append((f"layer{i} weight grad", k, fan_out, rows, fan_in))
        if i > 0:
            out.append((f"layer{i} input grad", k, rows, fan_out, fan_in))
    return out


def gemm_flops(samples: int, steps: int, sizes: list[int]) -> int:
    """FLOPs of the round's matrix products for ``samples`` trained samples (the module docstring's count)."""
    per_sample = 0
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        per_sample += (2 * 2 * fan_in * fan_out) if i == 0 else (3 * 2 * fan_in * fan_out * steps)
    return samples * per_sample


def gemm_rate(k: int, b: int, steps: int, sizes: list[int], repeats: int = 5) -> tuple[float, list[dict]]:
    """FLOPs per second of ``torch.bmm`` on the round's shapes (float32, current threads): total FLOPs of one
    of each product / the sum of their best times. Also returns each product's shape, FLOPs and seconds."""
    g = torch.Generator().manual_seed(0)
    rows, total_flops, total_s = [], 0, 0.0
    for name, batch, m, kd, n in gemm_shapes(k, b, steps, sizes):
        a = torch.randn(batch, m, kd, generator=g)
        w = torch.randn(batch, kd, n, generator=g)
        out = torch.empty(batch, m, n)
        torch.bmm(a, w, out=out)  # warm-up
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.bmm(a, w, out=out)
            best = min(best, time.perf_counter() - t0)
        flops = 2 * batch * m * kd * n
        rows.append({"product": name, "shape": [batch, m, kd, n], "flops": flops, "seconds": best})
        total_flops += flops
        total_s += best
    return total_flops / total_s, rows
