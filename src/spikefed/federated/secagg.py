"""Secure aggregation, simulated in process (Bonawitz et al. 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning", CCS 2017): the server learns the *sum* of the clients' vectors and
nothing else about any single one of them, and the sum survives clients that drop out.

**This is a simulation of the protocol's arithmetic, not cryptography.** Key agreement uses modular
exponentiation in a toy group (``p = 2^127 - 1``, ``g = 3``) whose order has small factors, secrets come
from seeded generators so runs are reproducible, shares travel as plain Python objects instead of
authenticated encryption, and everything runs in one process. What *is* faithful: the masks, the field
arithmetic of the secret sharing, which party learns what, when the server can unmask, the failure modes
(too few survivors) and the message sizes.

Fixed-point encoding (exact in the integer domain)::

    q(x)   = round(x * 2^s)  mod 2^k                   (s = scale_bits, k = bits; round half to even)
    x^     = signed(v) / 2^s,  signed(v) = v - 2^k if v >= 2^(k-1) else v

so ``sum_u q(x_u) mod 2^k`` decodes to ``sum_u round(x_u 2^s) / 2^s`` exactly as long as
``|sum_u round(x_u 2^s)| < 2^(k-1)``; :func:`encode_fixed_point` refuses values with
``|round(x 2^s)| > (2^(k-1) - 1) // n`` for ``n`` summands, which guarantees it. The quantization error of
one coordinate is at most ``2^-(s+1)``.

Protocol (one round, cohort ``U1`` of ``n`` clients, threshold ``t``; arithmetic of vectors mod ``R = 2^k``,
of secrets in the prime field ``F_P``, ``P = 2^127 - 1``):

1. *AdvertiseKeys*: client ``u`` draws a secret key ``sk_u`` and publishes ``pk_u = g^sk_u mod p``.
2. *ShareKeys*: ``u`` draws a self-mask seed ``b_u`` and Shamir-shares both ``sk_u`` and ``b_u`` with
   threshold ``t`` among ``U1`` (``f(x) = secret + a_1 x + ... + a_{t-1} x^{t-1}`` over ``F_P``, share for
   client ``v`` is ``f(v + 1)``).
3. *MaskedInputCollection*: with the pairwise seed ``s_uv = pk_v^sk_u = g^(sk_u sk_v) = s_vu``, client ``u``
   sends ``y_u = x_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_vu)  (mod R)``. ``U3`` is the set
   of clients whose ``y_u`` arrived; the server aborts if ``|U3| < t``.
4. *Unmasking*: every responding survivor ``v`` sends its share of ``sk_u`` for each dropped ``u`` in
   ``U1 \\ U3`` and its share of ``b_u`` for each survivor ``u`` in ``U3`` (never both for the same ``u``);
   with ``>= t`` responders the server interpolates the secrets, checks ``g^sk_u == pk_u``, and computes::

       sum_{u in U3} x_u = sum_{u in U3} y_u - sum_{u in U3} PRG(b_u)
                           - sum_{u in U1\\U3} sum_{v in U3} sign(v, u) PRG(s_uv)      (mod R)

   where ``sign(v, u) = +1`` if ``v < u`` (``v`` added ``PRG(s_vu)``) and ``-1`` if ``v > u``. The pairwise
   masks of survivors cancel in the sum; the self-mask ``b_u`` (double masking) keeps a survivor's vector
   hidden even if the server wrongly claims it dropped, since no honest client reveals both shares.

Threat model: honest-but-curious server and clients; the server must not learn any individual ``x_u``.
Security of the real protocol rests on the hardness of Diffie-Hellman in a proper group and on a
cryptographic PRG; here the PRG is ``torch.randint`` (Philox/MT) seeded by a hash of the seed.

Cost per client: ``O(n + d)`` communication (``n`` public keys, ``2 (n - 1)`` shares, the ``d``-vector of
``k``-bit integers, up to ``n`` shares when unmasking) and ``O(n d)`` PRG expansion; the server does
``O(n^2 + |dropped| |U3| d)`` work. Masked vectors cannot be compressed (they are uniformly random) and the
server cannot inspect (validate, clip or robustly aggregate) any single update.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .serialization import encode_params

__all__ = [
    "FIELD_BYTES",
    "GENERATOR",
    "PRIME",
    "SecAggClient",
    "SecAggError",
    "SecAggParams",
    "SecAggResult",
    "decode_fixed_point",
    "encode_fixed_point",
    "fixed_point_bound",
    "prg_mask",
    "random_field_element",
    "secure_sum",
    "shamir_reconstruct",
    "shamir_share",
    "threshold_for",
]

#: Mersenne prime ``2^127 - 1``: the field of the secret sharing and the (toy) Diffie-Hellman modulus.
PRIME = 2**127 - 1
#: Base of the simulated Diffie-Hellman exponentiation (no claim that it generates a large prime-order group).
GENERATOR = 3
#: Bytes of one serialized field element (public key or share).
FIELD_BYTES = 16


class SecAggError(RuntimeError):
    """The secure aggregation of a round cannot complete (too few survivors, inconsistent shares ...)."""


# -------------------------------------------------------------------------------- Shamir secret sharing


def random_field_element(rng: np.random.Generator, prime: int = PRIME) -> int:
    """A uniform element of ``[0, prime)`` drawn from ``rng`` (rejection sampling on ``bit_length`` bits)."""
    bits = prime.bit_length()
    nbytes = (bits + 7) // 8
    mask = (1 << bits) - 1
    while True:
        value = int.from_bytes(rng.bytes(nbytes), "little") & mask
        if value < prime:
            return value


def shamir_share(secret: int, xs: Sequence[int], threshold: int, rng: np.random.Generator,
                 prime: int = PRIME) -> dict[int, int]:
    """Shamir shares ``{x: f(x)}`` of ``secret`` with ``f(X) = secret + sum_{j=1}^{t-1} a_j X^j`` over ``F_prime``.

    The ``a_j`` are uniform in the field, so any ``t - 1`` shares are jointly uniform and independent of the
    secret (for every candidate secret exactly one polynomial of degree ``< t`` passes through ``(0, secret)``
    and the ``t - 1`` points, so every secret is equally consistent with them), while any ``t`` shares
    determine ``f`` and hence ``f(0)``. ``xs`` must be distinct and non-zero
    mod ``prime``; ``1 <= threshold <= len(xs)``.
    """
    if not 0 <= secret < prime:
        raise ValueError(f"the secret must lie in [0, prime), got {secret}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must lie in [1, {len(xs)}] (the number of shares), got {threshold}")
    if len({x % prime for x in xs}) != len(xs) or any(x % prime == 0 for x in xs):
        raise ValueError("share points must be distinct and non-zero modulo the prime")
    coeffs = [secret] + [random_field_element(rng, prime) for _ in range(threshold - 1)]
    shares: dict[int, int] = {}
    for x in xs:
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % prime
        shares[int(x)] = y
    return shares


def shamir_reconstruct(shares: Mapping[int, int], prime: int = PRIME) -> int:
    """``f(0)`` by Lagrange interpolation: ``sum_i y_i prod_{j != i} x_j / (x_j - x_i)  (mod prime)``.

    With at least ``threshold`` shares of :func:`shamir_share` this is the secret; with fewer it is the value at
    0 of the lowest-degree polynomial through them, which (for a uniform polynomial) is unrelated to the secret.
    """
    if not shares:
        raise ValueError("need at least one share to reconstruct")
    points = [(int(x) % prime, int(y) % prime) for x, y in shares.items()]
    if len({x for x, _ in points}) != len(points) or any(x == 0 for x, _ in points):
        raise ValueError("share points must be distinct and non-zero modulo the prime")
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                num = num * xj % prime
                den = den * (xj - xi) % prime
        secret = (secret + yi * num * pow(den, -1, prime)) % prime
    return secret


# -------------------------------------------------------------------------------------- fixed point


def fixed_point_bound(bits: int, summands: int) -> int:
    """Largest ``|round(x 2^s)|`` per coordinate such that a sum of ``summands`` values stays below ``2^(k-1)``."""
    if summands < 1:
        raise ValueError(f"summands must be >= 1, got {summands}")
    return (2 ** (bits - 1) - 1) // summands


def encode_fixed_point(x: torch.Tensor, scale_bits: int, bits: int, summands: int = 1) -> torch.Tensor:
    """``round(x 2^s) mod 2^k`` as an int64 tensor in ``[0, 2^k)``.

    Raises ``ValueError`` for non-finite values or ``|round(x 2^s)| > fixed_point_bound(bits, summands)``
    (the sum of ``summands`` such vectors would overflow the signed range). ``8 <= bits <= 62``.
    """
    _check_bits(bits)
    if not 0 <= scale_bits <= 52:
        raise ValueError(f"scale_bits must lie in [0, 52], got {scale_bits}")
    xd = x.detach().to(torch.float64)
    if not torch.isfinite(xd).all():
        raise ValueError("cannot encode non-finite values")
    q = torch.round(xd * float(2**scale_bits))  # exact scaling by a power of two, then round half to even
    bound = fixed_point_bound(bits, summands)
    peak = float(q.abs().max()) if q.numel() else 0.0
    if peak > bound:
        raise ValueError(f"fixed-point overflow: |x| * 2^{scale_bits} = {peak:.6g} exceeds {bound} "
                         f"(2^{bits - 1} - 1 shared by {summands} summands); lower scale_bits or raise bits")
    return torch.remainder(q.to(torch.int64), 2**bits)


def decode_fixed_point(v: torch.Tensor, scale_bits: int, bits: int) -> torch.Tensor:
    """Inverse of :func:`encode_fixed_point` (two's complement mod ``2^k``, then ``/ 2^s``), float64."""
    _check_bits(bits)
    v = torch.remainder(v.to(torch.int64), 2**bits)
    signed = torch.where(v >= 2 ** (bits - 1), v - 2**bits, v)
    return signed.to(torch.float64) / float(2**scale_bits)


def _check_bits(bits: int) -> None:
    if not 8 <= bits <= 62:
        raise ValueError(f"bits must lie in [8, 62] (int64 arithmetic), got {bits}")


# --------------------------------------------------------------------------------------------- masks


def prg_mask(seed: int, dim: int, bits: int, domain: bytes) -> torch.Tensor:
    """``PRG(seed)``: ``dim`` uniform integers in ``[0, 2^bits)`` (int64) from a torch generator keyed by
    ``blake2b(domain || seed)``. ``domain`` separates the pairwise and self-mask streams."""
    digest = hashlib.blake2b(domain + int(seed).to_bytes(FIELD_BYTES, "little"), digest_size=8).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
    return torch.randint(0, 2**bits, (dim,), generator=gen, dtype=torch.int64)


_PAIR = b"spikefed-secagg-pair"
_SELF = b"spikefed-secagg-self"


def threshold_for(cohort: int, fraction: float) -> int:
    """``t = min(n, floor(fraction n) + 1)``: the smallest integer strictly above ``fraction * n``, at most n.

    ``fraction = 0.5`` gives an honest majority (``t > n / 2``); ``n - t`` dropouts are tolerated.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"the threshold fraction must lie in [0, 1), got {fraction}")
    if cohort < 1:
        raise ValueError(f"the cohort must have at least one client, got {cohort}")
    return min(cohort, int(np.floor(fraction * cohort)) + 1)


# ------------------------------------------------------------------------------------------- parties


@dataclass(frozen=True)
class SecAggParams:
    """Public parameters of one secure-aggregation round: threshold ``t``, vector length, modulus ``2^bits``."""

    threshold: int
    dim: int
    bits: int = 32
    prime: int = PRIME
    generator: int = GENERATOR

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        if self.threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {self.threshold}")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")

    @property
    def modulus(self) -> int:
        return 2**self.bits


class SecAggClient:
    """One client's side of the protocol. Its secrets (``sk_u``, ``b_u``) never leave the object except as
    Shamir shares; ``seed`` makes them reproducible (simulation only: real clients use a CSPRNG)."""

    def __init__(self, client_id: int, seed: int, params: SecAggParams) -> None:
        if client_id < 0:
            raise ValueError(f"client ids must be >= 0, got {client_id}")
        self.client_id = int(client_id)
        self.params = params
        self._rng = np.random.default_rng(int(seed))
        self._sk = 1 + random_field_element(self._rng, params.prime - 2)  # in [1, p - 2]
        self._b = random_field_element(self._rng, params.prime)
        self.public_key = pow(params.generator, self._sk, params.prime)
        #: shares received from other clients: sender -> (share of sk_sender, share of b_sender) at my point
        self.received: dict[int, tuple[int, int]] = {}
        self._revealed_sk: set[int] = set()
        self._revealed_b: set[int] = set()

    @property
    def point(self) -> int:
        """This client's Shamir evaluation point ``x = id + 1``."""
        return self.client_id + 1

    def share_keys(self, participants: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Shares of ``(sk_u, b_u)`` for every participant (itself included), threshold ``t``."""
        xs = [v + 1 for v in participants]
        p, t = self.params.prime, self.params.threshold
        sk_shares = shamir_share(self._sk, xs, t, self._rng, p)
        b_shares = shamir_share(self._b, xs, t, self._rng, p)
        return {v: (sk_shares[v + 1], b_shares[v + 1]) for v in participants}

    def receive_shares(self, sender: int, shares: tuple[int, int]) -> None:
        self.received[int(sender)] = shares

    def pairwise_seed(self, other_public_key: int) -> int:
        """``s_uv = pk_v^sk_u mod p`` (equal to ``s_vu``: simulated Diffie-Hellman agreement)."""
        return pow(other_public_key, self._sk, self.params.prime)

    def masked_input(self, x: torch.Tensor, public_keys: Mapping[int, int]) -> torch.Tensor:
        """``y_u = x_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_vu)  (mod 2^k)`` over the other
        clients of ``public_keys`` (all of ``U1``: the client cannot know who will drop)."""
        prm = self.params
        if x.dtype != torch.int64 or x.shape != (prm.dim,):
            raise ValueError(f"client {self.client_id}: the input must be an int64 vector of length {prm.dim}, "
                             f"got {x.dtype} {tuple(x.shape)}")
        if bool((x < 0).any()) or bool((x >= prm.modulus).any()):
            raise ValueError(f"client {self.client_id}: input values must lie in [0, 2^{prm.bits})")
        y = torch.remainder(x + prg_mask(self._b, prm.dim, prm.bits, _SELF), prm.modulus)
        for v, pk in sorted(public_keys.items()):
            if v == self.client_id:
                continue
            mask = prg_mask(self.pairwise_seed(pk), prm.dim, prm.bits, _PAIR)
            y = torch.remainder(y + mask if self.client_id < v else y - mask, prm.modulus)
        return y

    def unmasking_shares(self, dropped: Sequence[int], survivors: Sequence[int]) -> dict[str, dict[int, int]]:
        """Shares of ``sk_u`` for ``dropped`` and of ``b_u`` for ``survivors``; refuses to reveal both kinds for
        any one client (that would let the server unmask that client's individual vector)."""
        drop, surv = set(dropped), set(survivors)
        if drop & surv or drop & self._revealed_b or surv & self._revealed_sk:
            raise SecAggError(f"client {self.client_id}: refusing to reveal both the key and the self-mask "
                              "shares of the same client")
        missing = (drop | surv) - set(self.received)
        if missing:
            raise SecAggError(f"client {self.client_id}: holds no shares from clients {sorted(missing)}")
        self._revealed_sk |= drop
        self._revealed_b |= surv
        return {"sk": {u: self.received[u][0] for u in sorted(drop)},
                "b": {u: self.received[u][1] for u in sorted(surv)}}


# ---------------------------------------------------------------------------------------------- server


@dataclass
class SecAggResult:
    """Outcome of :func:`secure_sum`.

    ``total`` is ``sum_{u in survivors} x_u mod 2^k`` (int64 in ``[0, 2^k)``); ``server_view`` the masked
    vectors the server received (what it sees of each client); ``bytes_up`` / ``bytes_down`` the protocol's
    traffic: public keys and shares as 16-byte field elements, masked vectors as their serialized payload.
    """

    total: torch.Tensor
    survivors: list[int]
    dropped: list[int]
    server_view: dict[int, torch.Tensor] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0


def _masked_payload_bytes(y: torch.Tensor, bits: int) -> int:
    """Length of the serialized masked vector: int32 words (two's complement view) for ``k <= 32``, else int64."""
    if bits <= 32:
        wire = torch.where(y >= 2**31, y - 2**32, y).to(torch.int32)
    else:
        wire = y
    return len(encode_params({"y": wire}))


def secure_sum(inputs: Mapping[int, torch.Tensor | None], seeds: Mapping[int, int], params: SecAggParams,
               unmask_dropouts: Sequence[int] = ()) -> SecAggResult:
    """Run one round of the protocol over the cohort ``U1 = sorted(inputs)``; returns the sum of the survivors.

    ``inputs[u]`` is client ``u``'s int64 vector in ``[0, 2^k)`` of length ``params.dim``, or ``None`` when ``u``
    drops out after sharing its keys (before sending its masked input). ``unmask_dropouts`` are survivors that
    drop before the unmasking step (their vectors still count; they just send no shares). ``seeds[u]`` seeds
    client ``u``'s secrets.

    Raises :class:`SecAggError` if fewer than ``t`` masked inputs arrive or fewer than ``t`` survivors answer
    the unmasking request (the sum cannot be recovered; nothing about single inputs is revealed either), or
    if a reconstructed key does not match its public key.
    """
    cohort = sorted(int(u) for u in inputs)
    n, t, prm = len(cohort), params.threshold, params
    if n == 0:
        raise SecAggError("secure aggregation needs at least one client in the cohort")
    if t > n:
        raise SecAggError(f"threshold t={t} exceeds the cohort of {n} clients")
    up = down = 0
    # 1. AdvertiseKeys: pk_u to the server, the list of all keys to every client
    clients = {u: SecAggClient(u, seeds[u], prm) for u in cohort}
    public_keys = {u: c.public_key for u, c in clients.items()}
    up += n * FIELD_BYTES
    down += n * n * FIELD_BYTES
    # 2. ShareKeys: (share of sk_u, share of b_u) for every other client, routed through the server
    for u in cohort:
        for v, pair in clients[u].share_keys(cohort).items():
            clients[v].receive_shares(u, pair)
    up += n * (n - 1) * 2 * FIELD_BYTES
    down += n * (n - 1) * 2 * FIELD_BYTES
    # 3. MaskedInputCollection
    survivors = [u for u in cohort if inputs[u] is not None]
    dropped = [u for u in cohort if inputs[u] is None]
    if len(survivors) < t:
        raise SecAggError(f"only {len(survivors)} of {n} clients sent masked inputs, fewer than the threshold "
                          f"t={t}: the sum cannot be unmasked (round aborted)")
    server_view: dict[int, torch.Tensor] = {}
    total = torch.zeros(prm.dim, dtype=torch.int64)
    for u in survivors:
        x = inputs[u]
        assert x is not None
        y = clients[u].masked_input(x, public_keys)
        server_view[u] = y
        up += _masked_payload_bytes(y, prm.bits)
        total = torch.remainder(total + y, prm.modulus)
    # 4. Unmasking: survivors still online send shares (sk of dropped, b of survivors)
    gone = set(unmask_dropouts)
    responders = [v for v in survivors if v not in gone]
    if len(responders) < t:
        raise SecAggError(f"only {len(responders)} survivors answered the unmasking request, fewer than the "
                          f"threshold t={t}: the sum cannot be unmasked (round aborted)")
    down += len(responders) * (len(dropped) + len(survivors)) * 4  # the request: client ids (4 bytes each)
    sk_shares: dict[int, dict[int, int]] = {u: {} for u in dropped}
    b_shares: dict[int, dict[int, int]] = {u: {} for u in survivors}
    for v in responders:
        answer = clients[v].unmasking_shares(dropped, survivors)
        for u, s in answer["sk"].items():
            sk_shares[u][v + 1] = s
        for u, s in answer["b"].items():
            b_shares[u][v + 1] = s
        up += (len(answer["sk"]) + len(answer["b"])) * FIELD_BYTES
    for u in survivors:
        b_u = shamir_reconstruct(b_shares[u], prm.prime)
        total = torch.remainder(total - prg_mask(b_u, prm.dim, prm.bits, _SELF), prm.modulus)
    for u in dropped:
        sk_u = shamir_reconstruct(sk_shares[u], prm.prime)
        if pow(prm.generator, sk_u, prm.prime) != public_keys[u]:
            raise SecAggError(f"reconstructed key of dropped client {u} does not match its public key "
                              "(inconsistent shares)")
        for v in survivors:
            mask = prg_mask(pow(public_keys[v], sk_u, prm.prime), prm.dim, prm.bits, _PAIR)
            # survivor v added +PRG(s_vu) if v < u and -PRG(s_uv) if v > u: remove exactly that
            total = torch.remainder(total - mask if v < u else total + mask, prm.modulus)
    return SecAggResult(total, survivors, dropped, server_view, up, down)
