"""Where hacks come from: the ``ablate.hacks`` entry points, the distribution that
provides a hack, provider-qualified names, versions, and why a plugin failed to load.

Stateless helpers of :mod:`ablate.hacks.registry`, which keeps the name tables, loads the
entry points (in :func:`entry_points` order) and registers what they hold:

* a name two providers claim stays usable by its provider-qualified name
  ``<distribution>:<name>`` (:func:`qualified_class`: a subclass named so, so config.json,
  run keys, logs and errors say which); provider names compare as packaging compares
  distribution names (:func:`norm`);
* versions (:func:`distribution_version`): a hack's ``version`` attribute if set; else
  its distribution's version (``ablate``'s for the built-ins); else, for a hack defined
  outside any installed distribution, ``src-`` and a hash of its module's source, so
  editing it changes the key.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ablate.messages import UserNote
from ablate.version import __version__

if TYPE_CHECKING:  # annotations only
    from ablate.hacks.hack import Hack

ENTRY_POINT_GROUP = "ablate.hacks"
BUILTIN_PROVIDER = "ablate"


class PluginWarning(UserNote):
    """A hack plugin could not be loaded, or two plugins claim one name."""


@dataclass(frozen=True)
class Failure:
    """A plugin whose entry point failed to load."""

    provider: str
    entry_point: str  # "name = value"
    error: str

    def __str__(self) -> str:
        return f"plugin {self.provider} (entry point {self.entry_point}) failed to load: {self.error}"


def entry_points() -> list[tuple[str, importlib.metadata.EntryPoint]]:
    """``(distribution, entry point)`` of every ``ablate.hacks`` entry point, sorted by
    distribution and entry-point name (never by installation order); a distribution
    without metadata is named by the entry point's module."""
    eps = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                 key=lambda e: (e.dist.name if e.dist else "", e.name))
    return [(ep.dist.name if ep.dist is not None else ep.module, ep) for ep in eps]


def describe_cls(cls: type[Hack], provider: str) -> str:
    """``provider (module.Class)``, how error messages name a claimant."""
    return f"{provider} ({cls.__module__}.{cls.__qualname__})"


def module_provider(cls: type[Hack]) -> str:
    """The distribution that ships ``cls``'s top-level package, else that package's name."""
    top = cls.__module__.split(".")[0]
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.module.split(".")[0] == top and ep.dist is not None:
            return ep.dist.name
    dists = importlib.metadata.packages_distributions().get(top)
    return dists[0] if dists else top


def duplicate_message(name: str, claimants: Iterable[str], providers: Iterable[str]) -> str:
    """The error for a name that more than one provider registers (``claimants`` as
    :func:`describe_cls` names them; ``providers`` usable by qualified names)."""
    choices = " or ".join(repr(f"{p}:{name}") for p in providers)
    pick = (f"; choose one by its provider-qualified name, {choices} (in --hacks, "
            f"[hacks].scope and --set <provider>:{name}.<param>=...), or uninstall one of them"
            if choices else "; uninstall one of them or rename the hack")
    return (f"hack name {name!r} is registered by more than one provider: "
            f"{' and '.join(claimants)}{pick}")


def norm(provider: str) -> str:
    """A distribution name compared as packaging does (case, '-', '_', '.' alike)."""
    return re.sub(r"[-_.]+", "-", provider).lower()


def base_name(name: str) -> str:
    """``"name"`` of a provider-qualified ``"provider:name"`` (unchanged otherwise)."""
    return name.rpartition(":")[2]


def qualified_class(cls: type[Hack], qualified: str) -> type[Hack]:
    """A subclass of ``cls`` whose ``name`` is ``qualified`` (``provider:name``)."""
    return type(cls.__name__, (cls,), {"name": qualified, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


def distribution_version(cls: type[Hack], provider: str) -> str:
    """The version of a hack without a ``version`` attribute: ``ablate``'s for the
    built-ins, its distribution's, else a hash of its module's source."""
    if provider == BUILTIN_PROVIDER:
        return __version__
    try:
        return importlib.metadata.version(provider)
    except importlib.metadata.PackageNotFoundError:
        return source_version(cls)


def source_version(cls: type[Hack]) -> str:
    """``src-`` and a hash of ``cls``'s module's source (``unversioned`` if none)."""
    module = sys.modules.get(cls.__module__)
    try:
        text = inspect.getsource(module) if module is not None else None
    except (OSError, TypeError):
        text = None
    if text is None:  # defined interactively: nothing stable to hash
        return "unversioned"
    return "src-" + hashlib.sha256(text.encode()).hexdigest()[:12]
