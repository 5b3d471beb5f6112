"""Which runs can be trained together as one fused model, and how to group them.

Runs fuse when they share their architecture and their loop: every field of the
TrainConfig and of the Recipe except the ones a fused model keeps per member —
:data:`MEMBER_CONFIG_FIELDS` (seed, hacks, hack parameters) and
:data:`MEMBER_RECIPE_FIELDS` (initialisation, Adam settings, latent prior, D targets,
label flips). Unknown fields (a Recipe field a later hack API adds, say) count as
structural, so a new field can only make fewer runs fuse, never fuse wrongly.

A hack fuses only through :meth:`~ablate.hacks.hack.Hack.apply`: a hack that overrides any
other hook (module wrappers, and whatever hooks the hack API adds later — found by
looking at the class, not by a list) trains alone, and :func:`fuse_blocker` says why.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ablate.data import dataset_spec
from ablate.errors import ConfigError
from ablate.hacks.hack import Hack
from ablate.training.models import build_models
from ablate.hacks.recipe import Optimizer
from ablate.training.loop import TrainPlan

log = logging.getLogger("ablate.fused")

# Kept per member by the fused trainer; every other field must match across a group.
MEMBER_CONFIG_FIELDS = ("seed", "hacks", "params")
MEMBER_RECIPE_FIELDS = ("init", "g_optimizer", "d_optimizer", "latent", "real_target",
                        "fake_target", "label_flip_p")
# Adam settings the fused optimizer keeps per member (name must be "adam").
MEMBER_OPTIMIZER_FIELDS = ("lr", "betas", "weight_decay")
# The fields the fused trainer implements, as of writing. A field added later (a loss
# kind the lone loop reads, say) blocks fusion unless it has its default value, so the
# fused loop never silently ignores a setting.
KNOWN_RECIPE_FIELDS = frozenset({
    "downsample", "upsample", "d_activation", "g_activation", "g_norm", "d_norm", "init",
    "g_optimizer", "d_optimizer", "d_steps", "data_range", "latent", "real_target",
    "fake_target", "label_flip_p", "d_update"})
KNOWN_CONFIG_FIELDS = frozenset({
    "dataset", "steps", "batch_size", "seed", "hacks", "params", "ngf", "ndf", "latent_dim",
    "device", "threads", "log_every", "precision", "val_every", "val_n", "checkpoint_every"})
# The discriminator-update strategies the fused trainer implements (ablate.training.loop's
# D_UPDATES may grow; a strategy added there trains alone until it is fused too).
FUSED_D_UPDATES = ("mixed", "separate")

# Layers the fused model knows. Elementwise or per-channel spatial layers act on the
# fused (B, K*C, H, W) tensor exactly as on one member's (B, C, H, W).
_PASSTHROUGH = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Upsample, nn.AvgPool2d,
                nn.Identity)


def overridden_hooks(hack: Hack) -> list[str]:
    """The hooks (other than ``apply``) that ``hack``'s class overrides."""
    return sorted(hack.hooks() - {"apply"})


def layer_blocker(model: nn.Module) -> str | None:
    """Why a built model has no fused form (a layer the fused model does not know), or None."""
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        return f"{type(model).__name__} is not a plain nn.Sequential"
    layers = list(model)
    for i, m in enumerate(layers):
        kind = type(m)
        if kind in (nn.Conv2d, nn.ConvTranspose2d):
            if m.groups != 1 or m.padding_mode != "zeros":
                return f"layer {i} ({kind.__name__}) is grouped or not zero-padded"
        elif kind is nn.BatchNorm2d:
            if not (m.affine and m.track_running_stats) or m.momentum is None:
                return f"layer {i} (BatchNorm2d) is not affine with momentum running stats"
        elif kind is nn.Unflatten:
            if i != 0 or m.dim != 1:
                return f"layer {i} (Unflatten) is not the input layer"
        elif kind is nn.Flatten:
            if i != len(layers) - 1 or m.start_dim != 0:
                return f"layer {i} (Flatten) is not the output layer"
        elif kind not in _PASSTHROUGH:
            return f"layer {i} ({kind.__name__}) has no fused form"
    return None


def fuse_blocker(plan: TrainPlan) -> str | None:
    """Why ``plan`` cannot be trained fused (it then trains alone), or None if it can."""
    for hack in plan.hacks:
        hooks = overridden_hooks(hack)
        if hooks:
            return (f"hack {hack.name!r} overrides {', '.join(hooks)}; fused training calls "
                    "only apply()")
    recipe = plan.recipe
    for obj, known in ((recipe, KNOWN_RECIPE_FIELDS), (plan.config, KNOWN_CONFIG_FIELDS)):
        for f in dataclasses.fields(obj):
            if f.name not in known and getattr(obj, f.name) != _default(f):
                return (f"{type(obj).__name__}.{f.name} = {getattr(obj, f.name)!r} is not "
                        "implemented by the fused trainer")
    if recipe.d_update not in FUSED_D_UPDATES:
        return f"discriminator update {recipe.d_update!r} has no fused form"
    for which in ("g_optimizer", "d_optimizer"):
        opt = getattr(recipe, which)
        if not isinstance(opt, Optimizer) or opt.name != "adam":
            return f"{which} is not Adam; the fused optimizer is Adam only"
        default = Optimizer()
        for f in dataclasses.fields(opt):
            if f.name not in ("name", *MEMBER_OPTIMIZER_FIELDS) and \
                    getattr(opt, f.name) != getattr(default, f.name):
                return f"{which}.{f.name} is not supported by the fused Adam"
        if len(opt.betas) != 2:
            return f"{which}.betas must be two numbers"
    config = plan.config
    try:
        shape = dataset_spec(config.dataset).shape
    except ConfigError as exc:
        return str(exc)
    # Build on the meta device: no memory, no draws from the global RNG.
    with torch.device("meta"):
        g, d = build_models(recipe, shape, config.ngf, config.ndf, config.latent_dim)
    for name, model in (("generator", g), ("discriminator", d)):
        why = layer_blocker(model)
        if why:
            return f"{name}: {why}"
    return None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def fusable_key(plan: TrainPlan) -> str | None:
    """A string equal for plans that can train as one fused model; None if ``plan`` cannot.

    It holds every TrainConfig and Recipe field except the per-member ones, plus the
    optimizer fields the fused Adam does not keep per member.
    """
    if fuse_blocker(plan) is not None:
        return None
    config = {f.name: _jsonable(getattr(plan.config, f.name))
              for f in dataclasses.fields(plan.config) if f.name not in MEMBER_CONFIG_FIELDS}
    recipe = {f.name: _jsonable(getattr(plan.recipe, f.name))
              for f in dataclasses.fields(plan.recipe) if f.name not in MEMBER_RECIPE_FIELDS}
    for which in ("g_optimizer", "d_optimizer"):
        opt = getattr(plan.recipe, which)
        recipe[which] = {f.name: _jsonable(getattr(opt, f.name)) for f in dataclasses.fields(opt)
                         if f.name not in MEMBER_OPTIMIZER_FIELDS}
    return json.dumps({"train": config, "recipe": recipe}, sort_keys=True, default=repr)


def _chunks(items: list[int], max_k: int) -> list[list[int]]:
    """Split into the fewest chunks of at most ``max_k``, sizes as equal as possible."""
    n = math.ceil(len(items) / max_k)
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        out.append(items[start:end])
        start = end
    return out


def group_plans(plans: Sequence[TrainPlan], max_k: int,
                key: Callable[[TrainPlan], str | None] = fusable_key) -> list[list[int]]:
    """Partition ``plans`` into groups to train together: lists of indices into ``plans``.

    Plans with the same :func:`fusable_key` share groups of at most ``max_k`` (split
    into nearly equal parts: 18 plans at max_k 16 give 9 + 9, not 16 + 2); a plan that
    cannot fuse is a group of its own, with the reason logged. Groups are ordered by
    their first plan, and each group keeps the plans' order.
    """
    if max_k < 1:
        raise ConfigError(f"max_k must be a positive integer, got {max_k}")
    buckets: dict[str, list[int]] = {}
    order: list[tuple[int, str | None]] = []
    for i, plan in enumerate(plans):
        k = key(plan)
        if k is None:
            why = fuse_blocker(plan) if key is fusable_key else "its key is None"
            log.info("run %d (seed %d, hacks %s) trains alone: %s", i, plan.config.seed,
                     ",".join(plan.config.hacks) or "none", why)
            order.append((i, None))
        elif k not in buckets:
            buckets[k] = [i]
            order.append((i, k))
        else:
            buckets[k].append(i)
    groups: list[list[int]] = []
    for i, k in order:
        groups.extend([[i]] if k is None else _chunks(buckets[k], max_k))
    return sorted(groups, key=lambda g: g[0])
