"""How enabled hacks interact: what each changes in the Recipe, who overrides whom, and
which hack's hook the loop calls.

* :func:`recipe_changes` — the Recipe fields a plan (or a set of hacks) changes relative
  to all-off, as ``{"g_optimizer.lr": (0.001, 0.0002), ...}`` (nested values by dotted
  path). ``config.json`` records it under ``"recipe_changes"``; the report shows it.
* :func:`check` — two enabled hacks that change the same Recipe field (each folded
  alone into the all-off Recipe), or that both replace an exclusive hook (``d_loss``,
  ``g_loss``, ``sampling_generator``), are an error naming both, unless one lists the
  other in ``overrides``. :func:`overrides_in_effect` says which overrides applied.
* :func:`fold_order` — canonical order, except that a hack comes after the hacks it
  overrides (so its Recipe values win).
* :func:`select_hooks` — the per-run :class:`Hooks`: which hacks' hooks the loop calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ablate.errors import ConfigError
from ablate.hack import EXCLUSIVE_HOOKS, Hack, call_apply
from ablate.recipe import Recipe


def flatten(recipe: Recipe) -> dict[str, Any]:
    """Every leaf of a Recipe by dotted path (``{"g_optimizer.lr": 0.001, ...}``)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(f"{prefix}.{f.name}" if prefix else f.name, getattr(value, f.name))
        else:
            out[prefix] = value

    walk("", recipe)
    return out


def diff(before: Recipe, after: Recipe) -> dict[str, tuple[Any, Any]]:
    """``{path: (before, after)}`` for every leaf that differs."""
    a, b = flatten(before), flatten(after)
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def recipe_changes(plan_or_hacks: Any) -> dict[str, tuple[Any, Any]]:
    """What the enabled hacks change in the Recipe relative to all-off.

    Accepts a :class:`~ablate.train.TrainPlan` (its folded Recipe) or hack instances
    (folded here in :func:`fold_order`). Values are the Recipe's own (tuples stay tuples).
    """
    recipe = getattr(plan_or_hacks, "recipe", None)
    if recipe is None:
        recipe = Recipe()
        for hack in fold_order(list(plan_or_hacks)):
            recipe = call_apply(hack, recipe)
    return diff(Recipe(), recipe)


def changes_json(changes: dict[str, tuple[Any, Any]]) -> dict[str, list[Any]]:
    """:func:`recipe_changes` as JSON-ready ``{path: [old, new]}`` (tuples as lists)."""
    def j(v: Any) -> Any:
        return [j(x) for x in v] if isinstance(v, tuple) else v
    return {k: [j(old), j(new)] for k, (old, new) in changes.items()}


def _overrides(a: Hack, b: Hack) -> bool:
    return b.name in type(a).overrides


def fold_order(hacks: Sequence[Hack]) -> list[Hack]:
    """``hacks`` (canonical order) with every hack moved after the hacks it overrides."""
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
    """Raise :class:`ConfigError` for undeclared overlaps between enabled hacks."""
    changed = {h.name: set(diff(Recipe(), call_apply(h, Recipe()))) for h in hacks}
    for i, a in enumerate(hacks):
        for b in hacks[i + 1:]:
            if _overrides(a, b) or _overrides(b, a):
                continue
            fields = sorted(changed[a.name] & changed[b.name])
            if fields:
                raise ConfigError(
                    f"hacks {a.name!r} and {b.name!r} both set the Recipe field(s) "
                    f"{', '.join(fields)}; enable one of them, or declare "
                    f"overrides = ({b.name!r},) in {a.name!r} (or the reverse)")
            hooks = sorted(set(EXCLUSIVE_HOOKS) & type(a).hooks() & type(b).hooks())
            if hooks:
                raise ConfigError(
                    f"hacks {a.name!r} and {b.name!r} both replace {', '.join(hooks)}(); "
                    f"enable one of them, or declare overrides = ({b.name!r},) in {a.name!r} "
                    "(or the reverse)")


def overrides_in_effect(hacks: Sequence[Hack]) -> list[dict[str, Any]]:
    """Each declared override between two enabled hacks, with what it overrides:
    ``[{"hack": "ttur", "overrides": "adam-dcgan", "fields": [...], "hooks": [...]}]``."""
    out = []
    for a in hacks:
        for b in hacks:
            if a is b or not _overrides(a, b):
                continue
            fields = set(diff(Recipe(), call_apply(a, Recipe()))) & set(diff(Recipe(), call_apply(b, Recipe())))
            hooks = set(EXCLUSIVE_HOOKS) & type(a).hooks() & type(b).hooks()
            out.append({"hack": a.name, "overrides": b.name, "fields": sorted(fields),
                        "hooks": sorted(hooks)})
    return out


@dataclass(frozen=True)
class Hooks:
    """The hooks the loop calls in one run, resolved once from the enabled hacks.

    Tuples hold every hack overriding an additive hook (canonical order); the exclusive
    hooks hold the one hack that replaces them (the overriding one where two do), or None.
    """

    augment: tuple[Hack, ...] = ()
    d_loss: Hack | None = None
    d_penalty: tuple[Hack, ...] = ()
    g_loss: Hack | None = None
    g_penalty: tuple[Hack, ...] = ()
    after_step: tuple[Hack, ...] = ()
    sampling_generator: Hack | None = None

    @property
    def per_step(self) -> bool:
        """Whether any loss or augmentation hook is in use (else the loop's plain path)."""
        return bool(self.augment or self.d_loss or self.d_penalty or self.g_loss or self.g_penalty)


def select_hooks(hacks: Iterable[Hack]) -> Hooks:
    """Resolve :class:`Hooks` for ``hacks`` (canonical order; :func:`check` passed)."""
    hacks = list(hacks)
    ordered = fold_order(hacks)  # an overriding hack comes last, so it wins below

    def users(hook: str) -> tuple[Hack, ...]:
        return tuple(h for h in hacks if hook in type(h).hooks())

    def winner(hook: str) -> Hack | None:
        found = [h for h in ordered if hook in type(h).hooks()]
        return found[-1] if found else None

    return Hooks(augment=users("augment"), d_loss=winner("d_loss"), d_penalty=users("d_penalty"),
                 g_loss=winner("g_loss"), g_penalty=users("g_penalty"),
                 after_step=users("after_step"), sampling_generator=winner("sampling_generator"))
