"""Registry hygiene (issue 12, item 4) and hack identity (item 2): duplicate names,
reserved names, parameter types, broken plugins, versions, canonical order, default
run directories."""

from __future__ import annotations

import json
import re
import textwrap
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pytest

import ablate
from ablate import Bounds, Hack, registry
from ablate.cli import main
from ablate.config import TrainConfig
from ablate.errors import ConfigError
from ablate.training.resolve import resolve

REPO = Path(__file__).resolve().parent.parent


# ----- plugins installed into a throwaway site folder ---------------------------------
def _install(site: Path, dist: str, version: str, module_text: str, ep_name: str = "hacks") -> str:
    """Write a minimal installed distribution (dist-info with an ablate.hacks entry point
    naming a fresh module) into ``site``; return the module name."""
    module = f"plug_{dist.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    (site / f"{module}.py").write_text(textwrap.dedent(module_text))  # no-op if dedented
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[ablate.hacks]\n{ep_name} = {module}\n")
    return module


def _hack_module(name: str, extra: str = "") -> str:
    return textwrap.dedent(f"""
        from ablate import Hack, register_hack

        @register_hack
        class H(Hack):
            name = {name!r}
            on, off = "on", "off"
    """) + extra


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty registry that discovers again, with ``tmp_path/site`` on sys.path."""
    registry.hack_names()  # the real registry discovers first: plugin modules imported in
    # the empty one below would not register again later (a test file run alone, then v3's)
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    for attr, value in (("_REGISTRY", {}), ("_PROVIDERS", {}), ("_DUPLICATES", {}),
                        ("_CLAIMS", {}), ("_QUALIFIED", {}), ("_FAILURES", []),
                        ("_discovered", False)):
        monkeypatch.setattr(registry, attr, value)
    return site


# ----- duplicate and reserved names --------------------------------------------------
@pytest.mark.parametrize("first,second", [("aaa-dist", "zzz-dist"), ("zzz-dist", "aaa-dist")])
def test_two_plugins_claiming_one_name_is_an_error_naming_both(fresh, capsys, first, second):
    _install(fresh, first, "1.0", _hack_module("dup-hack"))
    _install(fresh, second, "2.0", _hack_module("dup-hack"))
    with pytest.warns(registry.PluginWarning, match="'dup-hack' is registered by more than one provider"):
        registry.list_hacks()
    with pytest.raises(ConfigError) as err:
        registry.get_hack("dup-hack")
    assert "aaa-dist" in str(err.value) and "zzz-dist" in str(err.value)
    assert "dup-hack" not in registry.hack_names()
    assert main(["train", "--hacks", "builtin", "--dry-run"]) == 0  # other hacks still work
    assert main(["train", "--hacks", "builtin,dup-hack", "--dry-run"]) == 2
    assert "aaa-dist" in capsys.readouterr().err


_PARAM = """
        from dataclasses import dataclass

        from ablate import Hack, register_hack

        @register_hack
        class H(Hack):
            name = "dup-hack"
            on, off = "on {dist}", "off"

            @dataclass(frozen=True)
            class Params:
                p: float = {default}

            def apply(self, recipe):
                return recipe.replace(d_steps=1 + int(self.params.p > 1))
"""


def test_provider_qualified_names_pick_one_of_two_clashing_plugins(fresh, capsys, tmp_path):
    _install(fresh, "aaa-dist", "1.0", _PARAM.format(dist="aaa", default=0.5))
    _install(fresh, "zzz-dist", "2.0", _PARAM.format(dist="zzz", default=0.25))
    with pytest.warns(registry.PluginWarning):
        registry.list_hacks()
    with pytest.raises(ConfigError) as err:  # the unqualified name lists the choices
        registry.get_hack("dup-hack")
    assert "'aaa-dist:dup-hack' or 'zzz-dist:dup-hack'" in str(err.value)
    # ablate hacks lists both, qualified, with their providers
    assert main(["hacks", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["aaa-dist:dup-hack"]["provider"] == "aaa-dist"
    assert rows["zzz-dist:dup-hack"]["provider"] == "zzz-dist"
    assert rows["zzz-dist:dup-hack"]["on"] == "on zzz" and rows["zzz-dist:dup-hack"]["version"] == "2.0"
    # the qualified name selects that provider's class, in --hacks, --set and resolve
    plan = resolve(TrainConfig(dataset="fake", hacks=("zzz_dist:dup-hack",),
                               params=(("zzz-dist:dup-hack", "p", 2.0),)))
    (hack,) = plan.hacks
    assert hack.on == "on zzz" and hack.params.p == 2.0 and plan.recipe.d_steps == 2
    assert plan.hack_records[0]["name"] == "zzz-dist:dup-hack"
    assert plan.hack_records[0]["provider"] == "zzz-dist" and plan.hack_records[0]["version"] == "2.0"
    out = tmp_path / "run"
    assert main(["train", "--dataset", "fake", "--steps", "1", "--batch-size", "4", "--ngf", "8",
                 "--ndf", "8", "--hacks", "aaa-dist:dup-hack", "--set", "aaa-dist:dup-hack.p=3",
                 "--no-eval", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hacks"] == [{"name": "aaa-dist:dup-hack", "params": {"p": 3.0},
                             "provider": "aaa-dist", "version": "1.0"}]
    from ablate.training.resolve import config_from_json
    again = resolve(config_from_json(cfg))  # a run directory rebuilds with the same hack
    assert again.hack_records == tuple(cfg["hacks"])
    # [hacks].scope of an experiment file
    exp = tmp_path / "exp.toml"
    exp.write_text('seeds = [0]\n[data]\ndataset = "fake"\n[hacks]\n'
                   'scope = ["zzz-dist:dup-hack"]\n[hacks.params]\n"zzz-dist:dup-hack" = { p = 0.75 }\n')
    from ablate.experiment.spec import load_experiment
    assert load_experiment(exp).hacks == ("zzz-dist:dup-hack",)
    # both at once, or a provider that does not provide it, are refused
    with pytest.raises(ConfigError, match="two providers"):
        registry.instantiate(["aaa-dist:dup-hack", "zzz-dist:dup-hack"])
    with pytest.raises(ConfigError, match="not 'other-dist'"):
        registry.get_hack("other-dist:dup-hack")
    assert registry.get_hack("ablate:batch-norm") is registry.get_hack("batch-norm")


def test_a_plugin_claiming_a_builtin_name_is_an_error_naming_both(fresh, capsys):
    _install(fresh, "evil-dist", "1.0", _hack_module("batch-norm"))
    with pytest.warns(registry.PluginWarning):
        registry.list_hacks()
    assert main(["train", "--hacks", "builtin", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "'batch-norm' is registered by more than one provider: ablate" in err and "evil-dist" in err
    assert "'builtin' includes 'batch-norm'" in err  # the keyword the user typed, named
    assert main(["train", "--hacks", "batch-norm", "--dry-run"]) == 2
    assert "includes" not in capsys.readouterr().err  # a name typed as is: the message as before


def test_a_qualified_builtin_keeps_its_canonical_place_beside_a_clashing_plugin(fresh):
    """With a plugin also claiming 'batch-norm', 'ablate:batch-norm' is still the built-in in
    the README's order (before adam-dcgan), the plugin's copy among the plugins."""
    _install(fresh, "evil-dist", "1.0", _hack_module("batch-norm"))
    with pytest.warns(registry.PluginWarning):
        names = registry.hack_names()
    builtin = registry.builtin_names()
    assert names.index("ablate:batch-norm") == builtin.index("batch-norm") < len(builtin)
    assert names.index("evil-dist:batch-norm") >= len(builtin)
    assert registry.canonical(["adam-dcgan", "ablate:batch-norm"]) == ("ablate:batch-norm", "adam-dcgan")
    assert registry.call_order(["adam-dcgan", "ablate:batch-norm"]) == ("ablate:batch-norm", "adam-dcgan")


def test_a_misspelt_hook_is_a_warning_naming_the_hook_meant():
    """A method one letter off a hook is never called: registering warns, naming the hook;
    other helper methods (and every built-in and example plugin) pass silently."""
    class Typo(Hack):
        name = "test-typo-hooks"

        def after_d_updates(self, ctx):
            pass

        def augument(self, x, ctx):
            return x

        def augmenter(self, x):  # a helper, not a typo
            return x

        def scale(self):
            return 1

    with pytest.warns(registry.PluginWarning) as rec:
        registry.register_hack(Typo)
    try:
        text = [str(w.message) for w in rec]
        assert len(text) == 2
        assert "after_d_updates(), which is not a hook" in text[0] and "did you mean after_d_update()" in text[0]
        assert "augument()" in text[1] and "did you mean augment()" in text[1]
    finally:
        registry.unregister_hack(Typo.name)
    assert not [c.name for c in registry.list_hacks() if registry.misspelt_hooks(c)]


def test_ablate_hacks_lists_conflicts_and_order_declarations_as_json_does(capsys):
    class Declares(Hack):
        name = "test-declares"
        conflicts = ("batch-norm",)
        before = ("adam-dcgan",)
        after = ("leaky-relu",)

    registry.register_hack(Declares)
    try:
        assert main(["hacks"]) == 0
        text = capsys.readouterr().out
    finally:
        registry.unregister_hack(Declares.name)
    block = text[text.index("test-declares"):].splitlines()[:6]
    for line in ("conflicts: batch-norm", "before: adam-dcgan", "after: leaky-relu"):
        assert any(x.strip() == line for x in block), (line, block)


def test_direct_duplicate_registration_fails_at_once_naming_both():
    class Dup(Hack):
        name = "batch-norm"

    with pytest.raises(ConfigError, match=re.escape("already registered by ablate (ablate.hacks.dcgan.BatchNorm)")):
        registry.register_hack(Dup)
    assert registry.get_hack("batch-norm") is not Dup


@pytest.mark.parametrize("name", ["all", "builtin", "none"])
def test_reserved_names_are_rejected(name):
    cls = type("Reserved", (Hack,), {"name": name})
    with pytest.raises(ConfigError, match=f"hack name '{name}' is reserved"):
        registry.register_hack(cls)


@pytest.mark.parametrize("name", ["Upper", "with space", "a,b", "a.b", "a=b", "-lead", ""])
def test_malformed_names_are_rejected(name):
    with pytest.raises(ConfigError, match="name"):
        registry.register_hack(type("Bad", (Hack,), {"name": name}))


# ----- broken plugins ------------------------------------------------------------------
def test_a_plugin_that_fails_to_import_warns_and_errors_only_when_used(fresh, capsys):
    _install(fresh, "broken-dist", "0.3", "raise RuntimeError('oops at import')", ep_name="broken")
    _install(fresh, "good-dist", "1.0", _hack_module("good-hack"))
    with pytest.warns(registry.PluginWarning, match="broken-dist .*failed to load: RuntimeError: oops at import"):
        names = registry.hack_names()
    assert "good-hack" in names and names[:11] == registry.builtin_names()
    assert main(["hacks"]) == 0
    assert main(["train", "--hacks", "builtin,good-hack", "--dry-run"]) == 0
    capsys.readouterr()
    for selection in ("broken", "all"):  # its hack by name, or 'all' (which would lack it)
        assert main(["train", "--hacks", selection, "--dry-run"]) == 2
        assert "oops at import" in capsys.readouterr().err


def test_a_plugin_that_calls_sys_exit_at_import_is_a_failed_plugin_not_an_exit(fresh):
    """sys.exit(3) at a plugin's import ended every command, `ablate hacks` too, with exit 3
    and no word; now it is a plugin that failed to load, like any other."""
    _install(fresh, "exit-dist", "0.1", "import sys\nsys.exit(3)\n", ep_name="exits")
    with pytest.warns(registry.PluginWarning, match="exit-dist .*failed to load: SystemExit: 3"):
        names = registry.hack_names()
    assert names[:11] == registry.builtin_names()
    assert main(["hacks"]) == 0


def test_a_plugin_failing_halfway_leaves_no_half_registered_hack(fresh):
    _install(fresh, "half-dist", "1.0", _hack_module("half-hack", "\nraise ImportError('late')\n"))
    with pytest.warns(registry.PluginWarning, match="late"):
        assert "half-hack" not in registry.hack_names()


def test_entry_point_naming_a_hack_class(fresh):
    module = _install(fresh, "cls-dist", "4.2", """
        from ablate import Hack

        class Direct(Hack):
            name = "direct-hack"
            on, off = "on", "off"
    """)
    info = next(fresh.glob("cls_dist-*.dist-info"))
    (info / "entry_points.txt").write_text(f"[ablate.hacks]\ndirect-hack = {module}:Direct\n")
    assert registry.provider("direct-hack") == "cls-dist" and registry.version("direct-hack") == "4.2"


def test_one_package_registering_two_classes_under_one_name_is_a_failed_plugin(fresh, capsys):
    """A copy-pasted class kept its name: the warning named the package twice as two
    'providers', and 'pkg:name' silently trained the second class."""
    _install(fresh, "twice-dist", "1.0", _hack_module("twice-hack") + textwrap.dedent("""
        @register_hack
        class B(Hack):
            name = "twice-hack"
            on, off = "on", "off"
    """))
    with pytest.warns(registry.PluginWarning, match=r"'twice-hack' is registered twice by twice-dist: "
                      r"plug_twice_dist_\w+\.H and plug_twice_dist_\w+\.B; give each class its own name"):
        assert "twice-hack" not in registry.hack_names()
    for selection in ("twice-hack", "twice-dist:twice-hack"):
        assert main(["train", "--hacks", selection, "--dry-run"]) == 2
        assert "registered twice by twice-dist" in capsys.readouterr().err


def test_an_entry_point_that_registers_nothing_says_so(fresh, capsys):
    _install(fresh, "forgot-dist", "1.0", """
        from ablate import Hack

        class Undecorated(Hack):
            name = "undecorated"
            on, off = "on", "off"
    """)
    module = _install(fresh, "list-dist", "1.0", _hack_module("listed-hack").replace("@register_hack\n", "")
                      + "\nHACKS = [H]\n")
    info = next(fresh.glob("list_dist-*.dist-info"))
    (info / "entry_points.txt").write_text(f"[ablate.hacks]\nhacks = {module}:HACKS\n")
    with pytest.warns(registry.PluginWarning) as seen:
        names = registry.hack_names()
    said = " | ".join(str(w.message) for w in seen)
    assert "forgot-dist (hacks = plug_forgot_dist_" in said and "registered no hack: decorate each" in said
    assert "list-dist" in said and "names a list, not a module or a Hack subclass" in said
    assert "undecorated" not in names and "listed-hack" not in names


@pytest.mark.parametrize("method,message", [
    ("def augment(self, x):\n        return x", r"augment\(self, x\) cannot be called as ablate calls it, "
     r"augment\(self, x, ctx\)"),
    ("def __init__(self):\n        super().__init__()", r"__init__\(self\) cannot be called as ablate "
     r"calls it, __init__\(self, params\)"),
    ("def wrap_generator(self):\n        return None", r"wrap_generator\(self\) cannot be called as "
     r"ablate calls it, wrap_generator\(self, module\)"),
    ("def g_loss(self, ctx, extra):\n        return 0", r"g_loss\(self, ctx, extra\) cannot"),
])
def test_a_hook_with_a_wrong_signature_is_refused_when_registered(method, message):
    ns = {}
    exec("from ablate import Hack\n\nclass Bad(Hack):\n    name = 'bad-signature'\n"
         "    on, off = 'on', 'off'\n\n    " + method + "\n", ns)
    with pytest.raises(ConfigError, match=message):
        registry.register_hack(ns["Bad"])
    assert "bad-signature" not in registry.hack_names()


@pytest.mark.parametrize("attr", ["on", "off", "source"])
def test_metadata_must_be_strings(attr):
    cls = type("Meta", (Hack,), {"name": "bad-metadata", "on": "x", "off": "y", attr: None})
    with pytest.raises(ConfigError, match=f"hack 'bad-metadata': {attr} must be a string"):
        registry.register_hack(cls)


def test_signatures_ablate_can_call_are_accepted(register):
    class Fine(Hack):
        name = "fine-signatures"
        on, off = "on", "off"

        def __init__(self, params=None, **kw):
            super().__init__(params)

        def wrap_generator(self, g):  # the first API: the module only
            return g

        def wrap_discriminator(self, d, recipe, info=None):
            return d

        def augment(self, *args):
            return args[0]

        @staticmethod
        def d_penalty(ctx):
            return None

    register(Fine)
    assert "fine-signatures" in registry.hack_names()


# ----- parameter types -------------------------------------------------------------------
class _Typed(Hack):
    name = "test-typed"
    on = off = "x"

    @dataclass(frozen=True)
    class Params:
        mode: Literal["a", "b"] = "a"
        level: Literal[1, 2, 3] = 1
        limit: float | None = None
        cap: int | None = 3
        pair: tuple[float, float] = (0.1, 0.2)
        many: tuple[int, ...] = ()
        p: Annotated[float, Bounds(ge=0.0, le=1.0)] = 0.5
        n: Annotated[int, Bounds(gt=0)] = 2
        flag: bool = False


@pytest.mark.parametrize("values,expected", [
    ({"mode": "b"}, {"mode": "b"}),
    ({"level": "2"}, {"level": 2}),  # a CLI string
    ({"level": 3}, {"level": 3}),
    ({"limit": "none"}, {"limit": None}),
    ({"limit": "0.5"}, {"limit": 0.5}),
    ({"cap": None}, {"cap": None}),
    ({"pair": "0.3,0.4"}, {"pair": (0.3, 0.4)}),
    ({"pair": [1, 2]}, {"pair": (1.0, 2.0)}),  # a TOML array
    ({"many": "1,2,3"}, {"many": (1, 2, 3)}),
    ({"p": 1}, {"p": 1.0}),
    ({"flag": "yes"}, {"flag": True}),
])
def test_parameter_values_are_coerced(values, expected):
    params = _Typed.make_params(values)
    for k, v in expected.items():
        assert getattr(params, k) == v and type(getattr(params, k)) is type(v)


@pytest.mark.parametrize("values,message", [
    ({"mode": "bogus"}, "'mode' must be one of 'a', 'b', got 'bogus'"),
    ({"level": 4}, "'level' must be one of 1, 2, 3"),
    ({"limit": "abc"}, "'limit' must be float | None"),
    ({"pair": "0.1"}, "'pair' must be tuple[float, float]"),
    ({"many": "1,x"}, "'many'[1] must be int"),
    ({"p": 1.5}, "'p' must be float (>= 0.0 and <= 1.0), got 1.5 (out of range"),
    ({"p": float("nan")}, "'p' must be float, got nan (not a finite number)"),
    ({"n": 0}, "'n' must be int (> 0)"),
    ({"n": 2.5}, "'n' must be int"),
    ({"n": True}, "'n' must be int"),
    ({"flag": "maybe"}, "'flag' must be bool"),
])
def test_bad_parameter_values_are_config_errors(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _Typed.make_params(values)


def test_params_classes_are_checked_at_registration():
    @dataclass
    class NotFrozen:
        x: int = 1

    @dataclass(frozen=True)
    class NoDefault:
        x: int

    @dataclass(frozen=True)
    class Unsupported:
        x: list = ()

    @dataclass(frozen=True)
    class BadDefault:
        x: Literal["a", "b"] = "c"

    @dataclass(frozen=True)
    class ListFactory:  # its real problem is the type, not a missing default
        sizes: list[int] = field(default_factory=lambda: [3, 4])

    @dataclass(frozen=True)
    class TupleFactory:
        sizes: tuple[int, ...] = field(default_factory=lambda: (3, 4))

    for P, message in ((NotFrozen, "frozen dataclass"), (NoDefault, "needs a default"),
                       (Unsupported, "has type list"),
                       (ListFactory, re.escape("parameter 'sizes' has type list; supported: bool, int")),
                       (TupleFactory, "parameter 'sizes' has a default_factory; give it a plain default"),
                       (BadDefault, re.escape("parameter 'x' (its default) must be one of 'a', 'b'"))):
        with pytest.raises(ConfigError, match=message):
            registry.register_hack(type("H", (Hack,), {"name": "test-params", "Params": P}))
    assert "test-params" not in registry.hack_names()


def test_experiment_files_check_parameter_types(tmp_path):
    """TOML values go through the same checks (a Literal typo is caught before any run)."""
    from ablate.experiment.spec import load_experiment

    text = (REPO / "experiments/smoke.toml").read_text()
    text += '\n[hacks.params.label-smoothing]\none_sided = "maybe"\n'
    (tmp_path / "x.toml").write_text(text)
    assert tomllib.loads(text)
    with pytest.raises(ConfigError, match="'one_sided' must be bool"):
        load_experiment(tmp_path / "x.toml")


# ----- identity: versions, providers, canonical order ---------------------------------
def test_versions():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert registry.version("batch-norm") == ablate.__version__ == pyproject["project"]["version"]

    class Pinned(Hack):
        name = "test-pinned"
        version = "2.5"

    class Local(Hack):
        name = "test-local"

    registry.register_hack(Pinned)
    registry.register_hack(Local)
    try:
        assert registry.version("test-pinned") == "2.5"
        assert re.fullmatch(r"src-[0-9a-f]{12}", registry.version("test-local"))  # no distribution
        record = resolve(TrainConfig(dataset="fake", hacks=("test-pinned",))).hack_records[0]
        assert record == {"name": "test-pinned", "params": {}, "provider": registry.provider("test-pinned"),
                          "version": "2.5"}
    finally:
        registry.unregister_hack("test-pinned")
        registry.unregister_hack("test-local")


def test_installed_plugin_versions_and_providers(fresh):
    _install(fresh, "vers-dist", "3.1.4", _hack_module("vers-hack"))
    row = registry.describe("vers-hack")
    assert (row["provider"], row["version"]) == ("vers-dist", "3.1.4")
    assert main(["hacks", "--json"]) == 0


def test_canonical_order_does_not_depend_on_discovery(fresh):
    # Distribution names sort the opposite way to the hack names they provide.
    _install(fresh, "aaa-dist", "1.0", _hack_module("zeta-hack"))
    _install(fresh, "zzz-dist", "1.0", _hack_module("alpha-hack"))
    names = registry.hack_names()
    assert names[:11] == registry.builtin_names()
    assert names.index("alpha-hack") < names.index("zeta-hack")
    assert registry.expand(["zeta-hack", "alpha-hack", "batch-norm"]) == ("batch-norm", "alpha-hack", "zeta-hack")


# ----- default run directories ----------------------------------------------------------
def test_default_run_directories_never_collide():
    from ablate.cli.train import default_out

    class P1(Hack):
        name = "test-plugin-one"

    class P2(Hack):
        name = "test-plugin-two"

    registry.register_hack(P1)
    registry.register_hack(P2)
    try:
        def out(hacks, **kw):
            return default_out(resolve(TrainConfig(dataset="fake", hacks=hacks, **kw)))

        builtin = tuple(registry.builtin_names())
        dirs = {out(builtin + ("test-plugin-one",)), out(builtin + ("test-plugin-two",)),
                out(builtin), out(builtin, params=(("noisy-labels", "p", 0.1),)),
                out(builtin, steps=7), out(builtin, seed=1)}
        assert len(dirs) == 6
        assert out(builtin) == out(builtin, device="cpu", threads=1)  # same run, same directory
        assert out(builtin).name.startswith("fake-all-on-s0-")
        # one identity function: the digest is the grid's run key of the same run
        from ablate.grid.keys import key_of

        key, _ = key_of(TrainConfig(dataset="fake", hacks=builtin), {})
        assert out(builtin).name.endswith("-" + key[:8])
    finally:
        registry.unregister_hack("test-plugin-one")
        registry.unregister_hack("test-plugin-two")


# ----- moved from test_training_loop.py ------------------------------------------------------
def test_duplicate_hack_name_is_rejected():
    class Dup(Hack):
        name = "batch-norm"

    with pytest.raises(ConfigError, match="already registered"):
        registry.register_hack(Dup)
    assert registry.get_hack("batch-norm") is not Dup


def test_conflicting_hacks_name_both():
    @dataclass(frozen=True)
    class P:
        x: int = 1

    class A(Hack):
        name, conflicts, Params = "test-conflict-a", ("test-conflict-b",), P

    class B(Hack):
        name = "test-conflict-b"

    registry.register_hack(A)
    registry.register_hack(B)
    try:
        with pytest.raises(ConfigError, match="'test-conflict-a' and 'test-conflict-b'"):
            registry.instantiate(["test-conflict-b", "test-conflict-a"])
        with pytest.raises(ConfigError, match="must be int"):
            registry.instantiate(["test-conflict-a"], {"test-conflict-a": {"x": "abc"}})
    finally:
        for n in ("test-conflict-a", "test-conflict-b"):
            registry.unregister_hack(n)
