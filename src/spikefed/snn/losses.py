"""Training losses and activity regularizers for spiking outputs.

Inputs are time-major: output spikes / membrane ``[T, B, C]``, targets ``[B]`` (int64 class indices).
Every loss returns a scalar averaged over the batch (and over what each docstring says).
``CE(z, y) = -z[y] + log sum_c exp(z[c])`` below is the per-sample cross-entropy on logits ``z``.

=======================  =========================================================================
function                 formula
=======================  =========================================================================
``ce_count_loss``        mean_b CE(n_b, y_b),   n = sum_t s[t]
``mse_count_loss``       mean_{b,c} (n[b,c] - T*rho[b,c])^2, rho = correct/incorrect rate
``ce_membrane_loss``     mean_t mean_b CE(u[t,b], y_b) | mean_b CE(max_t u, y_b) | mean_b CE(u[T-1], y_b)
``ce_temporal_loss``     mean_b CE(-scale * tau_b, y_b), tau = soft_first_spike_time(s)
``membrane_rate_loss``   mean_b 1/2 sum_t sum_c (v[t,b,c] - y[b,c])^2, y = target potential (seed 002)
``membrane_l1``          mean over all elements of |v|
``membrane_l2``          mean over all elements of v^2
``l1_activity``          mean over all elements of |s|
``l2_activity``          mean_{b,i} (n[b,i] / T)^2
``firing_rate_bounds``   mean_i relu(lo - r_i)^2 + mean_i relu(r_i - hi)^2, r_i = mean_{t,b} s[t,b,i]
=======================  =========================================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "MEMBRANE_REDUCTIONS",
    "ce_count_loss",
    "mse_count_loss",
    "ce_membrane_loss",
    "soft_first_spike_time",
    "ce_temporal_loss",
    "membrane_rate_loss",
    "membrane_l1",
    "membrane_l2",
    "l1_activity",
    "l2_activity",
    "firing_rate_bounds",
]

MEMBRANE_REDUCTIONS: tuple[str, ...] = ("time_mean", "max", "last")


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------


def _check_float(name: str, x: Any, *, min_dim: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected {name} to be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"expected {name} to be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < min_dim or (x.dim() > 0 and x.shape[0] < 1):
        raise ValueError(
            f"expected {name} of shape [T, B, *features] with T >= 1, got {tuple(x.shape)}"
        )


def _check_outputs_targets(name: str, x: Any, targets: Any) -> None:
    """``x``: float [T, B, C]; ``targets``: int64 [B] with values in [0, C)."""
    _check_float(name, x, min_dim=0)
    if x.dim() != 3:
        raise ValueError(f"expected {name} of shape [T, B, classes], got {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"expected {name} with at least one time step, got {tuple(x.shape)}")
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"expected targets to be a torch.Tensor, got {type(targets).__name__}")
    batch, classes = x.shape[1], x.shape[2]
    if targets.dtype != torch.long or targets.shape != (batch,):
        raise ValueError(
            f"expected targets of shape [B] = ({batch},) and dtype torch.int64, "
            f"got shape {tuple(targets.shape)} and dtype {targets.dtype}"
        )
    if batch == 0:
        raise ValueError(f"expected a non-empty batch, got {name} of shape {tuple(x.shape)}")
    if bool(((targets < 0) | (targets >= classes)).any()):
        raise ValueError(
            f"expected targets with values in [0, {classes - 1}], "
            f"got values in [{int(targets.min())}, {int(targets.max())}]"
        )


def _check_number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                  strict_lo: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if strict_lo else value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        lo_s = "" if lo is None else (f" > {lo}" if strict_lo else f" >= {lo}")
        hi_s = "" if hi is None else f" <= {hi}"
        raise ValueError(f"expected {name} to be a finite number{lo_s}{hi_s}, got {value!r}")
    return float(value)


def _as_list(name: str, spikes: Any) -> list[torch.Tensor]:
    """A tensor ``[T, B, ...]`` or a non-empty sequence of them -> list of tensors."""
    items = [spikes] if isinstance(spikes, torch.Tensor) else spikes
    if not isinstance(items, (list, tuple)) or len(items) == 0:
        raise ValueError(
            f"expected {name} to be a tensor [T, B, ...] or a non-empty list of them, "
            f"got {type(spikes).__name__}"
        )
    single = isinstance(spikes, torch.Tensor)
    for i, s in enumerate(items):
        _check_float(name if single else f"{name}[{i}]", s, min_dim=2)
    return list(items)


# --------------------------------------------------------------------------------------------------
# classification losses
# --------------------------------------------------------------------------------------------------


def ce_count_loss(spikes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on spike counts: ``mean_b CE(n_b, y_b)`` with logits ``n[b, c] = sum_t s[t, b, c]``.

    ``spikes`` ``[T, B, C]`` (float), ``targets`` ``[B]`` int64. Equals snnTorch's
    ``functional.ce_count_loss()`` (no population code).
    """
    _check_outputs_targets("spikes", spikes, targets)
    return F.cross_entropy(spikes.sum(dim=0), targets)


def mse_count_loss(
    spikes: torch.Tensor,
    targets: torch.Tensor,
    correct_rate: float = 0.8,
    incorrect_rate: float = 0.2,
) -> torch.Tensor:
    """MSE between spike counts and target counts: ``mean_{b,c} (n[b, c] - T * rho[b, c])^2``.

    ``n = sum_t s[t]``; ``rho[b, c] = correct_rate`` if ``c == y_b`` else ``incorrect_rate`` (both in
    [0, 1]; target counts are not rounded). snnTorch's ``mse_count_loss`` truncates the target counts to
    ints and divides the result by T, i.e. equals this loss / T whenever ``rate * T`` is an integer.
    """
    _check_outputs_targets("spikes", spikes, targets)
    hi = _check_number("correct_rate", correct_rate, lo=0.0, hi=1.0)
    lo = _check_number("incorrect_rate", incorrect_rate, lo=0.0, hi=1.0)
    steps, _, classes = spikes.shape
    is_target = F.one_hot(targets, classes).to(torch.bool)
    wanted = torch.where(
        is_target,
        torch.full_like(spikes[0], hi * steps),
        torch.full_like(spikes[0], lo * steps),
    )
    return F.mse_loss(spikes.sum(dim=0), wanted)


def ce_membrane_loss(
    mem: torch.Tensor, targets: torch.Tensor, reduction: str = "time_mean"
) -> torch.Tensor:
    """Cross-entropy with membrane potentials as logits.

    * ``"time_mean"``: ``(1/T) sum_t mean_b CE(u[t, b], y_b)`` (snnTorch ``ce_rate_loss`` applied to ``mem``);
    * ``"max"``: ``mean_b CE(max_t u[t, b], y_b)`` (snnTorch ``ce_max_membrane_loss``);
    * ``"last"``: ``mean_b CE(u[T-1, b], y_b)``.

    ``mem`` ``[T, B, C]`` (float), ``targets`` ``[B]`` int64.
    """
    _check_outputs_targets("mem", mem, targets)
    if reduction == "time_mean":
        steps, batch, classes = mem.shape
        # every step has the same B samples, so the mean over (t, b) pairs is mean_t mean_b
        return F.cross_entropy(mem.reshape(steps * batch, classes), targets.repeat(steps))
    if reduction == "max":
        return F.cross_entropy(mem.amax(dim=0), targets)
    if reduction == "last":
        return F.cross_entropy(mem[-1], targets)
    raise ValueError(f"unknown reduction {reduction!r}; expected one of {MEMBRANE_REDUCTIONS}")


def membrane_rate_loss(
    mem: torch.Tensor, targets: torch.Tensor, correct: float = 1.0, incorrect: float = 0.0
) -> torch.Tensor:
    """The per-step membrane rate loss of seed 002: ``L = 1/2 sum_t (v_t - y)^2`` for every output neuron.

    ``y[b, c] = correct`` if ``c == y_b`` else ``incorrect``; the squared error is summed over time steps and
    classes and averaged over the batch: ``mean_b 1/2 sum_t sum_c (v[t, b, c] - y[b, c])^2``. Every step gets an
    error signal, so the network learns to hold the correct class's potential (its rate) at ``correct``.
    ``mem`` ``[T, B, C]`` (float), ``targets`` ``[B]`` int64.
    """
    _check_outputs_targets("mem", mem, targets)
    hi = _check_number("correct", correct)
    lo = _check_number("incorrect", incorrect)
    is_target = F.one_hot(targets, mem.shape[-1]).to(torch.bool)
    wanted = torch.where(is_target, torch.full_like(mem[0], hi), torch.full_like(mem[0], lo))
    return 0.5 * (mem - wanted.unsqueeze(0)).pow(2).sum(dim=(0, 2)).mean()


def soft_first_spike_time(spikes: torch.Tensor) -> torch.Tensor:
    """Differentiable first-spike index: ``tau = sum_{t=0}^{T-1} prod_{k=0}^{t} (1 - s[k])``.

    For binary ``s`` the product is 1 until the first spike and 0 from then on, so ``tau`` is the index
    of the first spike (T when there is none), matching
    :func:`spikefed.snn.decoding.first_spike_time`. For spikes carrying surrogate gradients,
    ``d tau / d s[j] = -sum_{t>=j} prod_{k<=t, k!=j} (1 - s[k])``: on a binary train with first spike
    at f this is ``-(f - j)`` for ``j < f``, ``-(1 + #steps after f before the next spike)`` for
    ``j = f`` and 0 for ``j > f``.

    ``spikes`` ``[T, B, *features]`` (float) -> ``[B, *features]``.
    """
    _check_float("spikes", spikes, min_dim=2)
    return torch.cumprod(1.0 - spikes, dim=0).sum(dim=0)


def ce_temporal_loss(spikes: torch.Tensor, targets: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """First-to-spike loss: ``mean_b CE(-scale * tau_b, y_b)`` with ``tau = soft_first_spike_time(spikes)``.

    Lower first-spike time -> higher logit, so minimising it makes the target neuron fire first.
    ``spikes`` ``[T, B, C]`` (float), ``targets`` ``[B]`` int64, ``scale > 0``.
    """
    _check_outputs_targets("spikes", spikes, targets)
    s = _check_number("scale", scale, lo=0.0, strict_lo=True)
    return F.cross_entropy(-s * soft_first_spike_time(spikes), targets)


# --------------------------------------------------------------------------------------------------
# activity regularizers
# --------------------------------------------------------------------------------------------------


def l1_activity(spikes: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Population L1 activity: ``sum |s| / numel`` over every element of every given tensor.

    For one tensor ``[T, B, *features]`` this is ``mean_{t,b,i} |s[t, b, i]|``; for a list, the elements
    of all tensors are pooled (so larger layers weigh more).
    """
    items = _as_list("spikes", spikes)
    total = sum(s.abs().sum() for s in items)
    count = sum(s.numel() for s in items)
    if count == 0:
        raise ValueError("expected spikes with at least one element, got only empty tensors")
    return total / count  # type: ignore[operator,return-value]


def l2_activity(spikes: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 activity on per-sample rates: ``mean_{b,i} (n[b, i] / T)^2`` with ``n[b, i] = sum_t s[t, b, i]``.

    ``i`` runs over all flattened feature positions of ``[T, B, *features]``; for a list the (b, i)
    pairs of all tensors are pooled (each tensor uses its own T).
    """
    items = _as_list("spikes", spikes)
    total = sum((s.mean(dim=0) ** 2).sum() for s in items)
    count = sum(s[0].numel() for s in items)
    if count == 0:
        raise ValueError("expected spikes with at least one (sample, neuron) pair, got only empty tensors")
    return total / count  # type: ignore[operator,return-value]


def membrane_l1(mem: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """L1 penalty on membrane potentials: ``sum |v| / numel`` over every element of every given tensor."""
    items = _as_list("mem", mem)
    count = sum(v.numel() for v in items)
    if count == 0:
        raise ValueError("expected membrane potentials with at least one element, got only empty tensors")
    return sum(v.abs().sum() for v in items) / count  # type: ignore[operator,return-value]


def membrane_l2(mem: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 penalty on membrane potentials: ``sum v^2 / numel`` over every element of every given tensor."""
    items = _as_list("mem", mem)
    count = sum(v.numel() for v in items)
    if count == 0:
        raise ValueError("expected membrane potentials with at least one element, got only empty tensors")
    return sum(v.pow(2).sum() for v in items) / count  # type: ignore[operator,return-value]


def firing_rate_bounds(
    spikes: torch.Tensor | Sequence[torch.Tensor], lower: float = 0.0, upper: float = 1.0
) -> torch.Tensor:
    """Keep each neuron's firing rate within ``[lower, upper]``.

    ``r_i = mean_{t,b} s[t, b, i]`` per neuron i (all feature positions of ``[T, B, *features]``);
    ``penalty = mean_i relu(lower - r_i)^2 + mean_i relu(r_i - upper)^2``, with neurons of all given
    tensors pooled. Zero when every rate is inside the bounds. Requires ``0 <= lower <= upper``.
    """
    lo = _check_number("lower", lower, lo=0.0)
    hi = _check_number("upper", upper, lo=0.0)
    if lo > hi:
        raise ValueError(f"expected 0 <= lower <= upper, got lower={lower!r}, upper={upper!r}")
    items = _as_list("spikes", spikes)
    rates = torch.cat([s.mean(dim=(0, 1)).reshape(-1) for s in items])
    if rates.numel() == 0:
        raise ValueError("expected spikes with at least one neuron, got only empty tensors")
    return F.relu(lo - rates).pow(2).mean() + F.relu(rates - hi).pow(2).mean()
