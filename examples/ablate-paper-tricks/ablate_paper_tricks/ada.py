"""ADA-style adaptive augmentation (Karras et al. 2020), through ``augment``,
``after_d_update``, ``after_step``, per-run state and ``ctx.log``.

Every D input — real, fake, mixed batches and G's fakes in the generator update
(``ctx.side`` is ``"real"``, ``"fake"``, ``"mixed"`` or ``"g"``) — gets the same
random "pixel blitting" transforms: per sample, with probability ``p`` a horizontal
flip, then with probability ``p`` a rotation by 90°, 180° or 270° (Karras et al.'s
bgc pipeline starts with these; both are invertible, so no leak for ``p`` < 1).

``p`` adapts: after every D update the signs of D's logits on the real samples it saw
(a ``"real"`` or ``"mixed"`` update: ``ctx.side``) are summed; every ``interval``
steps ``r_t = mean sign(D(real))`` and ``p += sign(r_t - target) * n / speed`` with
``n`` the real samples seen since, clamped to [0, 1]. ``p`` and the running sums are
per-run state (``state_dict``), so a resumed run continues with them; ``ctx.log``
reports ``ada_p`` every step and ``ada_rt`` at each adjustment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from ablate import Bounds, DContext, Hack, StepContext, register_hack


def blit(x: torch.Tensor, p: float, rng: torch.Generator) -> torch.Tensor:
    """Per sample, with probability ``p`` a horizontal flip, then with probability ``p``
    a rotation by k·90°, k uniform in {1, 2, 3}. Draws (always, whatever ``p``, so the
    stream does not depend on it): ``rand(n, 2)``, then ``randint(1, 4, (n,))``."""
    n = x.shape[0]
    u = torch.rand(n, 2, generator=rng, device=rng.device).to(x.device)
    k = torch.randint(1, 4, (n,), generator=rng, device=rng.device).to(x.device)
    flip = (u[:, 0] < p).view(n, 1, 1, 1)
    x = torch.where(flip, x.flip(3), x)
    rot = (u[:, 1] < p).view(n, 1, 1, 1)
    rotated = torch.where((k == 1).view(n, 1, 1, 1), x.rot90(1, (2, 3)),
                          torch.where((k == 2).view(n, 1, 1, 1), x.rot90(2, (2, 3)),
                                      x.rot90(3, (2, 3))))
    return torch.where(rot, rotated, x)


@register_hack
class ADA(Hack):
    name = "ada"
    source = "Karras et al. 2020, Training GANs with Limited Data (arXiv:2006.06676)"
    on = "flips and 90° rotations of every D input with an adaptive probability p (target r_t 0.6)"
    off = "unaugmented D inputs"

    @dataclass(frozen=True)
    class Params:
        target: Annotated[float, Bounds(ge=0.0, le=1.0)] = 0.6  # Karras et al.'s r_t target
        interval: Annotated[int, Bounds(ge=1)] = 4  # steps between adjustments of p
        speed: Annotated[int, Bounds(ge=1)] = 20000  # real images for p to go from 0 to 1
        p0: Annotated[float, Bounds(ge=0.0, le=1.0)] = 0.0

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.p, self.sign_sum, self.n = self.params.p0, 0.0, 0

    def augment(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return blit(x, self.p, ctx.rng)

    def after_d_update(self, ctx: DContext) -> None:
        if ctx.side in ("real", "mixed"):  # the fake-only update has no real logits
            self.sign_sum += float(ctx.out_real.sign().sum())
            self.n += ctx.out_real.numel()

    def after_step(self, ctx: StepContext) -> None:
        if ctx.step % self.params.interval == 0 and self.n:
            rt = self.sign_sum / self.n
            step = (1.0 if rt > self.params.target else -1.0 if rt < self.params.target else 0.0)
            self.p = min(1.0, max(0.0, self.p + step * self.n / self.params.speed))
            self.sign_sum, self.n = 0.0, 0
            ctx.log("ada_rt", rt)
        ctx.log("ada_p", self.p)

    def state_dict(self) -> dict:
        return {"p": self.p, "sign_sum": self.sign_sum, "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.p, self.sign_sum, self.n = state["p"], state["sign_sum"], state["n"]
