"""K copies of one network as one wide network (HFTA-style grouped convolutions), and
an Adam that keeps per-member settings.

Layout: the K members' activations sit side by side on the channel axis, member-major
— a fused tensor is ``(B, K*C, H, W)`` where a member's is ``(B, C, H, W)``. A
convolution becomes one grouped convolution (``groups=K``), BatchNorm one BatchNorm
over ``K*C`` channels (per-channel statistics are per-member statistics), and the
elementwise and pooling layers apply unchanged. No operation mixes members, so each
member computes what it would alone, up to the summation order inside the kernels.

Parameters are stored member-major in one ``(K, P)`` buffer (P = one member's
parameter count), gradients in another; each parameter is a ``(K, *shape)`` view, so
Adam is a handful of elementwise operations over the whole group with ``(K, 1)``
per-member learning rates and betas, and removing a member is one row selection.

``benchmarks/bench_fused.py --formulations`` measured this against ``torch.func.vmap``
over stacked parameters on the 2-core CPU at width 32, K = 1..16; see
benchmarks/README.md, "Fused training".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ablate.recipe import Optimizer

_PARAM_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)


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
        self.k = len(members)
        self.channels_last = channels_last
        self.training = True
        names = [n for n, _ in template.named_parameters()]
        self.shapes = {n: tuple(p.shape) for n, p in template.named_parameters()}
        sizes = [p.numel() for _, p in template.named_parameters()]
        self.offsets = dict(zip(names, zip([0, *torch.tensor(sizes).cumsum(0).tolist()], sizes)))
        p_total = sum(sizes)
        # Values in logical (contiguous NCHW) order, whatever the lone modules' layout.
        self.flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()])
                                 for m in members]).to(device)
        self.grad = torch.zeros(self.k, p_total, device=device)
        self.buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in members]).to(device)
                        for n, b in template.named_buffers() if not n.endswith("num_batches_tracked")}
        self._views()

    def _views(self) -> None:
        """(Re)create the parameter views of ``flat`` with their gradient views."""
        self.params: dict[str, nn.Parameter] = {}
        for name, (start, size) in self.offsets.items():
            p = nn.Parameter(self.flat[:, start:start + size].view(self.k, *self.shapes[name]))
            p.grad = self.grad[:, start:start + size].view(self.k, *self.shapes[name])
            self.params[name] = p

    def parameters(self) -> list[nn.Parameter]:
        return list(self.params.values())

    def train(self, mode: bool = True) -> None:
        self.training = mode

    def zero_grad(self) -> None:
        """Zero the gradient buffer in place (autograd accumulates into its views)."""
        self.grad.zero_()

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the members at ``rows`` (a 1-d index tensor), in that order."""
        self.flat = self.flat[rows].contiguous()
        self.grad = torch.zeros_like(self.flat)
        self.buffers = {n: b[rows].contiguous() for n, b in self.buffers.items()}
        self.k = self.flat.shape[0]
        self._views()

    @torch.no_grad()
    def load_member(self, j: int, module: nn.Module, batches_tracked: int) -> nn.Module:
        """Copy member ``j``'s parameters and buffers into its lone ``module``."""
        for name, p in module.named_parameters():
            p.copy_(self.params[name][j])
        for name, b in module.named_buffers():
            if name.endswith("num_batches_tracked"):
                b.fill_(batches_tracked)
            else:
                b.copy_(self.buffers[name][j])
        return module

    def _p(self, prefix: str, name: str) -> torch.Tensor | None:
        """Parameter ``prefix.name`` as one tensor: ``(K, a, b, ...)`` -> ``(K*a, b, ...)``;
        convolution weights in channels_last when the net uses it (one copy either way)."""
        p = self.params.get(f"{prefix}.{name}")
        if p is None:
            return None
        if p.ndim == 5 and self.channels_last:  # (K, a, b, h, w) -> (K*a, b, h, w), NHWC strides
            k, a, b, h, w = p.shape
            return p.permute(0, 1, 3, 4, 2).reshape(k * a, h, w, b).permute(0, 3, 1, 2)
        return p.reshape(self.k * p.shape[1], *p.shape[2:])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Forward the fused input: ``(B, K*latent)`` for a generator, ``(B, K*C, H, W)``
        for a discriminator; a final ``Flatten(0)`` returns ``(B, K)`` logits."""
        k = self.k
        if self.channels_last and x.ndim == 4:
            # oneDNN's (and cuDNN's) fast layout, as in the lone models (ablate.train.build).
            x = x.contiguous(memory_format=torch.channels_last)
        for i, m in enumerate(self.layers):
            kind = type(m)
            if kind is nn.Conv2d:
                x = F.conv2d(x, self._p(str(i), "weight"), self._p(str(i), "bias"), m.stride,
                             m.padding, m.dilation, groups=k)
            elif kind is nn.ConvTranspose2d:
                x = F.conv_transpose2d(x, self._p(str(i), "weight"), self._p(str(i), "bias"),
                                       m.stride, m.padding, m.output_padding, k, m.dilation)
            elif kind is nn.BatchNorm2d:
                x = F.batch_norm(x, self.buffers[f"{i}.running_mean"].view(-1),
                                 self.buffers[f"{i}.running_var"].view(-1),
                                 self._p(str(i), "weight"), self._p(str(i), "bias"),
                                 self.training, m.momentum, m.eps)
            elif kind is nn.Unflatten:
                x = x.reshape(x.shape[0], k * m.unflattened_size[0], *m.unflattened_size[1:])
            elif kind is nn.Flatten:
                x = x.reshape(x.shape[0], k)
            else:
                x = m(x)
        return x


class FusedAdam:
    """Adam over a :class:`FusedSequential`'s ``(K, P)`` buffer, per-member settings.

    The same arithmetic as ``torch.optim.Adam`` (foreach, L2 weight decay added to the
    gradient, eps 1e-8): bias corrections in float64, applied as float32 like the
    Python scalars torch uses, so a member's update matches its lone optimizer's up to
    kernel rounding. Everything stays on the device (no host sync; CUDA-graph safe).
    """

    EPS = 1e-8  # torch.optim.Adam's default; ablate's Optimizer does not change it

    def __init__(self, net: FusedSequential, specs: Sequence[Optimizer]) -> None:
        dev = net.flat.device

        def col(values):
            return torch.tensor(values, dtype=torch.float64, device=dev).reshape(-1, 1)

        self.net = net
        self.lr = col([s.lr for s in specs])
        self.beta1 = col([s.betas[0] for s in specs])
        self.beta2 = col([s.betas[1] for s in specs])
        self.weight_decay = col([s.weight_decay for s in specs])
        self.decay = any(s.weight_decay != 0 for s in specs)
        self.exp_avg = torch.zeros_like(net.flat)
        self.exp_avg_sq = torch.zeros_like(net.flat)
        self.steps = torch.zeros((), dtype=torch.float64, device=dev)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep the optimizer state of the members at ``rows`` (call with the net's keep)."""
        for name in ("lr", "beta1", "beta2", "weight_decay", "exp_avg", "exp_avg_sq"):
            setattr(self, name, getattr(self, name)[rows].contiguous())

    @torch.no_grad()
    def step(self) -> None:
        p, g = self.net.flat, self.net.grad
        f32 = p.dtype
        self.steps += 1
        if self.decay:
            g = g.add(p * self.weight_decay.to(f32))
        self.exp_avg.lerp_(g, (1 - self.beta1).to(f32))
        self.exp_avg_sq.mul_(self.beta2.to(f32)).addcmul_(g * (1 - self.beta2).to(f32), g)
        step_size = (-self.lr / (1 - self.beta1 ** self.steps)).to(f32)
        bc2_sqrt = (1 - self.beta2 ** self.steps).sqrt().to(f32)
        denom = self.exp_avg_sq.sqrt().div_(bc2_sqrt).add_(self.EPS)
        # torch's addcdiv computes self + (value * t1) / t2: the same order here.
        p.add_(torch.mul(self.exp_avg, step_size).div_(denom))
