"""Train K runs of one architecture in lockstep as one fused model.

:func:`train_group` is :func:`ablate.training.loop.train` for a group of plans that share a
:func:`~ablate.fused.grouping.fusable_key`. Each member keeps its own seed (the same
initialisation as its lone run), its own random stream (data order, latents, D
targets and flips, drawn in the lone run's order from a generator seeded as the lone
run seeds it), its own Adam settings and BatchNorm statistics. A member that diverges
is recorded ``diverged`` at its step, written out as the lone run would have been, and
removed from the group; the others go on.

Each member writes an ordinary run directory — ``config.json`` (with a ``fused``
field naming the group), ``log.jsonl``, ``samples.png``, ``generator.pt``,
``generator_best.pt`` when validated, ``result.json`` — which
:func:`ablate.metrics.evaluate.evaluate_run` reads unchanged.

A group of one calls :func:`ablate.training.loop.train` itself, so K = 1 is the lone trainer
bit for bit. For K >= 2 a member matches its lone run up to floating-point summation
order in the kernels (``tests/test_fused.py`` bounds the difference).

Checkpoints: every ``checkpoint_every`` steps each member writes its own
``train_state.pt`` (:mod:`ablate.training.checkpoint`) with its slices of the fused parameters,
BatchNorm buffers and Adam moments, its random stream, data order, log and best
checkpoint, plus the group's step, cursor and Adam step count; its previous one is kept
as ``train_state.prev.pt``. A group resumes only as the same group (the same members
in the same order: the fingerprint covers them all, since fused arithmetic depends on
the group), from the newest step every member has; otherwise it starts at step 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ablate.training import checkpoint
from ablate.artefacts import write_atomic, write_json
from ablate.data import load, scale
from ablate.environment import apply_threads, resolve_device
from ablate.errors import ConfigError
from ablate.messages import say
from ablate.layout import RunDir
from ablate.fused.grouping import fuse_blocker, fusable_key
from ablate.fused.modules import FusedAdam, FusedSequential
from ablate.fused.step import FusedOptions, GraphedStep, Step, Targets
from ablate.training.models import sample_latent
from ablate.training.loop import (StopRequested, TrainPlan, TrainResult, Validator, build,
                                  resolved_config, save_samples, train)
from ablate.training.runlog import RunLog

FORMULATION = "grouped-conv"  # recorded in each member's config.json


@dataclass
class _Member:
    """One run of the group: where it writes, its lone generator and its own state."""

    index: int  # position in the caller's lists
    plan: TrainPlan
    out_dir: Path
    g: nn.Module  # the member's lone generator: written out and validated
    gen: torch.Generator
    log: RunLog  # its log.jsonl, divergence, best checkpoint and result.json
    perm: torch.Tensor | None = None
    result: TrainResult | None = field(default=None, repr=False)
    digest: str = ""  # the checkpoint fingerprint (the member's and the group's)
    about: dict[str, Any] = field(default_factory=dict)
    d: nn.Module | None = field(default=None, repr=False)  # its lone D: discriminator.pt


# --------------------------------------------------------------------------------------
# The group run
# --------------------------------------------------------------------------------------
def _check_group(plans: Sequence[TrainPlan], out_dirs: Sequence[Path],
                 validates: Sequence[Validator | None], resume: Sequence[list[Path]],
                 fingerprints: Sequence[str]) -> None:
    if not plans:
        raise ConfigError("train_group needs at least one plan")
    if len(out_dirs) != len(plans) or len(validates) != len(plans) \
            or len(resume) != len(plans) or len(fingerprints) != len(plans):
        raise ConfigError(f"train_group: {len(plans)} plans, {len(out_dirs)} run directories, "
                          f"{len(validates)} validators, {len(resume)} resume lists and "
                          f"{len(fingerprints)} fingerprints; pass one of each per plan")
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
    for out_dir, paths in zip(out_dirs, resume):
        own = {out_dir / name for name in checkpoint.STATE_FILES} & set(paths)
        if out_dir.exists() and any(out_dir.iterdir()) and not own:
            raise ConfigError(f"run directory {out_dir} already exists and is not empty; "
                              "choose another or remove it yourself")


def _provenance(members: Sequence[_Member], options: FusedOptions) -> dict[str, Any]:
    return {"formulation": FORMULATION, "k": len(members),
            "members": [{"run_dir": m.out_dir.name, "seed": m.plan.config.seed,
                         "hacks": list(m.plan.config.hacks)} for m in members],
            "options": dataclasses.asdict(options)}


def train_group(plans: Sequence[TrainPlan], out_dirs: Sequence[Path | str],
                validates: Sequence[Validator | None] | None = None,
                options: FusedOptions = FusedOptions(),  # noqa: B008 (frozen)
                *, resume: Sequence[Sequence[Path | str]] | None = None,
                fingerprints: Sequence[str] | None = None,
                stop: Callable[[], bool] | None = None) -> list[TrainResult]:
    """Train ``plans`` in lockstep as one fused model; one run directory per member.

    ``plans`` must share a :func:`~ablate.fused.grouping.fusable_key` (use
    :func:`~ablate.fused.grouping.group_plans`); ``out_dirs[i]`` receives member ``i``'s
    run directory and ``validates[i]`` (``generator -> validation FID`` or None) is its
    validation callable, as for :func:`ablate.training.loop.train`. Returns one
    :class:`~ablate.training.loop.TrainResult` per member, in order. A group of one is the lone
    trainer itself. ``resume[i]`` (checkpoint files member ``i`` may continue from),
    ``fingerprints[i]`` and ``stop`` are as for :func:`ablate.training.loop.train`; the group
    resumes only from a step every member has a checkpoint of, written by this group.
    """
    out_dirs = [Path(p) for p in out_dirs]
    validates = list(validates) if validates is not None else [None] * len(plans)
    resume_ = [[Path(p) for p in r] for r in resume] if resume is not None else [[] for _ in plans]
    fps = list(fingerprints) if fingerprints is not None else [""] * len(plans)
    if len(plans) == 1 and len(out_dirs) == 1 and len(validates) == 1 \
            and len(resume_) == 1 and len(fps) == 1:
        return [train(plans[0], out_dirs[0], validates[0], resume=resume_[0],
                      fingerprint=fps[0], stop=stop)]
    _check_group(plans, out_dirs, validates, resume_, fps)
    return _train_group(plans, out_dirs, validates, options, resume_, fps, stop)


def _fingerprints(members: Sequence[_Member], fingerprints: Sequence[str],
                  options: FusedOptions, device: torch.device) -> None:
    """Each member's checkpoint fingerprint: its own (as a lone run's) and the group's."""
    own = [checkpoint.fingerprint(m.plan.config, m.plan.hack_records, m.plan.recipe.to_dict(),
                                  device, extra) for m, extra in zip(members, fingerprints)]
    text = json.dumps([[d for d, _ in own], FORMULATION, dataclasses.asdict(options)])
    group = hashlib.sha256(text.encode()).hexdigest()
    for m, (digest, about) in zip(members, own):
        m.digest = hashlib.sha256(f"{digest}/{group}".encode()).hexdigest()
        m.about = {**about, "fused": f"{group[:12]} (k={len(members)})"}


def _pick_group(members: Sequence[_Member], resume: Sequence[list[Path]]
                ) -> tuple[int, list[dict]] | None:
    """The newest step every member has a checkpoint of from this group, loaded."""
    if not any(resume):
        return None
    steps = []
    for m, paths in zip(members, resume):
        steps.append({s: p for s, p, st in checkpoint.readable(paths) if st["fingerprint"] == m.digest})
    common = set.intersection(*(set(s) for s in steps))
    if common:
        step = max(common)
        states = [checkpoint.load(s[step]) for s in steps]
        if all(st is not None for st in states):
            return step, states  # type: ignore[return-value]
    if any(checkpoint.readable(paths) for paths in resume):
        say(f"a fused group of {len(members)} starts at step 0: its members have no "
            "checkpoint of one step written by this group")
    return None


def _member_state(m: _Member, j: int, nets, opts, window: torch.Tensor, **shared: Any
                  ) -> dict[str, Any]:
    """Member ``m`` (column ``j``)'s checkpoint: its slices of the group's state."""
    row = torch.tensor([j], device=window.device)
    fused: dict[str, Any] = {"index": j, "window": window[:, j].clone()}
    for name, net, opt in zip(("g", "d"), nets, opts):
        fused[name] = {"flat": net.rows(net.flat, row),
                       "buffers": {n: b.view(net.k, -1)[j].clone() for n, b in net.buffers.items()}}
        fused[f"opt_{name}"] = {"exp_avg": net.rows(opt.exp_avg, row),
                                "exp_avg_sq": net.rows(opt.exp_avg_sq, row),
                                "steps": opt.steps.clone()}
    return {"format": checkpoint.FORMAT, "fingerprint": m.digest, "about": m.about,
            **m.log.state(), "rng": {"loop": m.gen.get_state(), "global": checkpoint.global_rng()},
            "perm": m.perm, "fused": fused, **shared}


def _restore_group(states: list[dict], nets, opts) -> None:
    """Load the members' slices (in group order) back into the fused nets and Adams."""
    with torch.no_grad():
        for name, net, opt in zip(("g", "d"), nets, opts):
            parts = [st["fused"][name] for st in states]
            net.flat.copy_(net.join([p["flat"] for p in parts]))
            for n, b in net.buffers.items():
                b.copy_(torch.cat([p["buffers"][n] for p in parts]))
            o = [st["fused"][f"opt_{name}"] for st in states]
            opt.exp_avg.copy_(net.join([x["exp_avg"] for x in o]))
            opt.exp_avg_sq.copy_(net.join([x["exp_avg_sq"] for x in o]))
            opt.steps.copy_(o[0]["steps"])


def _train_group(plans: Sequence[TrainPlan], out_dirs: list[Path],
                 validates: list[Validator | None], options: FusedOptions,
                 resume: list[list[Path]], fingerprints: list[str],
                 stop: Callable[[], bool] | None) -> list[TrainResult]:
    t_start = time.perf_counter()
    config, recipe0 = plans[0].config, plans[0].recipe
    device = resolve_device(config.device)
    if options.cuda_graph and device.type != "cuda":
        raise ConfigError("FusedOptions(cuda_graph=True) needs a CUDA device")
    apply_threads(config.threads)
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
                               RunLog(out_dir, validate if config.val_every else None), d=d))
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
    _fingerprints(members, fingerprints, options, device)
    found = _pick_group(members, resume)
    if found is None:
        for m in members:
            if m.out_dir.exists() and any(m.out_dir.iterdir()):
                raise ConfigError(f"run directory {m.out_dir} is not empty and its checkpoint "
                                  "cannot be resumed by this group; remove it yourself")
    for m in members:  # only now, after every check, are the run directories touched
        m.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(RunDir(m.out_dir).config,
                   {**resolved_config(m.plan, data, device),
                    "fused": {**provenance, "index": m.index}})

    x_all = scale(data.images, recipe0.data_range).to(device)
    shape = data.shape
    active = list(members)
    window = torch.zeros(min(config.log_every, config.steps), len(active), 4, device=device)
    for m in active:
        m.perm = torch.randperm(n_data, generator=m.gen, device=device)
    cursor, step, val_time = 0, 0, 0.0
    t_train = t_window = time.perf_counter()
    images_done = 0  # summed over members: the group's aggregate throughput
    every = config.checkpoint_every
    if found is not None:  # continue where the members' checkpoints left off
        step, states = found
        _restore_group(states, (G, D), (opt_g, opt_d))
        window.copy_(torch.stack([st["fused"]["window"] for st in states], dim=1))
        for m, st in zip(members, states):
            m.gen.set_state(st["rng"]["loop"])
            m.perm = st["perm"].to(device)
            m.log.restore(st)
        first = states[0]
        checkpoint.set_global_rng(first["rng"]["global"])
        cursor, images_done = first["cursor"], first["images_done"]
        now = time.perf_counter()
        t_start, t_train = now - first["time"]["wall_s"], now - first["time"]["train_s"]
        t_window, val_time = now, first["time"]["group_val_s"]

    def finish(m: _Member, j: int) -> None:
        """Write member ``m`` (column ``j``) out as its lone run ends."""
        train_time = time.perf_counter() - t_train - val_time
        g = G.load_member(j, m.g, step * recipe0.d_steps)
        save_samples(g, m.plan.recipe, latent_dim, device, RunDir(m.out_dir).samples)
        write_atomic(RunDir(m.out_dir).generator, lambda f: torch.save(g.state_dict(), f))
        # D's forward passes in training mode, as the lone loop counts them: each D update
        # (two with separate batches) and the G update's.
        d_passes = recipe0.d_steps * (2 if recipe0.d_update == "separate" else 1) + 1
        d = D.load_member(j, m.d, step * d_passes)
        write_atomic(RunDir(m.out_dir).discriminator, lambda f: torch.save(d.state_dict(), f))
        fused = {"k": len(members), "index": m.index,
                 "aggregate_images_per_s": images_done * bs / train_time}
        m.result = m.log.finish(step, bs, time.perf_counter() - t_start, train_time, config,
                                {"fused": fused})

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
            timing = {"images_per_s": n * bs / (now - t_window), "elapsed_s": now - t_train}
            for j, m in enumerate(active):
                m.log.window(step, stats[:, j], timing)
            t_window = now
            keep = [j for j, m in enumerate(active) if not m.log.diverged]
            if len(keep) < len(active):  # diverged members stop here, as their lone runs do
                for j, m in enumerate(active):
                    if m.log.diverged:
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
                if m.log.validate is not None:
                    t_member = time.perf_counter()
                    m.log.validated(step, G.load_member(j, m.g, step * recipe0.d_steps),
                                    config.val_n, t_member)
            elapsed = time.perf_counter() - t_val
            val_time += elapsed
            t_window += elapsed  # keep validation out of the logged throughput
        boundary = step % config.log_every == 0 or (every and step % every == 0)
        if stop is not None and active and boundary and step < config.steps and stop():
            raise StopRequested(f"stopped at step {step}")
        if every and active and step % every == 0 and step < config.steps:
            t_save = now = time.perf_counter()
            for j, m in enumerate(active):
                state = _member_state(
                    m, j, (G, D), (opt_g, opt_d), window, step=step, cursor=cursor,
                    images_done=images_done,
                    time={"wall_s": now - t_start, "train_s": now - t_train, "val_s": m.log.val_time,
                          "group_val_s": val_time})
                checkpoint.save(m.out_dir / checkpoint.STATE_FILE, state, keep_previous=True)
            t_window += time.perf_counter() - t_save  # keep the writes out of the throughput
    for j, m in enumerate(active):
        finish(m, j)
    return [m.result for m in members]
