"""Fused multi-run training: aggregate images/s of K runs fused vs lone runs and packing.

For each K, one child process trains a fused group of K runs (``ablate.fused.train_group``;
the members are the all-on variants that differ only in numbers — gaussian-init,
adam-dcgan, gaussian-latent, label-smoothing, noisy-labels off in turn — over seeds, or
with ``--all-off`` the all-off add-one-in variants) and reports its steady-state
aggregate training images/s (log windows after the first, so start-up, compilation and
CUDA-graph capture are excluded) and its peak memory (GPU: ``max_memory_allocated``;
CPU: the child's peak resident set). Baselines, measured on the same device in the
same run and interleaved with the fused runs over ``--rounds``:

* **lone**: one ``ablate.training.loop`` run (once per round). K separate lone runs one after
  another have this aggregate rate, whatever K.
* **packing** (``--pack K ...``): K lone runs as concurrent processes (``--pack-threads``
  threads each); their steady-state rates summed.

The table prints each as a ratio, the step time per K (flat = launch-bound, linear in
K = compute- or bandwidth-bound) and the share of the matmul roof reached: the fp32 roof,
or the bf16 one with ``--roof bf16`` (default: the ``--precision`` trained; ``make bench``
passes ``ablate doctor``'s verdict, bf16 where bf16 pays on the machine).

    python benchmarks/bench_fused.py --device cpu --ks 1 2 4 8 16 --steps 40 --pack 2
    python benchmarks/bench_fused.py --device cuda --ks 1 4 16 64 --steps 300 --pack 16
    python benchmarks/bench_fused.py --device cuda --ks 64 --cuda-graph --compile
    python benchmarks/bench_fused.py --formulations --ks 1 2 4 8 16   # grouped conv vs vmap
    python benchmarks/bench_fused.py --layers --ks 8                  # per-layer cost
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NUMERIC = ("gaussian-init", "adam-dcgan", "gaussian-latent", "label-smoothing", "noisy-labels")


# --------------------------------------------------------------------------------------
# Child: one measurement in its own process (so its peak memory is its own)
# --------------------------------------------------------------------------------------
def member_configs(spec: dict) -> list:
    """K TrainConfigs that fuse: numeric variants of all-on (or all-off), then seeds."""
    from ablate.hacks import registry
    from ablate.config import TrainConfig

    builtin = tuple(registry.builtin_names())
    if spec["all_off"]:
        variants = [()] + [(h,) for h in NUMERIC]
    else:
        variants = [builtin] + [tuple(h for h in builtin if h != x) for x in NUMERIC]
    return [TrainConfig(dataset=spec["dataset"], steps=spec["steps"], batch_size=spec["batch"],
                        seed=i // len(variants), hacks=variants[i % len(variants)],
                        ngf=spec["ngf"], ndf=spec["ngf"], device=spec["device"],
                        threads=spec["threads"], log_every=spec["log_every"],
                        precision=spec["precision"])
            for i in range(spec["k"])]


def child(spec: dict) -> dict:
    import torch

    from ablate.fused import FusedOptions, train_group
    from ablate.training.resolve import resolve
    from ablate.training.loop import train

    if spec["device"].startswith("cuda"):
        torch.backends.cudnn.allow_tf32 = spec["tf32"]
        torch.backends.cuda.matmul.allow_tf32 = spec["tf32"]
        torch.backends.cudnn.benchmark = spec["cudnn_benchmark"]
    options = FusedOptions(channels_last=not spec["nchw"], cuda_graph=spec["cuda_graph"],
                           compile=spec["compile"])

    def run(configs, root: Path) -> list[Path]:
        plans = [resolve(c) for c in configs]
        dirs = [root / f"m{i}" for i in range(len(plans))]
        if spec["mode"] == "lone":
            train(plans[0], dirs[0])
        else:
            train_group(plans, dirs, options=options)
        return dirs

    configs = member_configs(spec)
    with tempfile.TemporaryDirectory() as tmp:
        if spec["device"] == "cpu":  # warm-up: the dataset cache and oneDNN's kernels
            run([dataclasses.replace(c, steps=2, log_every=1) for c in configs], Path(tmp) / "warm")
        t, cpu = time.perf_counter(), time.process_time()
        dirs = run(configs, Path(tmp) / "run")
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        log = [json.loads(x) for x in (dirs[0] / "log.jsonl").read_text().splitlines()]
    first, last = log[0], log[-1]
    k, bs = len(configs), spec["batch"]
    rate = k * bs * (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"])
    if spec["device"].startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Images per CPU-second over the whole (warm) call: on a shared CPU the wall-clock
    # rate also counts time spent waiting for a core, this one does not.
    return {"k": k, "img_s": rate, "peak_bytes": peak, "wall_s": wall,
            "img_per_cpu_s": k * bs * spec["steps"] / cpu}


def run_child(spec: dict, n: int = 1, threads: int | None = None) -> list[dict]:
    """Run ``n`` copies of a child at once (packing when n > 1); their JSON results."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    procs = []
    for _ in range(n):
        procs.append(subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode:
            raise RuntimeError(f"child failed ({spec}):\n{stderr[-3000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


# --------------------------------------------------------------------------------------
# Formulations: grouped convolutions vs torch.func.vmap over stacked parameters
# --------------------------------------------------------------------------------------
def formulations(args) -> None:
    """Forward + backward of one training step's passes (D on real+fake, D on fake with
    G behind it), K members, three ways; interleaved rounds, best of each."""
    import copy

    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, stack_module_state, vmap

    from ablate.hacks import registry
    from ablate.config import TrainConfig
    from ablate.fused.modules import FusedSequential
    from ablate.training.resolve import resolve
    from ablate.training.loop import build

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    hacks = () if args.all_off else tuple(registry.builtin_names())
    bs, side = args.batch, 28

    def members(k):
        plans = [resolve(TrainConfig(dataset="fake", seed=i, ngf=args.ngf, ndf=args.ngf,
                                     hacks=hacks, device=args.device)) for i in range(k)]
        return [build(p, (1, side, side), dev) for p in plans]

    def lone_step():
        g, d = members(1)[0]

        def step():
            fake = g(torch.randn(bs, 100, device=dev))
            out = d(torch.cat([torch.rand(bs, 1, side, side, device=dev), fake.detach()]))
            F.binary_cross_entropy_with_logits(out, torch.ones_like(out)).backward()
            out = d(fake)
            F.binary_cross_entropy_with_logits(out, torch.ones_like(out)).backward()
        return step

    def grouped_step(k, channels_last):
        built = members(k)
        g = FusedSequential([b[0] for b in built], dev, channels_last)
        d = FusedSequential([b[1] for b in built], dev, channels_last)

        def step():
            fake = g(torch.randn(bs, k * 100, device=dev))
            out = d(torch.cat([torch.rand(bs, k, side, side, device=dev), fake.detach()]))
            F.binary_cross_entropy_with_logits(out, torch.ones_like(out), reduction="none").mean(0).sum().backward()
            out = d(fake)
            F.binary_cross_entropy_with_logits(out, torch.ones_like(out), reduction="none").mean(0).sum().backward()
        return step

    def vmap_step(k):
        built = members(k)
        gp, gb = stack_module_state([b[0] for b in built])
        dp, db = stack_module_state([b[1] for b in built])
        gt, dt = copy.deepcopy(built[0][0]).to("meta"), copy.deepcopy(built[0][1]).to("meta")
        fg = vmap(lambda p, b, x: functional_call(gt, (p, b), (x,)))
        fd = vmap(lambda p, b, x: functional_call(dt, (p, b), (x,)))

        def step():
            fake = fg(gp, gb, torch.randn(k, bs, 100, device=dev))
            out = fd(dp, db, torch.cat([torch.rand(k, bs, 1, side, side, device=dev), fake.detach()], 1))
            F.binary_cross_entropy_with_logits(out, torch.ones_like(out), reduction="none").mean(1).sum().backward()
            out = fd(dp, db, fake)
            F.binary_cross_entropy_with_logits(out, torch.ones_like(out), reduction="none").mean(1).sum().backward()
        return step

    # On the CPU, process CPU time: with one thread it is the work done, and on a shared
    # machine it does not count the time spent waiting for a core (wall time does).
    clock = time.perf_counter if dev.type == "cuda" else time.process_time

    def timed(step, n):
        for _ in range(2):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = clock()
        for _ in range(n):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (clock() - t) / n

    print(f"formulations: device={args.device} threads={args.threads} ngf=ndf={args.ngf} "
          f"batch {bs} {'all-off' if args.all_off else 'all-on'}; fwd+bwd of one step's passes; "
          f"speed-up = K x lone step / fused step; best of {args.rounds} rounds; "
          f"{'wall' if dev.type == 'cuda' else 'process CPU'} time", flush=True)
    lone = lone_step()
    print(f"{'K':>3} {'lone ms':>8} {'grouped NHWC':>14} {'grouped NCHW':>14} {'vmap':>14}")
    for k in args.ks:
        ways = {"grouped NHWC": grouped_step(k, True), "grouped NCHW": grouped_step(k, False),
                "vmap": vmap_step(k)}
        best = {name: float("inf") for name in ways}
        base = float("inf")
        n = max(2, args.steps // k)
        for _ in range(args.rounds):
            base = min(base, timed(lone, n))
            for name, step in ways.items():
                best[name] = min(best[name], timed(step, n))
        print(f"{k:>3} {base * 1e3:>8.1f} " + " ".join(
            f"{k * base / best[name]:>13.2f}x" for name in ways), flush=True)


# --------------------------------------------------------------------------------------
# Layers: where fusion gains and where it cannot
# --------------------------------------------------------------------------------------
def layers(args) -> None:
    """Forward + backward of the all-on model's convolutions at width ``--ngf``, alone and
    as one grouped convolution of K members (per member), and each one's FLOP rate."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    clock = time.perf_counter if dev.type == "cuda" else time.process_time
    w, bs = args.ngf, args.batch
    specs = [("D conv 1->w, 28->14", 1, w, 28, False), ("D conv w->2w, 14->7", w, 2 * w, 14, False),
             ("G convT 2w->w, 7->14", 2 * w, w, 7, True), ("G convT w->1, 14->28", w, 1, 14, True)]
    print(f"layers: device={args.device} threads={args.threads} width {w} batch {bs}, "
          f"4x4 stride-2, channels_last; fwd+bwd per member, best of {args.rounds}; "
          f"{'wall' if dev.type == 'cuda' else 'process CPU'} time")
    for name, cin, cout, side, transposed in specs:
        row = []
        for k in sorted({1, *args.ks}):
            x = torch.randn(bs, k * cin, side, side, device=dev).contiguous(
                memory_format=torch.channels_last).requires_grad_()
            shape = (k * cin, cout, 4, 4) if transposed else (k * cout, cin, 4, 4)
            wt = torch.randn(shape, device=dev).contiguous(memory_format=torch.channels_last).requires_grad_()

            def op(x=x, wt=wt, k=k, transposed=transposed):  # bound now: timed in this iteration
                if transposed:
                    return F.conv_transpose2d(x, wt, None, 2, 1, 0, k)
                return F.conv2d(x, wt, None, 2, 1, 1, k)

            out = op()
            grad = torch.randn_like(out)
            flops = 3 * 2 * out.numel() // k * (cin if not transposed else cout) * 16  # fwd + 2 bwd
            if transposed:
                flops = 3 * 2 * x.numel() // k * cout * 16
            best = float("inf")
            for _ in range(args.rounds):
                torch.autograd.grad(op(), (x, wt), grad)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = clock()
                for _ in range(4):
                    torch.autograd.grad(op(), (x, wt), grad)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                best = min(best, (clock() - t) / 4 / k)
            row.append(f"K={k}: {best * 1e3:6.2f} ms {flops / best / 1e9:5.0f} GFLOP/s")
        print(f"  {name:<22} " + " | ".join(row), flush=True)


# --------------------------------------------------------------------------------------
# Main: fused K vs lone vs packing
# --------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--steps", type=int, default=40, help="steps per measurement (4 log windows)")
    p.add_argument("--ngf", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--all-off", action="store_true")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--roof", choices=["fp32", "bf16"], help="the roof the share is of (default: --precision)")
    p.add_argument("--pack", type=int, nargs="*", default=[], help="Ks to measure packing at")
    p.add_argument("--pack-threads", type=int, default=1)
    p.add_argument("--no-tf32", action="store_true", help="GPU: cuDNN/cuBLAS in full fp32")
    p.add_argument("--cudnn-benchmark", action="store_true")
    p.add_argument("--nchw", action="store_true", help="fused model in NCHW, not channels_last")
    p.add_argument("--cuda-graph", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--formulations", action="store_true")
    p.add_argument("--layers", action="store_true", help="per-layer cost, lone vs grouped")
    p.add_argument("--no-lone", action="store_true", help="skip the lone baseline (ratios vs --lone-img-s)")
    p.add_argument("--lone-img-s", type=float, help="a lone rate measured earlier (with --no-lone)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    cores = os.cpu_count() or 1
    args.threads = args.threads or (cores if args.device == "cpu" else 1)
    if args.formulations:
        formulations(args)
        return
    if args.layers:
        layers(args)
        return
    base = {"device": args.device, "dataset": args.dataset, "ngf": args.ngf, "batch": args.batch,
            "threads": args.threads, "all_off": args.all_off, "precision": args.precision,
            "tf32": not args.no_tf32, "cudnn_benchmark": args.cudnn_benchmark, "nchw": args.nchw,
            "cuda_graph": args.cuda_graph, "compile": args.compile,
            "log_every": max(1, args.steps // 4)}
    load = os.getloadavg()[0]
    print(f"device={args.device} dataset={args.dataset} ngf=ndf={args.ngf} batch {args.batch} "
          f"{'all-off' if args.all_off else 'all-on'} group, {args.steps} steps per K, "
          f"threads={args.threads}, precision={args.precision}, tf32={not args.no_tf32}, "
          f"layout={'NCHW' if args.nchw else 'channels_last'}, cuda_graph={args.cuda_graph}, "
          f"compile={args.compile}, cudnn.benchmark={args.cudnn_benchmark}; "
          f"1-min load average {load:.1f} on {cores} CPUs", flush=True)
    fused: dict[int, list[dict]] = {k: [] for k in args.ks}
    lone: list[dict] = []
    packed: dict[int, list[float]] = {k: [] for k in args.pack}
    for _ in range(args.rounds):
        if not args.no_lone:
            lone += run_child({**base, "mode": "lone", "k": 1, "steps": args.steps})
        for k in args.ks:
            fused[k] += run_child({**base, "mode": "fused", "k": k, "steps": args.steps})
        for k in args.pack:
            spec = {**base, "mode": "lone", "k": 1, "steps": args.steps, "threads": args.pack_threads}
            packed[k].append(sum(r["img_s"] for r in run_child(spec, n=k, threads=args.pack_threads)))
    lone_rate = statistics.median(r["img_s"] for r in lone) if lone else args.lone_img_s
    lone_mem = statistics.median(r["peak_bytes"] for r in lone) if lone else 0
    if not lone_rate:
        raise SystemExit("--no-lone needs --lone-img-s")
    roof, flops = None, None
    sys.path.insert(0, str(HERE))
    try:
        import torch

        from bench_train import flops_per_step, matmul_roof

        if args.device == "cpu":
            torch.set_num_threads(args.threads)
        args.roof = args.roof or args.precision
        roof = matmul_roof(torch.device(args.device),
                           dtype=torch.bfloat16 if args.roof == "bf16" else torch.float32)
        flops = flops_per_step(args.dataset, args.ngf) / 64 if not args.all_off else None
    except Exception as exc:  # the table stands without the roof line
        print(f"(no roof figures: {type(exc).__name__}: {exc})")
    if lone:
        print(f"lone run: {lone_rate:.0f} img/s (median of {len(lone)}), peak memory "
              f"{lone_mem / 2**20:.0f} MiB"
              + (f", {statistics.median(r['img_per_cpu_s'] for r in lone):.0f} img/CPU-s"
                 if args.device == "cpu" else ""))
    else:
        print(f"lone run: {lone_rate:.0f} img/s (given, not measured here)")
    if roof:
        print(f"{args.roof} matmul roof {roof:.0f} GFLOP/s" + (f"; all-on {flops / 1e6:.1f} MFLOP per "
                                                         f"image (train step)" if flops else ""))
    cpu = args.device == "cpu"
    lone_cpu = statistics.median(r["img_per_cpu_s"] for r in lone) if lone else None
    print(f"{'K':>3} {'fused img/s':>12} {'vs lone':>8} {'step ms':>8} {'peak MiB':>9} "
          f"{'MiB/member':>10} {'roof':>5} {'packed img/s':>13} {'fused/packed':>12}"
          + (f" {'img/CPU-s':>10} {'vs lone':>8}" if cpu and lone_cpu else ""))
    rows = []
    for k in args.ks:
        rate = statistics.median(r["img_s"] for r in fused[k])
        peak = statistics.median(r["peak_bytes"] for r in fused[k])
        step_ms = k * args.batch / rate * 1e3
        share = f"{100 * rate * flops / 1e9 / roof:>4.0f}%" if roof and flops else "    -"
        pk = statistics.median(packed[k]) if packed.get(k) else None
        per_cpu = statistics.median(r["img_per_cpu_s"] for r in fused[k])
        row = {"k": k, "fused_img_s": rate, "lone_img_s": lone_rate, "ratio": rate / lone_rate,
               "step_ms": step_ms, "peak_bytes": peak, "packed_img_s": pk,
               "img_per_cpu_s": per_cpu, "lone_img_per_cpu_s": lone_cpu}
        rows.append(row)
        print(f"{k:>3} {rate:>12.0f} {rate / lone_rate:>7.2f}x {step_ms:>8.1f} {peak / 2**20:>9.0f} "
              + (f"{(peak - lone_mem) / 2**20 / k:>10.1f} " if lone else f"{'-':>10} ") + f"{share} "
              + (f"{pk:>13.0f} {rate / pk:>11.2f}x" if pk else f"{'-':>13} {'-':>12}")
              + (f" {per_cpu:>10.0f} {per_cpu / lone_cpu:>7.2f}x" if cpu and lone_cpu else ""),
              flush=True)
    for k in args.pack:
        if k not in args.ks:
            print(f"packing K={k}: {statistics.median(packed[k]):.0f} img/s "
                  f"({statistics.median(packed[k]) / lone_rate:.2f}x lone)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "lone_img_s": lone_rate,
                                               "rows": rows, "packed": packed, "roof": roof,
                                               "flops_per_image": flops}, indent=1))


if __name__ == "__main__":
    main()
