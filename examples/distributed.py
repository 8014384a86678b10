"""One run on 2 torchrun processes against the same run in one process (docs/distributed.md).

    torchrun --standalone --nproc_per_node 2 -m spikefed run --set federation.rounds=3 --out DIR

splits each round's trained clients across the 2 ranks (gloo on CPU) and writes the same summary.json, metrics and
checkpoint as ``spikefed run`` does in one process. This script runs both, compares them, then continues the
torchrun run for two more rounds with ``--resume`` (a resumed run may use any number of processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI: a smaller federation, same steps
ARGS = ["--set", "federation.rounds=3"] + (["--set", "partition.num_clients=10", "--set", "model.hidden=[32]",
                                             "--set", "local.epochs=1"] if SMALL else [])
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def spikefed(*args: str, launcher: list[str] | None = None) -> dict:
    cmd = (launcher or [sys.executable]) + ["-m", "spikefed", "run", *args, "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per process (torchrun sets it for its ranks too)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="spikefed-distributed-"))
    one = spikefed(*ARGS, "--out", str(work / "one"))
    two = spikefed(*ARGS, "--out", str(work / "two"), launcher=TORCHRUN)
    print(f"{'':24} {'1 process':>12} {'2 processes':>12}")
    for key in ("final_accuracy", "total_bytes_up", "rounds", "wall_seconds"):
        print(f"{key:24} {one[key]:>12.4f} {two[key]:>12.4f}" if isinstance(one[key], float)
              else f"{key:24} {one[key]:>12} {two[key]:>12}")
    same = all(one[k] == two[k] for k in ("final_accuracy", "total_bytes_up", "total_bytes_down"))
    print(f"same accuracy and bytes: {same}")
    more = spikefed("--resume", str(work / "two"), "--set", "federation.rounds=5", launcher=TORCHRUN)
    print(f"resumed on 2 processes to round {more['rounds']}: accuracy {more['final_accuracy']:.4f} "
          f"(sessions: {more['sessions']}); run directory {work / 'two'}")
    if not same:
        raise SystemExit("the 2-process run differs from the 1-process run")


if __name__ == "__main__":
    main()
