"""Designs -> variants: names, references, factorial resolution and aliasing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ablate import ConfigError
from ablate.experiment.design import alias_chains, build_design, resolution
from ablate.experiment.spec import DesignSpec
from ablate.hacks.registry import builtin_names

H3 = ("batch-norm", "adam-dcgan", "label-smoothing")


def test_leave_one_out_names_and_references():
    d = build_design(DesignSpec("leave-one-out"), H3)
    names = [v.name for v in d.variants]
    assert names == ["all-on", "-batch-norm", "-adam-dcgan", "-label-smoothing", "all-off"]
    by_name = {v.name: v.hacks for v in d.variants}
    assert by_name["all-on"] == set(H3) and by_name["all-off"] == set()
    assert by_name["-adam-dcgan"] == {"batch-norm", "label-smoothing"}
    for c in d.comparisons:  # the two variants of a comparison differ in exactly that hack
        assert by_name[c.on] - by_name[c.off] == {c.hack}
    assert d.reference()["batch-norm"] == {"on": "all-on", "off": "-batch-norm"}
    no_off = build_design(DesignSpec("leave-one-out", include_all_off=False), H3)
    assert "all-off" not in [v.name for v in no_off.variants]


def test_add_one_in_and_duplicate_sets_collapse():
    d = build_design(DesignSpec("add-one-in"), H3)
    assert [v.name for v in d.variants] == ["all-off", "+batch-norm", "+adam-dcgan",
                                            "+label-smoothing", "all-on"]
    assert {c.off for c in d.comparisons} == {"all-off"}
    # With one hack, "+h" is all-on: trained once, and the comparison points at it.
    one = build_design(DesignSpec("add-one-in"), ("batch-norm",))
    assert [v.name for v in one.variants] == ["all-off", "+batch-norm"]
    loo = build_design(DesignSpec("leave-one-out"), ("batch-norm",))
    assert [v.name for v in loo.variants] == ["all-on", "-batch-norm"]
    assert loo.comparisons[0].off == "-batch-norm"


def test_full_factorial_enumerates_every_combination():
    d = build_design(DesignSpec("full-factorial"), H3)
    sets = {v.hacks for v in d.variants}
    assert len(d.variants) == 8 == len(sets)
    assert sets == {frozenset(c) for r in range(4) for c in itertools.combinations(H3, r)}
    assert {"all-on", "all-off"} <= {v.name for v in d.variants}


def test_fractional_factorial_over_the_eleven_is_resolution_iv():
    hacks = tuple(builtin_names())
    d = build_design(DesignSpec("fractional-factorial", resolution=4), hacks)
    assert len(d.variants) == 32 and d.resolution == 4
    x = np.array([[1 if h in v.hacks else -1 for h in hacks] for v in d.variants])
    assert (x.sum(axis=0) == 0).all()  # balanced: each hack on in half the runs
    assert (x.T @ x == 32 * np.eye(11)).all()  # main effects orthogonal
    # Resolution IV: no main effect is aliased with a two-factor interaction...
    for chain in d.aliasing:
        terms = chain.split(" = ")
        assert all("×" in t for t in terms), chain
    # ...but some two-factor interactions are aliased with each other.
    assert d.aliasing


def test_resolution_v_and_plackett_burman():
    hacks = tuple(builtin_names())
    d5 = build_design(DesignSpec("fractional-factorial", resolution=5), hacks)
    assert d5.resolution >= 5 and not d5.aliasing  # 2FIs clear too
    pb = build_design(DesignSpec("fractional-factorial", method="plackett-burman"), hacks)
    assert len(pb.variants) == 12
    assert any("partially aliased" in a for a in pb.aliasing)
    assert "main effects only" in pb.notes[0]


def test_resolution_helper_on_known_designs():
    import pyDOE3

    assert resolution(pyDOE3.fracfact("a b c abc")) == 4  # I = ABCD
    assert resolution(pyDOE3.fracfact("a b ab")) == 3  # I = ABC
    assert resolution(pyDOE3.ff2n(3)) is None  # full factorial: no defining relation
    chains = alias_chains(pyDOE3.fracfact("a b ab"), ("x", "y", "z"))
    assert "x = y×z" in chains


@pytest.mark.parametrize("spec, message", [
    (DesignSpec("fractional-factorial", resolution=3), "resolution IV or better"),
    (DesignSpec("fractional-factorial", generators="a b ab"), "resolution-3"),
    (DesignSpec("fractional-factorial", generators="a b"), "has 2 columns"),
    (DesignSpec("explicit", variants=(("x", ("noisy-labels",)),)), "not in scope"),
    (DesignSpec("explicit", variants=(("x", ("batch-norm",)), ("y", ("batch-norm",)))),
     "enable the same hacks"),
])
def test_impossible_designs_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_design(spec, H3)


def test_design_needs_hacks_and_a_sane_size():
    with pytest.raises(ConfigError, match="at least one hack"):
        build_design(DesignSpec("leave-one-out"), ())
    with pytest.raises(ConfigError, match="fractional-factorial"):
        build_design(DesignSpec("full-factorial"), tuple(f"h{i}" for i in range(13)))
    # A resolution beyond what a fraction can give falls back to the full factorial.
    full = build_design(DesignSpec("fractional-factorial", resolution=9), H3)
    assert len(full.variants) == 8 and full.resolution is None


def test_explicit_design_finds_one_factor_comparisons():
    spec = DesignSpec("explicit", variants=(("base", ()), ("bn", ("batch-norm",)),
                                            ("bn+adam", ("batch-norm", "adam-dcgan"))))
    d = build_design(spec, H3)
    assert [v.name for v in d.variants] == ["base", "bn", "bn+adam"]
    assert d.reference() == {"batch-norm": {"on": "bn", "off": "base"},
                             "adam-dcgan": {"on": "bn+adam", "off": "bn"}}
