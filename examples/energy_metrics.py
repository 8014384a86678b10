"""NeuroBench-style metrics and energy per inference of a spiking MLP on the bundled digits data.

Trains a small SpikingMLP for one epoch (a few seconds), then measures it on the test set with direct
(constant-current) coding and with rate coding, under the 45 nm and Loihi energy presets, and once more after
pruning half of its weights by magnitude.

Run:  .venv/bin/python examples/energy_metrics.py
"""

import torch

from spikefed.data.digits import load_digits_split
from spikefed.hardware.metrics import InferenceMetrics, measure
from spikefed.snn import SpikingMLP, TrainConfig, evaluate, fit
from spikefed.snn.encoding import rate

STEPS = 10

data = load_digits_split(test_size=0.2, seed=0, scale="unit")
gen = torch.Generator().manual_seed(0)
model = SpikingMLP([64, 128, 10], neuron="lif", beta=0.9, threshold=1.0, generator=gen)
cfg = TrainConfig(epochs=1, batch_size=32, lr=5e-3, num_steps=STEPS, encoder="direct", loss="mse_count")
fit(model, data.x_train, data.y_train, cfg, gen)
model.eval()
print(f"test accuracy after 1 epoch: {evaluate(model, data.x_test, data.y_test, cfg).accuracy:.3f}\n")

x_direct = data.x_test.unsqueeze(0).expand(STEPS, *data.x_test.shape)  # [T, B, 64], a stride-0 view
x_rate = rate(data.x_test, STEPS, generator=torch.Generator().manual_seed(1))  # [T, B, 64] spikes


def layer_table(m: InferenceMetrics) -> None:
    """Per-layer counts per inference."""
    print(f"  {'layer':<12}{'kind':<8}{'dense ops':>11}{'eff. MACs':>11}{'eff. ACs':>10}{'spikes':>9}{'energy':>11}")
    for row in m.to_dict()["layers"]:
        print(f"  {row['name']:<12}{row['kind']:<8}{row['dense_ops']:>11.0f}{row['effective_macs']:>11.0f}"
              f"{row['effective_acs']:>10.0f}{row['spikes']:>9.1f}{row['energy_j'] * 1e9:>8.2f} nJ")


runs = {
    "direct, 45nm": measure(model, x_direct, energy="45nm"),
    "direct, loihi": measure(model, x_direct, energy="loihi"),
    "rate, 45nm": measure(model, x_rate, energy="45nm"),
}
with torch.no_grad():  # magnitude pruning: zero the smaller half of each weight matrix
    for lin in model.linears:
        w = lin.weight
        w[w.abs() < w.abs().median()] = 0.0
runs["rate, 45nm, pruned 50%"] = measure(model, x_rate, energy="45nm")

print(f"{'setting':<24}{'bytes':>7}{'conn. sp.':>10}{'act. sp.':>9}{'dense ops':>11}{'eff. MACs':>11}"
      f"{'eff. ACs':>10}{'energy/inf.':>13}")
for name, m in runs.items():
    p = m.per_inference()
    print(f"{name:<24}{m.footprint_bytes:>7}{m.connection_sparsity:>10.3f}{m.activation_sparsity:>9.3f}"
          f"{p['dense_ops']:>11.0f}{p['effective_macs']:>11.0f}{p['effective_acs']:>10.0f}"
          f"{p['energy_j'] * 1e9:>10.2f} nJ")

for name in ("direct, 45nm", "rate, 45nm, pruned 50%"):
    print(f"\nper layer, {name} (per inference):")
    layer_table(runs[name])
