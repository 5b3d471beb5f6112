"""How enabled hacks interact: what each changes in the Recipe, who overrides whom, and
which hack's hook the loop calls.

* :func:`recipe_changes` — the Recipe fields a plan (or a set of hacks) changes relative
  to all-off, as ``{"g_optimizer.lr": (0.001, 0.0002), ...}`` (nested values by dotted
  path). ``config.json`` records it under ``"recipe_changes"``; the report shows it.
* :func:`check` — two enabled hacks that set the same Recipe field (:func:`touched`:
  what each changes folded into all-off or into what the other makes of all-off, so a
  field set back to its all-off value counts), or that both replace an exclusive hook
  (``d_loss``, ``g_loss``, ``sampling_generator``), are an error naming both, unless one
  overrides the other (lists it in ``overrides``, or lists a hack that overrides it, and so
  on down a chain) — or one is a plugin and the other a built-in whose
  fields it sets: the plugin overrides it implicitly (plugins fold after built-ins, as
  first-API plugins did). :func:`overrides_in_effect` says which overrides applied
  (implicit ones with a note; :func:`notes`).
* :func:`fold_order` — call order, except that a hack comes after the hacks it
  overrides (so its Recipe values win).
* :func:`select_hooks` — the per-run :class:`Hooks`: which hacks' hooks the loop calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ablate.errors import ConfigError
from ablate.hacks.hack import Hack
from ablate.hacks.hooks import EXCLUSIVE_HOOKS, call_apply
from ablate.hacks.recipe import Recipe


def flatten(recipe: Recipe) -> dict[str, Any]:
    """Every leaf of a Recipe by dotted path (``{"g_optimizer.lr": 0.001, ...}``); each
    ``extra`` setting is a leaf of its own (``extra.<key>``), so that first-API plugins
    that each add their own keys do not overlap."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(f"{prefix}.{f.name}" if prefix else f.name, getattr(value, f.name))
        elif prefix == "extra":
            out.update((f"extra.{k}", v) for k, v in value)
        else:
            out[prefix] = value

    walk("", recipe)
    return out


def diff(before: Recipe, after: Recipe) -> dict[str, tuple[Any, Any]]:
    """``{path: (before, after)}`` for every leaf that differs (an ``extra`` setting one
    side lacks reads as None there)."""
    a, b = flatten(before), flatten(after)
    return {k: (a.get(k), b.get(k)) for k in {**a, **b} if a.get(k) != b.get(k)}


def recipe_changes(plan_or_hacks: Any) -> dict[str, tuple[Any, Any]]:
    """What the enabled hacks change in the Recipe relative to all-off.

    Accepts a :class:`~ablate.training.loop.TrainPlan` (its folded Recipe and hacks) or hack
    instances (folded here in :func:`fold_order`). Values are the Recipe's own (tuples
    stay tuples). A field an enabled hack sets is listed even when the folded value is
    the all-off one (a hack that sets ``d_update`` back to ``"mixed"`` over
    ``separate-batches``: ``{"d_update": ("mixed", "mixed")}``).
    """
    recipe = getattr(plan_or_hacks, "recipe", None)
    hacks = list(getattr(plan_or_hacks, "hacks", ())) if recipe is not None else list(plan_or_hacks)
    if recipe is None:
        recipe = Recipe()
        for hack in fold_order(hacks):
            recipe = call_apply(hack, recipe)
    off, final = flatten(Recipe()), flatten(recipe)
    fields = set(diff(Recipe(), recipe))
    for h in hacks:
        fields |= touched(h, [call_apply(o, Recipe()) for o in hacks if o is not h])
    return {k: (off.get(k), final.get(k)) for k in {**off, **final} if k in fields}


def touched(hack: Hack, others: Sequence[Recipe] = ()) -> set[str]:
    """The Recipe fields ``hack`` sets: those its ``apply`` changes when folded into the
    all-off Recipe or into any of ``others`` (what other enabled hacks make of all-off).
    Folding into all-off alone misses a hack that sets a field back to its all-off value
    (``d_update = "mixed"`` over ``separate-batches``)."""
    out: set[str] = set()
    for base in (Recipe(), *others):
        out |= set(diff(base, call_apply(hack, base)))
    return out


def is_builtin(hack: Hack) -> bool:
    """Whether ``hack`` is one of ablate's built-ins (defined in :mod:`ablate.hacks`;
    checked by module name, so the training loop needs no registry)."""
    return type(hack).__module__.split(".")[:2] == ["ablate", "hacks"]


def _implicit(a: Hack, b: Hack) -> bool:
    """A plugin overlapping a built-in overrides it without declaring so (API v1 plugins
    predate ``overrides``; plugins fold after the built-ins, so their values win)."""
    return not is_builtin(a) and is_builtin(b) and not _overrides(a, b)


def shared_fields(a: Hack, b: Hack) -> list[str]:
    """The Recipe fields both ``a`` and ``b`` set (see :func:`touched`)."""
    fa = touched(a, [call_apply(b, Recipe())])
    fb = touched(b, [call_apply(a, Recipe())])
    return sorted(fa & fb)


def changes_json(changes: dict[str, tuple[Any, Any]]) -> dict[str, list[Any]]:
    """:func:`recipe_changes` as JSON-ready ``{path: [old, new]}`` (tuples as lists)."""
    def j(v: Any) -> Any:
        return [j(x) for x in v] if isinstance(v, tuple) else v
    return {k: [j(old), j(new)] for k, (old, new) in changes.items()}


def _overrides(a: Hack, b: Hack) -> bool:
    return b.name.rpartition(":")[2] in type(a).overrides  # "provider:name" as "name"


def _overrides_via(a: Hack, b: Hack, hacks: Sequence[Hack]) -> bool:
    """Whether ``a`` overrides ``b`` directly or through a chain of enabled hacks (``a``
    overrides ``c``, which overrides ``b``): the chain folds and calls in that order, each
    loss reaching the next through ``ctx.previous``."""
    seen, todo = {id(a)}, [a]
    while todo:
        h = todo.pop()
        for o in hacks:
            if id(o) not in seen and _overrides(h, o):
                if o is b:
                    return True
                seen.add(id(o))
                todo.append(o)
    return False


def fold_order(hacks: Sequence[Hack]) -> list[Hack]:
    """``hacks`` (call order) with every hack moved after the hacks it overrides."""
    remaining, out = list(hacks), []
    while remaining:
        for h in remaining:  # the first hack that overrides none of the remaining ones
            if not any(_overrides(h, o) for o in remaining if o is not h):
                break
        else:
            names = ", ".join(h.name for h in remaining)
            raise ConfigError(f"hacks {names} override each other in a cycle; "
                              "remove one of the 'overrides' declarations")
        remaining.remove(h)
        out.append(h)
    return out


def check(hacks: Sequence[Hack]) -> None:
    """Raise :class:`ConfigError` for undeclared overlaps between enabled hacks.

    A plugin that sets a Recipe field a built-in also sets is no error: it overrides the
    built-in implicitly (plugins fold after built-ins, as under API v1), and
    :func:`overrides_in_effect` records it with a note."""
    for i, a in enumerate(hacks):
        for b in hacks[i + 1:]:
            if _overrides_via(a, b, hacks) or _overrides_via(b, a, hacks):
                continue
            fields = shared_fields(a, b)
            hooks = sorted(set(EXCLUSIVE_HOOKS) & type(a).hooks() & type(b).hooks())
            if fields and not hooks and (_implicit(a, b) or _implicit(b, a)):
                continue
            if fields:
                raise ConfigError(
                    f"hacks {a.name!r} and {b.name!r} both set the Recipe field(s) "
                    f"{', '.join(fields)}; enable one of them, or declare "
                    f"overrides = ({b.name!r},) in {a.name!r} (or the reverse)")
            if hooks:
                raise ConfigError(
                    f"hacks {a.name!r} and {b.name!r} both replace {', '.join(hooks)}(); "
                    f"enable one of them, or declare overrides = ({b.name!r},) in {a.name!r} "
                    "(or the reverse)")


def overrides_in_effect(hacks: Sequence[Hack]) -> list[dict[str, Any]]:
    """Each override between two enabled hacks, with what it overrides:
    ``[{"hack": "ttur", "overrides": "adam-dcgan", "fields": [...], "hooks": [...]}]``.

    Declared overrides are listed whether or not the two overlap. A plugin that sets a
    field a built-in sets without declaring it is listed too, with ``"implicit": true``
    and a one-line ``"note"`` (:func:`notes` gives the notes)."""
    out = []
    for a in hacks:
        for b in hacks:
            if a is b:
                continue
            if _overrides(a, b):
                fields = shared_fields(a, b)
                hooks = set(EXCLUSIVE_HOOKS) & type(a).hooks() & type(b).hooks()
                out.append({"hack": a.name, "overrides": b.name, "fields": fields,
                            "hooks": sorted(hooks)})
            elif _implicit(a, b) and not _overrides(b, a):
                fields = shared_fields(a, b)
                if fields:
                    moot = "" if set(touched(b)) - set(fields) else \
                        f"; {b.name!r} changes nothing else, so it has no effect in this run"
                    out.append({"hack": a.name, "overrides": b.name, "fields": fields, "hooks": [],
                                "implicit": True,
                                "note": f"plugin hack {a.name!r} overrides built-in {b.name!r} on "
                                        f"{', '.join(fields)} (plugins fold after built-ins){moot}"})
    return out


def notes(hacks: Sequence[Hack]) -> list[str]:
    """One line per implicit override (a plugin overriding a built-in it does not name)."""
    return [o["note"] for o in overrides_in_effect(hacks) if o.get("implicit")]


@dataclass(frozen=True)
class Hooks:
    """The hooks the loop calls in one run, resolved once from the enabled hacks.

    Tuples hold every hack overriding an additive hook (call order); the exclusive
    hooks hold the one hack that replaces them (the overriding one where two do), or None.
    """

    augment: tuple[Hack, ...] = ()
    d_loss: Hack | None = None
    d_penalty: tuple[Hack, ...] = ()
    g_loss: Hack | None = None
    g_penalty: tuple[Hack, ...] = ()
    after_step: tuple[Hack, ...] = ()
    sampling_generator: Hack | None = None
    after_d_update: tuple[Hack, ...] = ()
    # Every enabled hack replacing d_loss / g_loss, overridden first, the winner last: a
    # replacing hook reaches the one it overrides through ctx.previous (composable losses).
    d_loss_chain: tuple[Hack, ...] = ()
    g_loss_chain: tuple[Hack, ...] = ()

    @property
    def per_step(self) -> bool:
        """Whether any hook inside the D or G update is in use (loss, augmentation,
        after-D-update; else the loop's plain path)."""
        return bool(self.augment or self.d_loss or self.d_penalty or self.g_loss or self.g_penalty
                    or self.after_d_update)


def select_hooks(hacks: Iterable[Hack]) -> Hooks:
    """Resolve :class:`Hooks` for ``hacks`` (call order; :func:`check` passed)."""
    hacks = list(hacks)
    ordered = fold_order(hacks)  # an overriding hack comes last, so it wins below

    def users(hook: str) -> tuple[Hack, ...]:
        return tuple(h for h in hacks if hook in type(h).hooks())

    def chain(hook: str) -> tuple[Hack, ...]:
        return tuple(h for h in ordered if hook in type(h).hooks())

    def winner(hook: str) -> Hack | None:
        found = [h for h in ordered if hook in type(h).hooks()]
        return found[-1] if found else None

    return Hooks(augment=users("augment"), d_loss=winner("d_loss"), d_penalty=users("d_penalty"),
                 g_loss=winner("g_loss"), g_penalty=users("g_penalty"),
                 after_step=users("after_step"), sampling_generator=winner("sampling_generator"),
                 after_d_update=users("after_d_update"), d_loss_chain=chain("d_loss"),
                 g_loss_chain=chain("g_loss"))
