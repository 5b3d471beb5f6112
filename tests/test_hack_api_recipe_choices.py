"""Recipe support for what wrappers did silently (issue 19): instance and layer norm in
the Recipe's norm fields, RMSProp in the Optimizer spec, and ``Hack.describe_wrap()``
recording what a wrapper changed into config.json; the all-off Recipe (and so every
committed key) is unchanged."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ablate import Hack, Optimizer, Recipe, registry
from ablate.config import TrainConfig
from ablate.errors import ConfigError
from ablate.fused.grouping import fuse_blocker
from ablate.training.resolve import resolve
from ablate.training.loop import train

OPTS: list = []


class _WGANish(Hack):
    name = "test-wgan-recipe"
    on = off = "test"

    def apply(self, recipe):
        return recipe.replace(g_norm="layer", d_norm="instance",
                              d_optimizer=Optimizer(name="rmsprop", lr=5e-5),
                              g_optimizer=Optimizer(name="rmsprop", lr=5e-5))

    def wrap_discriminator(self, d, recipe=None):
        self._wrapped = "no sigmoid; critic"
        return d

    def describe_wrap(self):
        return {"d": self._wrapped}

    def after_step(self, ctx):
        OPTS.append((type(ctx.opt_g), type(ctx.opt_d), ctx.g, ctx.d))


@pytest.fixture
def registered():
    registry.register_hack(_WGANish)
    yield
    registry.unregister_hack(_WGANish.name)


def test_norms_and_rmsprop_from_the_recipe_and_describe_wrap(registered, tmp_path):
    OPTS.clear()
    plan = resolve(TrainConfig(dataset="fake", steps=2, batch_size=4, seed=0, ngf=8, ndf=8,
                               latent_dim=16, device="cpu", threads=1, log_every=1,
                               hacks=("test-wgan-recipe",)))
    assert fuse_blocker(plan) is not None  # the fused trainer is Adam/batch-norm only
    train(plan, tmp_path / "run")
    opt_g, opt_d, g, d = OPTS[-1]
    assert opt_g is torch.optim.RMSprop and opt_d is torch.optim.RMSprop
    assert any(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in g.modules())
    assert any(isinstance(m, nn.InstanceNorm2d) and m.affine for m in d.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in (*g.modules(), *d.modules()))
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["wrapped"] == {"test-wgan-recipe": {"d": "no sigmoid; critic"}}
    assert cfg["recipe"]["d_norm"] == "instance" and cfg["recipe"]["g_optimizer"]["name"] == "rmsprop"


def test_all_off_recipe_is_unchanged_and_bad_values_are_refused(tmp_path):
    opt = Recipe().to_dict()["g_optimizer"]  # no new fields: committed keys unchanged
    assert set(opt) == {"name", "lr", "betas", "weight_decay"} and opt["name"] == "adam"
    assert (Recipe().g_norm, Recipe().d_norm) == ("none", "none")
    with pytest.raises(ConfigError):
        Recipe().replace(d_norm="group")
    with pytest.raises(ConfigError):
        Optimizer(name="sgd")
    # without a describe_wrap, config.json has no "wrapped" key (as before)
    plan = resolve(TrainConfig(dataset="fake", steps=1, batch_size=4, seed=0, ngf=8, ndf=8,
                               latent_dim=16, device="cpu", threads=1, log_every=1,
                               hacks=("batch-norm",)))
    train(plan, tmp_path / "plain")
    assert "wrapped" not in json.loads((tmp_path / "plain" / "config.json").read_text())


@pytest.mark.parametrize("value,word", [(torch.tensor(1.0), "Tensor"), (object(), "object"),
                                        (float("nan"), "Out of range float")])
def test_describe_wrap_must_be_json_ready_before_anything_is_written(register, tmp_path, value, word):
    """A tensor or an object in describe_wrap() was recorded in config.json as its repr."""

    class Unready(Hack):
        name = "test-unready-describe"
        on = off = "test"

        def describe_wrap(self):
            return {"d": value}

    register(Unready)
    plan = resolve(TrainConfig(dataset="fake", steps=1, batch_size=4, seed=0, ngf=8, ndf=8,
                               latent_dim=16, device="cpu", threads=1, log_every=1,
                               hacks=("test-unready-describe",)))
    with pytest.raises(ConfigError, match=f"describe_wrap\\(\\) must return a JSON-ready dict.*{word}"):
        train(plan, tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()
