"""The Hack base class: the plugin API.

A hack is a class with metadata and typed parameters. When it is enabled, ablate
instantiates it with its parameters and calls its hook points, in this order:

1. :meth:`Hack.apply` — transform the :class:`~ablate.recipe.Recipe` (the main hook:
   every built-in hack uses only this one);
2. :meth:`Hack.wrap_generator` / :meth:`Hack.wrap_discriminator` — wrap or modify the
   built, initialised modules (e.g. spectral normalisation, instance noise).

Every default is the identity, so a hack overrides only what it changes. Hooks must
be pure functions of the hack's parameters (and their inputs): a run's identity is the
set of enabled hacks with their parameters.

Example::

    from dataclasses import dataclass
    from ablate import Hack, register_hack

    @register_hack
    class TwoTimescale(Hack):
        name = "ttur"
        source = "Heusel et al. 2017"
        on = "D learns 4x faster than G"
        off = "equal learning rates"

        @dataclass(frozen=True)
        class Params:
            ratio: float = 4.0

        def apply(self, recipe):
            d = recipe.d_optimizer
            return recipe.replace(d_optimizer=replace(d, lr=d.lr * self.params.ratio))
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ablate.errors import ConfigError
from ablate.recipe import Recipe

if TYPE_CHECKING:  # annotations only: the registry (and `ablate hacks`) need no torch
    from torch import nn


@dataclass(frozen=True)
class NoParams:
    """Parameters of a hack that has none."""


class Hack:
    """Base class of every hack. Subclass it, set the metadata, override hooks.

    Class attributes:
        name: the registry key, lowercase with dashes (``"label-smoothing"``).
        source: where the hack comes from (paper, talk, list).
        on: one line saying what the hack does when enabled.
        off: one line saying what the baseline does instead.
        Params: a frozen dataclass of typed parameters with defaults.
        conflicts: names of hacks that cannot be enabled together with this one.
    """

    name: ClassVar[str]
    source: ClassVar[str] = ""
    on: ClassVar[str] = ""
    off: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    conflicts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any | None = None) -> None:
        self.params = params if params is not None else self.Params()

    # ----- hook points (identity by default) ------------------------------------------
    def apply(self, recipe: Recipe) -> Recipe:
        """Return the Recipe with this hack's choices folded in."""
        return recipe

    def wrap_generator(self, generator: nn.Module) -> nn.Module:
        """Wrap or modify the built and initialised generator."""
        return generator

    def wrap_discriminator(self, discriminator: nn.Module) -> nn.Module:
        """Wrap or modify the built and initialised discriminator."""
        return discriminator

    # ----- parameters -----------------------------------------------------------------
    @classmethod
    def param_fields(cls) -> dict[str, tuple[Any, Any]]:
        """``{param: (type, default)}`` with types resolved from annotations."""
        hints = typing.get_type_hints(cls.Params)
        return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(cls.Params)}

    @classmethod
    def make_params(cls, values: dict[str, Any] | None = None) -> Any:
        """Build ``Params`` from ``values`` (strings from the CLI are coerced by type)."""
        values = dict(values or {})
        fields = cls.param_fields()
        unknown = sorted(set(values) - set(fields))
        if unknown:
            valid = ", ".join(sorted(fields)) or "(none)"
            raise ConfigError(
                f"hack {cls.name!r} has no parameter {unknown[0]!r}; valid parameters: {valid}"
            )
        kwargs = {k: _coerce(cls.name, k, v, fields[k][0]) for k, v in values.items()}
        try:
            return cls.Params(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"hack {cls.name!r}: bad parameters {values}: {exc}") from exc

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Metadata as a JSON-ready dict (used by ``ablate hacks --json``)."""
        params = {
            k: {"type": _type_name(t), "default": _jsonable(d)}
            for k, (t, d) in cls.param_fields().items()
        }
        return {
            "name": cls.name,
            "source": cls.source,
            "on": cls.on,
            "off": cls.off,
            "params": params,
            "conflicts": list(cls.conflicts),
        }

    def params_dict(self) -> dict[str, Any]:
        """This instance's parameters as a JSON-ready dict."""
        return _jsonable(dataclasses.asdict(self.params))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _coerce(hack: str, key: str, value: Any, typ: Any) -> Any:
    """Coerce ``value`` (often a CLI string) to the annotated parameter type."""
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError("expected true or false")
        if typ in (int, float, str):
            if typ is int and isinstance(value, float) and not value.is_integer():
                raise ValueError("expected an integer")
            return typ(value)
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            args = typing.get_args(typ)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(args[0](x) for x in items)
            if len(items) != len(args):
                raise ValueError(f"expected {len(args)} comma-separated values")
            return tuple(a(x) for a, x in zip(args, items))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"hack {hack!r}: parameter {key!r} must be {_type_name(typ)}, got {value!r} ({exc})"
        ) from exc
    return value
