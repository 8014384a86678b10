"""Plain data types shared by the federated engine (simulation and deployment).

Parameters travel as a :data:`ParamDict`: an ordered ``name -> tensor`` mapping whose names and order are those
of ``model.named_parameters()``. Updates are expressed as deltas in the device-independent (latent) space:
``delta = w_client - w_global``.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

ParamDict = dict[str, torch.Tensor]


def tensor_sum(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """``t_1 + t_2 + ...`` left to right (the values of ``sum(terms)``, typed as a tensor); at least one term."""
    return functools.reduce(operator.add, terms)


@dataclass
class ClientUpdate:
    """What one client returns after local training.

    Attributes:
        client_id: the client's index in the federation.
        num_samples: local training samples (the FedAvg weight p_k is proportional to it).
        params: the client's locally trained parameters (latent space), same names/shapes as the global model.
        metrics: local training metrics (``loss``, ``accuracy``, ``steps`` ...).
        control_delta: SCAFFOLD only: ``c_i^+ - c_i`` (change of the client control variate).
        steps: number of local optimizer steps taken (FedNova-style normalisation, SCAFFOLD).
    """

    client_id: int
    num_samples: int
    params: ParamDict
    metrics: dict[str, float] = field(default_factory=dict)
    control_delta: ParamDict | None = None
    steps: int = 0


@dataclass
class FitInstructions:
    """What the server sends with the global parameters for one round of local training."""

    round: int
    prox_mu: float = 0.0
    server_control: ParamDict | None = None  # SCAFFOLD c
    extra: dict[str, Any] = field(default_factory=dict)


def clone_params(params: ParamDict) -> ParamDict:
    return {k: v.detach().clone() for k, v in params.items()}


def params_of(model: torch.nn.Module) -> ParamDict:
    """Detached copies of a model's parameters, in ``named_parameters`` order."""
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def load_params_(model: torch.nn.Module, params: ParamDict) -> None:
    """Copy ``params`` into ``model`` in place (names and shapes must match exactly)."""
    own = dict(model.named_parameters())
    if set(own) != set(params):
        missing, extra = sorted(set(own) - set(params)), sorted(set(params) - set(own))
        raise ValueError(f"parameter names differ: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for k, p in own.items():
            if p.shape != params[k].shape:
                raise ValueError(f"parameter {k!r}: expected shape {tuple(p.shape)}, got {tuple(params[k].shape)}")
            p.copy_(params[k])


@dataclass
class Upload:
    """What one client sends back after local training: its update as uplink bytes plus plain metadata.

    Everything in it comes from outside the server: :func:`spikefed.federated.boundary.parse_upload` checks it
    against the model's schema before any arithmetic."""

    client_id: int
    num_samples: int
    payload: bytes  # the serialized (possibly compressed) delta; its length is the uplink cost
    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    control_payload: bytes | None = None  # SCAFFOLD: the serialized control-variate delta
    error: str | None = None  # the reply could not be read, or the client reported a failure: rejected as such
