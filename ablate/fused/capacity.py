"""How many members a fused group can hold on a device: measured, not guessed.

:func:`member_memory` runs two fused training steps at two group sizes on random
inputs and reads the peak memory each needed (``torch.cuda.max_memory_allocated`` on a
GPU; the process's peak resident set on the CPU, which only grows, so the CPU figure is
a coarse upper bound); the slope is the memory one member adds.
:func:`max_group_size` divides the free memory by it.
"""

from __future__ import annotations

import dataclasses
import os
import resource
from dataclasses import dataclass

import torch

from ablate.data import dataset_spec
from ablate.environment import resolve_device
from ablate.fused.modules import FusedAdam, FusedSequential
from ablate.fused.step import FusedOptions, Step, Targets
from ablate.training.models import sample_latent
from ablate.training.loop import TrainPlan, build


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of a fused group: ``fixed + per_member * K`` bytes."""

    per_member: int
    fixed: int
    device: str
    measured_at: tuple[int, int]  # the two group sizes measured

    def bytes_for(self, k: int) -> int:
        return self.fixed + self.per_member * k


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _peak(plan: TrainPlan, k: int, device: torch.device, options: FusedOptions) -> int:
    """Peak bytes of two fused steps of ``k`` copies of ``plan`` (seeds plan.seed + i)."""
    config = plan.config
    shape = dataset_spec(config.dataset).shape
    bs = config.batch_size
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        plans = [dataclasses.replace(plan, config=dataclasses.replace(config, seed=config.seed + i))
                 for i in range(k)]
        built = [build(p, shape, device) for p in plans]
        g = FusedSequential([b[0] for b in built], device, options.channels_last)
        d = FusedSequential([b[1] for b in built], device, options.channels_last)
        del built
        step = Step(g, d, FusedAdam(g, [p.recipe.g_optimizer for p in plans]),
                     FusedAdam(d, [p.recipe.d_optimizer for p in plans]), config, plan.recipe,
                     device, dataclasses.replace(options, cuda_graph=False))
        targets = Targets([p.recipe for p in plans], device)
        gens = [torch.Generator(device).manual_seed(i) for i in range(k)]
        for _ in range(2):
            d_steps = plan.recipe.d_steps
            reals = [torch.rand(bs, k * shape[0], *shape[1:], device=device) for _ in range(d_steps)]
            zs = [torch.stack([sample_latent(plan.recipe, bs, config.latent_dim, gen, device)
                               for gen in gens], dim=1).reshape(bs, -1) for _ in range(d_steps)]
            drawn = [targets.draw(gens, bs, device) for _ in range(d_steps)]
            step(reals, zs, [t[0] for t in drawn], [t[1] for t in drawn])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    return _peak_rss()


def member_memory(plan: TrainPlan, device: str | torch.device | None = None,
                  ks: tuple[int, int] = (2, 4), options: FusedOptions = FusedOptions()  # noqa: B008 (frozen)
                  ) -> MemoryEstimate:
    """Measure the memory of a fused group of ``plan``'s architecture at two sizes."""
    dev = resolve_device(str(device or plan.config.device))
    lo, hi = sorted(ks)
    p_lo, p_hi = _peak(plan, lo, dev, options), _peak(plan, hi, dev, options)
    per = max(0, (p_hi - p_lo) // (hi - lo))
    return MemoryEstimate(per_member=per, fixed=max(0, p_lo - per * lo), device=str(dev),
                          measured_at=(lo, hi))


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` (GPU: the driver's count; CPU: available RAM)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def max_group_size(plan: TrainPlan, device: str | torch.device | None = None,
                   fraction: float = 0.8, cap: int = 64,
                   estimate: MemoryEstimate | None = None) -> int:
    """The largest K whose measured memory fits ``fraction`` of the free memory (<= cap).

    ``cap`` bounds K where memory does not: beyond some K a step stops getting
    cheaper per member (benchmarks/README.md, "Fused training").
    """
    dev = resolve_device(str(device or plan.config.device))
    est = estimate or member_memory(plan, dev)
    budget = free_memory(dev) * fraction - est.fixed
    if est.per_member <= 0:
        return cap
    return int(max(1, min(cap, budget // est.per_member)))
