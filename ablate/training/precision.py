"""The bf16 training path (``precision = "bf16"``): autocast forwards, tuned for the CPU.

fp32 master weights, optimizer state and losses; G and D forwards run under bf16
autocast (:class:`Autocast`) and return fp32. Evaluation and the feature nets never see
autocast. In fp32 :func:`forwards` returns G and D themselves and :func:`make_optimizer`
the foreach optimizers, as before (tests/test_hack_api_identity.py); of the tunings
below only ``g_grads_only``, which changes no number, acts there too.

Tuning (issue #21 item 2; measured in benchmarks/bench_bf16.py, figures in
benchmarks/README.md), each switch in :data:`TUNING` so that the benchmark can time
the untuned path beside the tuned one:

* ``projection``: G's first layer, a transposed convolution from a 1x1 input (a dense
  layer), runs as one bf16 matmul under autocast. oneDNN has no fast kernel for it
  (the generic path, forward and backward); the matmul gives the same sums
  (out[b, o, i, j] = sum_c z[b, c] w[c, o, i, j]) with fp32 accumulation, read
  straight from the channels_last weight and written channels_last.
* ``allocator``: on glibc, freed blocks up to 32 MiB stay in the heap
  (``mallopt(M_MMAP_THRESHOLD)``, ``M_TRIM_THRESHOLD``) instead of going back to the
  system: the step's activations and gradients (0.1-2 MiB each) were mmap'd and
  unmapped every step, ~1,500 page faults per step at ngf = 64. Process-wide and kept
  for the process's life (a later fp32 run in it is faster, its numbers unchanged);
  set once, from :func:`forwards`, on the CPU only.
* ``fused_adam``: Adam's fused CPU kernel (one pass over each tensor) instead of the
  foreach one, for bf16 runs only: its rounding differs from foreach in the last bit,
  so the fp32 path keeps foreach.
* ``g_grads_only`` (both precisions): G's loss is differentiated for G's parameters
  only (the plain step's ``backward(inputs=...)``): D's weight gradients from G's loss
  were computed and then discarded by the next D update, 8% of the step's FLOPs (2.68
  -> 2.46 GFLOP at ngf = 32, 10.29 -> 9.44 at 64). The same numbers bit for bit, in
  fp32 and bf16 (tests/test_bf16.py); the hooked path and runs with an after_step hook
  (a plugin may read D's gradients there) keep every leaf.
"""

from __future__ import annotations

import ctypes
import types

import torch
from torch import nn

from ablate.errors import ConfigError
from ablate.hacks.recipe import Optimizer

# Which tunings apply (benchmarks flip them to time the untuned path); all but
# g_grads_only act in bf16 only.
TUNING = {"projection": True, "allocator": True, "fused_adam": True, "g_grads_only": True}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
_allocator_tuned = False


class Autocast(nn.Module):
    """Runs ``inner`` under bf16 autocast and returns float32 (losses stay in fp32)."""

    def __init__(self, inner: nn.Module, device_type: str) -> None:
        super().__init__()
        self.inner, self.device_type = inner, device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.inner(x).float()


def _is_projection(m: nn.Module) -> bool:
    return (isinstance(m, nn.ConvTranspose2d) and m.stride == (1, 1) and m.padding == (0, 0)
            and m.output_padding == (0, 0) and m.dilation == (1, 1) and m.groups == 1)


def _projection_forward(self: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1-input transposed convolution as one matmul, under autocast only."""
    if x.shape[-2:] != (1, 1) or not torch.is_autocast_enabled(x.device.type):
        return nn.ConvTranspose2d.forward(self, x)
    w = self.weight  # (Cin, Cout, kH, kW); channels_last: memory (Cin, kH, kW, Cout)
    cin, cout, kh, kw = w.shape
    y = torch.mm(x.reshape(x.shape[0], cin), w.permute(0, 2, 3, 1).reshape(cin, kh * kw * cout))
    y = y.view(x.shape[0], kh, kw, cout).permute(0, 3, 1, 2)  # channels_last, no copy
    return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


def tune(module: nn.Module) -> None:
    """Apply the bf16 path's module tunings to ``module`` in place (state_dict unchanged:
    only instance ``forward`` attributes, which act under autocast only)."""
    if TUNING["projection"]:
        for m in module.modules():
            if _is_projection(m):
                m.forward = types.MethodType(_projection_forward, m)


def tune_allocator() -> bool:
    """Keep freed blocks up to 32 MiB in glibc's heap, once per process (see above);
    False where there is no glibc."""
    global _allocator_tuned
    if not _allocator_tuned:
        try:
            libc = ctypes.CDLL("libc.so.6")
            _allocator_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
                                    and libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20))
        except (OSError, AttributeError):
            return False
    return _allocator_tuned


def forwards(g: nn.Module, d: nn.Module, precision: str, device: torch.device
             ) -> tuple[nn.Module, nn.Module]:
    """The modules the training step calls for G and D: themselves in fp32, their tuned
    :class:`Autocast` wrappers in bf16 (g and d stay plain for saving and evaluation)."""
    if precision != "bf16":
        return g, d
    if TUNING["allocator"] and device.type == "cpu":
        tune_allocator()
    tune(g)
    tune(d)
    return Autocast(g, device.type), Autocast(d, device.type)


def make_optimizer(params, spec: Optimizer, device: torch.device, precision: str = "fp32"
                   ) -> torch.optim.Optimizer:
    """The Recipe's optimizer over fp32 parameters (foreach; fused Adam in tuned bf16)."""
    if spec.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=spec.lr, weight_decay=spec.weight_decay, foreach=True)
    if spec.name != "adam":
        raise ConfigError(f"unknown optimizer {spec.name!r}; valid: adam, rmsprop")
    if precision == "bf16" and TUNING["fused_adam"]:
        return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas,
                                weight_decay=spec.weight_decay, fused=True)
    return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay,
                            foreach=True)


def g_grad_inputs(opt_g: torch.optim.Optimizer) -> list[torch.Tensor] | None:
    """The leaves G's loss is differentiated for: G's optimized parameters (D's weight
    gradients from G's loss are never used: the next D update sets them to None); None
    (every leaf) with the ``g_grads_only`` tuning off."""
    if not TUNING["g_grads_only"]:
        return None
    return [p for group in opt_g.param_groups for p in group["params"] if p.requires_grad]


__all__ = ["TUNING", "Autocast", "forwards", "g_grad_inputs", "make_optimizer", "tune", "tune_allocator"]
