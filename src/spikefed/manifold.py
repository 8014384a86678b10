"""Manifold kinds of parameters.

Every parameter lives on a manifold that says how it may be averaged and kept valid:

- ``euclidean``: any real value (weights, biases); averaged linearly.
- ``positive``: values > 0 (thresholds, time constants); averaged in the log domain.
- ``unit_interval``: values in (0, 1) (decay factors); averaged in the logit domain.
- ``circular``: values on a ring of length ``period`` (delays in a ring buffer); averaged as complex phasors.

Modules declare the kind where they create the parameter (:func:`declare`); federated aggregation and
projection read it (:func:`manifold_of`). Parameters of models from other libraries carry no declaration and
are treated as euclidean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Literal, TypeVar

import torch
from torch import nn

_T = TypeVar("_T", bound=torch.Tensor)

Kind = Literal["euclidean", "positive", "unit_interval", "circular"]
KINDS: tuple[str, ...] = ("euclidean", "positive", "unit_interval", "circular")

_ATTR = "_spikefed_manifold"

#: Smallest distance kept from the boundary of ``positive`` and ``unit_interval`` manifolds.
EPS = 1e-4


@dataclass(frozen=True)
class Manifold:
    """The manifold of one parameter. ``period`` is required for (and only for) ``circular``."""

    kind: Kind = "euclidean"
    period: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown manifold kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")
        if self.kind == "circular":
            if self.period is None or not self.period > 0:
                raise ValueError(f"a circular manifold needs a period > 0, got {self.period!r}")
        elif self.period is not None:
            raise ValueError(f"only circular manifolds take a period (kind={self.kind!r})")

    def contains(self, value: torch.Tensor) -> bool:
        """Whether every element of ``value`` lies on the manifold (finite and inside its domain)."""
        if not torch.isfinite(value).all():
            return False
        if self.kind == "positive":
            return bool((value > 0).all())
        if self.kind == "unit_interval":
            return bool(((value > 0) & (value < 1)).all())
        if self.kind == "circular":
            assert self.period is not None
            return bool(((value >= 0) & (value < self.period)).all())
        return True

    def project_(self, value: torch.Tensor) -> torch.Tensor:
        """Move ``value`` (in place) onto the manifold: clamp into the open domain, wrap circular values."""
        with torch.no_grad():
            if self.kind == "positive":
                value.clamp_(min=EPS)
            elif self.kind == "unit_interval":
                value.clamp_(EPS, 1.0 - EPS)
            elif self.kind == "circular":
                assert self.period is not None
                value.remainder_(self.period)
                value.masked_fill_(value >= self.period, 0.0)  # float rounding can land on the period itself
        return value


EUCLIDEAN = Manifold("euclidean")
POSITIVE = Manifold("positive")
UNIT_INTERVAL = Manifold("unit_interval")


def circular(period: float) -> Manifold:
    """A circular manifold (ring) of the given period."""
    return Manifold("circular", float(period))


def declare(param: _T, manifold: Manifold | Kind) -> _T:
    """Attach a manifold to ``param`` (returned for chaining). Checks that its current value lies on it."""
    m = manifold if isinstance(manifold, Manifold) else Manifold(manifold)
    if not m.contains(param.detach()):
        raise ValueError(f"parameter value does not lie on its declared manifold {m}")
    setattr(param, _ATTR, m)
    return param


def manifold_of(param: torch.Tensor) -> Manifold:
    """The declared manifold of ``param``; euclidean when none was declared."""
    return getattr(param, _ATTR, EUCLIDEAN)


def named_manifolds(module: nn.Module) -> Iterator[tuple[str, Manifold]]:
    """``(name, manifold)`` for every parameter of ``module`` (same order as ``named_parameters``)."""
    for name, p in module.named_parameters():
        yield name, manifold_of(p)


def copy_module(module: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that keeps the manifold declarations (deepcopy drops attributes set on parameters)."""
    import copy

    clone = copy.deepcopy(module)
    for (_, src), (_, dst) in zip(module.named_parameters(), clone.named_parameters()):
        if hasattr(src, _ATTR):
            setattr(dst, _ATTR, getattr(src, _ATTR))
    return clone


def project_parameters_(module: nn.Module) -> None:
    """Project every declared parameter of ``module`` back onto its manifold (after an optimizer step)."""
    for p in module.parameters():
        m = manifold_of(p)
        if m.kind != "euclidean":
            m.project_(p.data)


def check_open_interval(name: str, value: float | torch.Tensor, low: float, high: float) -> None:
    """Raise ``ValueError`` naming ``name`` unless low < value < high everywhere."""
    v = torch.as_tensor(value, dtype=torch.float64)
    if not torch.isfinite(v).all() or not ((v > low) & (v < high)).all():
        hi = "inf" if math.isinf(high) else f"{high:g}"
        raise ValueError(f"{name} must lie in ({low:g}, {hi}), got {value!r}")
