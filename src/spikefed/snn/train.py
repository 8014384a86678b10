"""Local training of spiking networks: BPTT, truncated BPTT, clipping, Adam/SGD, activity regularisation.

One function does one thing and state is explicit: :func:`train_epoch` runs one pass over ``(x, y)`` with an
optimizer the caller owns; :func:`evaluate` measures loss, accuracy and spiking activity; :func:`fit` strings
epochs together (used by ``spikefed train`` and, per client, by the federated engine).

Objective for a batch (``o``: model output ``[T, B, C]``, ``s_l``: spikes of hidden layer ``l``)::

    L = loss(o, y) + l1 * mean|s| + l2 * mean_{b,n} (count/T)^2 + bounds * sum_l penalty(rate_l; lower, upper)
        + ib_weight * L_IB(s; ib_rate)                          (information bottleneck, snn.bottleneck)
        + distill * tau^2 * KL(teacher || student)              (ANN-to-SNN distillation, snn.distill)
        + m1 * mean|v| + m2 * mean v^2        (v: the output layer's membrane potential [T, B, C])

With ``adversarial`` (fgsm / pgd) each batch is trained together with its adversarial copies (snn.adversarial).
``loss = mse_membrane`` is seed 002's per-step membrane rate loss ``1/2 sum_t (v_t - y)^2`` (summed over the
classes, averaged over the batch; ``y`` = ``correct_rate`` for the label's neuron, ``incorrect_rate`` for the
others), on the output membrane (``model.readout = membrane``); it predicts the class of highest time-mean
potential.

Gradient (``method``): ``bptt`` back-propagates through time with autograd; ``eprop`` computes the e-prop
gradient online in one forward pass (:mod:`spikefed.snn.online`; memory independent of T; needs the leaky
read-out and the time-decomposable ``ce_membrane`` loss with ``membrane_reduction`` time_mean or last).
The local rules train layer by layer (:mod:`spikefed.snn.local`): ``stdp`` (hidden layers by STDP, a supervised
read-out; :mod:`spikefed.snn.stdp`), ``decolle`` (per-layer local losses; :mod:`spikefed.snn.decolle`), ``fa``,
``dfa``, ``drtp`` (random feedback; :mod:`spikefed.snn.feedback`).

Truncated BPTT with window ``K`` (``tbptt``): the sequence is cut into windows of K steps, the state is carried
forward but detached at window boundaries, so no gradient flows across a boundary and activation memory is that
of K steps. The gradient is exact for that truncation: a first pass without autograd gives the outputs of every
window, dL/d(outputs) is taken on the whole sequence, then each window is re-run with autograd from its stored
(detached) start state and back-propagated with its slice of dL/d(outputs). With ``K >= T`` it is plain BPTT.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..data.compact import as_float_batch
from ..data.digits import iterate_batches
from ..manifold import project_parameters_
from . import decoding, losses
from .decolle import decolle_backward
from .bottleneck import ib_penalty
from .encoding import ENCODERS, SEQUENCE_ENCODERS, encode
from .feedback import BACKWARDS as FEEDBACK_BACKWARDS
from .local import RULE_METHODS, check_rule_support
from .models import ModelOutput, SpikingMLP, as_model_output
from .online import EPROP_REDUCTIONS, FEEDBACKS, eprop_backward
from .stdp import STDPParams, stdp_backward

METHODS = ("bptt", "eprop", *RULE_METHODS)
LOSSES = ("mse_count", "ce_count", "ce_membrane", "ce_temporal", "mse_membrane")
OPTIMIZERS = ("adam", "sgd")
STATIC_ENCODERS = tuple(e for e in ENCODERS if e not in SEQUENCE_ENCODERS)
#: Encoders the trainer accepts: the static ones, and "events" for pre-binned event data ``x [N, T, F]``.
TRAIN_ENCODERS = (*STATIC_ENCODERS, "events")


@dataclass
class TrainConfig:
    """Local training settings (validated on construction)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float | None = None
    tbptt: int | None = None
    num_steps: int = 25
    encoder: str = "direct"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    loss: str = "mse_count"
    correct_rate: float = 0.8
    incorrect_rate: float = 0.2
    membrane_reduction: str = "max"
    count_ties: str = "lowest"
    temporal_scale: float = 1.0
    population: int = 1
    reg_l1: float = 0.0
    reg_l2: float = 0.0
    reg_bounds: float = 0.0
    rate_lower: float = 0.0
    rate_upper: float = 1.0
    reg_membrane_l1: float = 0.0  # weight of mean |v| on the output layer's membrane potential
    reg_membrane_l2: float = 0.0  # weight of mean v^2 on the output layer's membrane potential
    cosine_schedule: bool = True
    local_steps: int | None = None  # federated clients: cap on optimizer steps per round (None: whole epochs)
    method: str = "bptt"  # gradient: BPTT (autograd over time) or e-prop (online, spikefed.snn.online)
    eprop_feedback: str = "symmetric"  # e-prop learning-signal routing: read-out weights or a fixed random matrix
    eprop_feedback_seed: int = 0  # seeds the random feedback matrix (eprop_feedback: random)
    # -- local rules (method stdp, decolle, fa, dfa, drtp; spikefed.snn.stdp / decolle / feedback) --
    rule_seed: int = 0  # seeds the fixed random matrices of fa, dfa, drtp and decolle
    decolle_alpha: float = 0.9  # decay of the low-pass traces DECOLLE's local read-outs see
    stdp_variant: str = "additive"  # additive (hard bounds) or multiplicative (soft bounds)
    stdp_a_plus: float = 1e-4
    stdp_a_minus: float = 1.05e-4
    stdp_tau_plus: float = 5.0  # steps
    stdp_tau_minus: float = 5.0  # steps
    stdp_w_min: float = -1.0
    stdp_w_max: float = 1.0
    stdp_reward: bool = False  # reward-modulated (three-factor) STDP
    stdp_tau_eligibility: float = 25.0  # steps
    stdp_normalize: bool = True  # synaptic scaling: each neuron keeps the L2 norm of its incoming weights
    # -- robustness (issue 17): information bottleneck (snn.bottleneck), adversarial training (snn.adversarial)
    ib_weight: float = 0.0  # weight of the variational IB penalty on hidden spikes
    ib_rate: float = 0.1  # its prior firing rate r
    adversarial: str = "none"  # none | fgsm | pgd: train on clean + adversarial copies of each batch
    adv_eps: float = 0.1  # attack radius (L-infinity, input units)
    adv_steps: int = 5  # pgd: projected sign-gradient steps
    distill: float = 0.0  # weight of the ANN teacher's soft targets (snn.distill); 0: no distillation
    distill_temperature: float = 2.0  # softmax temperature of the soft targets
    distill_epochs: int = 20  # epochs of the ANN teacher
    distill_hidden: int = 128  # hidden width of the ANN teacher
    kernel: str = "loop"  # LIF / low-pass kernels of the cohort engine: loop | compiled | numba | auto (snn.compiled)
    # cohort engine with train_cohort(bucket=0) only (the earlier padding rule): pad each step's batch to at
    # least this many samples (0: the cohort's widest batch). FederationSpec sets it to the federation's widest
    # batch. The default rule (bucket=8, spikefed.federated.cohort_widths) computes each batch at its own
    # length rounded up to a multiple of 8, a width that does not depend on the cohort either.
    batch_width: int = 0

    def __post_init__(self) -> None:
        def positive_int(name: str, v: Any) -> None:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")

        for name in ("epochs", "batch_size", "num_steps", "population"):
            positive_int(name, getattr(self, name))
        for name in ("tbptt", "local_steps"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        if isinstance(self.batch_width, bool) or not isinstance(self.batch_width, int) or self.batch_width < 0:
            raise ValueError(f"batch_width must be an integer >= 0, got {self.batch_width!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if self.count_ties not in decoding.COUNT_TIES:
            raise ValueError(f"unknown count_ties {self.count_ties!r}; valid: {', '.join(decoding.COUNT_TIES)}")
        if self.encoder not in TRAIN_ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; valid: {', '.join(TRAIN_ENCODERS)}"
                             " (delta modulation needs sequence data; events needs pre-binned event data)")
        if self.encoder == "events" and self.encoder_kwargs:
            raise ValueError(f"encoder 'events' takes no encoder_kwargs, got {sorted(self.encoder_kwargs)}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        for name in ("weight_decay", "reg_l1", "reg_l2", "reg_bounds", "reg_membrane_l1", "reg_membrane_l2"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.rate_lower <= self.rate_upper:
            raise ValueError(f"need 0 <= rate_lower <= rate_upper, got {self.rate_lower}, {self.rate_upper}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.eprop_feedback not in FEEDBACKS:
            raise ValueError(f"unknown eprop_feedback {self.eprop_feedback!r}; valid: {', '.join(FEEDBACKS)}")
        membrane_regs = [n for n in ("reg_membrane_l1", "reg_membrane_l2") if getattr(self, n)]
        if membrane_regs and self.tbptt is not None:
            raise ValueError(f"{', '.join(membrane_regs)} with tbptt: truncated BPTT's two-pass gradient carries "
                             "the output and hidden spikes across windows, not the membrane; unset tbptt or "
                             "set them to 0")
        if self.method == "eprop":
            self._check_eprop()
        if self.method in RULE_METHODS:
            self._check_rule()
        self._check_robust()
        if self.kernel not in ("loop", "compiled", "numba", "auto"):
            raise ValueError(f"unknown kernel {self.kernel!r}; valid: loop, compiled, numba, auto")

    def _check_robust(self) -> None:
        if not (math.isfinite(self.ib_weight) and self.ib_weight >= 0):
            raise ValueError(f"ib_weight must be >= 0, got {self.ib_weight!r}")
        if not 0 < self.ib_rate < 1:
            raise ValueError(f"ib_rate (IB prior firing rate) must lie in (0, 1), got {self.ib_rate!r}")
        if self.adversarial not in ("none", "fgsm", "pgd"):
            raise ValueError(f"unknown adversarial {self.adversarial!r}; valid: none, fgsm, pgd")
        if not (math.isfinite(self.adv_eps) and self.adv_eps > 0):
            raise ValueError(f"adv_eps must be > 0, got {self.adv_eps!r}")
        if isinstance(self.adv_steps, bool) or not isinstance(self.adv_steps, int) or self.adv_steps < 1:
            raise ValueError(f"adv_steps must be an integer >= 1, got {self.adv_steps!r}")
        if not (math.isfinite(self.distill) and self.distill >= 0):
            raise ValueError(f"distill must be >= 0, got {self.distill!r}")
        if not self.distill_temperature > 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.distill_temperature!r}")
        for name in ("distill_epochs", "distill_hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.distill and self.loss not in ("ce_count", "ce_membrane"):
            raise ValueError(f"distill needs a loss on class scores (ce_count or ce_membrane), got loss={self.loss}")
        if self.distill and self.encoder == "events":
            raise ValueError("distill needs static inputs for the ANN teacher; encoder=events feeds event frames")
        if self.distill and self.method != "bptt":
            raise ValueError(f"distill trains with BPTT; method={self.method} has its own gradient")
        if self.adversarial != "none" and self.encoder != "direct":
            raise ValueError(f"adversarial={self.adversarial} needs encoder=direct (the attack differentiates the "
                             f"encoder; {self.encoder} spikes have no input gradient)")

    def _check_eprop(self) -> None:
        """e-prop needs an instantaneous loss (one that decomposes over time) and no BPTT-only options."""
        if self.loss != "ce_membrane" or self.membrane_reduction not in EPROP_REDUCTIONS:
            raise ValueError(f"method=eprop needs a loss that decomposes over time: loss=ce_membrane with "
                             f"membrane_reduction {' or '.join(EPROP_REDUCTIONS)} (got loss={self.loss}, "
                             f"membrane_reduction={self.membrane_reduction})")
        if self.tbptt is not None:
            raise ValueError("method=eprop is online (no backward pass over time); unset tbptt")
        active = [n for n in ("reg_l1", "reg_l2", "reg_bounds", "reg_membrane_l1", "reg_membrane_l2", "ib_weight")
                  if getattr(self, n)]
        if active:
            raise ValueError(f"method=eprop does not support activity regularisers; set {', '.join(active)} to 0")
        if self.population != 1:
            raise ValueError(f"method=eprop does not support population coding; set population=1 "
                             f"(got {self.population})")

    def _check_rule(self) -> None:
        """The layer-local rules: no backward pass over the network, so no truncation and no activity
        regularisers (they couple the layers); their own parameters must be valid."""
        if self.tbptt is not None:
            raise ValueError(f"method={self.method} trains layer by layer; unset tbptt")
        active = [n for n in ("reg_l1", "reg_l2", "reg_bounds") if getattr(self, n)]
        if active:
            raise ValueError(f"method={self.method} does not support activity regularisers; set "
                             f"{', '.join(active)} to 0")
        if not 0 <= self.decolle_alpha < 1:
            raise ValueError(f"decolle_alpha must be in [0, 1), got {self.decolle_alpha!r}")
        if self.method == "stdp":
            self.stdp_params()

    def stdp_params(self) -> STDPParams:
        """The STDP settings as :class:`~spikefed.snn.stdp.STDPParams` (validated)."""
        return STDPParams(self.stdp_a_plus, self.stdp_a_minus, self.stdp_tau_plus, self.stdp_tau_minus,
                          self.stdp_variant, self.stdp_w_min, self.stdp_w_max, self.stdp_reward,
                          self.stdp_tau_eligibility, self.stdp_normalize)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalResult:
    """Evaluation of a model on a labelled set."""

    loss: float
    accuracy: float
    spikes_per_sample: float
    spikes_per_neuron: list[float]
    firing_rate: list[float]
    samples: int
    #: ``confusion[i][j]``: test samples of class ``i`` predicted as ``j`` (classes ``0..max(label, prediction)``)
    confusion: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD (with momentum) with the configured learning rate and weight decay."""
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def input_dtype(model: nn.Module) -> torch.dtype:
    """The float dtype the model computes in (its first floating parameter; the default dtype if it has none):
    batches gathered from a compact frame store are made this dtype (:func:`~spikefed.data.compact.as_float_batch`)."""
    return next((p.dtype for p in model.parameters() if p.dtype.is_floating_point), torch.get_default_dtype())


def encode_inputs(x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Static inputs ``[B, *features]`` -> time-major ``[T, B, *features]`` with the configured encoder.

    Direct (constant-current) coding returns a broadcast view (time stride 0): the models compute a layer
    whose input is constant over time once and broadcast the result, T times less work than per step.
    Encoder ``"events"`` takes pre-binned event frames ``[B, T, *features]`` and returns the transposed view
    (``ValueError`` unless ``T == cfg.num_steps``).
    """
    if cfg.encoder == "direct" and not cfg.encoder_kwargs:
        return x.unsqueeze(0).expand(cfg.num_steps, *x.shape)
    return encode(cfg.encoder, x, cfg.num_steps, generator=generator, **cfg.encoder_kwargs)


def group_population(output: torch.Tensor, population: int) -> torch.Tensor:
    """Population coding: ``[T, B, C * n]`` -> mean activity of each class's n neurons ``[T, B, C]``."""
    if population == 1:
        return output
    steps, batch, width = output.shape
    if width % population:
        raise ValueError(f"output width {width} is not a multiple of population={population}")
    return output.reshape(steps, batch, width // population, population).mean(-1)


def task_loss(output: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The configured loss on the (population-grouped) output sequence."""
    out = group_population(output, cfg.population)
    if cfg.loss == "mse_count":
        return losses.mse_count_loss(out, y, cfg.correct_rate, cfg.incorrect_rate)
    if cfg.loss == "ce_count":
        return losses.ce_count_loss(out, y)
    if cfg.loss == "ce_membrane":
        return losses.ce_membrane_loss(out, y, cfg.membrane_reduction)
    if cfg.loss == "mse_membrane":
        return losses.membrane_rate_loss(out, y, cfg.correct_rate, cfg.incorrect_rate)
    return losses.ce_temporal_loss(out, y, cfg.temporal_scale)


def predict(output: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Class predictions matching the loss: counts, membrane or first spike."""
    out = group_population(output, cfg.population)
    if cfg.loss == "ce_membrane":
        return decoding.predict_membrane(out, "last" if cfg.membrane_reduction == "last" else "max")
    if cfg.loss == "ce_temporal":
        return decoding.predict_first_spike(out)
    if cfg.loss == "mse_membrane":  # the class whose potential sits highest on average (ties: lowest index)
        return decoding.predict_count(out)
    return decoding.predict_count(out, cfg.count_ties)


def objective(output: torch.Tensor, hidden: list[torch.Tensor], y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Task loss plus the activity regularisers on the hidden spikes."""
    loss = task_loss(output, y, cfg)
    spiking = hidden if hidden else []
    if spiking and cfg.reg_l1:
        loss = loss + cfg.reg_l1 * losses.l1_activity(spiking)
    if spiking and cfg.reg_l2:
        loss = loss + cfg.reg_l2 * losses.l2_activity(spiking)
    if spiking and cfg.reg_bounds:
        loss = loss + cfg.reg_bounds * sum(
            losses.firing_rate_bounds(s, cfg.rate_lower, cfg.rate_upper) for s in spiking)
    if spiking and cfg.ib_weight:
        loss = loss + cfg.ib_weight * ib_penalty(spiking, cfg.ib_rate)
    return loss


def robust_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The static batch to train on: ``(x, y)``, or with ``cfg.adversarial`` the clean samples and their
    adversarial copies (:func:`spikefed.snn.adversarial.adversarial_batch`)."""
    if cfg.adversarial == "none":
        return x, y
    from .adversarial import adversarial_batch  # builds on this module

    return adversarial_batch(model, x, y, cfg, generator)


def make_teacher(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                 generator: torch.Generator) -> nn.Module | None:
    """The trained ANN teacher when ``cfg.distill`` (:func:`spikefed.snn.distill.train_teacher`), else None."""
    if not cfg.distill:
        return None
    from .distill import train_teacher  # builds on this module

    return train_teacher(model, as_float_batch(x, input_dtype(model)), y, cfg, generator)


def distill_batch(teacher: nn.Module | None, x_static: torch.Tensor, cfg: TrainConfig
                  ) -> Callable[[torch.Tensor, list[torch.Tensor], torch.Tensor], torch.Tensor] | None:
    """The batch's distillation ``loss_fn`` for :func:`backward_batch` (None without a teacher)."""
    if teacher is None:
        return None
    from .distill import distill_loss_fn

    return distill_loss_fn(teacher, x_static, cfg)


def membrane_penalty(membrane: torch.Tensor, cfg: TrainConfig) -> torch.Tensor | None:
    """``m1 * mean|v| + m2 * mean v^2`` on the output membrane ``[T, B, C]`` (``None`` when both weights are 0)."""
    if not (cfg.reg_membrane_l1 or cfg.reg_membrane_l2):
        return None
    out = torch.zeros((), dtype=membrane.dtype)
    if cfg.reg_membrane_l1:
        out = out + cfg.reg_membrane_l1 * losses.membrane_l1(membrane)
    if cfg.reg_membrane_l2:
        out = out + cfg.reg_membrane_l2 * losses.membrane_l2(membrane)
    return out


def _detach_state(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_detach_state(s) for s in state))
    if isinstance(state, (list, tuple)):
        return type(state)(_detach_state(s) for s in state)
    return state


def backward_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                   extra_loss: Callable[[], torch.Tensor] | None = None,
                   loss_fn: Callable[[torch.Tensor, list[torch.Tensor], torch.Tensor], torch.Tensor] | None = None,
                   ) -> tuple[float, ModelOutput]:
    """Forward + backward of one batch (BPTT, or truncated BPTT when ``cfg.tbptt < T``). Returns the loss.

    ``extra_loss`` adds a parameter-only term (e.g. a FedProx proximal term) to the objective. ``loss_fn(output,
    hidden, y)`` replaces the classification :func:`objective` (e.g. a regression loss on the whole output sequence).
    """
    own_objective = loss_fn is None
    if loss_fn is None:
        def loss_fn(output: torch.Tensor, hidden: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
            return objective(output, hidden, target, cfg)
    steps = x.shape[0]
    if cfg.method == "eprop":
        return _eprop_batch(model, x, y, cfg, extra_loss)
    if cfg.method in RULE_METHODS:
        return _rule_batch(model, x, y, cfg, extra_loss, loss_fn)
    if cfg.tbptt is None or cfg.tbptt >= steps:
        out = as_model_output(model(x), model)
        loss = loss_fn(out.output, out.hidden, y)
        penalty = membrane_penalty(out.membrane, cfg) if own_objective else None
        if penalty is not None:
            loss = loss + penalty
        if extra_loss is not None:
            loss = loss + extra_loss()
        loss.backward()
        return float(loss.detach()), out
    # truncated BPTT: pass 1 without autograd records window start states and outputs
    k = cfg.tbptt
    starts, outputs, hiddens = [], [], []
    state = None
    with torch.no_grad():
        for t0 in range(0, steps, k):
            starts.append(state)
            o = _window(model, x[t0:t0 + k], state)
            state = o.state
            outputs.append(o.output)
            hiddens.append(o.hidden)
    full_out = torch.cat(outputs).requires_grad_(True)
    full_hidden = [torch.cat([h[i] for h in hiddens]).requires_grad_(True) for i in range(len(hiddens[0]))]
    loss = loss_fn(full_out, full_hidden, y)
    grads = torch.autograd.grad(loss, [full_out, *full_hidden], allow_unused=True)
    # pass 2: re-run each window from its detached start state and back-propagate its slice
    for w, t0 in enumerate(range(0, steps, k)):
        o = _window(model, x[t0:t0 + k], _detach_state(starts[w]))
        tensors, slices = [o.output], [grads[0][t0:t0 + k]]
        for i, h in enumerate(o.hidden):
            if grads[1 + i] is not None:
                tensors.append(h)
                slices.append(grads[1 + i][t0:t0 + k])
        torch.autograd.backward(tensors, slices)
    if extra_loss is not None:
        extra = extra_loss()
        extra.backward()
        loss = loss + extra.detach()
    return float(loss.detach()), ModelOutput(full_out.detach(), full_out.detach(), [h.detach() for h in full_hidden],
                                             [])


def _window(model: nn.Module, x: torch.Tensor, state: Any) -> ModelOutput:
    """One truncated-BPTT window: ``model(x, state)`` must continue from ``state`` and return a ``ModelOutput``
    with its final ``state`` (spikefed's models do; a model returning plain tensors cannot be truncated)."""
    why = (f"local.tbptt (truncated BPTT) needs a model called as model(x, state) that returns a "
           f"spikefed.snn.ModelOutput with its final state; {type(model).__name__} ")
    try:
        out = model(x, state)
    except TypeError as e:
        raise TypeError(f"{why}failed when called so ({e}); leave local.tbptt unset for it") from None
    if not isinstance(out, ModelOutput):
        raise TypeError(f"{why}returned a {type(out).__name__}; leave local.tbptt unset for it")
    return out


def _eprop_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                 extra_loss: Callable[[], torch.Tensor] | None) -> tuple[float, ModelOutput]:
    """e-prop gradients of the batch into ``.grad`` (one forward pass, no graph over time); a parameter-only
    ``extra_loss`` is back-propagated on its own (it has no time dimension)."""
    loss, ys = eprop_backward(model, x, y, cfg.membrane_reduction, cfg.eprop_feedback, cfg.eprop_feedback_seed)
    if extra_loss is not None:
        extra = extra_loss()
        extra.backward()
        loss += float(extra.detach())
    assert ys is not None
    return loss, ModelOutput(ys, ys, [], [])


def _rule_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                extra_loss: Callable[[], torch.Tensor] | None,
                loss_fn: Callable[[torch.Tensor, list[torch.Tensor], torch.Tensor], torch.Tensor],
                ) -> tuple[float, ModelOutput]:
    """A local rule's updates of the batch into ``.grad`` (STDP: into the hidden weights); a parameter-only
    ``extra_loss`` is back-propagated on its own."""
    check_rule_support(model, cfg.method)
    assert isinstance(model, SpikingMLP)
    if cfg.method == "stdp":
        loss, out = stdp_backward(model, x, y, loss_fn, cfg.stdp_params(), lambda o: predict(o, cfg))
    elif cfg.method == "decolle":
        loss, out = decolle_backward(model, x, y, loss_fn, cfg.rule_seed, cfg.decolle_alpha)
    else:
        loss, out = FEEDBACK_BACKWARDS[cfg.method](model, x, y, loss_fn, cfg.rule_seed)
    if extra_loss is not None:
        extra = extra_loss()
        extra.backward()
        loss += float(extra.detach())
    return loss, out


def train_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                optimizer: torch.optim.Optimizer, generator: torch.Generator,
                extra_loss: Callable[[], torch.Tensor] | None = None,
                on_batch: Callable[[int, float], None] | None = None,
                teacher: nn.Module | None = None) -> dict[str, float]:
    """One pass over ``(x, y)`` in seeded shuffled mini-batches. Returns mean loss and training accuracy.
    ``teacher``: an ANN whose soft targets the loss adds (``cfg.distill``, :mod:`spikefed.snn.distill`)."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    dtype = input_dtype(model)
    for i, (xb, yb) in enumerate(iterate_batches(x, y, cfg.batch_size, generator=generator)):
        xb, yb = robust_batch(model, as_float_batch(xb, dtype), yb, cfg, generator)
        xs = encode_inputs(xb, cfg, generator)
        optimizer.zero_grad(set_to_none=True)
        loss, out = backward_batch(model, xs, yb, cfg, extra_loss, loss_fn=distill_batch(teacher, xb, cfg))
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at batch {i}; lower the learning rate or enable grad_clip")
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        project_parameters_(model)
        n = yb.shape[0]
        total_loss += loss * n
        correct += int((predict(out.output.detach(), cfg) == yb).sum())
        seen += n
        if on_batch is not None:
            on_batch(i, loss)
    return {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1)}


def fit_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, generator: torch.Generator,
             batch_backward: Callable[[torch.Tensor, torch.Tensor], float],
             on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """``cfg.epochs`` passes over seeded shuffled mini-batches for any objective: per batch zero the gradients,
    ``batch_backward(xb, yb)`` (forward + backward, returns the loss), refuse a non-finite loss, clip to
    ``cfg.grad_clip``, step, project the parameters; cosine schedule if ``cfg.cosine_schedule``. Returns the mean
    loss of every epoch (used by ANN training for conversion and by sequence regression)."""
    optimizer = make_optimizer(model.parameters(), cfg)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs) if cfg.cosine_schedule
                 else None)
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        total, seen = 0.0, 0
        for i, (xb, yb) in enumerate(iterate_batches(x, y, cfg.batch_size, generator=generator)):
            optimizer.zero_grad(set_to_none=True)
            loss = batch_backward(xb, yb)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at epoch {epoch + 1}, batch {i}; lower lr or set "
                                         "grad_clip")
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            project_parameters_(model)
            total += loss * yb.shape[0]
            seen += yb.shape[0]
        if scheduler is not None:
            scheduler.step()
        history.append(total / max(seen, 1))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    return history


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
             generator: torch.Generator | None = None, batch_size: int = 512) -> EvalResult:
    """Loss, accuracy and activity (spikes per sample, per neuron and firing rate per hidden layer)."""
    model.eval()
    total_loss, correct, n_total = 0.0, 0, 0
    layer_spikes: list[float] = []
    layer_neurons: list[int] = []
    pairs: list[torch.Tensor] = []
    steps = cfg.num_steps
    dtype = input_dtype(model)
    for xb, yb in iterate_batches(x, y, batch_size, shuffle=False):
        out = as_model_output(model(encode_inputs(as_float_batch(xb, dtype), cfg, generator)), model)
        total_loss += float(task_loss(out.output, yb, cfg)) * yb.shape[0]
        pred = predict(out.output, cfg)
        correct += int((pred == yb).sum())
        pairs.append(torch.stack([yb.long(), pred.long()]))
        n_total += yb.shape[0]
        if not layer_spikes:
            layer_spikes = [0.0] * len(out.hidden)
            layer_neurons = [h[0, 0].numel() for h in out.hidden]
        for i, h in enumerate(out.hidden):
            layer_spikes[i] += float((h != 0).sum())
    per_neuron = [s / (n_total * max(n, 1)) for s, n in zip(layer_spikes, layer_neurons)]
    return EvalResult(
        loss=total_loss / max(n_total, 1),
        accuracy=correct / max(n_total, 1),
        spikes_per_sample=sum(layer_spikes) / max(n_total, 1),
        spikes_per_neuron=per_neuron,
        firing_rate=[p / steps for p in per_neuron],
        samples=n_total,
        confusion=confusion_matrix(torch.cat(pairs, dim=1)) if pairs else [],
    )


def confusion_matrix(pairs: torch.Tensor) -> list[list[int]]:
    """``[2, N]`` (true label, prediction) pairs -> counts ``m[i][j]`` of label ``i`` predicted as ``j``."""
    k = int(pairs.max()) + 1 if pairs.numel() else 0
    flat = torch.bincount(pairs[0] * k + pairs[1], minlength=k * k) if k else torch.zeros(0, dtype=torch.long)
    return flat.reshape(k, k).tolist()


def fit(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, cfg: TrainConfig,
        generator: torch.Generator, x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Train for ``cfg.epochs`` epochs (cosine learning-rate schedule by default); returns per-epoch metrics."""
    teacher = make_teacher(model, x_train, y_train, cfg, generator)
    optimizer = make_optimizer(model.parameters(), cfg)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs) if cfg.cosine_schedule
                 else None)
    history = []
    for epoch in range(cfg.epochs):
        row: dict[str, float] = {"epoch": epoch + 1}
        row.update({f"train_{k}": v for k, v in train_epoch(model, x_train, y_train, cfg, optimizer,
                                                             generator, teacher=teacher).items()})
        if x_val is not None and y_val is not None:
            ev = evaluate(model, x_val, y_val, cfg, generator)
            row.update({"val_loss": ev.loss, "val_accuracy": ev.accuracy})
        if scheduler is not None:
            scheduler.step()
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row)
    return history
