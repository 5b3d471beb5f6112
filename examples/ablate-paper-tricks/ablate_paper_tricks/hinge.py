"""Hinge loss (Lim & Ye 2017; Miyato et al. 2018), through ``d_loss`` and ``g_loss``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ablate import DContext, GContext, Hack, register_hack


@register_hack
class HingeLoss(Hack):
    name = "hinge-loss"
    source = "Lim & Ye 2017, Geometric GAN (arXiv:1705.02894); Miyato et al. 2018"
    on = "D: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]; G: -E[D(G(z))]"
    off = "binary cross-entropy (non-saturating for G)"
    # The hinge loss reads no targets: label smoothing and flipped labels do nothing.
    overrides = ("label-smoothing", "noisy-labels")

    def d_loss(self, ctx: DContext) -> torch.Tensor:
        loss = 0.0
        if ctx.out_real is not None:  # separate batches: one side per update
            loss = loss + F.relu(1 - ctx.out_real).mean()
        if ctx.out_fake is not None:
            loss = loss + F.relu(1 + ctx.out_fake).mean()
        return loss

    def g_loss(self, ctx: GContext) -> torch.Tensor:
        return -ctx.out_fake.mean()
