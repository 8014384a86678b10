"""The Flower ClientApp builds the configured model (every ``model.kind``) exactly as ``spikefed run`` does."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("flwr", reason="Flower (flwr) is not installed")

from spikefed.deploy.flower import client_setup  # noqa: E402
from spikefed.experiment.config import RunSettings, build_settings  # noqa: E402
from spikefed.experiment.runner import build_spec  # noqa: E402
from spikefed.snn.models import SpikingConvNet, SpikingMLP  # noqa: E402


@pytest.mark.parametrize("model,cls", [({"kind": "conv", "channels": [2], "pooling": "avg"}, SpikingConvNet),
                                       ({"kind": "recurrent", "hidden": [6], "delays": 2}, SpikingMLP)])
def test_client_app_builds_the_run_model(model: dict, cls: type) -> None:
    settings = {"model": model, "partition": {"method": "iid", "num_clients": 2}, "federation": {"rounds": 1}}
    _, spec, _ = client_setup({"settings": json.dumps(settings)}, {"partition-id": 0, "num-partitions": 2})
    assert type(spec.model) is cls
    sim = build_spec(build_settings(RunSettings, None, [f"model.{k}={json.dumps(v)}" for k, v in model.items()]
                                    + ["partition.method=iid", "partition.num_clients=2", "federation.rounds=1"]))
    own, ref = dict(spec.model.named_parameters()), dict(sim.model.named_parameters())
    assert own.keys() == ref.keys()
    for name in own:
        assert torch.equal(own[name], ref[name]), name
