"""Resolve a :class:`~ablate.config.TrainConfig`'s hack names into a
:class:`~ablate.training.loop.TrainPlan` (hack instances, the folded Recipe, what config.json
records of each hack), and rebuild a finished run's generator from its directory.

This is the one place between the registry and the training loop: :mod:`ablate.training.loop`
receives plans and never looks a hack up by name.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from ablate.hacks import registry
from ablate.config import TrainConfig
from ablate.environment import resolve_device
from ablate.errors import ConfigError
from ablate.layout import RunDir
from ablate.hacks.hack import Hack
from ablate.hacks.recipe import Recipe
from ablate.training.loop import TrainPlan, build


def resolve(config: TrainConfig) -> TrainPlan:
    """Instantiate the enabled hacks (validating names, parameters, conflicts and
    overlaps), fold their Recipe changes (canonical order, overriding hacks last), and
    record what config.json says of each: name, parameters, provider and version."""
    hacks = registry.instantiate(config.hacks, config.param_dict())
    recipe = scale_lr(registry.build_recipe(hacks), config.lr_scale)
    records = tuple(hack_record(h) for h in hacks)
    return TrainPlan(config=config, recipe=recipe, hacks=tuple(hacks), hack_records=records)


def scale_lr(recipe: Recipe, scale: float) -> Recipe:
    """``recipe`` with both optimizers' learning rates multiplied by ``scale`` (the
    ``lr_scale`` axis); 1.0 returns it unchanged, so run keys stay as they were."""
    if scale == 1.0:
        return recipe
    return recipe.replace(**{side: dataclasses.replace(opt, lr=opt.lr * scale)
                             for side, opt in (("g_optimizer", recipe.g_optimizer),
                                               ("d_optimizer", recipe.d_optimizer))})


def hack_record(hack: Hack) -> dict:
    """``{"name", "params", "provider", "version"}``: one enabled hack in config.json.

    Run keys include the version of hacks whose provider is not ``ablate`` (built-ins are
    versioned by the grid's CODE_VERSION), so bumping a plugin retrains its variants."""
    return {"name": hack.name, "params": hack.params_dict(), "provider": registry.provider(hack.name),
            "version": registry.version(hack.name)}


def config_from_json(cfg: dict, device: str = "cpu") -> TrainConfig:
    """The TrainConfig a ``config.json`` was written from (``device`` replaced)."""
    try:
        t = cfg["train"]
        params = tuple((h["name"], k, v) for h in cfg["hacks"] for k, v in h["params"].items())
        return TrainConfig(**{**t, "hacks": tuple(t["hacks"]), "params": params, "device": device})
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"config.json is not an ablate run config ({type(exc).__name__}: {exc})") from exc


def read_config(run_dir: Path | str) -> dict:
    """A run directory's ``config.json``; ConfigError if it is missing or not a run config."""
    path = RunDir(run_dir).config
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} not found: {run_dir} is not a run directory") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc}); the run cannot be rebuilt "
                          "from it (retrain it)") from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} is not an ablate run config (a JSON object expected)")
    return cfg


def load_state(path: Path, device: torch.device) -> dict:
    """A checkpoint's state dict; ConfigError if the file is truncated, empty or foreign."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} not found") from exc
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise ConfigError(f"{path} is not a readable checkpoint ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'empty'}); retrain the run "
                          "or restore the file") from exc
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a generator state dict")
    return state


def load_into(module: nn.Module, path: Path, device: torch.device) -> None:
    """Load ``path`` into ``module``; ConfigError if it is another architecture."""
    state = load_state(path, device)
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).splitlines()
        raise ConfigError(f"{path} does not fit the generator that {RunDir(path.parent).config} "
                          f"describes ({first[1].strip() if len(first) > 1 else first[0]}); "
                          "the checkpoint belongs to another run or architecture") from exc


def load_run(run_dir: Path | str, device: str = "cpu") -> tuple[dict, Recipe, nn.Module]:
    """Rebuild a run's generator from its ``config.json`` and ``generator.pt``."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    plan = resolve(config_from_json(cfg, device))
    dev = resolve_device(device)
    try:
        shape = tuple(int(x) for x in cfg["data"]["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{RunDir(run_dir).config} has no valid data.shape ({exc})") from exc
    if len(shape) != 3:
        raise ConfigError(f"{RunDir(run_dir).config}: data.shape must be (C, H, W), got {shape}")
    try:
        g, _ = build(plan, shape, dev)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ConfigError(f"{RunDir(run_dir).config} describes no buildable generator "
                          f"({type(exc).__name__}: {exc})") from exc
    load_into(g, RunDir(run_dir).generator, dev)
    return cfg, plan.recipe, g
