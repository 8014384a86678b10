"""Clients built on demand give the values an eagerly built list gives (partition rows, feature transforms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikefed.data.heterogeneity import REPORT_SETTINGS, client_heterogeneity
from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.lazy_clients import LazyClients
from spikefed.federated.simulation import Simulation


def _settings(*extra: str) -> RunSettings:
    return build_settings(RunSettings, None, ["partition.num_clients=30", "partition.min_size=5",
                                              "model.hidden=[8]", "local.num_steps=4", "federation.rounds=2",
                                              *extra])


@pytest.mark.parametrize("extra", [(), ("partition.method=feature",)])
def test_lazy_clients_equal_the_partition_rows(extra: tuple[str, ...]) -> None:
    spec = build_spec(_settings(*extra))
    sim = Simulation(spec)
    assert isinstance(sim.clients, LazyClients) and len(sim.clients) == 30
    x, y = spec.data.x_train, spec.data.y_train
    for k in (0, 7, 29, -1):
        c = sim.clients[k]
        rows = torch.as_tensor(np.asarray(spec.parts[k]), dtype=torch.int64)
        assert c.client_id == k % 30 and torch.equal(c.y, y[rows])
        if not extra:
            assert torch.equal(c.x, x[rows])
        else:  # the seeded transform: the same values on every access, and not the raw rows
            assert torch.equal(c.x, sim.clients[k].x) and not torch.equal(c.x, x[rows])
    assert [c.client_id for c in sim.clients[3:6]] == [3, 4, 5]
    assert [c.client_id for c in sim.clients] == list(range(30))
    with pytest.raises(IndexError, match="outside 0..29"):
        sim.clients[30]


def test_heterogeneity_report_without_building_clients_equals_the_direct_one() -> None:
    spec = build_spec(_settings())
    sim = Simulation(spec)
    direct = client_heterogeneity(spec.data.x_train.numpy(), spec.data.y_train.numpy(), spec.parts,
                                  spec.data.num_classes, **REPORT_SETTINGS)
    assert sim.heterogeneity == direct


def test_size_weighted_selection_uses_the_partition_sizes() -> None:
    settings = _settings("partition.method=quantity", "federation.selection=size", "federation.fraction=0.2")
    a = Simulation(build_spec(settings))
    b = Simulation(build_spec(settings))
    b.clients = list(b.clients)  # eager list: sizes from the clients themselves
    assert [a.sample_clients(r) for r in range(1, 4)] == [b.sample_clients(r) for r in range(1, 4)]
