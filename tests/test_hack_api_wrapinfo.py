"""Wrappers see the run's batch size and image shape (issue 19): an ``info`` parameter
receives an :class:`ablate.WrapInfo`; older wrapper signatures are called as before."""

from __future__ import annotations

import pytest

from ablate import Hack, WrapInfo, registry
from ablate.config import TrainConfig
from ablate.training.resolve import resolve
from ablate.training.loop import train

SEEN: dict[str, object] = {}


class _WithInfo(Hack):
    name = "test-wrap-info"
    on = off = "test"

    def wrap_generator(self, g, recipe, info):
        SEEN["g"] = (recipe.d_update, info)
        return g

    def wrap_discriminator(self, d, info=None):  # info without the recipe
        SEEN["d"] = info
        return d


class _Old(Hack):
    name = "test-wrap-old"
    on = off = "test"

    def wrap_generator(self, g):
        SEEN["old-g"] = True
        return g

    def wrap_discriminator(self, d, recipe=None):
        SEEN["old-d"] = recipe
        return d

    def sampling_generator(self, g, recipe, *, info):
        SEEN["sample"] = info
        return g


@pytest.fixture
def registered():
    for cls in (_WithInfo, _Old):
        registry.register_hack(cls)
    yield
    for cls in (_WithInfo, _Old):
        registry.unregister_hack(cls.name)


@pytest.mark.parametrize("separate", [False, True])
def test_wrappers_receive_batch_size_and_image_shape(registered, tmp_path, separate):
    SEEN.clear()
    hacks = ("test-wrap-info", "test-wrap-old") + (("separate-batches",) if separate else ())
    plan = resolve(TrainConfig(dataset="fake", steps=1, batch_size=6, seed=0, ngf=8, ndf=8,
                               latent_dim=12, device="cpu", threads=1, log_every=1, hacks=hacks))
    train(plan, tmp_path / "run")
    d_update, info = SEEN["g"]
    assert isinstance(info, WrapInfo) and SEEN["d"] == info and SEEN["sample"] == info
    assert d_update == ("separate" if separate else "mixed")
    assert (info.batch_size, info.latent_dim, info.ngf, info.ndf, info.device) == (6, 12, 8, 8, "cpu")
    assert info.image_shape == (1, 28, 28)  # the fake dataset's images
    assert info.d_batch == (6 if separate else 12)
    assert SEEN["old-g"] is True and SEEN["old-d"] is plan.recipe
    assert _WithInfo.takes_info("wrap_generator") and not _Old.takes_info("wrap_generator")
    assert not _WithInfo.takes_recipe("wrap_discriminator")  # (d, info=None): no recipe
