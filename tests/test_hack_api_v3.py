"""Hack API v3 (issue 19): per-run state and run information in every context, a hook
after each D update, side-aware augmentation, ``ctx.log``, D saved beside G, and the
fixes: first-API plugins overriding built-ins, hacks setting a field back to all-off,
and exceptions inside hooks naming the hack and the hook."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from ablate import Hack, recipe_changes, registry
from ablate.cli import main
from ablate.config import TrainConfig
from ablate.errors import ConfigError
from ablate.resolve import resolve
from ablate.train import resolved_config


def _cfg(hacks=(), **kw) -> TrainConfig:
    base = dict(dataset="fake", steps=3, batch_size=8, seed=1, ngf=8, ndf=8, latent_dim=16,
                device="cpu", threads=1, log_every=1)
    return TrainConfig(**{**base, "hacks": tuple(hacks), **kw})


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture
def register():
    """Register test-only hack classes for one test; they never leak into the registry."""
    names = []

    def _register(*classes):
        for cls in classes:
            registry.register_hack(cls)
            names.append(cls.name)
        return classes[0] if len(classes) == 1 else classes

    yield _register
    for n in names:
        registry.unregister_hack(n)


def _train_cli(tmp_path, hacks, out="cli", extra=()) -> int:
    return main(["train", "--dataset", "fake", "--steps", "1", "--batch-size", "4", "--ngf", "8",
                 "--ndf", "8", "--hacks", hacks, "--no-eval", "--out", str(tmp_path / out), *extra])


# ----- item 6: a first-API plugin that sets fields a built-in sets ------------------
class _OldTTUR(Hack):
    """Written against the first API: sets both learning rates, declares no override."""

    name = "test-old-ttur"
    on = off = "TTUR, API v1"

    def apply(self, recipe):
        return recipe.replace(g_optimizer=replace(recipe.g_optimizer, lr=1e-4),
                              d_optimizer=replace(recipe.d_optimizer, lr=4e-4))


def test_a_first_api_plugin_overrides_a_builtin_as_before(register, tmp_path, capsys):
    register(_OldTTUR)
    plan = resolve(_cfg((*registry.builtin_names(), "test-old-ttur")))
    assert (plan.recipe.g_optimizer.lr, plan.recipe.d_optimizer.lr) == (1e-4, 4e-4)
    assert plan.recipe.g_optimizer.betas == (0.5, 0.999)  # adam-dcgan's betas stay
    (override,) = resolved_config(plan)["overrides"]
    assert override["hack"] == "test-old-ttur" and override["overrides"] == "adam-dcgan"
    assert override["fields"] == ["d_optimizer.lr", "g_optimizer.lr"] and override["implicit"]
    assert "plugin hack 'test-old-ttur' overrides built-in 'adam-dcgan'" in override["note"]
    assert _train_cli(tmp_path, "builtin,test-old-ttur") == 0
    err = capsys.readouterr().err
    assert "note: plugin hack 'test-old-ttur' overrides built-in 'adam-dcgan' on " \
           "d_optimizer.lr, g_optimizer.lr" in err
    cfg = json.loads((tmp_path / "cli/config.json").read_text())
    assert cfg["overrides"][0]["fields"] == ["d_optimizer.lr", "g_optimizer.lr"]
    # Two plugins setting one field are still an error naming both.
    register(type("Twin", (_OldTTUR,), {"name": "test-old-ttur-twin"}))
    with pytest.raises(ConfigError, match="hacks 'test-old-ttur' and 'test-old-ttur-twin' both set"):
        resolve(_cfg(("test-old-ttur", "test-old-ttur-twin")))


# ----- item 7: a hack setting a field back to its all-off value --------------------
class _ForceMixed(Hack):
    name = "test-force-mixed"
    on = off = "real and fake in one batch"

    def apply(self, recipe):
        return recipe.replace(d_update="mixed")  # the all-off value


def test_setting_a_field_back_to_all_off_is_seen(register, tmp_path):
    register(_ForceMixed, type("Mixed2", (_ForceMixed,), {"name": "test-force-mixed-2"}))
    plan = resolve(_cfg((*registry.builtin_names(), "test-force-mixed")))
    assert plan.recipe.d_update == "mixed"
    assert recipe_changes(plan)["d_update"] == ("mixed", "mixed")
    assert recipe_changes(plan.hacks)["d_update"] == ("mixed", "mixed")
    cfg = resolved_config(plan)
    (override,) = cfg["overrides"]
    assert (override["hack"], override["overrides"], override["fields"]) == \
        ("test-force-mixed", "separate-batches", ["d_update"])
    assert "'separate-batches' changes nothing else, so it has no effect" in override["note"]
    assert cfg["recipe_changes"]["d_update"] == ["mixed", "mixed"]
    # Between two plugins (no built-in involved) it is an error, as any overlap is.
    register(type("Sep", (Hack,), {"name": "test-force-separate", "on": "x", "off": "y",
                                   "apply": lambda self, r: r.replace(d_update="separate")}))
    with pytest.raises(ConfigError, match="hacks 'test-force-mixed' and 'test-force-separate' "
                                          "both set the Recipe field\\(s\\) d_update"):
        resolve(_cfg(("test-force-mixed", "test-force-separate")))
    # Alone, a hack that sets the all-off value changes nothing and overrides nobody.
    alone = resolve(_cfg(("test-force-mixed",)))
    assert resolved_config(alone)["overrides"] == []
    assert recipe_changes(alone) == {}
    assert recipe_changes(resolve(_cfg(tuple(registry.builtin_names())))) == recipe_changes(
        registry.instantiate(registry.builtin_names()))
