"""Where a run's tensors live (``runtime.device``): moving data, model and parameters to the device once, and
bringing a cohort's trained parameters back in one transfer per parameter.

The round's server side (compression, the wire format, validation, aggregation, checkpoints) works on CPU
tensors, because it measures bytes; local training and evaluation run on the device. Per round the device sees
one upload of the received global parameters and sends back one ``[K, ...]`` stack per trained parameter (not
one transfer per client and tensor). On the CPU every move here is a no-op (``Tensor.to`` returns the tensor
itself), so the CPU path, the default and the CI path, is the code path of every device.

Client data is moved when a client first trains (:class:`DeviceData`) and kept there; a client whose data a
stage replaces (a new continual task, a label-flip attack) is moved again. Generators for a device come from
:func:`spikefed.seeding.torch_generator` with ``device=``: a CUDA generator (Philox) draws a different stream
than the CPU one (Mersenne Twister) from the same seed, so a CUDA run is reproducible on CUDA, and equal to the
CPU run in distribution, not draw for draw.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import torch

from .cohort import ClientData
from .types import ClientUpdate, ParamDict


def params_to(params: ParamDict, device: torch.device) -> ParamDict:
    """Every tensor of ``params`` on ``device`` (the same tensors where they already are)."""
    return {n: v.to(device) for n, v in params.items()}


def client_to(client: ClientData, device: torch.device) -> ClientData:
    """A client's data on ``device`` (the client itself where it already is)."""
    if client.x.device == device and client.y.device == device:
        return client
    return ClientData(client.client_id, client.x.to(device), client.y.to(device))


class DeviceData:
    """The clients' data on the run's device, moved once per client (and again only if a stage replaced it)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._moved: dict[int, tuple[ClientData, ClientData]] = {}  # cid -> (host object, device copy)

    def get(self, client: ClientData) -> ClientData:
        if self.device.type == "cpu":
            return client
        held = self._moved.get(client.client_id)
        if held is None or held[0] is not client:
            held = (client, client_to(client, self.device))
            self._moved[client.client_id] = held
        return held[1]


def model_on(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` itself on the CPU, else a copy on ``device`` (the run's CPU model stays where the server uses it)."""
    if device.type == "cpu":
        return model
    from ..manifold import copy_module

    return copy_module(model).to(device)


def updates_to_host(updates: Sequence[ClientUpdate]) -> list[ClientUpdate]:
    """The updates with their tensors on the CPU: one stacked transfer per parameter name (and per control-delta
    name), not one per client; CPU updates are returned as they are."""
    if not updates or all(v.device.type == "cpu" for v in updates[0].params.values()):
        return list(updates)

    def host(dicts: list[ParamDict]) -> list[ParamDict]:
        names = list(dicts[0])
        stacks = {n: torch.stack([d[n] for d in dicts]).cpu() for n in names}
        return [{n: stacks[n][i] for n in names} for i in range(len(dicts))]

    params = host([u.params for u in updates])
    deltas: list[Any] = [None] * len(updates)
    if all(u.control_delta is not None for u in updates):
        deltas = host([u.control_delta for u in updates])  # type: ignore[misc]
    return [replace(u, params=p, control_delta=d if d is not None else u.control_delta)
            for u, p, d in zip(updates, params, deltas)]
