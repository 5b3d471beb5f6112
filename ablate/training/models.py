"""DCGAN generator and discriminator for 28x28 and 32x32 images, built from a Recipe.

Layout (pytorch/examples DCGAN, scaled to small images; width = ngf / ndf):

* 32x32xC — G: z -> 4x4 (4w) -> 8x8 (2w) -> 16x16 (w) -> 32x32xC;
  D mirrors it: 32x32xC -> 16x16 (w) -> 8x8 (2w) -> 4x4 (4w) -> logit.
* 28x28xC — G: z -> 7x7 (2w) -> 14x14 (w) -> 28x28xC; D: 28 -> 14 (w) -> 7 (2w) -> logit.

The first G layer is a projection of z (a transposed convolution from 1x1, i.e. a dense
layer) in every variant; only the 2x upsampling stages depend on ``recipe.upsample``.
Convolutions followed by BatchNorm carry no bias (BatchNorm's beta replaces it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ablate.config import LATENT_DIM
from ablate.data import unscale
from ablate.hacks.recipe import Activation, Init, Recipe

SAMPLE_SEED = 1234  # one latent batch shared by every run, so sample grids compare
SAMPLE_COUNT = 64  # an 8x8 grid
_BASE = {28: 7, 32: 4}  # image side -> side of the first (projected) feature map


def _layout(side: int) -> tuple[int, int]:
    if side not in _BASE:
        raise ValueError(f"image side must be one of {sorted(_BASE)}, got {side}")
    base = _BASE[side]
    return base, int(math.log2(side // base))


def _activation(act: Activation) -> nn.Module:
    return nn.LeakyReLU(act.slope, inplace=True) if act.kind == "leaky" else nn.ReLU(True)


def _norm(kind: str, channels: int) -> list[nn.Module]:
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "instance":
        return [nn.InstanceNorm2d(channels, affine=True)]
    if kind == "layer":  # over (C, H, W) per sample
        return [nn.GroupNorm(1, channels)]
    return []


def _up(kind: str, cin: int, cout: int, bias: bool) -> list[nn.Module]:
    if kind == "transposed":
        return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)]
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=bias)]


def _down(kind: str, cin: int, cout: int, bias: bool) -> list[nn.Module]:
    if kind == "strided":
        return [nn.Conv2d(cin, cout, 4, 2, 1, bias=bias)]
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=bias), nn.AvgPool2d(2)]


class Generator(nn.Sequential):
    """Maps z of shape (B, latent_dim) to images of shape (B, C, H, W)."""

    def __init__(self, recipe: Recipe, shape: tuple[int, int, int], width: int = 64,
                 latent_dim: int = LATENT_DIM) -> None:
        channels, side, _ = shape
        base, n_up = _layout(side)
        widths = [width * 2 ** i for i in reversed(range(n_up))]  # e.g. [4w, 2w, w]
        bias = recipe.g_norm == "none"
        layers: list[nn.Module] = [nn.Unflatten(1, (latent_dim, 1, 1)),
                                   nn.ConvTranspose2d(latent_dim, widths[0], base, 1, 0, bias=bias),
                                   *_norm(recipe.g_norm, widths[0]), _activation(recipe.g_activation)]
        for cin, cout in zip(widths, widths[1:]):
            layers += [*_up(recipe.upsample, cin, cout, bias), *_norm(recipe.g_norm, cout),
                       _activation(recipe.g_activation)]
        layers += _up(recipe.upsample, widths[-1], channels, True)
        layers.append(nn.Tanh() if recipe.data_range == "symmetric" else nn.Sigmoid())
        super().__init__(*layers)
        self.latent_dim = latent_dim


class Discriminator(nn.Sequential):
    """Maps images (B, C, H, W) to one real/fake logit per image, shape (B,)."""

    def __init__(self, recipe: Recipe, shape: tuple[int, int, int], width: int = 64) -> None:
        channels, side, _ = shape
        base, n_down = _layout(side)
        widths = [width * 2 ** i for i in range(n_down)]  # e.g. [w, 2w, 4w]
        bias = recipe.d_norm == "none"
        layers: list[nn.Module] = [*_down(recipe.downsample, channels, widths[0], True),
                                   _activation(recipe.d_activation)]  # no norm on the input layer
        for cin, cout in zip(widths, widths[1:]):
            layers += [*_down(recipe.downsample, cin, cout, bias), *_norm(recipe.d_norm, cout),
                       _activation(recipe.d_activation)]
        layers += [nn.Conv2d(widths[-1], 1, base, 1, 0), nn.Flatten(0)]
        super().__init__(*layers)


def initialise(module: nn.Module, init: Init) -> None:
    """Apply ``init`` to every conv and BatchNorm layer (``default`` leaves PyTorch's)."""
    if init.kind == "default":
        return
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, init.std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, init.std)
            nn.init.zeros_(m.bias)


def build_models(recipe: Recipe, shape: tuple[int, int, int], ngf: int, ndf: int,
                 latent_dim: int = LATENT_DIM) -> tuple[nn.Module, nn.Module]:
    """Build and initialise G and D for images of ``shape`` = (C, H, W)."""
    g = Generator(recipe, shape, ngf, latent_dim)
    d = Discriminator(recipe, shape, ndf)
    initialise(g, recipe.init)
    initialise(d, recipe.init)
    return g, d


def sample_latent(recipe: Recipe, n: int, latent_dim: int, generator: torch.Generator,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Draw ``n`` latent vectors from the Recipe's prior."""
    if recipe.latent == "gaussian":
        return torch.randn(n, latent_dim, generator=generator, device=device)
    return torch.rand(n, latent_dim, generator=generator, device=device) * 2 - 1


def fixed_latents(recipe: Recipe, latent_dim: int, device, n: int = SAMPLE_COUNT) -> torch.Tensor:
    """The shared latent batch (same seed for every run; drawn from the run's prior)."""
    gen = torch.Generator().manual_seed(SAMPLE_SEED)
    return sample_latent(recipe, n, latent_dim, gen).to(device)


@torch.inference_mode()
def generate(g: nn.Module, z: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """Images in [0, 1] from latents, with G in eval mode (BatchNorm running stats)."""
    was_training = g.training
    g.eval()
    try:
        return unscale(g(z), recipe.data_range)
    finally:
        g.train(was_training)
