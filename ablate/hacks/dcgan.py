"""The seven DCGAN practices (Radford et al. 2015): hacks 1–7 of the README's table
"The eleven hacks"."""

from __future__ import annotations

from dataclasses import dataclass

from ablate.hacks.hack import Hack
from ablate.hacks.recipe import Activation, Init, Optimizer, Recipe

DCGAN = "Radford et al. 2015, DCGAN (arXiv:1511.06434)"


class StridedDownsample(Hack):
    name = "strided-downsample"
    source = DCGAN
    on = "D downsamples with 4x4 stride-2 convolutions"
    off = "D uses 3x3 stride-1 convolutions followed by 2x2 average pooling"

    def apply(self, recipe: Recipe) -> Recipe:
        return recipe.replace(downsample="strided")


class StridedUpsample(Hack):
    name = "strided-upsample"
    source = DCGAN
    on = "G upsamples with 4x4 stride-2 transposed convolutions"
    off = "G uses nearest-neighbour 2x upsampling followed by a 3x3 convolution"

    def apply(self, recipe: Recipe) -> Recipe:
        return recipe.replace(upsample="transposed")


class LeakyReLU(Hack):
    name = "leaky-relu"
    source = DCGAN
    on = "LeakyReLU(0.2) in D (optionally also in G)"
    off = "ReLU in D and G"

    @dataclass(frozen=True)
    class Params:
        slope: float = 0.2  # DCGAN's slope
        in_generator: bool = False  # DCGAN keeps ReLU in G; ganhacks suggests both

    def apply(self, recipe: Recipe) -> Recipe:
        act = Activation("leaky", self.params.slope)
        recipe = recipe.replace(d_activation=act)
        return recipe.replace(g_activation=act) if self.params.in_generator else recipe


class BatchNorm(Hack):
    name = "batch-norm"
    source = DCGAN
    on = "BatchNorm in G (not the output layer) and D (not the first or last layer)"
    off = "no normalization"

    def apply(self, recipe: Recipe) -> Recipe:
        return recipe.replace(g_norm="batch", d_norm="batch")


class GaussianInit(Hack):
    name = "gaussian-init"
    source = DCGAN
    on = "conv weights ~ N(0, 0.02); BatchNorm gamma ~ N(1, 0.02), beta = 0"
    off = "PyTorch's default (Kaiming-uniform) initialisation"

    @dataclass(frozen=True)
    class Params:
        std: float = 0.02

    def apply(self, recipe: Recipe) -> Recipe:
        return recipe.replace(init=Init("normal", self.params.std))


class AdamDCGAN(Hack):
    name = "adam-dcgan"
    source = DCGAN
    on = "Adam lr=2e-4, betas=(0.5, 0.999) for G and D"
    off = "Adam with PyTorch defaults (lr=1e-3, betas=(0.9, 0.999))"

    @dataclass(frozen=True)
    class Params:
        lr: float = 2e-4
        beta1: float = 0.5  # DCGAN: 0.9 oscillated and was unstable
        beta2: float = 0.999

    def apply(self, recipe: Recipe) -> Recipe:
        opt = Optimizer(lr=self.params.lr, betas=(self.params.beta1, self.params.beta2))
        return recipe.replace(g_optimizer=opt, d_optimizer=opt)


class TanhRange(Hack):
    name = "tanh-range"
    source = DCGAN
    on = "data scaled to [-1, 1] and G ends in tanh"
    off = "data in [0, 1] and G ends in sigmoid"

    def apply(self, recipe: Recipe) -> Recipe:
        return recipe.replace(data_range="symmetric")
