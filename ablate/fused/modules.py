"""K copies of one network as one wide network (HFTA-style grouped convolutions), and
an Adam that keeps per-member settings.

Layout: the K members' activations sit side by side on the channel axis, member-major
— a fused tensor is ``(B, K*C, H, W)`` where a member's is ``(B, C, H, W)``. A
convolution becomes one grouped convolution (``groups=K``), BatchNorm one BatchNorm
over ``K*C`` channels (per-channel statistics are per-member statistics), and the
elementwise and pooling layers apply unchanged. No operation mixes members, so each
member computes what it would alone, up to the summation order inside the kernels.

Parameters: a lone parameter of shape ``(s0, *rest)`` becomes a fused one of shape
``(K*s0, *rest)`` — exactly the weight a grouped convolution (or BatchNorm over K*C
channels) takes, in the lone model's memory format (channels_last for convolution
weights), so the forward pass uses the parameters as they are, without copies. Member
``j`` is rows ``j*s0 .. (j+1)*s0`` of dim 0, a contiguous chunk in either format. All
parameters live in one flat buffer (gradients in another, with the same strides, so
autograd accumulates in place), and Adam is a handful of elementwise operations over
the whole buffer with per-element copies of each member's settings.

``benchmarks/bench_fused.py --formulations`` measured grouped convolutions against
``torch.func.vmap`` over stacked parameters (and NCHW against channels_last) on the
2-core CPU at width 32, K = 1..16; see benchmarks/README.md, "Fused training".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ablate.hacks.recipe import Optimizer


def _strides(shape: tuple[int, ...], channels_last: bool) -> tuple[int, ...]:
    """Strides of a dense tensor of ``shape``: NHWC order for 4-d when ``channels_last``."""
    if len(shape) == 4 and channels_last:
        n, c, h, w = shape
        return (h * w * c, 1, w * c, c)
    out, acc = [], 1
    for size in reversed(shape):
        out.append(acc)
        acc *= size
    return tuple(reversed(out))


class FusedSequential:
    """K members of one ``nn.Sequential`` architecture as one network.

    Built from K initialised lone modules (their values are copied in); the lone
    modules stay the members' own copies for saving and validation
    (:meth:`load_member`). Only the layers :func:`ablate.fused.grouping.layer_blocker`
    accepts are supported.
    """

    def __init__(self, members: Sequence[nn.Sequential], device: torch.device,
                 channels_last: bool = True) -> None:
        template = members[0]
        self.layers = list(template)
        self.channels_last = channels_last
        self.training = True
        self.device = torch.device(device)
        self.shapes = {n: tuple(p.shape) for n, p in template.named_parameters()}
        self.k = len(members)
        self._allocate()
        lone = [dict(m.named_parameters()) for m in members]
        with torch.no_grad():
            for name, p in self.params.items():
                s0 = self.shapes[name][0]
                for j, params in enumerate(lone):
                    p[j * s0:(j + 1) * s0].copy_(params[name])
        self.buffers = {n: torch.cat([dict(m.named_buffers())[n] for m in members]).to(device)
                        for n, _ in template.named_buffers() if not n.endswith("num_batches_tracked")}

    # ----- storage ----------------------------------------------------------------------
    def _allocate(self, flat: torch.Tensor | None = None) -> None:
        """Lay out the parameters for ``self.k`` members in ``flat`` (new if None)."""
        sizes = {n: torch.Size(s).numel() for n, s in self.shapes.items()}
        self.offsets, start = {}, 0
        for name, size in sizes.items():
            self.offsets[name] = start
            start += self.k * size
        self.flat = flat if flat is not None else torch.zeros(start, device=self.device)
        self.grad = torch.zeros_like(self.flat)
        self.params: dict[str, nn.Parameter] = {}
        for name, shape in self.shapes.items():
            fused = (self.k * shape[0], *shape[1:])
            stride = _strides(fused, self.channels_last)
            p = nn.Parameter(self.flat.as_strided(fused, stride, self.offsets[name]))
            p.grad = self.grad.as_strided(fused, stride, self.offsets[name])
            self.params[name] = p
        # The member owning each element of the flat buffer (for per-member settings).
        self.member_of = torch.cat([torch.arange(self.k, device=self.device).repeat_interleave(size)
                                    for size in sizes.values()])

    def rows(self, buffer: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """A flat buffer laid out like ``flat`` with only the members at ``rows``."""
        parts = []
        for name, start in self.offsets.items():
            size = torch.Size(self.shapes[name]).numel()
            parts.append(buffer[start:start + self.k * size].view(self.k, size)[rows].reshape(-1))
        return torch.cat(parts)

    def join(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """A flat buffer laid out like ``flat`` from each member's own part
        (``rows(buffer, [j])``, as a checkpoint keeps it): the inverse of :meth:`rows`."""
        out, start = [], 0
        for name in self.offsets:
            size = torch.Size(self.shapes[name]).numel()
            out += [part[start:start + size] for part in parts]
            start += size
        return torch.cat(out).to(self.flat.device)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the members at ``rows`` (a 1-d index tensor), in that order."""
        flat = self.rows(self.flat, rows)
        self.buffers = {n: b.view(self.k, -1)[rows].reshape(-1) for n, b in self.buffers.items()}
        self.k = len(rows)
        self._allocate(flat)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.params.values())

    def train(self, mode: bool = True) -> None:
        self.training = mode

    def zero_grad(self) -> None:
        """Zero the gradient buffer in place (autograd accumulates into its views)."""
        self.grad.zero_()

    @torch.no_grad()
    def load_member(self, j: int, module: nn.Module, batches_tracked: int) -> nn.Module:
        """Copy member ``j``'s parameters and buffers into its lone ``module``."""
        for name, p in module.named_parameters():
            s0 = self.shapes[name][0]
            p.copy_(self.params[name][j * s0:(j + 1) * s0])
        for name, b in module.named_buffers():
            if name.endswith("num_batches_tracked"):
                b.fill_(batches_tracked)
            else:
                b.copy_(self.buffers[name].view(self.k, -1)[j])
        return module

    # ----- forward ----------------------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Forward the fused input: ``(B, K*latent)`` for a generator, ``(B, K*C, H, W)``
        for a discriminator; a final ``Flatten(0)`` returns ``(B, K)`` logits."""
        k, params = self.k, self.params
        if self.channels_last and x.ndim == 4:
            # oneDNN's (and cuDNN's) fast layout, as in the lone models (ablate.training.loop.build).
            x = x.contiguous(memory_format=torch.channels_last)
        for i, m in enumerate(self.layers):
            kind = type(m)
            if kind is nn.Conv2d:
                x = F.conv2d(x, params[f"{i}.weight"], params.get(f"{i}.bias"), m.stride,
                             m.padding, m.dilation, groups=k)
            elif kind is nn.ConvTranspose2d:
                x = F.conv_transpose2d(x, params[f"{i}.weight"], params.get(f"{i}.bias"),
                                       m.stride, m.padding, m.output_padding, k, m.dilation)
            elif kind is nn.BatchNorm2d:
                x = F.batch_norm(x, self.buffers[f"{i}.running_mean"],
                                 self.buffers[f"{i}.running_var"], params[f"{i}.weight"],
                                 params[f"{i}.bias"], self.training, m.momentum, m.eps)
            elif kind is nn.Unflatten:
                x = x.reshape(x.shape[0], k * m.unflattened_size[0], *m.unflattened_size[1:])
            elif kind is nn.Flatten:
                x = x.reshape(x.shape[0], k)
            else:
                x = m(x)
        return x


class FusedAdam:
    """Adam over a :class:`FusedSequential`'s flat buffer, with per-member settings.

    The same arithmetic as ``torch.optim.Adam`` (foreach, L2 weight decay added to the
    gradient, eps 1e-8): bias corrections in float64, applied as float32 like the
    Python scalars torch uses, so a member's update matches its lone optimizer's up to
    kernel rounding. Per-member settings are expanded to per-element tensors (via the
    net's ``member_of``), so a step is a few elementwise kernels over the whole group.
    Everything stays on the device (no host sync; CUDA-graph safe).
    """

    EPS = 1e-8  # torch.optim.Adam's default; ablate's Optimizer does not change it

    def __init__(self, net: FusedSequential, specs: Sequence[Optimizer]) -> None:
        dev = net.flat.device

        def col(values):
            return torch.tensor(values, dtype=torch.float64, device=dev)

        self.net = net
        self.lr = col([s.lr for s in specs])
        self.beta1 = col([s.betas[0] for s in specs])
        self.beta2 = col([s.betas[1] for s in specs])
        self.weight_decay = col([s.weight_decay for s in specs])
        self.decay = any(s.weight_decay != 0 for s in specs)
        self.exp_avg = torch.zeros_like(net.flat)
        self.exp_avg_sq = torch.zeros_like(net.flat)
        self.steps = torch.zeros((), dtype=torch.float64, device=dev)
        self._expand()
        self._stale = False

    def _expand(self) -> None:
        """Per-element float32 copies of the per-member constants."""
        idx, f32 = self.net.member_of, self.net.flat.dtype
        self.w1 = (1 - self.beta1).to(f32)[idx]  # lerp weight
        self.b2 = self.beta2.to(f32)[idx]
        self.w2 = (1 - self.beta2).to(f32)[idx]
        self.wd = self.weight_decay.to(f32)[idx] if self.decay else None

    def keep(self, rows: torch.Tensor) -> None:
        """Keep the state of the members at ``rows``. Call it before the net's ``keep``:
        it reads the net's layout for the current group."""
        self.exp_avg = self.net.rows(self.exp_avg, rows)
        self.exp_avg_sq = self.net.rows(self.exp_avg_sq, rows)
        for name in ("lr", "beta1", "beta2", "weight_decay"):
            setattr(self, name, getattr(self, name)[rows])
        self._stale = True

    @torch.no_grad()
    def step(self) -> None:
        p, g, idx = self.net.flat, self.net.grad, self.net.member_of
        f32 = p.dtype
        if self._stale:  # members were removed: expand for the new layout
            self._expand()
            self._stale = False
        self.steps += 1
        if self.wd is not None:
            g = g.add(p * self.wd)
        self.exp_avg.lerp_(g, self.w1)
        self.exp_avg_sq.mul_(self.b2).addcmul_(g * self.w2, g)
        step_size = (-self.lr / (1 - self.beta1 ** self.steps)).to(f32)[idx]
        bc2_sqrt = (1 - self.beta2 ** self.steps).sqrt().to(f32)[idx]
        denom = self.exp_avg_sq.sqrt().div_(bc2_sqrt).add_(self.EPS)
        # torch's addcdiv computes self + (value * t1) / t2: the same order here.
        p.add_(torch.mul(self.exp_avg, step_size).div_(denom))
