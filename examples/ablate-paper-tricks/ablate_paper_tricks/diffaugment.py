"""DiffAugment: translation and cutout (Zhao et al. 2020), through ``augment``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F

from ablate import Bounds, Hack, StepContext, register_hack

Ratio = Annotated[float, Bounds(ge=0.0, le=1.0)]


def translate(x: torch.Tensor, ratio: float, rng: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ratio * size pixels in x and y, zero-filled (as in the
    reference implementation: pad by one, gather)."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), generator=rng, device=rng.device).to(x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=rng, device=rng.device).to(x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2)  # channels_last layout


def cutout(x: torch.Tensor, ratio: float, rng: torch.Generator) -> torch.Tensor:
    """Zero one square of side ratio * size at a random place in each image (clipped at
    the border), by a differentiable mask."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=rng, device=rng.device).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=rng, device=rng.device).to(x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")
    gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gy, gx] = 0
    return x * mask.unsqueeze(1)


@register_hack
class DiffAugment(Hack):
    name = "diffaugment"
    source = "Zhao et al. 2020, Differentiable Augmentation for Data-Efficient GAN Training (arXiv:2006.10738)"
    on = "random translation (1/8) and cutout (1/2) of every D input, real and fake alike"
    off = "unaugmented D inputs"

    @dataclass(frozen=True)
    class Params:
        policy: Literal["translation,cutout", "translation", "cutout"] = "translation,cutout"
        translation_ratio: Ratio = 0.125  # the reference implementation's ratios
        cutout_ratio: Ratio = 0.5

    def augment(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        if "translation" in self.params.policy:
            x = translate(x, self.params.translation_ratio, ctx.rng)
        if "cutout" in self.params.policy:
            x = cutout(x, self.params.cutout_ratio, ctx.rng)
        return x
