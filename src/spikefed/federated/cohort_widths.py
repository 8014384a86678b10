"""Batch widths of the cohort engine: which clients of a step run together, on how many samples.

Clients own different amounts of data, so at one local step the active clients' batches have different lengths
(a client's last batch of an epoch is short; a client smaller than ``batch_size`` has only short batches). The
stacked forward needs one width per call, so shorter batches are padded with masked samples (weight 0: they
change no gradient). Padding every batch to ``batch_size`` computed, for the scenario's conv net at 100 clients,
5,440 samples for 4,000 real ones (26% of the work on padding). Here each client's batch is computed at its own
width rounded up to a multiple of ``bucket`` (:data:`WIDTH_STEP`), and the clients of a step that share a width
run as one stacked forward: fewer padded samples, a few more (smaller) calls per step.

The width is a function of the client's own batch length and ``batch_size`` only, never of the other clients of
the cohort, so a client's arithmetic is the same whichever clients share its cohort, chunk or rank (the
distributed runs' bit-for-bit guarantee, docs/distributed.md).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..snn.train import TrainConfig

#: default of ``train_cohort(bucket=...)``: a client's batch of ``s`` samples is computed at width
#: ``ceil(s / WIDTH_STEP) * WIDTH_STEP`` (at most ``batch_size``), in one stacked forward per width
#: (``benchmarks/conv_floor.py --buckets`` measures the choices)
WIDTH_STEP = 8


def batch_widths(sizes: Sequence[int], cfg: TrainConfig, bucket: int = WIDTH_STEP) -> list[int]:
    """The width each batch (``sizes[i]`` real samples) is computed at by the cohort engine.

    ``bucket >= 1``: ``sizes[i]`` rounded up to a multiple of ``bucket``, at most ``max(sizes[i],
    cfg.batch_size)``; a function of the client's own batch alone, so a client's arithmetic does not depend on
    which clients share its cohort (one process, chunks or ranks: bit-identical updates). ``bucket=1``: no
    padding at all. ``bucket=0``: the earlier rule, every batch padded to ``max(cfg.batch_width, max(sizes))``
    (cohort-independent only with ``batch_width`` set to the federation's widest batch)."""
    if isinstance(bucket, bool) or not isinstance(bucket, int) or bucket < 0:
        raise ValueError(f"bucket must be an integer >= 0 (0: pad to batch_width), got {bucket!r}")
    if bucket == 0:
        return [max(cfg.batch_width, max(sizes))] * len(sizes) if sizes else []
    return [min(-(-s // bucket) * bucket, max(s, cfg.batch_size)) for s in sizes]


def width_groups(sizes: Sequence[int], cfg: TrainConfig, bucket: int = WIDTH_STEP,
                 device: torch.device | str = "cpu") -> list[tuple[list[int], slice | torch.Tensor, int]]:
    """The active clients of one step (rows ``0..len(sizes)-1``) grouped by :func:`batch_widths`, widest first:
    ``(rows, selector, width)`` per group, ``selector`` a slice when the rows are contiguous, else an index
    tensor on ``device``. Each group runs as one stacked forward on ``[len(rows), width]`` samples."""
    by_width: dict[int, list[int]] = {}
    for row, w in enumerate(batch_widths(sizes, cfg, bucket)):
        by_width.setdefault(w, []).append(row)
    groups: list[tuple[list[int], slice | torch.Tensor, int]] = []
    for w in sorted(by_width, reverse=True):
        rows = by_width[w]
        contiguous = rows[-1] - rows[0] + 1 == len(rows)
        sel = slice(rows[0], rows[-1] + 1) if contiguous else torch.tensor(rows, dtype=torch.int64, device=device)
        groups.append((rows, sel, w))
    return groups


def padded_fraction(schedules: Sequence[Sequence[torch.Tensor]], cfg: TrainConfig,
                    bucket: int = WIDTH_STEP) -> float:
    """Share of the samples the cohort engine computes that are padding, over the given clients' schedules:
    ``1 - real / computed`` (the work of the padded rows, in samples)."""
    real = computed = 0
    for j in range(max((len(s) for s in schedules), default=0)):
        sizes = [len(s[j]) for s in schedules if len(s) > j]
        real += sum(sizes)
        computed += sum(batch_widths(sizes, cfg, bucket))
    return 1.0 - real / computed if computed else 0.0
