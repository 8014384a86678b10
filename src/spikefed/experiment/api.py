"""The Python API (docs/api.md): federate your own model, data set or strategy with the same run directory,
checkpoint, resume and report as ``spikefed run``; load the trained model of a run; evaluate a model on each
client's data.

::

    import spikefed

    run = spikefed.federate("configs/digits.yaml", overrides=["federation.rounds=5"], model=MyNet(),
                            out="runs/mine")
    run.model                       # the trained global model (MyNet, with the federated weights)
    run.summary["final_accuracy"]
    again = spikefed.load_run("runs/mine", model=MyNet())
    again.client_accuracy()         # the global model on each client's data
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data.digits import DatasetSplit
from ..federated.checkpoint import read_checkpoint
from ..federated.client_eval import evaluate_clients, summarize_clients
from ..federated.simulation import build_client
from ..federated.strategies import Strategy
from ..federated.types import load_params_
from ..seeding import Purpose, torch_generator
from ..snn.train import EvalResult, TrainConfig, evaluate
from .centralized import build_model
from .config import ConfigError, RunSettings, TrainSettings, build_settings
from .metrics_rows import whole_rows
from .runner import Run, build_spec, default_run_dir, load_data

__all__ = ["RunResult", "as_dataset", "describe_custom", "federate", "load_run", "run_settings"]


def run_settings(config: RunSettings | Mapping[str, Any] | str | Path | None = None,
                 overrides: Sequence[str] = ()) -> RunSettings:
    """Settings of a federated run from a :class:`RunSettings`, a dict (same keys as the YAML), a YAML/TOML
    file or ``None`` (the defaults), with ``overrides`` (``"section.key=value"``, as ``--set``) on top.
    ``ConfigError`` names a bad key."""
    if isinstance(config, RunSettings):
        if not overrides:
            return config
        config = config.model_dump(mode="json")
    if isinstance(config, Mapping):
        from pydantic import ValidationError

        from .config import apply_overrides, format_validation_error

        try:
            return RunSettings.model_validate(apply_overrides(dict(config), list(overrides)))
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, RunSettings)) from None
    return build_settings(RunSettings, Path(config) if config is not None else None, list(overrides))


def as_dataset(data: DatasetSplit | Mapping[str, Any]) -> DatasetSplit:
    """Your data set as a :class:`DatasetSplit`: one already, or a mapping with ``x_train``, ``y_train``,
    ``x_test``, ``y_test`` (tensors or arrays; features ``[N, ...]`` float, labels ``[N]`` integers from 0) and
    optionally ``num_classes`` (default: the largest label + 1) and ``name``."""
    if isinstance(data, DatasetSplit):
        return data
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a spikefed DatasetSplit or a dict with x_train, y_train, x_test, y_test; "
                        f"got {type(data).__name__}")
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in data]
    if missing:
        raise ValueError(f"data is missing {missing} (needs x_train, y_train, x_test, y_test)")
    unknown = sorted(set(data) - {"x_train", "y_train", "x_test", "y_test", "num_classes", "name"})
    if unknown:
        raise ValueError(f"data has unknown keys {unknown}; valid: x_train, y_train, x_test, y_test, num_classes, "
                         "name")

    def tensor(key: str, dtype: torch.dtype) -> torch.Tensor:
        v = data[key]
        t = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
        if dtype == torch.int64 and t.is_floating_point():
            if not torch.equal(t, t.round()):
                raise ValueError(f"data[{key!r}] must hold integer class labels")
        return t.to(dtype).contiguous()

    x_train, x_test = tensor("x_train", torch.float32), tensor("x_test", torch.float32)
    y_train, y_test = tensor("y_train", torch.int64), tensor("y_test", torch.int64)
    if x_train.dim() < 2 or x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(f"data: x_train {list(x_train.shape)} and x_test {list(x_test.shape)} must be [N, features"
                         "...] with the same features")
    labels = torch.cat([y_train, y_test])
    num_classes = int(data.get("num_classes", int(labels.max()) + 1 if labels.numel() else 0))
    return DatasetSplit(x_train, y_train, x_test, y_test, num_classes, tuple(x_train.shape[1:]),
                        str(data.get("name", "custom")))


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def describe_custom(model: torch.nn.Module | None, data: DatasetSplit | None,
                    strategy: Strategy | None) -> dict[str, Any]:
    """What ``custom.json`` records about your own parts (and a resume checks): the model's class and parameter
    shapes, the data set's shapes and SHA-256, the strategy's class and settings."""
    out: dict[str, Any] = {}
    if model is not None:
        out["model"] = {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                        "parameters": {n: list(p.shape) for n, p in model.named_parameters()}}
    if data is not None:
        out["data"] = {"name": data.name, "train": int(data.y_train.shape[0]), "test": int(data.y_test.shape[0]),
                       "feature_shape": list(data.feature_shape), "num_classes": data.num_classes,
                       "sequence": data.sequence,
                       "sha256": _digest(data.x_train, data.y_train, data.x_test, data.y_test)}
    if strategy is not None:
        out["strategy"] = {"class": f"{type(strategy).__module__}.{type(strategy).__qualname__}",
                           "name": strategy.name, "config": dict(strategy.config())}
    return out


@dataclass
class RunResult:
    """A federated run: its directory, settings, trained global model, metrics rows and summary.

    ``summary`` is ``None`` for an interrupted run (no ``summary.json``); ``round`` is the last completed round.
    """

    dir: Path
    settings: RunSettings
    model: torch.nn.Module
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    round: int
    custom: dict[str, Any] = field(default_factory=dict)
    data: DatasetSplit | None = None

    @property
    def train_config(self) -> TrainConfig:
        """How the run encodes inputs and reads outputs (time steps, encoder, loss): pass it to
        :func:`spikefed.snn.evaluate`."""
        return self.settings.local.to_train_config()

    def dataset(self) -> DatasetSplit:
        """The run's data set (loaded from the config; for your own data, the one given to ``load_run``)."""
        if self.data is None:
            if "data" in self.custom:
                raise ValueError(f"{self.dir} federated your own data set; pass it: load_run(DIR, data=...)")
            self.data = load_data(self.settings)
        return self.data

    def evaluate(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> EvalResult:
        """The trained model on ``(x, y)`` (default: the run's test set), encoded as in the run."""
        if x is None or y is None:
            d = self.dataset()
            x, y = d.x_test, d.y_test
        return evaluate(self.model, x, y, self.train_config, torch_generator(self.settings.seed, Purpose.EVAL,
                                                                             self.round))

    def client_accuracy(self) -> list[dict[str, Any]]:
        """The trained model on each client's own training data (the run's partition, feature skew included):
        ``[{"client", "samples", "accuracy", "loss"}]``; :func:`summarize_clients` gives mean / min / max."""
        spec = build_spec(self.settings, data=self.dataset(), model=self.model, strategy=_NO_STRATEGY)
        clients = [build_client(spec, c) for c in range(len(spec.parts))]
        return evaluate_clients(self.model, clients, self.train_config, self.settings.seed, self.round)

    def client_summary(self) -> dict[str, float | None]:
        """Mean, worst, best and sample-weighted accuracy over :meth:`client_accuracy`."""
        return summarize_clients(self.client_accuracy())


class _Placeholder(Strategy):
    """Stands in for the strategy where a spec is built only to read the clients' data."""

    name = "placeholder"


_NO_STRATEGY = _Placeholder()


def federate(config: RunSettings | Mapping[str, Any] | str | Path | None = None, *,
             overrides: Sequence[str] = (), model: torch.nn.Module | None = None,
             data: DatasetSplit | Mapping[str, Any] | None = None, strategy: Strategy | str | None = None,
             out: str | Path | None = None, resume: bool = False,
             on_round: Callable[[dict[str, Any]], None] | None = None, device: str | None = None) -> RunResult:
    """Run a federation to ``federation.rounds`` (or continue one, ``resume=True``) and return the result.

    Args:
        config: settings (see :func:`run_settings`); the defaults of ``spikefed run`` when left out.
        overrides: ``"section.key=value"`` strings on top of ``config``.
        model: your own ``torch.nn.Module`` instead of ``model.*``: called as ``model(x)`` with time-major input
            ``[T, B, features]``, it returns the output of every step ``[T, B, classes]`` (or a
            :class:`~spikefed.snn.ModelOutput`). Trained in place; ``result.model`` is it, with the final weights.
        data: your own data set instead of ``data.*`` (:func:`as_dataset`); partitioned by ``partition.*``.
        strategy: a :class:`~spikefed.federated.strategies.Strategy` object, or the name of a registered one
            (as ``federation.strategy``).
        out: the run directory (default ``runs/<timestamp>``); ``resume=True`` continues the run there (the same
            config and the same own parts are required: they are checked against the checkpoint).
        on_round: called with each round's metrics row.
        device: where local training and evaluation run (``cpu``, ``cuda``, ``cuda:N``, ``auto``): the same as
            ``overrides=["runtime.device=..."]`` (default: the config's ``runtime.device``, ``cpu``). The model
            you pass stays on the CPU; the run trains a copy on the device and writes the result back.

    The directory holds what ``spikefed run`` writes (config.yaml, metrics.jsonl, checkpoint.pt, summary.json,
    report.html) plus ``custom.json`` describing your own parts.
    """
    if device is not None:
        overrides = [*overrides, f"runtime.device={device}"]
    if isinstance(strategy, str):
        overrides = [*overrides, f"federation.strategy={strategy}"]
        strategy = None
    if strategy is not None and not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a spikefed Strategy or a registered name, got {type(strategy).__name__}")
    if model is not None and not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    settings = run_settings(config, overrides)
    dataset = as_dataset(data) if data is not None else None
    out_dir = Path(out) if out is not None else default_run_dir()
    if resume and out is None:
        raise ConfigError("resume=True needs out= (the run directory to continue)")
    spec = build_spec(settings, data=dataset, model=model, strategy=strategy)
    custom = describe_custom(model, dataset, strategy)
    run = Run(settings, out_dir, resume=resume, spec=spec, custom=custom or None)
    while not run.done:
        row = run.step()
        if on_round is not None:
            on_round(row)
    summary = run.finish()
    load_params_(spec.model, run.sim.state.global_params)
    rows = whole_rows(out_dir / "metrics.jsonl", run.sim.state.metrics, last_whole=False)  # per-client lists too
    return RunResult(out_dir, settings, spec.model, rows, summary, run.sim.state.round, custom, spec.data)


def load_run(path: str | Path, model: torch.nn.Module | None = None,
             data: DatasetSplit | Mapping[str, Any] | None = None) -> RunResult:
    """The trained global model of a run directory (finished or interrupted), with its settings and metrics.

    The weights come from ``checkpoint.pt`` (verified; nothing is unpickled). A run of a config-built model
    rebuilds it from ``config.yaml``; a run of your own model needs an instance of it (``model=``, same
    parameter names and shapes), and a run of your own data set needs it again (``data=``) for evaluation.
    """
    d = Path(path)
    if not (d / "checkpoint.pt").is_file() or not (d / "config.yaml").is_file():
        raise ConfigError(f"{d} is not a spikefed run directory (needs config.yaml and checkpoint.pt)")
    settings = build_settings(RunSettings, d / "config.yaml", [])
    custom: dict[str, Any] = {}
    if (d / "custom.json").is_file():
        try:
            custom = json.loads((d / "custom.json").read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{d / 'custom.json'} is not valid JSON: {e}") from None
        if not isinstance(custom, dict):
            raise ConfigError(f"{d / 'custom.json'} must hold a JSON object")
    state = read_checkpoint(d / "checkpoint.pt")
    params = state.get("global_params")
    if not isinstance(params, dict):
        raise ConfigError(f"{d / 'checkpoint.pt'} holds no global parameters")
    dataset = as_dataset(data) if data is not None else None
    if dataset is not None and "data" in custom:
        given = describe_custom(None, dataset, None)["data"]["sha256"]
        if given != custom["data"].get("sha256"):
            raise ValueError(f"data= is not the data set {d} was federated on (its SHA-256 differs)")
    if model is None:
        if "model" in custom:
            raise ValueError(f"{d} federated your own model ({custom['model'].get('class')}); pass an instance: "
                             "load_run(DIR, model=...)")
        model = _config_model(settings, custom, dataset)
    _load_checked(model, params, d)
    summary = None
    if (d / "summary.json").is_file():
        summary = json.loads((d / "summary.json").read_text())
    rows = state.get("metrics", [])
    rows = whole_rows(d / "metrics.jsonl", rows) if isinstance(rows, list) else []
    return RunResult(d, settings, model, rows, summary, int(state.get("round", 0)), custom, dataset)


def _config_model(settings: RunSettings, custom: dict[str, Any], data: DatasetSplit | None) -> torch.nn.Module:
    """The config's model, sized for the run's data (its shapes from custom.json for your own data set)."""
    if data is None and "data" in custom:
        shape, classes = custom["data"]["feature_shape"], int(custom["data"]["num_classes"])
        step = tuple(int(s) for s in (shape[1:] if custom["data"].get("sequence") else shape))
        features = int(np.prod(step))
    else:
        data = data if data is not None else load_data(settings)
        features, classes = data.step_features, data.num_classes
        step = tuple(data.feature_shape[1:] if data.sequence else data.feature_shape)
    train = TrainSettings(seed=settings.seed, data=settings.data, model=settings.model, train=settings.local)
    return build_model(train, features, classes, torch_generator(settings.seed, Purpose.INIT), step)


def _load_checked(model: torch.nn.Module, params: dict[str, Any], d: Path) -> None:
    own = {n: tuple(p.shape) for n, p in model.named_parameters()}
    saved = {n: tuple(t.shape) for n, t in params.items()}
    if own != saved:
        missing, extra = sorted(set(saved) - set(own)), sorted(set(own) - set(saved))
        wrong = sorted(n for n in set(own) & set(saved) if own[n] != saved[n])
        raise ValueError(f"the model does not fit the run in {d}: parameters missing from the model {missing}, "
                         f"not in the run {extra}, of another shape {wrong}")
    with torch.no_grad():
        load_params_(model, params)
