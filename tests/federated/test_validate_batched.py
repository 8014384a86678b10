"""Batched round validation makes the same decisions, with the same messages, as per-update validation."""

from __future__ import annotations

import torch

from spikefed.federated.aggregation import InvalidUpdate, validate_update, validate_updates
from spikefed.federated.types import ClientUpdate
from spikefed.manifold import POSITIVE, circular


def _ref() -> dict[str, torch.Tensor]:
    return {"w": torch.zeros(3, 2), "thr": torch.ones(4), "d": torch.full((2,), 1.0)}


def test_batched_validation_matches_per_update() -> None:
    ref = _ref()
    manifolds = {"thr": POSITIVE, "d": circular(5.0)}
    good = lambda: {k: v.clone() + 0.01 for k, v in ref.items()}  # noqa: E731
    cases = []
    cases.append(ClientUpdate(0, 10, good()))
    p = good()
    p["w"][1, 1] = float("nan")
    cases.append(ClientUpdate(1, 10, p))
    p = good()
    p["thr"][0] = -1.0
    cases.append(ClientUpdate(2, 10, p))
    p = good()
    p["w"] = torch.zeros(2, 3)
    cases.append(ClientUpdate(3, 10, p))
    p = good()
    del p["d"]
    cases.append(ClientUpdate(4, 10, p))
    p = good()
    p["w"] = p["w"].long()
    cases.append(ClientUpdate(5, 10, p))
    cases.append(ClientUpdate(6, 0, good()))
    p = good()
    p["w"] += 100.0
    cases.append(ClientUpdate(7, 10, p))
    inf_control = {k: torch.full_like(v, float("inf")) for k, v in ref.items()}
    cases.append(ClientUpdate(8, 10, good(), control_delta=inf_control))
    p = good()
    p["d"] = torch.tensor([4.99, 0.0])
    cases.append(ClientUpdate(9, 10, p))  # wraps: small norm
    accepted, rejected = validate_updates(cases, ref, max_norm=10.0, manifolds=manifolds)
    expected_ok, expected_bad = [], {}
    for u in cases:
        try:
            validate_update(u, ref, max_norm=10.0, manifolds=manifolds)
            expected_ok.append(u.client_id)
        except InvalidUpdate as e:
            expected_bad[u.client_id] = str(e)
    assert [u.client_id for u in accepted] == expected_ok == [0, 9]
    assert {e.client_id: str(e) for e in rejected} == expected_bad
    # a repeated client id is refused
    accepted, rejected = validate_updates([cases[0], ClientUpdate(0, 5, good())], ref)
    assert len(accepted) == 1 and "duplicate" in str(rejected[0])
