"""Test-session settings: one torch thread per pytest-xdist worker; the longest tests first.

The suite runs with ``-n 2`` on 2 cores; two workers with two intra-op threads each oversubscribe the CPU and
torch's spinning threads then slow everything down several-fold. Subprocesses started by tests (the CLI
tests) inherit ``OMP_NUM_THREADS``.

The order: tests listed in ``tests/durations.json`` (recorded seconds, written by ``tests/durations_update.py``)
run first, longest first; every other test keeps its collection order after them. Under xdist's ``load``
distribution the controller then hands tests out one at a time (``--maxschedchunk 1`` unless given): its default
sends each worker a consecutive quarter of the list at the start, which after this sort would put every long test
on one worker. One at a time, each worker takes the next longest test when it is free (list scheduling, longest
first), so the minute-long real-process tests overlap and the many short ones fill the gaps at the end. The order
is a stable sort on a file in the repository: every worker collects the same list, as xdist requires.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

DURATIONS = Path(__file__).with_name("durations.json")


def _recorded() -> dict[str, float]:
    if not DURATIONS.is_file():
        return {}
    data = json.loads(DURATIONS.read_text())
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
        raise pytest.UsageError(f"{DURATIONS}: expected an object of test id -> seconds")
    return {str(k): float(v) for k, v in data.items()}


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.has_plugin("xdist") and config.getoption("dist", "no") == "load" \
            and config.getoption("maxschedchunk", None) is None:
        config.option.maxschedchunk = 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    recorded = _recorded()
    if recorded:
        items.sort(key=lambda item: -recorded.get(item.nodeid, 0.0))  # stable: the rest keep their order
