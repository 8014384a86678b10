"""DGC momentum correction + factor masking on the uplink (spikefed.federated.dgc), against the recurrence
written out here with numpy top-k, and in a federated run (metrics, checkpointed velocity)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.compression import EF_KEY, decompress, error_feedback_step, make_compressor
from spikefed.federated.dgc import VELOCITY_KEY, energy_kept, momentum_correction_step
from spikefed.federated.simulation import Simulation


def _numpy_topk(v: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest |v_i| (no ties in the test data)."""
    out = np.zeros_like(v)
    idx = np.argsort(-np.abs(v))[:k]
    out[idx] = v[idx]
    return out


def test_recurrence_matches_plain_dgc() -> None:
    rng = np.random.default_rng(0)
    m, n, k = 0.9, 200, 6  # top-3% of 200 coordinates -> ceil(6) = 6
    comp = make_compressor("topk", 0.03)
    u_ref, v_ref = np.zeros(n), np.zeros(n)
    u = v = None
    for _ in range(12):
        delta = (rng.normal(size=n) + 0.3).astype(np.float32).astype(np.float64)  # a drift plus noise
        u_ref = m * u_ref + delta
        v_ref = v_ref + u_ref
        sent_ref = _numpy_topk(v_ref, k)
        mask = sent_ref != 0
        v_ref = np.where(mask, 0.0, v_ref)
        u_ref = np.where(mask, 0.0, u_ref)
        msg, u, v = momentum_correction_step({"w": torch.from_numpy(delta).float()}, u, v, comp, None, m)
        sent = decompress(msg)["w"].double().numpy()
        assert np.array_equal(sent != 0, mask)  # the same kept set
        assert np.allclose(sent, sent_ref, rtol=1e-5, atol=1e-5)
        assert np.allclose(u["w"].numpy(), u_ref, rtol=1e-4, atol=1e-4)
        assert np.allclose(v["w"].numpy(), v_ref, rtol=1e-4, atol=1e-4)


def test_zero_momentum_is_plain_error_feedback() -> None:
    gen = torch.Generator().manual_seed(0)
    comp = make_compressor("topk", 0.1)
    e = u = v = None
    for _ in range(5):
        delta = {"a": torch.randn(30, generator=gen), "b": torch.randn(4, 5, generator=gen)}
        msg_ef, e = error_feedback_step(delta, e, comp)
        msg, u, v = momentum_correction_step(delta, u, v, comp, None, 0.0)
        assert all(torch.equal(decompress(msg)[n], decompress(msg_ef)[n]) for n in delta)
        assert all(torch.equal(v[n], e[n]) for n in delta)


def test_bad_state_and_momentum_are_refused() -> None:
    comp = make_compressor("topk", 0.1)
    d = {"a": torch.ones(5)}
    with pytest.raises(ValueError, match="velocity"):
        momentum_correction_step(d, {"a": torch.ones(4)}, None, comp, None, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        momentum_correction_step(d, None, None, comp, None, 1.0)


def test_energy_kept_is_the_sent_share() -> None:
    assert energy_kept({"a": torch.tensor([3.0, 0.0])}, {"a": torch.tensor([0.0, 4.0])}) == pytest.approx(9 / 25)


def test_run_reports_energy_and_keeps_the_velocity() -> None:
    over = ["partition.num_clients=4", "partition.min_size=5", "federation.rounds=3", "federation.fraction=1.0",
            "model.hidden=[16]", "local.num_steps=4", "local.epochs=1", "compression.uplink=topk",
            "compression.fraction=0.05", "compression.momentum_correction=0.9"]
    sim = Simulation(build_spec(build_settings(RunSettings, None, over)))
    rows = [sim.run_round() for _ in range(3)]
    for row in rows:
        assert 0.0 < row["uplink_energy_kept"] < 1.0 and row["uplink_residual_ratio"] > 0.0
    held = sim.state.client_state[0]
    assert set(held) >= {VELOCITY_KEY, EF_KEY}
    # with a velocity the accumulator differs from plain error feedback's residual
    plain = Simulation(build_spec(build_settings(RunSettings, None, [*over[:-1]])))
    for _ in range(3):
        plain.run_round()
    name = next(iter(held[EF_KEY]))
    assert not torch.equal(plain.state.client_state[0][EF_KEY][name], held[EF_KEY][name])
