"""Momentum correction and factor masking for sparsified uplinks (Deep Gradient Compression, Lin et al. 2018),
applied to the stream of a client's round deltas (its pseudo-gradients).

Plain error feedback (:func:`~spikefed.federated.compression.error_feedback_step`) accumulates the deltas
themselves. Momentum correction accumulates a velocity instead, so that a coordinate that keeps moving the same
way builds up and crosses the top-k threshold, while the noise of an adaptive local optimizer (whose deltas have
nearly equal magnitude everywhere) averages out. Per client, velocity ``u`` and accumulator ``v`` start at 0::

    u <- m u + delta          (momentum correction: the velocity, not the delta, is accumulated)
    v <- v + u
    msg = C(v)                (exactly what the server decodes)
    v <- v - decompress(msg)  (error feedback; for a sparsifier this zeroes v on the kept set S)
    u[S] <- 0                 (factor masking: a coordinate just sent stops pushing, so it is not sent again
                               on stale momentum)

``m = 0`` is plain error feedback, bit for bit. ``S`` is the set of transmitted coordinates (all of them for a
dense quantizer). The velocity lives with the residual in the client's state (``client_state[k]
["dgc_velocity"]``, checkpointed). A non-finite accumulator resets both to zero, as error feedback does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .compression import EF_KEY, Compressor, Message, TensorMessage, encode_message, error_feedback_step
from .types import ParamDict

#: key of a client's DGC velocity in ``SimulationState.client_state[k]``
VELOCITY_KEY = "dgc_velocity"


def _check(what: str, value: Mapping[str, torch.Tensor] | None, delta: Mapping[str, torch.Tensor]) -> None:
    if value is not None and (list(value) != list(delta) or any(value[n].shape != delta[n].shape for n in delta)):
        raise ValueError(f"momentum correction: the {what} does not match the update (names or shapes differ)")


def kept_mask(m: TensorMessage) -> torch.Tensor:
    """Boolean mask (the tensor's shape) of the coordinates ``m`` transmits."""
    if m.indices is None:
        return torch.ones(m.shape, dtype=torch.bool)
    mask = torch.zeros(m.shape, dtype=torch.bool).flatten()
    mask[m.indices] = True
    return mask.view(m.shape)


def momentum_correction_step(delta: Mapping[str, torch.Tensor], velocity: Mapping[str, torch.Tensor] | None,
                             residual: Mapping[str, torch.Tensor] | None, compressor: Compressor,
                             generator: torch.Generator | None, momentum: float
                             ) -> tuple[Message, ParamDict, ParamDict]:
    """One step of the recurrence in the module docstring: returns ``(msg, u', v')``. ``None`` state means 0."""
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum correction must lie in [0, 1), got {momentum}")
    _check("velocity", velocity, delta)
    _check("accumulator", residual, delta)
    if velocity is None:
        u = {n: t.detach().clone() for n, t in delta.items()}
    else:
        u = {n: momentum * velocity[n].to(t.dtype) + t.detach() for n, t in delta.items()}
    message, v = error_feedback_step(u, residual, compressor, generator)
    for n in u:
        u[n] = u[n].masked_fill(kept_mask(message[n]), 0.0)
    if not all(bool(torch.isfinite(t).all()) for t in u.values()):
        u = {n: torch.zeros_like(t) for n, t in u.items()}
        v = {n: torch.zeros_like(t) for n, t in v.items()}
    return message, u, v


def momentum_uplink(delta: Mapping[str, torch.Tensor], compressor: Compressor, generator: torch.Generator | None,
                    client_state: dict[str, Any], momentum: float) -> bytes:
    """Client side of a momentum-corrected uplink: one :func:`momentum_correction_step` with the state read from
    and written to ``client_state`` (``dgc_velocity``, ``ef_residual``); returns the payload."""
    message, client_state[VELOCITY_KEY], client_state[EF_KEY] = momentum_correction_step(
        delta, client_state.get(VELOCITY_KEY), client_state.get(EF_KEY), compressor, generator, momentum)
    return encode_message(message)


def energy_kept(sent: Mapping[str, torch.Tensor], residual: Mapping[str, torch.Tensor]) -> float:
    """``||sent||^2 / (||sent||^2 + ||residual||^2)``: the share of the compressor's input that was sent (exact for
    a sparsifier, whose sent and left-over coordinates are disjoint); ``nan`` for an all-zero input."""
    s = sum(float(t.double().pow(2).sum()) for t in sent.values())
    r = sum(float(t.double().pow(2).sum()) for t in residual.values())
    return s / (s + r) if s + r > 0 else float("nan")


__all__ = ["VELOCITY_KEY", "energy_kept", "kept_mask", "momentum_correction_step", "momentum_uplink"]
