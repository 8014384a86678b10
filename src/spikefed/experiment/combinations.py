"""The combination matrix: every pair of the seeds' features either trains or is refused by the table.

Each feature is a list of config overrides (:data:`FEATURES`). For every pair, :func:`pair_status` builds the run
settings of both features together (on a tiny base, :data:`BASE`) and says one of:

- ``runs``: the settings validate; the matrix test trains two rounds with them;
- ``refused``: a row of the compatibility table (:mod:`spikefed.experiment.compat`) refuses the pair, and its
  one-line reason is the message;
- ``alternatives``: both features set the same key to different values (for example two model kinds), so the pair
  is not a combination at all;
- ``invalid``: anything else (a config error that is not from the table). The matrix test fails on such a pair:
  a combination may only be refused by the table, with its reason.

``python -m spikefed.experiment.combinations`` prints the matrix as Markdown (docs/combinations.md is that output).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

from . import compat
from .config import ConfigError, RunSettings, apply_overrides, build_settings

__all__ = ["BASE", "FEATURES", "PairStatus", "matrix", "pair_overrides", "pair_status", "to_markdown"]

#: a tiny federation: enough to run two rounds of any pair in a second or two
BASE: tuple[str, ...] = (
    "partition.num_clients=6", "partition.min_size=5", "federation.fraction=0.5", "federation.rounds=2",
    "local.num_steps=4", "local.epochs=1", "local.batch_size=32", "data.limit=240",
)

#: the hidden width of the fully connected models (mlp, recurrent)
MLP_WIDTH = "model.hidden=[8]"

#: the seeds' features, each as the overrides that switch it on
FEATURES: dict[str, tuple[str, ...]] = {
    "fleet": ("devices.fleet=[{profile: analog20_4bit, fraction: 0.5}, {profile: coarse_dt, fraction: 0.5}]",),
    "continual": ("continual.stream=domain_drift", "continual.regularizer=l2", "continual.lam=1",
                  "continual.rotation=30"),
    "dp": ("privacy.dp=true", "privacy.noise_multiplier=0.5"),
    "secagg": ("privacy.secure_aggregation=true",),
    "topk_ef": ("compression.uplink=topk", "compression.fraction=0.05", "compression.error_feedback=true"),
    "scaffold": ("federation.strategy=scaffold",),
    "fedprox": ("federation.strategy=fedprox", "federation.prox_mu=0.01"),
    "attack_defence": ("robustness.attack=sign_flip", "robustness.attack_fraction=0.34", "robustness.defense=median"),
    "faults": ("faults.dropout=0.3",),
    "conv": ("model.kind=conv", "model.channels=[4]"),
    "recurrent": ("model.kind=recurrent",),
    "delays": ("model.delays=3",),
    "alif": ("model.neuron=alif",),
    "event_data": ("data.name=event_digits", "data.bins=4"),
    "eprop": ("local.method=eprop", "local.loss=ce_membrane", "local.membrane_reduction=time_mean",
              "model.readout=membrane"),
}


@dataclass(frozen=True)
class PairStatus:
    """What a pair of features does: ``kind`` is runs / refused / alternatives / invalid."""

    a: str
    b: str
    kind: str
    message: str = ""


def _keys(overrides: tuple[str, ...]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in overrides)  # type: ignore[misc]


def pair_overrides(a: str, b: str) -> list[str]:
    """The overrides of the pair on the base (``KeyError`` for an unknown feature); fully connected models get
    :data:`MLP_WIDTH` (a conv net takes ``model.channels`` instead)."""
    extra = [] if "model.kind=conv" in (*FEATURES[a], *FEATURES[b]) else [MLP_WIDTH]
    return [*BASE, *extra, *FEATURES[a], *FEATURES[b]]


def _table_reasons(overrides: list[str]) -> list[str] | None:
    """The table's messages for these overrides, validated without the table (``None``: they do not validate
    even then)."""
    saved = compat.REFUSALS
    try:
        compat.REFUSALS = ()  # type: ignore[misc]
        try:
            settings = RunSettings.model_validate(apply_overrides({}, overrides))
        except Exception:  # noqa: BLE001 - any validation error: not the table's
            return None
    finally:
        compat.REFUSALS = saved  # type: ignore[misc]
    return compat.refusals(settings, "run")


def pair_status(a: str, b: str) -> PairStatus:
    """Validate the pair ``a`` + ``b`` and classify it (see the module docstring)."""
    ka, kb = _keys(FEATURES[a]), _keys(FEATURES[b])
    clash = sorted(k for k in set(ka) & set(kb) if ka[k] != kb[k])
    if clash:
        return PairStatus(a, b, "alternatives", f"both set {clash[0]} ({ka[clash[0]]} vs {kb[clash[0]]})")
    overrides = pair_overrides(a, b)
    try:
        build_settings(RunSettings, None, overrides)
    except ConfigError as e:
        reasons = _table_reasons(overrides)
        if reasons and str(e) in reasons:
            return PairStatus(a, b, "refused", str(e))
        return PairStatus(a, b, "invalid", str(e))
    return PairStatus(a, b, "runs")


def matrix() -> Iterator[PairStatus]:
    """Every unordered pair of :data:`FEATURES`, in their order."""
    for a, b in itertools.combinations(FEATURES, 2):
        yield pair_status(a, b)


def to_markdown(statuses: list[PairStatus]) -> str:
    """The refused pairs with their reasons, the alternatives, and the counts."""
    lines = [f"{len(FEATURES)} features, {len(statuses)} pairs: "
             + ", ".join(f"{sum(s.kind == k for s in statuses)} {k}"
                         for k in ("runs", "refused", "alternatives", "invalid")) + ".", "",
             "| feature | overrides |", "|---|---|"]
    lines += [f"| {f} | `{' '.join(o)}` |" for f, o in FEATURES.items()]
    for kind, title in (("refused", "Refused by the compatibility table"), ("alternatives", "Alternatives"),
                        ("invalid", "Invalid (a defect: every refusal must come from the table)")):
        rows = [s for s in statuses if s.kind == kind]
        if rows:
            lines += ["", f"### {title}", "", "| pair | reason |", "|---|---|"]
            lines += [f"| {s.a} + {s.b} | {s.message.replace('|', '/')} |" for s in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(to_markdown(list(matrix())), end="")
