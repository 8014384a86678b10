"""spikefed: federated learning of spiking neural networks on heterogeneous neuromorphic devices.

The Python API (docs/api.md) is importable from here; the names load on first use, so ``import spikefed`` stays
cheap (no torch until one of them is touched)::

    import spikefed

    run = spikefed.federate(overrides=["federation.rounds=5"], model=my_model, out="runs/mine")
    trained = spikefed.load_run("runs/mine", model=my_model).model
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it (imported lazily by :func:`__getattr__`)
_API = {
    "federate": "spikefed.experiment.api",
    "load_run": "spikefed.experiment.api",
    "run_settings": "spikefed.experiment.api",
    "as_dataset": "spikefed.experiment.api",
    "RunResult": "spikefed.experiment.api",
    "RunSettings": "spikefed.experiment.config",
    "ConfigError": "spikefed.experiment.config",
    "Strategy": "spikefed.federated.strategies",
    "register_strategy": "spikefed.federated.strategies",
    "strategy_names": "spikefed.federated.strategies",
    "make_strategy": "spikefed.federated.strategies",
    "evaluate_clients": "spikefed.federated.client_eval",
    "summarize_clients": "spikefed.federated.client_eval",
    "DatasetSplit": "spikefed.data.digits",
    "ModelOutput": "spikefed.snn.models",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'spikefed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
