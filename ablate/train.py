"""Train one run: a TrainConfig (dataset, budget, hacks, seed) -> a run directory.

The loop reads only the Recipe. Everything a hack changes arrives through it (model
structure, optimizers, latent prior, data range, targets, the discriminator-update
strategy) or through the module wrappers the hacks return.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ablate import registry
from ablate.artefacts import append_jsonl, write_atomic, write_json
from ablate.data import ImageSet, load, scale, unscale
from ablate.environment import git_commit, hardware, resolve_device, versions
from ablate.errors import ConfigError
from ablate.hack import Hack
from ablate.models import LATENT_DIM, build_models, sample_latent
from ablate.recipe import Optimizer, Recipe

SAMPLE_SEED = 1234  # one latent batch shared by every run, so sample grids compare
SAMPLE_COUNT = 64  # an 8x8 grid
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (and so its identity)."""

    dataset: str = "fashion-mnist"
    steps: int = 1000  # generator updates
    batch_size: int = 64  # real images per discriminator update (and fakes alike)
    seed: int = 0
    hacks: tuple[str, ...] = ()  # enabled hacks; order is irrelevant (canonical order used)
    # (hack, param, value) overrides; also for disabled hacks, which then just validate.
    params: tuple[tuple[str, str, Any], ...] = ()
    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width
    latent_dim: int = LATENT_DIM
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    log_every: int = 50  # steps between log lines and divergence checks
    # bf16 autocast for G and D forward passes (GPU speed option). Off by default so that
    # numbers compare across machines; it is part of the run identity.
    precision: str = "fp32"
    # Validation FID (classifier features, vs the val split) every val_every steps; 0 = off.
    # It draws the curve in log.jsonl and picks generator_best.pt (never the test split).
    val_every: int = 0
    val_n: int = 2000  # samples per validation FID: cheap (~1 s on CPU), stable enough to rank

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "ngf", "ndf", "latent_dim", "log_every", "val_n"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be a positive integer, got {getattr(self, key)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.val_every < 0:
            raise ConfigError(f"val_every must be >= 0 (0 = off), got {self.val_every}")

    def param_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for hack, key, value in self.params:
            out.setdefault(hack, {})[key] = value
        return out

    def resolve_hacks(self) -> list[Hack]:
        """Instantiate the enabled hacks (validating names, parameters and conflicts)."""
        return registry.instantiate(self.hacks, self.param_dict())


@dataclass
class TrainResult:
    """The outcome of :func:`train`, also written as ``result.json``."""

    status: str  # "done" or "diverged"
    steps: int  # generator updates completed
    diverged_step: int | None
    wall_time_s: float
    train_time_s: float
    images_per_s: float
    out_dir: str
    extra: dict[str, Any] = field(default_factory=dict)


def resolved_config(config: TrainConfig, hacks: list[Hack], recipe: Recipe,
                    data: ImageSet | None = None, device: torch.device | None = None) -> dict:
    """The fully resolved run configuration written to ``config.json``."""
    out: dict[str, Any] = {
        "train": dataclasses.asdict(config),
        "hacks": [{"name": h.name, "params": h.params_dict(), "provider": registry.provider(h.name)}
                  for h in hacks],
        "recipe": recipe.to_dict(),
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


class Autocast(nn.Module):
    """Runs ``inner`` under bf16 autocast and returns float32 (losses stay in fp32)."""

    def __init__(self, inner: nn.Module, device_type: str) -> None:
        super().__init__()
        self.inner, self.device_type = inner, device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.inner(x).float()


def make_optimizer(params, spec: Optimizer, device: torch.device) -> torch.optim.Optimizer:
    if spec.name != "adam":
        raise ConfigError(f"unknown optimizer {spec.name!r}; valid: adam")
    return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay,
                            foreach=True)


# --------------------------------------------------------------------------------------
# The training run
# --------------------------------------------------------------------------------------
def prepare_out_dir(out_dir: Path) -> None:
    """Refuse to overwrite a run directory that already holds files."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"run directory {out_dir} already exists and is not empty; "
                          "choose another --out or remove it yourself")
    out_dir.mkdir(parents=True, exist_ok=True)


def build(config: TrainConfig, shape: tuple[int, int, int], device: torch.device
          ) -> tuple[list[Hack], Recipe, nn.Module, nn.Module]:
    """Resolve the hacks, fold the Recipe, build + initialise + wrap G and D (seeded)."""
    hacks = config.resolve_hacks()
    recipe = registry.build_recipe(hacks)
    torch.manual_seed(config.seed)
    g, d = build_models(recipe, shape, config.ngf, config.ndf, config.latent_dim)
    for h in hacks:
        g, d = h.wrap_generator(g), h.wrap_discriminator(d)
    # channels_last is oneDNN's fast convolution layout: 1.2x (all-on) to 1.5x (all-off)
    # per training step on the CPU (benchmarks/README.md); the numbers do not change.
    fmt = torch.channels_last
    return hacks, recipe, g.to(device, memory_format=fmt), d.to(device, memory_format=fmt)


def train(config: TrainConfig, out_dir: Path | str) -> TrainResult:
    """Train one GAN and write the run directory (see README: run directory)."""
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    data = load(config.dataset, "train")
    n_data, bs = len(data), config.batch_size
    if bs > n_data:
        raise ConfigError(f"batch size {bs} exceeds the {n_data} training images of {config.dataset}")
    hacks, recipe, g, d = build(config, data.shape, device)  # validates hacks and params
    prepare_out_dir(out_dir)  # only now, after every check, is the run directory touched
    write_json(out_dir / "config.json", resolved_config(config, hacks, recipe, data, device))

    x_all = scale(data.images, recipe.data_range).to(device)
    gen = torch.Generator(device).manual_seed(config.seed)
    opt_g = make_optimizer(g.parameters(), recipe.g_optimizer, device)
    opt_d = make_optimizer(d.parameters(), recipe.d_optimizer, device)
    update_d = D_UPDATES[recipe.d_update]
    ones = torch.ones(bs, device=device)
    # The loop calls g_fwd/d_fwd; g and d themselves stay plain for saving and evaluation.
    g_fwd, d_fwd = (Autocast(g, device.type), Autocast(d, device.type)) \
        if config.precision == "bf16" else (g, d)
    validate = _validator(config, recipe, device)  # None when val_every == 0
    best_fid, best_step, val_time = float("inf"), None, 0.0

    # Per-step stats live in a device buffer and reach the host once per log window,
    # so the loop has no host sync per step. Columns: loss_d, loss_g, D(x), D(G(z)).
    window = torch.zeros(config.log_every, 4, device=device)
    perm, cursor = torch.randperm(n_data, generator=gen, device=device), 0
    status, diverged_step, step = "done", None, 0
    t_train, t_window = time.perf_counter(), time.perf_counter()
    g.train()
    d.train()
    while step < config.steps:
        for _ in range(recipe.d_steps):
            if cursor + bs > n_data:  # a new epoch: sample without replacement
                perm, cursor = torch.randperm(n_data, generator=gen, device=device), 0
            real = x_all[perm[cursor:cursor + bs]]
            cursor += bs
            fake = g_fwd(sample_latent(recipe, bs, config.latent_dim, gen, device))
            t_real, t_fake = _targets(recipe, bs, gen, device)
            loss_d, out_real, out_fake = update_d(d_fwd, opt_d, real, fake.detach(), t_real, t_fake)
        opt_g.zero_grad(set_to_none=True)
        loss_g = F.binary_cross_entropy_with_logits(d_fwd(fake), ones)  # non-saturating loss
        loss_g.backward()
        opt_g.step()
        window[step % config.log_every] = torch.stack(
            [loss_d, loss_g.detach(), out_real.sigmoid().mean(), out_fake.sigmoid().mean()])
        step += 1
        if step % config.log_every == 0 or step == config.steps:
            n = (step - 1) % config.log_every + 1
            stats = window[:n].cpu()
            bad = (~torch.isfinite(stats)).any(dim=1).nonzero()
            now = time.perf_counter()
            means = [v if math.isfinite(v) else None for v in stats.mean(0).tolist()]
            record = {"step": step, **dict(zip(("loss_d", "loss_g", "d_real", "d_fake"), means)),
                      "images_per_s": n * bs / (now - t_window), "elapsed_s": now - t_train}
            if len(bad):
                status, diverged_step = "diverged", step - n + int(bad[0]) + 1
                record["diverged_step"] = diverged_step
            append_jsonl(out_dir / "log.jsonl", record)
            t_window = now
            if status == "diverged":
                break
        if validate is not None and (step % config.val_every == 0 or step == config.steps):
            t_val = time.perf_counter()
            val_fid = validate(g)
            if val_fid < best_fid:  # NaN (non-finite samples) never becomes the best
                best_fid, best_step = val_fid, step
                write_atomic(out_dir / "generator_best.pt", lambda f: torch.save(g.state_dict(), f))
            append_jsonl(out_dir / "log.jsonl", {"step": step, "val_fid": val_fid,
                                                 "val_n": config.val_n, "best_step": best_step})
            elapsed = time.perf_counter() - t_val
            val_time += elapsed
            t_window += elapsed  # keep validation out of the logged throughput
    train_time = time.perf_counter() - t_train - val_time

    save_samples(g, recipe, config.latent_dim, device, out_dir / "samples.png")
    write_atomic(out_dir / "generator.pt", lambda f: torch.save(g.state_dict(), f))
    result = TrainResult(status, step, diverged_step, time.perf_counter() - t_start, train_time,
                         step * bs / train_time, str(out_dir))
    if validate is not None:
        result.extra.update(best_step=best_step, best_val_fid=best_fid if best_step else None,
                            val_n=config.val_n, val_every=config.val_every,
                            val_time_s=round(val_time, 3))
    write_json(out_dir / "result.json", dataclasses.asdict(result))
    return result


def _validator(config: TrainConfig, recipe: Recipe, device: torch.device):
    """A callable ``g -> validation FID`` (ablate.evaluate.ValidationFID), or None if off."""
    if not config.val_every:
        return None
    from ablate.evaluate import ValidationFID

    return ValidationFID(config.dataset, recipe, config.latent_dim, config.val_n, device,
                         seed=config.seed)


def fixed_latents(recipe: Recipe, latent_dim: int, device, n: int = SAMPLE_COUNT) -> torch.Tensor:
    """The shared latent batch (same seed for every run; drawn from the run's prior)."""
    gen = torch.Generator().manual_seed(SAMPLE_SEED)
    return sample_latent(recipe, n, latent_dim, gen).to(device)


@torch.inference_mode()
def generate(g: nn.Module, z: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """Images in [0, 1] from latents, with G in eval mode (BatchNorm running stats)."""
    was_training = g.training
    g.eval()
    try:
        return unscale(g(z), recipe.data_range)
    finally:
        g.train(was_training)


def save_samples(g: nn.Module, recipe: Recipe, latent_dim: int, device, path: Path) -> None:
    """An 8x8 grid from the shared latent batch."""
    from torchvision.utils import save_image

    images = generate(g, fixed_latents(recipe, latent_dim, device), recipe).float().cpu()
    write_atomic(path, lambda f: save_image(images, f, nrow=8, padding=2, format="png"))


def load_run(run_dir: Path | str, device: str = "cpu") -> tuple[dict, Recipe, nn.Module]:
    """Rebuild a run's generator from its ``config.json`` and ``generator.pt``."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    t = cfg["train"]
    params = tuple((h["name"], k, v) for h in cfg["hacks"] for k, v in h["params"].items())
    config = TrainConfig(**{**t, "hacks": tuple(t["hacks"]), "params": params, "device": device})
    dev = resolve_device(device)
    shape = tuple(cfg["data"]["shape"])
    _, recipe, g, _ = build(config, shape, dev)
    g.load_state_dict(torch.load(run_dir / "generator.pt", map_location=dev))
    return cfg, recipe, g
