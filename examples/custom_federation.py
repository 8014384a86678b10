"""Federate your own model, data set and strategy from Python (docs/api.md), then load the trained model back.

Run:  .venv/bin/python examples/custom_federation.py  [--out DIR]
      (SPIKEFED_EXAMPLE_SMALL=1 runs a small version, as CI does)

- the data: scikit-learn's wine data set (13 features, 3 classes), standardised, split 75/25;
- the model: a plain torch module with two spikefed LIF layers that returns the output spikes of every step as
  one tensor [T, B, 3] (no spikefed model class needed);
- the strategy: coordinate-wise median of the clients' parameters (the ``aggregate`` hook) followed by a damped
  server step (the ``server_step`` hook), registered under a name and picked in the settings like a built-in.
"""

import argparse
import os
import tempfile

import numpy as np
import torch
from sklearn.datasets import load_wine
from torch import nn

import spikefed
from spikefed.federated.strategies import sgd_step
from spikefed.snn import LIF

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"
parser = argparse.ArgumentParser()
parser.add_argument("--out", default=None, help="run directory (default: a temporary one)")
args = parser.parse_args()
torch.set_num_threads(1)


# -- your data: any (x_train, y_train, x_test, y_test) -------------------------------------------------------------
x, y = load_wine(return_X_y=True)
order = np.random.default_rng(0).permutation(len(y))
x, y = x[order], y[order]
x = (x - x.mean(0)) / x.std(0)
cut = int(0.75 * len(y))
data = {"x_train": x[:cut], "y_train": y[:cut], "x_test": x[cut:], "y_test": y[cut:], "name": "wine"}


# -- your model: input [T, B, 13] -> output spikes [T, B, 3] --------------------------------------------------------
class WineSNN(nn.Module):
    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(13, hidden), LIF(hidden, beta=0.9)
        self.fc2, self.lif2 = nn.Linear(hidden, 3), LIF(3, beta=0.9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lif1(self.fc1(x))  # spikefed neurons take and return all T steps at once
        out, _ = self.lif2(self.fc2(h))
        return out


# -- your strategy: two small hooks, the math in pure helpers ------------------------------------------------------
@spikefed.register_strategy("median_damped")
class MedianDamped(spikefed.Strategy):
    """Target = coordinate-wise median of the clients' parameters; x <- x - lr (x - target)."""

    name = "median_damped"

    def __init__(self, lr: float = 0.8) -> None:
        super().__init__()
        self.lr = lr

    def config(self) -> dict:
        return {"lr": self.lr}  # checked when a run resumes

    def aggregate(self, global_params, client_params, weights, manifolds):
        return {n: torch.stack([p[n] for p in client_params]).median(0).values for n in global_params}

    def server_step(self, name, x, g, out):
        return sgd_step(x, g, self.lr)  # g = x - target


rounds = 3 if SMALL else 15
settings = [f"federation.rounds={rounds}", "federation.strategy=median_damped", "federation.strategy_args={lr: 0.8}",
            "federation.fraction=1.0", "partition.num_clients=5", "partition.method=iid", "partition.min_size=5",
            "local.epochs=2", "local.num_steps=10", "local.lr=0.01"]
out = args.out or tempfile.mkdtemp(prefix="spikefed-custom-")
run = spikefed.federate(overrides=settings, model=WineSNN(), data=data, out=f"{out}/run",
                        on_round=lambda row: print(f"round {row['round']:2d}  test accuracy {row['accuracy']:.4f}"))
print(f"final accuracy {run.summary['final_accuracy']:.4f} after {run.round} rounds; run directory {run.dir}")
print("files:", ", ".join(sorted(p.name for p in run.dir.iterdir())))

# the trained model from the run directory (an instance of your class receives the federated weights)
loaded = spikefed.load_run(run.dir, model=WineSNN(), data=data)
print(f"reloaded: test accuracy {loaded.evaluate().accuracy:.4f}")
for row in loaded.client_accuracy():
    print(f"client {row['client']}: {row['samples']:3d} samples, accuracy {row['accuracy']:.4f}")
same = all(torch.equal(a, b) for a, b in zip(run.model.state_dict().values(), loaded.model.state_dict().values()))
print("reloaded weights identical:", same)
assert same
