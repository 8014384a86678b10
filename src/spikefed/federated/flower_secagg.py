"""Flower's SecAgg+ around a spikefed round (run config ``secure = "secaggplus"``).

Flower 1.41 provides SecAgg+ as ``flwr.server.workflow.SecAggPlusWorkflow`` (server) and
``flwr.client.mod.secaggplus_mod`` (client); both speak the legacy FitIns/FitRes records. Each client uploads its
chart-space delta ``phi(w_k) - phi(x)`` (flattened as the simulator's private path does,
:func:`~spikefed.federated.privacy.flatten_deltas`); the protocol weights it by ``num_examples`` and the server
learns only the weighted mean, which feeds ``Strategy.step_to_target`` exactly like the simulator's DP / secure
aggregation (:func:`~spikefed.federated.privacy.target_from_mean_delta`).

Precision: SecAgg+ clips each weighted entry to ``[-R, R]`` (``secagg-clipping-range``) and quantizes it
stochastically onto ``Q`` levels (``secagg-quantization-range``), so each client adds an error below one step
``2R/Q``; the mean of K clients with weights ``n_k / max_weight`` is off by at most ``K (2R/Q) / sum_k ratio_k``
per entry. The server cannot validate individual updates (it never sees them): the clipping range bounds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from ..manifold import manifold_of
from .privacy import flatten_deltas, target_from_mean_delta, unflatten
from .simulation import Simulation, build_client, client_generator, train_local
from .types import FitInstructions, ParamDict, params_of


def secagg_mod(msg: Any, ctxt: Any, call_next: Any) -> Any:
    """``secaggplus_mod`` for SecAgg+ messages, the plain handler for everything else."""
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if msg.metadata.message_type == "train" and RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


class _SecAggClientTrain:
    """The ClientApp's train handler inside SecAgg+ (the mod calls it in the masked-vector stage)."""

    @staticmethod
    def handles(msg: Any) -> bool:
        return "fitins.parameters" in msg.content.array_records

    def __call__(self, content: Any, run_config: Mapping[str, Any], node_config: Mapping[str, Any]) -> Any:
        from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
        import flwr.compat.common.recorddict_compat as compat

        from .flower import DeploymentError, _client_setup

        _, spec, node = _client_setup(run_config, node_config)
        fitins = compat.recorddict_to_fitins(content, keep_input=True)
        rnd, cid = int(fitins.config["round"]), int(fitins.config["client"])
        if cid != node.partition_id:
            raise DeploymentError(f"the server addressed client {cid} but this node holds partition "
                                  f"{node.partition_id}")
        reference = params_of(spec.model)
        arrays = parameters_to_ndarrays(fitins.parameters)
        received = {n: torch.from_numpy(np.array(a, copy=True)).reshape(r.shape).to(r.dtype)
                    for (n, r), a in zip(reference.items(), arrays)}
        fit = FitInstructions(round=rnd, prox_mu=float(fitins.config["prox-mu"]))
        upd = train_local(spec, received, [build_client(spec, cid)], [client_generator(spec.seed, rnd, cid)], fit,
                          None, None)[0]
        manifolds = {n: manifold_of(p) for n, p in spec.model.named_parameters()}
        delta = flatten_deltas([upd.params], received, manifolds)[0].numpy()
        metrics = {k: float(v) for k, v in upd.metrics.items() if isinstance(v, (int, float))}
        res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([delta]), int(upd.num_samples), metrics)
        return compat.fitres_to_recorddict(res, keep_input=True)


client_secagg_train = _SecAggClientTrain()


@dataclass
class _Proxy:
    node_id: int
    cid: str = ""


def secaggplus_round(sim: Simulation, grid: Any, context: Any, nodes: Mapping[int, int]) -> dict[str, Any]:
    """One round of ``sim`` through Flower's SecAgg+: sample, broadcast, secure weighted mean of the deltas,
    ``Strategy.step_to_target``, evaluate; returns the metrics row (appended to ``sim.state.metrics``)."""
    import time

    from flwr.app import ConfigRecord
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerConfig
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import Strategy as LegacyStrategy
    from flwr.server.workflow import SecAggPlusWorkflow
    import flwr.compat.common.recorddict_compat as compat

    from .flower import DeploymentError, run_option

    spec, st = sim.spec, sim.state
    rnd = st.round + 1
    start = time.perf_counter()
    sampled = sim.sample_clients(rnd)
    if len(sampled) < 2:
        raise DeploymentError("SecAgg+ needs at least 2 clients per round; raise federation.fraction or "
                              "partition.num_clients")
    fit = spec.strategy.configure_fit(rnd, st.global_params)
    sizes = {c: len(spec.parts[c]) for c in sampled}
    outcome: dict[str, Any] = {}

    class _Bridge(LegacyStrategy):  # the legacy strategy interface the workflow drives; spikefed decides
        def initialize_parameters(self, client_manager: Any) -> Any:
            return None

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            return [(_Proxy(nodes[c], str(c)), FitIns(parameters, {"round": rnd, "client": c,
                                                                    "prox-mu": float(fit.prox_mu)}))
                    for c in sampled]

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            if failures:
                raise DeploymentError(f"round {rnd}: SecAgg+ failed on {len(failures)} client(s): {failures[0]}")
            outcome["mean"] = parameters_to_ndarrays(results[0][1].parameters)[0]
            outcome["results"] = results
            return None, {}

        def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            return []

        def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> Any:
            return None, {}

        def evaluate(self, server_round: int, parameters: Any) -> Any:
            return None

    legacy = LegacyContext(context, config=ServerConfig(num_rounds=1), strategy=_Bridge())
    order = list(st.global_params)
    legacy.state.array_records["parameters"] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([st.global_params[n].numpy() for n in order]), True)
    legacy.state.config_records["config"] = ConfigRecord({"current_round": rnd})
    workflow = SecAggPlusWorkflow(num_shares=len(sampled), reconstruction_threshold=max(2, len(sampled) - 1),
                                  max_weight=float(max(sizes.values())),
                                  clipping_range=float(run_option(context.run_config, "secagg-clipping-range")),
                                  quantization_range=int(run_option(context.run_config, "secagg-quantization-range")),
                                  timeout=float(run_option(context.run_config, "round-timeout")))
    workflow(grid, legacy)
    if "mean" not in outcome:
        raise DeploymentError(f"round {rnd}: the SecAgg+ protocol halted (too few clients answered within "
                              "round-timeout; see the ServerApp log)")
    mean = torch.from_numpy(np.asarray(outcome["mean"], dtype=np.float64))
    target = target_from_mean_delta(st.global_params, unflatten(mean, st.global_params), sim.manifolds)
    st.global_params = spec.strategy.step_to_target(rnd, st.global_params, target, sim.manifolds)
    st.strategy_state = spec.strategy.state_dict()
    results = outcome["results"]
    n = [r.num_examples for _, r in results]
    row: dict[str, Any] = {
        "round": rnd, "clients": len(sampled), "accepted": len(results), "rejected": 0,
        "bytes_up": None, "bytes_down": None,
        "train_loss": float(np.average([r.metrics.get("loss", np.nan) for _, r in results], weights=n)),
        "train_accuracy": float(np.average([r.metrics.get("accuracy", np.nan) for _, r in results], weights=n)),
        "secure": "secaggplus",
    }
    if rnd % spec.eval_every == 0 or rnd == spec.rounds:
        row.update(sim.evaluate(rnd))
    else:
        row.update(dict.fromkeys(sim.eval_keys()))
    row["seconds"] = time.perf_counter() - start
    st.seconds += row["seconds"]
    st.round = rnd
    st.metrics.append(row)
    return row


def secagg_tolerance(sizes: list[int], clipping_range: float, quantization_range: int) -> float:
    """Bound on ``|SecAgg+ mean - exact mean|`` per entry (module docstring): ``K (2R/Q) / sum_k n_k/max n``."""
    ratios = [s / max(sizes) for s in sizes]
    return len(sizes) * (2.0 * clipping_range / quantization_range) / sum(ratios)

