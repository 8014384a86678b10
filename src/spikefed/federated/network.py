"""Network model: per-device links turn the bytes a round measures into simulated seconds.

Every client ``k`` has a link drawn once per run from ``(seed, NETWORK, client k)``: uplink and downlink
bandwidths and a one-way latency, each the configured median times its own log-normal factor::

    up_k = uplink_mbps exp(sigma u_k),  down_k = downlink_mbps exp(sigma d_k),  lat_k = latency_ms exp(sigma l_k)

with ``u_k, d_k, l_k ~ N(0, 1)`` (drawn in that order) and ``sigma = spread`` (0: every device has the medians).
Moving ``B`` bytes over a link of ``M`` Mbit/s with latency ``L`` ms takes::

    t(B) = L / 1000 + 8 B / (M 10^6)   seconds

A sampled client that trains ``tau_k`` local steps of ``t_{k,r}`` nominal step times each (the faults model,
:mod:`spikefed.federated.faults`; one nominal step lasts ``step_ms`` milliseconds) finishes its round at::

    T_k = t_down(B_down,k) + tau_k t_{k,r} step_ms / 1000 + t_up(B_up,k)

where ``B_down,k`` is the broadcast it received and ``B_up,k`` the bytes of its upload (both as serialized:
compression shrinks ``B_up,k``, and so ``T_k``). With a round deadline ``D`` (``faults.deadline``, in nominal
step times, i.e. ``D step_ms / 1000`` seconds) a client with ``T_k`` past it is *late* and its upload is cut off.
The round's simulated wall-clock time is the moment the server can aggregate: the deadline when a client is late
(the server cannot know it will not arrive sooner), otherwise the last arrival, ``max_k T_k`` over the clients that
trained (dropped clients are assumed to be noticed at once and hold nothing up).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Link", "NetworkSpec", "client_seconds", "draw_link", "round_timing", "transfer_seconds"]


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"network.{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(float(value)) and float(value) >= 0):
        raise ValueError(f"network.{name} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class NetworkSpec:
    """Medians of the devices' links, their log-normal spread, and the duration of a nominal local step."""

    uplink_mbps: float = 5.0
    downlink_mbps: float = 20.0
    latency_ms: float = 50.0
    spread: float = 0.0
    step_ms: float = 10.0

    def __post_init__(self) -> None:
        for name in ("uplink_mbps", "downlink_mbps", "step_ms"):
            _positive(name, getattr(self, name))
        _non_negative("latency_ms", self.latency_ms)
        _non_negative("spread", self.spread)


class Link(NamedTuple):
    """One device's link."""

    uplink_mbps: float
    downlink_mbps: float
    latency_ms: float


def draw_link(spec: NetworkSpec, rng: np.random.Generator) -> Link:
    """A device's link: the medians times ``exp(spread z)``, three ``z ~ N(0, 1)`` always drawn (up, down,
    latency), so the same generator ranks devices the same way whatever the spread."""
    z = rng.standard_normal(3)
    f = np.exp(spec.spread * z)
    return Link(spec.uplink_mbps * float(f[0]), spec.downlink_mbps * float(f[1]), spec.latency_ms * float(f[2]))


def transfer_seconds(nbytes: int, mbps: float, latency_ms: float) -> float:
    """``latency_ms / 1000 + 8 nbytes / (mbps 10^6)``."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, numbers.Integral) or nbytes < 0:
        raise ValueError(f"nbytes must be an integer >= 0, got {nbytes!r}")
    _positive("bandwidth (mbps)", mbps)
    _non_negative("latency_ms", latency_ms)
    return float(latency_ms) / 1000.0 + 8.0 * int(nbytes) / (float(mbps) * 1e6)


def client_seconds(link: Link, bytes_down: int, bytes_up: int, compute_seconds: float) -> float:
    """``t_down + compute + t_up`` of one client in one round (module docstring)."""
    _non_negative("compute_seconds", compute_seconds)
    return (transfer_seconds(bytes_down, link.downlink_mbps, link.latency_ms) + float(compute_seconds)
            + transfer_seconds(bytes_up, link.uplink_mbps, link.latency_ms))


def round_timing(finish: Mapping[int, float], deadline_s: float | None) -> tuple[list[int], float]:
    """``(late clients, simulated round seconds)`` from each trained client's finish time: late iff past the
    deadline; the round lasts until the deadline if anyone is late, else until the last arrival (0 if none)."""
    late = sorted(c for c, t in finish.items() if deadline_s is not None and t > deadline_s)
    if late:
        assert deadline_s is not None
        return late, float(deadline_s)
    return late, max(finish.values(), default=0.0)
