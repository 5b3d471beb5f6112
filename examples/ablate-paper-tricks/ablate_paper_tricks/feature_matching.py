"""Feature matching (Salimans et al. 2016), through ``g_loss``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F

from ablate import Bounds, GContext, Hack, register_hack


def feature_matching(f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
    """|E f(x) - E f(G(z))|^2: the squared L2 distance of the batch-mean features."""
    return (f_real.flatten(1).mean(0) - f_fake.flatten(1).mean(0)).square().sum()


@register_hack
class FeatureMatching(Hack):
    name = "feature-matching"
    source = "Salimans et al. 2016, Improved Techniques for Training GANs (arXiv:1606.03498), section 3.1"
    on = "G minimises |E f(x) - E f(G(z))|^2 over D's features (input of D's last layer)"
    off = "non-saturating G loss"
    # Salimans et al. replace G's objective whatever D's loss is: with hinge-loss on, D
    # keeps the hinge loss and G matches features.
    overrides = ("hinge-loss",)

    @dataclass(frozen=True)
    class Params:
        mode: Literal["replace", "add"] = "replace"  # the paper replaces G's loss
        weight: Annotated[float, Bounds(ge=0.0)] = 1.0  # of the feature term in "add" mode

    def g_loss(self, ctx: GContext) -> torch.Tensor:
        if ctx.features_fake is None:
            raise ValueError("feature-matching: D has no convolution to take features from")
        with torch.no_grad():  # real features under the current D; no gradient needed
            _, f_real = ctx.discriminate(ctx.real)
        fm = feature_matching(f_real, ctx.features_fake)
        if self.params.mode == "replace":
            return fm
        ns = F.binary_cross_entropy_with_logits(ctx.out_fake, torch.ones_like(ctx.out_fake))
        return ns + self.params.weight * fm
