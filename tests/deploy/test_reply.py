"""A node's reply as the server reads it: anything malformed becomes one upload that carries the reason, which the
trust boundary rejects; a node that reports a failure is a rejection too, never an exception that ends the run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from spikefed.deploy.flower import METRICS_KEY, UPDATE_KEY, upload_from_reply
from spikefed.deploy.flower_nodes import FlowerTrainer
from spikefed.federated.aggregation import InvalidUpdate
from spikefed.federated.boundary import check_metadata
from spikefed.federated.serialization import encode_params

PAYLOAD = encode_params({"w": torch.zeros(2)})


def _reply(payload=None, metrics=None, drop=None) -> RecordDict:
    arr = np.frombuffer(PAYLOAD, dtype=np.uint8).copy() if payload is None else payload
    records = {UPDATE_KEY: ArrayRecord({"payload": Array(arr)}),
               METRICS_KEY: MetricRecord(metrics if metrics is not None else {"num-samples": 5, "steps": 2,
                                                                                 "loss": 0.5})}
    if drop is not None:
        records.pop(drop)
    return RecordDict(records)


def test_a_well_formed_reply_becomes_the_upload() -> None:
    up = upload_from_reply(3, _reply())
    assert up.error is None and up.payload == PAYLOAD and (up.num_samples, up.steps) == (5, 2)
    check_metadata(up, {3})  # passes the boundary's metadata check


@pytest.mark.parametrize("content, word", [
    (_reply(drop=UPDATE_KEY), "malformed reply"),
    (_reply(drop=METRICS_KEY), "malformed reply"),
    (_reply(payload=np.zeros(4, dtype=np.float32)), "1-D uint8"),
    (_reply(payload=np.zeros((2, 2), dtype=np.uint8)), "1-D uint8"),
    (_reply(metrics={"steps": 2}), "malformed reply"),
    (RecordDict({UPDATE_KEY: ConfigRecord({"payload": "x"})}), "malformed reply"),
])
def test_a_malformed_reply_is_one_rejection(content: RecordDict, word: str) -> None:
    up = upload_from_reply(3, content)
    assert up.error is not None and word in up.error
    with pytest.raises(InvalidUpdate) as e:
        check_metadata(up, {3})
    assert e.value.client_id == 3 and word in e.value.reason


@pytest.mark.parametrize("samples, word", [(2.5, "num_samples"), (-1.0, "num_samples")])
def test_counts_that_are_not_whole_are_refused_by_the_boundary(samples: float, word: str) -> None:
    up = upload_from_reply(3, _reply(metrics={"num-samples": samples, "steps": 2}))
    with pytest.raises(InvalidUpdate, match=word):
        check_metadata(up, {3})


class _Grid:
    """Replies as a SuperLink hands them over: one node answers, one reports a ClientApp exception."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def get_node_ids(self):  # noqa: ANN201
        return [10, 11]

    def push_messages(self, messages):  # noqa: ANN001, ANN201
        self.ids = ["m0", "m1"]
        return self.ids

    def pull_messages(self, message_ids):  # noqa: ANN001, ANN201
        meta = {"group_id": "1"}
        ok = SimpleNamespace(metadata=SimpleNamespace(src_node_id=10, reply_to_message_id="m0", **meta),
                             has_error=lambda: False, content=_reply())
        failed = SimpleNamespace(metadata=SimpleNamespace(src_node_id=11, reply_to_message_id="m1", **meta),
                                 has_error=lambda: True,
                                 error=SimpleNamespace(code=2, reason="<class 'RuntimeError'>:<'disk full'>"))
        return [ok, failed]


def test_a_node_that_fails_is_a_rejection_not_the_end_of_the_run(monkeypatch) -> None:
    import flwr.app

    monkeypatch.setattr(flwr.app, "Message", lambda *a, **k: None)  # messages are not inspected by this grid
    uploads = FlowerTrainer(_Grid(), {0: 10, 1: 11}, timeout=1.0)(1, {}, [0, 1], SimpleNamespace(prox_mu=0.0), None)
    assert uploads[0].error is None and uploads[0].payload == PAYLOAD
    assert uploads[1].error is not None and "disk full" in uploads[1].error
    with pytest.raises(InvalidUpdate, match="disk full"):
        check_metadata(uploads[1], {0, 1})
