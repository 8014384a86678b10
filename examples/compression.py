"""Update compression: what each compressor sends and costs, then a short federated run with top-1% + EF.

Run:  .venv/bin/python examples/compression.py
"""

import os

import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import build_spec
from spikefed.federated.compression import decode_update, encode_message, error_feedback_step, make_compressor
from spikefed.federated.serialization import encode_params
from spikefed.federated.simulation import Simulation

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

# 1. one update of the shape of the default spiking MLP (64-256-10), through each compressor
g = torch.Generator().manual_seed(0)
shapes = {"linears.0.weight": (256, 64), "linears.0.bias": (256,), "linears.1.weight": (10, 256),
          "linears.1.bias": (10,)}
delta = {n: torch.randn(s, generator=g) * 1e-2 for n, s in shapes.items()}
dense = len(encode_params(delta))
norm = torch.cat([t.reshape(-1) for t in delta.values()]).norm()
print(f"dense payload: {dense:,} bytes")
for name in ("topk", "randomk", "sign", "qsgd8", "qsgd4", "topk+qsgd8"):
    payload = encode_message(make_compressor(name, fraction=0.01).compress(delta, g))
    received = decode_update(payload)
    err = torch.cat([(received[n] - delta[n]).reshape(-1) for n in delta]).norm() / norm
    print(f"{name:>11}: {len(payload):6,} bytes ({dense / len(payload):6.1f}x fewer), relative error {err:.3f}")

# 2. error feedback: what top-1% leaves out now is carried over and sent later
c = make_compressor("topk", fraction=0.01)
residual, sent = None, {n: torch.zeros_like(t) for n, t in delta.items()}
for _ in range(5):
    message, residual = error_feedback_step(delta, residual, c)
    for n, t in decode_update(encode_message(message)).items():
        sent[n] += t
gap = max(float((sent[n] + residual[n] - 5 * delta[n]).abs().max()) for n in delta)
print(f"after 5 EF steps: sent + residual - 5 delta = {gap:.1e} (nothing is lost, only delayed)")

# 3. a short federated run: top-1% + error feedback on the uplink, top-10% on the downlink; local SGD, whose
#    updates top-k compresses far better than Adam's (see docs/compression.md)
settings = build_settings(RunSettings, None, [
    "partition.num_clients=10", "federation.rounds=8", "local.num_steps=10",
    "local.optimizer=sgd", "local.lr=0.002", "local.momentum=0.0", "local.epochs=5",
    "compression.uplink=topk", "compression.fraction=0.01", "compression.error_feedback=true",
    "compression.downlink=topk", "compression.downlink_fraction=0.1",
] + (["federation.rounds=2", "local.epochs=1"] if SMALL else []))
sim = Simulation(build_spec(settings))
for _ in range(settings.federation.rounds):
    row = sim.run_round()
    print(f"round {row['round']}  accuracy {row['accuracy']:.4f}  uplink {row['bytes_up']:,} B  "
          f"downlink {row['bytes_down']:,} B")
