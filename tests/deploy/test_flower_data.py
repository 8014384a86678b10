"""Flower nodes read their own recorded data: node-config ``data-root`` and ``data-partition`` (issue 14).

Reference: the labels and sample counts of the N-MNIST files each test writes byte by byte into each node's folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="Flower (flwr) is not installed")

sys.path.insert(0, str(Path(__file__).parents[1] / "events"))  # the byte-by-byte writers
from official_formats import write_nmnist_file  # noqa: E402

from spikefed.deploy.flower import DeploymentError, client_setup, node_settings  # noqa: E402


def _tree(root: Path, labels_train: list[int], labels_test: list[int]) -> None:
    for split, labels in (("Train", labels_train), ("Test", labels_test)):
        for i, label in enumerate(labels):
            write_nmnist_file(root / split / str(label) / f"{i:04d}.bin", [i % 34, 3], [5, label], [1, 0],
                              [10 * i, 10 * i + 5])


def _run_config(root: Path) -> dict:
    settings = {"data": {"name": "nmnist", "root": str(root), "bins": 2}, "model": {"hidden": [8]},
                "partition": {"method": "iid", "num_clients": 3}, "federation": {"rounds": 1}}
    return {"settings": json.dumps(settings)}


def test_nodes_read_their_own_data_root(tmp_path: Path) -> None:
    server, node = tmp_path / "server", tmp_path / "node"
    _tree(server, [0, 1, 2, 3, 4, 5, 6, 7, 8], [0, 1])
    _tree(node, [9, 9, 8, 9], [9])
    rc = _run_config(server)
    _, spec, _ = client_setup(rc, {"partition-id": 1, "num-partitions": 3})
    assert sorted(spec.data.y_train.tolist()) == list(range(9))  # the run's root
    _, own, n = client_setup(rc, {"partition-id": 1, "num-partitions": 3, "data-root": str(node),
                                  "data-partition": "all"})
    assert n.data_root == str(node)
    assert sorted(own.data.y_train.tolist()) == [8, 9, 9, 9]  # this node's files, all of them its own
    assert own.parts[1].tolist() == [0, 1, 2, 3]
    _, assigned, _ = client_setup(rc, {"partition-id": 2, "num-partitions": 3, "data-root": str(node)})
    assert sorted(np.concatenate(assigned.parts).tolist()) == [0, 1, 2, 3]  # its part of an iid split


def test_node_data_config_errors(tmp_path: Path) -> None:
    base = {"partition-id": 0, "num-partitions": 2}
    with pytest.raises(DeploymentError, match="data-root"):
        node_settings({**base, "data-root": str(tmp_path / "missing")})
    with pytest.raises(DeploymentError, match="data-partition"):
        node_settings({**base, "data-root": str(tmp_path), "data-partition": "mine"})
    with pytest.raises(DeploymentError, match="needs data-root"):
        node_settings({**base, "data-partition": "all"})
