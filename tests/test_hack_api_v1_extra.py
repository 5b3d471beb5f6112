"""The first plugin API's free-form ``Recipe.extra`` (removed in v2, back so that v1
plugins work unchanged): settings a plugin's wrappers read, part of the run identity,
each key a field of its own for the overlap rules; the all-off Recipe, and so every
committed key, unchanged."""

from __future__ import annotations

import json

import pytest
from torch import nn

from ablate import Hack, Recipe
from ablate.config import TrainConfig
from ablate.errors import ConfigError
from ablate.fused.grouping import fuse_blocker
from ablate.grid.keys import identity, run_key
from ablate.hacks.interactions import recipe_changes
from ablate.training.loop import train
from ablate.training.resolve import resolve

SEEN: list = []


class _Tagged(Hack):  # written as a v1 plugin: apply and a one-argument wrapper
    name = "test-v1-tagged"
    on = off = "test"

    def apply(self, r):
        return r.replace(extra=r.extra + (("noise", 0.05),))

    def wrap_generator(self, g):
        return g


class _Scaled(Hack):  # a v2 wrapper reading the setting through the Recipe
    name = "test-v1-scaled"
    on = off = "test"

    def apply(self, r):
        return r.replace(extra=r.extra + (("scale", 2),))

    def wrap_discriminator(self, d, recipe):
        SEEN.append((recipe.extra_value("scale"), recipe.extra_value("noise")))
        return d


class _Clash(Hack):
    name = "test-v1-clash"
    on = off = "test"

    def apply(self, r):
        return r.replace(extra=r.extra + (("noise", 0.5),))


@pytest.fixture
def v1(register):
    register(_Tagged, _Scaled, _Clash)


def _cfg(*hacks):
    return TrainConfig(dataset="fake", steps=2, batch_size=4, seed=0, ngf=8, ndf=8, latent_dim=16,
                       device="cpu", threads=1, log_every=1, hacks=tuple(hacks))


def test_a_v1_plugin_setting_extra_trains_and_its_setting_is_in_the_key(v1, tmp_path):
    SEEN.clear()
    plain, tagged = resolve(_cfg()), resolve(_cfg("test-v1-tagged", "test-v1-scaled"))
    assert tagged.recipe.extra == (("scale", 2), ("noise", 0.05))  # canonical order: by name
    assert run_key(identity(plain, {})) != run_key(identity(tagged, {}))
    assert recipe_changes(tagged) == {"extra.noise": (None, 0.05), "extra.scale": (None, 2)}
    assert fuse_blocker(tagged) is not None  # wrappers and extra: the lone loop
    train(tagged, tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["recipe"]["extra"] == [["scale", 2], ["noise", 0.05]]
    assert SEEN == [(2, 0.05)]


def test_two_plugins_setting_one_extra_key_are_an_error_naming_both(v1):
    with pytest.raises(ConfigError, match="test-v1-clash.*test-v1-tagged|test-v1-tagged.*test-v1-clash"):
        resolve(_cfg("test-v1-tagged", "test-v1-clash"))


def test_all_off_extra_is_empty_as_in_every_committed_key_and_bad_values_are_refused():
    assert Recipe().to_dict()["extra"] == [] and list(Recipe().to_dict())[-1] == "extra"
    assert Recipe(extra=(("k", 1), ("j", 0), ("k", 2))).extra == (("k", 2), ("j", 0))  # set again
    with pytest.raises(ConfigError, match=r"Recipe.extra"):
        Recipe(extra=(("k", [1, 2]),))  # a list is neither hashable nor a key's plain value
    with pytest.raises(ConfigError, match=r"Recipe.extra"):
        Recipe(extra=(("k", nn.Identity()),))
    assert Recipe(extra=(("k", (1, "a")),)).extra_value("k") == (1, "a")
