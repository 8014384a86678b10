"""Validated configuration: pydantic schemas, YAML/TOML files, ``--set a.b=value`` overrides, one-line errors.

Every section forbids unknown keys, so a typo is an error naming the key and the valid ones, never silently
ignored. :class:`TrainSettings` configures centralized training (``spikefed train``).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from ..events.datasets import EVENT_DATASETS, RECORDED_DATASETS
from ..federated.compression import COMPRESSORS, CompressionSpec
from ..runtime import DEVICE_CHOICES
from ..snn.kernels import RESET_MODES
from ..snn.surrogate import SURROGATES
from ..snn.train import LOSSES, OPTIMIZERS, TRAIN_ENCODERS, TrainConfig


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key."""


def _one_of(valid: tuple[str, ...] | Callable[[], tuple[str, ...]]) -> Callable[[str], str]:
    """A validator accepting only the names in ``valid`` (a tuple, or a function giving the names at validation
    time, for registries); the error lists them, and so does ``spikefed config show`` (:func:`choices_of`)."""

    def names() -> tuple[str, ...]:
        return valid() if callable(valid) else valid

    def check(v: str) -> str:
        if v not in names():
            raise ValueError(f"valid: {', '.join(names())}")
        return v

    check.choices = names  # type: ignore[attr-defined]
    return check


def choices_of(field: Any) -> tuple[str, ...] | None:
    """The valid values of a config key with a fixed set of choices (a ``Literal`` or a :func:`_one_of`
    validator), ``None`` for any other key; for ``spikefed config show`` and its test."""
    from typing import get_args, get_origin

    ann = field.annotation
    for arg in (ann, *get_args(ann)):
        if get_origin(arg) is Literal:
            return tuple(str(a) for a in get_args(arg))
    for meta in field.metadata:
        names = getattr(getattr(meta, "func", None), "choices", None)
        if names is not None:
            return tuple(names())
    return None


def _device_presets() -> tuple[str, ...]:
    from ..hardware.devices import PRESETS

    return tuple(PRESETS)


def _strategy_names() -> tuple[str, ...]:
    from ..federated.strategies import strategy_names

    return strategy_names()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSettings(_Section):
    """Dataset and split."""

    name: Literal["digits", "event_digits", "event_mnist5k", "nmnist", "dvs_gesture", "shd", "ssc"] = Field(
        "digits", description="digits: static 8x8 images; event_digits, event_mnist5k: synthetic N-MNIST-style "
        "event recordings; nmnist, dvs_gesture, shd, ssc: the official files under data.root, official "
        "train/test split (docs/events.md)")
    test_size: float = Field(0.2, gt=0, lt=1, description="fraction held out for testing (stratified)")
    scale: Literal["standard", "unit"] = Field(
        "standard", description="standard: per-pixel z-score on the train set; unit: pixels in [0, 1] (rate/latency)")
    bins: int = Field(10, ge=1, description="event data: time bins per sample (= local.num_steps)")
    frame_mode: Literal["binary", "count"] = Field(
        "binary", description="event data: a bin holds 1 where a pixel fired (binary) or its event count")
    downsample: int | None = Field(
        None, ge=1, description="event data: spatial pooling factor (null: 1 for event_digits, 2 for event_mnist5k)")
    noise_rate: float = Field(0.0, ge=0, description="event data: background events per pixel per second")
    root: str | None = Field(
        None, description="nmnist, dvs_gesture, shd, ssc: the folder holding the official files (docs/events.md)")
    window_ms: float | None = Field(
        None, gt=0, description="recorded event data: window of a sample in ms, binned into data.bins (null: "
        "320 nmnist, 1500 dvs_gesture, 1000 shd/ssc)")
    crop: list[int] | None = Field(
        None, description="recorded event data: [top, left, height, width] of the sensor kept (1-D channel "
        "arrays: [first, count]), before downsampling")
    limit: int | None = Field(
        None, ge=1, description="recorded event data: at most this many samples per split, evenly spaced over "
        "the files (null: all)")
    cache_dir: str | None = Field(
        None, description="recorded event data: keep the binned frames as a compact uint8 file here, keyed by "
        "the files and every binning key (null: bin on every run)")

    @model_validator(mode="after")
    def _recorded(self) -> "DataSettings":
        if self.name in RECORDED_DATASETS and not self.root:
            raise ValueError(f"data.name={self.name} reads the official files: set data.root=DIR (the folder "
                             "holding them; docs/events.md)")
        if self.crop is not None and (len(self.crop) not in (2, 4) or min(self.crop) < 0):
            raise ValueError(f"data.crop must be [top, left, height, width] (or [first, count] for a 1-D channel "
                             f"array) of non-negative ints, got {self.crop}")
        return self


def _match_event_data(local: "LocalTrainSettings", data: DataSettings | None, section: str) -> "LocalTrainSettings":
    """Event data is fed one time bin per step: encoder ``events`` and ``num_steps = data.bins``, set here
    unless the config sets them (conflicting values are an error naming the key)."""
    if data is None:  # the data section itself failed validation; that error is reported
        return local
    explicit = local.model_fields_set
    if data.name in EVENT_DATASETS:
        if "encoder" in explicit and local.encoder != "events":
            raise ValueError(f"data.name={data.name} is event data, whose binned frames are the spikes: "
                             f"{section}.encoder must be 'events' (or left out), got {local.encoder!r}")
        if "num_steps" in explicit and local.num_steps != data.bins:
            raise ValueError(f"data.bins={data.bins}: event data has {data.bins} time bins per sample, so "
                             f"{section}.num_steps must equal it (or be left out), got {local.num_steps}")
        if local.encoder_kwargs:
            raise ValueError(f"encoder 'events' takes no {section}.encoder_kwargs, got {local.encoder_kwargs}")
        return local.model_copy(update={"encoder": "events", "num_steps": data.bins})
    if local.encoder == "events":
        raise ValueError(f"{section}.encoder=events needs event data (data.name: {', '.join(EVENT_DATASETS)}), "
                         f"got data.name={data.name}")
    return local


#: ``model.neuron_options`` each neuron model accepts (issue 17)
NEURON_OPTIONS: dict[str, tuple[str, ...]] = {
    "izhikevich": ("preset", "a", "b", "c", "d", "dt", "substeps", "input_scale", "v_peak", "v_scale"),
    "srm": ("tau_m", "tau_s", "tau_r", "eta0"),
    "dendritic": ("beta_d", "theta_d", "kappa", "g_d", "dendritic_surrogate", "dendritic_slope"),
}


def _match_model(local: "LocalTrainSettings", model: "ModelSettings | None", section: str) -> "LocalTrainSettings":
    """Loss options that need a model option (ValueError naming both keys)."""
    if model is not None and local.loss == "mse_membrane" and model.readout != "membrane":
        raise ValueError(f"{section}.loss=mse_membrane regresses the output membrane potential v_t towards its "
                         "target at every step: set model.readout=membrane (got spikes)")
    return local


class ModelSettings(_Section):
    """Spiking network architecture and neuron options."""

    kind: Literal["mlp", "conv", "recurrent"] = Field(
        "mlp", description="network type: mlp (fully connected spiking layers), conv (conv -> neuron -> pool "
        "blocks, then a linear read-out; model.channels, kernel, stride, padding, pooling, pool, residual), "
        "recurrent (hidden layers with learned recurrent weights: lif/rlif -> rlif, alif/ralif -> ralif); your own "
        "model: the Python API, docs/api.md")
    hidden: list[int] = Field(default_factory=lambda: [256], description="hidden layer widths (mlp, recurrent)")
    channels: list[int] = Field(default_factory=lambda: [8, 16], description="conv: output channels of each conv "
                                "block")
    kernel: int = Field(3, ge=1, description="conv: square kernel size of every conv block")
    stride: int = Field(1, ge=1, description="conv: stride of every convolution")
    padding: int | None = Field(None, ge=0, description="conv: zero padding of every convolution (null: kernel // "
                                "2, which keeps the size at stride 1)")
    pooling: Literal["max", "avg", "sum"] = Field("max", description="conv: pooling after each block's neurons "
                                                  "(sum: spike counts of the window)")
    pool: int = Field(2, ge=1, description="conv: pooling window and stride (1: no pooling)")
    residual: bool = Field(False, description="spiking residual blocks; conv: input spikes added to the conv "
                           "current wherever a block keeps the shape (same channels, stride 1); mlp: identity "
                           "shortcut of the previous hidden layer's spikes into the input current (hidden layers "
                           "of equal width)")
    delays: int = Field(0, ge=0, description="learnable axonal delays of up to this many steps (a ring buffer; "
                        "averaged on the circle); mlp/recurrent: after every hidden layer, conv: before the "
                        "read-out; 0: none")
    neuron: Literal["lif", "if", "synaptic", "alif", "rlif", "ralif", "izhikevich", "srm", "dendritic"] = Field(
        "lif", description="spiking neuron: lif (leaky integrate-and-fire), if (no leak), synaptic (LIF fed by a "
        "decaying input current), alif (LIF with an adaptive threshold), rlif / ralif (recurrent LIF / ALIF), "
        "izhikevich (regular-spiking preset), srm (spike-response kernel model), dendritic (two-compartment "
        "neuron with a dendritic spike); docs/neurons_coding.md")
    readout: Literal["spikes", "membrane"] = Field(
        "spikes", description="output layer: spikes (spiking neurons, classes by spike count) or membrane (a "
        "non-spiking leaky integrator, classes by potential; for the membrane losses)")
    beta: float = Field(0.9, gt=0, lt=1, description="membrane decay per time step, exp(-dt/tau)")
    threshold: float = Field(1.0, gt=0, description="membrane potential at which a neuron spikes")
    reset: Annotated[str, AfterValidator(_one_of(RESET_MODES))] = Field(
        "subtract", description="after a spike: subtract the threshold, set the potential to zero, or none")
    detach_reset: bool = Field(True, description="leave the reset out of the gradient (the usual, more stable "
                                                 "choice)")
    surrogate: Annotated[str, AfterValidator(_one_of(SURROGATES))] = Field(
        "atan", description="smooth stand-in for the spike's derivative used in training")
    slope: float | None = Field(None, gt=0, description="surrogate slope (null: the surrogate's default)")
    learn_beta: bool = Field(False, description="train each neuron's decay")
    learn_threshold: bool = Field(False, description="train each neuron's threshold")
    learn_reset: bool = Field(False, description="train each neuron's reset offset v_r (reset zero: to v_r; "
                              "subtract: by thr - v_r)")
    graded: bool = Field(False, description="graded spikes: each neuron emits a trained amplitude g instead of 1")
    refractory: int = Field(0, ge=0, description="steps after a spike during which a neuron ignores input and "
                            "cannot spike (lif, if)")
    # -- issue 17 (part B): neuron options, initialisation, normalisation, dropout, residual blocks
    neuron_options: dict[str, float | int | str] = Field(
        default_factory=dict, description="options of the izhikevich / srm / dendritic neurons, e.g. {preset: fs} "
        "or {tau_m: 10, tau_s: 2.5} or {theta_d: 1.0, kappa: 0.5} (docs/neurons_coding.md)")
    init: Literal["default", "variance_preserving"] = Field(
        "default", description="weights: default (uniform, +-sqrt(3/fan_in)) or variance_preserving (membrane "
        "variance equal to threshold^2 in every layer for Bernoulli inputs at init_rate; docs/neurons_coding.md)")
    init_rate: float = Field(0.2, gt=0, le=1, description="init=variance_preserving: assumed input spike rate")
    norm: Literal["none", "tdbn"] = Field(
        "none", description="normalise each hidden layer's input current over batch and time (tdbn, scaled by "
        "threshold) or not")
    dropout: float = Field(0.0, ge=0, lt=1, description="drop probability of hidden neurons, one mask per sequence")

    @field_validator("neuron_options")
    @classmethod
    def _neuron_options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        neuron = info.data.get("neuron")
        if v and neuron not in ("izhikevich", "srm", "dendritic"):
            raise ValueError(f"neuron_options apply to the izhikevich, srm and dendritic neurons, not {neuron!r}")
        valid = NEURON_OPTIONS.get(str(neuron), ())
        unknown = sorted(set(v) - set(valid))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for neuron {neuron}; valid: {', '.join(valid)}")
        return v

    @model_validator(mode="after")
    def _init_needs_leak(self) -> "ModelSettings":
        if self.kind != "mlp" and (self.norm != "none" or self.dropout):
            key = "model.norm" if self.norm != "none" else "model.dropout"
            raise ValueError(f"{key} applies to model.kind=mlp (its hidden layers), not kind={self.kind}")
        if self.kind == "recurrent" and self.residual:
            raise ValueError("model.residual applies to model.kind=mlp or conv, not recurrent (its hidden layers "
                             "already feed their own spikes back)")
        if self.kind == "conv" and self.init != "default":
            raise ValueError("model.init=variance_preserving is derived for fully connected layers (mlp, "
                             "recurrent), not conv kernels")
        if self.init == "variance_preserving" and self.neuron == "if":
            raise ValueError("init=variance_preserving needs a leaky membrane (beta < 1): the derivation's "
                             "stationary variance is infinite for neuron=if")
        return self

    def blocks(self) -> dict[str, Any]:
        """Options of :class:`~spikefed.snn.residual.ResidualSpikingMLP` (``{}`` when a plain MLP does)."""
        if self.kind != "mlp" or (self.norm == "none" and self.dropout == 0 and not self.residual):
            return {}
        return dict(norm=self.norm, dropout=self.dropout, residual=self.residual)


    @field_validator("hidden", "channels")
    @classmethod
    def _hidden(cls, v: list[int]) -> list[int]:
        if any(h < 1 for h in v):
            raise ValueError("widths must be >= 1")
        return v

    @model_validator(mode="after")
    def _kind_keys(self) -> "ModelSettings":
        # a key of another kind set to something other than its default would be ignored: an error (at its
        # default it is accepted, so a resolved config.yaml, which lists every key, loads again)
        defaults = ModelSettings.model_construct()
        changed = [k for k in self.model_fields_set if getattr(self, k) != getattr(defaults, k)]
        conv_keys = ("channels", "kernel", "stride", "padding", "pooling", "pool")
        if self.kind != "conv":
            stray = [k for k in conv_keys if k in changed]
            if stray:
                raise ValueError(f"model.{stray[0]} applies to model.kind=conv only (got kind={self.kind})")
        elif not self.channels:
            raise ValueError("model.channels: model.kind=conv needs at least one conv block")
        elif "hidden" in changed:
            raise ValueError("model.hidden applies to mlp and recurrent; conv nets take model.channels")
        if self.kind == "conv" and self.neuron in ("rlif", "ralif"):
            raise ValueError(f"model.neuron={self.neuron}: a conv net's neurons are feed-forward (lif, if, "
                             "synaptic, alif); use model.kind=recurrent for recurrent layers")
        if self.kind == "recurrent":
            if self.neuron not in ("lif", "alif", "rlif", "ralif"):
                raise ValueError(f"model.neuron={self.neuron}: model.kind=recurrent has recurrent LIF and ALIF "
                                 "layers (lif or rlif -> rlif, alif or ralif -> ralif); there is no recurrent "
                                 f"{self.neuron} neuron")
            if not self.hidden:
                raise ValueError("model.hidden: model.kind=recurrent needs at least one hidden layer")
        if self.refractory and self.neuron not in ("lif", "if"):
            raise ValueError(f"model.refractory={self.refractory}: the refractory counter exists for lif and if "
                             f"neurons only (got model.neuron={self.neuron})")
        if self.padding is not None and self.padding >= self.kernel:
            raise ValueError(f"model.padding={self.padding} must be smaller than model.kernel={self.kernel} "
                             "(a wider border only adds all-zero outputs)")
        return self

    def neuron_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = dict(threshold=self.threshold, reset=self.reset, detach_reset=self.detach_reset,
                                  surrogate=self.surrogate, slope=self.slope,
                                  learn_threshold=self.learn_threshold)
        for key in ("learn_reset", "graded", "refractory"):  # passed only when set: older neuron defaults kept
            if getattr(self, key):
                kw[key] = getattr(self, key)
        if self.neuron != "if":
            kw.update(beta=self.beta, learn_beta=self.learn_beta)
        kw.update(self.neuron_options)
        return kw


class LocalTrainSettings(_Section):
    """Training on each client's own data (for spikefed train: the centralized training).

    Mirrors :class:`spikefed.snn.train.TrainConfig`."""

    epochs: int = Field(30, ge=1, description="passes over the (local) training data (federated: per round)")
    batch_size: int = Field(32, ge=1, description="samples per gradient step")
    lr: float = Field(2e-3, gt=0, description="learning rate of the optimizer")
    optimizer: Annotated[str, AfterValidator(_one_of(OPTIMIZERS))] = Field(
        "adam", description="gradient optimizer (federated: a fresh one on each client every round)")
    momentum: float = Field(0.9, ge=0, lt=1, description="optimizer=sgd: momentum")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay of the optimizer")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this (null: no clipping)")
    tbptt: int | None = Field(None, ge=1, description="truncated BPTT window (null: full BPTT)")
    num_steps: int = Field(25, ge=1, description="time steps T per sample")
    encoder: Annotated[str, AfterValidator(_one_of(TRAIN_ENCODERS))] = Field(
        "direct", description="spike encoder (event data: 'events', set automatically)")
    encoder_kwargs: dict[str, Any] = Field(default_factory=dict, description="options of the encoder, e.g. "
                                           "{gain: 1.0} for rate (docs/snn.md)")
    loss: Annotated[str, AfterValidator(_one_of(LOSSES))] = Field(
        "mse_count", description="mse_count: spike counts towards target rates; ce_count: cross-entropy on spike "
        "counts; ce_membrane: cross-entropy on output potentials; ce_temporal: the first class to spike wins; "
        "mse_membrane: seed 002's per-step membrane rate loss 1/2 sum_t (v_t - y)^2, y = correct_rate for the "
        "label's output potential, incorrect_rate for the others (needs model.readout=membrane)")
    correct_rate: float = Field(0.8, ge=0, le=1, description="mse_count: target firing rate of the correct class "
                                "(mse_membrane: its target potential)")
    incorrect_rate: float = Field(0.2, ge=0, le=1, description="mse_count: target firing rate of the other "
                                                               "classes")
    membrane_reduction: Literal["time_mean", "max", "last"] = Field(
        "max", description="ce_membrane: output potentials over time reduced by their mean, max or last value")
    temporal_scale: float = Field(1.0, gt=0, description="ce_temporal: how sharply earlier first spikes win")
    count_ties: Literal["lowest", "first_spike"] = Field(
        "lowest", description="spike-count read-out (mse_count, ce_count): a tie for the top count goes to the "
        "lowest class index, or to the tied class that spiked first (few time steps tie often)")
    population: int = Field(1, ge=1, description="output neurons per class (their activity is averaged)")
    reg_l1: float = Field(0.0, ge=0, description="weight of an L1 penalty on hidden spikes (sparser activity)")
    reg_l2: float = Field(0.0, ge=0, description="weight of an L2 penalty on hidden spikes")
    reg_membrane_l1: float = Field(0.0, ge=0, description="weight of an L1 penalty mean|v| on the output layer's "
                                   "membrane potential")
    reg_membrane_l2: float = Field(0.0, ge=0, description="weight of an L2 penalty mean v^2 on the output layer's "
                                   "membrane potential")
    reg_bounds: float = Field(0.0, ge=0, description="weight of the penalty keeping each hidden neuron's rate "
                                                     "within rate_lower..rate_upper")
    rate_lower: float = Field(0.0, ge=0, le=1, description="reg_bounds: lowest firing rate (spikes per step)")
    rate_upper: float = Field(1.0, ge=0, le=1, description="reg_bounds: highest firing rate (spikes per step)")
    cosine_schedule: bool = Field(True, description="anneal the learning rate to zero over the epochs "
                                                    "(centralized training only)")
    local_steps: int | None = Field(None, ge=1, description="federated: cap on local steps per round")
    method: Literal["bptt", "eprop", "stdp", "decolle", "fa", "dfa", "drtp"] = Field(
        "bptt", description="gradient: bptt (autograd through time) or eprop (online eligibility traces; needs "
        "model.readout=membrane, several hidden layers only with lif/if/rlif, loss=ce_membrane with "
        "membrane_reduction time_mean or last); "
        "local rules, layer by layer (docs/learning_rules.md): stdp (hidden layers by STDP, read-out by gradient), "
        "decolle (per-layer local losses), fa / dfa / drtp (random feedback alignment / direct feedback "
        "alignment / direct random target projection)")
    eprop_feedback: Literal["symmetric", "random"] = Field(
        "symmetric", description="e-prop learning signal through the read-out weights or a fixed random matrix")
    eprop_feedback_seed: int = Field(0, ge=0, lt=2**32, description="seeds the random e-prop feedback matrix")
    # -- local learning rules (method stdp, decolle, fa, dfa, drtp; issue 17 part A) --
    rule_seed: int = Field(0, ge=0, lt=2**32, description="fa, dfa, drtp, decolle: seeds their fixed random "
                           "feedback / read-out matrices (the same on every client)")
    decolle_alpha: float = Field(0.9, ge=0, lt=1, description="decolle: decay of the low-pass spike traces the "
                                 "local read-outs see")
    stdp_variant: Literal["additive", "multiplicative"] = Field(
        "additive", description="stdp: additive amplitudes with hard weight bounds, or multiplicative (soft "
        "bounds: A+ (w_max - w), A- (w - w_min))")
    stdp_a_plus: float = Field(1e-4, ge=0, description="stdp: potentiation amplitude A+ (pre before post)")
    stdp_a_minus: float = Field(1.05e-4, ge=0, description="stdp: depression amplitude A- (post before pre)")
    stdp_tau_plus: float = Field(5.0, gt=0, description="stdp: potentiation time constant tau+ in steps")
    stdp_tau_minus: float = Field(5.0, gt=0, description="stdp: depression time constant tau- in steps")
    stdp_w_min: float = Field(-1.0, description="stdp: lower weight bound")
    stdp_w_max: float = Field(1.0, description="stdp: upper weight bound (> stdp_w_min)")
    stdp_reward: bool = Field(False, description="stdp: reward-modulated three-factor STDP (reward +1 for a "
                              "correctly classified sample, -1 otherwise, minus the batch mean)")
    stdp_tau_eligibility: float = Field(25.0, gt=0, description="stdp_reward: eligibility-trace time constant in "
                                        "steps")
    stdp_normalize: bool = Field(True, description="stdp: synaptic scaling, each neuron's incoming weights keep "
                                 "their L2 norm after every update (stops runaway potentiation)")
    # -- issue 17 (part B): robust training (docs/robustness.md, "Adversarial robustness")
    ib_weight: float = Field(0.0, ge=0, description="weight of the information-bottleneck penalty (KL of each "
                                                    "hidden neuron's spike rate to Bernoulli(ib_rate))")
    ib_rate: float = Field(0.1, gt=0, lt=1, description="ib_weight: prior firing rate of the bottleneck")
    adversarial: Literal["none", "fgsm", "pgd"] = Field(
        "none", description="adversarial training: each batch plus its FGSM or PGD copies (needs encoder=direct)")
    adv_eps: float = Field(0.1, gt=0, description="adversarial: attack radius, L-infinity, in input units")
    adv_steps: int = Field(5, ge=1, description="adversarial=pgd: projected sign-gradient steps")
    distill: float = Field(0.0, ge=0, description="ANN-to-SNN distillation: weight of the KL to a ReLU teacher's "
                           "softened outputs (0: off; loss ce_count or ce_membrane; docs/neurons_coding.md)")
    distill_temperature: float = Field(2.0, gt=0, description="distill: softmax temperature of the soft targets")
    distill_epochs: int = Field(20, ge=1, description="distill: training epochs of the ANN teacher")
    distill_hidden: int = Field(128, ge=1, description="distill: hidden width of the ANN teacher")
    kernel: Literal["loop", "compiled", "numba", "auto"] = Field(
        "loop", description="LIF / low-pass kernels of the batched cohort engine's MLP path: loop (the fused "
        "Python time loop, the reference fast path), compiled (torch.compile of the forward time loop; the first "
        "call compiles, ~50 s on 2 cores), numba (CPU only: forward and backward time loops in one parallel numba "
        "call each; the first call per dtype compiles once, ~20 s, then loads from numba's cache; needs the numba "
        "extra), auto (compiled on CUDA, loop on CPU); docs/performance.md")




    @model_validator(mode="after")
    def _distill_options(self) -> "LocalTrainSettings":
        if self.distill:
            self.to_train_config()  # raises ValueError naming what distillation cannot combine with
        return self

    @model_validator(mode="after")
    def _adversarial_encoder(self) -> "LocalTrainSettings":
        if self.adversarial != "none" and self.encoder != "direct":
            raise ValueError(f"adversarial={self.adversarial} needs encoder=direct (the attack differentiates the "
                             f"encoder; {self.encoder} spikes have no input gradient)")
        return self

    @model_validator(mode="after")
    def _eprop_options(self) -> "LocalTrainSettings":
        if self.method != "bptt":  # e-prop and the local rules: raises ValueError naming the incompatible option
            self.to_train_config()  # raises ValueError naming the option e-prop cannot combine with
        return self

    def to_train_config(self) -> TrainConfig:
        return TrainConfig(**self.model_dump())


class TrainSettings(_Section):
    """``spikefed train``: centralized training of a spiking network."""

    seed: int = Field(0, ge=0, lt=2**32, description="seeds every random choice of the run")
    data: DataSettings = Field(default_factory=DataSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    train: LocalTrainSettings = Field(default_factory=LocalTrainSettings, validate_default=True)

    @field_validator("train")
    @classmethod
    def _train_event_data(cls, v: "LocalTrainSettings", info: ValidationInfo) -> "LocalTrainSettings":
        v = _match_model(v, info.data.get("model"), "train")
        return _match_event_data(v, info.data.get("data"), "train")


class SensorSettings(_Section):
    """One client sensor of an event-data feature skew (:class:`spikefed.events.sensors.SensorSkew`)."""

    name: str = Field("sensor", description="a label for reports")
    contrast: float = Field(1.0, gt=0, description="contrast threshold relative to the recording's (>1: fewer "
                            "events, each kept with probability 1/contrast)")
    refractory_us: int = Field(0, ge=0, description="drop an event within this many us of the last at its address")
    noise_rate: float = Field(0.0, ge=0, description="background events per address per second")
    hot_pixels: int = Field(0, ge=0, description="addresses that fire on their own")
    hot_rate: float = Field(0.0, ge=0, description="events per second of each hot pixel")
    pool: int = Field(1, ge=1, description="resolution reduction factor (coordinates // pool * pool)")


class PartitionSettings(_Section):
    """How the training set is split among clients."""

    method: Literal["iid", "dirichlet", "shards", "quantity", "feature", "subject", "speaker", "session"] = Field(
        "dirichlet", description="iid: uniform random; dirichlet: label skew, each client's class mix drawn from "
        "Dirichlet(alpha); shards: each client gets a few label-sorted shards; quantity: power-law client sizes; "
        "feature: iid labels, per-client noise, gain and shift of the inputs (event data: one sensor per client, "
        "partition.sensors); subject, speaker, session: natural partitions of recorded event data (whole groups "
        "per client)")
    num_clients: int = Field(20, ge=1, description="clients in the federation")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (smaller: more label skew)")
    min_size: int = Field(10, ge=1, description="minimum samples per client (dirichlet, quantity)")
    shards_per_client: int = Field(2, ge=1, description="shards per client (shards)")
    exponent: float = Field(1.5, gt=0, description="power-law exponent of client sizes (quantity)")
    noise_std: float = Field(0.1, ge=0, description="feature skew: per-client additive noise")
    shift_std: float = Field(0.1, ge=0, description="feature skew: std of the per-client shift")
    scale_low: float = Field(0.8, gt=0, description="feature skew: lower bound of the per-client gain")
    scale_high: float = Field(1.2, gt=0, description="feature skew: upper bound of the per-client gain")
    sensors: list["SensorSettings"] = Field(
        default_factory=list, description="event data with method=feature: the clients' sensors, client k gets "
        "sensors[k mod len] (empty: the presets living_room and street_corner)")


class FederationSettings(_Section):
    """Rounds, client sampling, the strategy and the execution engine."""

    rounds: int = Field(30, ge=1, description="federated rounds (each: sample clients, train locally, aggregate)")
    fraction: float = Field(0.5, gt=0, le=1, description="fraction of clients sampled per round")
    min_clients: int = Field(1, ge=1, description="sample at least this many clients per round")
    strategy: Annotated[str, AfterValidator(_one_of(_strategy_names))] = Field(
        "fedavg", description="server strategy: fedavg (weighted mean), fedprox (clients pulled towards the global "
        "model), fedavgm (server momentum), fedadam / fedyogi / fedadagrad (adaptive server steps), scaffold "
        "(drift-correcting control variates), qffl (q-fair federated learning, Li et al. 2020; docs/fairness.md), "
        "or a name added with spikefed.register_strategy")
    strategy_args: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of a strategy added with spikefed.register_strategy "
        "(the built-ins take the keys below)")
    server_lr: float | None = Field(None, gt=0, description="server learning rate (null: the strategy's default)")
    momentum: float = Field(0.9, ge=0, lt=1, description="FedAvgM server momentum")
    prox_mu: float = Field(0.01, ge=0, description="FedProx proximal weight mu")
    beta1: float = Field(0.9, ge=0, lt=1, description="FedAdam/FedYogi/FedAdagrad first-moment decay")
    beta2: float = Field(0.99, ge=0, lt=1, description="FedAdam/FedYogi second-moment decay")
    tau: float = Field(1e-3, gt=0, description="fedadam/fedyogi/fedadagrad: small constant in the denominator of the "
                                        "adaptive step")
    engine: Literal["cohort", "sequential"] = Field(
        "cohort", description="cohort: sampled clients train as one batched computation; sequential: one by one")
    eval_every: int = Field(1, ge=1, description="evaluate the global model every n rounds (and the last)")
    client_state_memory_mb: float = Field(
        256.0, ge=0, description="per-client state (error-feedback residuals, SCAFFOLD controls, DGC velocities) "
        "is kept in memory up to this many MiB, then in files under the run directory's client_state/ (0: files "
        "from the start); where it lives never changes a result")
    max_update_norm: float | None = Field(None, gt=0, description="reject client updates whose L2 delta exceeds it")
    weights: Literal["samples", "uniform"] = Field(
        "samples", description="aggregation weights: samples (p_k = n_k / sum n, FedAvg) or uniform (p_k = 1/K over "
        "the round's K clients, the seed's plain mean); scaffold keeps its own unweighted mean")
    qffl_q: float = Field(1.0, ge=0, description="qffl: fairness exponent q (0: the uniform mean; larger: the "
                          "worst-off clients weigh more)")
    qffl_lipschitz: float | None = Field(
        None, gt=0, description="qffl: Lipschitz constant L of the q-FedAvg step (None: 1 / local.lr, as in the "
        "paper)")
    selection: Literal["uniform", "power_of_choice", "size", "availability"] = Field(
        "uniform", description="client selection: uniform; power_of_choice (d candidates, the m with the highest "
        "loss at the global model train); size (draws with replacement proportional to data size, aggregation "
        "corrected to stay unbiased); availability (diurnal per-client online traces); docs/fairness.md")
    selection_candidates: float = Field(
        1.0, gt=0, le=1, description="power_of_choice: candidates d = round(selection_candidates * N), at least m")
    availability_period: float = Field(24.0, gt=0, description="availability: rounds per simulated day")
    availability_low: float = Field(0.1, ge=0, le=1, description="availability: lowest online probability of a day")
    availability_high: float = Field(0.9, ge=0, le=1, description="availability: highest online probability")
    norm_bound: float | None = Field(
        10.0, ge=1, description="reject a client update whose L2 delta exceeds norm_bound x the round's median "
        "delta norm (on by default; null disables; not applied with privacy: DP clips, secure sums hide norms)")


class EnergySettings(_Section):
    """Energy model for the evaluation (joules per operation)."""

    e_ac: float = Field(0.9e-12, ge=0, description="per accumulate (spike-driven synaptic event)")
    e_mac: float = Field(4.6e-12, ge=0, description="per multiply-accumulate (non-binary input)")
    e_spike: float = Field(0.0, ge=0, description="per emitted spike")


class FaultSettings(_Section):
    """Client faults: dropout, stragglers against a round deadline, partial work (all off by default)."""

    dropout: float = Field(0.0, ge=0, le=1, description="probability that a sampled client returns nothing")
    deadline: float | None = Field(
        None, gt=0, description="round deadline in nominal local-step times (null: no deadline)")
    straggler_sigma: float = Field(0.0, ge=0, description="sigma of the per-client log-normal speed factor")
    jitter_sigma: float = Field(0.0, ge=0, description="sigma of the per-round log-normal step-time jitter")
    late_policy: Literal["drop", "fednova"] = Field(
        "drop", description="late clients: drop their work, or keep the steps done by the deadline (FedNova)")


class NetworkSettings(_Section):
    """Device links: measured bytes become transfer seconds, added to compute time against faults.deadline
    (off by default; see docs/federated.md, "Network model")."""

    enabled: bool = Field(False, description="model each device's link (a run's rows then carry sim_seconds)")
    uplink_mbps: float = Field(5.0, gt=0, description="median uplink bandwidth of a device, Mbit/s")
    downlink_mbps: float = Field(20.0, gt=0, description="median downlink bandwidth of a device, Mbit/s")
    latency_ms: float = Field(50.0, ge=0, description="median one-way latency of a transfer, ms")
    spread: float = Field(0.0, ge=0, description="sigma of each device's log-normal factor on bandwidths and "
                                                 "latency (0: every device has the medians)")
    step_ms: float = Field(10.0, gt=0, description="duration of one local step on a nominal device, ms "
                                                   "(faults.deadline is in these steps)")

    def to_spec(self) -> Any:
        """A :class:`~spikefed.federated.network.NetworkSpec`, or ``None`` when disabled."""
        if not self.enabled:
            return None
        from ..federated.network import NetworkSpec

        return NetworkSpec(uplink_mbps=self.uplink_mbps, downlink_mbps=self.downlink_mbps,
                           latency_ms=self.latency_ms, spread=self.spread, step_ms=self.step_ms)


class RobustnessSettings(_Section):
    """Simulated malicious clients and robust aggregation (both off by default; see docs/robustness.md)."""

    attack: Literal["none", "label_flip", "sign_flip", "boost", "noise", "nan", "shape"] = Field(
        "none", description="what the malicious clients do")
    attack_fraction: float = Field(0.2, ge=0, le=1, description="fraction of all clients that are malicious")
    boost: float = Field(10.0, gt=0, description="boost attack: delta -> boost * delta")
    sign_scale: float = Field(1.0, gt=0, description="sign_flip attack: delta -> -sign_scale * delta")
    noise_std: float = Field(1.0, gt=0, description="noise attack: delta replaced by N(0, noise_std^2)")
    defense: Literal["none", "median", "trimmed_mean", "krum", "multikrum", "norm_clip", "fltrust"] = Field(
        "none", description="robust aggregator replacing the weighted mean (none: the strategy's mean)")
    trim_fraction: float = Field(0.2, ge=0, lt=0.5, description="trimmed_mean: fraction cut from each end")
    krum_f: int | None = Field(None, ge=0, description="krum/multikrum: assumed attackers per round, at most "
                               "(clients per round) - 3 (null: the largest allowed, floor((clients - 3) / 2))")
    multikrum_m: int | None = Field(None, ge=1, description="multikrum: updates averaged (null: clients per round "
                                    "- krum_f)")
    clip_norm: float | None = Field(None, gt=0, description="norm_clip: bound on ||delta|| (null: the round's "
                                                             "median norm)")
    root_size: int = Field(100, ge=1, description="fltrust: training samples in the server's clean root set")


class CompressionSettings(_Section):
    """Update compression on the uplink and downlink (off by default; see docs/compression.md)."""

    uplink: Annotated[str, AfterValidator(_one_of(COMPRESSORS))] = Field(
        "none", description="client deltas: none, topk, randomk, sign, qsgd8, qsgd4 or sparsifier+quantizer")
    downlink: Annotated[str, AfterValidator(_one_of(COMPRESSORS))] = Field(
        "none", description="global-model broadcast (same names; none: dense)")
    fraction: float = Field(0.01, gt=0, le=1, description="topk/randomk: fraction of coordinates kept (uplink)")
    downlink_fraction: float | None = Field(None, gt=0, le=1, description="downlink fraction (null: fraction)")
    scope: Literal["global", "tensor"] = Field(
        "global", description="topk/randomk: k over the whole update, or k per tensor")
    values: Literal["fp32", "fp16"] = Field("fp32", description="topk/randomk: format of the kept values")
    error_feedback: bool = Field(True, description="uplink error feedback: clients carry the residual")
    unbiased: bool = Field(False, description="randomk: scale kept values by n/k (unbiased, not a contraction)")
    qsgd_norm: Literal["max", "l2"] = Field("max", description="qsgd8/qsgd4: scale by the max or the L2 norm")
    momentum_correction: float = Field(
        0.0, ge=0, lt=1, description="uplink DGC momentum correction + factor masking: decay m of the velocity "
        "accumulated over a client's round deltas before compression (0: plain error feedback; "
        "docs/compression.md)")

    def to_spec(self) -> CompressionSpec | None:
        """``None`` when both directions are dense (exactly the uncompressed engine)."""
        if self.uplink == "none" and self.downlink == "none":
            return None
        return CompressionSpec(**self.model_dump())


class FleetEntry(_Section):
    """One kind of device in the fleet: a preset (``spikefed devices`` lists them), its share of the clients,
    and optional overrides of the preset's fields."""

    profile: Annotated[str, AfterValidator(_one_of(_device_presets))] = Field(
        description="device preset (spikefed devices lists their fields)")
    fraction: float = Field(1.0, gt=0, le=1, description="share of the clients with this device")
    threshold_cv: float | None = Field(None, description="spread (std / mean) of the neurons' thresholds "
                                       "(null: the preset's)")
    leak_cv: float | None = Field(None, description="spread (std / mean) of the membrane time constants")
    gain_cv: float | None = Field(None, description="spread (std / mean) of the synaptic gains")
    weight_bits: int | None = Field(None, description="bits per stored weight, 1..32 (null: the preset's; "
                                    "presets without quantization store float32)")
    rounding: Literal["nearest", "stochastic"] | None = Field(
        None, description="weight quantization: round to the nearest level, or stochastically")
    drop_steps: float | None = Field(None, description="probability that a time step of an input is lost")
    jitter: int | None = Field(None, description="largest input timing jitter, in time steps")
    dt: float | None = Field(None, description="the device's time step in nominal steps (it runs T / dt steps)")
    delay_buffer: int | None = Field(None, description="slots of the synaptic-delay buffer (longer delays are "
                                     "clamped)")
    readout_noise: float | None = Field(None, description="noise of the membrane read-out used for calibration, "
                                        "relative to the probe amplitude")

    @model_validator(mode="after")
    def _valid_profile(self) -> "FleetEntry":
        self.to_profile()  # raises ValueError naming the bad field
        return self

    def to_profile(self) -> Any:
        from ..hardware.devices import get_profile

        overrides = {k: v for k, v in self.model_dump().items() if k not in ("profile", "fraction") and v is not None}
        profile = get_profile(self.profile, **overrides)
        if overrides:
            listed = ",".join(f"{k}={v}" for k, v in overrides.items())
            profile = profile.replace(name=f"{self.profile}({listed})")
        return profile


class DeviceSettings(_Section):
    """Neuromorphic hardware of the clients (empty fleet: ideal hardware, no device simulation)."""

    fleet: list[FleetEntry] = Field(default_factory=list, description="device kinds and their shares")
    aggregation: Literal["calibrated", "naive"] = Field(
        "calibrated", description="calibrated: each device measures its own behaviour with test stimuli and "
        "translates the shared model to and from it; naive: the devices' raw parameters are averaged")
    probe_repeats: int = Field(16, ge=1, description="noisy read-outs averaged per calibration probe")
    training_step: Literal["device", "nominal", "mixed", "resolutions"] = Field(
        "device", description="device: each client trains through its chip at the chip's own time step; "
        "nominal (calibrated aggregation): a client whose chip has another dt trains the chip's digital twin "
        "(its calibrated mismatch, bits and delay buffer) at the nominal step, and the chip still runs its own "
        "dt when the model is deployed; mixed: such a client's loss is its twin's plus its chip's; resolutions: "
        "as mixed, and every client also adds the loss of its device's digital twin at every other dt of the "
        "fleet (inputs rebinned to it), so the shared model is trained for every clock it is deployed on "
        "(docs/hardware.md)")

    @field_validator("fleet")
    @classmethod
    def _fractions(cls, v: list[FleetEntry]) -> list[FleetEntry]:
        total = sum(e.fraction for e in v)
        if v and abs(total - 1.0) > 1e-6:
            raise ValueError(f"fleet fractions must sum to 1, got {total:g}")
        return v


class PrivacySettings(_Section):
    """Client-level differential privacy and secure aggregation (both off by default; docs/privacy.md).

    DP-FedAvg and masked sums: :mod:`spikefed.federated.privacy`."""

    dp: bool = Field(False, description="clip each client delta, add Gaussian noise to the sum, account epsilon")
    clip: float = Field(1.0, gt=0, description="L2 clip norm C of a client delta (initial value if adaptive)")
    adaptive_clip: bool = Field(False, description="the clip norm follows the target_quantile of the clients' "
                                                   "update norms")
    target_quantile: float = Field(0.5, gt=0, lt=1, description="adaptive clip: fraction of unclipped updates")
    clip_lr: float = Field(0.2, gt=0, description="adaptive clip: how fast the clip norm moves towards the target "
                                                  "quantile")
    clip_count_stddev: float | None = Field(
        None, ge=0, description="adaptive clip: noise std of the unclipped count (null: clients per round / 20)")
    noise_multiplier: float = Field(1.0, ge=0, description="Gaussian noise std on the sum of clipped updates, in "
                                                           "units of clip")
    delta: float = Field(1e-5, gt=0, lt=1, description="delta of the reported (epsilon, delta)")
    accountant: Literal["rdp", "pld", "rdp_fixed_size"] = Field(
        "rdp", description="how epsilon is computed: rdp (Renyi DP) or pld (privacy loss distribution), both for "
        "randomly sampled clients; rdp_fixed_size: for a fixed number of clients per round")
    secure_aggregation: bool = Field(False, description="masked uplink: the server only learns the sum")
    secagg_threshold: float = Field(
        0.5, ge=0, lt=1, description="secure aggregation: floor(threshold x clients of the round) + 1 of them "
        "must deliver for the sum to be recovered (the rest may drop out)")
    secagg_scale_bits: int = Field(16, ge=0, le=52, description="secure aggregation: updates are rounded to "
                                   "multiples of 2^-bits before masking")
    secagg_bits: int = Field(32, ge=8, le=62, description="secure aggregation: masked values are integers modulo "
                                                          "2^bits")

    def to_spec(self) -> Any:
        """A :class:`~spikefed.federated.privacy.PrivacySpec`, or ``None`` when both DP and secure aggregation
        are off (exactly the plain engine)."""
        if not (self.dp or self.secure_aggregation):
            return None
        from ..federated.privacy import PrivacySpec

        return PrivacySpec(**self.model_dump())


class ContinualSettings(_Section):
    """Continual federated learning: a stream of tasks over the rounds and a stability regulariser on the clients
    (off by default; see docs/continual.md and :mod:`spikefed.federated.continual`)."""

    stream: Literal["none", "class_incremental", "domain_drift", "async_drift"] = Field(
        "none", description="none: stationary data; class_incremental: class groups one task after another; "
        "domain_drift: images rotated / noised more with every task (event data: sensor background spikes, "
        "rotation=0); async_drift: domain drift, clients lagging")
    tasks: int = Field(2, ge=1, description="number of tasks in the stream")
    rounds_per_task: int | None = Field(
        None, ge=1, description="rounds of each task (null: federation.rounds / tasks, which must divide)")
    rotation: float = Field(30.0, ge=0, le=360, description="domain/async drift: degrees of rotation added per task")
    noise: float = Field(0.0, ge=0, description="domain/async drift: std of input noise added per task (event data: "
                         "probability of a background spike per frame cell added per task)")
    max_lag: int = Field(2, ge=1, description="async drift: client lags drawn uniformly from 0..max_lag rounds")
    regularizer: Literal["none", "l2", "ewc"] = Field(
        "none", description="client stability term: l2 = lam/2 ||theta - theta*||^2 (pull towards the previous "
        "task's model), ewc = Fisher-weighted; theta* is the global model at the end of the previous task")
    lam: float = Field(0.0, ge=0, description="lambda, the weight of the stability term")
    fisher_samples: int = Field(64, ge=1, description="ewc: samples per client for the Fisher diagonal")

    @model_validator(mode="after")
    def _coherent(self) -> "ContinualSettings":
        """Options away from their defaults that the chosen stream / regulariser would ignore are errors (the
        resolved config.yaml of a run, which lists every key at its value, stays valid)."""
        changed = {k for k, f in type(self).model_fields.items() if getattr(self, k) != f.default} - {"stream"}
        if self.stream == "none" and changed:
            raise ValueError(f"continual.{sorted(changed)[0]} is set but continual.stream=none; choose a stream")
        drift_only = sorted(changed & {"rotation", "noise", "max_lag"})
        if self.stream == "class_incremental" and drift_only:
            raise ValueError(f"continual.{drift_only[0]} applies to domain_drift/async_drift, not class_incremental")
        if self.stream == "domain_drift" and "max_lag" in changed:
            raise ValueError("continual.max_lag applies to async_drift only")
        if self.regularizer == "none" and "lam" in changed:
            raise ValueError("continual.lam needs continual.regularizer=l2 or ewc")
        if self.regularizer != "ewc" and "fisher_samples" in changed:
            raise ValueError("continual.fisher_samples applies to continual.regularizer=ewc only")
        return self

    def to_spec(self, rounds: int) -> Any:
        """A :class:`~spikefed.federated.continual.ContinualSpec` for ``rounds`` federated rounds (``None``
        without a stream: exactly the stationary engine)."""
        if self.stream == "none":
            return None
        from ..federated.continual import ContinualSpec

        per_task = self.rounds_per_task if self.rounds_per_task is not None else rounds // self.tasks
        return ContinualSpec(self.stream, self.tasks, per_task, self.rotation if self.stream != "class_incremental"
                             else 0.0, self.noise, self.max_lag if self.stream == "async_drift" else 0,
                             self.regularizer, self.lam, self.fisher_samples)


def _continual_compatible(c: ContinualSettings, info: ValidationInfo) -> None:
    """Refuse continual settings the rest of the run cannot honour (ValueError naming the keys)."""
    if c.stream == "none":
        return
    fed = info.data.get("federation")
    local = info.data.get("local")
    if fed is not None:
        per_task = c.rounds_per_task if c.rounds_per_task is not None else fed.rounds // c.tasks
        if per_task < 1 or per_task * c.tasks != fed.rounds:
            raise ValueError(f"federation.rounds={fed.rounds} must equal continual.tasks={c.tasks} x "
                             f"rounds_per_task={'rounds/tasks' if c.rounds_per_task is None else c.rounds_per_task}")
    if c.stream == "class_incremental" and c.tasks > 10:
        raise ValueError(f"continual.tasks={c.tasks}: class_incremental splits the 10 classes, at most 10 tasks")
    if local is not None and c.regularizer == "l2" and local.optimizer == "sgd" and local.lr * c.lam >= 2:
        raise ValueError(f"continual.lam={c.lam} with local.optimizer=sgd, lr={local.lr}: lr * lam >= 2 makes "
                         "gradient descent on the stability term diverge; lower one of them or use adam")


#: Local-training defaults of federated runs where they differ from centralized training; they also apply when
#: a config sets only some ``local.*`` keys.
FEDERATED_LOCAL_DEFAULTS: dict[str, Any] = {"epochs": 4, "lr": 3e-3, "cosine_schedule": False}


def _device_setting(v: str) -> str:
    """``runtime.device``: resolvable here (a clear error for an unknown name, or CUDA asked for but absent)."""
    from ..runtime import resolve_device

    resolve_device(v)  # raises DeviceError (a ValueError) naming what is wrong
    return v.strip().lower()


_device_setting.choices = lambda: DEVICE_CHOICES  # type: ignore[attr-defined]


class RuntimeSettings(_Section):
    """Where and how the run computes; none of it changes a CPU run's numbers (docs/performance.md)."""

    device: Annotated[str, AfterValidator(_device_setting)] = Field(
        "cpu", description="where local training and evaluation run: cpu, cuda, cuda:N, or auto (cuda if torch "
        "sees a CUDA device, else cpu); the server side (wire format, validation, aggregation, checkpoints) stays "
        "on the CPU. A CUDA run draws from CUDA generators: reproducible on CUDA, not draw for draw equal to the "
        "CPU run")
    threads: int | Literal["auto", "torch"] = Field(
        "auto", description="torch intra-op threads of the spikefed command: auto (the cores not busy with other "
        "work when the run starts, from the 1-minute load average), torch (torch's default: every core), or a "
        "number >= 1; a busy core slows a multi-threaded op several-fold (benchmarks/threads.py)")

    @field_validator("threads")
    @classmethod
    def _threads(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"runtime.threads must be auto, torch or an integer >= 1, got {v}")
        return v


def _default_local() -> "LocalTrainSettings":
    return LocalTrainSettings(**FEDERATED_LOCAL_DEFAULTS)


class RunSettings(_Section):
    """``spikefed run``: a federated experiment."""

    seed: int = Field(0, ge=0, lt=2**32, description="seeds every random choice of the run")
    data: DataSettings = Field(default_factory=DataSettings)
    partition: PartitionSettings = Field(default_factory=PartitionSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    local: LocalTrainSettings = Field(default_factory=_default_local, validate_default=True)
    federation: FederationSettings = Field(default_factory=FederationSettings)
    energy: EnergySettings = Field(default_factory=EnergySettings)
    devices: DeviceSettings = Field(default_factory=DeviceSettings)
    faults: FaultSettings = Field(default_factory=FaultSettings)
    robustness: RobustnessSettings = Field(default_factory=RobustnessSettings)
    compression: CompressionSettings = Field(default_factory=CompressionSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    continual: ContinualSettings = Field(default_factory=ContinualSettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)

    @field_validator("continual")
    @classmethod
    def _continual_combination(cls, v: ContinualSettings, info: ValidationInfo) -> ContinualSettings:
        _continual_compatible(v, info)
        return v

    @model_validator(mode="after")
    def _compatible(self) -> "RunSettings":
        """The combinations that cannot work: one table (:mod:`spikefed.experiment.compat`)."""
        from .compat import check

        check(self)
        return self

    @model_validator(mode="before")
    @classmethod
    def _federated_local_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("local"), dict):
            data = {**data, "local": {**FEDERATED_LOCAL_DEFAULTS, **data["local"]}}
        return data

    @field_validator("local")
    @classmethod
    def _local_federated(cls, v: "LocalTrainSettings") -> "LocalTrainSettings":
        if v.cosine_schedule:
            raise ValueError("cosine_schedule is not supported for federated local training (a fresh optimizer "
                             "runs each round); set local.cosine_schedule=false")
        return v

    @field_validator("local")
    @classmethod
    def _local_event_data(cls, v: "LocalTrainSettings", info: ValidationInfo) -> "LocalTrainSettings":
        v = _match_model(v, info.data.get("model"), "local")
        return _match_event_data(v, info.data.get("data"), "local")


class ConversionSettings(_Section):
    """``spikefed convert``: the ReLU network, its balancing into IF neurons, and optional hybrid fine-tuning."""

    hidden: list[int] = Field(default_factory=lambda: [256], description="hidden layer widths (ANN and SNN)")
    ann_epochs: int = Field(20, ge=1, description="epochs of ReLU-network training (cross-entropy, Adam)")
    ann_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the ReLU network")
    batch_size: int = Field(32, ge=1, description="mini-batch size (ANN training and fine-tuning)")
    norm: Literal["max", "percentile"] = Field(
        "percentile", description="per-layer scale from training activations: their max, or a percentile")
    percentile: float = Field(99.9, gt=0, le=100, description="norm=percentile: percentile of positive activations")
    balance: Literal["weights", "threshold"] = Field(
        "weights", description="scale the weights (threshold 1) or the thresholds (weights copied)")
    initial_membrane: float = Field(0.5, ge=0, lt=1, description="membranes start at this fraction of threshold")
    steps: list[int] = Field(default_factory=lambda: [8, 16, 32, 64, 128, 256],
                             description="time steps T at which the converted network is evaluated")
    finetune_epochs: int = Field(0, ge=0, description="hybrid: surrogate-gradient epochs after conversion (0: none)")
    finetune_steps: int = Field(16, ge=1, description="hybrid: time steps T of fine-tuning")
    finetune_lr: float = Field(5e-4, gt=0, description="hybrid: Adam learning rate")

    @field_validator("hidden", "steps")
    @classmethod
    def _positive_list(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 for h in v):
            raise ValueError("must be a non-empty list of integers >= 1")
        return v


class ConvertSettings(_Section):
    """``spikefed convert``: ANN-to-SNN conversion on the digits data set."""

    seed: int = Field(0, ge=0, lt=2**32, description="seeds initialisation, shuffling and the split")
    data: DataSettings = Field(default_factory=DataSettings)
    convert: ConversionSettings = Field(default_factory=ConversionSettings)

    @field_validator("data")
    @classmethod
    def _static_data(cls, v: DataSettings) -> DataSettings:
        if v.name != "digits":
            raise ValueError(f"conversion needs static images (name=digits), got name={v.name}")
        return v


class MackeyGlassSettings(_Section):
    """The generated Mackey-Glass series and its prediction windows (docs/regression.md)."""

    length: int = Field(3000, ge=100, description="samples after the discarded transient")
    tau: float = Field(17.0, gt=0, description="delay (17: chaotic)")
    dt: float = Field(0.1, gt=0, description="integration step (tau / dt must be an integer >= 3)")
    sample_every: int = Field(10, ge=1, description="integration steps per sample")
    history_noise: float = Field(0.1, ge=0, description="seeded uniform noise on the initial history x0 = 1.2")
    discard: int = Field(500, ge=0, description="transient samples dropped")
    window: int = Field(200, ge=2, description="sequence length of a training / test window")
    horizon: int = Field(5, ge=1, description="predict the sample this many steps ahead")
    train_fraction: float = Field(0.7, gt=0, lt=1, description="first part of the series trains, the rest tests")

    @model_validator(mode="after")
    def _delay_on_grid(self) -> "MackeyGlassSettings":
        ratio = self.tau / self.dt
        if abs(ratio - round(ratio)) > 1e-9 * max(1.0, ratio) or round(ratio) < 3:
            raise ValueError(f"tau / dt must be an integer >= 3, got tau={self.tau}, dt={self.dt}")
        return self


class RegressionTrainSettings(_Section):
    """Recurrent SNN with a low-pass read-out, trained with truncated BPTT and clipping."""

    hidden: int = Field(64, ge=1, description="recurrent spiking neurons")
    neuron: Literal["rlif", "alif", "lif"] = Field("rlif", description="hidden neuron (rlif: recurrent LIF)")
    beta: float = Field(0.9, gt=0, lt=1, description="membrane decay")
    threshold: float = Field(1.0, gt=0, description="membrane potential at which a neuron spikes")
    readout_beta: float = Field(0.8, gt=0, lt=1, description="low-pass read-out decay")
    epochs: int = Field(40, ge=1, description="passes over the training windows")
    batch_size: int = Field(8, ge=1, description="windows per gradient step")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate (cosine schedule)")
    tbptt: int | None = Field(50, ge=1, description="truncated BPTT window (null: full BPTT)")
    grad_clip: float | None = Field(1.0, gt=0, description="gradient-norm clip (null: off)")
    warmup: int = Field(20, ge=0, description="first steps of each window left out of loss and metrics")
    target: Literal["value", "change"] = Field(
        "value", description="value: learn the future sample; change: learn the standardised change from the "
        "current sample (added back to it)")


class RegressSettings(_Section):
    """``spikefed regress``: Mackey-Glass prediction with a recurrent SNN."""

    seed: int = Field(0, ge=0, lt=2**32, description="seeds the initial history, initialisation and shuffling")
    data: MackeyGlassSettings = Field(default_factory=MackeyGlassSettings)
    train: RegressionTrainSettings = Field(default_factory=RegressionTrainSettings)

    @field_validator("train")
    @classmethod
    def _warmup_fits(cls, v: RegressionTrainSettings, info: ValidationInfo) -> RegressionTrainSettings:
        data = info.data.get("data")
        if data is not None and v.warmup >= data.window:
            raise ValueError(f"warmup={v.warmup} must be smaller than data.window={data.window}")
        return v


# -- loading, overrides, errors -----------------------------------------------------------------------------

def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) config file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {p} must end in .yaml, .yml or .toml")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot parse {p}: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML: numbers, booleans, lists, null)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set has an empty key in {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {part!r} is a value, not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _valid_keys(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    model: Any = schema
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def format_validation_error(e: ValidationError, schema: type[BaseModel]) -> str:
    """One line per problem: ``key: what is wrong (valid: ...)``."""
    lines = []
    for err in e.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            valid = _valid_keys(schema, loc)
            lines.append(f"unknown key {key!r}; valid keys here: {', '.join(valid)}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")  # a whole section (a section-level check) is not worth repeating
            if not key:  # a check across sections (the compatibility table): its message names the keys
                lines.append(msg)
                continue
            lines.append(f"{key}: {msg}" + ("" if isinstance(got, (BaseModel, dict)) else f" (got {got!r})"))
    return "; ".join(lines)


def build_settings(schema: type[BaseModel], path: str | Path | None = None, overrides: list[str] | None = None):
    """File (optional) + overrides -> validated settings, or :class:`ConfigError` with a one-line message."""
    data = load_file(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, schema)) from None


def dump_yaml(settings: BaseModel) -> str:
    """The fully resolved settings as YAML."""
    return yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
