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
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..snn.kernels import RESET_MODES
from ..snn.surrogate import SURROGATES
from ..snn.train import LOSSES, OPTIMIZERS, STATIC_ENCODERS, TrainConfig


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key."""


def _one_of(valid: tuple[str, ...]) -> Callable[[str], str]:
    """A validator accepting only the names in ``valid`` (the error lists them)."""

    def check(v: str) -> str:
        if v not in valid:
            raise ValueError(f"valid: {', '.join(valid)}")
        return v

    return check


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSettings(_Section):
    """Dataset and split."""

    name: Literal["digits"] = "digits"
    test_size: float = Field(0.2, gt=0, lt=1, description="fraction held out for testing (stratified)")
    scale: Literal["standard", "unit"] = Field(
        "standard", description="standard: per-pixel z-score on the train set; unit: pixels in [0, 1] (rate/latency)")


class ModelSettings(_Section):
    """Spiking network architecture and neuron options."""

    kind: Literal["mlp"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [256], description="hidden layer widths")
    neuron: Literal["lif", "if", "synaptic", "alif", "rlif"] = "lif"
    readout: Literal["spikes", "membrane"] = "spikes"
    beta: float = Field(0.9, gt=0, lt=1, description="membrane decay exp(-dt/tau)")
    threshold: float = Field(1.0, gt=0)
    reset: Annotated[str, AfterValidator(_one_of(RESET_MODES))] = "subtract"
    detach_reset: bool = True
    surrogate: Annotated[str, AfterValidator(_one_of(SURROGATES))] = "atan"
    slope: float | None = Field(None, gt=0, description="surrogate slope (None: the surrogate's default)")
    learn_beta: bool = False
    learn_threshold: bool = False

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int]) -> list[int]:
        if any(h < 1 for h in v):
            raise ValueError("hidden widths must be >= 1")
        return v



    def neuron_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = dict(threshold=self.threshold, reset=self.reset, detach_reset=self.detach_reset,
                                  surrogate=self.surrogate, slope=self.slope,
                                  learn_threshold=self.learn_threshold)
        if self.neuron != "if":
            kw.update(beta=self.beta, learn_beta=self.learn_beta)
        return kw


class LocalTrainSettings(_Section):
    """Local (per-device) training: mirrors :class:`spikefed.snn.train.TrainConfig`."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    optimizer: Annotated[str, AfterValidator(_one_of(OPTIMIZERS))] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    tbptt: int | None = Field(None, ge=1, description="truncated BPTT window (None: full BPTT)")
    num_steps: int = Field(25, ge=1, description="time steps T per sample")
    encoder: Annotated[str, AfterValidator(_one_of(STATIC_ENCODERS))] = "direct"
    encoder_kwargs: dict[str, Any] = Field(default_factory=dict)
    loss: Annotated[str, AfterValidator(_one_of(LOSSES))] = "mse_count"
    correct_rate: float = Field(0.8, ge=0, le=1)
    incorrect_rate: float = Field(0.2, ge=0, le=1)
    membrane_reduction: Literal["time_mean", "max", "last"] = "max"
    temporal_scale: float = Field(1.0, gt=0)
    population: int = Field(1, ge=1)
    reg_l1: float = Field(0.0, ge=0)
    reg_l2: float = Field(0.0, ge=0)
    reg_bounds: float = Field(0.0, ge=0)
    rate_lower: float = Field(0.0, ge=0, le=1)
    rate_upper: float = Field(1.0, ge=0, le=1)
    cosine_schedule: bool = True
    local_steps: int | None = Field(None, ge=1, description="federated: cap on local steps per round")




    def to_train_config(self) -> TrainConfig:
        return TrainConfig(**self.model_dump())


class TrainSettings(_Section):
    """``spikefed train``: centralized training of a spiking network."""

    seed: int = Field(0, ge=0, lt=2**32)
    data: DataSettings = Field(default_factory=DataSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    train: LocalTrainSettings = Field(default_factory=LocalTrainSettings)


class PartitionSettings(_Section):
    """How the training set is split among clients."""

    method: Literal["iid", "dirichlet", "shards", "quantity", "feature"] = "dirichlet"
    num_clients: int = Field(20, ge=1, description="clients in the federation")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (smaller: more label skew)")
    min_size: int = Field(10, ge=1, description="minimum samples per client (dirichlet, quantity)")
    shards_per_client: int = Field(2, ge=1, description="shards per client (shards)")
    exponent: float = Field(1.5, gt=0, description="power-law exponent of client sizes (quantity)")
    noise_std: float = Field(0.1, ge=0, description="feature skew: per-client additive noise")
    shift_std: float = Field(0.1, ge=0, description="feature skew: std of the per-client shift")
    scale_low: float = Field(0.8, gt=0, description="feature skew: lower bound of the per-client gain")
    scale_high: float = Field(1.2, gt=0, description="feature skew: upper bound of the per-client gain")


class FederationSettings(_Section):
    """Rounds, client sampling, the strategy and the execution engine."""

    rounds: int = Field(30, ge=1)
    fraction: float = Field(0.5, gt=0, le=1, description="fraction of clients sampled per round")
    min_clients: int = Field(1, ge=1, description="sample at least this many clients per round")
    strategy: Literal["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "scaffold"] = "fedavg"
    server_lr: float | None = Field(None, gt=0, description="server learning rate (None: the strategy's default)")
    momentum: float = Field(0.9, ge=0, lt=1, description="FedAvgM server momentum")
    prox_mu: float = Field(0.01, ge=0, description="FedProx proximal weight mu")
    beta1: float = Field(0.9, ge=0, lt=1, description="FedAdam/FedYogi/FedAdagrad first-moment decay")
    beta2: float = Field(0.99, ge=0, lt=1, description="FedAdam/FedYogi second-moment decay")
    tau: float = Field(1e-3, gt=0, description="adaptive server optimizers: adaptivity epsilon")
    engine: Literal["cohort", "sequential"] = Field(
        "cohort", description="cohort: sampled clients train as one batched computation; sequential: one by one")
    eval_every: int = Field(1, ge=1, description="evaluate the global model every n rounds (and the last)")
    max_update_norm: float | None = Field(None, gt=0, description="reject client updates whose L2 delta exceeds it")


class EnergySettings(_Section):
    """Energy model for the evaluation (joules per operation)."""

    e_ac: float = Field(0.9e-12, ge=0, description="per accumulate (spike-driven synaptic event)")
    e_mac: float = Field(4.6e-12, ge=0, description="per multiply-accumulate (non-binary input)")
    e_spike: float = Field(0.0, ge=0, description="per emitted spike")


#: Local-training defaults of federated runs where they differ from centralized training; they also apply when
#: a config sets only some ``local.*`` keys.
FEDERATED_LOCAL_DEFAULTS: dict[str, Any] = {"epochs": 4, "lr": 3e-3, "cosine_schedule": False}


def _default_local() -> "LocalTrainSettings":
    return LocalTrainSettings(**FEDERATED_LOCAL_DEFAULTS)


class RunSettings(_Section):
    """``spikefed run``: a federated experiment."""

    seed: int = Field(0, ge=0, lt=2**32, description="seeds every random choice of the run")
    data: DataSettings = Field(default_factory=DataSettings)
    partition: PartitionSettings = Field(default_factory=PartitionSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    local: LocalTrainSettings = Field(default_factory=_default_local)
    federation: FederationSettings = Field(default_factory=FederationSettings)
    energy: EnergySettings = Field(default_factory=EnergySettings)

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
            lines.append(f"{key}: {msg} (got {err.get('input')!r})")
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
