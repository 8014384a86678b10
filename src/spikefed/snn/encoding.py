"""Spike encoders: turn static inputs (or input sequences) into time-major spike trains.

All outputs are time-major, ``[T, B, *features]``. The functions are pure: no module state, and the
only source of randomness is an explicit ``torch.Generator`` passed as ``generator=`` (required by the
stochastic encoders, see :data:`STOCHASTIC_ENCODERS`).

=============  ===========================================================  ==============
name           rule                                                         input
=============  ===========================================================  ==============
``rate``       s[t] ~ Bernoulli(clamp(gain * x, 0, 1)), i.i.d. over t        x in [0, 1]
``latency``    one spike at t(x); larger x spikes earlier                    x in [0, 1]
``delta``      ON if x[t] - x[t-1] >= thr, OFF if <= -thr                   sequence [T, B, ...]
``direct``     I[t] = x for every t (constant current, not spikes)           any real x
``events``     s[t] = x[:, t] (pre-binned event frames, a transposed view)   [B, T, ...]
``rank_order`` each positive channel fires once, in order of decreasing x     any real x
``n_of_m``     only the n largest positive channels fire, in rank order     any real x
=============  ===========================================================  ==============

``rank_order`` and ``n_of_m`` (and their decoders) live in :mod:`spikefed.snn.ordinal`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .ordinal import n_of_m, rank_order

__all__ = [
    "ENCODERS",
    "STOCHASTIC_ENCODERS",
    "SEQUENCE_ENCODERS",
    "LATENCY_MODES",
    "DELTA_POLARITIES",
    "DELTA_INITIALS",
    "rate",
    "latency",
    "delta",
    "direct",
    "events",
    "encode",
]

ENCODERS: tuple[str, ...] = ("rate", "latency", "delta", "direct", "events", "rank_order", "n_of_m")
#: Encoders whose input already is a sequence (not a static sample).
SEQUENCE_ENCODERS: tuple[str, ...] = ("delta", "events")
STOCHASTIC_ENCODERS: tuple[str, ...] = ("rate",)
LATENCY_MODES: tuple[str, ...] = ("linear", "log")
DELTA_POLARITIES: tuple[str, ...] = ("both", "on", "off")
DELTA_INITIALS: tuple[str, ...] = ("zero", "first")


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------


def _check_tensor(name: str, x: Any, *, min_dim: int = 0) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected {name} to be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"expected {name} to be a real-valued tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(
            f"expected {name} with at least {min_dim} dimension(s), got shape {tuple(x.shape)}"
        )


def _check_unit_interval(name: str, x: torch.Tensor) -> None:
    # written so that NaN also fails
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        lo, hi = float(x.min()), float(x.max())
        raise ValueError(f"expected {name} with values in [0, 1], got values in [{lo}, {hi}]")


def _check_num_steps(num_steps: Any) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"expected num_steps to be a positive int, got {num_steps!r}")
    return num_steps


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected {name} to be a finite number > 0, got {value!r}")
    return float(value)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {choices}")
    return value


def _check_generator(generator: Any, encoder: str) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            f"expected generator to be a torch.Generator for the stochastic encoder {encoder!r}, "
            f"got {type(generator).__name__}"
        )
    return generator


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


# --------------------------------------------------------------------------------------------------
# encoders
# --------------------------------------------------------------------------------------------------


def rate(
    x: torch.Tensor, num_steps: int, *, generator: torch.Generator, gain: float = 1.0
) -> torch.Tensor:
    """Rate (Bernoulli) coding.

    ``s[t, ...] = 1[u[t, ...] < p]`` with ``u ~ U[0, 1)`` i.i.d. from ``generator``, i.e.
    ``s[t] ~ Bernoulli(p)`` independently over t, where ``p = clamp(gain * x, 0, 1)``.
    ``E[s[t]] = p``; ``p = 0`` never fires and ``p = 1`` always fires.

    Args:
        x: input of shape ``[B, *features]`` with values in ``[0, 1]``.
        num_steps: T, number of time steps (>= 1).
        generator: the only randomness source; must live on ``x.device``.
        gain: non-negative scale applied before clamping.

    Returns:
        Spikes ``[T, B, *features]`` in {0, 1} (float dtype of ``x``, or the default float dtype);
        not differentiable.
    """
    _check_tensor("x", x)
    _check_unit_interval("x", x)
    steps = _check_num_steps(num_steps)
    gen = _check_generator(generator, "rate")
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain) or gain < 0:
        raise ValueError(f"expected gain to be a finite number >= 0, got {gain!r}")
    dtype = _float_dtype(x)
    p = torch.clamp(x.detach().to(dtype) * gain, 0.0, 1.0)
    u = torch.rand((steps, *x.shape), generator=gen, device=x.device, dtype=dtype)
    return (u < p.unsqueeze(0)).to(dtype)


def latency(
    x: torch.Tensor,
    num_steps: int,
    *,
    mode: str = "linear",
    tau: float = 1.0,
    threshold: float = 0.01,
    normalize: bool = True,
) -> torch.Tensor:
    """Latency (time-to-first-spike) coding: at most one spike per element, larger x fires earlier.

    ``mode="linear"``: ``t = round((1 - x) * (T - 1))``. Every element fires once (x = 1 at t = 0,
    x = 0 at t = T - 1); ``tau``, ``threshold`` and ``normalize`` are not used.

    ``mode="log"``: an RC circuit driven by constant input x, ``v(t) = x * (1 - exp(-t / tau))``,
    reaches ``threshold`` at ``t_raw = tau * ln(x / (x - threshold))`` for ``x > threshold``;
    elements with ``x <= threshold`` never reach it and emit **no spike**. With ``normalize=True``
    the times are rescaled ``t_raw <- t_raw * (T - 1) / max(t_raw)`` where the max runs over all
    finite times **of the whole tensor** (so the code of one sample depends on the rest of the batch;
    encode samples one at a time, or use ``normalize=False``, if that matters). Then
    ``t = clip(round(t_raw), 0, T - 1)``, so with ``normalize=False`` late spikes are moved to T - 1.

    ``round`` is ``torch.round`` (halves round to even).

    Args:
        x: input ``[B, *features]`` with values in ``[0, 1]``.
        num_steps: T (>= 1).
        mode: one of :data:`LATENCY_MODES`.
        tau: RC time constant (> 0), log mode.
        threshold: firing threshold in (0, 1), log mode.
        normalize: rescale log-mode times to span ``[0, T - 1]``.

    Returns:
        Spikes ``[T, B, *features]`` in {0, 1}; not differentiable.
    """
    _check_tensor("x", x)
    _check_unit_interval("x", x)
    steps = _check_num_steps(num_steps)
    _check_choice("mode", mode, LATENCY_MODES)
    tau_f = _check_positive("tau", tau)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"expected threshold in the open interval (0, 1), got {threshold!r}")
    if not isinstance(normalize, bool):
        raise ValueError(f"expected normalize to be a bool, got {normalize!r}")

    dtype = _float_dtype(x)
    xf = x.detach().to(dtype)
    if mode == "linear":
        fires = torch.ones_like(xf, dtype=torch.bool)
        t = torch.round((1.0 - xf) * (steps - 1))
    else:
        fires = xf > threshold
        safe_x = torch.where(fires, xf, torch.ones_like(xf))  # keeps log finite where we ignore it
        t_raw = tau_f * torch.log(safe_x / (safe_x - threshold))
        if normalize and bool(fires.any()):
            t_max = t_raw[fires].max()
            t_raw = t_raw * ((steps - 1) / t_max)
        t = torch.round(t_raw)
    t = torch.clamp(t, 0, steps - 1)
    time_index = torch.arange(steps, device=x.device, dtype=dtype).view(steps, *([1] * x.dim()))
    spikes = (time_index == t.unsqueeze(0)) & fires.unsqueeze(0)
    return spikes.to(dtype)


def delta(
    x_seq: torch.Tensor,
    threshold: float,
    *,
    polarity: str = "both",
    initial: str = "zero",
) -> torch.Tensor:
    """Delta modulation of a sequence: spike on sufficiently large changes.

    ``d[t] = x[t] - x[t-1]`` with ``x[-1] = 0`` (``initial="zero"``) or ``x[-1] = x[0]``
    (``initial="first"``, so nothing fires at t = 0).
    ``ON[t] = 1[d[t] >= threshold]``, ``OFF[t] = 1[d[t] <= -threshold]``.

    Args:
        x_seq: sequence ``[T, B, *features]``.
        threshold: change needed to fire (> 0).
        polarity: ``"both"`` returns ``[T, B, 2, *features]`` (channel 0 = ON, 1 = OFF);
            ``"on"`` / ``"off"`` return only that channel, ``[T, B, *features]``.
        initial: ``"zero"`` or ``"first"``, the reference before the first step.

    Returns:
        Spikes in {0, 1} (float dtype); not differentiable.
    """
    _check_tensor("x_seq", x_seq, min_dim=2)
    thr = _check_positive("threshold", threshold)
    _check_choice("polarity", polarity, DELTA_POLARITIES)
    _check_choice("initial", initial, DELTA_INITIALS)

    dtype = _float_dtype(x_seq)
    xs = x_seq.detach().to(dtype)
    first = torch.zeros_like(xs[:1]) if initial == "zero" else xs[:1]
    previous = torch.cat([first, xs[:-1]], dim=0)
    d = xs - previous
    on = (d >= thr).to(dtype)
    off = (d <= -thr).to(dtype)
    if polarity == "on":
        return on
    if polarity == "off":
        return off
    return torch.stack([on, off], dim=2)


def direct(x: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Direct (current) coding: ``I[t] = x`` for ``t = 0 .. T-1``.

    The input is fed as a constant current to the first spiking layer, which does the encoding.
    Returns a contiguous copy ``[T, *x.shape]``; gradients flow back to ``x``.
    """
    _check_tensor("x", x)
    steps = _check_num_steps(num_steps)
    return x.unsqueeze(0).expand(steps, *x.shape).contiguous()


def events(x: torch.Tensor, num_steps: int | None = None) -> torch.Tensor:
    """Pre-binned event frames, batch-major ``[B, T, *features]`` -> time-major ``[T, B, *features]``.

    The frames already are the spike trains (see :mod:`spikefed.events`); this is ``x.transpose(0, 1)``, a
    view (no copy). ``num_steps``, if given, must equal the number of bins ``T = x.shape[1]``.
    """
    _check_tensor("x", x, min_dim=2)
    if num_steps is not None:
        steps = _check_num_steps(num_steps)
        if steps != x.shape[1]:
            raise ValueError(
                f"encoder 'events': num_steps={steps} must equal the number of time bins of the data, "
                f"x.shape[1] = {x.shape[1]} (inputs are [B, T, ...]); set num_steps to {x.shape[1]}"
            )
    return x.transpose(0, 1)


# --------------------------------------------------------------------------------------------------
# dispatcher
# --------------------------------------------------------------------------------------------------

_KWARGS: dict[str, tuple[str, ...]] = {
    "rate": ("gain",),
    "latency": ("mode", "tau", "threshold", "normalize"),
    "delta": ("threshold", "polarity", "initial"),
    "direct": (),
    "events": (),
    "rank_order": (),
    "n_of_m": ("n",),
}


def encode(
    name: str,
    x: torch.Tensor,
    num_steps: int | None,
    *,
    generator: torch.Generator | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Encode ``x`` with the encoder called ``name`` (one of :data:`ENCODERS`).

    ``encode(name, x, T, generator=g, **kw) == <name>(x, T, **kw)`` (plus ``generator=g`` for the
    stochastic encoders in :data:`STOCHASTIC_ENCODERS`, which require it; deterministic encoders
    ignore it, so one generator can be passed whatever the encoder).

    ``"delta"`` takes a sequence: ``x`` is ``x_seq`` ``[T, B, ...]``, ``threshold=`` is required,
    and ``num_steps`` is either ``None`` or must equal ``x.shape[0]``.
    """
    if not isinstance(name, str) or name not in ENCODERS:
        raise ValueError(f"unknown encoder name {name!r}; expected one of {ENCODERS}")
    unknown = sorted(set(kwargs) - set(_KWARGS[name]))
    if unknown:
        raise ValueError(
            f"unexpected keyword argument(s) {unknown} for encoder {name!r}; "
            f"expected a subset of {_KWARGS[name]}"
        )
    if name in STOCHASTIC_ENCODERS and generator is None:
        raise ValueError(
            f"encoder {name!r} is stochastic: expected generator to be a torch.Generator, got None"
        )
    if name == "delta":
        _check_tensor("x", x, min_dim=2)
        if num_steps is not None and num_steps != x.shape[0]:
            raise ValueError(
                f"expected num_steps to be None or equal to x.shape[0] = {x.shape[0]} for 'delta', "
                f"got {num_steps!r}"
            )
        if "threshold" not in kwargs:
            raise ValueError("encoder 'delta' needs threshold=<float > 0>")
        return delta(x, **kwargs)
    if name == "events":
        return events(x, num_steps)
    if num_steps is None:
        raise ValueError(f"expected num_steps to be a positive int for encoder {name!r}, got None")
    if name == "rate":
        return rate(x, num_steps, generator=generator, **kwargs)  # type: ignore[arg-type]
    if name == "latency":
        return latency(x, num_steps, **kwargs)
    if name == "rank_order":
        return rank_order(x, num_steps)
    if name == "n_of_m":
        return n_of_m(x, num_steps, **kwargs)
    return direct(x, num_steps)
