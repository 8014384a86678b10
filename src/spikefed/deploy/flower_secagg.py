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
from ..federated.privacy import flatten_deltas, target_from_mean_delta, unflatten
from ..federated.round import RoundContext, Stage
from ..federated.simulation import build_client, client_generator, train_local
from ..federated.types import ClientUpdate, FitInstructions, params_of


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

        from .flower import DeploymentError, client_setup

        _, spec, node = client_setup(run_config, node_config)
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


class SecAggPlusStage(Stage):
    """Flower's SecAgg+ as the round's aggregate stage: it sends the sampled clients their TRAIN messages through
    ``SecAggPlusWorkflow``, learns only the weighted mean of their chart-space deltas and steps the strategy
    towards it (``Strategy.step_to_target``). Everything else in the round (sampling, broadcast bytes, evaluation,
    the metrics row) is the simulator's."""

    key = "secaggplus"

    def __init__(self, grid: Any, context: Any, nodes: Mapping[int, int]) -> None:
        self.grid, self.context, self.nodes = grid, context, dict(nodes)

    def configure(self, ctx: RoundContext) -> None:
        from .flower import DeploymentError

        if len(ctx.sampled) < 2:
            raise DeploymentError("SecAgg+ needs at least 2 clients per round; raise federation.fraction or "
                                  "partition.num_clients")

    def aggregate(self, ctx: RoundContext) -> bool:
        sim = ctx.sim
        spec, st = sim.spec, sim.state
        mean, results = self.secure_mean(ctx)
        target = target_from_mean_delta(st.global_params, unflatten(mean, st.global_params), sim.manifolds)
        st.global_params = spec.strategy.step_to_target(ctx.rnd, st.global_params, target, sim.manifolds)
        ctx.accepted = [ClientUpdate(int(proxy.cid), int(r.num_examples), {}, dict(r.metrics))
                        for proxy, r in results]
        return True

    def metrics(self, ctx: RoundContext) -> None:
        ctx.row.update({"secure": "secaggplus", "bytes_up": None})  # the masked vectors are Flower's

    def secure_mean(self, ctx: RoundContext) -> tuple[torch.Tensor, list[Any]]:
        """Run the SecAgg+ workflow for the round: ``(weighted mean of the chart-space deltas, fit results)``."""
        from flwr.app import ConfigRecord
        from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
        from flwr.server import ServerConfig
        from flwr.server.compat.legacy_context import LegacyContext
        from flwr.server.strategy import Strategy as LegacyStrategy
        from flwr.server.workflow import SecAggPlusWorkflow
        import flwr.compat.common.recorddict_compat as compat

        from .flower import DeploymentError, run_option

        sim, rnd, sampled, fit, nodes = ctx.sim, ctx.rnd, ctx.sampled, ctx.fit, self.nodes
        spec, st = sim.spec, sim.state
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
                    raise DeploymentError(f"round {rnd}: SecAgg+ failed on {len(failures)} client(s): "
                                          f"{failures[0]}")
                outcome["mean"] = parameters_to_ndarrays(results[0][1].parameters)[0]
                outcome["results"] = results
                return None, {}

            def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
                return []

            def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> Any:
                return None, {}

            def evaluate(self, server_round: int, parameters: Any) -> Any:
                return None

        run_config = self.context.run_config
        legacy = LegacyContext(self.context, config=ServerConfig(num_rounds=1), strategy=_Bridge())
        order = list(st.global_params)
        legacy.state.array_records["parameters"] = compat.parameters_to_arrayrecord(
            ndarrays_to_parameters([st.global_params[n].numpy() for n in order]), True)
        legacy.state.config_records["config"] = ConfigRecord({"current_round": rnd})
        workflow = SecAggPlusWorkflow(num_shares=len(sampled), reconstruction_threshold=max(2, len(sampled) - 1),
                                      max_weight=float(max(sizes.values())),
                                      clipping_range=float(run_option(run_config, "secagg-clipping-range")),
                                      quantization_range=int(run_option(run_config, "secagg-quantization-range")),
                                      timeout=float(run_option(run_config, "round-timeout")))
        workflow(self.grid, legacy)
        if "mean" not in outcome:
            raise DeploymentError(f"round {rnd}: the SecAgg+ protocol halted (too few clients answered within "
                                  "round-timeout; see the ServerApp log)")
        return torch.from_numpy(np.asarray(outcome["mean"], dtype=np.float64)), outcome["results"]


def secagg_tolerance(sizes: list[int], clipping_range: float, quantization_range: int) -> float:
    """Bound on ``|SecAgg+ mean - exact mean|`` per entry (module docstring): ``K (2R/Q) / sum_k n_k/max n``."""
    ratios = [s / max(sizes) for s in sizes]
    return len(sizes) * (2.0 * clipping_range / quantization_range) / sum(ratios)

