"""Surrogate gradients for the spike nonlinearity.

Forward is always the exact Heaviside step ``S = H(x) = 1[x > 0]`` of the shifted membrane
``x = U - threshold``. Backward replaces the Dirac delta ``dS/dx`` by a smooth bump whose width is set by
``slope`` (larger slope: narrower, taller bump). The derivatives (what the backward pass uses):

=================  ==========================================================  =============
name               dS/dx                                                       default slope
=================  ==========================================================  =============
``atan``           (a/2) / (1 + (pi/2 * a * x)^2)   [of 1/pi arctan(pi/2 a x) + 1/2]   2.0
``fast_sigmoid``   1 / (1 + k|x|)^2                  [of x / (1 + k|x|), Zenke & Ganguli]  25.0
``sigmoid``        k * sig(k x) * (1 - sig(k x))     [of sig(k x)]                  25.0
``triangular``     a * max(0, 1 - a|x|)              [unit area]                     1.0
``straight_through``  s (constant)                   [identity scaled by slope]     1.0
=================  ==========================================================  =============

Any callable ``f(x) -> dS/dx`` may be used instead of a name (see :func:`get_surrogate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

DerivativeFn = Callable[[torch.Tensor], torch.Tensor]


# Each builtin derivative works in place on a scratch tensor ``z`` it owns (the backward pass hands it a fresh
# ``U - threshold``), so the backward allocates no temporaries; :meth:`Surrogate.derivative` copies first.
def _atan_(z: torch.Tensor, a: float) -> torch.Tensor:
    # (a/2) / (1 + (pi/2 a z)^2) written as 1 / (2/a + (pi^2 a / 2) z^2)
    return z.mul_(z).mul_(math.pi**2 * a / 2.0).add_(2.0 / a).reciprocal_()


def _fast_sigmoid_(z: torch.Tensor, k: float) -> torch.Tensor:
    z = z.abs_().mul_(k).add_(1.0)
    return z.mul_(z).reciprocal_()


def _sigmoid_(z: torch.Tensor, k: float) -> torch.Tensor:
    # k * sig(kz) * sig(-kz): no cancellation in 1 - sig(kz) when sig(kz) is close to 1
    positive = torch.sigmoid(z.mul_(k))
    return z.neg_().sigmoid_().mul_(positive).mul_(k)


def _triangular_(z: torch.Tensor, a: float) -> torch.Tensor:
    return z.abs_().mul_(-a).add_(1.0).clamp_(min=0.0).mul_(a)


def _straight_through_(z: torch.Tensor, s: float) -> torch.Tensor:
    return z.fill_(s)


_BUILTIN: dict[str, tuple[Callable[[torch.Tensor, float], torch.Tensor], float]] = {
    "atan": (_atan_, 2.0),
    "fast_sigmoid": (_fast_sigmoid_, 25.0),
    "sigmoid": (_sigmoid_, 25.0),
    "triangular": (_triangular_, 1.0),
    "straight_through": (_straight_through_, 1.0),
}

SURROGATES: tuple[str, ...] = tuple(_BUILTIN)


@dataclass(frozen=True)
class Surrogate:
    """A surrogate gradient: a name, a slope and the derivative it stands for."""

    name: str
    slope: float | None
    fn: Callable[..., torch.Tensor]

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """dS/dx used in the backward pass, evaluated at the shifted membrane ``x = U - threshold``."""
        if self.slope is None:
            return self.fn(x)
        return self.fn(x.clone(), self.slope)

    def derivative_(self, z: torch.Tensor) -> torch.Tensor:
        """Like :meth:`derivative`, but may overwrite ``z`` (a scratch tensor the caller owns) with the result."""
        if self.slope is None:
            return self.fn(z)
        return self.fn(z, self.slope)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Heaviside spike of ``x`` with this surrogate's gradient (autograd-aware)."""
        return SpikeFunction.apply(x, self)


def get_surrogate(spec: "str | Surrogate | DerivativeFn" = "atan", slope: float | None = None) -> Surrogate:
    """Resolve a surrogate from a name (optionally with ``slope``), a :class:`Surrogate`, or a callable.

    A callable is taken as the derivative ``dS/dx`` itself: it receives the shifted membrane and must return a
    tensor of the same shape.
    """
    if slope is not None and not (isinstance(slope, (int, float)) and math.isfinite(slope) and slope > 0):
        raise ValueError(f"surrogate slope must be a finite number > 0, got {slope!r}")
    if isinstance(spec, Surrogate):
        if slope is None:
            return spec
        if spec.slope is None:
            raise ValueError("a callable surrogate takes no slope; close over it in the callable instead")
        return Surrogate(spec.name, float(slope), spec.fn)
    if isinstance(spec, str):
        if spec not in _BUILTIN:
            raise ValueError(f"unknown surrogate {spec!r}; valid surrogates: {', '.join(SURROGATES)} or a callable")
        fn, default = _BUILTIN[spec]
        return Surrogate(spec, default if slope is None else float(slope), fn)
    if callable(spec):
        if slope is not None:
            raise ValueError("a callable surrogate takes no slope; close over it in the callable instead")
        return Surrogate(getattr(spec, "__name__", "custom"), None, spec)
    raise TypeError(f"surrogate must be a name ({', '.join(SURROGATES)}), a Surrogate or a callable, got {spec!r}")


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """Exact forward spike: 1 where x > 0, else 0 (same dtype as x)."""
    return (x > 0).to(x.dtype)


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward, surrogate derivative backward (used by the step-by-step reference path)."""

    generate_vmap_rule = True  # elementwise: runs under torch.func.vmap (the batched cohort engine)

    @staticmethod
    def forward(x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:  # type: ignore[override]
        return heaviside(x)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, surrogate = inputs
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(x), None


def spike(x: torch.Tensor, surrogate: "str | Surrogate | DerivativeFn" = "atan") -> torch.Tensor:
    """Spike nonlinearity ``H(x)`` with the given surrogate gradient."""
    return SpikeFunction.apply(x, get_surrogate(surrogate))
