"""TTUR: two time-scale update rule (Heusel et al. 2017), through ``apply`` only."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

from ablate import Bounds, Hack, Recipe, register_hack

LearningRate = Annotated[float, Bounds(gt=0.0)]


@register_hack
class TTUR(Hack):
    name = "ttur"
    source = "Heusel et al. 2017, GANs Trained by a Two Time-Scale Update Rule (arXiv:1706.08500)"
    on = "Adam lr 1e-4 for G and 4e-4 for D (D learns 4x faster)"
    off = "one learning rate for G and D"
    # Both set the learning rates; with adam-dcgan on, TTUR's rates win and its betas stay.
    overrides = ("adam-dcgan",)

    @dataclass(frozen=True)
    class Params:
        g_lr: LearningRate = 1e-4  # the rates of Zhang et al. 2019 (SAGAN), a common TTUR choice
        d_lr: LearningRate = 4e-4

    def apply(self, recipe: Recipe) -> Recipe:
        return recipe.replace(g_optimizer=replace(recipe.g_optimizer, lr=self.params.g_lr),
                              d_optimizer=replace(recipe.d_optimizer, lr=self.params.d_lr))
