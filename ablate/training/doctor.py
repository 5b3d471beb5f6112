"""Know the machine: which training precision pays here, measured rather than assumed.

:func:`diagnose` measures, side by side in one process,

* the **roofs**: fp32 and bf16 GFLOP/s of an n×n×n matmul (median of a few repetitions);
* **ablate's own training step**: the all-on DCGAN (every built-in hack) at a given
  width, batch 64, on ablate's synthetic ``fake`` data (1×28×28, Fashion-MNIST's shape,
  so no dataset is needed), once in fp32 and once under bf16 autocast — the
  ``precision = "bf16"`` path of :mod:`ablate.training.loop` (tuned, in
  :mod:`ablate.training.precision`) — built by ablate's own builders,

and returns a frozen :class:`Diagnosis` whose ``verdict`` says which precision pays and
by how much. Nothing here prints; ``ablate doctor`` (ablate/cli/doctor.py) and
``make bench`` (benchmarks/run_all.py) print it.

On a CUDA device the same measurement runs on the GPU (synchronised timings, cuda
autocast); that path is kept simple and has not been run on a GPU by its tests.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ablate.hacks import registry
from ablate.config import TrainConfig
from ablate.data import load, scale
from ablate.environment import hardware, resolve_device, threads_for
from ablate.hacks.interactions import select_hooks
from ablate.training.models import sample_latent
from ablate.training.resolve import resolve
from ablate.training.loop import D_UPDATES, _targets, build
from ablate.training.precision import forwards, g_grad_inputs, make_optimizer

# bf16 "pays" only from a 10% faster step: contended timings drift by a few percent, and
# switching precision changes every run key (a new experiment), which a smaller gain
# does not justify.
PAYS_AT = 1.10
CPU_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")  # what decides the bf16 speed
BATCH = 64  # ablate's (and DCGAN's) batch size


@dataclass(frozen=True)
class Machine:
    """What runs the measurement: ``device`` ("cpu" or "cuda:N"), the CPU model or GPU
    name, the relevant CPU flags present (of :data:`CPU_FLAGS`, from /proc/cpuinfo),
    torch's CPU capability (``torch.backends.cpu.get_cpu_capability()``), the torch
    threads used, the CPU count, and ``bf16_unit``: what executes bf16 here ("AMX-BF16",
    "AVX512-BF16", "no BF16 instructions", or the GPU's compute capability)."""

    device: str
    name: str
    cpu: str
    flags: tuple[str, ...]
    capability: str
    threads: int
    bf16_unit: str
    cores: int | None = None  # os.cpu_count(): a load average above it means shared timings


@dataclass(frozen=True)
class Diagnosis:
    """The measured roofs and step rates, and what follows from them.

    Rates are medians over interleaved repetitions: ``roof_*`` in GFLOP/s of a
    ``matmul_n``³ matmul, ``step_*`` in training images/s of the all-on DCGAN at
    ``width`` (ngf = ndf), batch ``batch``. ``flops_per_step`` is one step's FLOPs
    (``torch.utils.flop_counter``, the same in both precisions).
    """

    machine: Machine
    matmul_n: int
    roof_fp32: float
    roof_bf16: float
    width: int
    batch: int
    step_fp32: float
    step_bf16: float
    flops_per_step: int
    rounds: int
    wall_s: float
    load_avg: float | None = None  # 1-minute load average at the end: how shared the timings were

    @property
    def ratio(self) -> float:
        """bf16 step rate / fp32 step rate (above 1: bf16 is faster)."""
        return self.step_bf16 / self.step_fp32

    @property
    def roof_ratio(self) -> float:
        """bf16 roof / fp32 roof."""
        return self.roof_bf16 / self.roof_fp32

    @property
    def bf16_pays(self) -> bool:
        """Whether the bf16 step is at least :data:`PAYS_AT` times the fp32 step."""
        return self.ratio >= PAYS_AT

    @property
    def precision(self) -> str:
        """The precision that pays here: ``"bf16"`` or ``"fp32"``."""
        return "bf16" if self.bf16_pays else "fp32"

    @property
    def roof(self) -> float:
        """The right roof: the bf16 one where bf16 pays, else the fp32 one (GFLOP/s)."""
        return self.roof_bf16 if self.bf16_pays else self.roof_fp32

    def share(self, precision: str) -> float:
        """The step in ``precision`` as a share of that precision's roof (0..1)."""
        step, roof = (self.step_bf16, self.roof_bf16) if precision == "bf16" else (self.step_fp32, self.roof_fp32)
        return self.flops_per_step * step / self.batch / 1e9 / roof

    @property
    def verdict(self) -> str:
        """One line: which precision pays here and by how much."""
        if self.bf16_pays:
            return f"bf16 pays: ×{self.ratio:.2f} a step ({self.machine.bf16_unit})"
        return f"fp32: bf16 is ×{self.ratio:.2f} here ({self.machine.bf16_unit})"

    @property
    def advice(self) -> str:
        """What the verdict means for a user's experiments."""
        if self.bf16_pays:
            return ('precision = "bf16" in an experiment\'s [budget] table (or `ablate train '
                    f'--precision bf16`) trains ×{self.ratio:.2f} faster here, but precision is '
                    "part of the run key: it is a different experiment, whose runs never mix "
                    "with the committed fp32 results")
        return ('keep precision = "fp32" (the default): bf16 does not speed training up here, '
                "and fp32 keeps the run keys of the committed results")

    def to_dict(self) -> dict[str, Any]:
        """The fields and the derived figures, as plain JSON values."""
        out = dataclasses.asdict(self)
        out["machine"]["flags"] = list(self.machine.flags)
        out.update(ratio=self.ratio, roof_ratio=self.roof_ratio, bf16_pays=self.bf16_pays,
                   precision=self.precision, roof=self.roof, share_fp32=self.share("fp32"),
                   share_bf16=self.share("bf16"), share=self.share(self.precision),
                   verdict=self.verdict, advice=self.advice)
        return out


def machine(device: torch.device) -> Machine:
    """The CPU (and GPU) facts that decide whether bf16 pays on ``device``."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags known
        text = ""
    present = next((set(line.split(":", 1)[1].split()) for line in text.splitlines()
                    if line.startswith("flags")), set())
    flags = tuple(f for f in CPU_FLAGS if f in present)
    info = hardware(device)
    cpu = str(info["cpu"])
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return Machine(str(device), str(info["gpu"]), cpu, flags, f"sm_{major}{minor}",
                       torch.get_num_threads(), f"CUDA sm_{major}{minor}", os.cpu_count())
    unit = ("AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags
            else "no BF16 instructions")
    return Machine(str(device), cpu, cpu, flags, torch.backends.cpu.get_cpu_capability(),
                   torch.get_num_threads(), unit, os.cpu_count())


def _timer(device: torch.device) -> Callable[[], float]:
    """``perf_counter`` that first waits for the device, so GPU work is inside the time."""
    if device.type == "cuda":
        def now() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return now
    return time.perf_counter


def matmul_rates(device: torch.device, n: int = 2048, reps: int = 5) -> tuple[float, float]:
    """Median fp32 and bf16 GFLOP/s of an n×n×n matmul on ``device``.

    The two dtypes alternate repetition by repetition (after one warm-up each), so that
    background load hits both alike."""
    now = _timer(device)
    pairs = {dt: (torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt))
             for dt in (torch.float32, torch.bfloat16)}
    times: dict[torch.dtype, list[float]] = {dt: [] for dt in pairs}
    for rep in range(reps + 1):
        for dt, (a, b) in pairs.items():
            t = now()
            a @ b
            if rep:  # the first is warm-up (oneDNN/cuBLAS kernel selection)
                times[dt].append(now() - t)
    fp32, bf16 = (2 * n ** 3 / statistics.median(times[dt]) / 1e9 for dt in pairs)
    return fp32, bf16


def _step(config: TrainConfig, device: torch.device) -> Callable[[], None]:
    """One training step of ablate's model as :func:`ablate.training.loop.train` runs it.

    Built by ablate's own builders (resolve, build, make_optimizer, forwards); the body
    is train()'s plain path (the one every built-in hack takes), minus the run
    directory, logging and divergence checks: D update(s) on a real and a fake batch,
    then the non-saturating G update. tests/test_doctor.py checks its FLOPs equal a
    train() step's.
    """
    plan = resolve(config)
    hooks = select_hooks(plan.hacks)
    if hooks.per_step or hooks.after_step:  # train()'s hooked path is not reproduced here
        raise ValueError("the doctor times the plain step; a hack with per-step hooks is enabled")
    recipe, bs = plan.recipe, config.batch_size
    data = load(config.dataset, "train")
    g, d = build(plan, data.shape, device)
    x_all = scale(data.images, recipe.data_range).to(device)
    gen = torch.Generator(device).manual_seed(config.seed)
    opt_g = make_optimizer(g.parameters(), recipe.g_optimizer, device, config.precision)
    opt_d = make_optimizer(d.parameters(), recipe.d_optimizer, device, config.precision)
    ones = torch.ones(bs, device=device)
    g_fwd, d_fwd = forwards(g, d, config.precision, device)
    g_inputs = g_grad_inputs(opt_g)  # as train() differentiates G's loss
    update_d = D_UPDATES[recipe.d_update]
    window = torch.zeros(4, device=device)  # train() keeps per-step stats on the device too
    g.train()
    d.train()

    def step() -> None:
        for _ in range(recipe.d_steps):
            real = x_all[torch.randint(len(x_all), (bs,), generator=gen, device=device)]
            fake = g_fwd(sample_latent(recipe, bs, config.latent_dim, gen, device))
            t_real, t_fake = _targets(recipe, bs, gen, device)
            loss_d, out_real, out_fake = update_d(d_fwd, opt_d, real, fake.detach(), t_real, t_fake)
        opt_g.zero_grad(set_to_none=True)
        loss_g = F.binary_cross_entropy_with_logits(d_fwd(fake), ones)
        loss_g.backward(inputs=g_inputs)
        opt_g.step()
        window.copy_(torch.stack([loss_d, loss_g.detach(), out_real.sigmoid().mean(),
                                  out_fake.sigmoid().mean()]))

    return step


def step_config(width: int = 32, precision: str = "fp32", device: str = "cpu",
                batch: int = BATCH) -> TrainConfig:
    """The TrainConfig the doctor times: all-on, ``width``, ``fake`` data."""
    return TrainConfig(dataset="fake", hacks=tuple(registry.builtin_names()), ngf=width, ndf=width,
                       batch_size=batch, precision=precision, device=device)


def _flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step`` (``torch.utils.flop_counter``)."""
    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def step_rates(width: int, device: torch.device, rounds: int = 8, steps: int = 2, warmup: int = 2,
               batch: int = BATCH, budget_s: float = 25.0) -> tuple[float, float, int, int]:
    """Median fp32 and bf16 training images/s of the all-on step at ``width``, the FLOPs
    of one step, and the rounds timed.

    Both models live side by side; each round times ``steps`` steps of each precision,
    the order swapping every round (fp32, bf16, bf16, fp32, ...), so that background
    load hits both alike. Rounds stop at ``rounds``, or after two once ``budget_s``
    seconds are spent (a loaded machine gets fewer rounds, not a longer wait).
    """
    now = _timer(device)
    t0 = time.perf_counter()
    steps_by = {p: _step(step_config(width, p, str(device), batch), device) for p in ("fp32", "bf16")}
    for step in steps_by.values():
        for _ in range(warmup):  # oneDNN primitive creation, Adam state, allocator
            step()
    flops = _flops(steps_by["fp32"])  # autocast changes the dtype, not the arithmetic
    times: dict[str, list[float]] = {p: [] for p in steps_by}
    for r in range(rounds):
        if r >= 2 and time.perf_counter() - t0 > budget_s:
            break
        for p in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            t = now()
            for _ in range(steps):
                steps_by[p]()
            times[p].append(now() - t)
    fp32, bf16 = (steps * batch / statistics.median(times[p]) for p in steps_by)
    return fp32, bf16, flops, len(times["fp32"])


def diagnose(width: int = 32, threads: int | None = None, device: str = "auto", *,
             matmul_n: int = 2048, reps: int = 5, rounds: int = 8, steps: int = 2,
             batch: int = BATCH, budget_s: float = 25.0) -> Diagnosis:
    """Measure this machine's fp32 and bf16 roofs and ablate's step in each precision.

    ``threads`` sets torch's intra-op threads for the measurement (restored afterwards;
    None keeps the current count). The step rounds stop after ``budget_s`` seconds (at
    least two rounds), so the defaults take under a minute on a loaded 2-core CPU.
    """
    t0 = time.perf_counter()
    dev = resolve_device(device)
    with threads_for(threads):
        roof_fp32, roof_bf16 = matmul_rates(dev, matmul_n, reps)
        step_fp32, step_bf16, flops, rounds = step_rates(width, dev, rounds, steps, batch=batch,
                                                          budget_s=budget_s)
        info = machine(dev)
    try:
        load_avg = os.getloadavg()[0]
    except OSError:  # not available on this platform
        load_avg = None
    return Diagnosis(info, matmul_n, roof_fp32, roof_bf16, width, batch, step_fp32, step_bf16,
                     flops, rounds, time.perf_counter() - t0, load_avg)
