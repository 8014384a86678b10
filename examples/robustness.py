"""Malicious clients and robust aggregation from Python: boosting and sign flipping against FedAvg, the
median and FLTrust.

Two of ten clients multiply their update by 10 before uplink. Plain FedAvg averages the boosted updates in;
the coordinate-wise median ignores them. Then the same two clients flip the sign of their update: FLTrust
(the server trains on 100 clean training samples of its own and trusts an update by its cosine with that
reference) gives them zero weight. In the last run they send NaN/Inf values instead: the server's validation
rejects those updates (and logs client, round and reason) before any aggregation.

Run:  .venv/bin/python examples/robustness.py
"""

import os

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.simulation import Simulation

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

BASE = ["partition.num_clients=10", "federation.fraction=1.0", f"federation.rounds={2 if SMALL else 4}",
        "model.hidden=[64]", "local.num_steps=10", f"local.epochs={1 if SMALL else 2}",
        "robustness.attack_fraction=0.2"]

for attack, defense in [("none", "none"), ("boost", "none"), ("boost", "median"), ("sign_flip", "none"),
                        ("sign_flip", "fltrust"), ("nan", "none")]:
    settings = build_settings(RunSettings, None, BASE + [f"robustness.attack={attack}", f"robustness.defense={defense}",
                                                         "robustness.boost=10"])
    sim = Simulation(build_spec(settings))
    rows = [sim.run_round() for _ in range(settings.federation.rounds)]
    print(f"attack {attack:9s} defence {defense:7s}: malicious clients {sorted(sim.malicious)}, "
          f"accuracy per round {[round(r['accuracy'], 3) for r in rows]}")
    for r in rows[:1]:
        for rejection in r.get("rejections", []):
            print(f"    rejected in round {rejection['round']}: {rejection['reason']}")
