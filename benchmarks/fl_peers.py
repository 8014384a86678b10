"""The stacks a user would pick instead of spikefed for fl_round.py's workload: snnTorch, alone or in Flower.

``SnnTorchNet`` is the 64-256-10 LIF MLP written the snnTorch way (``nn.Linear`` + ``snntorch.Leaky`` stepped over
T in a Python loop, beta 0.9, threshold 1, reset by subtraction, snnTorch's default ATan surrogate), started from
spikefed's initial weights. A client's local epoch (:func:`snntorch_client`): its shard in the batches of
spikefed's ``client_schedule`` (the same seeded permutation), the direct input repeated over T, snnTorch's
``SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)``, Adam (lr 2e-3). FedAvg (:func:`fedavg`): the
sample-weighted mean of the clients' state dicts in float64, as a user writes it.

The numbers differ from spikefed's (another surrogate scale, snnTorch's loss divides by T): these peers are timed
for the same arithmetic volume, not compared weight for weight. This module is importable by Ray's actors
(``flower_snntorch_train`` and ``make_snntorch_client_app`` run there).
"""

from __future__ import annotations

from typing import Any

import snntorch
import torch
from snntorch import functional as SF
from torch import nn

from spikefed.federated.cohort import ClientData, client_schedule
from spikefed.seeding import Purpose, torch_generator
from spikefed.snn.train import TrainConfig

BETA, THRESHOLD = 0.9, 1.0
#: snnTorch parameter name -> spikefed parameter name
NAMES = {"fc1.weight": "linears.0.weight", "fc1.bias": "linears.0.bias",
         "fc2.weight": "linears.1.weight", "fc2.bias": "linears.1.bias"}


class SnnTorchNet(nn.Module):
    """in-hidden-out LIF MLP the snnTorch way; ``forward(x [T, B, in])`` -> output spikes ``[T, B, out]``."""

    def __init__(self, sizes: tuple[int, int, int]) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(sizes[0], sizes[1]), nn.Linear(sizes[1], sizes[2])
        self.lif1 = snntorch.Leaky(beta=BETA, threshold=THRESHOLD, reset_mechanism="subtract")
        self.lif2 = snntorch.Leaky(beta=BETA, threshold=THRESHOLD, reset_mechanism="subtract")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        out = []
        for t in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[t]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            out.append(spk2)
        return torch.stack(out)


def snntorch_state(spikefed_params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """spikefed's MLP parameters under snnTorch's names."""
    return {ours: spikefed_params[theirs].detach().clone() for ours, theirs in NAMES.items()}


def make_net(params: dict[str, torch.Tensor]) -> SnnTorchNet:
    w1, w2 = params["fc1.weight"], params["fc2.weight"]
    net = SnnTorchNet((w1.shape[1], w1.shape[0], w2.shape[0]))
    net.load_state_dict(params, strict=False)
    return net


def snntorch_client(net: SnnTorchNet, params: dict[str, torch.Tensor], client: ClientData, cfg: TrainConfig,
                    gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One client's local training from ``params`` (loaded into ``net``); returns its new state."""
    net.load_state_dict(params, strict=False)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    loss_fn = SF.mse_count_loss(correct_rate=cfg.correct_rate, incorrect_rate=cfg.incorrect_rate)
    for batch in client_schedule(client.num_samples, cfg, gen):
        xb = client.x[batch].float()
        spikes = net(xb.unsqueeze(0).expand(cfg.num_steps, *xb.shape))
        loss = loss_fn(spikes, client.y[batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def fedavg(states: list[dict[str, torch.Tensor]], counts: list[int]) -> dict[str, torch.Tensor]:
    """Sample-weighted mean of the clients' states (float64 accumulation, back to float32)."""
    total = float(sum(counts))
    return {n: sum(s[n].double() * (c / total) for s, c in zip(states, counts)).float()  # type: ignore[union-attr]
            for n in states[0]}


def snntorch_round(net: SnnTorchNet, params: dict[str, torch.Tensor], clients: list[ClientData], cfg: TrainConfig,
                   seed: int, rnd: int) -> dict[str, torch.Tensor]:
    """One FedAvg round of a plain per-client loop: every client trains in turn, then the weighted mean."""
    states = [snntorch_client(net, params, c, cfg, torch_generator(seed, Purpose.CLIENT, rnd, c.client_id))
              for c in clients]
    return fedavg(states, [c.num_samples for c in clients])


# -- Flower ClientApp with snnTorch inside (runs in the Ray actors) ----------------------------------------------

_ACTOR_NETS: dict[int, SnnTorchNet] = {}


def flower_snntorch_train(msg: Any, context: Any) -> Any:
    """Flower ClientApp train: one client's local epoch with snnTorch (:func:`snntorch_client`)."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    from fl_round import SEED, actor_federation

    cid = int(context.node_config["partition-id"])
    k = int(context.node_config["num-partitions"])
    spec, clients = actor_federation(k)
    config = msg.content["config"]
    rnd = int(config["server-round"]) + int(config["round-offset"])
    params = dict(msg.content["arrays"].to_torch_state_dict())
    if k not in _ACTOR_NETS:
        _ACTOR_NETS[k] = make_net(params)
    state = snntorch_client(_ACTOR_NETS[k], params, clients[cid], spec.local,
                            torch_generator(SEED, Purpose.CLIENT, rnd, cid))
    metrics = MetricRecord({"num-examples": clients[cid].num_samples})
    return Message(RecordDict({"arrays": ArrayRecord(state), "metrics": metrics}), reply_to=msg)


def make_snntorch_client_app() -> Any:
    from flwr.clientapp import ClientApp

    app = ClientApp()
    app.train()(flower_snntorch_train)
    return app
