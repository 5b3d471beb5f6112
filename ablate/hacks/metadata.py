"""A hack class's declarations as data: its typed parameters built and checked, and its
JSON-ready description.

The :class:`~ablate.hacks.hack.Hack` classmethods :meth:`~ablate.hacks.hack.Hack.param_fields`,
:meth:`~ablate.hacks.hack.Hack.make_params` and :meth:`~ablate.hacks.hack.Hack.describe`
and the method :meth:`~ablate.hacks.hack.Hack.params_dict` call these; the types
themselves (coercion of CLI strings and TOML values, bounds) are
:mod:`ablate.hacks.params`'s. No torch: ``ablate hacks`` lists hacks without it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ablate.errors import ConfigError
from ablate.hacks import params as typed
from ablate.hacks.hooks import HOOKS

if TYPE_CHECKING:  # annotations only: hack.py imports this module
    from ablate.hacks.hack import Hack


def param_fields(cls: type[Hack]) -> dict[str, tuple[Any, Any]]:
    """``{param: (type, default)}`` of ``cls.Params``, types resolved from annotations."""
    types_ = typed.field_types(cls.Params)
    return {f.name: (types_[f.name], f.default) for f in dataclasses.fields(cls.Params)}


def make_params(cls: type[Hack], values: dict[str, Any] | None = None) -> Any:
    """Build ``cls.Params`` from ``values`` (CLI strings and TOML values are coerced by
    type); every parameter, defaults included, is checked against its type."""
    values = dict(values or {})
    fields = cls.param_fields()
    unknown = sorted(set(values) - set(fields))
    if unknown:
        valid = ", ".join(sorted(fields)) or "(none)"
        raise ConfigError(
            f"hack {cls.name!r} has no parameter {unknown[0]!r}; valid parameters: {valid}"
        )
    kwargs = {}
    for key, (typ, default) in fields.items():
        where = f"hack {cls.name!r}: parameter {key!r}"
        kwargs[key] = (typed.coerce(values[key], typ, where) if key in values
                       else typed.check(default, typ, where + " (its default)"))
    try:
        return cls.Params(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"hack {cls.name!r}: bad parameters {values}: {exc}") from exc


def describe(cls: type[Hack]) -> dict[str, Any]:
    """``cls``'s metadata as a JSON-ready dict (``registry.describe`` adds provider and
    version)."""
    params = {
        k: {"type": typed.type_name(t), "default": jsonable(d)}
        for k, (t, d) in cls.param_fields().items()
    }
    return {
        "name": cls.name,
        "source": cls.source,
        "on": cls.on,
        "off": cls.off,
        "params": params,
        "conflicts": list(cls.conflicts),
        "overrides": list(cls.overrides),
        "before": list(cls.before),
        "after": list(cls.after),
        "hooks": [h for h in HOOKS if h in cls.hooks()] + _other_methods(cls),
    }


def _other_methods(cls: type) -> list[str]:
    """The per-run-state and description methods ``cls`` overrides (not hooks the loop
    selects, but part of what the hack does: a reader of ``ablate hacks --json`` sees
    that its state is checkpointed)."""
    base = next((k for k in cls.__mro__ if k.__module__ == "ablate.hacks.hack" and k.__name__ == "Hack"), None)
    return [m for m in ("describe_wrap", "state_dict", "load_state_dict")
            if base is not None and getattr(cls, m, None) is not getattr(base, m, None)]


def params_dict(hack: Hack) -> dict[str, Any]:
    """A hack instance's parameters as a JSON-ready dict."""
    return jsonable(dataclasses.asdict(hack.params))


def jsonable(value: Any) -> Any:
    """Tuples as lists, at any depth in dicts and tuples (parameter values as JSON)."""
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value
