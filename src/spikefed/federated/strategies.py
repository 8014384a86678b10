"""Server-side federated strategies: a few small hooks plus a server optimizer on the pseudo-gradient.

A strategy is driven by the simulation (or deployment) loop once per round ``t``::

    instructions = strategy.configure_fit(t, global_params)        # sent to the sampled clients
    updates = [client.fit(global_params, instructions) ...]        # ClientUpdate per participating client
    global_params = strategy.aggregate_fit(t, global_params, updates, manifolds)

Default aggregation (all strategies but SCAFFOLD's weighting and q-FFL, :mod:`spikefed.federated.qffl`)::

    p_k    = n_k / sum_j n_j                                        (sample-count weights; 1/K: weighting=uniform)
    target = aggregate_params([w_k], p, manifolds)                   (manifold-aware weighted mean)
    g      = chart_difference(x, target)                             (pseudo-gradient, per tensor, in the chart)
    phi(x) <- server_optimizer(phi(x), g);  x <- project(phi^-1(phi(x)))

so that plain SGD with ``lr = 1`` gives ``x <- target`` (FedAvg). ``phi`` is the manifold chart (identity,
log, logit; circular values step on the raw value with a wrapped ``g`` and are wrapped back into ``[0, P)``);
the final projection clamps positive / unit-interval values to at least ``EPS`` from the boundary, so the
global model always stays on its manifolds. With :attr:`Strategy.aggregator` set (robust aggregation,
:mod:`spikefed.federated.robust`) the target is ``aggregator(x, [w_k], p, manifolds)`` instead of the weighted
mean; the server optimizer step is the same.

Server optimizers (``Delta = -g = target - x`` in chart coordinates, element-wise):

- FedAvg / FedProx: ``x <- x - lr g`` (for ``lr == 1`` the target is returned as is, bit-exact).
- FedAvgM: ``v <- beta v + g``; ``x <- x - lr v`` (``v_0 = 0``; same as ``torch.optim.SGD(momentum=beta)``).
- FedAdagrad / FedAdam / FedYogi, Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2::

      m <- b1 m + (1 - b1) Delta
      v <- v + Delta^2                                   (Adagrad)
      v <- b2 v + (1 - b2) Delta^2                       (Adam)
      v <- v - (1 - b2) Delta^2 sign(v - Delta^2)        (Yogi)
      x <- x + lr m / (sqrt(v) + tau)

  with ``m_{-1} = 0`` and ``v_{-1} = initial_accumulator`` (default ``tau^2``, the smallest value the paper's
  Algorithm 2 allows). As in the paper there is **no bias correction** of ``m`` or ``v``.
- SCAFFOLD (Karimireddy et al. 2020, Algorithm 1, server side): ``x <- x + lr mean_{k in S}(y_k - x)`` with
  the **unweighted** mean over the participating clients as in the paper (``sample_weighted=True`` uses
  ``p_k`` instead), evaluated manifold-aware like the target above; control variate
  ``c <- c + (|S| / N) mean_{k in S} control_delta_k`` (always unweighted: it keeps ``c = mean_i c_i`` over
  all ``N`` clients). ``c_0 = 0``.

Every ``aggregate_fit`` validates each update against the current global parameters (names, shapes, floating
dtype, finite values, values on their manifolds, ``num_samples >= 1``, unique client ids) and raises
:class:`~spikefed.federated.aggregation.InvalidUpdate` naming the client: a bad update is never averaged in
or dropped silently; callers wanting to *exclude* bad clients filter with
:func:`~spikefed.federated.aggregation.validate_update` (which also offers a norm bound) first.
``aggregate_fit`` never mutates its inputs, and it only commits its new optimizer state when the whole step
succeeded (a failing round leaves the strategy unchanged).

State (``state_dict``) is a plain dict of strings, numbers and ``{slot: {parameter name: tensor}}`` buffers,
safe for ``torch.save`` / ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch

from spikefed.federated.aggregation import (
    InvalidUpdate,
    aggregate_params,
    chart_difference,
    from_chart,
    normalized_weights,
    to_chart,
    validate_update,
)
from spikefed.federated.types import ClientUpdate, FitInstructions, ParamDict
from spikefed.manifold import EUCLIDEAN, Manifold

__all__ = [
    "STRATEGIES",
    "STATE_FORMAT",
    "WEIGHTINGS",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "Scaffold",
    "Strategy",
    "adaptive_step",
    "corrected_weights",
    "make_strategy",
    "momentum_step",
    "register_strategy",
    "strategy_names",
    "sgd_step",
]

STRATEGIES: tuple[str, ...] = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "scaffold",
                                "qffl")
#: how the mean weights the clients (:attr:`Strategy.weighting`)
WEIGHTINGS: tuple[str, ...] = ("samples", "uniform")

#: Version of the ``state_dict`` layout.
STATE_FORMAT = 1

AdaptiveRule = Literal["adagrad", "adam", "yogi"]

# ------------------------------------------------------------------------------- functional optimizer core


def sgd_step(x: torch.Tensor, g: torch.Tensor, lr: float) -> torch.Tensor:
    """``x - lr g`` (new tensor)."""
    return x - lr * g


def momentum_step(
    x: torch.Tensor, g: torch.Tensor, velocity: torch.Tensor, lr: float, momentum: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heavy-ball step: ``v' = momentum v + g``, ``x' = x - lr v'``. Returns ``(x', v')`` (new tensors)."""
    v = momentum * velocity + g
    return x - lr * v, v


def adaptive_step(
    x: torch.Tensor,
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    *,
    rule: AdaptiveRule,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One FedOpt step of Reddi et al. (2021), Algorithm 2, with ``Delta = -g``. Returns ``(x', m', v')``.

    ``m' = b1 m + (1 - b1) Delta``; ``v'`` per ``rule`` (``adagrad``: ``v + Delta^2``; ``adam``:
    ``b2 v + (1 - b2) Delta^2``; ``yogi``: ``v - (1 - b2) Delta^2 sign(v - Delta^2)``);
    ``x' = x + lr m' / (sqrt(v') + tau)``. No bias correction. ``beta2`` is ignored by ``adagrad``.
    """
    delta = -g
    d2 = delta * delta
    m_new = beta1 * m + (1.0 - beta1) * delta
    if rule == "adagrad":
        v_new = v + d2
    elif rule == "adam":
        v_new = beta2 * v + (1.0 - beta2) * d2
    elif rule == "yogi":
        v_new = v - (1.0 - beta2) * d2 * torch.sign(v - d2)
    else:
        raise ValueError(f"unknown adaptive rule {rule!r}; valid rules: adagrad, adam, yogi")
    return x + lr * m_new / (torch.sqrt(v_new) + tau), m_new, v_new


# ------------------------------------------------------------------------------------- argument checking


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def _positive(name: str, value: Any) -> float:
    v = _real(name, value)
    if not v > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return v


def _non_negative(name: str, value: Any) -> float:
    v = _real(name, value)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


def _unit_beta(name: str, value: Any) -> float:
    v = _real(name, value)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    return v


# -------------------------------------------------------------------------------------------- strategies


class Strategy:
    """Base strategy: FedAvg-style aggregation to a target, then a server optimizer step in chart space.

    Your own strategy (docs/api.md) subclasses this and overrides a few public hooks, each optional except
    :meth:`server_step`: ``name`` and the per-parameter state ``slots`` it keeps, :meth:`config`
    (hyperparameters, checked on resume), :meth:`configure_fit` (instructions to the clients),
    :meth:`client_weights` (aggregation weights), :meth:`aggregate` (the target from the clients' parameters)
    and :meth:`server_step` (the server optimizer per tensor). Register it with :func:`register_strategy` to use
    it by name in a config. See the module docstring for the formulas of the built-ins.
    """

    name: ClassVar[str] = "strategy"
    #: Names of per-parameter state buffers (``{slot: {param name: tensor}}`` in the state dict).
    slots: ClassVar[tuple[str, ...]] = ()
    #: Robust replacement of the weighted mean (e.g. :class:`spikefed.federated.robust.RobustAggregator`):
    #: ``aggregator(global_params, client_params, weights, manifolds) -> target``; ``None``: the weighted mean.
    #: Not part of :meth:`config` / the state dict (it holds no state).
    aggregator: Callable[[ParamDict, Sequence[ParamDict], torch.Tensor, Mapping[str, Manifold]], ParamDict] | None = (
        None)
    #: how the mean weights the clients: ``samples`` (``p_k = n_k / sum_j n_j``, FedAvg) or ``uniform``
    #: (``p_k = 1/K`` over the round's K accepted clients, the seed's plain mean); set with
    #: :meth:`set_weighting`. Like :attr:`aggregator` it is not part of the state dict (a run's config
    #: fingerprint covers it). SCAFFOLD keeps its own rule unless ``sample_weighted``.
    weighting: str = "samples"
    #: the round's client-selection correction (:mod:`spikefed.federated.selection`): client id -> factor on its
    #: weight (``p_k`` proportional to ``b_k factor_k``); set by the simulation each round, ``None``: none
    weight_factors: dict[int, float] | None = None

    def __init__(self) -> None:
        self.rounds_aggregated: int = 0
        self.last_round: int = -1
        self._buffers: dict[str, ParamDict] = {slot: {} for slot in self.slots}

    # -- configuration ---------------------------------------------------------------------------------

    def config(self) -> dict[str, float | int | bool]:
        """The strategy's hyperparameters (plain values); stored in, and checked against, the state dict."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -- hooks -----------------------------------------------------------------------------------------

    def configure_fit(self, rnd: int, global_params: ParamDict) -> FitInstructions:
        """Instructions for the clients of round ``rnd`` (plain FedAvg: just the round number)."""
        return FitInstructions(round=rnd)

    def set_weighting(self, weighting: str) -> Strategy:
        """Choose the aggregation weights (one of :data:`WEIGHTINGS`); returns ``self``."""
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
        self.weighting = weighting
        return self

    def client_weights(self, updates: Sequence[ClientUpdate]) -> torch.Tensor:
        """Aggregation weights (float64, one per update): ``p_k = n_k / sum_j n_j``, or ``1/K`` with
        :attr:`weighting` ``uniform``."""
        if self.weighting == "uniform":
            if not updates:
                raise ValueError("client_weights needs at least one update")
            base = torch.full((len(updates),), 1.0 / len(updates), dtype=torch.float64)
        else:
            base = normalized_weights([u.num_samples for u in updates])
        return base if self.weight_factors is None else corrected_weights(base, updates, self.weight_factors)

    def aggregate(self, global_params: ParamDict, client_params: Sequence[ParamDict], weights: torch.Tensor,
                  manifolds: Mapping[str, Manifold]) -> ParamDict:
        """Hook: the round's target from the clients' parameters and their weights (``client_weights``); default
        the manifold-aware weighted mean :func:`~spikefed.federated.aggregation.aggregate_params`. A robust
        defence (``robustness.defense``) replaces this hook for the round. Must return a value on each
        parameter's manifold for every name of ``global_params``."""
        return aggregate_params(client_params, weights, manifolds)

    def aggregate_fit(
        self,
        rnd: int,
        global_params: ParamDict,
        updates: Sequence[ClientUpdate],
        manifolds: Mapping[str, Manifold] | None = None,
        validated: bool = False,
        aggregator: Callable[[ParamDict, Sequence[ParamDict], torch.Tensor, Mapping[str, Manifold]], ParamDict]
        | None = None,
    ) -> ParamDict:
        """New global parameters from the round-``rnd`` client ``updates`` (inputs are not mutated).

        ``aggregator`` (optional): a robust replacement of the weighted mean for this call (the robustness stage
        passes the round's defence); without it :attr:`aggregator`, else the weighted mean.

        Raises :class:`InvalidUpdate` for a bad update (naming the client) and ``ValueError`` for bad global
        parameters, an empty round, or a server step that leaves the manifold's finite range; on any error
        the strategy state is unchanged. ``validated=True`` skips the per-update checks for callers that
        already filtered the round with :func:`~spikefed.federated.aggregation.validate_updates` (same checks,
        batched); duplicate ids are still refused.
        """
        manifolds = dict(manifolds or {})
        self._check_round(rnd, global_params, updates, manifolds, validated)
        target = self._aggregate_target(global_params, updates, manifolds, aggregator)
        # in the order of the global parameters (clients may list names in another order)
        target = {n: target[n].to(device=w.device, dtype=w.dtype) for n, w in global_params.items()}
        new_params, new_buffers = self._server_update(rnd, global_params, target, updates, manifolds)
        for n, t in new_params.items():
            if not torch.isfinite(t).all():
                raise ValueError(
                    f"round {rnd}: the {self.name} server step produced non-finite values for parameter {n!r} "
                    "(strategy state left unchanged)"
                )
        self._buffers = new_buffers
        self.rounds_aggregated += 1
        self.last_round = int(rnd)
        return new_params

    def step_to_target(
        self, rnd: int, global_params: ParamDict, target: ParamDict, manifolds: Mapping[str, Manifold] | None = None
    ) -> ParamDict:
        """Server optimizer step towards a ``target`` aggregated elsewhere (DP noised mean, secure sum).

        Same as :meth:`aggregate_fit` after its mean: ``g = chart_difference(x, target)`` feeds the server
        optimizer (FedAvg with ``lr = 1`` returns ``target``), with the same finiteness check and the same
        all-or-nothing commit of the optimizer state. ``target`` must lie on the manifolds.
        """
        manifolds = dict(manifolds or {})
        if set(target) != set(global_params):
            raise ValueError(f"round {rnd}: target parameters {sorted(target)} differ from the global ones")
        target = {n: target[n].to(device=w.device, dtype=w.dtype) for n, w in global_params.items()}
        new_params, new_buffers = self._server_update(rnd, global_params, target, (), manifolds)
        for n, t in new_params.items():
            if not torch.isfinite(t).all():
                raise ValueError(f"round {rnd}: the {self.name} server step produced non-finite values for "
                                 f"parameter {n!r} (strategy state left unchanged)")
        self._buffers = new_buffers
        self.rounds_aggregated += 1
        self.last_round = int(rnd)
        return new_params

    # -- internals -------------------------------------------------------------------------------------

    def _aggregate_target(
        self, global_params: ParamDict, updates: Sequence[ClientUpdate], manifolds: Mapping[str, Manifold],
        aggregator: Callable[[ParamDict, Sequence[ParamDict], torch.Tensor, Mapping[str, Manifold]], ParamDict]
        | None = None,
    ) -> ParamDict:
        """The round's target: ``aggregate_params([w_k], p, manifolds)`` (weighted mean with
        ``p = client_weights``), or ``aggregator(x, [w_k], p, manifolds)`` when :attr:`aggregator` is set."""
        params, weights = [u.params for u in updates], self.client_weights(updates)
        aggregator = aggregator if aggregator is not None else self.aggregator
        if aggregator is None:
            return self.aggregate(global_params, params, weights, manifolds)
        return aggregator(global_params, params, weights, manifolds)

    def _check_round(
        self, rnd: int, global_params: ParamDict, updates: Sequence[ClientUpdate], manifolds: Mapping[str, Manifold],
        validated: bool = False,
    ) -> None:
        if isinstance(rnd, bool) or not isinstance(rnd, numbers.Integral):
            raise ValueError(f"round must be an integer, got {rnd!r}")
        if not global_params:
            raise ValueError(f"round {rnd}: global_params is empty")
        for n, t in global_params.items():
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise ValueError(f"global parameter {n!r} must be a floating-point tensor, got "
                                 f"{getattr(t, 'dtype', type(t))}")
            if not torch.isfinite(t).all():
                raise ValueError(f"global parameter {n!r} contains non-finite values")
        if not updates:
            raise ValueError(f"round {rnd}: no client updates to aggregate")
        seen: set[int] = set()
        for u in updates:
            if u.client_id in seen:
                raise InvalidUpdate(u.client_id, f"duplicate client id in round {rnd}")
            seen.add(u.client_id)
            if not validated:
                validate_update(u, global_params, manifolds=manifolds)

    def buffer(self, slot: str, name: str, like: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Current state buffer ``slot[name]`` (as ``like``'s dtype/device), or ``fill`` if none yet (for
        :meth:`server_step`: the state it wrote into ``out[slot][name]`` the round before)."""
        buf = self._buffers[slot]
        if not buf:
            return torch.full_like(like, fill)
        if name not in buf:
            raise ValueError(f"{self.name} state buffer {slot!r} has no entry for parameter {name!r} "
                             f"(it holds {sorted(buf)}); was the model changed?")
        t = buf[name]
        if t.shape != like.shape:
            raise ValueError(f"{self.name} state buffer {slot!r} for parameter {name!r} has shape "
                             f"{tuple(t.shape)}, the parameter has {tuple(like.shape)}")
        return t.to(device=like.device, dtype=like.dtype)

    def _check_buffer_names(self, global_params: ParamDict) -> None:
        for slot, buf in self._buffers.items():
            if buf and set(buf) != set(global_params):
                missing, extra = sorted(set(global_params) - set(buf)), sorted(set(buf) - set(global_params))
                raise ValueError(f"{self.name} state buffer {slot!r} does not match the model: no state for "
                                 f"{missing}, state for unknown parameters {extra}")

    def server_step(self, name: str, x: torch.Tensor, g: torch.Tensor, out: dict[str, ParamDict]) -> torch.Tensor:
        """Hook: the server optimizer on one parameter ``name`` in chart coordinates: ``x`` the current value,
        ``g = x - target`` the pseudo-gradient; returns the new value. State it keeps across rounds goes into
        ``out[slot][name]`` (``slot`` one of :attr:`slots`) and is read back next round with :meth:`buffer`.
        Pure helpers: :func:`sgd_step`, :func:`momentum_step`, :func:`adaptive_step`."""
        raise NotImplementedError

    def _apply_chart_steps(
        self, global_params: ParamDict, target: ParamDict, manifolds: Mapping[str, Manifold]
    ) -> tuple[ParamDict, dict[str, ParamDict]]:
        self._check_buffer_names(global_params)
        new_buffers: dict[str, ParamDict] = {slot: {} for slot in self.slots}
        out: ParamDict = {}
        for name, w in global_params.items():
            m = manifolds.get(name, EUCLIDEAN)
            w = w.detach()
            g = chart_difference(w, target[name], m)
            y = self.server_step(name, to_chart(w, m), g, new_buffers)
            out[name] = m.project_(from_chart(y, m))
        return out, new_buffers

    def _server_update(
        self,
        rnd: int,
        global_params: ParamDict,
        target: ParamDict,
        updates: Sequence[ClientUpdate],
        manifolds: Mapping[str, Manifold],
    ) -> tuple[ParamDict, dict[str, ParamDict]]:
        return self._apply_chart_steps(global_params, target, manifolds)

    # -- checkpointing ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state: strategy name, format, hyperparameters, round counters, state buffers."""
        return {
            "strategy": self.name,
            "format": STATE_FORMAT,
            "config": dict(self.config()),
            "rounds_aggregated": self.rounds_aggregated,
            "last_round": self.last_round,
            "buffers": {slot: {n: t.detach().clone() for n, t in buf.items()} for slot, buf in self._buffers.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output. ValueError if it belongs to another strategy or configuration."""
        if not isinstance(state, Mapping):
            raise ValueError(f"state must be a dict, got {type(state).__name__}")
        expected = {"strategy", "format", "config", "rounds_aggregated", "last_round", "buffers"}
        if set(state) != expected:
            raise ValueError(f"state dict keys {sorted(state)} differ from the expected {sorted(expected)}")
        if state["strategy"] != self.name:
            raise ValueError(f"state dict is for strategy {state['strategy']!r}, not {self.name!r}")
        if state["format"] != STATE_FORMAT:
            raise ValueError(f"unsupported state dict format {state['format']!r} (expected {STATE_FORMAT})")
        mine, theirs = self.config(), state["config"]
        if not isinstance(theirs, Mapping):
            raise ValueError(f"state dict config must be a dict, got {type(theirs).__name__}")
        if dict(theirs) != mine:
            diff = sorted(str(k) for k in set(mine) | set(theirs) if theirs.get(k) != mine.get(k))
            raise ValueError(f"state dict was written with a different {self.name} configuration "
                             f"(differs in {diff}: checkpoint {dict(theirs)}, this strategy {mine})")
        counters: dict[str, int] = {}
        for key, low in (("rounds_aggregated", 0), ("last_round", -1)):
            v = state[key]
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ValueError(f"state dict {key} must be an integer >= {low}, got {v!r}")
            counters[key] = int(v)
        buffers = state["buffers"]
        if not isinstance(buffers, Mapping) or set(buffers) != set(self.slots):
            raise ValueError(f"state dict buffers must have the slots {list(self.slots)}, got "
                             f"{sorted(buffers) if isinstance(buffers, Mapping) else type(buffers).__name__}")
        new: dict[str, ParamDict] = {}
        for slot in self.slots:
            buf = buffers[slot]
            if not isinstance(buf, Mapping):
                raise ValueError(f"state dict buffer {slot!r} must be a dict of tensors")
            for n, t in buf.items():
                if not isinstance(n, str) or not isinstance(t, torch.Tensor) or not t.is_floating_point():
                    raise ValueError(f"state dict buffer {slot!r} entry {n!r} must be a floating-point tensor")
            new[slot] = {n: t.detach().clone() for n, t in buf.items()}
        self._buffers = new
        self.rounds_aggregated = counters["rounds_aggregated"]
        self.last_round = counters["last_round"]


class FedAvg(Strategy):
    """FedAvg (McMahan et al. 2017) with a server learning rate: ``x <- x - lr g``; ``lr = 1`` gives the mean."""

    name = "fedavg"

    def __init__(self, server_lr: float = 1.0) -> None:
        super().__init__()
        self.server_lr = _positive("server_lr", server_lr)

    def config(self) -> dict[str, float | int | bool]:
        return {"server_lr": self.server_lr}

    def server_step(self, name: str, x: torch.Tensor, g: torch.Tensor, out: dict[str, ParamDict]) -> torch.Tensor:
        return sgd_step(x, g, self.server_lr)

    def _server_update(
        self,
        rnd: int,
        global_params: ParamDict,
        target: ParamDict,
        updates: Sequence[ClientUpdate],
        manifolds: Mapping[str, Manifold],
    ) -> tuple[ParamDict, dict[str, ParamDict]]:
        if self.server_lr == 1.0:  # x - (x - target) == target: return it bit-exactly
            return dict(target), {}
        return self._apply_chart_steps(global_params, target, manifolds)


class FedProx(FedAvg):
    """FedProx (Li et al. 2020): FedAvg on the server; clients add ``mu/2 ||w - w_t||^2`` (``prox_mu = mu``)."""

    name = "fedprox"

    def __init__(self, mu: float = 0.01, server_lr: float = 1.0) -> None:
        super().__init__(server_lr)
        self.mu = _non_negative("mu", mu)

    def config(self) -> dict[str, float | int | bool]:
        return {"mu": self.mu, "server_lr": self.server_lr}

    def configure_fit(self, rnd: int, global_params: ParamDict) -> FitInstructions:
        return FitInstructions(round=rnd, prox_mu=self.mu)


class FedAvgM(Strategy):
    """FedAvgM (Hsu et al. 2019): ``v <- beta v + g``, ``x <- x - lr v`` (``v_0 = 0``)."""

    name = "fedavgm"
    slots = ("momentum",)

    def __init__(self, server_lr: float = 1.0, momentum: float = 0.9) -> None:
        super().__init__()
        self.server_lr = _positive("server_lr", server_lr)
        self.momentum = _unit_beta("momentum", momentum)

    def config(self) -> dict[str, float | int | bool]:
        return {"server_lr": self.server_lr, "momentum": self.momentum}

    def server_step(self, name: str, x: torch.Tensor, g: torch.Tensor, out: dict[str, ParamDict]) -> torch.Tensor:
        x_new, v = momentum_step(x, g, self.buffer("momentum", name, x), self.server_lr, self.momentum)
        out["momentum"][name] = v
        return x_new


class _FedOpt(Strategy):
    """Common part of FedAdagrad / FedAdam / FedYogi (Reddi et al. 2021, Algorithm 2)."""

    rule: ClassVar[AdaptiveRule]
    slots = ("m", "v")

    def __init__(
        self, server_lr: float, beta1: float, beta2: float, tau: float, initial_accumulator: float | None
    ) -> None:
        super().__init__()
        self.server_lr = _positive("server_lr", server_lr)
        self.beta1 = _unit_beta("beta1", beta1)
        self.beta2 = _unit_beta("beta2", beta2)
        self.tau = _positive("tau", tau)
        self.initial_accumulator = (
            self.tau**2 if initial_accumulator is None else _non_negative("initial_accumulator", initial_accumulator)
        )

    def config(self) -> dict[str, float | int | bool]:
        return {"server_lr": self.server_lr, "beta1": self.beta1, "beta2": self.beta2, "tau": self.tau,
                "initial_accumulator": self.initial_accumulator}

    def server_step(self, name: str, x: torch.Tensor, g: torch.Tensor, out: dict[str, ParamDict]) -> torch.Tensor:
        m = self.buffer("m", name, x)
        v = self.buffer("v", name, x, self.initial_accumulator)
        x_new, out["m"][name], out["v"][name] = adaptive_step(
            x, g, m, v, rule=self.rule, lr=self.server_lr, beta1=self.beta1, beta2=self.beta2, tau=self.tau
        )
        return x_new


class FedAdam(_FedOpt):
    """FedAdam: ``v <- b2 v + (1 - b2) Delta^2`` (Reddi et al. 2021; no bias correction)."""

    name = "fedadam"
    rule = "adam"

    def __init__(
        self, server_lr: float = 1e-2, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3,
        initial_accumulator: float | None = None,
    ) -> None:
        super().__init__(server_lr, beta1, beta2, tau, initial_accumulator)


class FedYogi(_FedOpt):
    """FedYogi: ``v <- v - (1 - b2) Delta^2 sign(v - Delta^2)`` (Reddi et al. 2021; no bias correction)."""

    name = "fedyogi"
    rule = "yogi"

    def __init__(
        self, server_lr: float = 1e-2, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3,
        initial_accumulator: float | None = None,
    ) -> None:
        super().__init__(server_lr, beta1, beta2, tau, initial_accumulator)


class FedAdagrad(_FedOpt):
    """FedAdagrad: ``v <- v + Delta^2`` (Reddi et al. 2021). ``beta1`` defaults to 0 (no momentum).

    Adagrad has no ``beta2``; the config records 0.0 for it.
    """

    name = "fedadagrad"
    rule = "adagrad"

    def __init__(
        self, server_lr: float = 1e-2, beta1: float = 0.0, tau: float = 1e-3,
        initial_accumulator: float | None = None,
    ) -> None:
        super().__init__(server_lr, beta1, 0.0, tau, initial_accumulator)

    def config(self) -> dict[str, float | int | bool]:
        cfg = super().config()
        del cfg["beta2"]
        return cfg


class Scaffold(Strategy):
    """SCAFFOLD server (Karimireddy et al. 2020): ``x <- x + lr mean_S(y_k - x)``, ``c <- c + |S|/N mean_S dc_k``.

    ``configure_fit`` sends ``server_control = c`` (a copy); each update must carry ``control_delta =
    c_k^+ - c_k``. ``num_clients`` is ``N``, the total number of clients; client ids must lie in
    ``[0, N)``. The mean over participating clients is unweighted as in the paper unless
    ``sample_weighted=True`` (then ``p_k = n_k / sum n``); the control-variate mean is always unweighted.
    """

    name = "scaffold"
    slots = ("control",)

    def __init__(self, num_clients: int, server_lr: float = 1.0, sample_weighted: bool = False) -> None:
        super().__init__()
        if isinstance(num_clients, bool) or not isinstance(num_clients, numbers.Integral) or num_clients < 1:
            raise ValueError(f"num_clients must be an integer >= 1, got {num_clients!r}")
        if not isinstance(sample_weighted, bool):
            raise ValueError(f"sample_weighted must be a bool, got {sample_weighted!r}")
        self.num_clients: int = int(num_clients)
        self.server_lr: float = _positive("server_lr", server_lr)
        self.sample_weighted: bool = sample_weighted

    def config(self) -> dict[str, float | int | bool]:
        return {"num_clients": self.num_clients, "server_lr": self.server_lr, "sample_weighted": self.sample_weighted}

    def step_to_target(
        self, rnd: int, global_params: ParamDict, target: ParamDict, manifolds: Mapping[str, Manifold] | None = None
    ) -> ParamDict:
        """Not available: SCAFFOLD's control variate needs every client's ``control_delta``."""
        raise ValueError("SCAFFOLD cannot step to an externally aggregated target (it needs each client's "
                         "control_delta); differential privacy and secure aggregation do not support it")

    def server_control(self, global_params: ParamDict) -> ParamDict:
        """A copy of the server control variate ``c`` (zeros before the first aggregation)."""
        self._check_buffer_names(global_params)
        return {n: self.buffer("control", n, w.detach()).clone() for n, w in global_params.items()}

    def configure_fit(self, rnd: int, global_params: ParamDict) -> FitInstructions:
        return FitInstructions(round=rnd, server_control=self.server_control(global_params))

    def client_weights(self, updates: Sequence[ClientUpdate]) -> torch.Tensor:
        if self.sample_weighted:
            return super().client_weights(updates)
        return torch.full((len(updates),), 1.0 / len(updates), dtype=torch.float64)

    def _check_round(
        self, rnd: int, global_params: ParamDict, updates: Sequence[ClientUpdate], manifolds: Mapping[str, Manifold],
        validated: bool = False,
    ) -> None:
        super()._check_round(rnd, global_params, updates, manifolds)
        for u in updates:
            if isinstance(u.client_id, bool) or not isinstance(u.client_id, numbers.Integral) or not (
                0 <= u.client_id < self.num_clients
            ):
                raise InvalidUpdate(u.client_id, f"client id must lie in [0, num_clients={self.num_clients})")
            if u.control_delta is None:
                raise InvalidUpdate(u.client_id, "SCAFFOLD needs control_delta (c_k^+ - c_k), got None")

    def server_step(self, name: str, x: torch.Tensor, g: torch.Tensor, out: dict[str, ParamDict]) -> torch.Tensor:
        return sgd_step(x, g, self.server_lr)

    def _server_update(
        self,
        rnd: int,
        global_params: ParamDict,
        target: ParamDict,
        updates: Sequence[ClientUpdate],
        manifolds: Mapping[str, Manifold],
    ) -> tuple[ParamDict, dict[str, ParamDict]]:
        self._check_buffer_names(global_params)
        if self.server_lr == 1.0:
            new_params = dict(target)
        else:
            new_params, _ = self._apply_chart_steps(global_params, target, manifolds)
        frac = len(updates) / self.num_clients
        control: ParamDict = {}
        for name, w in global_params.items():
            c = self.buffer("control", name, w.detach())
            deltas = torch.stack(
                [_control_delta(u)[name].detach().to(device=c.device, dtype=c.dtype) for u in updates]
            )
            control[name] = c + frac * deltas.mean(0)
        return new_params, {"control": control}


def _control_delta(update: ClientUpdate) -> ParamDict:
    assert update.control_delta is not None  # checked in Scaffold._check_round
    return update.control_delta


def corrected_weights(base: torch.Tensor, updates: Sequence[ClientUpdate], factors: Mapping[int, float]
                      ) -> torch.Tensor:
    """``p_k = b_k f_k / sum_j b_j f_j``: the selection correction ``f`` (by client id) on the weights ``b``."""
    missing = [u.client_id for u in updates if u.client_id not in factors]
    if missing:
        raise ValueError(f"the round's selection has no aggregation factor for clients {missing}")
    p = base * torch.tensor([float(factors[u.client_id]) for u in updates], dtype=torch.float64)
    return p / p.sum()


#: name -> strategy factory (a class or function taking keyword arguments): the built-ins and those added with
#: :func:`register_strategy`; a name here is usable as ``federation.strategy`` in a config.
_REGISTRY: dict[str, Callable[..., Strategy]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "scaffold": Scaffold,
}


def register_strategy(name: str, factory: Callable[..., Strategy] | None = None, *, replace: bool = False) -> Any:
    """Make a strategy usable by name (``federation.strategy: NAME`` in a config, ``make_strategy(NAME)``).

    ``factory`` is a :class:`Strategy` subclass (or a function returning one) called with keyword arguments:
    ``federation.strategy_args`` of the config, plus ``server_lr`` when the config sets it. Used as a decorator
    when ``factory`` is left out. Names are lower-case letters, digits and ``_``; registering a taken name
    raises ``ValueError`` unless ``replace=True`` (the built-in names cannot be replaced).
    """
    def add(f: Callable[..., Strategy]) -> Callable[..., Strategy]:
        if not isinstance(name, str) or not name or not all(c.islower() or c.isdigit() or c == "_" for c in name):
            raise ValueError(f"strategy name must be lower-case letters, digits and '_', got {name!r}")
        if not callable(f):
            raise TypeError(f"strategy {name!r}: factory must be a Strategy subclass or a function, got {f!r}")
        if name in STRATEGIES:
            raise ValueError(f"{name!r} is a built-in strategy; choose another name")
        if name in _REGISTRY and not replace:
            raise ValueError(f"strategy {name!r} is registered already (pass replace=True to replace it)")
        _REGISTRY[name] = f
        return f

    return add if factory is None else add(factory)


def strategy_names() -> tuple[str, ...]:
    """Every name :func:`make_strategy` accepts: the built-ins (:data:`STRATEGIES`), then the registered ones."""
    return STRATEGIES + tuple(sorted(set(_REGISTRY) - set(STRATEGIES)))


def make_strategy(name: str, **kwargs: Any) -> Strategy:
    """Build a strategy by name (case-insensitive; one of :func:`strategy_names`) with its keyword arguments.

    Raises ``ValueError`` listing the valid names for an unknown name, and the valid arguments for unknown
    or missing required ones; ``TypeError`` when a registered factory does not return a :class:`Strategy`.
    """
    key = name.lower() if isinstance(name, str) else name
    if key == "qffl":  # its own module (it builds on Strategy)
        from spikefed.federated.qffl import QFFL

        _REGISTRY.setdefault("qffl", QFFL)
    if key not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; valid strategies: {', '.join(strategy_names())} "
                         "(add your own with spikefed.register_strategy)")
    cls = _REGISTRY[key]
    params = [p for p in inspect.signature(cls).parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    valid = [p.name for p in params]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls).parameters.values())
    unknown = sorted(set(kwargs) - set(valid))
    if unknown and not takes_any:
        raise ValueError(f"unknown argument(s) {unknown} for strategy {key!r}; valid arguments: {valid}")
    missing = [p.name for p in params if p.default is p.empty and p.name not in kwargs]
    if missing:
        raise ValueError(f"strategy {key!r} needs argument(s) {missing}; valid arguments: {valid}")
    strategy = cls(**kwargs)
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy {key!r}: its factory returned {type(strategy).__name__}, not a "
                        "spikefed Strategy")
    return strategy
