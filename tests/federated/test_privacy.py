"""Client-level DP (DP-FedAvg, adaptive clipping) and its accounting, against independent references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import norm

from spikefed.experiment.config import ConfigError, RunSettings, build_settings
from spikefed.experiment.runner import build_spec, run_experiment
from spikefed.federated.privacy import (
    RDP_ORDERS,
    PrivacyAccountant,
    PrivacyEngine,
    PrivacySpec,
    clip_deltas,
    dp_noised_mean,
    effective_noise_multiplier,
    next_clip,
    noised_unclipped_fraction,
)
from spikefed.federated.simulation import Simulation
from spikefed.federated.strategies import make_strategy
from spikefed.federated.types import ClientUpdate

# ---------------------------------------------------------------------------------------------- clipping


def test_clipped_norm_is_min_of_norm_and_clip() -> None:
    g = torch.Generator().manual_seed(0)
    deltas = torch.randn(50, 300, generator=g, dtype=torch.float64) * torch.logspace(-2, 1, 50,
                                                                                    dtype=torch.float64)[:, None]
    deltas[0] = 0.0
    clip = 2.5
    clipped, norms = clip_deltas(deltas, clip)
    assert torch.equal(norms, torch.linalg.vector_norm(deltas, dim=1))
    new = torch.linalg.vector_norm(clipped, dim=1)
    expected = torch.minimum(norms, torch.tensor(clip, dtype=torch.float64))
    assert torch.allclose(new, expected, rtol=1e-14, atol=0)
    small = norms <= clip
    assert small.any() and (~small).any()
    assert torch.equal(clipped[small], deltas[small])  # unclipped rows: bit for bit
    # direction kept: clipped rows are positive multiples of the originals
    cos = (clipped * deltas).sum(1)[~small] / (new[~small] * norms[~small])
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-12)


def test_noise_std_matches_z_clip_over_m() -> None:
    d, z, clip, m = 200_000, 1.3, 0.7, 5
    spec = PrivacySpec(dp=True, clip=clip, noise_multiplier=z)
    gen = torch.Generator().manual_seed(3)
    step = dp_noised_mean(torch.zeros(d, dtype=torch.float64), 0.0, m, m, clip, spec, 0.0, gen)
    assert step.noise_std == pytest.approx(z * clip / m)
    std = float(step.mean_delta.std())
    assert std == pytest.approx(z * clip / m, rel=0.01)  # sampling error of the std ~ 1 / sqrt(2 d) = 0.16%
    assert abs(float(step.mean_delta.mean())) < 5 * z * clip / m / math.sqrt(d)
    # the sum of clipped deltas passes through: mean = (sum + noise) / m
    s = torch.arange(d, dtype=torch.float64)
    step2 = dp_noised_mean(s, 0.0, m, m, clip, spec, 0.0, torch.Generator().manual_seed(3))
    assert torch.allclose(step2.mean_delta, s / m + step.mean_delta, atol=1e-9)
    # z = 0: no noise, no draw
    exact = dp_noised_mean(s, 0.0, m, m, clip, PrivacySpec(dp=True, noise_multiplier=0.0), 0.0, gen)
    assert torch.equal(exact.mean_delta, s / m)


@pytest.mark.parametrize("target", [0.3, 0.5, 0.8])
def test_adaptive_clip_converges_to_the_target_quantile(target: float) -> None:
    """Andrew et al. 2021: C <- C exp(-eta (b~ - gamma)) settles at the gamma-quantile of the norm distribution."""
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    sample = lambda k: np.exp(rng.normal(0.0, 0.7, size=k))  # noqa: E731 - log-normal update norms
    m, clip, history = 100, 20.0, []
    for _ in range(600):
        norms = sample(m)
        frac = noised_unclipped_fraction(float((norms <= clip).sum()), m, m, m / 20, gen)
        clip = next_clip(clip, frac, target, 0.2)
        history.append(clip)
    settled = float(np.mean(history[-200:]))
    population = sample(200_000)
    assert np.mean(population <= settled) == pytest.approx(target, abs=0.05)
    assert float(np.quantile(population, target)) == pytest.approx(settled, rel=0.12)


def test_effective_noise_multiplier() -> None:
    assert effective_noise_multiplier(1.0, 0.5, adaptive=False) == 1.0
    assert effective_noise_multiplier(1.0, 0.5, adaptive=True) == pytest.approx(1 / math.sqrt(2))
    assert effective_noise_multiplier(2.0, 10.0, adaptive=True) == pytest.approx((0.25 + 1 / 400) ** -0.5)
    assert effective_noise_multiplier(1.0, 0.0, adaptive=True) == 0.0  # noiseless count: no guarantee
    assert effective_noise_multiplier(0.0, 1.0, adaptive=True) == 0.0


# -------------------------------------------------------------------------------------------- accounting


def _rdp_epsilon_by_hand(rounds: int, z: float, delta: float) -> tuple[float, float]:
    """q = 1: RDP(alpha) = R alpha / (2 z^2) exactly. Returns (improved conversion (Balle et al. 2020, as
    dp-accounting), classic conversion RDP + log(1/delta) / (alpha - 1)), both minimised over RDP_ORDERS."""
    improved, classic = math.inf, math.inf
    for a in RDP_ORDERS:
        rdp = rounds * a / (2 * z * z)
        classic = min(classic, rdp + math.log(1 / delta) / (a - 1))
        improved = min(improved, rdp + math.log1p(-1 / a) - math.log(delta * a) / (a - 1))
    return max(improved, 0.0), classic


def _analytic_gaussian_epsilon(mu: float, delta: float) -> float:
    """Exact epsilon of the Gaussian mechanism with sensitivity / sigma = mu (Balle & Wang 2018, Theorem 8):
    delta(eps) = Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu)."""
    f = lambda eps: norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * norm.cdf(-mu / 2 - eps / mu) - delta  # noqa: E731
    return brentq(f, 0.0, 500.0, xtol=1e-12)


@pytest.mark.parametrize("rounds,z", [(1, 1.0), (10, 1.0), (30, 2.0), (100, 5.0), (5, 0.7)])
def test_rdp_epsilon_without_subsampling_matches_the_analytic_rdp(rounds: int, z: float) -> None:
    delta = 1e-5
    acc = PrivacyAccountant(z, 1.0, "rdp")
    eps = acc.epsilon(rounds, delta)
    improved, classic = _rdp_epsilon_by_hand(rounds, z, delta)
    assert eps == pytest.approx(improved, rel=1e-9)
    assert eps <= classic
    # R Gaussian mechanisms compose to one with mu = sqrt(R) / z: exact epsilon as a lower reference
    exact = _analytic_gaussian_epsilon(math.sqrt(rounds) / z, delta)
    assert exact <= eps <= 1.6 * exact + 0.5
    pld = PrivacyAccountant(z, 1.0, "pld").epsilon(rounds, delta)
    assert exact - 1e-6 <= pld <= exact * 1.01 + 1e-3  # PLD is (pessimistically) near-exact


def test_accountant_monotonicity_and_edge_cases() -> None:
    acc = PrivacyAccountant(1.0, 0.1, "rdp")
    eps = [acc.epsilon(r, 1e-5) for r in (0, 1, 5, 20, 50)]
    assert eps[0] == 0.0 and all(a < b for a, b in zip(eps, eps[1:]))
    assert PrivacyAccountant(2.0, 0.1).epsilon(20, 1e-5) < eps[3]  # more noise, less epsilon
    assert PrivacyAccountant(1.0, 0.5).epsilon(20, 1e-5) > eps[3]  # more sampling, more epsilon
    assert PrivacyAccountant(1.0, 1.0).epsilon(20, 1e-5) > PrivacyAccountant(1.0, 0.5).epsilon(20, 1e-5)
    assert acc.epsilon(20, 1e-3) < eps[3]
    assert PrivacyAccountant(0.0, 0.1).epsilon(3, 1e-5) == math.inf
    fixed = PrivacyAccountant(1.0, 0.5, "rdp_fixed_size", population=20, cohort=10)
    assert fixed.epsilon(10, 1e-5) > PrivacyAccountant(1.0, 0.5).epsilon(10, 1e-5)  # replace-one is stronger
    with pytest.raises(ValueError, match="population"):
        PrivacyAccountant(1.0, 0.5, "rdp_fixed_size")
    with pytest.raises(ValueError, match="sampling_rate"):
        PrivacyAccountant(1.0, 0.0)


def test_privacy_spec_validation() -> None:
    for kwargs, needle in [({"clip": 0.0}, "clip"), ({"target_quantile": 1.0}, "target_quantile"),
                           ({"noise_multiplier": -1.0}, "noise_multiplier"), ({"delta": 0.0}, "delta"),
                           ({"accountant": "moments"}, "accountant"), ({"secagg_bits": 64}, "secagg_bits")]:
        with pytest.raises(ValueError, match=needle):
            PrivacySpec(dp=True, **kwargs)


# ------------------------------------------------------------------------------------------- the engine


def _toy_round(k: int = 4, scale: float = 1.0):
    g = torch.Generator().manual_seed(0)
    glob = {"w": torch.randn(5, 3, generator=g), "b": torch.randn(3, generator=g)}
    deltas = [{n: torch.randn(t.shape, generator=g) * scale for n, t in glob.items()} for _ in range(k)]
    updates = [ClientUpdate(i, 10 * (i + 1), {n: glob[n] + d[n] for n in glob}) for i, d in enumerate(deltas)]
    return glob, deltas, updates


def test_dp_aggregate_is_uniform_mean_of_clipped_deltas_applied_by_the_strategy() -> None:
    glob, deltas, updates = _toy_round()
    cohort = [0, 1, 2, 3, 7]  # client 7 was sampled but sent nothing: the denominator stays m = 5
    engine = PrivacyEngine(PrivacySpec(dp=True, clip=1.5, noise_multiplier=0.0), 10, 5)
    out = engine.aggregate(1, make_strategy("fedavg"), glob, updates, cohort, {}, None,
                           torch.Generator().manual_seed(0), {})
    flat = [torch.cat([d[n].double().reshape(-1) for n in glob]) for d in deltas]
    clipped = [f * min(1.0, 1.5 / float(f.norm())) for f in flat]
    mean = sum(clipped) / 5  # uniform, not weighted by num_samples
    got = torch.cat([(out.params[n].double() - glob[n].double()).reshape(-1) for n in glob])
    assert torch.allclose(got, mean, atol=1e-6)
    assert out.state == {"clip": 1.5, "rounds": 1} and out.row["dp_epsilon"] == math.inf
    # a server optimizer gets -mean as its pseudo-gradient: FedAvg with server_lr 0.5 moves half way
    half = engine.aggregate(1, make_strategy("fedavg", server_lr=0.5), glob, updates, cohort, {}, None,
                            torch.Generator().manual_seed(0), {})
    got_half = torch.cat([(half.params[n].double() - glob[n].double()).reshape(-1) for n in glob])
    assert torch.allclose(got_half, mean / 2, atol=1e-6)


def test_same_seed_same_noise_and_scaffold_is_refused() -> None:
    glob, _, updates = _toy_round()
    engine = PrivacyEngine(PrivacySpec(dp=True, clip=1.0, noise_multiplier=1.0), 10, 4)
    run = lambda seed: engine.aggregate(1, make_strategy("fedavg"), glob, updates, [0, 1, 2, 3], {}, None,  # noqa: E731
                                        torch.Generator().manual_seed(seed), {}).params
    a, b, c = run(5), run(5), run(6)
    assert all(torch.equal(a[n], b[n]) for n in glob) and not torch.equal(a["w"], c["w"])
    with pytest.raises(ValueError, match="SCAFFOLD"):
        engine.aggregate(1, make_strategy("scaffold", num_clients=10), glob, updates, [0, 1, 2, 3], {}, None,
                         torch.Generator().manual_seed(0), {})


def _small(*overrides: str) -> RunSettings:
    base = ["partition.num_clients=6", "partition.min_size=5", "federation.fraction=0.5", "model.hidden=[24]",
            "local.num_steps=5", "local.epochs=1", "privacy.dp=true", "privacy.noise_multiplier=1.0",
            "privacy.clip=0.5"]
    return build_settings(RunSettings, None, base + list(overrides))


def test_dp_run_end_to_end_reports_increasing_epsilon_and_the_budget(tmp_path) -> None:
    settings = _small("federation.rounds=3", "privacy.adaptive_clip=true", "privacy.clip_count_stddev=1.0")
    summary = run_experiment(settings, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    eps = [r["dp_epsilon"] for r in rows]
    assert all(0 < a < b for a, b in zip(eps, eps[1:]))
    assert rows[0]["dp_clip"] == 0.5 and rows[1]["dp_clip"] != 0.5  # the clip adapts
    p = summary["privacy"]
    z_eff = (1.0 + 1 / 4.0) ** -0.5  # z = 1, sigma_b = 1
    assert p["effective_noise_multiplier"] == pytest.approx(z_eff)
    assert p["epsilon"] == pytest.approx(eps[-1]) and p["rounds_composed"] == 3 and p["delta"] == 1e-5
    assert p["sampling_rate"] == 0.5 and p["cohort"] == 3 and p["final_clip"] != 0.5
    assert p["epsilon"] == pytest.approx(PrivacyAccountant(z_eff, 0.5).epsilon(3, 1e-5))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["privacy"]["epsilon"] == pytest.approx(eps[-1])
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Privacy" in html and "epsilon" in html


def test_resumed_dp_run_with_secure_aggregation_is_bit_identical(tmp_path) -> None:
    settings = _small("federation.rounds=4", "privacy.adaptive_clip=true", "privacy.secure_aggregation=true")
    a = Simulation(build_spec(settings))
    rows_a = [a.run_round() for _ in range(4)]
    b = Simulation(build_spec(settings))
    for _ in range(2):
        b.run_round()
    ckpt = tmp_path / "c.pt"
    b.save_checkpoint(ckpt)
    c = Simulation(build_spec(settings))
    c.load_checkpoint(ckpt)
    assert c.state.server_state["privacy"]["rounds"] == 2
    rows_c = [c.run_round() for _ in range(2)]
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [strip(r) for r in rows_a[2:]] == [strip(r) for r in rows_c]
    assert all(torch.equal(a.state.global_params[n], c.state.global_params[n]) for n in a.state.global_params)
    assert a.state.server_state["privacy"] == c.state.server_state["privacy"]


@pytest.mark.parametrize("override,needle", [
    ("federation.strategy=scaffold", "scaffold"),
    ("robustness.defense=krum", "robustness.defense=none"),
])
def test_dp_refuses_incompatible_settings(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        _small(override)


def test_privacy_off_changes_nothing() -> None:
    s = build_settings(RunSettings, None, ["partition.num_clients=6", "partition.min_size=5"])
    assert s.privacy.to_spec() is None
