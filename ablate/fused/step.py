"""The fused training step: every member's D update(s) and G update as one wide model.

:class:`Targets` draws each member's D targets and flips from its own generator (bit
for bit its lone run's); :class:`Step` runs one generator step of the group on prepared
inputs and returns per-member statistics; :class:`GraphedStep` replays it as a CUDA
graph. :mod:`ablate.fused.trainer` runs the loop around them; the capacity probe
(:mod:`ablate.fused.capacity`) measures their memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ablate.config import TrainConfig
from ablate.fused.modules import FusedAdam, FusedSequential
from ablate.hacks.recipe import Recipe

_GRAPH_WARMUP = 3  # eager steps before the first CUDA-graph capture (cuDNN/cuBLAS set-up)


@dataclass(frozen=True)
class FusedOptions:
    """How the fused step executes. None of these changes what a run computes beyond
    floating-point rounding, so none enters a run's identity; each is recorded in the
    members' ``config.json``."""

    channels_last: bool = True  # the lone trainer's layout (faster convolutions)
    cuda_graph: bool = False  # replay each training step as one CUDA graph (GPU only)
    compile: bool = False  # torch.compile the fused G and D forward passes


# --------------------------------------------------------------------------------------
# Per-member random draws, vectorised over the group
# --------------------------------------------------------------------------------------
class Targets:
    """D targets for every member at once, from each member's own uniform draws.

    The same arithmetic as :func:`ablate.training.loop._targets` in float32 with per-member
    constants, so each member's targets equal its lone run's bit for bit.
    """

    def __init__(self, recipes: Sequence[Recipe], device: torch.device) -> None:
        def col(values):  # Python doubles -> float32, as torch casts scalar operands
            return torch.tensor(values, dtype=torch.float32, device=device).reshape(-1, 1)

        self.rl = col([r.real_target[0] for r in recipes])
        self.rspan = col([r.real_target[1] - r.real_target[0] for r in recipes])
        self.fl = col([r.fake_target[0] for r in recipes])
        self.fspan = col([r.fake_target[1] - r.fake_target[0] for r in recipes])
        self.flip_p = col([r.label_flip_p for r in recipes])

    def keep(self, rows: torch.Tensor) -> None:
        for name in ("rl", "rspan", "fl", "fspan", "flip_p"):
            setattr(self, name, getattr(self, name)[rows])

    def draw(self, gens: Sequence[torch.Generator], n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(real targets, fake targets), each ``(n, K)``."""
        u = torch.stack([torch.rand(4, n, generator=g, device=device) for g in gens])
        real = self.rl + self.rspan * u[:, 0]
        fake = self.fl + self.fspan * u[:, 1]
        flip_real, flip_fake = u[:, 2] < self.flip_p, u[:, 3] < self.flip_p
        # A flipped target takes a draw from the other class's range (as ablate.training.loop).
        real_t = torch.where(flip_real, self.fl + self.fspan * u[:, 1].roll(1, -1), real)
        fake_t = torch.where(flip_fake, self.rl + self.rspan * u[:, 0].roll(1, -1), fake)
        return real_t.T, fake_t.T


# --------------------------------------------------------------------------------------
# The fused step: D update(s) and G update on prepared inputs; per-member statistics
# --------------------------------------------------------------------------------------
def _bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-member mean BCE: (B, K) logits and targets -> (K,)."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(0)


def _update_mixed(d, opt, real, fake, t_real, t_fake):
    """One update per member on its real and fake samples in one batch."""
    d.zero_grad()
    logits = d(torch.cat([real, fake]))
    loss = _bce(logits, torch.cat([t_real, t_fake]))
    loss.sum().backward(inputs=d.parameters())  # members' losses are independent
    opt.step()
    n, logits = real.shape[0], logits.detach()
    return loss.detach(), logits[:n], logits[n:]


def _update_separate(d, opt, real, fake, t_real, t_fake):
    """Two updates per member: real-only, then fake-only."""
    losses, outs = [], []
    for x, t in ((real, t_real), (fake, t_fake)):
        d.zero_grad()
        logits = d(x)
        loss = _bce(logits, t)
        loss.sum().backward(inputs=d.parameters())
        opt.step()
        losses.append(loss.detach())
        outs.append(logits.detach())
    return (losses[0] + losses[1]) / 2, outs[0], outs[1]


_UPDATES: dict[str, Callable] = {"mixed": _update_mixed, "separate": _update_separate}


class Step:
    """One generator step of the group on prepared inputs; returns (K, 4) statistics
    (loss_d, loss_g, D(x), D(G(z))), as the lone loop's log window holds them."""

    def __init__(self, g: FusedSequential, d: FusedSequential, opt_g: FusedAdam, opt_d: FusedAdam,
                 config: TrainConfig, recipe: Recipe, device: torch.device,
                 options: FusedOptions) -> None:
        self.g, self.d, self.opt_g, self.opt_d = g, d, opt_g, opt_d
        self.update = _UPDATES[recipe.d_update]
        self.bf16 = config.precision == "bf16"
        self.device_type = device.type
        g_fwd, d_fwd = g.__call__, d.__call__
        if options.compile:
            g_fwd, d_fwd = torch.compile(g_fwd), torch.compile(d_fwd)
        self.g_fwd, self.d_fwd = self._cast(g_fwd), self._cast(d_fwd)

    def _cast(self, fwd: Callable) -> Callable:
        if not self.bf16:
            return fwd

        def run(x: torch.Tensor) -> torch.Tensor:  # as ablate.training.loop.Autocast
            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                return fwd(x).float()

        return run

    def __call__(self, reals, zs, t_reals, t_fakes) -> torch.Tensor:
        d_view = _Forward(self.d, self.d_fwd)
        for real, z, t_real, t_fake in zip(reals, zs, t_reals, t_fakes):
            fake = self.g_fwd(z)
            loss_d, out_real, out_fake = self.update(d_view, self.opt_d, real, fake.detach(),
                                                     t_real, t_fake)
        self.g.zero_grad()
        loss_g = _bce(self.d_fwd(fake), torch.ones_like(t_real))  # non-saturating loss
        loss_g.sum().backward(inputs=self.g.parameters())  # D's gradients are not needed
        self.opt_g.step()
        return torch.stack([loss_d, loss_g.detach(), out_real.sigmoid().mean(0),
                            out_fake.sigmoid().mean(0)], dim=1)


class _Forward:
    """A FusedSequential whose call goes through a wrapped forward (bf16, compile)."""

    def __init__(self, net: FusedSequential, fwd: Callable) -> None:
        self.net, self.fwd = net, fwd

    def __call__(self, x):
        return self.fwd(x)

    def zero_grad(self):
        self.net.zero_grad()

    def parameters(self):
        return self.net.parameters()


class GraphedStep:
    """Replays :class:`Step` as one CUDA graph after a few eager steps.

    Inputs are copied into static buffers, the graph replays, the statistics come back
    in a static buffer. Random draws and the data gather stay eager (outside the graph)
    so every member keeps its lone run's random stream. After a member is removed the
    graph is captured again.
    """

    def __init__(self, step: Step) -> None:
        self.step = step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_left = _GRAPH_WARMUP
        self.stream = torch.cuda.Stream()

    def reset(self) -> None:
        self.graph, self.eager_left = None, 1

    def __call__(self, *inputs) -> torch.Tensor:
        if self.graph is None and self.eager_left > 0:
            self.eager_left -= 1
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                out = self.step(*inputs)
            torch.cuda.current_stream().wait_stream(self.stream)
            return out
        if self.graph is None:
            self.static_in = [[t.clone() for t in group] for group in inputs]
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_out = self.step(*self.static_in)
        for static, new in zip(self.static_in, inputs):
            for s, t in zip(static, new):
                s.copy_(t)
        self.graph.replay()
        return self.static_out
