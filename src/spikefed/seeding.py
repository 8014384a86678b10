"""Seeds and their purposes: every random stream of a run, derived from the run's seed.

A stream is named by ``(seed, purpose, round, client, index)``. :class:`Purpose` lists every purpose the
project uses, with the positions it takes: whether it belongs to a round or to the whole run (``round=None``),
to one client (or to the server's own stream, :data:`SERVER_STREAM`), and whether it carries one more index
(for example a task). :func:`derive_seed` turns a name into a 63-bit seed with ``numpy.random.SeedSequence``
over a word array of fixed length for each purpose::

    words = [seed, round or NO_ROUND, purpose, client or 0]            (+ [index] for indexed purposes)

Why fixed lengths: ``SeedSequence`` pads short entropy with zero words, so ``[s, 3]`` and ``[s, 3, 0]``
give the same state; with one fixed layout per purpose, and the purpose's number in the layout, two distinct
names can only give the same words if they are the same name (tested in ``tests/test_seeding.py``). Every
position is checked to fit its 32-bit word (a seed of ``2**32`` is refused rather than wrapped onto 0), and a
purpose refuses positions it does not take (a per-client purpose without a client, a client-less purpose with
one), so a caller cannot silently reach another purpose's stream.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["NO_ROUND", "SERVER_STREAM", "Purpose", "derive_seed", "numpy_rng", "torch_generator"]

WORD = 2**32
#: the "round" word of streams that belong to the whole run, not to one round
NO_ROUND = WORD - 1
#: the "client" word of the server's own stream of a per-client purpose (e.g. the downlink's compression)
SERVER_STREAM = WORD - 1


@dataclass(frozen=True)
class _Layout:
    clients: bool  # the purpose has one stream per client (client id or SERVER_STREAM)
    indexed: bool  # the purpose carries one more index (a task, a layer, ...)


class Purpose(enum.IntEnum):
    """Every purpose a random stream serves; the value is its word in the seed layout (never reuse one)."""

    # federated rounds (spikefed.federated)
    SAMPLE = 0  # which clients train in a round
    CLIENT = 1  # a client's local training: batch order, input encoding
    EVAL = 2  # evaluation of the global model (input encoding)
    PARTITION = 3  # the partition of the training set over the clients (once per run)
    INIT = 4  # the global model's initialisation (once per run)
    FEATURE = 5  # a client's feature-skew transform
    FAULT = 6  # a client's dropout / step jitter in a round; its speed factor (round=None)
    ATTACK = 7  # a malicious client's update attack in a round
    COMPRESS = 8  # random-k / QSGD draws of a client's uplink; the server's downlink (SERVER_STREAM)
    PRIVACY = 9  # the DP noise of a round (server)
    SECAGG = 10  # a client's secure-aggregation secrets in a round
    ATTACKERS = 11  # which clients are malicious (once per run)
    # hardware (spikefed.hardware)
    DEVICE = 1001  # a client's device mismatch draws
    CALIBRATION = 1002  # a device's calibration probe noise
    FLEET = 1003  # which device profile each client gets (once per run)
    # continual learning (spikefed.federated.continual)
    CONTINUAL_LAG = 2001  # per-client task lags (asynchronous drift)
    CONTINUAL_NOISE = 2002  # domain noise of a task (index) on a client's data (test set: SERVER_STREAM)
    CONTINUAL_FISHER = 2003  # a client's Fisher estimation draws in a round
    CONTINUAL_EVAL = 2004  # evaluation on a task (index) in a round
    # local learning rules (spikefed.snn)
    EPROP_FEEDBACK = 3001  # the random feedback matrix of random e-prop (its seed is TrainConfig's)
    # conversion and regression (spikefed.experiment.conversion)
    CONVERT_INIT = 4001
    CONVERT_SHUFFLE = 4002
    FINETUNE = 4003
    SERIES = 4004
    REGRESS_INIT = 4005
    REGRESS_SHUFFLE = 4006
    CODING_INIT = 4007  # benchmarks/coding.py
    CODING_TRAIN = 4008
    CODING_EVAL = 4009
    # event data (spikefed.events)
    EVENT_SYNTH = 5001  # saccades and sensor noise of synthesized event streams
    # robustness (spikefed.federated.robust)
    ROOT = 6001  # FLTrust: the server's root set (once per run)
    ROOT_TRAIN = 6002  # FLTrust: the server's training on it in a round
    # event data, recorded (spikefed.experiment.eventdata)
    EVENT_SENSOR = 5002  # a client's sensor skew on recorded events (hot pixels, noise, thinning)
    # leakage attacks and the network model (issue 18)
    LEAKAGE = 7001  # leakage attacks: the attacker's dummy inputs, the benchmark's noise draws (index: trial)
    NETWORK = 7002  # a client's uplink/downlink bandwidth and latency draws (round=None: once per run)
    # fairness and client selection (issue 18)
    CLIENT_LOSS = 7101  # a client's loss at the received model (q-FFL's F_k): its input encoding in a round
    SELECT = 7102  # client selection draws of a round (size: draws with replacement; power-of-choice: candidates)
    AVAILABILITY = 7103  # a client's diurnal phase (round=None); whether it is online in a round
    # local learning rules beyond e-prop (issue 17, snn.feedback / snn.decolle)
    LOCAL_RULE = 3002  # fixed random feedback / read-out matrices of FA, DFA, DRTP, DECOLLE (index: layer)
    # neurons, coding and robust training (issue 17, part B)
    DROPOUT = 7201  # masks of the time-fixed dropout layers (model.dropout; index: layer)
    ADVERSARIAL = 7202  # benchmarks/adversarial.py and examples: training shuffles (index 0), PGD random starts (1)
    # per-client state at scale (issue 15, part D)
    SCALE_DATA = 7301  # benchmarks/scale.py: the seeded synthetic training set of a large population

    @property
    def layout(self) -> _Layout:
        return _LAYOUTS.get(self, _Layout(clients=False, indexed=False))


_LAYOUTS: dict[Purpose, _Layout] = {
    Purpose.CLIENT: _Layout(True, False),
    Purpose.FEATURE: _Layout(True, False),
    Purpose.FAULT: _Layout(True, False),
    Purpose.ATTACK: _Layout(True, False),
    Purpose.COMPRESS: _Layout(True, False),
    Purpose.SECAGG: _Layout(True, False),
    Purpose.DEVICE: _Layout(True, False),
    Purpose.CALIBRATION: _Layout(True, False),
    Purpose.CONTINUAL_NOISE: _Layout(True, True),
    Purpose.CONTINUAL_FISHER: _Layout(True, False),
    Purpose.CONTINUAL_EVAL: _Layout(False, True),
    Purpose.ROOT_TRAIN: _Layout(False, False),
    Purpose.EVENT_SENSOR: _Layout(True, False),
    Purpose.LEAKAGE: _Layout(False, True),
    Purpose.NETWORK: _Layout(True, False),
    Purpose.CLIENT_LOSS: _Layout(True, False),
    Purpose.AVAILABILITY: _Layout(True, False),
    Purpose.LOCAL_RULE: _Layout(False, True),
    Purpose.ADVERSARIAL: _Layout(False, True),
}


def _word(name: str, value: int, limit: int = WORD) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if not 0 <= v < limit:
        raise ValueError(f"{name} must be in [0, {limit}), got {v}")
    return v


def derive_seed(seed: int, purpose: Purpose, round: int | None = None, client: int | None = None,
                index: int | None = None) -> int:
    """A 63-bit seed for the stream ``(seed, purpose, round, client, index)``.

    ``round=None``: a stream of the whole run. ``client``: required by per-client purposes (a client id, or
    :data:`SERVER_STREAM` for the server's stream), refused by the others; ``index``: required by indexed
    purposes, refused by the others.
    """
    if not isinstance(purpose, Purpose):
        raise TypeError(f"purpose must be a spikefed.seeding.Purpose, got {purpose!r}")
    layout = purpose.layout
    words = [_word("seed", seed), NO_ROUND if round is None else _word("round", round, NO_ROUND), int(purpose)]
    if layout.clients:
        if client is None:
            raise ValueError(f"purpose {purpose.name} has one stream per client: pass client=")
        words.append(_word("client", client))
    else:
        if client is not None:
            raise ValueError(f"purpose {purpose.name} has no per-client streams, got client={client}")
        words.append(0)
    if layout.indexed:
        if index is None:
            raise ValueError(f"purpose {purpose.name} needs index=")
        words.append(_word("index", index))
    elif index is not None:
        raise ValueError(f"purpose {purpose.name} takes no index, got index={index}")
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> 1)


def torch_generator(seed: int, purpose: Purpose, round: int | None = None, client: int | None = None,
                    index: int | None = None, device: torch.device | str | None = None) -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`derive_seed`, on the CPU unless ``device`` names another.

    The seed is the same on every device, but a CUDA generator (Philox) draws a different stream from a CPU one
    (Mersenne Twister): a run on ``cuda`` is reproducible on CUDA, not equal draw for draw to the CPU run."""
    seed_value = derive_seed(seed, purpose, round, client, index)
    if device is None or torch.device(device).type == "cpu":
        return torch.Generator().manual_seed(seed_value)
    return torch.Generator(device=device).manual_seed(seed_value)


def numpy_rng(seed: int, purpose: Purpose, round: int | None = None, client: int | None = None,
              index: int | None = None) -> np.random.Generator:
    """A ``numpy.random.Generator`` seeded with :func:`derive_seed`."""
    return np.random.default_rng(derive_seed(seed, purpose, round, client, index))
