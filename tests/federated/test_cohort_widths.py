"""Batch widths of the cohort engine (federated/cohort_widths.py): each client's batch is computed at its own
length rounded up to a multiple of ``bucket``, clients of equal width run together, and the updates stay those of
the sequential engine (float64, 1e-10) for ragged client sizes."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import spikefed.federated.cohort as cohort
from spikefed.federated.cohort import ClientData, client_schedule, train_cohort, train_sequential
from spikefed.federated.cohort_widths import batch_widths, padded_fraction, width_groups
from spikefed.federated.continual import StabilityPenalty
from spikefed.federated.types import FitInstructions, params_of
from spikefed.snn.models import SpikingConvNet, SpikingMLP
from spikefed.snn.train import TrainConfig

RAGGED = [1, 31, 33, 64]  # one sample, just under / over one batch of 32, two full batches


def _round_up(s: int, q: int) -> int:
    return ((s + q - 1) // q) * q


def test_batch_widths_follow_the_rounding_rule() -> None:
    cfg = TrainConfig(batch_size=32)
    sizes = [1, 7, 8, 9, 31, 32]
    assert batch_widths(sizes, cfg, 8) == [8, 8, 8, 16, 32, 32]
    assert batch_widths(sizes, cfg, 1) == sizes  # no padding
    assert batch_widths(sizes, cfg, 5) == [5, 10, 10, 10, 32, 32]  # 35 would pass batch_size: capped at 32
    assert batch_widths(sizes, cfg, 0) == [32] * 6  # the earlier rule: the widest batch
    assert batch_widths([3, 9], TrainConfig(batch_size=32, batch_width=20), 0) == [20, 20]
    cfg50 = TrainConfig(batch_size=50)
    assert batch_widths([50, 45, 41], cfg50, 8) == [50, 48, 48]
    for q in (1, 3, 8, 16):  # never below the batch, never above max(batch, batch_size), a multiple of q below
        for s in range(1, 51):
            (w,) = batch_widths([s], cfg50, q)
            assert s <= w <= 50 and (w == 50 or w % q == 0) and w - s < q


@pytest.mark.parametrize("bucket", [-1, True, 1.5, "8"])
def test_bad_bucket_is_refused_before_any_work(bucket: Any) -> None:
    with pytest.raises(ValueError, match="bucket must be an integer >= 0"):
        batch_widths([4], TrainConfig(), bucket)
    model = SpikingMLP([4, 3, 2], generator=torch.Generator().manual_seed(0))
    clients = [ClientData(0, torch.rand(5, 4), torch.zeros(5, dtype=torch.int64))]
    with pytest.raises(ValueError, match="bucket must be an integer >= 0"):
        train_cohort(model, params_of(model), clients, [torch.Generator()], TrainConfig(), FitInstructions(1),
                     bucket=bucket)


def test_width_groups_partition_the_rows() -> None:
    cfg = TrainConfig(batch_size=32)
    sizes = [32, 1, 31, 1, 32, 12]
    groups = width_groups(sizes, cfg, 8)
    assert [w for _, _, w in groups] == [32, 16, 8]  # widest first
    assert sorted(r for rows, _, _ in groups for r in rows) == list(range(len(sizes)))
    for rows, sel, w in groups:
        assert all(_round_up(sizes[r], 8) == w for r in rows)
        picked = torch.arange(len(sizes))[sel].tolist()
        assert picked == rows
    by_width = {w: sel for _, sel, w in groups}
    assert isinstance(by_width[16], slice)  # one row: contiguous
    assert isinstance(by_width[8], torch.Tensor)  # rows 1 and 3: an index tensor


def test_padded_fraction_counts_the_padded_samples() -> None:
    cfg = TrainConfig(batch_size=32, epochs=1)
    schedules = [client_schedule(n, cfg, torch.Generator().manual_seed(0)) for n in RAGGED]
    real = sum(RAGGED)
    # steps: [1, 31, 32, 32] then [1, 32]; padded to 32: 4 * 32 + 2 * 32; to multiples of 8: 8+32+32+32, 8+32
    assert padded_fraction(schedules, cfg, 0) == pytest.approx(1 - real / (6 * 32))
    assert padded_fraction(schedules, cfg, 8) == pytest.approx(1 - real / (104 + 40))
    assert padded_fraction(schedules, cfg, 1) == 0.0


def _clients(shape: tuple[int, ...], classes: int) -> list[ClientData]:
    gen = torch.Generator().manual_seed(7)
    return [ClientData(i, torch.rand((n, *shape), generator=gen, dtype=torch.float64) * 1.5,
                       torch.randint(0, classes, (n,), generator=gen)) for i, n in enumerate(RAGGED)]


def _gens() -> list[torch.Generator]:
    return [torch.Generator().manual_seed(300 + i) for i in range(len(RAGGED))]


def _ragged_case(kind: str) -> tuple[torch.nn.Module, list[ClientData], TrainConfig]:
    gen = torch.Generator().manual_seed(4)
    if kind == "conv":
        model: torch.nn.Module = SpikingConvNet((1, 6, 6), 3, channels=(3,), kernel_size=3, generator=gen)
        clients = _clients((1, 6, 6), 3)
    else:
        model = SpikingMLP([10, 12, 3], generator=gen)
        clients = _clients((10,), 3)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.02, num_steps=4, encoder="rate", weight_decay=1e-3,
                      grad_clip=2.0, reg_l1=0.05, reg_bounds=0.5, rate_lower=0.1, rate_upper=0.3)
    clients = [ClientData(c.client_id, c.x.clamp(max=1.0), c.y) for c in clients]
    return model.double(), clients, cfg


@pytest.mark.parametrize("bucket", [0, 1, 8, 16])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_ragged_clients_match_the_sequential_engine(kind: str, bucket: int) -> None:
    """Clients of 1, 31, 33 and 64 samples (batch 32, 2 epochs): steps whose clients split into several width
    groups, some of them non-contiguous rows, with stochastic (rate) encoding, activity regularisers, FedProx
    and a continual penalty (these two over all clients at once), per-client gradient clipping and Adam."""
    model, clients, cfg = _ragged_case(kind)
    g = params_of(model)
    gen = torch.Generator().manual_seed(9)
    anchor = {n: p + 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in g.items()}
    penalties = [None, StabilityPenalty(0.3, anchor), None, StabilityPenalty(0.2, anchor)]
    fit = FitInstructions(1, prox_mu=0.4)
    a = train_cohort(model, g, clients, _gens(), cfg, fit, penalties=penalties, bucket=bucket)
    b = train_sequential(model, g, clients, _gens(), cfg, fit, penalties=penalties)
    moved = max(float((u.params[n] - g[n]).abs().max()) for u in b for n in u.params)
    assert moved > 1e-3  # training really happened
    for ua, ub in zip(a, b):
        assert ua.client_id == ub.client_id and ua.steps == ub.steps
        for n in ua.params:
            assert torch.allclose(ua.params[n], ub.params[n], rtol=0, atol=1e-10), (n, ua.client_id)
        assert ua.metrics["loss"] == pytest.approx(ub.metrics["loss"], rel=1e-9)
        assert ua.metrics["accuracy"] == pytest.approx(ub.metrics["accuracy"])


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_each_forward_runs_its_groups_width(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stacked forward sees, per step, one call per width group with exactly that many samples per client
    (the padded work is what the rounding rule says, not the widest batch)."""
    model, clients, cfg = _ragged_case(kind)
    seen: list[tuple[int, int]] = []
    real = cohort.stacked_forward

    def spy(model: Any, params: Any, x: torch.Tensor, *args: Any, **kw: Any) -> Any:
        seen.append((x.shape[1], x.shape[2]))  # [T, K, B, ...]: clients, width
        return real(model, params, x, *args, **kw)

    monkeypatch.setattr(cohort, "stacked_forward", spy)
    train_cohort(model, params_of(model), clients, _gens(), cfg, FitInstructions(1), bucket=8)
    expected = []
    schedules = [client_schedule(c.num_samples, cfg, g) for c, g in zip(clients, _gens())]
    for j in range(max(len(s) for s in schedules)):
        widths = [_round_up(len(s[j]), 8) for s in schedules if len(s) > j]
        expected += [(widths.count(w), w) for w in sorted(set(widths), reverse=True)]
    assert sorted(seen) == sorted(expected)
    assert sum(k * w for k, w in seen) < 32 * sum(k for k, _ in seen)  # less than padding every batch to 32


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_updates_do_not_depend_on_the_other_clients(kind: str) -> None:
    """A client's width depends on its own batch only: trained alone (chunks of one) or with the others, its
    update is the same bits on the hand-written MLP path. The vmap path (conv) agrees to rounding only: its
    linear layers become batched matmuls, and MKL's batched matmul of one matrix rounds differently from that of
    several (as before width groups: a chunk of one client differed in the last bits too)."""
    model, clients, cfg = _ragged_case(kind)
    g = params_of(model)
    together = train_cohort(model, g, clients, _gens(), cfg, FitInstructions(1))
    alone = train_cohort(model, g, clients, _gens(), cfg, FitInstructions(1), max_clients=1)
    for ua, ub in zip(together, alone):
        for n in ua.params:
            if kind == "mlp":
                assert torch.equal(ua.params[n], ub.params[n]), (n, ua.client_id)
            else:
                assert torch.allclose(ua.params[n], ub.params[n], rtol=0, atol=1e-12), (n, ua.client_id)
