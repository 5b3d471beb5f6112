"""WGAN weight clipping (Arjovsky et al. 2017), through ``after_d_update``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from ablate import Bounds, DContext, Hack, register_hack


@register_hack
class WeightClipping(Hack):
    name = "weight-clipping"
    source = "Arjovsky et al. 2017, Wasserstein GAN (arXiv:1701.07875), Algorithm 1"
    on = "every D parameter clipped to [-c, c] after every D update (c = 0.01)"
    off = "unclipped D weights"

    @dataclass(frozen=True)
    class Params:
        clip: Annotated[float, Bounds(gt=0.0)] = 0.01  # Arjovsky et al.'s c

    def after_d_update(self, ctx: DContext) -> None:
        c = self.params.clip
        with torch.no_grad():
            for p in ctx.d.parameters():
                p.clamp_(-c, c)
