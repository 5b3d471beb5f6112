"""Every hack: a one-step smoke test, and checks that ON and OFF really differ."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from ablate.hacks import registry
from ablate.data import scale
from ablate.training.models import Discriminator, Generator, build_models, sample_latent
from ablate.hacks.recipe import Recipe
from ablate.config import TrainConfig
from ablate.training.resolve import resolve
from ablate.training.loop import D_UPDATES, _targets, build, train

ALL = registry.hack_names()
SHAPE = (1, 28, 28)


def recipe_with(*names: str, **params) -> Recipe:
    return registry.build_recipe(registry.instantiate(names, params))


def test_builtins_are_the_eleven_of_the_design():
    assert registry.builtin_names() == [
        "strided-downsample", "strided-upsample", "leaky-relu", "batch-norm", "gaussian-init",
        "adam-dcgan", "tanh-range", "gaussian-latent", "separate-batches", "label-smoothing",
        "noisy-labels"]
    for cls in registry.list_hacks():
        meta = cls.describe()
        assert meta["source"] and meta["on"] and meta["off"], cls.name


@pytest.mark.parametrize("name", ALL)
def test_one_training_step(name, tmp_path):
    """One step of each hack alone on fake data, batch 2: finite losses, expected shapes."""
    config = TrainConfig(dataset="fake", steps=1, batch_size=2, seed=0, hacks=(name,),
                         ngf=8, ndf=8, device="cpu", log_every=1)
    result = train(resolve(config), tmp_path / "run")
    assert result.status == "done" and result.steps == 1
    (record,) = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    for key in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert math.isfinite(record[key]), (name, key)
    cfg = json.loads((tmp_path / "run/config.json").read_text())
    assert [h["name"] for h in cfg["hacks"]] == [name]
    g, d = build(resolve(config), SHAPE, torch.device("cpu"))
    x = g(torch.zeros(2, 100))
    assert x.shape == (2, *SHAPE)
    assert d(x).shape == (2,)


def test_all_on_and_all_off_recipes():
    on, off = recipe_with(*registry.builtin_names()), Recipe()
    assert on != off
    for field in ("downsample", "upsample", "d_activation", "g_norm", "d_norm", "init",
                  "g_optimizer", "data_range", "latent", "real_target", "label_flip_p", "d_update"):
        assert getattr(on, field) != getattr(off, field), field


def _modules(module: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


def test_leaky_relu_in_d_only_by_default():
    d = Discriminator(recipe_with("leaky-relu"), SHAPE, 8)
    g = Generator(recipe_with("leaky-relu"), SHAPE, 8)
    assert {m.negative_slope for m in _modules(d, nn.LeakyReLU)} == {0.2}
    assert not _modules(d, nn.ReLU) and not _modules(g, nn.LeakyReLU)
    g_both = Generator(recipe_with("leaky-relu", **{"leaky-relu": {"in_generator": True}}), SHAPE, 8)
    assert _modules(g_both, nn.LeakyReLU) and not _modules(g_both, nn.ReLU)
    assert not _modules(Discriminator(Recipe(), SHAPE, 8), nn.LeakyReLU)


def test_tanh_range_off_is_sigmoid_and_unit_data():
    assert isinstance(Generator(Recipe(), SHAPE, 8)[-1], nn.Sigmoid)
    assert isinstance(Generator(recipe_with("tanh-range"), SHAPE, 8)[-1], nn.Tanh)
    images = torch.tensor([0, 128, 255], dtype=torch.uint8)
    assert scale(images, Recipe().data_range).tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    assert scale(images, recipe_with("tanh-range").data_range).tolist() == pytest.approx(
        [-1.0, 2 * 128 / 255 - 1, 1.0], abs=1e-6)


def test_gaussian_latent_off_is_uniform_in_unit_box():
    gen = torch.Generator().manual_seed(0)
    z_off = sample_latent(Recipe(), 2000, 100, gen)
    z_on = sample_latent(recipe_with("gaussian-latent"), 2000, 100, gen)
    assert z_off.min() >= -1 and z_off.max() <= 1
    assert z_off.std().item() == pytest.approx(1 / math.sqrt(3), rel=0.02)  # U(-1,1)
    assert z_on.abs().max() > 3 and z_on.std().item() == pytest.approx(1.0, rel=0.02)


def test_downsample_and_upsample_layers():
    d_off, d_on = Discriminator(Recipe(), SHAPE, 8), Discriminator(recipe_with("strided-downsample"), SHAPE, 8)
    assert len(_modules(d_off, nn.AvgPool2d)) == 2
    assert all(c.stride == (1, 1) and c.kernel_size == (3, 3) for c in _modules(d_off, nn.Conv2d)[:-1])
    assert not _modules(d_on, nn.AvgPool2d)
    assert all(c.stride == (2, 2) and c.kernel_size == (4, 4) for c in _modules(d_on, nn.Conv2d)[:-1])
    g_off, g_on = Generator(Recipe(), SHAPE, 8), Generator(recipe_with("strided-upsample"), SHAPE, 8)
    assert len(_modules(g_off, nn.Upsample)) == 2 and len(_modules(g_off, nn.ConvTranspose2d)) == 1
    assert not _modules(g_on, nn.Upsample) and len(_modules(g_on, nn.ConvTranspose2d)) == 3


def test_batch_norm_placement():
    r = recipe_with("batch-norm")
    g, d = Generator(r, SHAPE, 8), Discriminator(r, SHAPE, 8)
    # G: after every layer but the output (2 of 3); D: not first, not last (1 of 3 convs).
    assert len(_modules(g, nn.BatchNorm2d)) == 2 and len(_modules(d, nn.BatchNorm2d)) == 1
    first_conv = _modules(d, nn.Conv2d)[0]
    assert d[1] is not None and not isinstance(d[1], nn.BatchNorm2d) and first_conv is d[0]
    assert not _modules(Generator(Recipe(), SHAPE, 8), nn.BatchNorm2d)


def test_gaussian_init_std():
    g, d = build_models(recipe_with("gaussian-init", "batch-norm"), (3, 32, 32), 64, 64)
    for conv in _modules(g, nn.ConvTranspose2d) + _modules(d, nn.Conv2d):
        if conv.weight.numel() > 5000:
            assert conv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    for bn in _modules(g, nn.BatchNorm2d):
        assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.01) and bn.bias.abs().max() == 0
    g_def, _ = build_models(recipe_with("batch-norm"), (3, 32, 32), 64, 64)
    big = [c for c in _modules(g_def, nn.ConvTranspose2d) if c.weight.numel() > 5000][0]
    assert abs(big.weight.std().item() - 0.02) > 0.005  # PyTorch's default is not N(0, 0.02)


def test_adam_settings():
    on, off = recipe_with("adam-dcgan"), Recipe()
    assert (on.g_optimizer.lr, on.g_optimizer.betas) == (2e-4, (0.5, 0.999)) == (
        on.d_optimizer.lr, on.d_optimizer.betas)
    assert (off.g_optimizer.lr, off.g_optimizer.betas) == (1e-3, (0.9, 0.999))


def _d_updates(recipe: Recipe) -> int:
    d = Discriminator(recipe, SHAPE, 8)
    opt = torch.optim.Adam(d.parameters())
    real, fake = torch.rand(4, *SHAPE), torch.rand(4, *SHAPE)
    t = torch.ones(4), torch.zeros(4)
    D_UPDATES[recipe.d_update](d, opt, real, fake, *t)
    return int(opt.state[next(d.parameters())]["step"])


def test_separate_batches_makes_two_d_updates():
    assert _d_updates(Recipe()) == 1
    assert _d_updates(recipe_with("separate-batches")) == 2


def test_label_smoothing_ranges():
    gen = torch.Generator().manual_seed(0)
    real, fake = _targets(recipe_with("label-smoothing"), 10000, gen, "cpu")
    assert real.min() >= 0.7 and real.max() <= 1.2 and real.std() > 0.1
    assert fake.min() >= 0.0 and fake.max() <= 0.3 and fake.std() > 0.05
    real, fake = _targets(recipe_with("label-smoothing", **{"label-smoothing": {"one_sided": True}}),
                          1000, gen, "cpu")
    assert real.min() >= 0.7 and (fake == 0).all()
    real, fake = _targets(Recipe(), 1000, gen, "cpu")
    assert (real == 1).all() and (fake == 0).all()


@pytest.mark.parametrize("p", [0.05, 0.2])
def test_noisy_labels_flip_fraction(p):
    gen = torch.Generator().manual_seed(0)
    n = 40000
    real, fake = _targets(recipe_with("noisy-labels", **{"noisy-labels": {"p": p}}), n, gen, "cpu")
    sd = math.sqrt(p * (1 - p) / n)
    assert (real == 0).float().mean().item() == pytest.approx(p, abs=5 * sd)
    assert (fake == 1).float().mean().item() == pytest.approx(p, abs=5 * sd)
    real, fake = _targets(recipe_with("noisy-labels", "label-smoothing"), n, gen, "cpu")
    flipped = real <= 0.3  # a flipped real target takes a draw from the fake range
    assert flipped.float().mean().item() == pytest.approx(0.05, abs=5 * math.sqrt(0.05 * 0.95 / n))
    assert (real[flipped] >= 0).all() and (real[~flipped] >= 0.7).all()


def test_32x32_rgb_models():
    r = recipe_with(*registry.builtin_names())
    g, d = build_models(r, (3, 32, 32), 16, 16)
    x = g(torch.randn(5, 100))
    assert x.shape == (5, 3, 32, 32) and d(x).shape == (5,)
    g, d = build_models(Recipe(), (3, 32, 32), 16, 16)
    assert g(torch.rand(5, 100) * 2 - 1).shape == (5, 3, 32, 32)
