"""Per-client state at scale: error-feedback residuals of every client in one compact store, kept in files under
the run directory, checkpointed by reference, and a resumed run that continues exactly.

Run:  .venv/bin/python examples/client_state_scale.py
"""

import os
import tempfile
from pathlib import Path

import torch

from spikefed.experiment.config import RunSettings, build_settings
from spikefed.experiment.runner import Run
from spikefed.federated.checkpoint import read_checkpoint
from spikefed.federated.client_state import STATE_DIR

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code
ROUNDS = 3 if SMALL else 10


def settings(rounds: int) -> RunSettings:
    return build_settings(RunSettings, None, [
        "partition.num_clients=300", "partition.method=iid", "federation.fraction=0.2", f"federation.rounds={rounds}",
        "federation.eval_every=5", "model.hidden=[32]", "local.num_steps=10", "local.epochs=1",
        "compression.uplink=topk", "compression.fraction=0.05",  # every sampled client keeps a residual
        "federation.client_state_memory_mb=0",  # in files from the first write (default: above 256 MiB)
    ])


with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "run"
    run = Run(settings(ROUNDS - 1), out)
    while not run.done:
        run.step()
    store = run.sim.state.client_state
    print(f"after {run.sim.state.round} rounds: {len(store)} of 300 clients hold a residual; in files: "
          f"{store.in_file}, resident rows: {store.resident_bytes} bytes")
    for f in sorted((out / STATE_DIR).iterdir()):
        print(f"  {f.relative_to(out)}: {f.stat().st_size:,} bytes")
    node = read_checkpoint(out / "checkpoint.pt")["client_state"]["kinds"]["ef_residual"]
    print(f"checkpoint references {len(node['clients'])} rows of {node['file']} (CRC-32 each), copies none")
    store.close()

    resumed = Run(settings(ROUNDS), out, resume=True)  # one more round, continuing from the files
    row = resumed.step()
    print(f"resumed round {row['round']}: accuracy {row['accuracy']}, {row['bytes_up']:,} bytes up")
    c = next(iter(resumed.sim.state.client_state))
    residual = resumed.sim.state.client_state[c]["ef_residual"]
    print(f"client {c}'s residual: {sum(t.numel() for t in residual.values())} values, norm "
          f"{torch.cat([t.reshape(-1) for t in residual.values()]).norm():.4f}")
    resumed.sim.state.client_state.close()
