"""WGAN-GP (Gulrajani et al. 2017), through ``apply``, ``d_loss``, ``d_penalty``,
``g_loss`` and ``ctx.log``.

The critic's loss is ``E[D(G(z))] - E[D(x)] + lam * E[(|grad D(x_hat)|_2 - 1)^2]`` with
``x_hat = eps * x + (1 - eps) * G(z)``, ``eps ~ U[0, 1]`` one per sample (drawn from
``ctx.rng``), and the generator's ``-E[D(G(z))]`` (Algorithm 1). ``D`` is the network's
raw output (the logit the loop hands over; no sigmoid). The penalty is differentiable in
D's weights (double backpropagation through ``torch.autograd.grad(create_graph=True)``).
Under a wrapper that packs k images per logit (PacGAN) eps is drawn per image and the
norm is taken per pack (one D output).

What ``apply`` sets in the Recipe, and why (Gulrajani et al., section 4 and Algorithm 1):

* ``d_steps = n_critic`` (5): the paper's ``n_critic`` critic updates per generator
  update is exactly the Recipe's ``d_steps``;
* ``d_optimizer`` and ``g_optimizer``: Adam, lr 1e-4, betas (0.0, 0.9) (``lr``,
  ``beta1``, ``beta2``; the Recipe's ``Optimizer`` has exactly these fields);
* ``d_norm = "layer"`` (``critic_norm``): the penalty is per input, which batch norm
  in the critic would invalidate (it makes each output depend on the whole batch); the
  paper recommends layer normalisation as the drop-in replacement, which is the Recipe's
  ``"layer"`` (``GroupNorm(1, C)``). ``critic_norm = "none"`` gives a critic without
  normalisation. G's normalisation (``g_norm``) is left as it is (the paper's G keeps
  batch norm).

Declared overrides: ``adam-dcgan`` and ``ttur`` (the optimizers), ``batch-norm`` (its
``d_norm`` only; its ``g_norm`` stays), ``label-smoothing`` and ``noisy-labels`` (the
loss reads no targets), and ``hinge-loss``, ``lsgan`` and ``feature-matching`` (the
other replacements of D's and G's losses: with WGAN-GP enabled its losses are the ones
used), so that any combination, ``all`` included, plans. ``weight-clipping`` is not
declared: WGAN-GP replaces clipping, but both may be enabled (clipping then acts too).

Separate batches (``d_update = "separate"``): a D update then holds only real or only
fake data, and the penalty needs both. The real-only update (first) remembers its real
batch; the fake-only update that follows adds the penalty on interpolates between that
batch and its fakes (with D after the real-side step). The remembered batch lives only
within one step, so nothing needs saving for a resumed run.

Logged through ``ctx.log`` (means over each log window's critic updates):
``wgan_gp`` (``E[(|grad|-1)^2]``, before the factor ``lam``), ``wgan_grad_norm``
(``E|grad D(x_hat)|``) and ``wgan_w`` (``E[D(x)] - E[D(G(z))]``, the critic's estimate
of the Wasserstein distance, on the batches of the update that adds the penalty).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import torch

from ablate import Bounds, DContext, GContext, Hack, Optimizer, Recipe, register_hack


def interpolate(real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """``eps * real + (1 - eps) * fake``, ``eps ~ U[0, 1]`` one per sample: one draw
    ``rand(n)`` from ``rng`` (in ``real``'s dtype)."""
    n = real.shape[0]
    eps = torch.rand(n, generator=rng, device=rng.device, dtype=real.dtype).to(real.device)
    eps = eps.view(n, *([1] * (real.dim() - 1)))
    return eps * real.detach() + (1 - eps) * fake.detach()


def gradient_penalty(discriminate: Callable, x_hat: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[(|grad_x D(x_hat)|_2 - 1)^2], |grad|)``: the penalty (differentiable in D's
    weights) and the per-output gradient norms."""
    x = x_hat.detach().requires_grad_(True)
    out, _ = discriminate(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    norms = grad.reshape(out.shape[0], -1).norm(2, dim=1)  # one per D output (per pack)
    return (norms - 1).square().mean(), norms


@register_hack
class WGANGP(Hack):
    name = "wgan-gp"
    source = ("Gulrajani et al. 2017, Improved Training of Wasserstein GANs "
              "(arXiv:1704.00028), Algorithm 1")
    on = ("critic E[D(G(z))] - E[D(x)] + 10 E[(|grad D(x_hat)| - 1)^2] on random "
          "interpolates, G -E[D(G(z))]; 5 critic updates per G update, Adam(1e-4, 0, 0.9), "
          "layer norm in the critic")
    off = "binary cross-entropy (non-saturating for G), the Recipe's optimizers and D"
    overrides = ("adam-dcgan", "batch-norm", "label-smoothing", "noisy-labels", "ttur",
                 "hinge-loss", "lsgan", "feature-matching")

    @dataclass(frozen=True)
    class Params:
        # Gulrajani et al.'s lambda (``lambda`` is a Python keyword).
        lam: Annotated[float, Bounds(ge=0.0)] = 10.0
        n_critic: Annotated[int, Bounds(ge=1)] = 5  # the Recipe's d_steps
        lr: Annotated[float, Bounds(gt=0.0)] = 1e-4
        beta1: Annotated[float, Bounds(ge=0.0, lt=1.0)] = 0.0
        beta2: Annotated[float, Bounds(ge=0.0, lt=1.0)] = 0.9
        critic_norm: Literal["layer", "none"] = "layer"

    def __init__(self, params=None) -> None:
        super().__init__(params)
        # separate batches: the real-only update's batch and mean logit, for the
        # fake-only update that follows in the same step
        self._real: tuple[torch.Tensor, torch.Tensor] | None = None

    def apply(self, recipe: Recipe) -> Recipe:
        p = self.params
        opt = Optimizer(name="adam", lr=p.lr, betas=(p.beta1, p.beta2))
        return recipe.replace(d_steps=p.n_critic, d_optimizer=opt, g_optimizer=opt,
                              d_norm=p.critic_norm)

    def d_loss(self, ctx: DContext) -> torch.Tensor:
        loss = 0.0
        if ctx.out_real is not None:  # separate batches: one side per update
            loss = loss - ctx.out_real.mean()
        if ctx.out_fake is not None:
            loss = loss + ctx.out_fake.mean()
        return loss

    def d_penalty(self, ctx: DContext) -> torch.Tensor | None:
        if ctx.fake is None:  # the real-only update of separate batches: remember it
            self._real = (ctx.real.detach(), ctx.out_real.detach().mean())
            return None
        if ctx.real is not None:  # mixed: both sides in this update
            real, real_mean = ctx.real, ctx.out_real.detach().mean()
        elif self._real is not None:  # the fake-only update after the real-only one
            (real, real_mean), self._real = self._real, None
        else:  # a fake-only update without a real one before it (not the loop's order)
            return None
        gp, norms = gradient_penalty(ctx.discriminate, interpolate(real, ctx.fake, ctx.rng))
        ctx.log("wgan_gp", gp.detach())
        ctx.log("wgan_grad_norm", norms.detach().mean())
        ctx.log("wgan_w", real_mean - ctx.out_fake.detach().mean())
        return self.params.lam * gp

    def g_loss(self, ctx: GContext) -> torch.Tensor:
        return -ctx.out_fake.mean()
