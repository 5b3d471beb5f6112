"""Minibatch standard deviation (Karras et al. 2018), through ``wrap_discriminator``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from ablate import Bounds, Hack, Recipe, register_hack


class MinibatchStd(nn.Module):
    """Appends one feature map: the standard deviation of each feature over a group of
    samples, averaged over features and pixels (PGGAN's layer).

    Groups are ``group_size`` consecutive samples (fewer when the batch does not divide).
    When D updates on a mixed batch — ``cat([real, fake])``, real first — the statistics
    are taken within each half, so a group never mixes real and fake samples.
    """

    def __init__(self, group_size: int, mixed: bool) -> None:
        super().__init__()
        self.group_size, self.mixed = group_size, mixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        parts = x.chunk(2) if self.mixed and n % 2 == 0 and n >= 2 * self.group_size else (x,)
        return torch.cat([self._append(p) for p in parts])

    def _append(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = math.gcd(n, self.group_size)
        y = x.reshape(g, n // g, c, h, w)  # sample i is in group i % (n // g), as in PGGAN
        std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (n/g, c, h, w)
        s = std.mean(dim=(1, 2, 3))  # one number per group
        s = s.repeat(g).reshape(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, s.to(x.dtype)], dim=1)


def _replace_last_conv(module: nn.Module, make: callable) -> None:
    """Replace the last nn.Conv2d inside ``module`` by ``make(old_conv)``."""
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise ValueError("minibatch-stddev: the discriminator has no convolution")
    *parents, leaf = names[-1].split(".")
    parent = module
    for p in parents:
        parent = getattr(parent, p)
    setattr(parent, leaf, make(getattr(parent, leaf)))


@register_hack
class MinibatchStddev(Hack):
    name = "minibatch-stddev"
    source = "Karras et al. 2018, Progressive Growing of GANs (arXiv:1710.10196), section 3"
    on = "D's last convolution also sees the minibatch standard deviation (groups of 4)"
    off = "D sees no statistics across samples"

    @dataclass(frozen=True)
    class Params:
        group_size: Annotated[int, Bounds(ge=2)] = 4  # PGGAN's group size

    def wrap_discriminator(self, discriminator: nn.Module, recipe: Recipe) -> nn.Module:
        def make(old: nn.Conv2d) -> nn.Module:
            new = nn.Conv2d(old.in_channels + 1, old.out_channels, old.kernel_size, old.stride,
                            old.padding, bias=old.bias is not None)
            with torch.no_grad():
                if recipe.init.kind == "normal":  # follow the run's initialisation
                    nn.init.normal_(new.weight, 0.0, recipe.init.std)
                new.weight[:, :old.in_channels] = old.weight  # the old conv's weights stay
                if old.bias is not None:
                    new.bias.copy_(old.bias)
            return nn.Sequential(MinibatchStd(self.params.group_size, recipe.d_update == "mixed"), new)

        _replace_last_conv(discriminator, make)
        return discriminator
