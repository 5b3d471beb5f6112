"""An example ablate plugin, living outside the ``ablate`` package.

It adds two hacks through the public API only:

* ``spectral-norm`` — spectral normalisation of every D convolution (Miyato et al.
  2018), through the ``wrap_discriminator`` hook;
* ``instance-noise`` — Gaussian noise added to every D input while training
  (Sønderby et al. 2016; Arjovsky & Bottou 2017), annealed linearly to zero, also
  through ``wrap_discriminator``.

Installing this package (``pip install -e examples/ablate-spectral-norm``) registers
both through the entry point in its pyproject.toml; ``ablate hacks`` then lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ablate import Hack, register_hack


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


class _NoisyInput(nn.Module):
    """Adds N(0, sigma^2) to D's input in training mode; sigma decays per call to 0."""

    def __init__(self, inner: nn.Module, sigma: float, anneal_calls: int) -> None:
        super().__init__()
        self.inner, self.sigma, self.anneal_calls = inner, sigma, anneal_calls
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.sigma > 0:
            frac = (1 - self.calls.float() / self.anneal_calls).clamp(min=0.0)
            x = x + torch.randn_like(x) * (self.sigma * frac)
            self.calls += 1
        return self.inner(x)


@register_hack
class InstanceNoise(Hack):
    name = "instance-noise"
    source = "Sønderby et al. 2016 (arXiv:1610.04490); ganhacks #13"
    on = "Gaussian noise (sigma 0.1, annealed to 0) on every D input"
    off = "clean D inputs"

    @dataclass(frozen=True)
    class Params:
        sigma: float = 0.1
        anneal_calls: int = 2000  # D forward passes until the noise reaches zero

    def wrap_discriminator(self, discriminator: nn.Module) -> nn.Module:
        return _NoisyInput(discriminator, self.params.sigma, self.params.anneal_calls)
