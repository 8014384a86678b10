"""Spiking activity of a trained model for the report: a spike raster of one test sample, every neuron's firing
rate (dead and saturated neurons), and the per-layer operation counts and energy (ACs vs MACs).

:func:`model_activity` measures a model in hand (the runner passes the final global model);
:func:`activity_from_run` rebuilds the model from a run directory's ``config.yaml`` and loads the global
parameters of its verified ``checkpoint.pt`` (an interrupted run, ``spikefed report DIR``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

#: test samples measured (firing rates, energy per layer)
ACTIVITY_SAMPLES = 256
#: a neuron whose firing rate (spikes per step) is at least this is reported as saturated
SATURATED_RATE = 0.95


@torch.no_grad()
def model_activity(model: torch.nn.Module, x: torch.Tensor, energy: Any) -> dict[str, Any]:
    """Activity of ``model`` on the time-major input ``x [T, B, ...]`` (already encoded).

    Returns a JSON-ready dict: ``layers`` (one per spiking layer, in order: ``name``, ``neurons``, ``rates``
    = spikes per step of every neuron averaged over the batch, ``dead`` = neurons that never spiked,
    ``saturated`` = neurons with rate >= :data:`SATURATED_RATE`), ``raster`` (per layer, the ``times`` and
    ``neurons`` of every spike of the first sample), ``ops`` (per layer of :func:`~spikefed.hardware.metrics.
    measure`, per inference: name, kind, ACs, MACs, spikes, energy), ``time_steps``, ``samples`` and the energy
    model's ``e_ac`` / ``e_mac`` / ``e_spike`` (joules).
    """
    from ...hardware.metrics import measure

    was_training = model.training
    model.eval()
    try:
        out = model(x)
        measured = measure(model, x, energy)
    finally:
        model.train(was_training)
    hidden = list(getattr(out, "hidden", []) or [])
    ops = measured.to_dict()
    names = [layer["name"] for layer in ops["layers"] if layer["kind"] == "neuron"]
    if len(names) != len(hidden):
        names = [f"spiking layer {i}" for i in range(len(hidden))]
    output = getattr(out, "output", None)
    if hidden and isinstance(output, torch.Tensor) and hidden[-1].shape == output.shape:
        names[-1] += " (output)"
    steps = int(x.shape[0])
    layers, raster = [], []
    for name, h in zip(names, hidden):
        spikes = (h != 0).reshape(h.shape[0], h.shape[1], -1).float()  # [T, B, N]
        rates = spikes.mean(dim=(0, 1))
        layers.append({"name": name, "neurons": int(rates.numel()), "rates": rates.tolist(),
                       "dead": int((rates == 0).sum()), "saturated": int((rates >= SATURATED_RATE).sum())})
        t, n = torch.nonzero(spikes[:, 0], as_tuple=True)
        raster.append({"name": name, "times": t.tolist(), "neurons": n.tolist()})
    em = ops["energy_model"]
    return {"layers": layers, "raster": raster, "ops": ops["layers"], "time_steps": steps,
            "samples": int(x.shape[1]), "e_ac": em["e_ac"], "e_mac": em["e_mac"], "e_spike": em["e_spike"]}


def activity_on_test(model: torch.nn.Module, x_test: torch.Tensor, local: Any, seed: int, energy: Any,
                     params: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """:func:`model_activity` of ``model`` (with ``params`` loaded, when given) on the first
    :data:`ACTIVITY_SAMPLES` test samples, encoded as in training (``local``: the run's
    :class:`~spikefed.snn.train.TrainConfig`) with the run's seeded evaluation generator."""
    from ...federated.types import load_params_
    from ...seeding import Purpose, torch_generator
    from ...snn.train import encode_inputs

    if params is not None:
        load_params_(model, dict(params))
    encoded = encode_inputs(x_test[:ACTIVITY_SAMPLES], local, torch_generator(seed, Purpose.EVAL, 0))
    return model_activity(model, encoded, energy)


def activity_from_run(run_dir: str | Path, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """Activity of the global model in ``run_dir/checkpoint.pt``, the model rebuilt from ``config`` (the run's
    ``config.yaml``). ``None`` when there is no checkpoint or no config (nothing to rebuild); a config or
    checkpoint that does not fit raises ``ValueError`` naming the file."""
    from pydantic import ValidationError

    from ...federated.checkpoint import read_checkpoint
    from ...hardware.energy import EnergyModel
    from ...seeding import Purpose, torch_generator
    from ..centralized import build_model, load_dataset
    from ..config import ConfigError, RunSettings, TrainSettings

    ckpt = Path(run_dir) / "checkpoint.pt"
    where = Path(run_dir) / "config.yaml"
    if not ckpt.is_file() or not config:
        return None
    try:
        settings = RunSettings.model_validate(dict(config))
        data = load_dataset(settings.data, settings.seed)
        model = build_model(TrainSettings(seed=settings.seed, data=settings.data, model=settings.model,
                                          train=settings.local), data.step_features, data.num_classes,
                            torch_generator(settings.seed, Purpose.INIT))
    except (ValidationError, ConfigError) as e:
        raise ValueError(f"{where}: not a spikefed run config: {e}") from None
    params = read_checkpoint(ckpt)["global_params"]
    e = settings.energy
    try:
        return activity_on_test(model, data.x_test, settings.local.to_train_config(), settings.seed,
                                EnergyModel(e.e_ac, e.e_mac, e.e_spike), params)
    except ValueError as err:
        raise ValueError(f"{ckpt}: {err}") from None
