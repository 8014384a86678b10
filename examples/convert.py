"""ANN-to-SNN conversion with the library API: train a ReLU MLP, balance it into IF neurons, accuracy vs T,
then a hybrid step (surrogate-gradient fine-tuning of the converted network at few time steps).

Run:  .venv/bin/python examples/convert.py          (about 10 s)
CLI:  spikefed convert --set convert.finetune_epochs=3
"""

import os

import torch

from spikefed.data import load_digits_split
from spikefed.snn.convert import (ReLUMLP, accuracy_vs_steps, activation_scales, ann_accuracy, convert,
                                  hybrid_finetune, train_ann)
from spikefed.snn.train import TrainConfig

SMALL = os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1"  # CI runs a quick version of the same code

data = load_digits_split(test_size=0.2, seed=0, scale="standard")
gen = torch.Generator().manual_seed(0)
ann = ReLUMLP([64, 256, 10], generator=gen)
train_ann(ann, data.x_train, data.y_train, TrainConfig(epochs=2 if SMALL else 20, lr=1e-3), gen)
print(f"ANN test accuracy {ann_accuracy(ann, data.x_test, data.y_test):.4f}")

for norm in ("max", "percentile"):
    scales = activation_scales(ann, data.x_train, norm, percentile=99.9)  # one lambda per layer
    snn = convert(ann, scales, balance="weights", initial_membrane=0.5)  # IF, reset by subtraction
    rows = accuracy_vs_steps(snn, data.x_test, data.y_test, [8, 32] if SMALL else [8, 16, 32, 64, 128, 256])
    print(f"{norm:>10} scales {[round(s, 2) for s in scales]}: "
          + "  ".join(f"T={r.steps}: {r.accuracy:.3f}" for r in rows))

# hybrid: the weakest setting at T=4 (layer maxima, membranes starting at 0), fine-tuned at T=4
snn = convert(ann, activation_scales(ann, data.x_train, "max"), initial_membrane=0.0)
before = accuracy_vs_steps(snn, data.x_test, data.y_test, [4])[0].accuracy
hybrid_finetune(snn, data.x_train, data.y_train,
                TrainConfig(epochs=1 if SMALL else 3, lr=5e-4, num_steps=4, loss="ce_count", cosine_schedule=False),
                gen)
after = accuracy_vs_steps(snn, data.x_test, data.y_test, [4])[0].accuracy
print(f"hybrid at T=4: converted {before:.3f} -> fine-tuned {after:.3f}")
