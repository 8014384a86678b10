"""Export a trained spiking MLP to NIR (HDF5), load it back and check that it computes exactly the same thing.

Run:  .venv/bin/python examples/nir_export.py        (a few seconds; needs the optional 'nir' package)

NIR neurons reset to ``v_reset`` after a spike, so the model is trained with ``reset="zero"`` (spikefed's default,
subtractive reset, has no NIR field; see docs/nir.md and the ``reset="metadata"`` option at the end).
"""

import tempfile
from pathlib import Path

import torch

from spikefed.data import load_digits_split
from spikefed.interop import NIRConversionError, from_nir, load_nir, save_nir, to_nir
from spikefed.snn import SpikingMLP, TrainConfig, evaluate, fit
from spikefed.snn.train import encode_inputs

torch.set_num_threads(1)
data = load_digits_split(test_size=0.2, seed=0, scale="unit")
gen = torch.Generator().manual_seed(0)
model = SpikingMLP([64, 64, 10], neuron="lif", beta=0.9, threshold=1.0, reset="zero", generator=gen)
cfg = TrainConfig(epochs=2, batch_size=32, lr=5e-3, num_steps=15, encoder="direct", loss="mse_count")
fit(model, data.x_train, data.y_train, cfg, gen)
print(f"trained: test accuracy {evaluate(model, data.x_test, data.y_test, cfg).accuracy:.3f}")

with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "digits_mlp.nir"
    graph = save_nir(model, path, dt=1e-3)  # dt = 1 ms: tau = dt / (1 - beta) = 10 ms, R = tau / dt
    lif = graph.nodes["lif_0"]
    print("NIR nodes:", {name: type(node).__name__ for name, node in graph.nodes.items()})
    print(f"lif_0: tau = {lif.tau[0]:.6f} s, R = {lif.r[0]:.3f}, v_threshold = {lif.v_threshold[0]}, "
          f"v_reset = {lif.v_reset[0]}")
    print(f"wrote {path.stat().st_size / 1024:.1f} KiB")
    reloaded = load_nir(path)  # dt comes back from the graph metadata

print("reloaded as", type(reloaded).__name__)
x = encode_inputs(data.x_test, cfg, None)  # [T, B, 64]
model.eval()
with torch.no_grad():
    a, b = model(x), reloaded(x)
same = torch.equal(a.output, b.output) and torch.equal(a.membrane, b.membrane)
print(f"identical spikes and membrane on {x.shape[1]} test samples: {same}")
print(f"reloaded test accuracy {evaluate(reloaded, data.x_test, data.y_test, cfg).accuracy:.3f}")
assert same

# spikefed's default subtractive reset is refused unless asked for explicitly ...
default = SpikingMLP([64, 32, 10], generator=torch.Generator().manual_seed(1))
try:
    to_nir(default)
except NIRConversionError as err:
    print("refused:", str(err)[:100], "...")
# ... with reset="metadata" the standard fields say reset-to-zero (what other tools run) and the metadata keeps
# the subtraction, so spikefed's own round trip stays exact
back = from_nir(to_nir(default, reset="metadata"))
with torch.no_grad():
    print("subtract-reset round trip identical:", torch.equal(default(x).output, back(x).output))
