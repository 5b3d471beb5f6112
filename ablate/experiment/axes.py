"""Parameter axes: an experiment's design crossed with the levels of one or more settings.

An ``[axes]`` table lists, per axis, the levels to cross the design with::

    [axes]
    lr_scale = [0.5, 1, 2]                     # both optimizers' learning rates, every variant
    width = [32, 64]                           # ngf = ndf, every variant
    noisy-labels.p = [0.01, 0.05, 0.1, 0.2]    # a hack's parameter (TOML dotted key)
    label-smoothing.one_sided = [false, true]

Several axes cross (every combination is a level). Each variant of the design is planned
at each level and named ``<variant> @ <level>`` (``all-on @ lr_scale=0.5``); each
one-factor comparison is made within a level. A hack parameter's level applies to the
variants that enable the hack; a variant without it is the same run at every level of
that axis (one run key, trained once, shared by the levels). A level equal to the
experiment's own setting (``lr_scale = 1``, ``width`` = its ngf, a parameter's default or
``[hacks.params]`` value) gives exactly the run keys of the experiment without the axis,
so finished runs are found again (here, or through ``reuse``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Annotated, Any

from ablate.config import LR_SCALE, MAX_WIDTH
from ablate.errors import ConfigError
from ablate.hacks import registry
from ablate.hacks.params import Bounds, check

SETTINGS = ("lr_scale", "width")  # axes over a training setting of every variant
MAX_LEVELS = 100  # levels of all axes crossed: more is a typo (each multiplies the grid)

Level = tuple[tuple[str, Any], ...]  # ((axis name, value), ...) in the axes' order


@dataclass(frozen=True)
class Axis:
    """One axis: ``lr_scale``, ``width`` or ``<hack>.<param>``, and its levels in order."""

    name: str
    levels: tuple[Any, ...]

    @property
    def hack(self) -> str | None:
        """The hack whose parameter this axis sets (None for a training setting)."""
        return None if self.name in SETTINGS else self.name.partition(".")[0]

    @property
    def param(self) -> str | None:
        return None if self.name in SETTINGS else self.name.partition(".")[2]


def _flatten(table: dict) -> list[tuple[str, Any]]:
    """``{"noisy-labels": {"p": [...]}, "lr_scale": [...]}`` -> ``[("noisy-labels.p", [...]), ...]``."""
    out = []
    for key, value in table.items():
        if isinstance(value, dict):
            out.extend((f"{key}.{k}", v) for k, v in _flatten(value))
        else:
            out.append((key, value))
    return out


def parse_axes(table: Any, scope: tuple[str, ...]) -> tuple[Axis, ...]:
    """Check an ``[axes]`` table: known settings or parameters of hacks in scope, each a
    non-empty list of distinct valid values; at most :data:`MAX_LEVELS` levels crossed."""
    if not isinstance(table, dict):
        raise ConfigError(f"[axes] must be a table of axis = [levels], got {type(table).__name__}")
    axes = []
    for name, values in _flatten(table):
        where = f"[axes].{name}"
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where} must be a non-empty list of levels, e.g. {name} = [0.5, 1, 2]")
        if name in SETTINGS:
            levels = tuple(_setting(name, v, where) for v in values)
        else:
            hack, dot, param = name.partition(".")
            if not dot or "." in param:
                raise ConfigError(f"{where}: an axis is lr_scale, width or <hack>.<param> "
                                  f"(e.g. noisy-labels.p); got {name!r}")
            if hack not in scope:
                raise ConfigError(f"{where}: hack {hack!r} is not in scope; hacks in scope: "
                                  f"{', '.join(scope) or '(none)'}")
            cls = registry.get_hack(hack)
            try:
                levels = tuple(getattr(cls.make_params({param: v}), param) for v in values)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
        if len(set(map(repr, levels))) != len(levels):
            raise ConfigError(f"{where}: a level is listed twice in {values}")
        axes.append(Axis(name, levels))
    n = 1
    for a in axes:
        n *= len(a.levels)
    if n > MAX_LEVELS:
        raise ConfigError(f"[axes]: {n} levels crossed; at most {MAX_LEVELS} (each level "
                          "trains the whole design again)")
    return tuple(axes)


# The settings' levels, checked by the same coercion as hack parameters (ablate.hacks.params).
_SETTING_TYPES = {"lr_scale": LR_SCALE,
                  "width": Annotated[int, Bounds(ge=1, le=MAX_WIDTH)]}


def _setting(name: str, value: Any, where: str) -> Any:
    return check(value, _SETTING_TYPES[name], f"{where}: a level")


def levels(axes: tuple[Axis, ...]) -> tuple[Level, ...]:
    """Every level of the crossed axes, the first axis slowest; ``((),)`` without axes."""
    names = [a.name for a in axes]
    return tuple(tuple(zip(names, combo)) for combo in itertools.product(*(a.levels for a in axes)))


def label(level: Level) -> str:
    """``lr_scale=0.5`` / ``noisy-labels.p=0.1, width=64``: how a level is named."""
    return ", ".join(f"{name}={_text(value)}" for name, value in level)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def named(variant: str, level: Level) -> str:
    """``<variant> @ <level>`` (the variant's own name without axes)."""
    return f"{variant} @ {label(level)}" if level else variant


def apply_level(level: Level, hacks: frozenset[str] | tuple[str, ...],
                params: tuple[tuple[str, str, Any], ...], train: dict[str, Any]
                ) -> tuple[tuple[tuple[str, str, Any], ...], dict[str, Any]]:
    """The (params, train keyword arguments) of a variant enabling ``hacks`` at ``level``.

    A hack parameter's level replaces the experiment's value only where the hack is
    enabled, so a variant without it keeps the run (and key) it has at every level."""
    params_d = {(h, k): v for h, k, v in params}
    train = dict(train)
    for name, value in level:
        if name == "lr_scale":
            train["lr_scale"] = value
        elif name == "width":
            train["ngf"] = train["ndf"] = value
        else:
            hack, _, param = name.partition(".")
            if hack in hacks:
                params_d[(hack, param)] = value
    if train.get("lr_scale") == 1.0:
        train.pop("lr_scale")  # the default: the TrainConfig, and its key, stay as they were
    return tuple((h, k, v) for (h, k), v in sorted(params_d.items())), train
