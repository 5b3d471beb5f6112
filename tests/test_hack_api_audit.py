"""Plugin-author audit of the hack API (docs/hacks.md): places where the documented
behaviour and the code disagreed, each pinned by a test that failed before its fix."""

from __future__ import annotations

import contextlib
import re
import textwrap
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from ablate import Hack
from ablate.config import TrainConfig
from ablate.errors import ConfigError
from ablate.hacks import registry
from ablate.hacks.params import coerce
from ablate.training import checkpoint
from ablate.training.loop import train
from ablate.training.resolve import resolve


def _cfg(hacks=(), **kw) -> TrainConfig:
    base = dict(dataset="fake", steps=3, batch_size=8, seed=1, ngf=8, ndf=8, latent_dim=16,
                device="cpu", threads=1, log_every=1)
    return TrainConfig(**{**base, "hacks": tuple(hacks), **kw})


class _Counter(Hack):
    """Per-run state on the hack: the number of steps seen (docs: state_dict())."""
    name = "test-audit-counter"
    source = on = off = "test"
    value = staticmethod(lambda n: n)

    def __init__(self, params=None):
        super().__init__(params)
        self.n = 0

    def after_step(self, ctx):
        self.n += 1

    def state_dict(self):
        return {"n": type(self).value(self.n)}

    def load_state_dict(self, state):
        self.n = int(state["n"])


# ----- state_dict() returning what a checkpoint cannot load back --------------------
# docs/hacks.md, "Per-run state": tensors, numbers, strings, lists and dicts of them. A
# NumPy number (np.mean of something) used to be written into train_state.pt without a
# word; the checkpoint (loaded with weights_only=True) was then "unreadable" on resume
# and the run could not continue. Now the first checkpoint fails naming the hack.
@pytest.mark.parametrize("value, what", [(np.float64, "numpy.float64 at state['n']"),
                                         (lambda n: [object()], "object at state['n'][0]")])
def test_an_unloadable_state_dict_is_an_error_at_the_first_checkpoint(register, tmp_path,
                                                                      value, what):
    cls = register(type("NumpyState", (_Counter,), {"name": "test-audit-np-state",
                                                    "value": staticmethod(value)}))
    with pytest.raises(ConfigError, match=re.escape(
            "hack 'test-audit-np-state': state_dict() must return tensors") + ".*"
            + re.escape(f"got {what}")):
        train(resolve(_cfg((cls.name,), steps=2, checkpoint_every=1)), tmp_path / "run")


def test_every_documented_state_type_passes_the_check():
    state = {"p": 0.5, "n": 3, "ok": True, "name": "x", "none": None, "t": torch.ones(2),
             "pair": (1, 2.0), "hist": [1.0, 2.0], "nested": OrderedDict(a={"b": [torch.zeros(1)]}),
             7: "int keys load too"}
    assert checkpoint.unloadable(state) is None
    assert checkpoint.unloadable({"a": np.int64(1)}) == "numpy.int64 at state['a']"


# ----- --set with a tuple parameter written as a list ---------------------------------
# `--set h.sizes=[3,4]` used to fail with "parameter 'sizes'[0] must be int, got '[3'".
@dataclass(frozen=True)
class _P:
    sizes: tuple[int, ...] = (1,)
    pair: tuple[float, float] = (0.0, 1.0)


@pytest.mark.parametrize("text, typ, want", [
    ("3,4", tuple[int, ...], (3, 4)), ("[3, 4]", tuple[int, ...], (3, 4)),
    ("(0.5, 1)", tuple[float, float], (0.5, 1.0)), ("[]", tuple[int, ...], ()),
])
def test_a_tuple_parameter_takes_brackets_on_the_command_line(text, typ, want):
    assert coerce(text, typ, "p") == want


# ----- keywords in --off ---------------------------------------------------------------
# README: hack keywords on the command line are all, builtin, none or names; --off
# refused them ("unknown hack 'none'"), so `--hacks all --off builtin` (the plugins
# only) was impossible.
def test_off_takes_the_selection_keywords(register):
    class Plug(Hack):
        name = "test-audit-plug"
        source = on = off = "test"

    register(Plug)
    assert registry.expand(["builtin"], ["none"]) == tuple(registry.builtin_names())
    assert registry.expand(["builtin", "test-audit-plug"], ["builtin"]) == ("test-audit-plug",)


# ----- --resume with a checkpoint that cannot be read -------------------------------
# `ablate train --resume` on such a directory said "it holds a checkpoint: add --resume
# to continue it" — the flag it had been given.
def test_resume_with_an_unreadable_checkpoint_does_not_ask_for_resume(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / checkpoint.STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError) as err:
        train(resolve(_cfg()), run, resume=[run / checkpoint.STATE_FILE])
    assert "add --resume" not in str(err.value) and "cannot be read" in str(err.value)


# ----- parameters given under a hack's plain and its qualified name -------------------
# docs/hacks.md: "A qualified name of a hack only one provider holds is that hack". With
# `--set ada.target=0.5 --set ablate-paper-tricks:ada.speed=9` (or an experiment's
# [hacks.params] under one name and an [axes] level under the other) one of the two sets
# of parameters was silently dropped: an axis over a plugin parameter trained one run per
# key whatever its level.
def test_parameters_under_a_plain_and_a_qualified_name_merge(register):
    @dataclass(frozen=True)
    class Params:
        a: float = 0.0
        b: float = 0.0

    cls = register(type("Two", (Hack,), {"name": "test-audit-two", "source": "s", "on": "o",
                                         "off": "f", "Params": Params}))
    qualified = f"{registry.provider(cls.name)}:{cls.name}"
    (hack,) = registry.instantiate([cls.name], {cls.name: {"a": 1.0}, qualified: {"b": 2.0}})
    assert (hack.params.a, hack.params.b) == (1.0, 2.0)
    (hack,) = registry.instantiate([cls.name], {qualified: {"a": 1.0}, cls.name: {"a": 1.0}})
    assert hack.params.a == 1.0
    with pytest.raises(ConfigError, match="parameter 'a' is set twice"):
        registry.instantiate([cls.name], {cls.name: {"a": 1.0}, qualified: {"a": 3.0}})


# ----- a checkpoint of another run: which hack differs ------------------------------
# README: a checkpoint written with another config or version is refused "naming what
# differs"; for a plugin's version bump or a changed hack parameter the message said only
# "the training configuration, hacks or Recipe differ".
def test_a_checkpoint_mismatch_names_the_hack_version_or_parameter(register):
    @dataclass(frozen=True)
    class Params:
        a: float = 0.0

    cls = register(type("Fp", (Hack,), {"name": "test-audit-fp", "source": "s", "on": "o",
                                        "off": "f", "Params": Params}))

    def about(hacks, **params):
        cfg = _cfg(hacks, params=tuple((cls.name, k, v) for k, v in params.items()))
        plan = resolve(cfg)
        return checkpoint.fingerprint(cfg, plan.hack_records, plan.recipe.to_dict(),
                                      torch.device("cpu"))[1]

    there = about((cls.name,))
    assert checkpoint.differences(there, about((cls.name,), a=1.0)) == (
        "hack 'test-audit-fp' parameters {'a': 0.0} there, {'a': 1.0} here")
    assert checkpoint.differences(there, about(())) == "hack 'test-audit-fp' on there, off here"
    bumped = {**there, "hacks": {cls.name: {**there["hacks"][cls.name], "version": "9"}}}
    assert "hack 'test-audit-fp' version" in checkpoint.differences(there, bumped)
    old = {k: v for k, v in there.items() if k != "hacks"}  # a checkpoint from before
    assert checkpoint.differences(old, about((cls.name,), a=1.0)).startswith("the training")


# ----- a plugin that extends another plugin's hack ----------------------------------
# Discovery gave every hack registered while an entry point loaded to that entry point's
# distribution. A package that imports another plugin package (to subclass one of its
# hacks) and sorts before it took over the other's hacks: their provider, their version
# and so the run keys of every variant enabling them changed by installing it.
@pytest.fixture
def fresh_site(monkeypatch, tmp_path):
    """An empty registry that discovers again, with ``tmp_path`` on sys.path."""
    monkeypatch.syspath_prepend(str(tmp_path))
    for attr, value in (("_REGISTRY", {}), ("_PROVIDERS", {}), ("_DUPLICATES", {}),
                        ("_CLAIMS", {}), ("_QUALIFIED", {}), ("_FAILURES", []),
                        ("_discovered", False), ("_EP_OWNERS", {})):
        monkeypatch.setattr(registry, attr, value)
    return tmp_path


def _dist(site, dist: str, version: str, module: str, text: str) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(text))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[ablate.hacks]\nhacks = {module}\n")


@pytest.mark.parametrize("broken", [False, True])
def test_a_plugin_extending_another_does_not_take_over_its_hacks(fresh_site, broken):
    tag = uuid.uuid4().hex[:8]
    base, ext = f"plug_base_{tag}", f"plug_ext_{tag}"
    _dist(fresh_site, "zzz-base", "1.0", base, f"""
        from ablate import Hack, register_hack

        @register_hack
        class Base(Hack):
            name = "test-audit-base-{tag}"
            on, off = "on", "off"
    """)
    _dist(fresh_site, "aaa-ext", "7.0", ext, f"""
        from ablate import register_hack
        from {base} import Base

        @register_hack
        class Ext(Base):
            name = "test-audit-ext-{tag}"
        {"raise RuntimeError('broken after the import')" if broken else ""}
    """)
    with pytest.warns(registry.PluginWarning) if broken else contextlib.nullcontext():
        names = registry.hack_names()
    assert f"test-audit-base-{tag}" in names
    assert (registry.provider(f"test-audit-base-{tag}"), registry.version(f"test-audit-base-{tag}")) == (
        "zzz-base", "1.0")
    if not broken:
        assert (registry.provider(f"test-audit-ext-{tag}"), registry.version(f"test-audit-ext-{tag}")) == (
            "aaa-ext", "7.0")
    else:
        assert f"test-audit-ext-{tag}" not in names
