"""Local training of a cohort of clients: one batched computation, and a sequential reference beside it.

A round trains K sampled clients from the same global parameters. :func:`train_cohort` stacks the K copies
of every trained parameter into ``[K, ...]`` tensors and runs all clients' mini-batches through the network at
once, by the model's own forward under ``torch.func.functional_call`` + ``torch.func.vmap`` (any spikefed
model: every neuron, conv nets, recurrent layers, delays), or, for LIF/IF MLPs, by the faster hand-written
stacked forward (:mod:`spikefed.snn.stacked`, :func:`~spikefed.snn.stacked.forward_path`). Clients own
different amounts of data, so step ``j`` only involves the clients that still have a batch at ``j``; the clients
of a step run in groups of equal batch width (:mod:`.cohort_widths`: a batch's length rounded up to a multiple
of 8), the few padded samples masked (weight 0). Each client's loss is the mean
over its own batch, so summing the K losses and differentiating w.r.t. the stacks gives every client exactly
its own gradient. The optimizer (Adam or SGD with momentum, as ``torch.optim``) keeps per-client moments and
step counts and only moves the clients that took a step.

:func:`train_sequential` trains the same clients one after another with a private copy of the model and
``torch.optim``, drawing the same batches from the same per-client generators; the tests check that both give
the same client parameters (float64, 1e-10).

Local objective of client k (``w_t``: the global parameters of the round)::

    L_k(w) = mean_{b in batch} loss(f_w(x_b), y_b) + activity regularisers + (mu / 2) ||w - w_t||^2   (FedProx)
             + (lambda / 2) sum_i F_i (w_i - w*_i)^2     (continual stability term, spikefed.federated.continual)

and with SCAFFOLD the gradient is corrected to ``g + c - c_k`` before the optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..data.compact import as_float_batch
from ..manifold import manifold_of
from ..snn.client_conv import resolve_conv_mode
from ..snn.encoding import encode
from ..snn.stacked import cohort_forward as cohort_forward  # re-exported (the hand-written LIF/IF MLP forward)
from ..snn.stacked import (DEFAULT_CONV, forward_path, masked_regularizers, mlp_path_reason, per_sample_loss,
                           predict_cohort, stacked_forward, vmap_reason)
from ..snn.train import TrainConfig, input_dtype, make_optimizer, predict, task_loss
from .cohort_memory import clients_per_chunk
from .cohort_widths import WIDTH_STEP, batch_widths, width_groups
from .continual import StabilityPenalty, stack_penalties, stacked_penalty
from .stacked_adam import fusable, fused_adam_
from .types import ClientUpdate, FitInstructions, ParamDict, load_params_, tensor_sum

ENGINES = ("cohort", "sequential")


@dataclass
class ClientData:
    """One client's local training data (features ``[n, *F]``, labels ``[n]``)."""

    client_id: int
    x: torch.Tensor
    y: torch.Tensor

    @property
    def num_samples(self) -> int:
        return int(self.y.shape[0])


def client_schedule(n: int, cfg: TrainConfig, generator: torch.Generator,
                    budget: int | None = None) -> list[torch.Tensor]:
    """The client's mini-batches for one round: ``cfg.epochs`` seeded permutations cut into batches.

    All permutations are drawn first, so the generator's later draws (stochastic encoders) do not depend on
    how the batches are executed. ``cfg.local_steps`` (if set) caps the number of steps, and so does
    ``budget`` (a per-client step budget, e.g. the steps a straggler finishes before the round deadline): the
    budgeted schedule is a prefix of the full one, drawn identically.
    """
    perms = [torch.randperm(n, generator=generator, device=generator.device) for _ in range(cfg.epochs)]
    batches = [p[i:i + cfg.batch_size] for p in perms for i in range(0, n, cfg.batch_size)]
    batches = batches[:cfg.local_steps] if cfg.local_steps else batches
    return batches[:budget] if budget is not None else batches


def planned_steps(n: int, cfg: TrainConfig) -> int:
    """Length of the full :func:`client_schedule` of a client with ``n`` samples, without drawing it:
    ``tau = epochs * ceil(n / batch_size)``, capped by ``local_steps``."""
    steps = cfg.epochs * -(-int(n) // cfg.batch_size)
    return min(steps, cfg.local_steps) if cfg.local_steps else steps


def supports_cohort(model: torch.nn.Module, cfg: TrainConfig) -> str | None:
    """``None`` if the batched engine trains this model/config, else the reason (it trains on the sequential one).

    Any model whose forward runs under ``torch.func.vmap`` is covered (:func:`~spikefed.snn.stacked.vmap_reason`);
    the training method must be full BPTT."""
    if cfg.tbptt is not None:
        return ("the batched cohort engine runs full BPTT; truncated BPTT (tbptt) re-runs windows from each "
                "layer's carried state, which the sequential engine does per client")
    if cfg.method != "bptt":
        return (f"the batched cohort engine runs BPTT; method={cfg.method} computes its gradient online per "
                "client and trains on the sequential engine")
    if cfg.reg_membrane_l1 or cfg.reg_membrane_l2:
        return ("the batched cohort engine's stacked forward returns no output-layer membrane for the membrane "
                "regularisers (local.reg_membrane_l1/l2); they train on the sequential engine")
    if cfg.ib_weight or cfg.adversarial != "none" or cfg.distill:
        return "the information bottleneck, adversarial training and distillation run on the sequential engine"
    if mlp_path_reason(model) is None and any(p.requires_grad for p in model.parameters()):
        return None  # the hand-written stacked forward runs it: no vmap probe (a forward under vmap per round)
    return vmap_reason(model)


# -- stacked optimizer --------------------------------------------------------------------------------------

class StackedOptimizer:
    """Adam / SGD(momentum) over stacked ``[K, ...]`` parameters with per-client step counts and a mask.

    The update of client k is exactly that of ``torch.optim.Adam`` / ``torch.optim.SGD`` on its own slice
    (L2 weight decay added to the gradient, Adam bias correction with the client's own step count).
    """

    def __init__(self, params: ParamDict, cfg: TrainConfig, k: int) -> None:
        self.params, self.cfg = params, cfg
        device = next(iter(params.values())).device if params else torch.device("cpu")
        self.steps = torch.zeros(k, dtype=torch.int64, device=device)
        self.host_steps: list[int] | None = [0] * k  # the same counts on the host (None once unknown)
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()} if cfg.optimizer == "adam" else {}

    @torch.no_grad()
    def step(self, grads: ParamDict, active: torch.Tensor) -> None:
        cfg = self.cfg
        self.steps[active] += 1
        self.host_steps = None  # not tracked on the host on this (masked) path
        if bool(active.all()):
            self._step_all(grads)
            return
        idx = active.nonzero().flatten()
        for name, p in self.params.items():
            g = grads[name][idx]
            pa = p[idx]
            if cfg.weight_decay:
                g = g + cfg.weight_decay * pa
            if cfg.optimizer == "adam":
                b1, b2, eps = 0.9, 0.999, 1e-8
                m = self.m[name][idx].mul_(b1).add_(g, alpha=1 - b1)
                v = self.v[name][idx].mul_(b2).addcmul_(g, g, value=1 - b2)
                t = self.steps[idx].to(p.dtype).view(-1, *([1] * (p.dim() - 1)))
                bc1 = 1 - b1**t
                bc2 = 1 - b2**t
                denom = (v.sqrt() / bc2.sqrt()).add_(eps)
                pa = pa - (cfg.lr / bc1) * m / denom
                self.m[name][idx] = m
                self.v[name][idx] = v
            else:
                first = (self.steps[idx] == 1).view(-1, *([1] * (p.dim() - 1)))
                buf = torch.where(first, g, self.m[name][idx] * cfg.momentum + g) if cfg.momentum else g
                self.m[name][idx] = buf
                pa = pa - cfg.lr * buf
            p[idx] = pa
            manifold = manifold_of(p)
            if manifold.kind != "euclidean":
                manifold.project_(p)


    @torch.no_grad()
    def step_prefix(self, grads: ParamDict, m: int) -> None:
        """Clients ``0..m-1`` take a step (``grads[n]`` is ``[m, ...]``): the update in place on views of the
        first ``m`` rows, no gather/scatter and no index tensor (the cohort engine orders clients by schedule
        length, so the clients still training are always a prefix)."""
        self.steps[:m] += 1
        if self.host_steps is not None:
            self.host_steps[:m] = [t + 1 for t in self.host_steps[:m]]
        self._step_all(grads, m)

    def _step_all(self, grads: ParamDict, count: int | None = None) -> None:
        """Every client (or the first ``count``) takes a step: the same update in place on the stacks."""
        cfg = self.cfg
        rows = slice(None) if count is None else slice(0, count)
        steps = self.steps[rows]
        fused = self._fused_adam(grads, rows) if cfg.optimizer == "adam" else set()
        for name, full in self.params.items():
            if name in fused:
                continue
            p = full[rows]
            g = grads[name]
            if cfg.weight_decay:
                g = g.add(p, alpha=cfg.weight_decay)
            shape = (-1, *([1] * (p.dim() - 1)))
            if cfg.optimizer == "adam":
                b1, b2, eps = 0.9, 0.999, 1e-8
                m = self.m[name][rows].mul_(b1).add_(g, alpha=1 - b1)
                v = self.v[name][rows].mul_(b2).addcmul_(g, g, value=1 - b2)
                t = steps.to(p.dtype).view(shape)
                denom = (v.sqrt() / (1 - b2**t).sqrt()).add_(eps)
                p.addcdiv_(m * (cfg.lr / (1 - b1**t)), denom, value=-1.0)
            else:
                if cfg.momentum:
                    first = (steps == 1).view(shape)
                    buf = torch.where(first, g, self.m[name][rows] * cfg.momentum + g)
                    self.m[name][rows].copy_(buf)
                else:
                    buf = g
                p.sub_(buf, alpha=cfg.lr)
            manifold = manifold_of(full)
            if manifold.kind != "euclidean":
                manifold.project_(p)

    def _fused_adam(self, grads: ParamDict, rows: slice) -> set[str]:
        """Adam on ``rows`` as one fused pass per stack (:mod:`.stacked_adam`) when those clients share one step
        count (known on the host), for the stacks whose per-client size the kernel's vector loop divides
        (:func:`~.stacked_adam.fusable`, so a client's numbers do not depend on how many clients share the
        stack); returns the names it updated (the others take the unfused update)."""
        host = self.host_steps
        counts = set(host[rows]) if host is not None else set()
        names = [n for n, p in self.params.items() if fusable(p)]
        if len(counts) != 1 or not names:
            return set()
        params = [self.params[n][rows] for n in names]
        if not fused_adam_(params, [grads[n] for n in names], [self.m[n][rows] for n in names],
                           [self.v[n][rows] for n in names], counts.pop(), self.cfg.lr, self.cfg.weight_decay):
            return set()
        for name, p in zip(names, params):
            manifold = manifold_of(self.params[name])
            if manifold.kind != "euclidean":
                manifold.project_(p)
        return set(names)


def _gather_batch(clients: Sequence[ClientData], schedules: Sequence[list[torch.Tensor]], step: int,
                  active: list[int], dtype: torch.dtype, width: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack the active clients' batches at ``step``: x ``[Ka, Bmax, *F]`` (the model's float ``dtype``: compact
    stores are converted here, batch by batch), y ``[Ka, Bmax]``, mask ``[Ka, Bmax]``; ``Bmax`` is the longest
    batch, at least ``width`` (the group's width, :func:`batch_widths`)."""
    batches = [schedules[k][step] for k in active]
    bmax = max(width, max(len(b) for b in batches))
    feat = clients[active[0]].x.shape[1:]
    dev = clients[active[0]].x.device
    x = torch.zeros((len(active), bmax, *feat), dtype=dtype, device=dev)
    y = torch.zeros((len(active), bmax), dtype=torch.int64, device=dev)
    mask = torch.zeros((len(active), bmax), dtype=torch.bool, device=dev)
    for row, (k, b) in enumerate(zip(active, batches)):
        x[row, :len(b)] = as_float_batch(clients[k].x[b], dtype)
        y[row, :len(b)] = clients[k].y[b]
        mask[row, :len(b)] = True
    return x, y, mask


def _encode_cohort(x: torch.Tensor, mask: torch.Tensor, cfg: TrainConfig, gens: list[torch.Generator],
                   sizes: Sequence[int] | None = None) -> torch.Tensor:
    """``x [Ka, B, *F]`` -> ``[T, Ka, B, *F]`` (K-major memory). Stochastic encoders draw per client, for its
    valid samples only (so the draws are those of training the client alone); padded rows stay zero.
    ``sizes`` (the valid samples per row, known on the host) saves reading them back from ``mask``."""
    if cfg.encoder == "direct" and not cfg.encoder_kwargs:
        return x.unsqueeze(0).expand(cfg.num_steps, *x.shape)  # time-constant view
    if cfg.encoder == "events":  # pre-binned frames [Ka, B, T, *F] -> [T, Ka, B, *F], a view
        encode("events", x[0], cfg.num_steps)  # checks T == num_steps
        return x.movedim(2, 0)
    out = torch.zeros((x.shape[0], cfg.num_steps, *x.shape[1:]), dtype=x.dtype, device=x.device)
    for i, g in enumerate(gens):
        n = sizes[i] if sizes is not None else int(mask[i].sum())
        out[i, :, :n] = encode(cfg.encoder, x[i, :n], cfg.num_steps, generator=g, **cfg.encoder_kwargs)
    return out.transpose(0, 1)


def train_cohort(model: torch.nn.Module, global_params: ParamDict, clients: Sequence[ClientData],
                 generators: Sequence[torch.Generator], cfg: TrainConfig, fit: FitInstructions,
                 controls: Sequence[ParamDict | None] | None = None,
                 step_budgets: Sequence[int | None] | None = None,
                 devices: Sequence["ClientDevice"] | None = None,
                 penalties: Sequence[StabilityPenalty | None] | None = None,
                 path: str = "auto", max_clients: int | None = None,
                 schedules: Sequence[list[torch.Tensor]] | None = None,
                 conv: str = DEFAULT_CONV, checked: bool = False, bucket: int = WIDTH_STEP) -> list[ClientUpdate]:
    """Train every client in ``clients`` from ``global_params`` as one batched computation (in chunks of
    ``max_clients``, by default as many as :func:`~spikefed.federated.cohort_memory.clients_per_chunk` fits in
    its activation budget; clients are independent, so the updates are the same).

    ``path`` picks the stacked forward (:func:`~spikefed.snn.stacked.forward_path`: ``auto``, ``mlp``, ``vmap``),
    ``conv`` how its ``vmap`` path runs convolutions (:mod:`spikefed.snn.client_conv`: ``auto`` |
    ``loop`` | ``grouped``); ``bucket`` the batch widths (:func:`~.cohort_widths.batch_widths`: each step's
    clients grouped by their batch length rounded up to a multiple of ``bucket``, one stacked forward per
    group; 0 pads every batch to ``cfg.batch_width``).
    ``checked=True`` skips :func:`supports_cohort` (for the chunk and reordering calls below, already checked).

    With ``devices``, client k starts from ``devices[k].program`` and its forward runs through its device's
    physics (mismatch, quantization-aware training, lost steps); the returned parameters are programs.

    ``generators[k]`` is client k's own generator (batch order, stochastic encoding). ``controls[k]`` is
    SCAFFOLD's client control variate ``c_k`` (with ``fit.server_control`` = c). ``step_budgets[k]`` (optional)
    caps client k's local steps (:func:`client_schedule`); the batched loop already lets each client stop after
    its own number of steps (step ``j`` only moves the clients whose schedule is longer than ``j``), so a
    budget is just a shorter schedule. Returns one update per client.
    """
    resolve_conv_mode(conv)  # a bad rule name or bucket fails here, before any work
    batch_widths([], cfg, bucket)
    reason = None if checked else supports_cohort(model, cfg)
    if reason is not None:
        raise ValueError(reason)
    chunk = max_clients or (clients_per_chunk(model, clients[0].x[:1], cfg) if clients else 1)
    k = len(clients)
    budgets = list(step_budgets) if step_budgets is not None else [None] * k
    for what, seq in (("step_budgets", budgets), ("devices", devices), ("penalties", penalties),
                      ("controls", controls)):
        if seq is not None and len(seq) != k:
            raise ValueError(f"{what} has {len(seq)} entries for {k} clients")
    if schedules is None:  # drawn here, or handed down (already drawn) by the reordering call below
        schedules = [client_schedule(c.num_samples, cfg, g, b) for c, g, b in zip(clients, generators, budgets)]
    lengths = [len(s) for s in schedules]
    # longest schedules first (the clients active at step j are then a prefix: slices, no index tensors), and
    # among equal lengths the larger clients first, so that a chunk's clients share batch widths (fewer width
    # groups per step); clients are independent, so chunks give the same updates; activations stay in cache
    order = sorted(range(k), key=lambda i: (-lengths[i], -clients[i].num_samples))
    if k > chunk or order != list(range(k)):
        def perm(seq: Sequence[Any] | None, rows: list[int]) -> list[Any] | None:
            return None if seq is None else [seq[i] for i in rows]
        back: list[ClientUpdate | None] = [None] * k
        for lo in range(0, k, chunk):
            rows = order[lo:lo + chunk]
            done = train_cohort(model, global_params, perm(clients, rows), perm(generators, rows),  # type: ignore[arg-type]
                                cfg, fit, perm(controls, rows), perm(budgets, rows), perm(devices, rows),
                                perm(penalties, rows), path, max_clients=chunk, schedules=perm(schedules, rows),
                                conv=conv, checked=True, bucket=bucket)
            for i, u in zip(rows, done):
                back[i] = u
        return back  # type: ignore[return-value]
    path = forward_path(model, path)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    dev = clients[0].x.device if clients else torch.device("cpu")
    fixed: list[ParamDict] = []
    if devices is not None:
        if fit.server_control is not None:
            raise ValueError("SCAFFOLD control variates are not supported on device fleets")
        stacked = {n: torch.stack([d.program[n].detach() for d in devices]).clone() for n in names}
        fixed = [{n: v.detach() for n, v in d.program.items() if n not in names} for d in devices]
    else:
        stacked = {n: global_params[n].detach().unsqueeze(0).repeat(k, *([1] * global_params[n].dim()))
                   for n in names}  # repeat writes a fresh tensor: no clone needed
    for n, p in model.named_parameters():
        if n in stacked:
            setattr(stacked[n], "_spikefed_manifold", manifold_of(p))
    dtype = input_dtype(model)
    opt = StackedOptimizer(stacked, cfg, k)
    anchor = {n: global_params[n].detach() for n in names}
    if devices is not None:  # FedProx pulls towards the client's own starting program
        anchor = {n: stacked[n].clone() for n in names}
    stability = None
    if penalties is not None:
        if devices is not None or len(penalties) != k:
            raise ValueError("stability penalties need one entry per client and no device fleet")
        stability = stack_penalties(penalties, global_params, names)
    correction = None
    if fit.server_control is not None:
        if controls is None or len(controls) != k:
            raise ValueError("SCAFFOLD needs one client control variate per client")
        correction = {n: torch.stack([fit.server_control[n] - (c[n] if c is not None else 0 * fit.server_control[n])
                                      for c in controls]) for n in names}
    loss_sum = torch.zeros(k, dtype=torch.float64, device=dev)
    correct = torch.zeros(k, dtype=torch.int64, device=dev)
    seen = torch.zeros(k, dtype=torch.int64, device=dev)
    # the schedule is known on the host: no device -> host sync inside the loop (no nonzero/tolist/item)
    for j in range(lengths[0] if k else 0):
        m = sum(1 for n_j in lengths if n_j > j)  # clients 0..m-1 take step j (lengths are sorted)
        leaves = {n: stacked[n][:m].detach().requires_grad_(True) for n in names}
        total = torch.zeros((), dtype=leaves[names[0]].dtype, device=dev)
        for rows, sel, width in width_groups([len(schedules[a][j]) for a in range(m)], cfg, bucket, dev):
            sizes = [len(schedules[a][j]) for a in rows]
            xb, yb, mask = _gather_batch(clients, schedules, j, rows, dtype, width)
            xs = _encode_cohort(xb, mask, cfg, [generators[a] for a in rows], sizes)
            part = leaves if len(rows) == m else {n: leaf[sel] for n, leaf in leaves.items()}
            if devices is not None:
                out, spikes = _device_forward(model, part, xs, rows, devices, fixed, generators, mask, path, sizes,
                                              conv)
            else:
                out, spikes = stacked_forward(model, part, xs, path, kernel=cfg.kernel, conv=conv)
            per = per_sample_loss(out, yb, cfg)
            w = mask.to(per.dtype)
            counts = w.sum(1)
            total = total + ((per * w).sum(1) / counts).sum()
            if spikes and (cfg.reg_l1 or cfg.reg_l2 or cfg.reg_bounds):
                total = total + masked_regularizers(spikes, mask, cfg).sum()
            with torch.no_grad():
                pred = predict_cohort(out.detach(), cfg)
                loss_sum[sel] += (per.detach() * w).sum(1).double()
                correct[sel] += ((pred == yb) & mask).sum(1)
                seen[sel] += counts.long()
        if fit.prox_mu:
            ref = anchor if devices is None else {n: anchor[n][:m] for n in names}
            prox = tensor_sum(((leaves[n] - ref[n]) ** 2).flatten(1).sum(1) for n in names)
            total = total + 0.5 * fit.prox_mu * prox.sum()
        if stability is not None:
            total = total + stacked_penalty(leaves, stability[0], stability[1], torch.arange(m, device=dev)).sum()
        grads_list = torch.autograd.grad(total, [leaves[n] for n in names])
        grads = {n: g if correction is None else g + correction[n][:m] for n, g in zip(names, grads_list)}
        if cfg.grad_clip is not None:
            norms = torch.sqrt(tensor_sum((grads[n].flatten(1) ** 2).sum(1) for n in names))
            scale = (cfg.grad_clip / (norms + 1e-6)).clamp(max=1.0)
            for n in names:
                grads[n].mul_(scale.view(-1, *([1] * (grads[n].dim() - 1))))
        opt.step_prefix(grads, m)
    updates = []
    losses, corrects, seens = loss_sum.tolist(), correct.tolist(), seen.tolist()  # one sync per cohort
    for i, c in enumerate(clients):
        params = {n: stacked[n][i] for n in names}  # views: the stacks are not touched after training
        steps = lengths[i]
        control_delta = None
        if correction is not None:
            assert fit.server_control is not None
            control_delta = scaffold_control_delta(params, anchor, fit.server_control, steps, cfg.lr)
        updates.append(ClientUpdate(
            client_id=c.client_id, num_samples=c.num_samples, params=params, steps=steps,
            metrics={"loss": float(losses[i] / max(seens[i], 1)),
                     "accuracy": float(corrects[i]) / max(seens[i], 1),
                     "steps": steps},
            control_delta=control_delta))
    return updates


@dataclass
class ClientDevice:
    """A client's hardware during local training: its starting ``program`` (every trainable value plus the
    per-neuron thresholds / decays, in the device's coordinates) and the :class:`~spikefed.hardware.devices.Device`
    whose ``effective(program, generator)`` and ``perturb_input(x, generator)`` define its physics."""

    program: ParamDict
    device: Any


def _device_forward(model: torch.nn.Module, leaves: ParamDict, xs: torch.Tensor, active: list[int],
                    devices: Sequence[ClientDevice], fixed: list[ParamDict], generators: Sequence[torch.Generator],
                    mask: torch.Tensor, path: str = "auto", sizes: Sequence[int] | None = None,
                    conv: str = DEFAULT_CONV) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward of the active clients, each through its own device's physics (effective values, input loss).

    Lost steps / jitter draw for the client's valid samples only (``mask [Ka, B]``), so a client's draws do not
    depend on the padded batch width, i.e. on which other clients share its cohort step."""
    effective = []
    for row, k in enumerate(active):
        program = {**fixed[k], **{n: v[row] for n, v in leaves.items()}}
        effective.append(devices[k].device.effective(program, generators[k]))
    stacked = {n: torch.stack([e[n] for e in effective]) for n in effective[0]}
    lossy = [k for k in active if devices[k].device.profile.drop_steps or devices[k].device.profile.jitter]
    if lossy:
        rows = []
        for row, k in enumerate(active):
            x, n = xs[:, row], (sizes[row] if sizes is not None else int(mask[row].sum()))
            if k in lossy:
                x = torch.cat([devices[k].device.perturb_input(x[:, :n], generators[k]), x[:, n:]], dim=1)
            rows.append(x)
        xs = torch.stack(rows, dim=1)
    return stacked_forward(model, stacked, xs, path, conv=conv)


def scaffold_control_delta(params: ParamDict, anchor: ParamDict, server_control: ParamDict, steps: int,
                           lr: float) -> ParamDict:
    """SCAFFOLD option II: ``c_k^+ = c_k - c + (x - y_k) / (K_steps * lr)``, so ``c_k^+ - c_k = (x - y_k) /
    (K_steps * lr) - c`` (``x``: global parameters, ``y_k``: the client's after ``K_steps`` local SGD steps)."""
    return {n: (anchor[n] - params[n]) / (max(steps, 1) * lr) - server_control[n] for n in params}


# -- sequential reference -----------------------------------------------------------------------------------

def train_sequential(model: torch.nn.Module, global_params: ParamDict, clients: Sequence[ClientData],
                     generators: Sequence[torch.Generator], cfg: TrainConfig, fit: FitInstructions,
                     controls: Sequence[ParamDict | None] | None = None,
                     step_budgets: Sequence[int | None] | None = None,
                     penalties: Sequence[StabilityPenalty | None] | None = None) -> list[ClientUpdate]:
    """Reference: each client trained alone with ``torch.optim`` on a private copy of ``model``.

    Works for any model (conv nets, recurrent neurons, truncated BPTT); :func:`train_cohort` must agree with
    it where both apply. ``step_budgets[i]`` (optional) caps client i's local steps.
    """
    if step_budgets is not None and len(step_budgets) != len(clients):
        raise ValueError(f"step_budgets has {len(step_budgets)} entries for {len(clients)} clients")
    from ..manifold import copy_module, project_parameters_
    from ..snn.train import backward_batch, distill_batch, encode_inputs, make_teacher, robust_batch

    updates = []
    for i, (c, gen) in enumerate(zip(clients, generators)):
        local = copy_module(model)
        load_params_(local, global_params)
        names = [n for n, p in local.named_parameters() if p.requires_grad]
        anchor = {n: global_params[n].detach() for n in names}
        params = dict(local.named_parameters())
        opt = make_optimizer(local.parameters(), cfg)
        correction = None
        if fit.server_control is not None:
            ck = controls[i] if controls is not None else None
            correction = {n: fit.server_control[n] - (ck[n] if ck is not None else 0) for n in names}
        extra = None
        penalty = penalties[i] if penalties is not None else None
        if fit.prox_mu or penalty is not None:
            def extra() -> torch.Tensor:  # noqa: E306
                out = 0.5 * fit.prox_mu * tensor_sum(((params[n] - anchor[n]) ** 2).sum() for n in names)
                if penalty is not None:  # the continual stability term
                    out = out + penalty.value({n: params[n] for n in names})
                return out
        schedule = client_schedule(c.num_samples, cfg, gen, step_budgets[i] if step_budgets is not None else None)
        teacher = make_teacher(local, c.x, c.y, cfg, gen)  # local.distill: the client's own ANN teacher
        loss_sum, correct, seen = 0.0, 0, 0
        for batch in schedule:
            xb, yb = robust_batch(local, as_float_batch(c.x[batch], input_dtype(local)), c.y[batch], cfg, gen)
            opt.zero_grad(set_to_none=True)
            loss, out = backward_batch(local, encode_inputs(xb, cfg, gen), yb, cfg, extra,
                                       loss_fn=distill_batch(teacher, xb, cfg))
            if correction is not None:
                for n in names:
                    grad = params[n].grad
                    assert grad is not None  # every trained parameter took part in the loss
                    grad.add_(correction[n])
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(local.parameters(), cfg.grad_clip)
            opt.step()
            project_parameters_(local)
            task = float(task_loss(out.output.detach(), yb, cfg))
            loss_sum += task * yb.shape[0]
            correct += int((predict(out.output.detach(), cfg) == yb).sum())
            seen += yb.shape[0]
        new = {n: params[n].detach().clone() for n in names}
        control_delta = None
        if fit.server_control is not None:
            control_delta = scaffold_control_delta(new, anchor, fit.server_control, len(schedule), cfg.lr)
        updates.append(ClientUpdate(
            client_id=c.client_id, num_samples=c.num_samples, params=new, steps=len(schedule),
            metrics={"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "steps": len(schedule)},
            control_delta=control_delta))
    return updates


def train_clients(engine: str, model: torch.nn.Module, global_params: ParamDict, clients: Sequence[ClientData],
                  generators: Sequence[torch.Generator], cfg: TrainConfig, fit: FitInstructions,
                  controls: Sequence[ParamDict | None] | None = None,
                  step_budgets: Sequence[int | None] | None = None,
                  penalties: Sequence[StabilityPenalty | None] | None = None) -> list[ClientUpdate]:
    """Dispatch to the batched cohort engine or the sequential reference (``engine``: cohort | sequential).

    ``step_budgets`` (optional, one per client): per-client caps on local steps (partial work of stragglers);
    ``penalties`` (optional, one per client): continual stability terms.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if engine == "cohort":
        reason = supports_cohort(model, cfg)
        if reason is not None:  # no silent fallback: the caller picks the engine (experiment.compat.engine_for)
            raise ValueError(f"engine=cohort cannot train this model: {reason}; use engine=sequential")
        return train_cohort(model, global_params, clients, generators, cfg, fit, controls,  # type: ignore[arg-type]
                            step_budgets, penalties=penalties)
    return train_sequential(model, global_params, clients, generators, cfg, fit, controls, step_budgets, penalties)
