"""Four of Soumith Chintala's "ganhacks" (NIPS 2016 talk): hacks 8–11 of the README's table
"The eleven hacks"."""

from __future__ import annotations

from dataclasses import dataclass

from ablate.hacks.hack import Hack
from ablate.hacks.recipe import Recipe

GANHACKS = "Chintala et al. 2016, How to Train a GAN (github.com/soumith/ganhacks)"


class GaussianLatent(Hack):
    name = "gaussian-latent"
    source = GANHACKS
    on = "z ~ N(0, I)"
    off = "z ~ U(-1, 1)"

    def apply(self, recipe: Recipe) -> Recipe:
        return recipe.replace(latent="gaussian")


class SeparateBatches(Hack):
    name = "separate-batches"
    source = GANHACKS
    on = "D updated on a real-only batch, then on a fake-only batch"
    off = "one D update on one mixed batch (real then fake, not shuffled)"

    def apply(self, recipe: Recipe) -> Recipe:
        return recipe.replace(d_update="separate")


class LabelSmoothing(Hack):
    name = "label-smoothing"
    source = GANHACKS + "; Salimans et al. 2016"
    on = "real targets ~ U(0.7, 1.2), fake targets ~ U(0.0, 0.3)"
    off = "hard targets 1 and 0"

    @dataclass(frozen=True)
    class Params:
        real_low: float = 0.7
        real_high: float = 1.2
        fake_low: float = 0.0
        fake_high: float = 0.3
        one_sided: bool = False  # Salimans et al.: smooth only the real targets

        def __post_init__(self) -> None:
            if self.real_low > self.real_high or self.fake_low > self.fake_high:
                raise ValueError("each range needs low <= high")

    def apply(self, recipe: Recipe) -> Recipe:
        p = self.params
        fake = (0.0, 0.0) if p.one_sided else (p.fake_low, p.fake_high)
        return recipe.replace(real_target=(p.real_low, p.real_high), fake_target=fake)


class NoisyLabels(Hack):
    name = "noisy-labels"
    source = GANHACKS
    on = "each D target flipped real<->fake with probability p=0.05"
    off = "no flipped targets"

    @dataclass(frozen=True)
    class Params:
        p: float = 0.05

        def __post_init__(self) -> None:
            if not 0.0 <= self.p <= 1.0:
                raise ValueError(f"p must lie in [0, 1], got {self.p}")

    def apply(self, recipe: Recipe) -> Recipe:
        return recipe.replace(label_flip_p=self.params.p)
