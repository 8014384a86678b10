"""The fused stacked Adam update against ``torch.optim.Adam`` run on each client's slice alone (float64)."""

from __future__ import annotations

import pytest
import torch

from spikefed.federated.cohort import StackedOptimizer
from spikefed.federated.stacked_adam import fused_adam_
from spikefed.snn.train import TrainConfig


def _per_row_adam(rows: list[torch.Tensor], grads: list[list[torch.Tensor]], lr: float,
                  wd: float) -> list[torch.Tensor]:
    """Each row a parameter of its own under ``torch.optim.Adam`` (the single-tensor path), ``len(grads)`` steps."""
    out = []
    for i, r in enumerate(rows):
        p = torch.nn.Parameter(r.clone())
        opt = torch.optim.Adam([p], lr=lr, weight_decay=wd, foreach=False)
        for step_grads in grads:
            p.grad = step_grads[i].clone()
            opt.step()
        out.append(p.detach())
    return out


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_fused_update_equals_torch_adam_per_row(wd: float) -> None:
    g = torch.Generator().manual_seed(1)
    k, shape, steps, lr = 5, (3, 4), 4, 0.01
    p = torch.randn(k, *shape, dtype=torch.float64, generator=g)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    grads = [[torch.randn(*shape, dtype=torch.float64, generator=g) for _ in range(k)] for _ in range(steps)]
    expect = _per_row_adam(list(p), grads, lr, wd)
    for t in range(steps):
        assert fused_adam_([p], [torch.stack(grads[t])], [m], [v], t + 1, lr, wd)
    for i in range(k):
        torch.testing.assert_close(p[i], expect[i], rtol=0, atol=1e-12)


def test_stacked_optimizer_prefix_steps_equal_torch_adam() -> None:
    """The engine's pattern: all clients take step 1, then only a prefix goes on (fused path throughout), and a
    masked step afterwards (unfused path): every client as if trained alone with torch.optim.Adam."""
    g = torch.Generator().manual_seed(2)
    k, lr = 4, 0.02
    w0 = torch.randn(k, 64, dtype=torch.float64, generator=g)  # fused (64 values per client)
    b0 = torch.randn(k, 6, dtype=torch.float64, generator=g)  # unfused (6 values per client)
    params = {"w": w0.clone(), "b": b0.clone()}
    cfg = TrainConfig(optimizer="adam", lr=lr, weight_decay=0.01)
    opt = StackedOptimizer(params, cfg, k)
    active_sets = [range(4), range(2), range(1)]
    per_client: dict[str, list[list[torch.Tensor]]] = {n: [[] for _ in range(k)] for n in params}
    for act in active_sets:
        m = len(act)
        gr = {n: torch.randn(m, p.shape[1], dtype=torch.float64, generator=g) for n, p in params.items()}
        opt.step_prefix(gr, m)
        for n in params:
            for i in act:
                per_client[n][i].append(gr[n][i])
    mask = torch.tensor([False, True, False, True])
    gr = {n: torch.randn(k, p.shape[1], dtype=torch.float64, generator=g) for n, p in params.items()}
    opt.step(gr, mask)
    for n in params:
        for i in (1, 3):
            per_client[n][i].append(gr[n][i])
    assert opt.host_steps is None  # the masked path leaves the host counts behind
    for n, start in (("w", w0), ("b", b0)):
        for i in range(k):
            expect = _per_row_adam([start[i]], [[s] for s in per_client[n][i]], lr, 0.01)[0]
            torch.testing.assert_close(params[n][i], expect, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_clients_update_does_not_depend_on_the_stack_it_shares(dtype: torch.dtype) -> None:
    """A fusable stack (64 values per client) split into parts of any size gives the same bits per client as the
    whole stack: a cohort split across ranks or chunks reproduces the one-process run."""
    from spikefed.federated.stacked_adam import fusable

    g = torch.Generator().manual_seed(9)
    k = 13
    p = torch.randn(k, 2, 32, dtype=dtype, generator=g)
    assert fusable(p) and not fusable(torch.zeros(k, 10))
    grads = [torch.randn(k, 2, 32, dtype=dtype, generator=g) for _ in range(3)]
    whole, m, v = p.clone(), torch.zeros_like(p), torch.zeros_like(p)
    for t, gr in enumerate(grads):
        assert fused_adam_([whole], [gr], [m], [v], t + 1, 0.01, 0.0)
    for lo, hi in ((0, 1), (1, 6), (6, 13)):
        part, mp, vp = p[lo:hi].clone(), torch.zeros_like(p[lo:hi]), torch.zeros_like(p[lo:hi])
        for t, gr in enumerate(grads):
            assert fused_adam_([part], [gr[lo:hi]], [mp], [vp], t + 1, 0.01, 0.0)
        assert torch.equal(part, whole[lo:hi])


def test_refuses_without_touching_what_it_cannot_fuse() -> None:
    p = torch.randn(4, 3).t()  # not contiguous
    before = p.clone()
    assert not fused_adam_([p], [torch.ones(3, 4)], [torch.zeros(3, 4)], [torch.zeros(3, 4)], 1, 0.1, 0.0)
    assert torch.equal(p, before)
    assert not fused_adam_([torch.zeros(2)], [torch.ones(2)], [torch.zeros(2)], [torch.zeros(2)], 0, 0.1, 0.0)


def test_strided_gradients_are_read_as_their_values() -> None:
    """Gradients from the vmap path can be strided views (transposed, expanded): the update must use their
    values, not their memory."""
    g = torch.Generator().manual_seed(3)
    k, lr = 3, 0.05
    p = torch.randn(k, 4, 2, dtype=torch.float64, generator=g)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    grad = torch.randn(k, 2, 4, dtype=torch.float64, generator=g).transpose(1, 2)  # [k, 4, 2], not contiguous
    shared = torch.randn(4, 2, dtype=torch.float64, generator=g)
    expect = _per_row_adam(list(p), [[grad[i] for i in range(k)], [shared] * k], lr, 0.0)
    assert fused_adam_([p], [grad], [m], [v], 1, lr, 0.0)
    assert fused_adam_([p], [shared.expand(k, 4, 2)], [m], [v], 2, lr, 0.0)
    for i in range(k):
        torch.testing.assert_close(p[i], expect[i], rtol=0, atol=1e-12)
