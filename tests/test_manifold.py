"""Parameter manifolds: declaration, membership, projection and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from spikefed.manifold import (
    EPS,
    EUCLIDEAN,
    KINDS,
    POSITIVE,
    UNIT_INTERVAL,
    Manifold,
    check_open_interval,
    circular,
    declare,
    manifold_of,
    named_manifolds,
    project_parameters_,
)


def test_declare_and_manifold_of() -> None:
    p = nn.Parameter(torch.tensor([0.2, 0.7]))
    assert declare(p, "unit_interval") is p
    assert manifold_of(p) == UNIT_INTERVAL == Manifold("unit_interval")
    q = declare(nn.Parameter(torch.tensor([3.0])), circular(10))
    assert manifold_of(q) == Manifold("circular", 10.0)
    assert manifold_of(q).period == 10.0
    # undeclared tensors (e.g. from other libraries) are euclidean
    assert manifold_of(torch.zeros(3)) == EUCLIDEAN
    assert manifold_of(nn.Linear(2, 2).weight).kind == "euclidean"


def test_named_manifolds_follows_named_parameters() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.decay = declare(nn.Parameter(torch.full((2,), 0.5)), UNIT_INTERVAL)
            self.thr = declare(nn.Parameter(torch.ones(2)), "positive")
            self.delay = declare(nn.Parameter(torch.tensor([0.0, 4.5])), circular(5.0))

    m = M()
    got = list(named_manifolds(m))
    assert [n for n, _ in got] == [n for n, _ in m.named_parameters()]
    assert {n: k.kind for n, k in got} == {
        "lin.weight": "euclidean", "lin.bias": "euclidean", "decay": "unit_interval", "thr": "positive",
        "delay": "circular",
    }


@pytest.mark.parametrize(
    "manifold, inside, outside",
    [
        (EUCLIDEAN, [-1e30, 0.0, 5.0], [math.nan, math.inf]),
        (POSITIVE, [1e-30, 1.0, 1e30], [0.0, -1e-30, -3.0, math.inf, math.nan]),
        (UNIT_INTERVAL, [1e-7, 0.5, 0.9999999], [0.0, 1.0, -0.1, 1.5, math.nan]),
        (circular(4.0), [0.0, 1.0, 3.999], [4.0, -0.001, 7.0, math.nan, math.inf]),
    ],
)
def test_contains(manifold: Manifold, inside: list[float], outside: list[float]) -> None:
    t = torch.tensor(inside, dtype=torch.float64)
    assert manifold.contains(t)
    for v in inside:
        assert manifold.contains(torch.tensor([v], dtype=torch.float64))
    for v in outside:
        assert not manifold.contains(torch.tensor([v], dtype=torch.float64)), v
        assert not manifold.contains(torch.tensor(inside + [v], dtype=torch.float64)), v


def test_project_positive() -> None:
    v = torch.tensor([-3.0, 0.0, 1e-9, EPS, 2.0])
    out = POSITIVE.project_(v)
    assert out is v  # in place
    assert v.tolist() == pytest.approx([EPS, EPS, EPS, EPS, 2.0])
    assert POSITIVE.contains(v)


def test_project_unit_interval() -> None:
    v = torch.tensor([-1.0, 0.0, 0.3, 1.0, 7.0], dtype=torch.float64)
    UNIT_INTERVAL.project_(v)
    assert v.tolist() == pytest.approx([EPS, EPS, 0.3, 1 - EPS, 1 - EPS], abs=1e-15)
    assert UNIT_INTERVAL.contains(v)
    v32 = torch.tensor([2.0, -2.0])  # float32: 1 - EPS must stay below 1
    UNIT_INTERVAL.project_(v32)
    assert UNIT_INTERVAL.contains(v32)


def test_project_circular_wraps() -> None:
    m = circular(5.0)
    v = torch.tensor([-1.0, 0.0, 2.5, 5.0, 7.25, -12.0, 15.0], dtype=torch.float64)
    m.project_(v)
    # hand-computed values mod 5 in [0, 5)
    assert v.tolist() == pytest.approx([4.0, 0.0, 2.5, 0.0, 2.25, 3.0, 0.0])
    assert m.contains(v)


def test_project_euclidean_is_identity() -> None:
    v = torch.tensor([-5.0, 0.0, 1e10])
    EUCLIDEAN.project_(v)
    assert v.tolist() == [-5.0, 0.0, 1e10]


def test_project_works_on_parameter_requiring_grad() -> None:
    p = declare(nn.Parameter(torch.tensor([0.5])), POSITIVE)
    with torch.no_grad():
        p.fill_(-1.0)
    manifold_of(p).project_(p)  # in-place on a leaf that requires grad: must not raise
    assert p.item() == pytest.approx(EPS)


def test_project_circular_tiny_negative_stays_on_manifold() -> None:
    m = circular(5.0)
    v = torch.tensor([-1e-9, -1e-7])
    m.project_(v)
    assert m.contains(v)


def test_project_parameters_only_touches_declared() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor([-7.0, 9.0]))
            self.beta = declare(nn.Parameter(torch.tensor([0.5, 0.5])), UNIT_INTERVAL)
            self.thr = declare(nn.Parameter(torch.tensor([1.0])), POSITIVE)
            self.d = declare(nn.Parameter(torch.tensor([1.0, 2.0])), circular(3.0))

    m = M()
    with torch.no_grad():
        m.beta.copy_(torch.tensor([1.2, -0.3]))
        m.thr.fill_(-4.0)
        m.d.copy_(torch.tensor([3.5, -0.5]))
    project_parameters_(m)
    assert m.w.tolist() == [-7.0, 9.0]
    assert m.beta.tolist() == pytest.approx([1 - EPS, EPS])
    assert m.thr.tolist() == pytest.approx([EPS])
    assert m.d.tolist() == pytest.approx([0.5, 2.5])
    for name, man in named_manifolds(m):
        assert man.contains(dict(m.named_parameters())[name].detach())


def test_circular_needs_period() -> None:
    with pytest.raises(ValueError, match="period"):
        Manifold("circular")
    for bad in (0.0, -2.0, math.nan):
        with pytest.raises(ValueError, match="period"):
            circular(bad)
    with pytest.raises(ValueError, match="period"):
        Manifold("positive", 3.0)


def test_bad_kind() -> None:
    with pytest.raises(ValueError) as info:
        Manifold("sphere")  # type: ignore[arg-type]
    for k in KINDS:
        assert k in str(info.value)
    with pytest.raises(ValueError, match="unit_interval"):
        declare(nn.Parameter(torch.ones(1)), "hyperbolic")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "manifold, value",
    [
        ("positive", [1.0, 0.0]),
        ("positive", [-1.0]),
        ("unit_interval", [0.5, 1.0]),
        ("unit_interval", [0.0]),
        (circular(2.0), [2.0]),
        (circular(2.0), [-0.5]),
        ("euclidean", [math.nan]),
    ],
)
def test_declare_rejects_off_manifold_value(manifold, value) -> None:
    p = nn.Parameter(torch.tensor(value))
    with pytest.raises(ValueError, match="manifold"):
        declare(p, manifold)
    assert manifold_of(p) == EUCLIDEAN  # nothing attached after a failed declaration


def test_manifold_is_hashable_and_frozen() -> None:
    assert len({Manifold("positive"), POSITIVE, circular(2.0), circular(2)}) == 2
    with pytest.raises(Exception):
        POSITIVE.kind = "euclidean"  # type: ignore[misc]


def test_check_open_interval() -> None:
    check_open_interval("x", 0.5, 0.0, 1.0)
    check_open_interval("x", torch.tensor([0.1, 0.9]), 0.0, 1.0)
    check_open_interval("t", 1e9, 0.0, math.inf)
    for bad in (0.0, 1.0, -1.0, math.nan, torch.tensor([0.5, 1.0])):
        with pytest.raises(ValueError, match=r"x must lie in \(0, 1\)"):
            check_open_interval("x", bad, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"\(0, inf\)"):
        check_open_interval("t", math.inf, 0.0, math.inf)
