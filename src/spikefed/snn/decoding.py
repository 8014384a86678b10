"""Readouts: turn output spike trains / membrane traces ``[T, B, C]`` into class scores and predictions.

==========================  ==================================================  ===========
function                    formula                                             shape
==========================  ==================================================  ===========
``spike_count``             n[b, c] = sum_t s[t, b, c]                          [B, C]
``first_spike_time``        min{t : s[t, b, c] != 0}, T if none                 [B, C]
``membrane_max``            max_t u[t, b, c]                                    [B, C]
``membrane_last``           u[T-1, b, c]                                        [B, C]
``population``              n[b, k] = sum_{j=k*n}^{(k+1)*n-1} x[b, j]           [B, K]
==========================  ==================================================  ===========

Predictions (``predict(kind, x)`` with ``kind`` in :data:`PREDICTORS`) return class indices ``[B]``
(int64); ties go to the lowest class index unless stated otherwise.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "PREDICTORS",
    "spike_count",
    "first_spike_time",
    "membrane_max",
    "membrane_last",
    "population",
    "predict_count",
    "predict_first_spike",
    "predict_membrane",
    "predict",
]

PREDICTORS: tuple[str, ...] = ("count", "first_spike", "membrane_max", "membrane_last")


def _check_seq(name: str, x: Any, what: str = "classes") -> None:
    """``x`` must be a real tensor of shape [T, B, C] with T >= 1."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected {name} to be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise ValueError(f"expected {name} to be a real-valued tensor, got dtype {x.dtype}")
    if x.dim() != 3:
        raise ValueError(f"expected {name} of shape [T, B, {what}], got {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"expected {name} with at least one time step, got {tuple(x.shape)}")


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


def spike_count(spikes: torch.Tensor) -> torch.Tensor:
    """Spike count per output neuron: ``n[b, c] = sum_{t=0}^{T-1} s[t, b, c]``.

    ``spikes``: ``[T, B, C]``; returns ``[B, C]`` (differentiable; bool inputs count as 0/1).
    """
    _check_seq("spikes", spikes)
    if spikes.dtype == torch.bool:
        spikes = spikes.to(torch.get_default_dtype())
    return spikes.sum(dim=0)


def first_spike_time(spikes: torch.Tensor) -> torch.Tensor:
    """Index of the first step with a non-zero entry: ``t*[b, c] = min{t : s[t, b, c] != 0}``, ``T`` if none.

    ``spikes``: ``[T, B, C]``; returns a float tensor ``[B, C]`` with values in ``{0, ..., T}``
    (not differentiable; see :func:`spikefed.snn.losses.soft_first_spike_time` for a relaxation).
    """
    _check_seq("spikes", spikes)
    steps = spikes.shape[0]
    dtype = _float_dtype(spikes)
    index = torch.arange(steps, device=spikes.device, dtype=dtype).view(steps, 1, 1)
    never = torch.full_like(index, float(steps))
    return torch.where(spikes.detach() != 0, index, never).amin(dim=0)


def membrane_max(mem: torch.Tensor) -> torch.Tensor:
    """Peak membrane potential over time: ``m[b, c] = max_t u[t, b, c]``; ``mem`` ``[T, B, C]`` -> ``[B, C]``."""
    _check_seq("mem", mem)
    return mem.amax(dim=0)


def membrane_last(mem: torch.Tensor) -> torch.Tensor:
    """Membrane potential at the last step: ``m[b, c] = u[T-1, b, c]``; ``mem`` ``[T, B, C]`` -> ``[B, C]``."""
    _check_seq("mem", mem)
    return mem[-1]


def population(x: torch.Tensor, num_classes: int, neurons_per_class: int) -> torch.Tensor:
    """Population readout: sum each group of ``n = neurons_per_class`` consecutive neurons.

    ``out[b, k] = sum_{j = k*n}^{(k+1)*n - 1} c[b, j]`` where ``c = x`` for counts ``[B, K*n]`` or
    ``c = sum_t x[t]`` for spikes ``[T, B, K*n]``. Returns ``[B, K]`` (differentiable).
    """
    for arg, val in (("num_classes", num_classes), ("neurons_per_class", neurons_per_class)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"expected {arg} to be a positive int, got {val!r}")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected x to be a torch.Tensor, got {type(x).__name__}")
    width = num_classes * neurons_per_class
    if x.dim() not in (2, 3) or x.shape[-1] != width:
        raise ValueError(
            f"expected x of shape [B, {width}] (counts) or [T, B, {width}] (spikes) for "
            f"num_classes={num_classes}, neurons_per_class={neurons_per_class}, got {tuple(x.shape)}"
        )
    counts = spike_count(x) if x.dim() == 3 else x
    if counts.dtype == torch.bool:
        counts = counts.to(torch.get_default_dtype())
    return counts.reshape(counts.shape[0], num_classes, neurons_per_class).sum(dim=-1)


#: How :func:`predict_count` breaks a tie for the top spike count.
COUNT_TIES = ("lowest", "first_spike")


def predict_count(spikes: torch.Tensor, ties: str = "lowest") -> torch.Tensor:
    """Rate-coded prediction: ``argmax_c n[b, c]``. ``[T, B, C]`` -> ``[B]``.

    Ties for the top count go to the lowest index (``ties="lowest"``), or to the class among them that spiked
    first, ``argmin t*[b, c]``, and only then to the lowest index (``ties="first_spike"``). With few time steps
    counts tie often (a chip running 3 steps counts 0-3 spikes per class); the first-spike order is information
    the count throws away.
    """
    if ties not in COUNT_TIES:
        raise ValueError(f"unknown count tie-break {ties!r}; valid: {', '.join(COUNT_TIES)}")
    counts = spike_count(spikes)
    if ties == "lowest":
        return _argmax_first(counts)
    times = first_spike_time(spikes)
    return _argbest_lexicographic(counts.detach().to(times.dtype), -times)


def predict_first_spike(spikes: torch.Tensor) -> torch.Tensor:
    """Time-to-first-spike prediction: ``argmin_c t*[b, c]``. ``[T, B, C]`` -> ``[B]``.

    Ties in first-spike time are broken by the larger spike count, remaining ties by the lower index
    (so a sample with no output spike at all predicts class 0).
    """
    times = first_spike_time(spikes)
    return _argbest_lexicographic(-times, spike_count(spikes).detach().to(times.dtype))


def predict_membrane(mem: torch.Tensor, reduction: str = "max") -> torch.Tensor:
    """Membrane readout prediction: ``argmax_c max_t u[t, b, c]`` (``"max"``) or ``argmax_c u[T-1, b, c]``
    (``"last"``); ties -> lowest index. ``[T, B, C]`` -> ``[B]``."""
    if reduction == "max":
        return _argmax_first(membrane_max(mem))
    if reduction == "last":
        return _argmax_first(membrane_last(mem))
    raise ValueError(f"unknown reduction {reduction!r}; expected one of ('max', 'last')")


def predict(kind: str, x: torch.Tensor) -> torch.Tensor:
    """Predicted class per sample ``[B]`` from ``x`` ``[T, B, C]`` using the readout ``kind``.

    ``"count"`` -> :func:`predict_count`, ``"first_spike"`` -> :func:`predict_first_spike`
    (``x`` = spikes); ``"membrane_max"`` / ``"membrane_last"`` -> :func:`predict_membrane`
    (``x`` = membrane potentials).
    """
    if kind == "count":
        return predict_count(x)
    if kind == "first_spike":
        return predict_first_spike(x)
    if kind == "membrane_max":
        return predict_membrane(x, "max")
    if kind == "membrane_last":
        return predict_membrane(x, "last")
    raise ValueError(f"unknown predictor kind {kind!r}; expected one of {PREDICTORS}")


def _argbest_lexicographic(primary: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
    """Row-wise best class by ``primary``, ties broken by the larger ``secondary``, then by the lowest index.

    Both ``[B, C]`` of one floating dtype (``-inf`` allowed, e.g. a never-spiking class's negated time)."""
    top = primary == primary.amax(dim=1, keepdim=True)
    secondary_of_top = torch.where(top, secondary, torch.full_like(secondary, float("-inf")))
    return _argmax_first((top & (secondary_of_top == secondary_of_top.amax(dim=1, keepdim=True))).to(primary.dtype))


def _argmax_first(scores: torch.Tensor) -> torch.Tensor:
    """Row-wise argmax returning the lowest index among maxima (explicit, not relying on backend order)."""
    if scores.shape[1] == 0:
        raise ValueError(f"expected at least one class to predict from, got scores of shape {tuple(scores.shape)}")
    scores = scores.detach()
    if scores.is_floating_point():  # NaN never wins
        scores = torch.where(torch.isnan(scores), torch.full_like(scores, float("-inf")), scores)
    is_max = scores == scores.amax(dim=1, keepdim=True)
    index = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    sentinel = torch.full_like(index, scores.shape[1])
    return torch.where(is_max, index, sentinel).amin(dim=1)
