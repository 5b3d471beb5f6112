"""An example ablate plugin, living outside the ``ablate`` package.

It adds two hacks through the public API only:

* ``spectral-norm`` — spectral normalisation of every D convolution (Miyato et al.
  2018), through the ``wrap_discriminator`` hook;
* ``instance-noise`` — Gaussian noise added to every D input while training
  (Sønderby et al. 2016; Arjovsky & Bottou 2017), annealed linearly to zero over the
  run's generator steps, through ``augment`` (API v3: ``ctx.step``/``ctx.steps``).
  Version 0.2.0: until 0.1.0 it was a ``wrap_discriminator`` that annealed per D
  forward call, so its schedule depended on ``d_steps`` and separate batches.

Installing this package (``pip install -e examples/ablate-spectral-norm``) registers
both through the entry point in its pyproject.toml; ``ablate hacks`` then lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ablate import Hack, StepContext, register_hack


@register_hack
class SpectralNorm(Hack):
    name = "spectral-norm"
    source = "Miyato et al. 2018, Spectral Normalization for GANs (arXiv:1802.05957)"
    on = "spectral normalisation on every D convolution"
    off = "unnormalised D weights"

    @dataclass(frozen=True)
    class Params:
        n_power_iterations: int = 1  # Miyato et al.: one iteration per step suffices

    def wrap_discriminator(self, discriminator: nn.Module) -> nn.Module:
        for name, module in list(discriminator.named_modules()):
            if isinstance(module, nn.Conv2d):
                spectral_norm(module, n_power_iterations=self.params.n_power_iterations)
        return discriminator


def noise_sigma(sigma: float, anneal: float, step: int, steps: int) -> float:
    """The noise's standard deviation at generator step ``step`` of ``steps``: ``sigma``
    at step 0, falling linearly to 0 at ``anneal * steps`` (and 0 after)."""
    end = anneal * steps
    return sigma * max(0.0, 1.0 - step / end) if end > 0 else 0.0


@register_hack
class InstanceNoise(Hack):
    name = "instance-noise"
    source = "Sønderby et al. 2016 (arXiv:1610.04490); ganhacks #13"
    on = "Gaussian noise (sigma 0.1, annealed to 0 over the run's steps) on every D input"
    off = "clean D inputs"
    # 0.2.0: annealed per generator step through augment (0.1.0: per D forward call).
    version = "0.2.0"

    @dataclass(frozen=True)
    class Params:
        sigma: float = 0.1
        anneal: float = 1.0  # fraction of the run's steps until the noise reaches zero

    def augment(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        s = noise_sigma(self.params.sigma, self.params.anneal, ctx.step, ctx.steps)
        if s == 0.0:
            return x
        noise = torch.randn(x.shape, generator=ctx.rng, device=ctx.rng.device, dtype=x.dtype)
        return x + s * noise.to(x.device)
