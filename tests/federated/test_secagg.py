"""Secure aggregation (simulated Bonawitz et al. 2017): exact sums, dropouts, thresholds, masking, Shamir."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from spikefed.experiment.config import ConfigError, RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.secagg import (
    PRIME,
    SecAggClient,
    SecAggError,
    SecAggParams,
    decode_fixed_point,
    encode_fixed_point,
    fixed_point_bound,
    secure_sum,
    shamir_reconstruct,
    shamir_share,
    threshold_for,
)
from spikefed.federated.simulation import Simulation

BITS, SCALE = 32, 16


def _updates(n: int, d: int, seed: int = 0, std: float = 0.05) -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = sorted(np.random.default_rng(seed).choice(100, size=n, replace=False).tolist())
    return {u: torch.randn(d, generator=g, dtype=torch.float64) * std for u in ids}


def _encoded(updates: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    n = len(updates)
    return {u: encode_fixed_point(x, SCALE, BITS, summands=n) for u, x in updates.items()}


def _seeds(ids) -> dict[int, int]:
    return {u: 1000 + 7 * u for u in ids}


# ------------------------------------------------------------------------------------------ fixed point


def test_fixed_point_roundtrip_and_exact_integer_sum() -> None:
    x = torch.tensor([0.0, 1.0, -1.0, 0.123456789, -3.5e-6, 2.0**-17, -(2.0**-17)], dtype=torch.float64)
    v = encode_fixed_point(x, SCALE, BITS)
    assert v.dtype == torch.int64 and bool((v >= 0).all()) and bool((v < 2**BITS).all())
    back = decode_fixed_point(v, SCALE, BITS)
    assert torch.equal(back, torch.round(x * 2**SCALE) / 2**SCALE)  # round half to even, then exact
    assert float((back - x).abs().max()) <= 2.0 ** -(SCALE + 1)
    ups = _updates(7, 500)
    enc = _encoded(ups)
    total = torch.remainder(sum(enc.values()), 2**BITS)
    expected = sum(torch.round(x * 2**SCALE) for x in ups.values()) / 2**SCALE
    assert torch.equal(decode_fixed_point(total, SCALE, BITS), expected)


def test_fixed_point_overflow_is_refused() -> None:
    bound = fixed_point_bound(BITS, 10)
    ok = torch.tensor([bound / 2**SCALE], dtype=torch.float64)
    encode_fixed_point(ok, SCALE, BITS, summands=10)
    with pytest.raises(ValueError, match="fixed-point overflow"):
        encode_fixed_point(ok * 1.001, SCALE, BITS, summands=10)
    with pytest.raises(ValueError, match="non-finite"):
        encode_fixed_point(torch.tensor([float("nan")]), SCALE, BITS)


# --------------------------------------------------------------------------------------- the protocol


def test_unmasked_sum_equals_sum_of_encoded_updates_exactly() -> None:
    ups = _updates(8, 3000, seed=1)
    enc = _encoded(ups)
    res = secure_sum(enc, _seeds(enc), SecAggParams(threshold=5, dim=3000, bits=BITS))
    assert torch.equal(res.total, torch.remainder(sum(enc.values()), 2**BITS))
    assert res.survivors == sorted(enc) and res.dropped == []
    expected = sum(torch.round(x * 2**SCALE) for x in ups.values()) / 2**SCALE
    assert torch.equal(decode_fixed_point(res.total, SCALE, BITS), expected)
    # the server never saw a plain input
    for u, y in res.server_view.items():
        assert not torch.equal(y, enc[u])


@pytest.mark.parametrize("num_dropped", [1, 2, 3])
def test_dropouts_up_to_n_minus_t_keep_the_sum_exact(num_dropped: int) -> None:
    n, t, d = 8, 5, 2000
    enc = _encoded(_updates(n, d, seed=2))
    ids = sorted(enc)
    rng = np.random.default_rng(num_dropped)
    for _ in range(3):
        dropped = set(rng.choice(ids, size=num_dropped, replace=False).tolist())
        inputs = {u: (None if u in dropped else enc[u]) for u in ids}
        res = secure_sum(inputs, _seeds(ids), SecAggParams(threshold=t, dim=d, bits=BITS))
        survivors = [u for u in ids if u not in dropped]
        assert res.survivors == survivors and res.dropped == sorted(dropped)
        assert torch.equal(res.total, torch.remainder(sum(enc[u] for u in survivors), 2**BITS))


def test_survivors_dropping_before_unmasking_still_counted_if_t_answer() -> None:
    n, t, d = 6, 3, 100
    enc = _encoded(_updates(n, d, seed=3))
    ids = sorted(enc)
    inputs = {u: (None if u == ids[0] else enc[u]) for u in ids}
    res = secure_sum(inputs, _seeds(ids), SecAggParams(t, d, BITS), unmask_dropouts=ids[1:3])
    assert torch.equal(res.total, torch.remainder(sum(enc[u] for u in ids[1:]), 2**BITS))


def test_fewer_than_t_survivors_is_a_clear_error() -> None:
    n, t, d = 6, 4, 50
    enc = _encoded(_updates(n, d, seed=4))
    ids = sorted(enc)
    inputs = {u: (None if u in ids[:3] else enc[u]) for u in ids}  # 3 survivors < t = 4
    with pytest.raises(SecAggError, match="only 3 of 6 clients sent masked inputs, fewer than the threshold t=4"):
        secure_sum(inputs, _seeds(ids), SecAggParams(t, d, BITS))
    inputs = {u: (None if u == ids[0] else enc[u]) for u in ids}  # 5 survivors, but only 3 answer the unmasking
    with pytest.raises(SecAggError, match="only 3 survivors answered the unmasking request"):
        secure_sum(inputs, _seeds(ids), SecAggParams(t, d, BITS), unmask_dropouts=ids[1:3])
    with pytest.raises(SecAggError, match="exceeds the cohort"):
        secure_sum(enc, _seeds(ids), SecAggParams(n + 1, d, BITS))


def test_a_masked_update_is_uncorrelated_with_the_true_one() -> None:
    d = 10_000
    ups = _updates(5, d, seed=5, std=1.0)
    enc = {u: encode_fixed_point(x, 20, BITS, summands=5) for u, x in ups.items()}
    res = secure_sum(enc, _seeds(enc), SecAggParams(3, d, BITS))
    for u, y in res.server_view.items():
        true = decode_fixed_point(enc[u], 20, BITS).numpy()
        corr = np.corrcoef(true, y.double().numpy())[0, 1]
        assert abs(corr) < 0.05, (u, corr)
        # and the masked words look uniform on [0, 2^32): mean 2^31, std 2^32 / sqrt(12)
        assert abs(float(y.double().mean()) / 2**31 - 1) < 0.03
        assert abs(float(y.double().std()) / (2**32 / 12**0.5) - 1) < 0.03


def test_pairwise_seeds_agree_and_a_client_never_reveals_both_shares() -> None:
    prm = SecAggParams(2, 10, BITS)
    a, b = SecAggClient(3, 11, prm), SecAggClient(8, 12, prm)
    assert a.pairwise_seed(b.public_key) == b.pairwise_seed(a.public_key)
    assert a.pairwise_seed(b.public_key) != a.pairwise_seed(SecAggClient(9, 13, prm).public_key)
    for sender in (a, b):
        for v, pair in sender.share_keys([3, 8]).items():
            (a if v == 3 else b).receive_shares(sender.client_id, pair)
    a.unmasking_shares(dropped=[8], survivors=[3])
    with pytest.raises(SecAggError, match="refusing to reveal both"):
        a.unmasking_shares(dropped=[], survivors=[8])  # b's self-mask share after its key share
    with pytest.raises(SecAggError, match="refusing to reveal both"):
        a.unmasking_shares(dropped=[3], survivors=[3])


def test_threshold_rule() -> None:
    assert threshold_for(10, 0.5) == 6  # strictly more than half
    assert threshold_for(10, 0.0) == 1
    assert threshold_for(3, 0.99) == 3
    assert threshold_for(7, 0.5) == 4
    with pytest.raises(ValueError):
        threshold_for(10, 1.0)


# ---------------------------------------------------------------------------------------------- Shamir


def test_shamir_any_t_shares_reconstruct() -> None:
    rng = np.random.default_rng(0)
    secret = 123456789123456789123456789 % PRIME
    xs = [1, 2, 5, 9, 11, 12]
    shares = shamir_share(secret, xs, 3, rng)
    for subset in itertools.combinations(xs, 3):
        assert shamir_reconstruct({x: shares[x] for x in subset}) == secret
    assert shamir_reconstruct(shares) == secret  # more than t shares: still the secret
    # t - 1 shares give an unrelated value
    for subset in itertools.combinations(xs, 2):
        assert shamir_reconstruct({x: shares[x] for x in subset}) != secret


def test_shamir_t_minus_1_shares_leave_every_secret_equally_likely() -> None:
    """Over a small field, enumerate all polynomials: given t - 1 shares, each candidate secret is consistent
    with exactly the same number of polynomials (one), so the shares carry no information about it."""
    p, t = 13, 3
    rng = np.random.default_rng(1)
    shares = shamir_share(7, [2, 5, 6, 9], t, rng, prime=p)
    seen = {x: shares[x] for x in (2, 9)}  # t - 1 = 2 shares
    counts = dict.fromkeys(range(p), 0)
    for s, a1, a2 in itertools.product(range(p), repeat=3):
        if all((s + a1 * x + a2 * x * x) % p == y for x, y in seen.items()):
            counts[s] += 1
    assert set(counts.values()) == {1}
    # ... while t shares pin it down
    assert shamir_reconstruct({x: shares[x] for x in (2, 5, 9)}, prime=p) == 7


def test_shamir_argument_checks() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="threshold"):
        shamir_share(1, [1, 2], 3, rng)
    with pytest.raises(ValueError, match="distinct and non-zero"):
        shamir_share(1, [1, 1, 2], 2, rng)
    with pytest.raises(ValueError, match="distinct and non-zero"):
        shamir_reconstruct({0: 5})


# ------------------------------------------------------------------------------------------ integration


def _small(*overrides: str) -> RunSettings:
    base = ["partition.num_clients=6", "partition.min_size=5", "federation.rounds=2", "federation.fraction=0.5",
            "model.hidden=[24]", "local.num_steps=5", "local.epochs=1"]
    return build_settings(RunSettings, None, base + list(overrides))


def test_secure_fedavg_matches_plain_fedavg_up_to_fixed_point_rounding() -> None:
    plain = Simulation(build_spec(_small()))
    secure = Simulation(build_spec(_small("privacy.secure_aggregation=true", "privacy.secagg_scale_bits=20")))
    for _ in range(2):
        rp, rs = plain.run_round(), secure.run_round()
        assert rs["secagg_survivors"] == rs["clients"] == 3 and rs["secagg_threshold"] == 2
        assert rs["bytes_up"] > 0 and rs["bytes_up"] != rp["bytes_up"]  # masked words + keys + shares
    for n, w in plain.state.global_params.items():
        # sample-weighted mean from n_k Delta_k and sum n_k: equal up to 2^-21 per coordinate (and float32)
        assert torch.allclose(secure.state.global_params[n], w, atol=5e-6), n


def test_secure_round_with_too_few_survivors_is_aborted_and_logged() -> None:
    sim = Simulation(build_spec(_small("privacy.secure_aggregation=true", "privacy.secagg_scale_bits=52")))
    before = {n: t.clone() for n, t in sim.state.global_params.items()}
    row = sim.run_round()  # every client's values overflow the fixed-point range: all withdraw
    assert row["accepted"] == 0 and row["rejected"] == 3
    assert all("fixed-point overflow" in r["reason"] for r in row["rejections"])
    assert "fewer than the threshold" in row["secagg_aborted"]
    assert row["bytes_up"] == 0  # every client withdrew before sending a masked vector
    assert all(torch.equal(sim.state.global_params[n], before[n]) for n in before)


@pytest.mark.parametrize("override,needle", [
    ("compression.uplink=topk", "compression.uplink=none"),
    ("robustness.defense=median", "robustness.defense=none"),
    ("federation.strategy=scaffold", "scaffold"),
])
def test_secure_aggregation_refuses_incompatible_settings(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        _small("privacy.secure_aggregation=true", override)
