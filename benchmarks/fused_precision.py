"""Do TF32 or bf16 change the ablation's answers? The same fused group under each setting.

Trains one fused group — the all-on variants that differ only in numbers (gaussian-init,
adam-dcgan, gaussian-latent, label-smoothing, noisy-labels off in turn) over two or more
seeds — once per numeric setting (``fp32``: TF32 off in cuDNN and cuBLAS; ``tf32``:
TF32 on, PyTorch's default for convolutions; ``bf16``: autocast), from the same
initialisation and random streams, scores every member with classifier-feature FID
(``evaluate_group``), and compares, on the log-FID scale the report uses:

* |log FID(setting) - log FID(fp32)| per run: what the setting changes in one run;
* |log FID(seed a) - log FID(seed b)| within a variant under fp32: the seed spread
  every verdict already has to beat;
* each hack's contrast (log FID of "-hack" minus all-on, seed-averaged) per setting.

A setting keeps the ablation comparable when its per-run change is well inside the
seed spread and it moves no contrast by more than a fraction of that spread.

    python benchmarks/fused_precision.py --device cuda --seeds 2 --steps 1000 --n 2000
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

NUMERIC = ("gaussian-init", "adam-dcgan", "gaussian-latent", "label-smoothing", "noisy-labels")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--ngf", type=int, default=32)
    p.add_argument("--n", type=int, default=2000, help="samples per FID")
    p.add_argument("--settings", nargs="+", default=["fp32", "tf32", "bf16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    import torch

    from ablate.hacks import registry
    from ablate.config import EvalProtocol, TrainConfig
    from ablate.fused import evaluate_group, train_group
    from ablate.training.resolve import resolve

    if args.threads:
        torch.set_num_threads(args.threads)
    builtin = tuple(registry.builtin_names())
    variants = {"all-on": builtin, **{f"-{x}": tuple(h for h in builtin if h != x) for x in NUMERIC}}
    names = [(v, s) for s in range(args.seeds) for v in variants]
    protocol = EvalProtocol(features=("classifier",), n=args.n, kid_subsets=10,
                            kid_subset_size=min(1000, args.n))
    fid: dict[str, dict[tuple[str, int], float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings:
            tf32 = setting != "fp32"
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
            plans = [resolve(TrainConfig(dataset=args.dataset, steps=args.steps, seed=s,
                                         hacks=variants[v], ngf=args.ngf, ndf=args.ngf,
                                         device=args.device, log_every=max(1, args.steps // 4),
                                         precision="bf16" if setting == "bf16" else "fp32"))
                     for v, s in names]
            dirs = [Path(tmp) / setting / f"{v}-s{s}" for v, s in names]
            t = time.perf_counter()
            results = train_group(plans, dirs)
            t_train = time.perf_counter() - t
            done = [d for d, r in zip(dirs, results) if r.status == "done"]
            docs = dict(zip(done, evaluate_group(done, protocol, args.device)))
            fid[setting] = {n: docs[d]["last"]["classifier"].get("fid", math.nan) if d in docs
                            else math.nan for n, d in zip(names, dirs)}
            print(f"{setting}: trained {len(plans)} runs x {args.steps} steps in {t_train:.1f} s "
                  f"({len(done)} finished); FID median {statistics.median(fid[setting].values()):.2f}",
                  flush=True)
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default again
    ref = "fp32" if "fp32" in fid else args.settings[0]
    logf = {s: {n: math.log(v) for n, v in f.items() if v > 0 and math.isfinite(v)} for s, f in fid.items()}
    spread = [abs(logf[ref][(v, a)] - logf[ref][(v, b)]) for v in variants
              for a in range(args.seeds) for b in range(a + 1, args.seeds)
              if (v, a) in logf[ref] and (v, b) in logf[ref]]
    seed_spread = statistics.mean(spread) if spread else math.nan

    def contrasts(lf):
        out = {}
        for v in variants:
            if v == "all-on":
                continue
            diffs = [lf[(v, s)] - lf[("all-on", s)] for s in range(args.seeds)
                     if (v, s) in lf and ("all-on", s) in lf]
            out[v] = statistics.mean(diffs) if diffs else math.nan
        return out

    base_c = contrasts(logf[ref])
    print(f"seed spread under {ref}: mean |log FID(seed a) - log FID(seed b)| = {seed_spread:.3f} "
          f"({len(spread)} pairs)")
    report = {"seed_spread": seed_spread, "settings": {}, "fid": {s: {f"{v}-s{k}": x for (v, k), x in f.items()}
                                                                for s, f in fid.items()}}
    for setting in args.settings:
        if setting == ref:
            continue
        per_run = [abs(logf[setting][n] - logf[ref][n]) for n in names
                   if n in logf[setting] and n in logf[ref]]
        c = contrasts(logf[setting])
        moved = {v: c[v] - base_c[v] for v in c}
        worst = max((abs(x) for x in moved.values() if math.isfinite(x)), default=math.nan)
        change = statistics.mean(per_run) if per_run else math.nan
        if not math.isfinite(seed_spread):
            verdict = "undecided (no seed spread: use --seeds 2 or more)"
        elif change < 0.5 * seed_spread and worst < 0.5 * seed_spread:
            verdict = "comparable"
        else:
            verdict = "NOT comparable"
        print(f"{setting} vs {ref}: mean |log FID change| per run {change:.3f} "
              f"({change / seed_spread:.2f} x seed spread); largest contrast move {worst:.3f} "
              f"({worst / seed_spread:.2f} x seed spread) -> {verdict}")
        report["settings"][setting] = {"per_run_change": change, "largest_contrast_move": worst,
                                       "contrast_moves": moved, "verdict": verdict}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
