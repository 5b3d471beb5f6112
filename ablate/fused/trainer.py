"""Train K runs of one architecture in lockstep as one fused model.

:func:`train_group` is :func:`ablate.train.train` for a group of plans that share a
:func:`~ablate.fused.grouping.fusable_key`. Each member keeps its own seed (the same
initialisation as its lone run), its own random stream (data order, latents, D
targets and flips, drawn in the lone run's order from a generator seeded as the lone
run seeds it), its own Adam settings and BatchNorm statistics. A member that diverges
is recorded ``diverged`` at its step, written out as the lone run would have been, and
removed from the group; the others go on.

Each member writes an ordinary run directory — ``config.json`` (with a ``fused``
field naming the group), ``log.jsonl``, ``samples.png``, ``generator.pt``,
``generator_best.pt`` when validated, ``result.json`` — which
:func:`ablate.evaluate.evaluate_run` reads unchanged.

A group of one calls :func:`ablate.train.train` itself, so K = 1 is the lone trainer
bit for bit. For K >= 2 a member matches its lone run up to floating-point summation
order in the kernels (``tests/test_fused.py`` bounds the difference).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ablate.artefacts import append_jsonl, write_atomic, write_json
from ablate.config import TrainConfig
from ablate.data import load, scale
from ablate.environment import resolve_device
from ablate.errors import ConfigError
from ablate.fused.grouping import fuse_blocker, fusable_key
from ablate.fused.modules import FusedAdam, FusedSequential
from ablate.models import sample_latent
from ablate.recipe import Recipe
from ablate.train import (TrainPlan, TrainResult, Validator, build, resolved_config, save_samples,
                          train)

FORMULATION = "grouped-conv"  # recorded in each member's config.json
_GRAPH_WARMUP = 3  # eager steps before the first CUDA-graph capture (cuDNN/cuBLAS set-up)


@dataclass(frozen=True)
class FusedOptions:
    """How the fused step executes. None of these changes what a run computes beyond
    floating-point rounding, so none enters a run's identity; each is recorded in the
    members' ``config.json``."""

    channels_last: bool = True  # the lone trainer's layout (faster convolutions)
    cuda_graph: bool = False  # replay each training step as one CUDA graph (GPU only)
    compile: bool = False  # torch.compile the fused G and D forward passes


@dataclass
class _Member:
    """One run of the group: where it writes, its lone generator and its own state."""

    index: int  # position in the caller's lists
    plan: TrainPlan
    out_dir: Path
    g: nn.Module  # the member's lone generator: written out and validated
    gen: torch.Generator
    validate: Validator | None
    perm: torch.Tensor | None = None
    status: str = "done"
    diverged_step: int | None = None
    best_fid: float = math.inf
    best_step: int | None = None
    val_time: float = 0.0
    result: TrainResult | None = field(default=None, repr=False)


# --------------------------------------------------------------------------------------
# Per-member random draws, vectorised over the group
# --------------------------------------------------------------------------------------
class _Targets:
    """D targets for every member at once, from each member's own uniform draws.

    The same arithmetic as :func:`ablate.train._targets` in float32 with per-member
    constants, so each member's targets equal its lone run's bit for bit.
    """

    def __init__(self, recipes: Sequence[Recipe], device: torch.device) -> None:
        def col(values):  # Python doubles -> float32, as torch casts scalar operands
            return torch.tensor(values, dtype=torch.float32, device=device).reshape(-1, 1)

        self.rl = col([r.real_target[0] for r in recipes])
        self.rspan = col([r.real_target[1] - r.real_target[0] for r in recipes])
        self.fl = col([r.fake_target[0] for r in recipes])
        self.fspan = col([r.fake_target[1] - r.fake_target[0] for r in recipes])
        self.flip_p = col([r.label_flip_p for r in recipes])

    def keep(self, rows: torch.Tensor) -> None:
        for name in ("rl", "rspan", "fl", "fspan", "flip_p"):
            setattr(self, name, getattr(self, name)[rows])

    def draw(self, gens: Sequence[torch.Generator], n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(real targets, fake targets), each ``(n, K)``."""
        u = torch.stack([torch.rand(4, n, generator=g, device=device) for g in gens])
        real = self.rl + self.rspan * u[:, 0]
        fake = self.fl + self.fspan * u[:, 1]
        flip_real, flip_fake = u[:, 2] < self.flip_p, u[:, 3] < self.flip_p
        # A flipped target takes a draw from the other class's range (as ablate.train).
        real_t = torch.where(flip_real, self.fl + self.fspan * u[:, 1].roll(1, -1), real)
        fake_t = torch.where(flip_fake, self.rl + self.rspan * u[:, 0].roll(1, -1), fake)
        return real_t.T, fake_t.T


# --------------------------------------------------------------------------------------
# The fused step: D update(s) and G update on prepared inputs; per-member statistics
# --------------------------------------------------------------------------------------
def _bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-member mean BCE: (B, K) logits and targets -> (K,)."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(0)


def _update_mixed(d, opt, real, fake, t_real, t_fake):
    """One update per member on its real and fake samples in one batch."""
    d.zero_grad()
    logits = d(torch.cat([real, fake]))
    loss = _bce(logits, torch.cat([t_real, t_fake]))
    loss.sum().backward(inputs=d.parameters())  # members' losses are independent
    opt.step()
    n, logits = real.shape[0], logits.detach()
    return loss.detach(), logits[:n], logits[n:]


def _update_separate(d, opt, real, fake, t_real, t_fake):
    """Two updates per member: real-only, then fake-only."""
    losses, outs = [], []
    for x, t in ((real, t_real), (fake, t_fake)):
        d.zero_grad()
        logits = d(x)
        loss = _bce(logits, t)
        loss.sum().backward(inputs=d.parameters())
        opt.step()
        losses.append(loss.detach())
        outs.append(logits.detach())
    return (losses[0] + losses[1]) / 2, outs[0], outs[1]


_UPDATES: dict[str, Callable] = {"mixed": _update_mixed, "separate": _update_separate}


class _Step:
    """One generator step of the group on prepared inputs; returns (K, 4) statistics
    (loss_d, loss_g, D(x), D(G(z))), as the lone loop's log window holds them."""

    def __init__(self, g: FusedSequential, d: FusedSequential, opt_g: FusedAdam, opt_d: FusedAdam,
                 config: TrainConfig, recipe: Recipe, device: torch.device,
                 options: FusedOptions) -> None:
        self.g, self.d, self.opt_g, self.opt_d = g, d, opt_g, opt_d
        self.update = _UPDATES[recipe.d_update]
        self.bf16 = config.precision == "bf16"
        self.device_type = device.type
        g_fwd, d_fwd = g.__call__, d.__call__
        if options.compile:
            g_fwd, d_fwd = torch.compile(g_fwd), torch.compile(d_fwd)
        self.g_fwd, self.d_fwd = self._cast(g_fwd), self._cast(d_fwd)

    def _cast(self, fwd: Callable) -> Callable:
        if not self.bf16:
            return fwd

        def run(x: torch.Tensor) -> torch.Tensor:  # as ablate.train.Autocast
            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                return fwd(x).float()

        return run

    def __call__(self, reals, zs, t_reals, t_fakes) -> torch.Tensor:
        d_view = _Forward(self.d, self.d_fwd)
        for real, z, t_real, t_fake in zip(reals, zs, t_reals, t_fakes):
            fake = self.g_fwd(z)
            loss_d, out_real, out_fake = self.update(d_view, self.opt_d, real, fake.detach(),
                                                     t_real, t_fake)
        self.g.zero_grad()
        loss_g = _bce(self.d_fwd(fake), torch.ones_like(t_real))  # non-saturating loss
        loss_g.sum().backward(inputs=self.g.parameters())  # D's gradients are not needed
        self.opt_g.step()
        return torch.stack([loss_d, loss_g.detach(), out_real.sigmoid().mean(0),
                            out_fake.sigmoid().mean(0)], dim=1)


class _Forward:
    """A FusedSequential whose call goes through a wrapped forward (bf16, compile)."""

    def __init__(self, net: FusedSequential, fwd: Callable) -> None:
        self.net, self.fwd = net, fwd

    def __call__(self, x):
        return self.fwd(x)

    def zero_grad(self):
        self.net.zero_grad()

    def parameters(self):
        return self.net.parameters()


class _GraphedStep:
    """Replays :class:`_Step` as one CUDA graph after a few eager steps.

    Inputs are copied into static buffers, the graph replays, the statistics come back
    in a static buffer. Random draws and the data gather stay eager (outside the graph)
    so every member keeps its lone run's random stream. After a member is removed the
    graph is captured again.
    """

    def __init__(self, step: _Step) -> None:
        self.step = step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_left = _GRAPH_WARMUP
        self.stream = torch.cuda.Stream()

    def reset(self) -> None:
        self.graph, self.eager_left = None, 1

    def __call__(self, *inputs) -> torch.Tensor:
        if self.graph is None and self.eager_left > 0:
            self.eager_left -= 1
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                out = self.step(*inputs)
            torch.cuda.current_stream().wait_stream(self.stream)
            return out
        if self.graph is None:
            self.static_in = [[t.clone() for t in group] for group in inputs]
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_out = self.step(*self.static_in)
        for static, new in zip(self.static_in, inputs):
            for s, t in zip(static, new):
                s.copy_(t)
        self.graph.replay()
        return self.static_out


# --------------------------------------------------------------------------------------
# The group run
# --------------------------------------------------------------------------------------
def _check_group(plans: Sequence[TrainPlan], out_dirs: Sequence[Path],
                 validates: Sequence[Validator | None]) -> None:
    if not plans:
        raise ConfigError("train_group needs at least one plan")
    if len(out_dirs) != len(plans) or len(validates) != len(plans):
        raise ConfigError(f"train_group: {len(plans)} plans, {len(out_dirs)} run directories and "
                          f"{len(validates)} validators; pass one of each per plan")
    if len(set(map(str, out_dirs))) != len(out_dirs):
        raise ConfigError("train_group: two members share a run directory; give each its own")
    keys = [fusable_key(p) for p in plans]
    for plan, key in zip(plans, keys):
        if key is None:
            raise ConfigError(f"run with seed {plan.config.seed} and hacks "
                              f"{list(plan.config.hacks)} cannot train fused: {fuse_blocker(plan)}; "
                              "train it alone (group_plans puts it in a group of its own)")
    if len(set(keys)) > 1:
        raise ConfigError("train_group: the plans differ in more than per-member settings "
                          "(seed, init, Adam settings, latent prior, D targets, flips); "
                          "group them with ablate.fused.group_plans")
    for out_dir in out_dirs:
        if out_dir.exists() and any(out_dir.iterdir()):
            raise ConfigError(f"run directory {out_dir} already exists and is not empty; "
                              "choose another or remove it yourself")


def _provenance(members: Sequence[_Member], options: FusedOptions) -> dict[str, Any]:
    return {"formulation": FORMULATION, "k": len(members),
            "members": [{"run_dir": m.out_dir.name, "seed": m.plan.config.seed,
                         "hacks": list(m.plan.config.hacks)} for m in members],
            "options": dataclasses.asdict(options)}


def train_group(plans: Sequence[TrainPlan], out_dirs: Sequence[Path | str],
                validates: Sequence[Validator | None] | None = None,
                options: FusedOptions = FusedOptions()) -> list[TrainResult]:
    """Train ``plans`` in lockstep as one fused model; one run directory per member.

    ``plans`` must share a :func:`~ablate.fused.grouping.fusable_key` (use
    :func:`~ablate.fused.grouping.group_plans`); ``out_dirs[i]`` receives member ``i``'s
    run directory and ``validates[i]`` (``generator -> validation FID`` or None) is its
    validation callable, as for :func:`ablate.train.train`. Returns one
    :class:`~ablate.train.TrainResult` per member, in order. A group of one is the lone
    trainer itself.
    """
    out_dirs = [Path(p) for p in out_dirs]
    validates = list(validates) if validates is not None else [None] * len(plans)
    if len(plans) == 1 and len(out_dirs) == 1 and len(validates) == 1:
        return [train(plans[0], out_dirs[0], validates[0])]
    _check_group(plans, out_dirs, validates)
    return _train_group(plans, out_dirs, validates, options)


def _train_group(plans: Sequence[TrainPlan], out_dirs: list[Path],
                 validates: list[Validator | None], options: FusedOptions) -> list[TrainResult]:
    t_start = time.perf_counter()
    config, recipe0 = plans[0].config, plans[0].recipe
    device = resolve_device(config.device)
    if options.cuda_graph and device.type != "cuda":
        raise ConfigError("FusedOptions(cuda_graph=True) needs a CUDA device")
    if config.threads:
        torch.set_num_threads(config.threads)
    data = load(config.dataset, "train")
    n_data, bs, latent_dim = len(data), config.batch_size, config.latent_dim
    if bs > n_data:
        raise ConfigError(f"batch size {bs} exceeds the {n_data} training images of {config.dataset}")
    members, g_lone, d_lone = [], [], []
    for i, (plan, out_dir, validate) in enumerate(zip(plans, out_dirs, validates)):
        g, d = build(plan, data.shape, device)  # seeds the global RNG as the lone run does
        g_lone.append(g)
        d_lone.append(d)
        members.append(_Member(i, plan, out_dir, g, torch.Generator(device).manual_seed(plan.config.seed),
                               validate if config.val_every else None))
    G = FusedSequential(g_lone, device, options.channels_last)
    D = FusedSequential(d_lone, device, options.channels_last)
    del d_lone
    opt_g = FusedAdam(G, [m.plan.recipe.g_optimizer for m in members])
    opt_d = FusedAdam(D, [m.plan.recipe.d_optimizer for m in members])
    targets = _Targets([m.plan.recipe for m in members], device)
    step_fn: Callable = _Step(G, D, opt_g, opt_d, config, recipe0, device, options)
    if options.cuda_graph:
        step_fn = _GraphedStep(step_fn)
    provenance = _provenance(members, options)
    for m in members:  # only now, after every check, are the run directories touched
        m.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(m.out_dir / "config.json",
                   {**resolved_config(m.plan, data, device),
                    "fused": {**provenance, "index": m.index}})

    x_all = scale(data.images, recipe0.data_range).to(device)
    shape = data.shape
    active = list(members)
    window = torch.zeros(config.log_every, len(active), 4, device=device)
    for m in active:
        m.perm = torch.randperm(n_data, generator=m.gen, device=device)
    cursor, step, val_time = 0, 0, 0.0
    t_train = t_window = time.perf_counter()
    images_done = 0  # summed over members: the group's aggregate throughput

    def finish(m: _Member, j: int) -> None:
        """Write member ``m`` (column ``j``) out as its lone run ends."""
        train_time = time.perf_counter() - t_train - val_time
        g = G.load_member(j, m.g, step * recipe0.d_steps)
        save_samples(g, m.plan.recipe, latent_dim, device, m.out_dir / "samples.png")
        write_atomic(m.out_dir / "generator.pt", lambda f: torch.save(g.state_dict(), f))
        result = TrainResult(m.status, step, m.diverged_step, time.perf_counter() - t_start,
                             train_time, step * bs / train_time, str(m.out_dir))
        if m.validate is not None:
            result.extra.update(best_step=m.best_step,
                                best_val_fid=m.best_fid if m.best_step else None,
                                val_n=config.val_n, val_every=config.val_every,
                                val_time_s=round(m.val_time, 3))
        result.extra["fused"] = {"k": len(members), "index": m.index,
                                 "aggregate_images_per_s": images_done * bs / train_time}
        write_json(m.out_dir / "result.json", dataclasses.asdict(result))
        m.result = result

    while step < config.steps and active:
        reals, zs, t_reals, t_fakes = [], [], [], []
        for _ in range(recipe0.d_steps):  # per member, the lone loop's order of draws
            if cursor + bs > n_data:  # a new epoch: sample without replacement
                for m in active:
                    m.perm = torch.randperm(n_data, generator=m.gen, device=device)
                cursor = 0
            idx = torch.stack([m.perm[cursor:cursor + bs] for m in active], dim=1)  # (bs, K)
            reals.append(x_all[idx].reshape(bs, len(active) * shape[0], *shape[1:]))
            cursor += bs
            zs.append(torch.stack([sample_latent(m.plan.recipe, bs, latent_dim, m.gen, device)
                                   for m in active], dim=1).reshape(bs, -1))
            t_real, t_fake = targets.draw([m.gen for m in active], bs, device)
            t_reals.append(t_real)
            t_fakes.append(t_fake)
        window[step % config.log_every] = step_fn(reals, zs, t_reals, t_fakes)
        step += 1
        images_done += len(active)
        if step % config.log_every == 0 or step == config.steps:
            n = (step - 1) % config.log_every + 1
            stats = window[:n].cpu()
            now = time.perf_counter()
            for j, m in enumerate(active):
                col = stats[:, j]
                bad = (~torch.isfinite(col)).any(dim=1).nonzero()
                means = [v if math.isfinite(v) else None for v in col.mean(0).tolist()]
                record = {"step": step, **dict(zip(("loss_d", "loss_g", "d_real", "d_fake"), means)),
                          "images_per_s": n * bs / (now - t_window), "elapsed_s": now - t_train}
                if len(bad):
                    m.status, m.diverged_step = "diverged", step - n + int(bad[0]) + 1
                    record["diverged_step"] = m.diverged_step
                append_jsonl(m.out_dir / "log.jsonl", record)
            t_window = now
            keep = [j for j, m in enumerate(active) if m.status != "diverged"]
            if len(keep) < len(active):  # diverged members stop here, as their lone runs do
                for j, m in enumerate(active):
                    if m.status == "diverged":
                        finish(m, j)
                rows = torch.tensor(keep, device=device)
                for part in (opt_g, opt_d, G, D, targets):  # optimizers first: they read
                    part.keep(rows)                          # the nets' current layout
                window = window[:, rows].contiguous()
                active = [active[j] for j in keep]
                if isinstance(step_fn, _GraphedStep):
                    step_fn.reset()
        if config.val_every and active and (step % config.val_every == 0 or step == config.steps):
            t_val = time.perf_counter()
            for j, m in enumerate(active):
                if m.validate is None:
                    continue
                t_member = time.perf_counter()
                g = G.load_member(j, m.g, step * recipe0.d_steps)
                val_fid = m.validate(g)
                if val_fid < m.best_fid:  # NaN (non-finite samples) never becomes the best
                    m.best_fid, m.best_step = val_fid, step
                    write_atomic(m.out_dir / "generator_best.pt",
                                 lambda f, g=g: torch.save(g.state_dict(), f))
                append_jsonl(m.out_dir / "log.jsonl", {"step": step, "val_fid": val_fid,
                                                       "val_n": config.val_n,
                                                       "best_step": m.best_step})
                m.val_time += time.perf_counter() - t_member
            elapsed = time.perf_counter() - t_val
            val_time += elapsed
            t_window += elapsed  # keep validation out of the logged throughput
    for j, m in enumerate(active):
        finish(m, j)
    return [m.result for m in members]
