"""A round's K uploads handled as stacks: serialized together, parsed together, one bad upload rejected alone.

Each client's payload is still its own bytes (their lengths are the uplink cost); the server reads every
payload laid out like the model's float32 header straight into its row of one [K, ...] stack per parameter,
and hands anything else (here: a truncated payload and one carrying NaN) to the per-client parser, which names
the fault.

    python examples/batched_uploads.py       (SPIKEFED_EXAMPLE_SMALL=1: 100 clients instead of 500)
"""

from __future__ import annotations

import os
import time

import torch

from spikefed.federated.boundary import parse_upload, parse_uploads
from spikefed.federated.stages.channel import dense_uploads
from spikefed.federated.types import ClientUpdate
from spikefed.seeding import Purpose, torch_generator
from spikefed.snn.models import SpikingMLP
from spikefed.federated.types import params_of  # noqa: I001


def main(k: int = 500) -> None:
    torch.set_num_threads(1)  # timings of one core (several threads stall on a machine busy with other work)
    model = SpikingMLP([64, 256, 10], generator=torch.Generator().manual_seed(0))
    global_params = params_of(model)
    gen = torch_generator(0, Purpose.CLIENT, 1, 0)
    updates = [ClientUpdate(c, 3, {n: p + 0.01 * torch.randn(p.shape, generator=gen) for n, p in
                                   global_params.items()}, {"loss": 1.0}) for c in range(k)]
    uploads = dense_uploads(updates, global_params)  # K payloads, serialized as stacks
    uploads[7].payload = uploads[7].payload[:-5]  # truncated in transit
    bad = dict(updates[11].params)
    bad["linears.0.bias"] = bad["linears.0.bias"].clone()
    bad["linears.0.bias"][3] = float("nan")
    uploads[11] = dense_uploads([ClientUpdate(11, 3, bad, {"loss": 1.0})], global_params)[0]
    print(f"{k} uploads, {sum(len(u.payload) for u in uploads):,} bytes in all")

    t0 = time.perf_counter()
    accepted, rejected = parse_uploads(uploads, "dense", global_params, global_params, {}, set(range(k)))
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    one_by_one = []
    for up in uploads:
        try:
            one_by_one.append(parse_upload(up, "dense", global_params, global_params, {}, set(range(k))))
        except ValueError:
            pass
    single = time.perf_counter() - t0
    print(f"accepted {len(accepted)}, rejected {len(rejected)}:")
    for e in rejected:
        print(f"  client {e.client_id}: {e.reason}")
    same = all(torch.equal(a.params[n], b.params[n]) for a, b in zip(accepted, one_by_one) for n in global_params)
    print(f"same parameters as parse_upload one by one: {same and len(accepted) == len(one_by_one)}")
    print(f"parse: batched {batched * 1e3:.1f} ms, one by one {single * 1e3:.1f} ms")


if __name__ == "__main__":
    main(100 if os.environ.get("SPIKEFED_EXAMPLE_SMALL") == "1" else 500)
