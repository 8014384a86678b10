"""Continual federated learning: task streams over rounds, stability regularisers, forgetting metrics.

Seed 000 ("难忘的交响：联邦环境下的持续学习"): the clients' data distribution drifts over time, and learning the
new task overwrites the old one (catastrophic forgetting). The remedy is a stability term in the local objective,

    L_k(theta) + (lambda / 2) ||theta - theta_{r-1}||^2                                   (seed 000)

and the seed's claim ("每一轮的遗忘程度，其上界正比于任务分布的漂移量，而反比于稳定性参数 λ"): the forgetting of a
round is bounded above in proportion to the drift
``d(P_r, P_{r-1})`` between consecutive task distributions and inversely in ``lambda``, so forgetting should grow
with the drift and shrink as ``lambda`` grows (``benchmarks/continual.py`` measures it).

**Task streams** (``tasks`` tasks of ``rounds_per_task`` rounds each; round ``r`` belongs to task
``t(r) = clamp(floor((r - 1 - lag_k) / rounds_per_task), 0, tasks - 1)``):

- ``class_incremental``: the classes are split into ``tasks`` contiguous groups (digits 0-4, then 5-9); in task
  ``t`` a client trains on its samples of group ``t`` only (a client without any sits the round out).
- ``domain_drift``: every task holds all classes, with the images of task ``t`` rotated by ``t * rotation``
  degrees and given additive Gaussian noise of std ``t * noise`` (fixed per task and client).
- ``async_drift``: domain drift where client ``k`` lags ``lag_k ~ U{0..max_lag}`` rounds behind the schedule
  (drawn once per run), so clients move to the next domain at different times.

**Drift measure** ``d(P_t, P_{t-1})``: the 2-Wasserstein (Frechet) distance between Gaussian fits of the pooled
training inputs of the two tasks, ``W2^2 = ||mu_t - mu_{t-1}||^2 + tr(S_t + S_{t-1} - 2 (S_{t-1}^1/2 S_t
S_{t-1}^1/2)^1/2)`` (:func:`input_drift`).

**Stability regularisers** (client side, :class:`StabilityPenalty`): for a client on task ``t >= 1``,

    l2:   (lambda / 2) sum_i (theta_i - theta*_t,i)^2
    ewc:  (lambda / 2) sum_i F_t,i (theta_i - theta*_t,i)^2,    F_t = sum_{s < t} Fhat_s

The anchor ``theta*_t`` is the **global model at the end of the previous task** (after round
``t * rounds_per_task``), not the model of the current round: the seed's ``theta_{r-1}`` read round by round is the
model the client receives, which is exactly FedProx's proximal centre (``mu/2 ||w - w_t||^2``, already in
:mod:`spikefed.federated.strategies`); it only limits the change of one round, so after a few rounds of the new task
it holds the model near a point that has already forgotten the old one. With
``rounds_per_task = 1`` the two coincide. ``Fhat_s`` is the diagonal empirical Fisher of ``theta*_{s+1}`` (mean
squared per-sample gradient of the task loss, :func:`fisher_diagonal`), computed by the clients that returned an
update in the boundary round on the data they hold, uploaded (the bytes are counted) and averaged with the
sample-count weights ``p_k`` (FedCurv-style, Shoham et al. 2019); it accumulates over tasks (online EWC with
``gamma = 1``). Gradient descent on the penalty is stable for ``lr * lambda * max F < 2`` (SGD); Adam's step is
bounded by ``lr`` whatever ``lambda`` is.

**Metrics** of the accuracy matrix ``R[i, j]`` (accuracy on task ``j``'s test set after training task ``i``; with
``k <= T`` tasks done only the first ``k`` rows exist and the metrics use the leading ``k x k`` block)::

    ACC        = 1/k sum_{j < k} R[k-1, j]
    BWT        = 1/(k-1) sum_{j < k-1} (R[k-1, j] - R[j, j])                     (Lopez-Paz & Ranzato 2017)
    f_j        = max_{j <= l < k-1} R[l, j] - R[k-1, j],  forgetting = mean_{j < k-1} f_j   (Chaudhry et al. 2018)
    step_i     = R[i-1, i-1] - R[i, i-1]        (forgetting of the previous task in task i, the seed's "per round")

The forgetting max starts at ``l = j``: a task cannot be forgotten before it is learned.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, MutableMapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.heterogeneity import fit_gaussian
from ..seeding import SERVER_STREAM, Purpose, derive_seed, torch_generator
from .types import ParamDict, tensor_sum

STREAMS = ("none", "class_incremental", "domain_drift", "async_drift")
REGULARIZERS = ("none", "l2", "ewc")


@dataclass(frozen=True)
class ContinualSpec:
    """A continual-learning run: the task stream and the clients' stability regulariser."""

    stream: str
    tasks: int
    rounds_per_task: int
    rotation: float = 0.0  # degrees added per task (domain / async drift)
    noise: float = 0.0  # noise std added per task (domain / async drift)
    max_lag: int = 0  # async drift: lags drawn uniformly from {0..max_lag} rounds
    regularizer: str = "none"
    lam: float = 0.0
    fisher_samples: int = 64  # ewc: samples per client for the Fisher estimate

    def __post_init__(self) -> None:
        if self.stream not in STREAMS[1:]:
            raise ValueError(f"continual.stream must be one of {', '.join(STREAMS[1:])}, got {self.stream!r}")
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"continual.regularizer must be one of {', '.join(REGULARIZERS)}, got "
                             f"{self.regularizer!r}")
        for name in ("tasks", "rounds_per_task", "fisher_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"continual.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("rotation", "noise", "lam", "max_lag"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"continual.{name} must be finite and >= 0, got {getattr(self, name)}")

    @property
    def rounds(self) -> int:
        return self.tasks * self.rounds_per_task

    def task_end(self, rnd: int) -> int | None:
        """The task that round ``rnd`` completes on the global schedule (``None`` inside a task)."""
        if rnd % self.rounds_per_task == 0 and 1 <= rnd // self.rounds_per_task <= self.tasks:
            return rnd // self.rounds_per_task - 1
        return None


# -- task schedules ------------------------------------------------------------------------------------------

def task_of_round(rnd: int, rounds_per_task: int, tasks: int, lag: int = 0) -> int:
    """``clamp(floor((rnd - 1 - lag) / rounds_per_task), 0, tasks - 1)``: the task a client lagging ``lag`` rounds
    trains on in round ``rnd`` (1-based rounds; rounds past the schedule stay on the last task)."""
    return min(max((int(rnd) - 1 - int(lag)) // int(rounds_per_task), 0), int(tasks) - 1)


def class_groups(num_classes: int, tasks: int) -> list[np.ndarray]:
    """The classes of each task: ``tasks`` contiguous, near-equal groups (10 classes, 2 tasks: 0-4, 5-9)."""
    if not 1 <= tasks <= num_classes:
        raise ValueError(f"class_incremental needs 1 <= tasks <= num_classes={num_classes}, got tasks={tasks}")
    return [g.astype(np.int64) for g in np.array_split(np.arange(num_classes), tasks)]


def client_lags(num_clients: int, max_lag: int, rng: np.random.Generator) -> np.ndarray:
    """Per-client lags ``U{0..max_lag}`` (async drift), one draw per client."""
    return rng.integers(0, int(max_lag) + 1, size=int(num_clients))


# -- domain drift --------------------------------------------------------------------------------------------

def rotate_images(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rows ``x [N, s*s]`` as square images rotated by ``degrees`` about their centre (bilinear; pixels that come
    from outside the image are 0, the training mean under ``data.scale=standard``).

    The output pixel at centred coordinates ``p`` takes the input at ``R(degrees) p``, so ``degrees = 90`` equals
    ``torch.rot90(image, k=1, dims=(0, 1))`` (tests check it).
    """
    if x.dim() != 2:
        raise ValueError(f"rotation needs flat square images [N, s*s], got shape {list(x.shape)}")
    n, d = x.shape
    s = math.isqrt(d)
    if s * s != d:
        raise ValueError(f"rotation needs square images: {d} features is not s*s")
    if degrees == 0:
        return x.clone()
    a = math.radians(degrees)
    c, si = math.cos(a), math.sin(a)
    mat = torch.tensor([[c, -si, 0.0], [si, c, 0.0]], dtype=x.dtype).expand(n, 2, 3)
    grid = F.affine_grid(mat, [n, 1, s, s], align_corners=False)
    out = F.grid_sample(x.view(n, 1, s, s), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(n, d)


def domain_transform(x: torch.Tensor, task: int, rotation: float, noise: float,
                     generator: torch.Generator | None) -> torch.Tensor:
    """Task ``task``'s view of inputs ``x``: rotated by ``task * rotation`` degrees, plus ``N(0, (task * noise)^2)``.

    Event frames ``[N, T, F]`` (a sequence of binned frames; no image plane to rotate, ``rotation`` must be 0)
    drift as an ageing sensor: every frame cell that holds no event fires a background spike with probability
    ``p = min(1, task * noise)`` (``out = max(x, Bernoulli(p))``).
    """
    if x.dim() == 3:
        if rotation:
            raise ValueError("event frames [N, T, F] cannot be rotated: set rotation=0 (noise drives their drift)")
        p = min(1.0, task * noise)
        if p <= 0:
            return x.clone()
        spikes = (torch.rand(x.shape, generator=generator) < p).to(x.dtype)
        return torch.maximum(x, spikes)
    out = rotate_images(x, task * rotation) if rotation else x.clone()
    if noise and task:
        out = out + (task * noise) * torch.randn(out.shape, generator=generator, dtype=out.dtype)
    return out


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues below 0 from rounding set to 0)."""
    w, v = np.linalg.eigh(0.5 * (s + s.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_w2(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """2-Wasserstein distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``::

        W2^2 = ||mu1 - mu2||^2 + tr(cov1 + cov2 - 2 (cov2^1/2 cov1 cov2^1/2)^1/2)
    """
    m1, m2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    c1, c2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    r2 = _psd_sqrt(c2)
    cross = float(np.sqrt(np.clip(np.linalg.eigvalsh(r2 @ c1 @ r2), 0.0, None)).sum())
    w2 = float(((m1 - m2) ** 2).sum()) + float(np.trace(c1) + np.trace(c2)) - 2.0 * cross
    return math.sqrt(max(w2, 0.0))


def input_drift(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """``d(P_a, P_b)``: 2-Wasserstein (Frechet) distance between Gaussian fits (sample mean, ``ddof = 1``
    covariance) of the rows of ``a`` and ``b``, in the units of the features (:func:`gaussian_w2`).

    Chosen over the Hellinger distance of the partition report because that one saturates at 1 for the drifts
    that matter (digits rotated by 45 degrees are already at H = 0.999 in 8 principal axes); W2 keeps growing.
    """
    xa = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    xb = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if xa.shape[1] != xb.shape[1] or len(xa) < 2 or len(xb) < 2:
        raise ValueError(f"input_drift needs two sets of >= 2 rows of equal width, got {xa.shape} and {xb.shape}")
    mu_a, cov_a = fit_gaussian(xa, diag=False)
    mu_b, cov_b = fit_gaussian(xb, diag=False)
    return gaussian_w2(mu_a, cov_a, mu_b, cov_b)


# -- accuracy-matrix metrics ---------------------------------------------------------------------------------

def _matrix(r: Any) -> np.ndarray:
    m = np.asarray(r, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[0] > m.shape[1] or not np.isfinite(m).all():
        raise ValueError(f"the accuracy matrix must be [k, T] with 1 <= k <= T and finite entries, got shape "
                         f"{list(m.shape)}")
    return m


def average_accuracy(r: Any) -> float:
    """``ACC = 1/k sum_{j < k} R[k-1, j]`` over the ``k`` tasks learned so far."""
    m = _matrix(r)
    k = m.shape[0]
    return float(m[k - 1, :k].mean())


def backward_transfer(r: Any) -> float | None:
    """``BWT = 1/(k-1) sum_{j < k-1} (R[k-1, j] - R[j, j])`` (``None`` after one task)."""
    m = _matrix(r)
    k = m.shape[0]
    if k < 2:
        return None
    return float(np.mean([m[k - 1, j] - m[j, j] for j in range(k - 1)]))


def task_forgetting(r: Any) -> list[float]:
    """``f_j = max_{j <= l < k-1} R[l, j] - R[k-1, j]`` for every ``j < k - 1``."""
    m = _matrix(r)
    k = m.shape[0]
    return [float(m[j:k - 1, j].max() - m[k - 1, j]) for j in range(k - 1)]


def average_forgetting(r: Any) -> float | None:
    """Mean of :func:`task_forgetting` (``None`` after one task)."""
    f = task_forgetting(r)
    return float(np.mean(f)) if f else None


def step_forgetting(r: Any) -> list[float]:
    """``R[i-1, i-1] - R[i, i-1]`` for ``1 <= i < k``: what learning task ``i`` cost task ``i - 1``."""
    m = _matrix(r)
    return [float(m[i - 1, i - 1] - m[i, i - 1]) for i in range(1, m.shape[0])]


def continual_metrics(r: Any) -> dict[str, Any]:
    """ACC, BWT, average and per-task forgetting, per-step forgetting of an accuracy matrix."""
    return {"average_accuracy": average_accuracy(r), "backward_transfer": backward_transfer(r),
            "average_forgetting": average_forgetting(r), "forgetting_per_task": task_forgetting(r),
            "step_forgetting": step_forgetting(r)}


# -- stability regularisers ----------------------------------------------------------------------------------

@dataclass
class StabilityPenalty:
    """``(lam / 2) sum_n sum_i w_n,i (theta_n,i - anchor_n,i)^2`` with ``w = 1`` (``weight=None``: L2) or the
    Fisher diagonal (EWC). Gradient: ``lam * w * (theta - anchor)``."""

    lam: float
    anchor: ParamDict
    weight: ParamDict | None = None

    def coefficient(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """``lam * w`` for parameter ``name`` as ``like``'s dtype."""
        if self.weight is None:
            return torch.full_like(like, self.lam)
        return self.lam * self.weight[name].to(like.dtype)

    def value(self, params: ParamDict) -> torch.Tensor:
        return 0.5 * tensor_sum((self.coefficient(n, p) * (p - self.anchor[n].to(p.dtype)) ** 2).sum()
                                for n, p in params.items())


def stack_penalties(penalties: Sequence[StabilityPenalty | None], reference: ParamDict,
                    names: Sequence[str]) -> tuple[ParamDict, ParamDict] | None:
    """Per-client penalties as stacks ``(anchor [K, ...], lam * w [K, ...])`` for the batched engine (a client
    without a penalty gets coefficient 0); ``None`` when no client has one."""
    if all(p is None for p in penalties):
        return None
    anchors: ParamDict = {}
    coefs: ParamDict = {}
    for n in names:
        ref = reference[n].detach()
        anchors[n] = torch.stack([p.anchor[n].to(ref.dtype) if p is not None else ref for p in penalties])
        coefs[n] = torch.stack([p.coefficient(n, ref) if p is not None else torch.zeros_like(ref)
                                for p in penalties])
    return anchors, coefs


def stacked_penalty(leaves: ParamDict, anchors: ParamDict, coefs: ParamDict, rows: torch.Tensor) -> torch.Tensor:
    """Per-client penalty ``[Ka]`` of stacked parameters ``leaves[n] [Ka, ...]`` (clients ``rows`` of the stacks)."""
    return 0.5 * tensor_sum((coefs[n][rows] * (leaves[n] - anchors[n][rows]) ** 2).flatten(1).sum(1)
                            for n in leaves)


def fisher_diagonal(model: torch.nn.Module, params: ParamDict, x: torch.Tensor, y: torch.Tensor, cfg: Any,
                    generator: torch.Generator | None, max_samples: int | None = None) -> ParamDict:
    """Empirical diagonal Fisher ``F_i = 1/n sum_b (d loss(x_b, y_b) / d theta_i)^2`` of ``params``, one sample at
    a time (any model; the first ``max_samples`` samples), with the training loss of ``cfg`` (``TrainConfig``)."""
    from ..manifold import copy_module
    from ..data.compact import as_float_batch
    from ..snn.train import encode_inputs, input_dtype, task_loss
    from .types import load_params_

    local = copy_module(model)
    load_params_(local, params)
    named = {n: p for n, p in local.named_parameters() if p.requires_grad}
    n = int(y.shape[0]) if max_samples is None else min(int(y.shape[0]), int(max_samples))
    total = {k: torch.zeros_like(p) for k, p in named.items()}
    for b in range(n):
        out = local(encode_inputs(as_float_batch(x[b:b + 1], input_dtype(local)), cfg, generator))
        grads = torch.autograd.grad(task_loss(out.output, y[b:b + 1], cfg), list(named.values()), allow_unused=True)
        for k, g in zip(named, grads):
            if g is not None:
                total[k] += g.detach() ** 2
    return {k: v / max(n, 1) for k, v in total.items()}


# -- the stream of one run -----------------------------------------------------------------------------------

@dataclass
class TaskData:
    """Every task's data: ``clients[t][k]`` (features, labels of client ``k`` in task ``t``) and ``tests[t]``."""

    clients: list[list[Any]]
    tests: list[tuple[torch.Tensor, torch.Tensor]]
    lags: np.ndarray
    drift: list[float] = field(default_factory=list)  # d(P_t, P_{t-1}) for t = 1 .. tasks - 1


def build_tasks(spec: ContinualSpec, clients: Sequence[Any], x_test: torch.Tensor, y_test: torch.Tensor,
                num_classes: int, seed: int, make_client: Any) -> TaskData:
    """The task data of a run from the clients' data (``ClientData``; ``make_client(id, x, y)`` builds one).

    Domain noise draws from ``(seed, CONTINUAL_NOISE, client, index=task)`` (test set: client
    ``SERVER_STREAM``); async lags from ``(seed, CONTINUAL_LAG)`` (:mod:`spikefed.seeding`).
    """

    lags = np.zeros(len(clients), dtype=np.int64)
    if spec.stream == "async_drift":
        lags = client_lags(len(clients), spec.max_lag, np.random.default_rng(
            derive_seed(seed, Purpose.CONTINUAL_LAG)))
    per_task, tests = [], []
    if spec.stream == "class_incremental":
        for group in class_groups(num_classes, spec.tasks):
            g = torch.as_tensor(group)
            per_task.append([make_client(c.client_id, c.x[torch.isin(c.y, g)], c.y[torch.isin(c.y, g)])
                             for c in clients])
            keep = torch.isin(y_test, g)
            tests.append((x_test[keep], y_test[keep]))
    else:
        for t in range(spec.tasks):
            def gen(who: int) -> torch.Generator:
                return torch_generator(seed, Purpose.CONTINUAL_NOISE, client=who, index=t)
            per_task.append([make_client(c.client_id, domain_transform(c.x, t, spec.rotation, spec.noise,
                                                                       gen(c.client_id)), c.y) for c in clients])
            tests.append((domain_transform(x_test, t, spec.rotation, spec.noise, gen(SERVER_STREAM)), y_test))
    pooled = [torch.cat([c.x.reshape(len(c.y), -1) for c in task]) for task in per_task]
    drift = [input_drift(pooled[t - 1], pooled[t]) for t in range(1, spec.tasks)]
    return TaskData(per_task, tests, lags, drift)


class ContinualStream:
    """The continual part of a simulation: which data each client holds in a round, the stability penalties it
    trains with, and the boundary work (anchor snapshot, Fisher, accuracy on every task). State lives in the
    simulation's ``server_state["continual"]`` (``{"anchors": {t: params}, "fisher": {t: params}}``), so it is
    checkpointed with it."""

    def __init__(self, spec: ContinualSpec, data: TaskData) -> None:
        self.spec, self.data = spec, data

    def task(self, rnd: int, client: int | None = None) -> int:
        lag = 0 if client is None else int(self.data.lags[client])
        return task_of_round(rnd, self.spec.rounds_per_task, self.spec.tasks, lag)

    def clients_at(self, rnd: int) -> list[Any]:
        """Every client's data in round ``rnd`` (its own task, lag included)."""
        return [self.data.clients[self.task(rnd, k)][k] for k in range(len(self.data.lags))]

    def without_idle(self, plan: Any, clients: Sequence[Any]) -> tuple[Any, int]:
        """The fault plan minus clients holding no data of their current task (class-incremental); their count."""
        keep = [i for i, c in enumerate(plan.trained) if clients[c].num_samples > 0]
        if len(keep) == len(plan.trained):
            return plan, 0
        budgets = [plan.budgets[i] for i in keep] if plan.budgets is not None else None
        return dataclasses.replace(plan, trained=[plan.trained[i] for i in keep], budgets=budgets), \
            len(plan.trained) - len(keep)

    def penalties(self, rnd: int, trained: Sequence[int],
                  state: dict[str, Any] | None) -> list[StabilityPenalty | None] | None:
        """One penalty per trained client: the anchor (and Fisher) of its task, ``None`` on task 0."""
        spec = self.spec
        if spec.regularizer == "none" or not state:
            return None
        out: list[StabilityPenalty | None] = []
        for c in trained:
            t = self.task(rnd, c)
            anchor = state["anchors"].get(t) if t >= 1 else None
            weight = state["fisher"].get(t) if spec.regularizer == "ewc" and anchor is not None else None
            out.append(StabilityPenalty(spec.lam, anchor, weight) if anchor is not None else None)
        return out if any(p is not None for p in out) else None

    def penalty_downlink(self, rnd: int, trained: Sequence[int], penalties: Sequence[StabilityPenalty | None] | None,
                         client_state: MutableMapping[int, Any]) -> int:
        """Downlink bytes of the stability terms: a client receives its task's anchor (and Fisher) once per task,
        the first round it trains with it (``client_state[k]["continual_task"]`` records what it holds)."""
        from .serialization import encode_params

        if penalties is None:
            return 0
        total = 0
        for c, pen in zip(trained, penalties):
            if pen is None:
                continue
            t = self.task(rnd, c)
            held = client_state.setdefault(c, {})
            if held.get("continual_task") != t:
                total += len(encode_params(pen.anchor)) + (len(encode_params(pen.weight)) if pen.weight else 0)
                held["continual_task"] = t
        return total

    def end_of_round(self, rnd: int, state: dict[str, Any], global_params: ParamDict, accepted: Sequence[Any],
                     clients: Sequence[Any], model: torch.nn.Module, cfg: Any, seed: int,
                     weights: torch.Tensor | None) -> dict[str, Any]:
        """After aggregation: at a task boundary snapshot the anchor of the next task and (EWC) estimate its
        Fisher from the ``accepted`` clients. Returns the metrics-row entry ``fisher_bytes``."""
        from .serialization import encode_params

        spec = self.spec
        done = spec.task_end(rnd)
        if spec.regularizer == "none" or done is None or done + 1 >= spec.tasks:
            return {"fisher_bytes": 0}
        nxt = done + 1
        state.setdefault("anchors", {})[nxt] = {n: p.detach().clone() for n, p in global_params.items()}
        fisher = state.setdefault("fisher", {})
        nbytes = 0
        if spec.regularizer == "ewc":
            prev = fisher.get(done)
            total = {n: prev[n].clone() if prev is not None else torch.zeros_like(p)
                     for n, p in global_params.items()}
            if accepted:
                assert weights is not None
                for u, w in zip(accepted, weights.tolist()):
                    c = clients[u.client_id]
                    gen = torch_generator(seed, Purpose.CONTINUAL_FISHER, rnd, u.client_id)
                    f_k = fisher_diagonal(model, global_params, c.x, c.y, cfg, gen, spec.fisher_samples)
                    nbytes += len(encode_params(f_k))
                    for n in total:
                        total[n] = total[n] + w * f_k[n].to(total[n].dtype)
            fisher[nxt] = total
        return {"fisher_bytes": nbytes}

    @torch.no_grad()
    def task_accuracy(self, rnd: int, model: torch.nn.Module, cfg: Any, seed: int) -> list[float]:
        """Accuracy of ``model`` on every task's test set (row ``R[i, :]`` at the end of task ``i``)."""
        from ..snn.train import evaluate

        out = []
        for t, (x, y) in enumerate(self.data.tests):
            gen = torch_generator(seed, Purpose.CONTINUAL_EVAL, rnd, index=t)
            out.append(evaluate(model, x, y, cfg, gen).accuracy)
        return out


def accuracy_matrix(rows: Sequence[dict[str, Any]]) -> list[list[float]]:
    """``R`` from a run's metrics rows: the ``task_accuracy`` of each row that ends a task (``task_end``)."""
    return [list(r["task_accuracy"]) for r in rows if r.get("task_end") is not None and r.get("task_accuracy")]
