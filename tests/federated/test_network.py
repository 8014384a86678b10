"""Network model: transfer times by hand, link draws, the round's cutoff and sim_seconds, compression vs deadline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec, summarize
from spikefed.federated.network import Link, NetworkSpec, client_seconds, draw_link, round_timing, transfer_seconds
from spikefed.federated.simulation import Simulation

SMALL = ["partition.num_clients=10", "federation.fraction=1.0", "model.hidden=[64]", "local.num_steps=5",
         "local.epochs=1", "network.enabled=true"]


def test_transfer_time_is_latency_plus_bits_over_bandwidth():
    assert transfer_seconds(1_000_000, 8.0, 20.0) == pytest.approx(0.02 + 1.0)
    assert transfer_seconds(0, 5.0, 0.0) == 0.0
    assert transfer_seconds(12_345, 0.5, 75.0) == pytest.approx(0.075 + 12_345 * 8 / 500_000)
    link = Link(uplink_mbps=2.0, downlink_mbps=10.0, latency_ms=30.0)
    by_hand = (0.03 + 50_000 * 8 / 10e6) + 0.25 + (20_000 * 8 / 2e6 + 0.03)
    assert client_seconds(link, 50_000, 20_000, 0.25) == pytest.approx(by_hand)


def test_links_are_the_medians_times_lognormal_factors():
    spec = NetworkSpec(uplink_mbps=4.0, downlink_mbps=16.0, latency_ms=40.0, spread=0.7)
    z = np.random.default_rng(3).standard_normal(3)
    link = draw_link(spec, np.random.default_rng(3))
    assert link.uplink_mbps == pytest.approx(4.0 * math.exp(0.7 * z[0]))
    assert link.downlink_mbps == pytest.approx(16.0 * math.exp(0.7 * z[1]))
    assert link.latency_ms == pytest.approx(40.0 * math.exp(0.7 * z[2]))
    assert draw_link(NetworkSpec(spread=0.0), np.random.default_rng(5)) == Link(5.0, 20.0, 50.0)


def test_round_timing_waits_for_the_deadline_only_when_someone_is_late():
    assert round_timing({1: 0.3, 4: 0.9, 7: 0.5}, 0.6) == ([4], 0.6)
    assert round_timing({1: 0.3, 7: 0.5}, 0.6) == ([], 0.5)
    assert round_timing({1: 0.3, 7: 2.5}, None) == ([], 2.5)
    assert round_timing({}, 1.0) == ([], 0.0)


def test_bad_network_settings_are_refused():
    with pytest.raises(ValueError, match="uplink_mbps"):
        NetworkSpec(uplink_mbps=0.0)
    with pytest.raises(ValueError, match="spread"):
        NetworkSpec(spread=-1.0)
    with pytest.raises(ValueError, match="nbytes"):
        transfer_seconds(-1, 1.0, 0.0)
    with pytest.raises(ValueError, match="network.uplink_mbps"):
        build_settings(RunSettings, None, ["network.uplink_mbps=-2"])
    with pytest.raises(ValueError, match="late_policy=drop"):
        build_settings(RunSettings, None, ["network.enabled=true", "faults.late_policy=fednova"])
    with pytest.raises(ValueError, match="secure_aggregation"):
        build_settings(RunSettings, None, ["network.enabled=true", "privacy.secure_aggregation=true"])


def _run(extra: list[str], rounds: int = 1) -> tuple[Simulation, list[dict]]:
    sim = Simulation(build_spec(build_settings(RunSettings, None, [f"federation.rounds={rounds}", *SMALL, *extra])))
    return sim, [sim.run_round() for _ in range(rounds)]


def test_sim_seconds_of_identical_links_by_hand():
    """Every device has the medians (spread 0), no deadline: the round lasts until the slowest client's
    download + tau_k steps + upload, with tau_k = epochs * ceil(n_k / batch) and the row's measured bytes."""
    sim, (row,) = _run(["network.uplink_mbps=2.0", "network.downlink_mbps=8.0", "network.latency_ms=25.0",
                        "network.step_ms=4.0"])
    n = row["clients"]
    assert row["accepted"] == n and row["late"] == 0
    down, up = row["bytes_down"] / n, row["bytes_up"] / n  # dense: every client moves the same bytes
    batch = sim.spec.local.batch_size
    taus = [sim.spec.local.epochs * math.ceil(c.num_samples / batch) for c in sim.clients]
    expected = max(0.025 + 8 * down / 8e6 + tau * 0.004 + 8 * up / 2e6 + 0.025 for tau in taus)
    assert row["sim_seconds"] == pytest.approx(expected, rel=1e-9)
    settings = build_settings(RunSettings, None, ["federation.rounds=1", *SMALL])
    assert summarize(sim, settings, 0.0)["sim_seconds"] == row["sim_seconds"]


def test_rows_without_a_network_model_say_so():
    sim = Simulation(build_spec(build_settings(RunSettings, None, ["federation.rounds=1", *SMALL[:-1]])))
    assert sim.run_round()["sim_seconds"] is None


@pytest.mark.slow
def test_topk_compression_turns_late_clients_into_on_time_ones():
    """10 clients on log-normal links (median uplink 1 Mbit/s, spread 1), deadline 40 steps of 10 ms: dense
    uploads (about 19 KB) miss it on slow uplinks; top-1% uploads (under 0.4 KB) mostly make it."""
    net = ["network.uplink_mbps=1.0", "network.spread=1.0", "faults.deadline=40"]
    _, dense = _run(net, rounds=2)
    _, sparse = _run([*net, "compression.uplink=topk", "compression.fraction=0.01"], rounds=2)
    late_dense, late_sparse = sum(r["late"] for r in dense), sum(r["late"] for r in sparse)
    assert late_sparse < late_dense
    assert all(r["accepted"] + r["late"] == r["clients"] for r in dense + sparse)
    assert all(r["sim_seconds"] == pytest.approx(0.4) for r in dense if r["late"])
