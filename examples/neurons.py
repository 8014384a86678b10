"""Neuron layers with explicit state: whole sequences, single steps, and a custom surrogate gradient.

Run:  .venv/bin/python examples/neurons.py
"""

import torch

from spikefed.snn import ALIF, LIF, Synaptic, heaviside

x = torch.full((20, 1, 3), 0.3)  # constant input current, [T, B, features]

lif = LIF(3, beta=0.9, threshold=1.0, reset="subtract")
out = lif.run(x)  # spikes, membrane [T, B, 3] and the final state
print("LIF spike times:", out.spikes[:, 0, 0].nonzero().flatten().tolist())

# the same neuron stepped one time step at a time, state passed explicitly
state = None
for t in range(20):
    s, state = lif.step(x[t], state)

# continue the sequence from the final state
more = lif.run(x, out.state)

# a user-defined surrogate derivative: any callable dS/dx of the shifted membrane
def boxcar(v: torch.Tensor) -> torch.Tensor:
    return (v.abs() < 0.5).to(v.dtype)

custom = LIF(3, surrogate=boxcar, learn_beta=True, learn_threshold=True)
custom.run(x.requires_grad_()).spikes.sum().backward()
print("custom surrogate: d(spikes)/d(threshold) =", custom.threshold.grad.tolist())

print("CuBa spikes:", int(Synaptic(3, alpha=0.8, beta=0.9).run(x).spikes.sum()))
print("ALIF spikes:", int(ALIF(3, gamma=1.0).run(x).spikes.sum()), "(adaptation slows firing vs LIF:",
      int(out.spikes.sum()), ")")
print("Heaviside(0) =", heaviside(torch.tensor(0.0)).item(), "(spike only strictly above threshold)")
