"""Resolve a :class:`~ablate.config.TrainConfig`'s hack names into a
:class:`~ablate.train.TrainPlan` (hack instances, the folded Recipe, what config.json
records of each hack), and rebuild a finished run's generator from its directory.

This is the one place between the registry and the training loop: :mod:`ablate.train`
receives plans and never looks a hack up by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ablate import registry
from ablate.config import TrainConfig
from ablate.environment import resolve_device
from ablate.errors import ConfigError
from ablate.hack import Hack
from ablate.recipe import Recipe
from ablate.train import TrainPlan, build


def resolve(config: TrainConfig) -> TrainPlan:
    """Instantiate the enabled hacks (validating names, parameters, conflicts and
    overlaps), fold their Recipe changes (canonical order, overriding hacks last), and
    record what config.json says of each: name, parameters, provider and version."""
    hacks = registry.instantiate(config.hacks, config.param_dict())
    recipe = registry.build_recipe(hacks)
    records = tuple(hack_record(h) for h in hacks)
    return TrainPlan(config=config, recipe=recipe, hacks=tuple(hacks), hack_records=records)


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
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"config.json is not an ablate run config ({type(exc).__name__}: {exc})") from exc


def load_run(run_dir: Path | str, device: str = "cpu") -> tuple[dict, Recipe, nn.Module]:
    """Rebuild a run's generator from its ``config.json`` and ``generator.pt``."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    plan = resolve(config_from_json(cfg, device))
    dev = resolve_device(device)
    g, _ = build(plan, tuple(cfg["data"]["shape"]), dev)
    g.load_state_dict(torch.load(run_dir / "generator.pt", map_location=dev))
    return cfg, plan.recipe, g
