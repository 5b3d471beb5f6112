"""Hack registry: name -> Hack class, with provider and version; entry-point discovery.

The name tables live here (one module holds the registry's state); what hacks' providers,
qualified names and versions are is :mod:`ablate.hacks.providers`'s.

Built-in hacks (:data:`ablate.hacks.BUILTIN`) register first. Third-party hacks register
through the entry-point group ``ablate.hacks``; each entry point names a module (which
registers its hacks with :func:`register_hack` on import) or a :class:`Hack` subclass.
Discovery is lazy: it happens on the first lookup, never at ``import ablate``.

Canonical order (hack tables, selections): the built-ins in the README's table order,
then plugins sorted by name — never the order in which packages or entry points are
discovered. Call order (wrappers, hooks, config.json's hack records, run keys) is
canonical order with the enabled hacks' ``before``/``after`` declarations enforced
(:func:`call_order`).

Hygiene:

* a name registered by two providers is an error naming both, whichever loaded first
  (raised at once for a direct :func:`register_hack` call; for two plugins, raised when
  the name is used, so that other commands keep working); each claimant stays usable by
  its provider-qualified name ``<distribution>:<name>`` (:func:`get_hack`), which is
  then the hack's name in the run (:func:`ablate.hacks.providers.qualified_class`);
* ``all``, ``builtin`` and ``none`` are reserved (selection keywords); names are
  lowercase words joined by dashes;
* ``Params`` must be a frozen dataclass whose every field has a default and a supported
  type (:mod:`ablate.hacks.params`);
* a plugin whose import fails gives a :class:`PluginWarning` naming it; using one of its
  hacks (or ``all``) is then an error that repeats why it failed.

Versions: a hack's ``version`` attribute if set; else its distribution's version
(``ablate``'s for the built-ins); else, for a hack defined outside any installed
distribution, ``src-`` and a hash of its module's source, so editing it changes the key
(:func:`ablate.hacks.providers.distribution_version`).
"""

from __future__ import annotations

import dataclasses
import re
import types
import warnings
from collections.abc import Iterable
from typing import Any

from ablate.errors import ConfigError
from ablate.hacks import interactions
from ablate.hacks import params as typed
from ablate.hacks.builtin import BUILTIN
from ablate.hacks.hack import Hack
from ablate.hacks.hooks import call_apply, construct
from ablate.hacks.providers import BUILTIN_PROVIDER, ENTRY_POINT_GROUP, PluginWarning  # noqa: F401
from ablate.hacks.providers import (Failure, base_name, describe_cls, distribution_version,
                                    duplicate_message, entry_points, module_provider, norm,
                                    qualified_class)
from ablate.hacks.recipe import Recipe

KEYWORDS = ("all", "builtin", "none")  # hack-selection keywords (CLI and experiment files)
NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

_REGISTRY: dict[str, type[Hack]] = {}
_PROVIDERS: dict[str, str] = {}
_DUPLICATES: dict[str, list[str]] = {}  # name -> "provider (module.Class)" of every claimant
_CLAIMS: dict[str, dict[str, type[Hack]]] = {}  # clashing name -> {provider: class}
_QUALIFIED: dict[str, type[Hack]] = {}  # "provider:name" -> its class, named so
_FAILURES: list[Failure] = []
_discovered = False
_loading: str | None = None  # the distribution whose entry point is being imported
_EP_OWNERS: dict[str, list[str]] = {}  # top-level module -> distributions whose entry points name it


SUPPORTED_TYPES = "bool, int, float, str, Literal[...], tuple[...], X | None, Annotated[X, Bounds(...)]"


def validate_class(cls: Any) -> None:
    """Check a Hack subclass's metadata and Params; raise ConfigError naming the problem."""
    if not (isinstance(cls, type) and issubclass(cls, Hack)):
        raise ConfigError(f"register_hack expects a Hack subclass, got {cls!r}")
    name = cls.__dict__.get("name", getattr(cls, "name", None))
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where} must set a string class attribute 'name'")
    if name in KEYWORDS:
        raise ConfigError(f"{where}: hack name {name!r} is reserved (keywords: "
                          f"{', '.join(KEYWORDS)}); choose another name")
    if not NAME_RE.match(name):
        raise ConfigError(f"{where}: hack name {name!r} must be lowercase words joined by "
                          "dashes, e.g. 'label-smoothing'")
    for attr in ("source", "on", "off"):
        if not isinstance(getattr(cls, attr), str):
            raise ConfigError(f"hack {name!r}: {attr} must be a string (one line for the hack "
                              f"tables), got {getattr(cls, attr)!r}")
    for attr in ("conflicts", "overrides", "before", "after"):
        value = getattr(cls, attr)
        if not (isinstance(value, tuple) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"hack {name!r}: {attr} must be a tuple of hack names, got {value!r}")
    if cls.version is not None and not isinstance(cls.version, str):
        raise ConfigError(f"hack {name!r}: version must be a string, got {cls.version!r}")
    P = cls.Params
    if not (isinstance(P, type) and dataclasses.is_dataclass(P)
            and P.__dataclass_params__.frozen):
        raise ConfigError(f"hack {name!r}: Params must be a frozen dataclass "
                          "(@dataclass(frozen=True))")
    try:
        fields = cls.param_fields()
    except Exception as exc:  # an annotation that does not resolve
        raise ConfigError(f"hack {name!r}: cannot read the Params annotations: {exc}") from exc
    factories = {f.name for f in dataclasses.fields(P) if f.default_factory is not dataclasses.MISSING}
    for key, (typ, default) in fields.items():
        if not typed.supported(typ):  # first: a list field's real problem is its type
            raise ConfigError(f"hack {name!r}: parameter {key!r} has type {typed.type_name(typ)}; "
                              f"supported: {SUPPORTED_TYPES}")
        if key in factories:
            raise ConfigError(f"hack {name!r}: parameter {key!r} has a default_factory; give it a plain "
                              f"default of an immutable type instead (e.g. `{key}: tuple[int, ...] = (3, 4)`)")
        if default is dataclasses.MISSING:
            raise ConfigError(f"hack {name!r}: parameter {key!r} needs a default "
                              f"(`{key}: {typed.type_name(typ)} = ...`)")
    cls.make_params()  # every default has its declared type and passes __post_init__
    check_signatures(cls)


# How ablate calls each overridable method: its positional arguments after ``self``
# (wrappers: the module, and the Recipe where the override takes it; ``info=`` by name).
CALLS = {"__init__": ("params",), "apply": ("recipe",), "describe_wrap": (),
         "augment": ("x", "ctx"), "d_loss": ("ctx",), "d_penalty": ("ctx",),
         "after_d_update": ("ctx",), "g_loss": ("ctx",), "g_penalty": ("ctx",),
         "after_step": ("ctx",), "state_dict": (), "load_state_dict": ("state",)}
WRAPPERS = ("wrap_generator", "wrap_discriminator", "sampling_generator")


def check_signatures(cls: type[Hack]) -> None:
    """Every method ``cls`` overrides accepts the arguments ablate passes it, so that a
    wrong signature is an error when the plugin loads, not a failed run later."""
    import inspect

    for hook in (*CALLS, *WRAPPERS):
        if getattr(cls, hook) is getattr(Hack, hook):
            continue
        raw = inspect.getattr_static(cls, hook)
        if isinstance(raw, (staticmethod, classmethod)):
            method, self_ = getattr(cls, hook), ()
        elif inspect.isfunction(raw):
            method, self_ = raw, (None,)
        else:  # a callable object or a C method: nothing to read reliably
            continue
        if hook in WRAPPERS:
            args = ("module", "recipe") if cls.takes_recipe(hook) else ("module",)
            kwargs = {"info": None} if cls.takes_info(hook) else {}
        else:
            args, kwargs = CALLS[hook], {}
        try:
            inspect.signature(method).bind(*self_, *args, **kwargs)
        except (TypeError, ValueError) as exc:
            call = f"{hook}(self{''.join(', ' + a for a in args)})"
            raise ConfigError(f"hack {cls.__dict__.get('name', cls.__name__)!r}: "
                              f"{hook}{inspect.signature(method)} cannot be called as ablate "
                              f"calls it, {call} ({exc}); see docs/hacks.md for each hook's "
                              "arguments") from None


def misspelt_hooks(cls: type[Hack]) -> list[tuple[str, str]]:
    """``(method, hook)`` for each method ``cls`` defines (not inherited from :class:`Hack`)
    whose name is a near miss of one of Hack's overridable methods (``after_d_updates``,
    ``augument``): such a method is never called, and nothing else would say so."""
    import difflib

    known = [n for n in vars(Hack) if not n.startswith("_") and callable(getattr(Hack, n))]
    out = []
    for klass in cls.__mro__:
        if klass is Hack or not issubclass(klass, Hack):
            continue
        for attr, value in vars(klass).items():
            if attr.startswith("_") or attr in known or not callable(value):
                continue
            close = difflib.get_close_matches(attr, known, n=1, cutoff=0.9)  # augmenter: 0.875
            if close:
                out.append((attr, close[0]))
    return out


def register_hack(cls: type[Hack] | None = None, *, provider: str | None = None):
    """Class decorator that registers a :class:`Hack` subclass under ``cls.name``.

    Raises :class:`ConfigError` for a bad class (see :func:`validate_class`) or a name
    another class already holds (naming both providers).
    """

    def _register(hack_cls: type[Hack]) -> type[Hack]:
        validate_class(hack_cls)
        for attr, hook in misspelt_hooks(hack_cls):
            warnings.warn(f"hack {hack_cls.name!r} ({hack_cls.__module__}.{hack_cls.__qualname__}) defines "
                          f"{attr}(), which is not a hook and is never called; did you mean {hook}()?",
                          PluginWarning, stacklevel=2)
        if _loading is None and not _discovered:
            _discover()  # so that a direct registration sees every plugin's names
        prov = provider or _owner(hack_cls)
        name = hack_cls.name
        existing = _REGISTRY.get(name)
        if existing is hack_cls:  # the same class again (a module two entry points name)
            return hack_cls
        mine = existing if existing is not None and _PROVIDERS[name] == prov \
            else _CLAIMS.get(name, {}).get(prov)
        if mine is not None and mine is not hack_cls:  # one package, two classes, one name
            if describe_cls(mine, prov) == describe_cls(hack_cls, prov):
                _REGISTRY[name] = hack_cls  # the same class defined again (a reloaded module)
                return hack_cls
            raise ConfigError(f"hack name {name!r} is registered twice by {prov}: "
                              f"{mine.__module__}.{mine.__qualname__} and "
                              f"{hack_cls.__module__}.{hack_cls.__qualname__}; give each class "
                              "its own name")
        if existing is not None or name in _DUPLICATES:
            claim = describe_cls(hack_cls, prov)
            if _loading is None:  # a direct call: the caller's own code, fail at once
                holder = " and ".join(_DUPLICATES.get(name, [])) or describe_cls(existing, _PROVIDERS[name])
                raise ConfigError(f"hack name {name!r} is already registered by {holder}; "
                                  f"{claim} cannot register it too: choose another name")
            # Two plugins (or a plugin and ablate) claim the name: usable by neither,
            # whichever loaded first; using it raises this message (get_hack).
            _DUPLICATES.setdefault(name, [describe_cls(existing, _PROVIDERS[name])]).append(claim)
            _CLAIMS.setdefault(name, {_PROVIDERS[name]: existing})[prov] = hack_cls
            warnings.warn(_duplicate_message(name), PluginWarning, stacklevel=2)
            return hack_cls
        _REGISTRY[name] = hack_cls
        _PROVIDERS[name] = prov
        return hack_cls

    return _register(cls) if cls is not None else _register


def unregister_hack(name: str) -> None:
    """Remove a hack from the registry (tests; interactive plugin development)."""
    _REGISTRY.pop(name, None)
    _PROVIDERS.pop(name, None)
    _DUPLICATES.pop(name, None)
    _CLAIMS.pop(name, None)
    for q in [q for q in _QUALIFIED if q.rpartition(":")[2] == name]:
        del _QUALIFIED[q]
        _PROVIDERS.pop(q, None)


def _duplicate_message(name: str) -> str:
    return duplicate_message(name, _DUPLICATES[name], _CLAIMS.get(name, {}))


def _qualified(name: str) -> type[Hack]:
    """The class a provider-qualified name ``provider:name`` selects.

    For a name two providers claim, a subclass of the chosen provider's class whose
    ``name`` is the qualified name (so config.json, run keys, logs and errors say which);
    for a name one provider holds, that class itself (the same run as the plain name)."""
    prov, _, plain = name.rpartition(":")
    if name in _QUALIFIED:
        return _QUALIFIED[name]
    if plain in _CLAIMS:
        for p, cls in _CLAIMS[plain].items():
            if norm(p) == norm(prov):
                qualified = f"{p}:{plain}"
                sub = qualified_class(cls, qualified)
                _QUALIFIED[qualified] = _QUALIFIED[name] = sub
                _PROVIDERS[qualified] = _PROVIDERS[name] = p
                return sub
        raise ConfigError(f"unknown hack {name!r}: {plain!r} is provided by "
                          f"{', '.join(_CLAIMS[plain])}, not {prov!r}; choose "
                          + " or ".join(repr(f"{p}:{plain}") for p in _CLAIMS[plain]))
    cls = _REGISTRY.get(plain)
    if cls is None:
        valid = ", ".join(hack_names())
        note = "".join(f"; note: {f}" for f in _FAILURES)
        raise ConfigError(f"unknown hack {name!r}; valid hacks: {valid}{note}")
    if norm(_PROVIDERS[plain]) != norm(prov):
        raise ConfigError(f"unknown hack {name!r}: {plain!r} is provided by "
                          f"{_PROVIDERS[plain]!r}, not {prov!r}")
    return cls


def _owner(cls: type[Hack]) -> str:
    """The provider of a hack being registered: the distribution whose entry point is
    loading, unless the class lives in another plugin distribution's package, which that
    entry point imports (a plugin extending another's hack): then that distribution, so
    installing the one never changes the provider, version and run keys of the other's."""
    if _loading is None:
        return module_provider(cls)
    owners = _EP_OWNERS.get(cls.__module__.split(".")[0], [])
    return _loading if not owners or _loading in owners else owners[0]


def _discover() -> None:
    """Register the built-ins, then load every ``ablate.hacks`` entry point (once)."""
    global _discovered, _loading, _EP_OWNERS
    if _discovered:
        return
    _discovered = True
    _loading = BUILTIN_PROVIDER
    try:
        for cls in BUILTIN:
            register_hack(cls, provider=BUILTIN_PROVIDER)
        points = entry_points()
        _EP_OWNERS = {}
        for dist, ep in points:
            _EP_OWNERS.setdefault(ep.module.split(".")[0], []).append(dist)
        for dist, ep in points:
            _loading = dist
            before = set(_REGISTRY)
            try:
                obj = ep.load()
                if isinstance(obj, type) and issubclass(obj, Hack):
                    register_hack(obj, provider=dist)
                elif not isinstance(obj, types.ModuleType):
                    raise ConfigError(f"the entry point names a {type(obj).__name__}, not a module "
                                      "or a Hack subclass; point it at the module that registers "
                                      "the hacks, or at one Hack subclass per entry point")
                elif not _registers(obj):
                    warnings.warn(f"plugin {dist} ({ep.name} = {ep.value}) registered no hack: "
                                  "decorate each Hack subclass in that module with @register_hack, "
                                  "or point the entry point at the class", PluginWarning,
                                  stacklevel=2)
            except (Exception, SystemExit) as exc:  # a broken plugin must not take the harness down
                for name in set(_REGISTRY) - before:  # roll back its half-registered hacks
                    if _PROVIDERS.get(name) == dist:  # (not another plugin's it imported)
                        unregister_hack(name)
                failure = Failure(dist, f"{ep.name} = {ep.value}", f"{type(exc).__name__}: {exc}")
                _FAILURES.append(failure)
                warnings.warn(f"{failure}; its hacks are unavailable", PluginWarning,
                              stacklevel=2)
    finally:
        _loading = None


def _registers(module: types.ModuleType) -> bool:
    """Whether a hack class defined in ``module`` (or its submodules) is registered, or the
    module is still being imported (user code imported it first, and its first
    ``@register_hack`` started the discovery: its hacks register after this)."""
    if getattr(getattr(module, "__spec__", None), "_initializing", False):
        return True
    inside = (module.__name__, module.__name__ + ".")
    classes = [*_REGISTRY.values(), *(c for claims in _CLAIMS.values() for c in claims.values())]
    return any(c.__module__ == inside[0] or c.__module__.startswith(inside[1]) for c in classes)


def failures() -> list[str]:
    """Why plugins failed to load (empty when every plugin loaded)."""
    _discover()
    return [str(f) for f in _FAILURES]


def problems() -> list[str]:
    """Every registry problem: failed plugins and names claimed twice."""
    return failures() + [_duplicate_message(n) for n in _DUPLICATES]


def list_hacks() -> list[type[Hack]]:
    """Every usable hack class: built-ins in the README's table order, then plugins by
    name (never by discovery order). A name claimed twice is listed once per provider, as
    ``provider:name`` (see problems())."""
    _discover()
    builtin: list[type[Hack]] = []
    for cls in BUILTIN:  # a built-in whose name a plugin also claims keeps its place, qualified
        if cls.name in _DUPLICATES:
            builtin += [_qualified(f"{p}:{cls.name}") for p, c in _CLAIMS.get(cls.name, {}).items() if c is cls]
        elif _REGISTRY.get(cls.name) is cls:
            builtin.append(cls)
    plugins = [c for n, c in _REGISTRY.items() if c not in builtin and n not in _DUPLICATES]
    plugins += [_qualified(f"{p}:{n}") for n in _DUPLICATES for p, c in _CLAIMS.get(n, {}).items()
                if c not in BUILTIN]
    return builtin + sorted(plugins, key=lambda c: (base_name(c.name), c.name))


def hack_names() -> list[str]:
    """Every registered hack name, in canonical order."""
    return [h.name for h in list_hacks()]


def builtin_names() -> list[str]:
    """The eleven built-in hack names, in canonical order."""
    _discover()
    return [cls.name for cls in BUILTIN]


def provider(name: str) -> str:
    """The distribution that provides hack ``name`` (``ablate`` for built-ins)."""
    get_hack(name)
    return _PROVIDERS[name]


def version(name: str) -> str:
    """Hack ``name``'s version (see the module docstring); part of its run keys."""
    cls = get_hack(name)
    if cls.version is not None:
        return cls.version
    return distribution_version(cls, _PROVIDERS[name])


def describe(name: str) -> dict[str, Any]:
    """A hack's metadata with its provider and version (``ablate hacks --json`` rows)."""
    cls = get_hack(name)
    return {**cls.describe(), "provider": provider(name), "version": version(name)}


def get_hack(name: str) -> type[Hack]:
    """Look up a hack class; unknown names raise an error listing the valid ones (and
    any plugin that failed to load); names claimed twice raise naming both providers."""
    _discover()
    if ":" in name:
        return _qualified(name)
    if name in _DUPLICATES:
        raise ConfigError(_duplicate_message(name))
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(hack_names())
        note = "".join(f"; note: {f}" for f in _FAILURES)
        raise ConfigError(f"unknown hack {name!r}; valid hacks: {valid}{note}") from None


def expand(selection: Iterable[str], removed: Iterable[str] = ()) -> tuple[str, ...]:
    """Hack names and keywords -> enabled names in canonical order, minus ``removed`` (names
    and keywords too: ``--hacks all --off builtin`` is the plugins).

    ``all`` is every registered hack (plugins included; an error while a plugin failed to
    load or a name is claimed twice, as ``all`` would silently lack it), ``builtin`` the
    eleven, ``none`` nothing; keywords and names mix: ``["builtin", "spectral-norm"]``.
    Unknown names raise a :class:`ConfigError` listing the valid ones.
    """
    selection = list(selection)
    if "none" in selection and len(selection) > 1:
        raise ConfigError(f"'none' (no hacks) cannot be combined with other names, got "
                          f"{selection}; give 'none' alone, or only the hacks you want")
    if "all" in selection and problems():
        raise ConfigError("'all' cannot be resolved: " + "; ".join(problems())
                          + " (list the hacks you want instead, e.g. 'builtin,spectral-norm')")
    keywords = {"all": hack_names(), "builtin": builtin_names(), "none": []}
    removed = [_named(n, item) for item in removed for n in keywords.get(item, [item])]
    chosen = [_named(n, item) for item in selection for n in keywords.get(item, [item])]
    return canonical(h for h in chosen if h not in removed)


def _named(name: str, item: str) -> str:
    """The run name of hack ``name``, which the selection ``item`` gave (a keyword's
    expansion says so in its error: the user typed the keyword, not the name)."""
    try:
        return get_hack(name).name
    except ConfigError as exc:
        if item == name:
            raise
        raise ConfigError(f"{item!r} includes {name!r}: {exc}") from None


def canonical(names: Iterable[str]) -> tuple[str, ...]:
    """Distinct hack names in canonical (registry) order."""
    order = {n: i for i, n in enumerate(hack_names())}
    return tuple(sorted(dict.fromkeys(names), key=lambda n: order.get(n, len(order))))


def call_order(names: Iterable[str]) -> tuple[str, ...]:
    """The enabled hacks in the order their hooks and wrappers run: canonical order, except
    that each hack's declared ``before``/``after`` constraints among the enabled hacks hold.

    A stable topological order: at each point the first hack in canonical order whose
    every predecessor is placed comes next, so hacks without declarations (every built-in,
    every plugin before v3's ordering) keep canonical order. A cycle is a
    :class:`ConfigError` naming the hacks in it."""
    names = list(canonical(names))
    enabled = set(names)
    preds: dict[str, set[str]] = {n: set() for n in names}
    by_base = {base_name(n): n for n in names}
    for n in names:
        cls = get_hack(n)
        for other in (by_base.get(o) for o in cls.before):
            if other in enabled and other != n:
                preds[other].add(n)
        for other in (by_base.get(o) for o in cls.after):
            if other in enabled and other != n:
                preds[n].add(other)
    out: list[str] = []
    remaining = list(names)
    while remaining:
        for n in remaining:
            if not preds[n] - set(out):
                break
        else:
            cycle = ", ".join(repr(n) for n in remaining if preds[n] - set(out))
            raise ConfigError(f"hacks {cycle} declare before/after orders that form a cycle; "
                              "remove one of the 'before'/'after' declarations")
        remaining.remove(n)
        out.append(n)
    return tuple(out)


def instantiate(
    enabled: Iterable[str], params: dict[str, dict[str, Any]] | None = None
) -> list[Hack]:
    """Instantiate the enabled hacks with their parameters, in call order (:func:`call_order`).

    ``params`` maps hack name -> {param: value}; parameters of hacks that are not
    enabled are validated but otherwise ignored; a hack's plain and provider-qualified
    names are one hack, whose parameters merge (one parameter with two values: an error). Conflicting hacks, and undeclared
    overlaps (two hacks setting one Recipe field or replacing one loss;
    :func:`ablate.hacks.interactions.check`), raise an error naming both.
    """
    enabled = list(dict.fromkeys(get_hack(n).name for n in enabled))
    given, params = params or {}, {}
    for key, values in given.items():  # a plain and a qualified name of one hack: merged
        name = get_hack(key).name
        for param, value in values.items():
            if param in params.get(name, {}) and params[name][param] != value:
                raise ConfigError(f"hack {name!r}: parameter {param!r} is set twice, under two "
                                  f"names of the hack ({', '.join(k for k in given if get_hack(k).name == name)}); "
                                  "set it once")
            params.setdefault(name, {})[param] = value
    plain = [base_name(n) for n in enabled]
    for n in set(plain):
        if plain.count(n) > 1:
            both = " and ".join(repr(e) for e in enabled if base_name(e) == n)
            raise ConfigError(f"hacks {both} are one hack name from two providers; enable one")
    enabled = list(call_order(enabled))
    for name, values in params.items():
        get_hack(name).make_params(values)  # validate even when disabled
    for a in enabled:
        for b in get_hack(a).conflicts:
            b = next((e for e in enabled if base_name(e) == b), b)
            if b in enabled:
                raise ConfigError(f"hacks {a!r} and {b!r} conflict; enable at most one of them")
    hacks = [construct(get_hack(n), get_hack(n).make_params(params.get(n))) for n in enabled]
    interactions.check(hacks)
    return hacks


def build_recipe(hacks: Iterable[Hack], base: Recipe | None = None) -> Recipe:
    """Fold the hacks' :meth:`Hack.apply` into the all-off Recipe (or ``base``), each
    overriding hack after the hacks it overrides (:func:`ablate.hacks.interactions.fold_order`)."""
    recipe = base or Recipe()
    for hack in interactions.fold_order(list(hacks)):
        recipe = call_apply(hack, recipe)
    return recipe
