"""Client-level differential privacy for federated rounds (DP-FedAvg) and its privacy accounting, plus the
round pipeline that combines it with secure aggregation (:mod:`spikefed.federated.secagg`).

DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"), one round with
a cohort ``S`` of ``m`` sampled clients, client deltas ``Delta_k`` (in the chart coordinates of every
parameter's manifold, all tensors flattened into one vector) and clip norm ``C``::

    clip(Delta_k) = Delta_k * min(1, C / ||Delta_k||_2)                 (so ||clip(Delta_k)||_2 = min(||Delta_k||, C))
    Delta~        = (sum_{k in S} clip(Delta_k) + N(0, (z C)^2 I)) / m  (Gaussian noise on the SUM, fixed denominator)
    x            <- server_update(x, target = x + Delta~)                (FedAvg: x + Delta~; FedOpt: -Delta~ is g)

The noise has standard deviation ``z C`` on the sum and ``z C / m`` on the mean (``z``: noise multiplier).

**Why uniform weights.** Under add/remove-one-client adjacency the sum ``sum_k clip(Delta_k)`` changes by at
most ``C`` in L2: its sensitivity is ``C``, which is what calibrates the noise. With FedAvg's sample-count
weights ``p_k = n_k / sum_j n_j`` a client's contribution is ``n_k / sum_j n_j * clip(Delta_k)``: ``n_k`` is
private and unbounded (one client with much data dominates, sensitivity up to ``C`` times the largest
weight ratio), and the normaliser ``sum_j n_j`` itself depends on who participates, so the bound ``C`` is
lost (McMahan et al. cap the weights for that reason). Dividing by the *fixed* cohort size ``m`` (not the
number of updates that arrived) keeps the denominator data-independent too; updates that were rejected or
dropped contribute zero.

**Adaptive clipping** (Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping"): each
client also reports ``b_k = 1[||Delta_k|| <= C]``; the server releases the noised fraction::

    b~ = (sum_{k in S} (b_k - 1/2) + N(0, sigma_b^2)) / m + 1/2,      C <- C exp(-eta (b~ - gamma))

with target quantile ``gamma`` and clip learning rate ``eta``, so ``C`` tracks the ``gamma``-quantile of the
update norms. Centering makes the count's sensitivity ``1/2``; releasing it together with the noised sum
is a Gaussian mechanism with effective noise multiplier (Andrew et al., Theorem 1)::

    z_eff = (z^-2 + (2 sigma_b)^-2)^(-1/2)

which is what the accountant composes (``sigma_b`` defaults to ``m / 20`` as in the paper; ``z`` here is the
multiplier on the update sum, so adaptive clipping *raises* epsilon for the same ``z``; to keep a target
``z_eff`` use ``z = (z_eff^-2 - (2 sigma_b)^-2)^(-1/2)``). Fixed clipping has ``z_eff = z``.

**Accounting** (package ``dp-accounting``): one round is a Poisson-subsampled Gaussian mechanism with
sampling rate ``q = m / N`` and noise multiplier ``z_eff``; ``R`` rounds compose. ``accountant="rdp"``
(Rényi DP, Mironov 2017; orders :data:`RDP_ORDERS`) converts with
``eps = min_alpha [RDP(alpha) + log((alpha - 1) / alpha) - (log delta + log alpha) / (alpha - 1)]``
(Balle et al. 2020, tighter than the classic ``RDP(alpha) + log(1/delta) / (alpha - 1)``);
``accountant="pld"`` uses privacy loss distributions (tighter, slower). Without subsampling (``q = 1``)
the Gaussian mechanism composed ``R`` times has ``RDP(alpha) = R alpha / (2 z^2)`` exactly.

*Sampling caveat.* The simulation samples a *fixed-size* cohort of ``m`` clients without replacement
(:meth:`~spikefed.federated.simulation.Simulation.sample_clients`), while the Poisson analysis assumes each
client joins independently with probability ``q`` (the cohort size then varies). Each client's inclusion
probability is the same ``q = m / N``, and this is the standard practice in DP-FedAvg papers, but it is not a
proof for the sampler actually used. ``accountant="rdp_fixed_size"`` is the rigorous alternative for it:
sampling without replacement (Wang et al. 2019) under *replace-one* adjacency (the sum's sensitivity is
then ``2 C``, so the multiplier is ``z_eff / 2``): a stronger adjacency and a larger epsilon.

What ``epsilon`` (at ``delta``) means here: for any two federations differing in one client's entire
dataset, the distribution of *all global models released over the rounds so far* differs by at most
``(epsilon, delta)``. Assumptions: a trusted server adds the noise (central DP; with secure aggregation
the server sees only the sum, but still adds the noise itself); clipping, noise and the noised count are
the only data-dependent releases; hyperparameter tuning and the simulation's diagnostics (per-client
training loss/accuracy in the metrics row, heterogeneity statistics, the partition report) are *not*
covered; ``delta`` should be well below ``1 / N``.

Secure aggregation in the round (see :mod:`~spikefed.federated.secagg`): each surviving client encodes its
(clipped, when DP is on) delta in fixed point, appends one integer coordinate (``b_k`` with DP, else its
sample count ``n_k``) and the server only learns the sums. Without DP it sends ``n_k Delta_k`` and the
server divides by ``sum n_k`` (sample-weighted FedAvg, exact up to the fixed-point rounding); with DP the
weights are uniform as above and the server adds the noise to the unmasked sum. Per-update validation on the
server is impossible (it never sees an update): the simulation's checks then stand for the *client's own*
check before masking, a client whose values do not fit the fixed-point range withdraws (logged as a rejection
and treated as a dropout), and robust aggregation / compression are refused by the config.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..manifold import EUCLIDEAN
from .aggregation import chart_difference, from_chart, to_chart
from .secagg import SecAggError, SecAggParams, decode_fixed_point, encode_fixed_point, secure_sum, threshold_for
from .strategies import Strategy
from .types import ClientUpdate, ParamDict

__all__ = [
    "ACCOUNTANTS",
    "RDP_ORDERS",
    "DPRound",
    "PrivacyAccountant",
    "PrivacyEngine",
    "PrivacySpec",
    "PrivateRound",
    "clip_deltas",
    "dp_noised_mean",
    "effective_noise_multiplier",
    "flatten_deltas",
    "next_clip",
    "noised_unclipped_fraction",
    "target_from_mean_delta",
    "unflatten",
]

#: Rényi orders of the RDP accountant: integers (exact and fast for the subsampled Gaussian), then a few large.
RDP_ORDERS: tuple[float, ...] = tuple(float(a) for a in range(2, 129)) + (160.0, 192.0, 256.0, 384.0, 512.0,
                                                                             768.0, 1024.0)
#: rdp: Poisson subsampling, add/remove adjacency; pld: same with privacy loss distributions;
#: rdp_fixed_size: sampling without replacement (fixed cohort), replace-one adjacency.
ACCOUNTANTS: tuple[str, ...] = ("rdp", "pld", "rdp_fixed_size")


# ----------------------------------------------------------------------------------------------- settings


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"privacy {name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PrivacySpec:
    """Privacy of the federated rounds (see the module docstring for the formulas).

    Attributes:
        dp: clip, noise and account (DP-FedAvg).
        clip: L2 clip norm ``C`` of each client delta (the initial value when ``adaptive_clip``).
        adaptive_clip: let ``C`` track the ``target_quantile`` of the update norms (Andrew et al. 2021).
        target_quantile: ``gamma``, the fraction of updates that should be unclipped.
        clip_lr: ``eta`` of the geometric update ``C <- C exp(-eta (b~ - gamma))``.
        noise_multiplier: ``z``: the noise on the sum of clipped deltas has std ``z C``.
        clip_count_stddev: ``sigma_b`` of the noised unclipped count (None: ``m / 20``).
        delta: the ``delta`` at which epsilon is reported.
        accountant: one of :data:`ACCOUNTANTS`.
        secure_aggregation: masked uplink (:mod:`~spikefed.federated.secagg`); the server only learns sums.
        secagg_threshold: ``t = floor(f m) + 1`` (at most ``m``) survivors are needed; ``m - t`` may drop.
        secagg_scale_bits: fixed-point scale ``2^s``.
        secagg_bits: integers mod ``2^k``.
    """

    dp: bool = False
    clip: float = 1.0
    adaptive_clip: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    noise_multiplier: float = 1.0
    clip_count_stddev: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"
    secure_aggregation: bool = False
    secagg_threshold: float = 0.5
    secagg_scale_bits: int = 16
    secagg_bits: int = 32

    def __post_init__(self) -> None:
        if not _finite("clip", self.clip) > 0:
            raise ValueError(f"privacy clip must be > 0, got {self.clip}")
        if not 0 < _finite("target_quantile", self.target_quantile) < 1:
            raise ValueError(f"privacy target_quantile must lie in (0, 1), got {self.target_quantile}")
        if not _finite("clip_lr", self.clip_lr) > 0:
            raise ValueError(f"privacy clip_lr must be > 0, got {self.clip_lr}")
        if _finite("noise_multiplier", self.noise_multiplier) < 0:
            raise ValueError(f"privacy noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if self.clip_count_stddev is not None and _finite("clip_count_stddev", self.clip_count_stddev) < 0:
            raise ValueError(f"privacy clip_count_stddev must be >= 0, got {self.clip_count_stddev}")
        if not 0 < _finite("delta", self.delta) < 1:
            raise ValueError(f"privacy delta must lie in (0, 1), got {self.delta}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"unknown privacy accountant {self.accountant!r}; valid: {', '.join(ACCOUNTANTS)}")
        if not 0 <= _finite("secagg_threshold", self.secagg_threshold) < 1:
            raise ValueError(f"privacy secagg_threshold must lie in [0, 1), got {self.secagg_threshold}")
        if not 0 <= self.secagg_scale_bits <= 52:
            raise ValueError(f"privacy secagg_scale_bits must lie in [0, 52], got {self.secagg_scale_bits}")
        if not 8 <= self.secagg_bits <= 62:
            raise ValueError(f"privacy secagg_bits must lie in [8, 62], got {self.secagg_bits}")


# --------------------------------------------------------------------------------------- functional core


def flatten_deltas(params: Sequence[ParamDict], reference: ParamDict,
                   manifolds: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Chart-space deltas ``phi(w_k) - phi(x)`` of every client, flattened: float64 ``[K, d]``.

    Names and order follow ``reference`` (the global parameters); circular parameters use the shortest signed
    arc (:func:`~spikefed.federated.aggregation.chart_difference`). ``d = sum_name numel``.
    """
    manifolds = manifolds or {}
    d = sum(t.numel() for t in reference.values())
    out = torch.zeros(len(params), d, dtype=torch.float64)
    for k, p in enumerate(params):
        start = 0
        for name, x in reference.items():
            m = manifolds.get(name, EUCLIDEAN)
            diff = chart_difference(p[name].detach().to(torch.float64), x.detach().to(torch.float64), m)
            out[k, start:start + x.numel()] = diff.reshape(-1)
            start += x.numel()
    return out


def unflatten(vec: torch.Tensor, reference: ParamDict) -> ParamDict:
    """Split a flat vector ``[d]`` back into ``{name: tensor}`` with the shapes of ``reference`` (float64)."""
    out: ParamDict = {}
    start = 0
    for name, x in reference.items():
        out[name] = vec[start:start + x.numel()].reshape(x.shape).to(torch.float64)
        start += x.numel()
    if start != vec.numel():
        raise ValueError(f"vector of length {vec.numel()} does not match the {start} parameters")
    return out


def clip_deltas(deltas: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row L2 clipping ``Delta_k min(1, C / ||Delta_k||_2)``; returns ``(clipped, norms)`` (float64).

    Rows with ``||Delta_k|| <= C`` are returned unchanged (bit for bit); the others get norm ``C`` (up to
    float64 rounding).
    """
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    x = deltas.to(torch.float64)
    norms = torch.linalg.vector_norm(x, dim=1)
    factor = torch.where(norms > clip, clip / norms.clamp_min(torch.finfo(torch.float64).tiny),
                         torch.ones_like(norms))
    return x * factor.unsqueeze(1), norms


def noised_unclipped_fraction(unclipped: float, contributors: int, cohort: int, stddev: float,
                              generator: torch.Generator) -> float:
    """``b~ = (sum_k (b_k - 1/2) + N(0, sigma_b^2)) / m + 1/2`` with ``unclipped = sum_k b_k`` over the
    ``contributors`` clients that reported (absent ones count as ``1/2``, i.e. neutral) and ``m = cohort``."""
    noise = float(torch.randn(1, generator=generator, dtype=torch.float64)) * stddev if stddev > 0 else 0.0
    return (unclipped - 0.5 * contributors + noise) / cohort + 0.5


def next_clip(clip: float, unclipped_fraction: float, target_quantile: float, lr: float) -> float:
    """Geometric update ``C exp(-eta (b~ - gamma))``: shrinks ``C`` when more than ``gamma`` of the updates were
    unclipped, grows it otherwise; its fixed point is the ``gamma``-quantile of the norms."""
    return float(clip * math.exp(-lr * (unclipped_fraction - target_quantile)))


def effective_noise_multiplier(noise_multiplier: float, count_stddev: float | None, adaptive: bool) -> float:
    """``z_eff = (z^-2 + (2 sigma_b)^-2)^(-1/2)`` with adaptive clipping, else ``z``; 0 means no guarantee
    (``z = 0``, or an adaptive clip whose count is released without noise)."""
    z = float(noise_multiplier)
    if not adaptive:
        return z
    if z == 0 or not count_stddev:
        return 0.0
    return (z**-2 + (2.0 * float(count_stddev)) ** -2) ** -0.5


@dataclass
class DPRound:
    """The server's DP step: noised mean delta, the clip used, the next clip, the noise std on the mean."""

    mean_delta: torch.Tensor
    clip: float
    next_clip: float
    noise_std: float
    unclipped_fraction: float | None = None


def dp_noised_mean(sum_clipped: torch.Tensor, unclipped: float, contributors: int, cohort: int, clip: float,
                   spec: PrivacySpec, count_stddev: float, generator: torch.Generator) -> DPRound:
    """``(sum_k clip(Delta_k) + N(0, (z C)^2 I)) / m`` and, with adaptive clipping, ``b~`` and the next ``C``.

    Draws, in this order from ``generator``: the ``d`` noise values of the sum (only when ``z > 0``), then the
    count noise (adaptive clipping with ``sigma_b > 0``).
    """
    z = spec.noise_multiplier
    total = sum_clipped.to(torch.float64)
    if z > 0:
        total = total + torch.randn(total.shape, generator=generator, dtype=torch.float64) * (z * clip)
    mean = total / cohort
    out = DPRound(mean, clip, clip, z * clip / cohort)
    if spec.adaptive_clip:
        frac = noised_unclipped_fraction(unclipped, contributors, cohort, count_stddev, generator)
        out.unclipped_fraction = frac
        out.next_clip = next_clip(clip, frac, spec.target_quantile, spec.clip_lr)
    return out


def target_from_mean_delta(global_params: ParamDict, mean_delta: ParamDict,
                           manifolds: Mapping[str, Any] | None = None) -> ParamDict:
    """``phi^-1(phi(x) + Delta~)`` per parameter, projected onto its manifold, in the global dtype."""
    manifolds = manifolds or {}
    out: ParamDict = {}
    for name, x in global_params.items():
        m = manifolds.get(name, EUCLIDEAN)
        y = to_chart(x.detach().to(torch.float64), m) + mean_delta[name].to(torch.float64)
        out[name] = m.project_(from_chart(y, m).to(x.dtype))
    return out


# ------------------------------------------------------------------------------------------- accounting


class PrivacyAccountant:
    """Epsilon after ``R`` rounds of a subsampled Gaussian mechanism (one event per round), via dp-accounting.

    ``kind``: ``rdp`` / ``pld`` compose ``PoissonSampled(q, Gaussian(z))`` under add/remove adjacency;
    ``rdp_fixed_size`` composes ``SampledWithoutReplacement(N, m, Gaussian(z / 2))`` under replace-one
    adjacency (needs ``population`` ``N`` and ``cohort`` ``m``; ``q = m / N``).
    """

    def __init__(self, noise_multiplier: float, sampling_rate: float, kind: str = "rdp",
                 population: int | None = None, cohort: int | None = None) -> None:
        if kind not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {kind!r}; valid: {', '.join(ACCOUNTANTS)}")
        if not 0 < sampling_rate <= 1:
            raise ValueError(f"sampling_rate must lie in (0, 1], got {sampling_rate}")
        if noise_multiplier < 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
        if kind == "rdp_fixed_size" and (population is None or cohort is None or not 1 <= cohort <= population):
            raise ValueError("the rdp_fixed_size accountant needs population N and cohort m with 1 <= m <= N")
        self.noise_multiplier = float(noise_multiplier)
        self.sampling_rate = float(sampling_rate)
        self.kind = kind
        self.population = population
        self.cohort = cohort
        self._cache: dict[tuple[int, float], float] = {}

    def event(self, rounds: int) -> Any:
        """The dp-accounting event of ``rounds`` rounds."""
        import dp_accounting as dp  # noqa: PLC0415 - optional extra, imported on use

        if self.kind == "rdp_fixed_size":
            assert self.population is not None and self.cohort is not None
            one = dp.SampledWithoutReplacementDpEvent(self.population, self.cohort,
                                                      dp.GaussianDpEvent(self.noise_multiplier / 2.0))
        elif self.sampling_rate == 1.0:
            one = dp.GaussianDpEvent(self.noise_multiplier)
        else:
            one = dp.PoissonSampledDpEvent(self.sampling_rate, dp.GaussianDpEvent(self.noise_multiplier))
        return dp.SelfComposedDpEvent(one, int(rounds))

    def epsilon(self, rounds: int, delta: float) -> float:
        """Smallest epsilon the accountant certifies at ``delta`` after ``rounds`` rounds (0 for no round,
        ``inf`` without noise)."""
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        if rounds == 0:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        key = (int(rounds), float(delta))
        if key not in self._cache:
            import dp_accounting as dp  # noqa: PLC0415

            if self.kind == "pld":
                acc: Any = dp.pld.PLDAccountant()
            elif self.kind == "rdp_fixed_size":
                acc = dp.rdp.RdpAccountant(list(RDP_ORDERS), dp.NeighboringRelation.REPLACE_ONE)
            else:
                acc = dp.rdp.RdpAccountant(list(RDP_ORDERS))
            acc.compose(self.event(rounds))
            self._cache[key] = float(acc.get_epsilon(delta))
        return self._cache[key]


# ----------------------------------------------------------------------------------------- round pipeline


@dataclass
class PrivateRound:
    """What :meth:`PrivacyEngine.aggregate` returns to the simulation.

    ``params``: new global parameters (None: the round changed nothing); ``state``: the new server state;
    ``survivors``: the updates that entered the aggregate; ``rejected``: ``{"client", "round", "reason"}`` of
    clients that withdrew (secure aggregation); ``row``: metrics-row entries (``dp_*``, ``secagg_*``; with
    secure aggregation also ``bytes_up`` (replaces the plain uplink) and ``bytes_down_extra``).
    """

    params: ParamDict | None
    state: dict[str, Any]
    survivors: list[ClientUpdate]
    rejected: list[dict[str, Any]] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)


class PrivacyEngine:
    """DP-FedAvg and/or secure aggregation for a federation of ``num_clients`` with a fixed cohort size.

    State lives outside (``SimulationState.server_state["privacy"]``): ``{"clip": C, "rounds": R}`` where ``R``
    is the number of rounds composed by the accountant; plain floats and ints, so a resumed run continues
    bit-identically.
    """

    def __init__(self, spec: PrivacySpec, num_clients: int, cohort_size: int) -> None:
        if not 1 <= cohort_size <= num_clients:
            raise ValueError(f"cohort size {cohort_size} must lie in [1, {num_clients}]")
        self.spec = spec
        self.num_clients = int(num_clients)
        self.cohort_size = int(cohort_size)
        self.sampling_rate = cohort_size / num_clients
        if spec.clip_count_stddev is not None:
            self.count_stddev = float(spec.clip_count_stddev)
        else:
            self.count_stddev = cohort_size / 20.0 if spec.adaptive_clip and spec.noise_multiplier > 0 else 0.0
        self.effective_noise = effective_noise_multiplier(spec.noise_multiplier, self.count_stddev,
                                                          spec.adaptive_clip)
        self.accountant = (PrivacyAccountant(self.effective_noise, self.sampling_rate, spec.accountant,
                                             num_clients, cohort_size) if spec.dp else None)
        self.threshold = threshold_for(cohort_size, spec.secagg_threshold) if spec.secure_aggregation else None

    # -- state -------------------------------------------------------------------------------------------
    def initial_state(self) -> dict[str, Any]:
        return {"clip": float(self.spec.clip), "rounds": 0}

    def checked_state(self, state: Mapping[str, Any] | None) -> dict[str, Any]:
        """The server state (``{"clip", "rounds"}``) checked, or ``ValueError`` naming what is wrong."""
        return self._state(state)

    def _state(self, state: Mapping[str, Any] | None) -> dict[str, Any]:
        if not state:
            return self.initial_state()
        if set(state) != {"clip", "rounds"}:
            raise ValueError(f"privacy server state must hold 'clip' and 'rounds', got {sorted(state)}")
        clip, rounds = state["clip"], state["rounds"]
        if not (isinstance(clip, float) and clip > 0 and math.isfinite(clip)):
            raise ValueError(f"privacy server state: clip must be a finite float > 0, got {clip!r}")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise ValueError(f"privacy server state: rounds must be an integer >= 0, got {rounds!r}")
        return {"clip": clip, "rounds": rounds}

    def epsilon(self, rounds: int) -> float | None:
        """Epsilon at ``spec.delta`` after ``rounds`` rounds (None without DP)."""
        return None if self.accountant is None else self.accountant.epsilon(rounds, self.spec.delta)

    # -- one round ---------------------------------------------------------------------------------------
    def aggregate(self, rnd: int, strategy: Strategy, global_params: ParamDict, updates: Sequence[ClientUpdate],
                  cohort: Sequence[int], manifolds: Mapping[str, Any], state: Mapping[str, Any] | None,
                  noise_generator: torch.Generator, secagg_seeds: Mapping[int, int]) -> PrivateRound:
        """Aggregate the validated ``updates`` of the sampled ``cohort`` privately and step the strategy.

        Central DP: clip, sum, noise, divide by ``m = len(cohort)``; secure aggregation: clients clip and
        encode, the server unmasks only the sum (see the module docstring). The DP round counter advances
        every round, also when nothing could be aggregated (conservative).
        """
        spec = self.spec
        st = self._state(state)
        clip = st["clip"]
        m = len(cohort)
        survivors = list(updates)
        rejected: list[dict[str, Any]] = []
        row: dict[str, Any] = {}
        mean: torch.Tensor | None = None
        unclipped = 0.0
        deltas = flatten_deltas([u.params for u in survivors], global_params, manifolds) if survivors else None
        if spec.secure_aggregation:
            mean, survivors, rejected, unclipped, secagg_row = self._secure_round(
                rnd, survivors, deltas, cohort, clip, secagg_seeds)
            row.update(secagg_row)
        elif deltas is not None:
            assert spec.dp, "a PrivacyEngine without DP needs secure aggregation"
            clipped, norms = clip_deltas(deltas, clip)
            mean = clipped.sum(0)
            unclipped = float((norms <= clip).sum())
        new_clip = clip
        if spec.dp:
            if mean is not None:
                step = dp_noised_mean(mean, unclipped, len(survivors), m, clip, spec, self.count_stddev,
                                      noise_generator)
                mean, new_clip = step.mean_delta, step.next_clip
                if step.unclipped_fraction is not None:
                    row["dp_unclipped_fraction"] = step.unclipped_fraction
            st = {"clip": float(new_clip), "rounds": st["rounds"] + 1}
            row.update({"dp_epsilon": self.epsilon(st["rounds"]), "dp_clip": clip,
                        "dp_noise_std": spec.noise_multiplier * clip / m})
        params = None
        if mean is not None:
            target = target_from_mean_delta(global_params, unflatten(mean, global_params), manifolds)
            params = strategy.step_to_target(rnd, global_params, target, manifolds)
        return PrivateRound(params, st, survivors, rejected, row)

    def _secure_round(self, rnd: int, updates: list[ClientUpdate], deltas: torch.Tensor | None,
                      cohort: Sequence[int], clip: float, seeds: Mapping[int, int]
                      ) -> tuple[torch.Tensor | None, list[ClientUpdate], list[dict[str, Any]], float, dict[str, Any]]:
        """Client side (clip, encode, self-check) + :func:`secure_sum` + decoding. Returns ``(sum or weighted
        mean of deltas | None, survivors, withdrawn, unclipped count, row entries)``."""
        spec = self.spec
        assert self.threshold is not None
        m = len(cohort)
        s, k = spec.secagg_scale_bits, spec.secagg_bits
        inputs: dict[int, torch.Tensor | None] = {c: None for c in cohort}
        survivors: list[ClientUpdate] = []
        rejected: list[dict[str, Any]] = []
        for i, u in enumerate(updates):
            assert deltas is not None
            delta = deltas[i:i + 1]
            if spec.dp:
                clipped, norm = clip_deltas(delta, clip)
                payload, extra = clipped[0], int(norm[0] <= clip)
            else:
                payload, extra = delta[0] * u.num_samples, int(u.num_samples)
            try:
                vec = encode_fixed_point(payload, s, k, summands=m)
                tail = encode_fixed_point(torch.tensor([float(extra)]), 0, k, summands=m)
            except ValueError as e:  # the client withdraws: treated as a dropout
                rejected.append({"client": u.client_id, "round": rnd, "reason": f"secure aggregation: {e}"})
                continue
            inputs[u.client_id] = torch.cat([vec, tail])
            survivors.append(u)
        dim = (deltas.shape[1] if deltas is not None else 0) + 1
        row: dict[str, Any] = {"secagg_threshold": self.threshold}
        try:
            if deltas is None:
                raise SecAggError("no client sent a masked input")
            res = secure_sum(inputs, seeds, SecAggParams(self.threshold, dim, k))
        except SecAggError as e:
            # the survivors did send their masked vectors before the round was found unrecoverable (the key and
            # share traffic of the aborted round is not counted)
            row.update({"secagg_survivors": len(survivors), "secagg_aborted": str(e),
                        "bytes_up": sum(v is not None for v in inputs.values()) * ((dim * k + 7) // 8),
                        "bytes_down_extra": 0})
            return None, [], rejected, 0.0, row
        row.update({"secagg_survivors": len(res.survivors), "bytes_up": res.bytes_up,
                    "bytes_down_extra": res.bytes_down})
        total = decode_fixed_point(res.total[:-1], s, k)
        count = float(decode_fixed_point(res.total[-1:], 0, k)[0])
        if spec.dp:
            return total, survivors, rejected, count, row
        return total / count, survivors, rejected, count, row

    # -- reporting ---------------------------------------------------------------------------------------
    def summary(self, state: Mapping[str, Any] | None) -> dict[str, Any]:
        """Privacy settings and the spent budget, for ``summary.json`` and the report."""
        spec, st = self.spec, self._state(state)
        out: dict[str, Any] = {"dp": spec.dp, "secure_aggregation": spec.secure_aggregation}
        if spec.dp:
            eps = self.epsilon(st["rounds"])
            out.update({
                "epsilon": eps, "delta": spec.delta, "rounds_composed": st["rounds"],
                "accountant": spec.accountant, "sampling_rate": self.sampling_rate, "cohort": self.cohort_size,
                "population": self.num_clients, "noise_multiplier": spec.noise_multiplier,
                "effective_noise_multiplier": self.effective_noise, "clip": spec.clip,
                "adaptive_clip": spec.adaptive_clip, "final_clip": st["clip"],
                "weighting": "uniform, fixed denominator m",
                "guarantee": ("none (no noise)" if eps is None or not math.isfinite(eps) else
                              f"client-level ({eps:.3g}, {spec.delta:g})-DP"),
            })
            if spec.adaptive_clip:
                out.update({"target_quantile": spec.target_quantile, "clip_lr": spec.clip_lr,
                            "clip_count_stddev": self.count_stddev})
        if spec.secure_aggregation:
            out.update({"secagg_threshold": self.threshold, "secagg_threshold_fraction": spec.secagg_threshold,
                        "secagg_scale_bits": spec.secagg_scale_bits, "secagg_bits": spec.secagg_bits})
        return out
