"""Train one run: a :class:`TrainPlan` (a TrainConfig with its hacks resolved) -> a run
directory.

The loop reads only the Recipe and calls the enabled hacks' hooks; it never sees hack
names or the registry (:mod:`ablate.training.resolve` builds the plan). What a hack changes
arrives through the Recipe (model structure, optimizers, latent prior, data range,
targets, the discriminator-update strategy), the module wrappers, and the per-step hooks
(loss terms, augmentation, after-step callbacks, the sampled generator) whose call order
:mod:`ablate.hacks.hack` documents.

Two paths, chosen once per run: when no enabled hack overrides a hook inside the D or G
update (loss, penalty, augmentation, after-D-update; every built-in), each step does
exactly the plain DCGAN work below and calls no hook (``after_step``, when overridden,
is called after it); otherwise the D and G updates go through :class:`ablate.training.steps.HookedUpdates`.

Every ``config.checkpoint_every`` steps the loop writes a training checkpoint
(:mod:`ablate.training.checkpoint`); ``train(..., resume=[path])`` continues from one and ends bit
for bit as the run would have ended uninterrupted.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ablate.training import checkpoint
from ablate.artefacts import write_atomic
from ablate.config import TrainConfig
from ablate.data import ImageSet, load, scale
from ablate.environment import apply_threads, git_commit, hardware, resolve_device, versions
from ablate.errors import ConfigError
from ablate.layout import RunDir
from ablate.hacks.hack import Hack, StepContext, WrapInfo
from ablate.hacks.hooks import call_hook, call_wrapper
from ablate.hacks.interactions import changes_json, overrides_in_effect, recipe_changes, select_hooks
from ablate.training.models import build_models, fixed_latents, generate, sample_latent
from ablate.hacks.recipe import Recipe
from ablate.training.precision import Autocast, forwards, g_grad_inputs, make_optimizer  # noqa: F401 (re-export)
from ablate.training.runlog import (LOG_KEYS, HackLog, RunLog, TrainResult,  # noqa: F401 (re-export)
                                    Validator)
from ablate.training.steps import HookedUpdates, pack_targets, split_packed

# Offset of the hooks' random stream from the run's seed: hooks draw from their own
# generator, so the loop's stream (data order, latents, targets) is the same with or
# without them.
HOOK_SEED = 0x9E3779B97F4A7C15


class StopRequested(Exception):  # noqa: N818 (a request, not an error)
    """Raised by :func:`train` when its ``stop`` predicate says so (the grid: the run's
    claim was taken over while its process was stopped)."""


@dataclass(frozen=True)
class TrainPlan:
    """A TrainConfig with its hacks resolved: what :func:`train` consumes.

    Built by :func:`ablate.training.resolve.resolve`; ``hacks`` are the enabled hack instances
    in call order (their wrappers and hooks are called in that order), ``recipe``
    the all-off Recipe with every hack's ``apply`` folded in, and ``hack_records`` what
    ``config.json`` says of each hack (``name``, ``params``, ``provider``, ``version``).
    """

    config: TrainConfig
    recipe: Recipe
    hacks: tuple[Hack, ...] = ()
    hack_records: tuple[dict[str, Any], ...] = ()


def resolved_config(plan: TrainPlan, data: ImageSet | None = None,
                    device: torch.device | None = None) -> dict:
    """The fully resolved run configuration written to ``config.json``."""
    out: dict[str, Any] = {
        "train": dataclasses.asdict(plan.config),
        "hacks": [dict(r) for r in plan.hack_records],
        "recipe": plan.recipe.to_dict(),
        # What the hacks changed relative to all-off, and the overrides that decided it.
        "recipe_changes": changes_json(recipe_changes(plan)),
        "overrides": overrides_in_effect(plan.hacks),
    }
    out["train"].pop("params")  # folded into "hacks" above, with every default resolved
    if data is not None:
        out["data"] = data.provenance()
    if device is not None:
        out["device"] = str(device)
        out["hardware"] = hardware(device)
    out["versions"] = versions()
    out["git_commit"] = git_commit()
    return out


# --------------------------------------------------------------------------------------
# Targets and discriminator-update strategies (selected by Recipe fields)
# --------------------------------------------------------------------------------------
def _targets(recipe: Recipe, n: int, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """D targets for n real and n fake samples: U(lo, hi) draws, then random flips."""
    u = torch.rand(4, n, generator=gen, device=device)
    (rl, rh), (fl, fh) = recipe.real_target, recipe.fake_target
    real, fake = rl + (rh - rl) * u[0], fl + (fh - fl) * u[1]
    flip_real, flip_fake = u[2] < recipe.label_flip_p, u[3] < recipe.label_flip_p
    # A flipped target takes a draw from the other class's range (swap, not 1 - t).
    real_t = torch.where(flip_real, fl + (fh - fl) * u[1].roll(1), real)
    fake_t = torch.where(flip_fake, rl + (rh - rl) * u[0].roll(1), fake)
    return real_t, fake_t


def _d_loss(d: nn.Module, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = d(x)
    if logits.shape[0] != t.shape[0]:  # a packing D (PacGAN): one logit per pack
        t = pack_targets(t, logits.shape[0])
    return F.binary_cross_entropy_with_logits(logits, t), logits.detach()


def _update_mixed(d, opt, real, fake, t_real, t_fake):
    """One update on real and fake in a single batch.

    No shuffle: a permutation of the batch changes neither the mean loss nor any
    batch statistic, so it would only cost time.
    """
    opt.zero_grad(set_to_none=True)
    loss, logits = _d_loss(d, torch.cat([real, fake]), torch.cat([t_real, t_fake]))
    loss.backward()
    opt.step()
    n = real.shape[0]
    if logits.shape[0] != 2 * n:  # packed: real packs first (ablate.training.steps.split_packed)
        return (loss.detach(), *split_packed(logits, n, 2 * n))
    return loss.detach(), logits[:n], logits[n:]


def _update_separate(d, opt, real, fake, t_real, t_fake):
    """Two updates: one on a real-only batch, then one on a fake-only batch."""
    losses, outs = [], []
    for x, t in ((real, t_real), (fake, t_fake)):
        opt.zero_grad(set_to_none=True)
        loss, logits = _d_loss(d, x, t)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        outs.append(logits)
    return (losses[0] + losses[1]) / 2, outs[0], outs[1]


D_UPDATES: dict[str, Callable] = {"mixed": _update_mixed, "separate": _update_separate}


# --------------------------------------------------------------------------------------
# The training run
# --------------------------------------------------------------------------------------
def prepare_out_dir(out_dir: Path, resuming: Path | None = None, asked: bool = False) -> None:
    """Refuse to overwrite a run directory that already holds files (unless it holds the
    checkpoint ``resuming`` of an unfinished run, which continues there; ``asked``: a
    resume was asked for, so a checkpoint there is one that could not be read)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if RunDir(out_dir).result.exists():
            raise ConfigError(f"run directory {out_dir} holds a finished run; "
                              "choose another --out or remove it yourself")
        if resuming is None or resuming.parent.resolve() != out_dir.resolve():
            hint = ("" if not (out_dir / checkpoint.STATE_FILE).exists() else
                    " (its checkpoint cannot be read, see above: remove it to train from step 0)"
                    if asked else " (it holds a checkpoint: add --resume to continue it)")
            raise ConfigError(f"run directory {out_dir} already exists and is not empty{hint}; "
                              "choose another --out or remove it yourself")
    out_dir.mkdir(parents=True, exist_ok=True)


def build(plan: TrainPlan, shape: tuple[int, int, int], device: torch.device
          ) -> tuple[nn.Module, nn.Module]:
    """Build, initialise (seeded) and wrap G and D for images of ``shape``."""
    config, recipe = plan.config, plan.recipe
    torch.manual_seed(config.seed)
    g, d = build_models(recipe, shape, config.ngf, config.ndf, config.latent_dim)
    info = wrap_info(plan, shape, device)
    for h in plan.hacks:
        g = call_wrapper(h, "wrap_generator", g, recipe, info)
        d = call_wrapper(h, "wrap_discriminator", d, recipe, info)
    # channels_last is oneDNN's fast convolution layout: 1.2x (all-on) to 1.5x (all-off)
    # per training step on the CPU (benchmarks/README.md); the numbers do not change.
    fmt = torch.channels_last
    return g.to(device, memory_format=fmt), d.to(device, memory_format=fmt)


def describe_wrap(hack: Hack) -> dict[str, Any] | None:
    """``hack.describe_wrap()`` after the wrappers ran, checked: None or a JSON-ready dict."""
    out = call_hook(hack, "describe_wrap")
    if out is not None and not isinstance(out, dict):
        raise ConfigError(f"hack {hack.name!r}: describe_wrap() must return a dict or None, "
                          f"got {type(out).__name__}")
    if out is not None:
        try:  # config.json would otherwise record repr() strings (json's default=str)
            json.dumps(out, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"hack {hack.name!r}: describe_wrap() must return a JSON-ready dict "
                              f"(str keys; str, int, float, bool, None, lists and dicts of them): "
                              f"{exc}; convert the value, e.g. float(t) for a tensor") from None
    return out


def wrap_info(plan: TrainPlan, shape: tuple[int, int, int], device: torch.device | str
              ) -> WrapInfo:
    """The :class:`~ablate.hacks.hack.WrapInfo` the wrappers of ``plan`` receive."""
    c = plan.config
    mult = 2 if plan.recipe.d_update == "mixed" else 1
    return WrapInfo(batch_size=c.batch_size, image_shape=tuple(int(x) for x in shape),
                    latent_dim=c.latent_dim, ngf=c.ngf, ndf=c.ndf, d_batch=mult * c.batch_size,
                    device=str(device))


def sampling_generator(plan: TrainPlan, g: nn.Module, info: WrapInfo | None = None
                       ) -> nn.Module:
    """The generator to sample, validate and save: ``g``, or the module an enabled hack's
    :meth:`~ablate.hacks.hack.Hack.sampling_generator` returns (checked to load into G)."""
    hack = select_hooks(plan.hacks).sampling_generator
    if hack is None:
        return g
    out = call_wrapper(hack, "sampling_generator", g, plan.recipe, info)
    want = {k: v.shape for k, v in g.state_dict().items()}
    got = {k: v.shape for k, v in out.state_dict().items()}
    if got != want:
        raise ConfigError(f"hack {hack.name!r}: sampling_generator() must return a module with "
                          "the generator's state_dict keys and shapes (e.g. a copy of it), so "
                          "that generator.pt loads into the built generator")
    return out


def train(plan: TrainPlan, out_dir: Path | str, validate: Validator | None = None, *,
          resume: Iterable[Path | str] = (), fingerprint: str = "",
          stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train one GAN and write the run directory (see README: run directory).

    ``validate`` (``generator -> validation FID``) is called every
    ``config.val_every`` steps when given; it draws the validation curve in
    ``log.jsonl`` and picks ``generator_best.pt``.

    Every ``config.checkpoint_every`` steps (0: never) the run's whole state is written
    to ``out_dir/train_state.pt`` (:mod:`ablate.training.checkpoint`), which is removed when the
    run ends. ``resume``: checkpoint files this run may continue from (they may lie in
    another directory); the newest one this run wrote (same fingerprint: config, hacks,
    Recipe, thread count, device, versions and ``fingerprint``, the grid's run key) is
    loaded, ``log.jsonl`` and ``generator_best.pt`` are rewritten as they were at its
    step, and the run continues there; none readable: it starts at step 0; readable ones
    of other runs only: :class:`~ablate.training.checkpoint.CheckpointMismatch`, before anything
    is written. ``stop`` is asked at every log and checkpoint boundary; when it says
    True the run raises :class:`StopRequested`.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    config, recipe = plan.config, plan.recipe
    device = resolve_device(config.device)
    apply_threads(config.threads)
    data = load(config.dataset, "train")
    n_data, bs = len(data), config.batch_size
    if bs > n_data:
        raise ConfigError(f"batch size {bs} exceeds the {n_data} training images of {config.dataset}")
    g, d = build(plan, data.shape, device)
    g_sample = sampling_generator(plan, g, wrap_info(plan, data.shape, device))
    hooks = select_hooks(plan.hacks)
    digest, about = checkpoint.fingerprint(config, plan.hack_records, plan.recipe.to_dict(),
                                           device, fingerprint)
    resume = [Path(p) for p in resume]
    found = checkpoint.pick(resume, digest, about, max_step=config.steps) if resume else None
    prepare_out_dir(out_dir, found and found[0], bool(resume))  # only now, after every check, is it touched
    run_config = resolved_config(plan, data, device)
    wrapped = {h.name: w for h in plan.hacks if (w := describe_wrap(h)) is not None}
    if wrapped:  # what wrappers changed beyond the Recipe (absent when nothing says so)
        run_config["wrapped"] = wrapped
    RunDir(out_dir).write_config(run_config)

    x_all = scale(data.images, recipe.data_range).to(device)
    gen = torch.Generator(device).manual_seed(config.seed)
    opt_g = make_optimizer(g.parameters(), recipe.g_optimizer, device, config.precision)
    opt_d = make_optimizer(d.parameters(), recipe.d_optimizer, device, config.precision)
    ones = torch.ones(bs, device=device)
    # The loop calls g_fwd/d_fwd; g and d themselves stay plain for saving and evaluation.
    g_fwd, d_fwd = forwards(g, d, config.precision, device)  # ablate.training.precision
    # Hooks: the plain path (no hook overridden) keeps ctx and hooked None and runs
    # exactly the DCGAN step; otherwise the updates call the hooks (ablate.training.steps).
    ctx = hooked = None
    update_d = D_UPDATES[recipe.d_update]
    after = hooks.after_step
    # Only G's gradients from G's loss, unless an after_step hook may read D's
    g_inputs = None if after else g_grad_inputs(opt_g)
    hack_log = HackLog()
    if hooks.per_step or after:
        rng = torch.Generator(device).manual_seed((config.seed + HOOK_SEED) % 2**63)
        ctx = StepContext(recipe, config.steps, g, d, g_sample, opt_g, opt_d, rng, device,
                          log=hack_log)
    if hooks.per_step:
        hooked = HookedUpdates(hooks, ctx, d_fwd, recipe.d_update, opt_g)
        update_d = hooked.update_d
    log = RunLog(out_dir, validate if config.val_every else None)

    # Per-step stats live in a device buffer and reach the host once per log window,
    # so the loop has no host sync per step. Columns: loss_d, loss_g, D(x), D(G(z)).
    # (a window longer than the run would only hold zeros: a huge log_every allocates nothing)
    window = torch.zeros(min(config.log_every, config.steps), 4, device=device)
    perm, cursor = torch.randperm(n_data, generator=gen, device=device), 0
    step, every = 0, config.checkpoint_every
    t_train, t_window = time.perf_counter(), time.perf_counter()
    parts = {"g": g, "d": d, "g_sample": g_sample, "opt_g": opt_g, "opt_d": opt_d}
    if g_sample is g:
        del parts["g_sample"]
    hook_rng = ctx.rng if ctx is not None else None
    if found is not None:  # continue where the checkpoint left off
        state = found[1]
        step, cursor = state["step"], state["cursor"]
        checkpoint.restore_lone(state, parts, gen, hook_rng, plan.hacks)
        hack_log.window = {k: list(v) for k, v in state.get("hack_log", {}).items()}
        perm, window = state["perm"].to(device), state["window"].to(device)
        now = time.perf_counter()
        t_start, t_train = now - state["time"]["wall_s"], now - state["time"]["train_s"]
        t_window = now
        log.restore(state)
    g.train()
    d.train()
    while step < config.steps:
        if ctx is not None:
            ctx.step, ctx.index = step, 0
        for _ in range(recipe.d_steps):
            if cursor + bs > n_data:  # a new epoch: sample without replacement
                perm, cursor = torch.randperm(n_data, generator=gen, device=device), 0
            real = x_all[perm[cursor:cursor + bs]]
            cursor += bs
            fake = g_fwd(sample_latent(recipe, bs, config.latent_dim, gen, device))
            t_real, t_fake = _targets(recipe, bs, gen, device)
            loss_d, out_real, out_fake = update_d(d_fwd, opt_d, real, fake.detach(), t_real, t_fake)
        if hooked is None:
            opt_g.zero_grad(set_to_none=True)
            out_g = d_fwd(fake)  # one logit per image, or per pack under a packing D
            loss_g = F.binary_cross_entropy_with_logits(  # non-saturating loss
                out_g, ones if out_g.shape[0] == bs else ones[:out_g.shape[0]])
            loss_g.backward(inputs=g_inputs)
            opt_g.step()
        else:
            loss_g = hooked.update_g(fake)
        window[step % config.log_every] = torch.stack(
            [loss_d, loss_g.detach(), out_real.sigmoid().mean(), out_fake.sigmoid().mean()])
        step += 1
        if after:
            ctx.step, ctx.loss_d, ctx.loss_g = step, loss_d, loss_g.detach()
            for h in after:
                if call_hook(h, "after_step", ctx) is not None:
                    raise ConfigError(f"hack {h.name!r}: after_step() must return None")
        if step % config.log_every == 0 or step == config.steps:
            n = (step - 1) % config.log_every + 1
            stats = window[:n].cpu()
            now = time.perf_counter()
            timing = {"images_per_s": n * bs / (now - t_window), "elapsed_s": now - t_train}
            t_window = now
            # what hooks reported through ctx.log follows as extra keys
            if log.window(step, stats, timing, hack_log.flush()):
                break
        if log.validate is not None and (step % config.val_every == 0 or step == config.steps):
            t_val = time.perf_counter()
            log.validated(step, g_sample, config.val_n, t_val)
            t_window += time.perf_counter() - t_val  # keep validation out of the throughput
        boundary = step % config.log_every == 0 or (every and step % every == 0)
        if stop is not None and boundary and step < config.steps and stop():
            raise StopRequested(f"stopped at step {step}")
        if every and step % every == 0 and step < config.steps:
            t_save = now = time.perf_counter()
            times = {"wall_s": now - t_start, "train_s": now - t_train, "val_s": log.val_time}
            checkpoint.save(out_dir / checkpoint.STATE_FILE, {
                **checkpoint.header(digest, about, step, log.state(), times),
                **checkpoint.lone_state(parts, gen, hook_rng, plan.hacks, perm=perm, cursor=cursor,
                                        window=window),
                **({"hack_log": hack_log.window} if hack_log.window else {})})
            t_window += time.perf_counter() - t_save  # keep the write out of the throughput
    train_time = time.perf_counter() - t_train - log.val_time

    save_samples(g_sample, recipe, config.latent_dim, device, RunDir(out_dir).samples)
    write_atomic(RunDir(out_dir).generator, lambda f: torch.save(g_sample.state_dict(), f))
    # D as trained (after the wrappers), for hacks and analyses that need it; evaluation,
    # the grid's adoption and committed results do not (*.pt is not committed).
    write_atomic(RunDir(out_dir).discriminator, lambda f: torch.save(d.state_dict(), f))
    return log.finish(step, bs, time.perf_counter() - t_start, train_time, config)


def save_samples(g: nn.Module, recipe: Recipe, latent_dim: int, device, path: Path) -> None:
    """An 8x8 grid from the shared latent batch."""
    from torchvision.utils import save_image

    images = generate(g, fixed_latents(recipe, latent_dim, device), recipe).float().cpu()
    write_atomic(path, lambda f: save_image(images, f, nrow=8, padding=2, format="png"))
