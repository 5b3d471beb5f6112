"""``ablate doctor``: this machine's fp32 and bf16 roofs, ablate's training step in each
precision, and which precision pays here (measured by :mod:`ablate.training.doctor`)."""

from __future__ import annotations

import argparse
import json

from ablate.experiment import execution

HELP = "measure which training precision (fp32 or bf16) pays on this machine"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=int, default=32, help="ngf = ndf of the timed all-on DCGAN")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")


def report(d) -> str:
    """The text ``ablate doctor`` prints for a :class:`~ablate.training.doctor.Diagnosis`."""
    m = d.machine
    flags = " ".join(m.flags) or "none of amx_bf16, avx512_bf16, avx512f, avx2"
    where = f"{m.name} (CPU: {m.cpu})" if m.device.startswith("cuda") else m.name
    n = d.matmul_n
    lines = [
        f"machine   {m.device}: {where}",
        f"          cpu flags: {flags}; torch CPU capability {m.capability}; "
        f"{m.threads} thread{'s' if m.threads != 1 else ''}",
        f"roofs     {n}x{n}x{n} matmul: fp32 {d.roof_fp32:,.0f} GFLOP/s, bf16 {d.roof_bf16:,.0f} GFLOP/s "
        f"(bf16/fp32 ×{d.roof_ratio:.2f})",
        f"step      all-on DCGAN, width {d.width}, batch {d.batch}, 1x28x28: fp32 {d.step_fp32:,.0f} img/s, "
        f"bf16 {d.step_bf16:,.0f} img/s (bf16/fp32 ×{d.ratio:.2f})",
        f"          {d.flops_per_step / 1e9:.2f} GFLOP a step: fp32 step at {100 * d.share('fp32'):.0f}% "
        f"of the fp32 roof, bf16 step at {100 * d.share('bf16'):.0f}% of the bf16 roof",
        f"roof      the right roof here is {d.precision}'s: {d.roof:,.0f} GFLOP/s, "
        f"{100 * d.share(d.precision):.0f}% of it reached",
        f"verdict   {d.verdict}",
        f"meaning   {d.advice}",
        f"measured in {d.wall_s:.0f} s, medians of {d.rounds} interleaved rounds"
        + (f"; 1-min load average {d.load_avg:.1f} (other work shares these timings)"
           if d.load_avg is not None else ""),
    ]
    if d.load_avg is not None and m.cores and d.load_avg > m.cores:
        # Oversubscribed cores slow multi-threaded steps far more than one big matmul.
        lines.append(f"note      the load average exceeds the {m.cores} CPUs: these timings are "
                     "contended; rerun on an idle machine"
                     + (" (or with --threads 1)" if m.threads > 1 else "") + " before relying on them")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ablate.training.doctor import diagnose  # import-time saving: loads torch

    threads = execution.check_threads(args.threads, "--threads", "inline")  # it times here
    d = diagnose(width=args.width, threads=threads, device=args.device)
    print(json.dumps(d.to_dict(), indent=2) if args.json else report(d))
    return 0
