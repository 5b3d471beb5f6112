"""Least-squares GAN (Mao et al. 2017), through ``d_loss`` and ``g_loss``.

D: ``0.5 E[(D(x) - b)^2] + 0.5 E[(D(G(z)) - a)^2]``; G: ``0.5 E[(D(G(z)) - c)^2]``
(equation 2), with D's raw output (the logit the loop hands over; no sigmoid) and the
codes a = 0, b = 1, c = 1 (section 3.2.2; a = -1, b = 1, c = 0 is the paper's other
choice). With separate batches each update holds one side and its term alone.

Targets: unlike the hinge loss (which reads none, and so overrides ``label-smoothing``
and ``noisy-labels``), the least-squares loss has targets, and it takes the ones the
loop hands over (``ctx.t_real``, ``ctx.t_fake``: per sample, in binary cross-entropy's
units, 1 real and 0 fake unless label smoothing or flipped labels changed them). Each
target t becomes the code ``a + (b - a) * t``: with the all-off targets that is exactly
b for real and a for fake (Mao et al.'s loss), smoothed targets U(0.7, 1.2) become codes
between a + 0.7 (b - a) and a + 1.2 (b - a), and a flipped target takes the other
side's code — label smoothing and noisy labels act on it as they do on the
cross-entropy. A context without targets (built by hand) uses b and a. G's code c is
not a target of the loop's and is used as it is.

Declared overrides: ``hinge-loss`` and ``feature-matching`` (the other replacements of
D's and G's losses; with LSGAN enabled its losses are the ones used), so combinations,
``all`` included, plan; ``wgan-gp`` overrides this one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ablate import DContext, GContext, Hack, register_hack


@register_hack
class LSGAN(Hack):
    name = "lsgan"
    source = "Mao et al. 2017, Least Squares Generative Adversarial Networks (arXiv:1611.04076)"
    on = ("D: 0.5 E[(D(x) - b)^2] + 0.5 E[(D(G(z)) - a)^2], G: 0.5 E[(D(G(z)) - c)^2] "
          "(a=0, b=1, c=1; D targets map to a + (b - a) t)")
    off = "binary cross-entropy (non-saturating for G)"
    overrides = ("hinge-loss", "feature-matching")

    @dataclass(frozen=True)
    class Params:
        a: float = 0.0  # the code D pushes fakes to
        b: float = 1.0  # the code D pushes real data to
        c: float = 1.0  # the code G wants D to believe for fakes

    def code(self, t: torch.Tensor | None, default: float) -> torch.Tensor | float:
        """A loop target t (1 real, 0 fake) as a code ``a + (b - a) t``; None: ``default``."""
        return default if t is None else self.params.a + (self.params.b - self.params.a) * t

    def d_loss(self, ctx: DContext) -> torch.Tensor:
        p = self.params
        loss = 0.0
        if ctx.out_real is not None:  # separate batches: one side per update
            loss = loss + 0.5 * (ctx.out_real - self.code(ctx.t_real, p.b)).square().mean()
        if ctx.out_fake is not None:
            loss = loss + 0.5 * (ctx.out_fake - self.code(ctx.t_fake, p.a)).square().mean()
        return loss

    def g_loss(self, ctx: GContext) -> torch.Tensor:
        return 0.5 * (ctx.out_fake - self.params.c).square().mean()
