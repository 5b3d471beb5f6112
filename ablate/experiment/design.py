"""Experimental designs -> variants (sets of enabled hacks).

* ``leave-one-out``: ``all-on`` and, for every hack, ``-<hack>`` (all-on minus it);
  plus ``all-off`` unless ``include_all_off = false``. Effect of a hack: all-on vs -hack.
* ``add-one-in``: ``all-off`` and ``+<hack>`` for every hack; plus ``all-on`` unless
  ``include_all_on = false``. Effect of a hack: +hack vs all-off.
* ``full-factorial``: all 2^k combinations (pyDOE3 ``ff2n``).
* ``fractional-factorial``: a regular 2^(k-p) fraction of resolution IV or better
  (pyDOE3 ``fracfact_by_res``, or ``fracfact`` with explicit ``generators``), or a
  Plackett-Burman screening design (``method = "plackett-burman"``, pyDOE3
  ``pbdesign``) for main effects only. Factorial effects are estimated by regression.
* ``explicit``: the variants listed in ``[design.variants]``.

Factorial rows are named ``f01``, ``f02``, ... (``all-on``/``all-off`` when they are).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from ablate.errors import ConfigError
from ablate.experiment.axes import Axis, Level, label, levels, named
from ablate.experiment.spec import DesignSpec

ALL_ON, ALL_OFF = "all-on", "all-off"


@dataclass(frozen=True)
class Variant:
    """One hack combination: a name and the set of enabled hacks (and, with ``[axes]``,
    the level of the axes it is planned at; ``()`` without axes)."""

    name: str
    hacks: frozenset[str]
    level: Level = ()

    def to_dict(self, scope: tuple[str, ...]) -> dict:
        out: dict = {"name": self.name, "hacks": [h for h in scope if h in self.hacks]}
        if self.level:  # absent without axes: experiment.json stays as it was
            out["level"] = {name: value for name, value in self.level}
        return out


@dataclass(frozen=True)
class Comparison:
    """The paired comparison that measures one hack: ``on`` vs ``off`` variant (within
    one level of the axes, named by ``level``; ``""`` without axes)."""

    hack: str
    on: str  # variant with the hack
    off: str  # its reference variant, identical but for the hack
    level: str = ""

    @property
    def row(self) -> str:
        """The report's row name: the hack, or ``<hack> @ <level>`` with axes."""
        return f"{self.hack} @ {self.level}" if self.level else self.hack

    def to_dict(self) -> dict:
        out = {"hack": self.hack, "on": self.on, "off": self.off}
        if self.level:
            out["level"] = self.level
        return out


@dataclass(frozen=True)
class Design:
    kind: str
    hacks: tuple[str, ...]
    variants: tuple[Variant, ...]
    comparisons: tuple[Comparison, ...] = ()  # one-factor designs only
    resolution: int | None = None  # fractional designs (None: full, or n/a)
    aliasing: tuple[str, ...] = ()  # alias chains among main effects and 2FIs
    notes: tuple[str, ...] = field(default=())

    def reference(self) -> dict[str, dict[str, str]]:
        """``{hack: {"on": variant, "off": reference variant}}`` (``<hack> @ <level>`` keys with axes)."""
        return {c.row: {"on": c.on, "off": c.off} for c in self.comparisons}

    def to_dict(self) -> dict:
        return {"kind": self.kind, "hacks": list(self.hacks),
                "variants": [v.to_dict(self.hacks) for v in self.variants],
                "comparisons": [c.to_dict() for c in self.comparisons],
                "resolution": self.resolution, "aliasing": list(self.aliasing),
                "notes": list(self.notes)}


def build_design(spec: DesignSpec, hacks: tuple[str, ...], axes: tuple[Axis, ...] = ()) -> Design:
    """Turn a ``[design]`` table and the hacks in scope into variants, crossed with the
    levels of ``axes`` (each variant at each level, comparisons within a level)."""
    design = _build(spec, hacks)
    return cross(design, axes) if axes else design


def cross(design: Design, axes: tuple[Axis, ...]) -> Design:
    """``design`` at every level of ``axes``: variants ``<name> @ <level>``, and each
    comparison made again within each level. One-factor designs only: a factorial
    design's regression has no per-level form here."""
    if not design.comparisons or design.kind in ("full-factorial", "fractional-factorial"):
        raise ConfigError(f"[axes] need a one-factor design (leave-one-out, add-one-in, or "
                          f"explicit variants that differ by one hack); [design].kind = "
                          f"{design.kind!r} has no per-level comparisons")
    for axis in axes:  # its levels would all be the same runs
        if axis.hack is not None and not any(axis.hack in v.hacks for v in design.variants):
            raise ConfigError(f"[axes].{axis.name}: no variant enables {axis.hack!r}, so every "
                              "level would be the same runs; add it to a variant or drop the axis")
    variants, comps = [], []
    for level in levels(axes):
        variants += [Variant(named(v.name, level), v.hacks, level) for v in design.variants]
        comps += [Comparison(c.hack, named(c.on, level), named(c.off, level), label(level))
                  for c in design.comparisons]
    notes = design.notes + (f"crossed with {len(levels(axes))} levels of "
                            f"{', '.join(a.name for a in axes)}",)
    return Design(design.kind, design.hacks, tuple(variants), tuple(comps), design.resolution,
                  design.aliasing, notes)


def _build(spec: DesignSpec, hacks: tuple[str, ...]) -> Design:
    hacks = tuple(hacks)
    k = len(hacks)
    if spec.kind != "explicit" and k == 0:
        raise ConfigError(f"[design]: a {spec.kind} design needs at least one hack in scope")
    builder = {"leave-one-out": _leave_one_out, "add-one-in": _add_one_in,
               "full-factorial": _full_factorial, "fractional-factorial": _fractional,
               "explicit": _explicit}[spec.kind]
    return builder(spec, hacks)


def _dedupe(variants: list[Variant]) -> tuple[tuple[Variant, ...], dict[str, str]]:
    """Drop variants whose hack set repeats an earlier one; map dropped -> kept name."""
    seen: dict[frozenset[str], str] = {}
    out, rename = [], {}
    for v in variants:
        if v.hacks in seen:
            rename[v.name] = seen[v.hacks]
            continue
        seen[v.hacks] = v.name
        out.append(v)
    return tuple(out), rename


def _leave_one_out(spec: DesignSpec, hacks: tuple[str, ...]) -> Design:
    full = frozenset(hacks)
    vs = [Variant(ALL_ON, full)] + [Variant(f"-{h}", full - {h}) for h in hacks]
    if spec.include_all_off:
        vs.append(Variant(ALL_OFF, frozenset()))
    variants, rename = _dedupe(vs)
    comps = tuple(Comparison(h, ALL_ON, rename.get(f"-{h}", f"-{h}")) for h in hacks)
    return Design("leave-one-out", hacks, variants, comps)


def _add_one_in(spec: DesignSpec, hacks: tuple[str, ...]) -> Design:
    vs = [Variant(ALL_OFF, frozenset())] + [Variant(f"+{h}", frozenset({h})) for h in hacks]
    if spec.include_all_on:
        vs.append(Variant(ALL_ON, frozenset(hacks)))
    variants, rename = _dedupe(vs)
    comps = tuple(Comparison(h, rename.get(f"+{h}", f"+{h}"), ALL_OFF) for h in hacks)
    return Design("add-one-in", hacks, variants, comps)


def _explicit(spec: DesignSpec, hacks: tuple[str, ...]) -> Design:
    scope = set(hacks)
    vs = []
    names = set()
    for name, on in spec.variants:
        if name in names:
            raise ConfigError(f"[design.variants]: variant {name!r} is listed twice")
        names.add(name)
        for h in on:
            if h not in scope:
                raise ConfigError(f"[design.variants].{name}: hack {h!r} is not in scope; "
                                  f"hacks in scope: {', '.join(hacks) or '(none)'}")
        vs.append(Variant(name, frozenset(on)))
    seen: dict[frozenset[str], str] = {}
    for v in vs:
        if v.hacks in seen:
            raise ConfigError(f"[design.variants]: {v.name!r} and {seen[v.hacks]!r} enable the same hacks")
        seen[v.hacks] = v.name
    # One-factor comparisons wherever two variants differ by exactly one hack.
    comps = []
    for h in hacks:
        for v in vs:
            if h in v.hacks and (v.hacks - {h}) in seen:
                comps.append(Comparison(h, v.name, seen[v.hacks - {h}]))
                break
    return Design("explicit", hacks, tuple(vs), tuple(comps))


def _rows_to_variants(matrix: np.ndarray, hacks: tuple[str, ...]) -> tuple[Variant, ...]:
    width = max(2, len(str(len(matrix))))
    out = []
    for i, row in enumerate(matrix, 1):
        on = frozenset(h for h, x in zip(hacks, row) if x > 0)
        name = ALL_ON if on == frozenset(hacks) else ALL_OFF if not on else f"f{i:0{width}d}"
        out.append(Variant(name, on))
    return tuple(out)


def _full_factorial(spec: DesignSpec, hacks: tuple[str, ...]) -> Design:
    import pyDOE3

    if len(hacks) > 12:
        raise ConfigError(f"[design]: a full factorial over {len(hacks)} hacks has "
                          f"{2 ** len(hacks)} variants; use kind = \"fractional-factorial\"")
    matrix = pyDOE3.ff2n(len(hacks))
    return Design("full-factorial", hacks, _rows_to_variants(matrix, hacks), resolution=None,
                  notes=("all main effects and interactions are estimable",))


def _fractional(spec: DesignSpec, hacks: tuple[str, ...]) -> Design:
    import pyDOE3

    k = len(hacks)
    if k < 2:  # one factor has no fraction and no interaction to alias
        raise ConfigError(f"[design]: a fractional factorial needs at least 2 hacks in scope, "
                          f"got {k} ({', '.join(hacks)}); for one hack use kind = "
                          "\"leave-one-out\" (on vs off)")
    if spec.method == "plackett-burman":
        matrix = pyDOE3.pbdesign(k)
        return Design("fractional-factorial", hacks, _rows_to_variants(matrix, hacks),
                      resolution=3, aliasing=tuple(alias_chains(matrix, hacks)),
                      notes=(f"Plackett-Burman screening design, {len(matrix)} runs: main effects "
                             "only; two-factor interactions are partially aliased with main effects",))
    if spec.generators:
        gens = spec.generators.split()
        if len(gens) != k:
            raise ConfigError(f"[design].generators has {len(gens)} columns but {k} hacks are "
                              f"in scope ({', '.join(hacks)})")
        try:
            matrix = pyDOE3.fracfact(spec.generators)
        except Exception as exc:  # pyDOE3 raises ValueError/TypeError on bad strings
            raise ConfigError(f"[design].generators {spec.generators!r}: {exc}") from exc
    else:
        if spec.resolution < 4:
            raise ConfigError(f"[design].resolution = {spec.resolution}: fractional factorials "
                              "need resolution IV or better (main effects clear of two-factor "
                              "interactions); for main effects only use method = \"plackett-burman\"")
        matrix = regular_fraction(k, spec.resolution)
    res = resolution(matrix)
    if res is not None and res < 4:
        raise ConfigError(f"[design].generators give a resolution-{res} design; "
                          "fractional factorials need resolution IV or better")
    if len(np.unique(matrix, axis=0)) != len(matrix):
        raise ConfigError("[design]: the design repeats rows; check the generators")
    notes = (f"2^({k}-{k - int(np.log2(len(matrix)))}) fractional factorial, {len(matrix)} runs, "
             f"resolution {_roman(res) if res else 'full'}",)
    if len(matrix) == 2 ** k:  # no fraction: say so (the dry run and the report print notes)
        why = ("the generators give no fraction" if spec.generators else f"no smaller fraction "
               f"of {k} hacks has resolution {_roman(spec.resolution)} or better")
        notes = (f"the full factorial, all {len(matrix)} combinations: {why}",)
    return Design("fractional-factorial", hacks, _rows_to_variants(matrix, hacks), resolution=res,
                  aliasing=tuple(alias_chains(matrix, hacks)), notes=notes)


def regular_fraction(k: int, res: int) -> np.ndarray:
    """The smallest regular 2^(k-p) fraction of resolution >= ``res`` found.

    pyDOE3's ``fracfact_by_res`` first; its generator scheme can fall short of the
    requested resolution (11 factors at V gives a 64-run design of resolution IV), so
    the result is verified and, if short, generators are searched greedily (base factors
    a, b, ...; each added column is a base-factor word that keeps the resolution),
    with pyDOE3's ``fracfact`` building the matrix.
    """
    import string

    import pyDOE3

    try:
        matrix = pyDOE3.fracfact_by_res(k, res)
        got = resolution(matrix, max_len=res - 1)
        if got is None or got >= res:
            return matrix
        start = int(np.log2(len(matrix))) + 1
    except ValueError:
        start = 1
    letters = string.ascii_lowercase
    for base in range(start, min(k, len(letters)) + 1):
        gens: list[str] = []
        for r in range(max(res - 1, 2), base + 1):
            for combo in itertools.combinations(letters[:base], r):
                if len(gens) == k - base:
                    break
                trial = pyDOE3.fracfact(" ".join([*letters[:base], *gens, "".join(combo)]))
                got = resolution(trial, max_len=res - 1)
                if got is None or got >= res:
                    gens.append("".join(combo))
        if len(gens) == k - base:
            return pyDOE3.fracfact(" ".join([*letters[:base], *gens]))
    raise ConfigError(f"[design]: no resolution-{res} fractional factorial exists for {k} hacks; "
                      "lower the resolution or use kind = \"full-factorial\"")


# --------------------------------------------------------------------------------------
# Resolution and aliasing of a two-level design
# --------------------------------------------------------------------------------------
def resolution(matrix: np.ndarray, max_len: int | None = None) -> int | None:
    """Length of the shortest word of the defining relation (None: no aliasing).

    A word is a set of columns whose elementwise product is constant (+1 or -1).
    With ``max_len``, only words up to that length are looked for (None if none).
    """
    x = np.sign(np.asarray(matrix, dtype=float))
    k = x.shape[1]
    for r in range(1, min(k, max_len or k) + 1):
        for cols in itertools.combinations(range(k), r):
            prod = x[:, cols].prod(axis=1)
            if np.all(prod == prod[0]):
                return r
    return None


def alias_chains(matrix: np.ndarray, names: tuple[str, ...], max_order: int = 2) -> list[str]:
    """Alias chains among effects up to ``max_order`` (main effects and 2FIs).

    Effects whose contrast columns are equal up to sign are fully aliased; for
    non-regular designs (Plackett-Burman) partial aliasing is summarised instead.
    """
    x = np.sign(np.asarray(matrix, dtype=float))
    k = x.shape[1]
    effects = [c for r in range(1, max_order + 1) for c in itertools.combinations(range(k), r)]
    groups: dict[bytes, list[tuple[int, ...]]] = {}
    partial, worst = 0, 0.0
    cols = {}
    for e in effects:
        col = x[:, e].prod(axis=1)
        col = col * col[0]  # sign-normalise
        cols[e] = col
        groups.setdefault(col.tobytes(), []).append(e)
    label = lambda e: "×".join(names[i] for i in e)  # noqa: E731
    out = [" = ".join(label(e) for e in g) for g in groups.values() if len(g) > 1]
    mains = [e for e in effects if len(e) == 1]
    for m in mains:  # partial aliasing: non-orthogonal, non-identical columns
        for e in effects:
            if len(e) == 2 and m[0] not in e:
                c = abs(float(cols[m] @ cols[e])) / len(x)
                if 1e-9 < c < 1 - 1e-9:
                    partial, worst = partial + 1, max(worst, c)
    if partial:
        out.append(f"{partial} (main effect, two-factor interaction) pairs are partially "
                   f"aliased (|correlation| up to {worst:.2f})")
    return out


def _roman(n: int) -> str:
    return {3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII"}.get(n, str(n))
