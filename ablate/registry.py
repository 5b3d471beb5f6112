"""Hack registry: name -> Hack class, a decorator, and entry-point discovery.

Built-in hacks (:data:`ablate.hacks.BUILTIN`) register first. Third-party hacks register
through the entry-point group ``ablate.hacks``; each entry point names a module (which
registers its hacks with :func:`register_hack` on import) or a :class:`Hack` subclass.
Discovery is lazy: it happens on the first lookup, never at ``import ablate``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterable
from typing import Any

from ablate.errors import ConfigError
from ablate.hack import Hack
from ablate.hacks import BUILTIN
from ablate.recipe import Recipe

ENTRY_POINT_GROUP = "ablate.hacks"
KEYWORDS = ("all", "builtin", "none")  # hack-selection keywords (CLI and experiment files)

_REGISTRY: dict[str, type[Hack]] = {}
_PROVIDERS: dict[str, str] = {}
_discovered = False


def register_hack(cls: type[Hack] | None = None, *, provider: str | None = None):
    """Class decorator that registers a :class:`Hack` subclass under ``cls.name``.

    Raises :class:`ConfigError` if the name is taken by another class.
    """

    def _register(hack_cls: type[Hack]) -> type[Hack]:
        if not (isinstance(hack_cls, type) and issubclass(hack_cls, Hack)):
            raise TypeError(f"register_hack expects a Hack subclass, got {hack_cls!r}")
        name = getattr(hack_cls, "name", None)
        if not name or not isinstance(name, str):
            raise TypeError(f"{hack_cls.__qualname__} must set a string class attribute 'name'")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not hack_cls:
            raise ConfigError(
                f"hack name {name!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}; choose another name"
            )
        _REGISTRY[name] = hack_cls
        _PROVIDERS[name] = provider or hack_cls.__module__.split(".")[0]
        return hack_cls

    return _register(cls) if cls is not None else _register


def unregister_hack(name: str) -> None:
    """Remove a hack from the registry (tests; interactive plugin development)."""
    _REGISTRY.pop(name, None)
    _PROVIDERS.pop(name, None)


def _discover() -> None:
    """Import built-ins, then load every ``ablate.hacks`` entry point (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for cls in BUILTIN:
        register_hack(cls, provider="ablate")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else ep.module
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the harness down
            raise ConfigError(
                f"could not load hack plugin {ep.name!r} ({ep.value}) from {dist}: {exc}"
            ) from exc
        if isinstance(obj, type) and issubclass(obj, Hack) and obj.name not in _REGISTRY:
            register_hack(obj, provider=dist)
        for name, cls in _REGISTRY.items():  # hacks the module registered on import
            if cls.__module__.split(".")[0] == ep.module.split(".")[0]:
                _PROVIDERS[name] = dist


def list_hacks() -> list[type[Hack]]:
    """Every registered hack class, built-ins first in the README's table order."""
    _discover()
    builtin = [cls for cls in BUILTIN if _REGISTRY.get(cls.name) is cls]
    # Plugins after the built-ins, by name: the order never depends on discovery order.
    plugins = sorted((c for c in _REGISTRY.values() if c not in builtin), key=lambda c: c.name)
    return builtin + plugins


def hack_names() -> list[str]:
    """Every registered hack name, in canonical order."""
    return [h.name for h in list_hacks()]


def builtin_names() -> list[str]:
    """The eleven built-in hack names, in canonical order."""
    _discover()
    return [cls.name for cls in BUILTIN]


def provider(name: str) -> str:
    """The package that provides hack ``name`` (``ablate`` for built-ins)."""
    _discover()
    return _PROVIDERS[name]


def get_hack(name: str) -> type[Hack]:
    """Look up a hack class; unknown names raise an error listing the valid ones."""
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(_REGISTRY)
        raise ConfigError(f"unknown hack {name!r}; valid hacks: {valid}") from None


def expand(selection: Iterable[str], removed: Iterable[str] = ()) -> tuple[str, ...]:
    """Hack names and keywords -> enabled names in canonical order, minus ``removed``.

    ``all`` is every registered hack (plugins included), ``builtin`` the eleven, ``none``
    nothing; keywords and names mix: ``["builtin", "spectral-norm"]``. Unknown names
    raise a :class:`ConfigError` listing the valid ones.
    """
    keywords = {"all": hack_names(), "builtin": builtin_names(), "none": []}
    chosen: list[str] = []
    for item in selection:
        chosen += keywords.get(item, [item])
    removed = list(removed)
    for name in chosen + removed:
        get_hack(name)
    return canonical(h for h in chosen if h not in removed)


def canonical(names: Iterable[str]) -> tuple[str, ...]:
    """Distinct hack names in canonical (registry) order."""
    order = {n: i for i, n in enumerate(hack_names())}
    return tuple(sorted(dict.fromkeys(names), key=lambda n: order.get(n, len(order))))


def instantiate(
    enabled: Iterable[str], params: dict[str, dict[str, Any]] | None = None
) -> list[Hack]:
    """Instantiate the enabled hacks with their parameters, in canonical order.

    ``params`` maps hack name -> {param: value}; parameters of hacks that are not
    enabled are validated but otherwise ignored. Conflicting hacks raise an error
    naming both.
    """
    enabled = list(dict.fromkeys(enabled))
    params = params or {}
    for name in list(enabled) + list(params):
        get_hack(name)
    enabled = list(canonical(enabled))
    for name, values in params.items():
        get_hack(name).make_params(values)  # validate even when disabled
    for a in enabled:
        for b in get_hack(a).conflicts:
            if b in enabled:
                raise ConfigError(f"hacks {a!r} and {b!r} conflict; enable at most one of them")
    return [get_hack(n)(get_hack(n).make_params(params.get(n))) for n in enabled]


def build_recipe(hacks: Iterable[Hack], base: Recipe | None = None) -> Recipe:
    """Fold the hacks' :meth:`Hack.apply` into the all-off Recipe (or ``base``)."""
    recipe = base or Recipe()
    for hack in hacks:
        recipe = hack.apply(recipe)
        if not isinstance(recipe, Recipe):
            raise TypeError(f"hack {hack.name!r}: apply() must return a Recipe")
    return recipe
