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
from torch import nn

from ablate.artefacts import append_jsonl, write_atomic, write_json
from ablate.data import load, scale
from ablate.environment import resolve_device
from ablate.errors import ConfigError
from ablate.fused.grouping import fuse_blocker, fusable_key
from ablate.fused.modules import FusedAdam, FusedSequential
from ablate.fused.step import FusedOptions, GraphedStep, Step, Targets
from ablate.models import sample_latent
from ablate.train import (TrainPlan, TrainResult, Validator, build, resolved_config, save_samples,
                          train)

FORMULATION = "grouped-conv"  # recorded in each member's config.json


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
                options: FusedOptions = FusedOptions()  # noqa: B008 (frozen)
                ) -> list[TrainResult]:
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
    targets = Targets([m.plan.recipe for m in members], device)
    step_fn: Callable = Step(G, D, opt_g, opt_d, config, recipe0, device, options)
    if options.cuda_graph:
        step_fn = GraphedStep(step_fn)
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
                if isinstance(step_fn, GraphedStep):
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
