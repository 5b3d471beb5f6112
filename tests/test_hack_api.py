"""Hack API v2: the hooks, their call order and contexts, type checks on what they return,
interactions between hacks, the typed Recipe, and the old-API compatibility."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from torch import nn

from ablate import Hack, Recipe, recipe_changes, registry
from ablate.cli import main
from ablate.config import TrainConfig
from ablate.errors import ConfigError
from ablate.hacks.hooks import HookError
from ablate.hacks.interactions import select_hooks
from ablate.training.resolve import load_run, resolve
from ablate.training.loop import train

REPO = Path(__file__).resolve().parent.parent


def _cfg(hacks=(), **kw) -> TrainConfig:
    base = dict(dataset="fake", steps=3, batch_size=8, seed=1, ngf=8, ndf=8, latent_dim=16,
                device="cpu", threads=1, log_every=1)
    return TrainConfig(**{**base, "hacks": tuple(hacks), **kw})


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "generator.pt")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----- call order and contexts -----------------------------------------------------
CALLS: list[tuple] = []


class _Spy(Hack):
    """Records every hook call with what it received (overrides every additive hook)."""

    name = "test-spy"
    on = off = "records"

    def apply(self, recipe):
        CALLS.append(("apply",))
        return recipe

    def wrap_generator(self, g, recipe):
        CALLS.append(("wrap_generator", type(recipe).__name__))
        return g

    def wrap_discriminator(self, d, recipe):
        CALLS.append(("wrap_discriminator", recipe.d_update))
        return d

    def augment(self, x, ctx):
        CALLS.append(("augment", ctx.step, x.shape[0]))
        return x

    def d_penalty(self, ctx):
        CALLS.append(("d_penalty", ctx.step, ctx.real is not None, ctx.fake is not None,
                      None if ctx.features_real is None else tuple(ctx.features_real.shape)))
        return None

    def g_penalty(self, ctx):
        CALLS.append(("g_penalty", ctx.step, tuple(ctx.out_fake.shape), ctx.real.shape[0],
                      ctx.fake.requires_grad))
        return torch.zeros((), requires_grad=False)

    def after_step(self, ctx):
        CALLS.append(("after_step", ctx.step, ctx.g_sample is ctx.g, float(ctx.loss_g)))


@pytest.mark.parametrize("separate", [False, True])
def test_hooks_are_called_in_the_documented_order(register, tmp_path, separate):
    register(_Spy)
    CALLS.clear()
    hacks = ("test-spy", "separate-batches") if separate else ("test-spy",)
    train(resolve(_cfg(hacks, steps=2, batch_size=4)), tmp_path / "run")
    first_wrap = next(i for i, c in enumerate(CALLS) if c[0].startswith("wrap"))
    assert CALLS[0] == ("apply",) and {c[0] for c in CALLS[:first_wrap]} == {"apply"}
    build = [c for c in CALLS if c[0].startswith("wrap")]
    assert build == [("wrap_generator", "Recipe"),
                     ("wrap_discriminator", "separate" if separate else "mixed")]
    step = [c for c in CALLS if not c[0].startswith(("wrap", "apply"))]
    if separate:  # augment real, penalty, augment fake, penalty, then G, then after_step
        one = [("augment", 0, 4), ("d_penalty", 0, True, False, (4, 16, 7, 7)),
               ("augment", 0, 4), ("d_penalty", 0, False, True, None),
               ("augment", 0, 4), ("g_penalty", 0, (4,), 4, True)]
    else:  # one augment of cat([real, fake]), penalty with both sides, G
        one = [("augment", 0, 8), ("d_penalty", 0, True, True, (4, 16, 7, 7)),
               ("augment", 0, 4), ("g_penalty", 0, (4,), 4, True)]
    assert [c for c in step[:len(one)]] == one
    after = [c for c in step if c[0] == "after_step"]
    assert [(c[1], c[2]) for c in after] == [(1, True), (2, True)]  # step already counted
    log = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [round(c[3], 5) for c in after] == [round(r["loss_g"], 5) for r in log]


def test_builtins_take_the_plain_path_and_hooked_path_computes_the_same(register, tmp_path):
    """No-op hooks switch the loop to the hook path; its default losses must train to the
    same weights bit for bit (mixed and separate updates, targets, flips)."""

    class NoOp(Hack):
        name = "test-noop"
        on = off = "nothing"

        def d_penalty(self, ctx):
            return None

    register(NoOp)
    assert all(not select_hooks([cls()]).per_step for cls in registry.list_hacks()
               if registry.provider(cls.name) == "ablate")
    for hacks in ((), tuple(registry.builtin_names())):
        plain = train(resolve(_cfg(hacks)), tmp_path / f"plain{len(hacks)}")
        hooked = train(resolve(_cfg(hacks + ("test-noop",))), tmp_path / f"hooked{len(hacks)}")
        assert plain.status == hooked.status == "done"
        assert _same(_weights(tmp_path / f"plain{len(hacks)}"), _weights(tmp_path / f"hooked{len(hacks)}"))


def test_loss_replacement_and_penalty_reach_the_optimizer(register, tmp_path):
    """A replaced D loss and an added G term change training; the logged losses are theirs."""

    class Zero(Hack):
        name = "test-zero-d"
        on = off = "D loss x0"

        def d_loss(self, ctx):
            sides = [o for o in (ctx.out_real, ctx.out_fake) if o is not None]
            return 0.0 * torch.cat(sides).sum()

    class Plus(Hack):
        name = "test-plus-g"
        on = off = "G loss + 7"

        def g_penalty(self, ctx):
            return torch.tensor(7.0)

    register(Zero, Plus)
    train(resolve(_cfg(("test-zero-d",))), tmp_path / "zero")
    log = [json.loads(x) for x in (tmp_path / "zero/log.jsonl").read_text().splitlines()]
    assert all(r["loss_d"] == 0.0 for r in log)
    train(resolve(_cfg(("test-plus-g",))), tmp_path / "plus")
    train(resolve(_cfg()), tmp_path / "base")
    plus = [json.loads(x)["loss_g"] for x in (tmp_path / "plus/log.jsonl").read_text().splitlines()]
    base = [json.loads(x)["loss_g"] for x in (tmp_path / "base/log.jsonl").read_text().splitlines()]
    assert plus == pytest.approx([b + 7 for b in base], abs=1e-5)  # a constant: no gradient change


def test_features_are_the_input_of_ds_last_convolution(register, tmp_path):
    seen = {}

    class Feat(Hack):
        name = "test-features"
        on = off = "checks features"

        def g_penalty(self, ctx):
            d = ctx_d["d"]
            with torch.no_grad():
                want = nn.Sequential(*list(d)[:-2])(ctx.fake)  # D ends in (conv, flatten)
            seen["ok"] = torch.allclose(ctx.features_fake, want)
            logits, feats = ctx.discriminate(ctx.fake)
            seen["disc"] = torch.allclose(logits, ctx.out_fake) and torch.allclose(feats, want)
            return None

        def wrap_discriminator(self, d, recipe):
            ctx_d["d"] = d
            return d

    ctx_d = {}
    register(Feat)
    train(resolve(_cfg(("test-features",), steps=1)), tmp_path / "run")
    assert seen == {"ok": True, "disc": True}


def test_sampling_generator_is_sampled_saved_and_loaded(register, tmp_path):
    """The module sampling_generator returns is what generator.pt holds and load_run rebuilds."""

    class Frozen(Hack):
        name = "test-frozen-copy"
        on = off = "samples the initial G"

        def sampling_generator(self, g, recipe):
            import copy
            return copy.deepcopy(g)

    register(Frozen)
    plan = resolve(_cfg(("test-frozen-copy",), steps=2))
    train(plan, tmp_path / "run")
    from ablate.training.loop import build
    g0, _ = build(plan, (1, 28, 28), torch.device("cpu"))  # the same seeded initial weights
    saved = _weights(tmp_path / "run")
    assert _same(saved, g0.state_dict())  # the copy never trained
    train(resolve(_cfg(steps=2)), tmp_path / "plain")
    assert not _same(saved, _weights(tmp_path / "plain"))
    _, _, g = load_run(tmp_path / "run")
    assert _same(g.state_dict(), saved)


# ----- hooks returning the wrong type ----------------------------------------------
def _bad(hook: str, value):
    def method(self, *args):
        return value(*args) if callable(value) else value
    return type(f"Bad_{hook}", (Hack,), {"name": f"test-bad-{hook.replace('_', '-')}", "on": "x",
                                         "off": "y", hook: method})


@pytest.mark.parametrize("hook,value,message", [
    ("apply", None, "apply() must return a Recipe, got NoneType"),
    ("wrap_generator", None, "wrap_generator() must return a torch.nn.Module, got NoneType"),
    ("wrap_discriminator", lambda d, r: "d", "wrap_discriminator() must return a torch.nn.Module, got str"),
    ("sampling_generator", lambda g, r: nn.Linear(2, 2), "sampling_generator() must return a module with"),
    ("augment", lambda x, c: x[:1], "augment() must return a tensor of D's input shape"),
    ("d_loss", lambda c: torch.tensor(0.5), "d_loss() returned a tensor that does not depend on D's outputs"),
    ("g_loss", lambda c: torch.zeros(()), "g_loss() returned a tensor that does not depend on D's outputs"),
    ("d_loss", lambda c: torch.ones(3), "d_loss() must return a scalar tensor, got a tensor of shape (3,)"),
    ("d_penalty", lambda c: 1.0, "d_penalty() must return a scalar tensor or None, got float"),
    ("g_loss", None, "g_loss() must return a scalar tensor, got NoneType"),
    ("g_penalty", lambda c: "x", "g_penalty() must return a scalar tensor or None, got str"),
    ("after_step", lambda c: 1, "after_step() must return None"),
])
def test_a_hook_returning_the_wrong_type_is_a_config_error(register, tmp_path, capsys, hook, value, message):
    cls = register(_bad(hook, value))
    with pytest.raises(ConfigError, match=re.escape(f"hack {cls.name!r}: {message}")):
        train(resolve(_cfg((cls.name,), steps=1)), tmp_path / "run")
    code = main(["train", "--dataset", "fake", "--steps", "1", "--batch-size", "4", "--ngf", "8",
                 "--ndf", "8", "--hacks", cls.name, "--no-eval", "--out", str(tmp_path / "cli")])
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("value,dtype", [(lambda x, c: x.double(), "torch.float64"),
                                         (lambda x, c: x > 0, "torch.bool")])
def test_augment_of_another_dtype_is_a_config_error_not_a_crash_in_d(register, tmp_path, capsys, value, dtype):
    cls = register(_bad("augment", value))
    with pytest.raises(ConfigError, match=r"hack 'test-bad-augment': augment\(\) must return a tensor of "
                       r"D's input shape \(16, 1, 28, 28\), torch.float32 on cpu, got shape "
                       rf"\(16, 1, 28, 28\), {dtype} on cpu"):
        train(resolve(_cfg((cls.name,), steps=1)), tmp_path / "run")
    code = main(["train", "--dataset", "fake", "--steps", "1", "--batch-size", "4", "--ngf", "8",
                 "--ndf", "8", "--hacks", cls.name, "--no-eval", "--out", str(tmp_path / "cli")])
    assert code == 2 and f"{dtype} on cpu" in capsys.readouterr().err


def test_an_exception_in_a_hacks_init_names_the_hack(register, tmp_path, capsys):
    def __init__(self, params=None):
        super(cls, self).__init__(params)
        raise RuntimeError("init boom")
    cls = register(type("InitRaises", (Hack,), {"name": "test-init-raises", "on": "x", "off": "y",
                                                 "__init__": __init__}))
    with pytest.raises(HookError, match=re.escape("hack 'test-init-raises': __init__() raised "
                                                  "RuntimeError: init boom")):
        resolve(_cfg((cls.name,), steps=1))
    code = main(["train", "--dataset", "fake", "--steps", "1", "--batch-size", "4", "--ngf", "8",
                 "--ndf", "8", "--hacks", cls.name, "--no-eval", "--out", str(tmp_path / "cli")])
    assert code == 2 and "__init__() raised RuntimeError: init boom" in capsys.readouterr().err


def test_apply_writing_an_unknown_or_bad_recipe_field_names_the_hack(register):
    class Extra(Hack):
        name = "test-extra"
        on = off = "x"

        def apply(self, recipe):
            return recipe.replace(extras=(("k", 1),))  # a misspelt field (extra is v1's)

    class BadUpdate(Hack):
        name = "test-bad-update"
        on = off = "x"

        def apply(self, recipe):
            return recipe.replace(d_update="alternating")

    register(Extra, BadUpdate)
    with pytest.raises(ConfigError, match="hack 'test-extra': apply\\(\\): Recipe has no field 'extras'"):
        resolve(_cfg(("test-extra",)))
    with pytest.raises(ConfigError, match="Recipe.d_update must be one of 'separate', 'mixed', got 'alternating'"):
        resolve(_cfg(("test-bad-update",)))


# ----- the typed Recipe --------------------------------------------------------------
@pytest.mark.parametrize("change,message", [
    (dict(d_update="bogus"), "Recipe.d_update must be one of"),
    (dict(latent="laplace"), "Recipe.latent must be one of"),
    (dict(d_steps=0), "Recipe.d_steps must be int (>= 1)"),
    (dict(label_flip_p=1.5), "out of range"),
    (dict(real_target=[0.7, 1.2]), "Recipe.real_target must be tuple"),
    (dict(real_target=(1.2, 0.7)), "needs low <= high"),
    (dict(d_steps=True), "Recipe.d_steps must be int"),
])
def test_recipe_values_are_checked(change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Recipe().replace(**change)


def test_recipe_nested_values_are_checked():
    from ablate.hacks.recipe import Init, Optimizer
    with pytest.raises(ConfigError, match="Optimizer.lr must be float"):
        Optimizer(lr=-1e-3)
    with pytest.raises(ConfigError, match=re.escape("Optimizer.betas[0] must be float")):
        Optimizer(betas=(1.0, 0.999))
    with pytest.raises(ConfigError, match="Init.std"):
        Init("normal", -0.1)
    assert Recipe().extra == () and Recipe().to_dict()["extra"] == []  # as in the committed keys


# ----- interactions ------------------------------------------------------------------
class _LR(Hack):
    name = "test-lr"
    on = off = "sets learning rates"

    @dataclass(frozen=True)
    class Params:
        lr: float = 5e-4

    def apply(self, recipe):
        return recipe.replace(g_optimizer=replace(recipe.g_optimizer, lr=self.params.lr))


class _LROverride(_LR):
    name = "test-lr-override"
    overrides = ("adam-dcgan",)


class _Loss1(Hack):
    name = "test-loss-a"
    on = off = "x"

    def g_loss(self, ctx):
        return -ctx.out_fake.mean()


class _Loss2(_Loss1):
    name = "test-loss-b"


class _Loss3(_Loss1):
    name = "test-loss-c"
    overrides = ("test-loss-a",)

    def g_loss(self, ctx):
        return ctx.out_fake.square().mean()


def test_two_hacks_setting_one_field_is_an_error_naming_both(register):
    register(_LR, _LROverride, type("LR2", (_LR,), {"name": "test-lr-two"}))
    with pytest.raises(ConfigError, match="hacks 'test-lr' and 'test-lr-two' both set the Recipe "
                                          "field\\(s\\) g_optimizer.lr"):
        resolve(_cfg(("test-lr", "test-lr-two")))
    # A plugin over a built-in overrides it without declaring it (as under API v1):
    # recorded as implicit (tests/test_hack_api_v3.py).
    assert resolve(_cfg(("adam-dcgan", "test-lr"))).recipe.g_optimizer.lr == 5e-4
    plan = resolve(_cfg(("adam-dcgan", "test-lr-override")))  # declared: it is folded last
    assert plan.recipe.g_optimizer.lr == 5e-4 and plan.recipe.g_optimizer.betas == (0.5, 0.999)
    from ablate.training.loop import resolved_config
    cfg = resolved_config(plan)
    assert cfg["overrides"] == [{"hack": "test-lr-override", "overrides": "adam-dcgan",
                                 "fields": ["g_optimizer.lr"], "hooks": []}]
    assert cfg["recipe_changes"]["g_optimizer.lr"] == [1e-3, 5e-4]


def test_two_hacks_replacing_one_loss_is_an_error_unless_declared(register, tmp_path):
    register(_Loss1, _Loss2, _Loss3)
    with pytest.raises(ConfigError, match="hacks 'test-loss-a' and 'test-loss-b' both replace g_loss"):
        resolve(_cfg(("test-loss-a", "test-loss-b")))
    plan = resolve(_cfg(("test-loss-a", "test-loss-c")))
    assert select_hooks(plan.hacks).g_loss.name == "test-loss-c"
    train(plan, tmp_path / "run")
    cfg = json.loads((tmp_path / "run/config.json").read_text())
    assert cfg["overrides"] == [{"hack": "test-loss-c", "overrides": "test-loss-a", "fields": [],
                                 "hooks": ["g_loss"]}]


def test_recipe_changes_relative_to_all_off():
    plan = resolve(_cfg(("adam-dcgan", "noisy-labels")))
    changes = recipe_changes(plan)
    assert changes == recipe_changes(plan.hacks)
    assert changes == {"g_optimizer.lr": (1e-3, 2e-4), "g_optimizer.betas": ((0.9, 0.999), (0.5, 0.999)),
                       "d_optimizer.lr": (1e-3, 2e-4), "d_optimizer.betas": ((0.9, 0.999), (0.5, 0.999)),
                       "label_flip_p": (0.0, 0.05)}
    assert recipe_changes(resolve(_cfg())) == {}
    on = recipe_changes(resolve(_cfg(tuple(registry.builtin_names()))))
    assert {k.split(".")[0] for k in on} == {
        "downsample", "upsample", "d_activation", "g_norm", "d_norm", "init", "g_optimizer",
        "d_optimizer", "data_range", "latent", "real_target", "fake_target", "label_flip_p", "d_update"}


# ----- old-API plugins -----------------------------------------------------------------
def test_old_api_wrappers_still_work(register, tmp_path):
    """A plugin written against API v1 (wrappers take the module only) runs unchanged."""
    seen = []

    class Old(Hack):
        name = "test-old-api"
        on = off = "x"

        def wrap_generator(self, g):
            seen.append("g")
            return g

        def wrap_discriminator(self, module):
            seen.append("d")
            return nn.Sequential(module)

    register(Old)
    assert train(resolve(_cfg(("test-old-api",), steps=1)), tmp_path / "run").status == "done"
    assert seen == ["g", "d"]


def test_the_loop_names_no_hack():
    names = registry.hack_names()
    for module in ("training/loop.py", "training/steps.py", "training/models.py"):
        text = (REPO / "ablate" / module).read_text()
        assert not [n for n in names if re.search(rf"['\"]{re.escape(n)}['\"]", text)], module
