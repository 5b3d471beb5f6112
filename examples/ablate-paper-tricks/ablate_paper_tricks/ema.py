"""Generator EMA (Yazıcı et al. 2019; Karras et al. 2018), through ``sampling_generator``
and ``after_step``."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from ablate import Bounds, Hack, Recipe, StepContext, register_hack


def ema_beta(beta: float, step: int, warmup: bool) -> float:
    """The decay after ``step`` updates: ``beta``, or min(beta, (1+t)/(10+t)) with warm-up
    (TensorFlow's ExponentialMovingAverage num_updates rule), so early weights fade fast."""
    return min(beta, (1 + step) / (10 + step)) if warmup else beta


@torch.no_grad()
def ema_update(ema: nn.Module, g: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * g for parameters; buffers (BN statistics) copied."""
    for pe, p in zip(ema.parameters(), g.parameters(), strict=True):
        pe.lerp_(p, 1 - beta)
    for be, b in zip(ema.buffers(), g.buffers(), strict=True):
        be.copy_(b)


@register_hack
class GeneratorEMA(Hack):
    name = "generator-ema"
    source = ("Yazıcı et al. 2019, The Unusual Effectiveness of Averaging in GAN Training "
              "(arXiv:1806.04498); Karras et al. 2018")
    on = "samples, validation and generator.pt use an EMA of G's weights (beta 0.999, warm-up)"
    off = "the last generator weights"

    @dataclass(frozen=True)
    class Params:
        beta: Annotated[float, Bounds(ge=0.0, lt=1.0)] = 0.999
        warmup: bool = True  # without it, a short run's EMA is mostly the initial weights

    def sampling_generator(self, generator: nn.Module, recipe: Recipe) -> nn.Module:
        ema = copy.deepcopy(generator)  # same state_dict keys: generator.pt loads into G
        ema.requires_grad_(False)
        return ema

    def after_step(self, ctx: StepContext) -> None:
        if ctx.g_sample is not ctx.g:  # the copy made above (unless another hack samples)
            ema_update(ctx.g_sample, ctx.g, ema_beta(self.params.beta, ctx.step, self.params.warmup))
