"""R1 gradient penalty on real data (Mescheder et al. 2018), through ``d_penalty``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from ablate import Bounds, DContext, Hack, register_hack


def r1(discriminate, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """gamma/2 * mean over the batch of |grad_x D(x)|^2, differentiable in D's weights."""
    x = real.detach().requires_grad_(True)
    out, _ = discriminate(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return gamma / 2 * grad.square().flatten(1).sum(1).mean()


@register_hack
class R1Penalty(Hack):
    name = "r1-penalty"
    source = "Mescheder et al. 2018, Which Training Methods for GANs do actually Converge? (arXiv:1801.04406)"
    on = "D's loss adds gamma/2 * E|grad_x D(x)|^2 on real data (gamma = 10)"
    off = "no gradient penalty"

    @dataclass(frozen=True)
    class Params:
        gamma: Annotated[float, Bounds(ge=0.0)] = 10.0  # Mescheder et al.'s default

    def d_penalty(self, ctx: DContext) -> torch.Tensor | None:
        if ctx.real is None:  # the fake-only update of separate batches: no real data
            return None
        # D's own forward on the real batch (as D saw it, augmented), so the gradient is
        # taken w.r.t. exactly those inputs.
        return r1(ctx.discriminate, ctx.real, self.params.gamma)
