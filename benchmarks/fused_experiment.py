"""An experiment file end to end through the fused path: group, train, validate, score.

What a grid worker will do once the grid uses ``ablate.fused`` (see docs/fused.md), as
a stand-alone driver for measuring it: expand the experiment into runs (variants x
seeds, seed-major), group them with ``group_plans``, train each group with
``train_group`` (validation curves included) and score its finished members with
``evaluate_group``. Groups run in ``--workers`` processes (largest first). It keeps no
store: run directories go to ``<out>/runs/<variant>-s<seed>``, one JSON line per group
to ``<out>/groups.jsonl`` and a summary to ``<out>/summary.json``.

``--steps-scale`` shortens training (val_every scales along, so every run keeps its
number of validation points and evaluation is unchanged) and the summary projects the
full budget from the measured parts: training time / scale, plus validation and
evaluation as measured. ``--deadline-s`` stops starting groups after that many seconds.

    python benchmarks/fused_experiment.py experiments/fashion-mnist.toml --out /tmp/fm \
        --device cuda --workers 4 --features classifier --steps-scale 0.1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ablate.config import EvalProtocol, TrainConfig, with_validation  # noqa: E402
from ablate.experiment.design import build_design  # noqa: E402
from ablate.experiment.spec import load_experiment  # noqa: E402


def expand(args) -> tuple[list[tuple[str, TrainConfig]], EvalProtocol | None]:
    """(run name, TrainConfig) for every variant x seed, seed-major; the protocol."""
    exp = load_experiment(args.experiment)
    design = build_design(exp.design, exp.hacks)
    train = exp.train_kwargs()
    if args.steps_scale != 1.0:
        train["steps"] = max(1, round(train["steps"] * args.steps_scale))
        if train.get("val_every"):
            train["val_every"] = max(1, round(train["val_every"] * args.steps_scale))
    protocol = exp.protocol  # None: the experiment scores nothing
    if protocol is not None:
        changes = {"features": tuple(args.features)} if args.features else {}
        changes.update({"n": args.n} if args.n else {})
        # the validation settings as the (scaled) training runs them
        protocol = with_validation(dataclasses.replace(protocol, **changes), train)
    runs = []
    for seed in exp.seeds:
        for v in design.variants:
            runs.append((f"{v.name}-s{seed}",
                         TrainConfig(dataset=exp.dataset, seed=seed, hacks=tuple(sorted(v.hacks)),
                                     params=exp.params, device=args.device,
                                     threads=args.threads, **train)))
    return runs, protocol


def run_group(names: list[str], configs: list[TrainConfig], protocol: EvalProtocol | None,
              out: str, options: dict, deadline: float) -> dict:
    """Train one group and score its finished members (in a worker process)."""
    import torch

    from ablate.fused import FusedOptions, evaluate_group, train_group
    from ablate.experiment.pipeline import validator
    from ablate.training.resolve import resolve

    if time.time() > deadline:
        return {"runs": names, "skipped": "deadline"}
    if configs[0].threads:
        torch.set_num_threads(configs[0].threads)
    t0 = time.perf_counter()
    plans = [resolve(c) for c in configs]
    dirs = [Path(out) / "runs" / n for n in names]
    results = train_group(plans, dirs, [validator(p) for p in plans], FusedOptions(**options))
    t_train = time.perf_counter() - t0
    done = [d for d, r in zip(dirs, results) if r.status == "done"]
    t1 = time.perf_counter()
    if protocol is not None and done:
        evaluate_group(done, protocol, configs[0].device)
    t_eval = time.perf_counter() - t1
    val = [r.extra.get("val_time_s", 0.0) for r in results]
    return {"runs": names, "k": len(names), "status": [r.status for r in results],
            "train_wall_s": round(t_train, 2), "eval_wall_s": round(t_eval, 2),
            "train_time_s": round(max(r.train_time_s for r in results), 2),
            "val_time_s": round(sum(val), 2),
            "aggregate_images_per_s": round(sum(r.images_per_s for r in results)),
            "finished_at": time.time()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=1, help="groups trained at once")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    p.add_argument("--max-k", type=int, default=64)
    p.add_argument("--steps-scale", type=float, default=1.0)
    p.add_argument("--features", nargs="*", help="override the experiment's feature nets")
    p.add_argument("--n", type=int, help="override the number of evaluation samples")
    p.add_argument("--deadline-s", type=float, default=float("inf"))
    p.add_argument("--cuda-graph", action="store_true")
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()
    t_start, wall0 = time.perf_counter(), time.time()
    deadline = wall0 + args.deadline_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from ablate.metrics.evaluate import feature_nets
    from ablate.fused import group_plans
    from ablate.training.resolve import resolve

    runs, protocol = expand(args)
    plans = [resolve(c) for _, c in runs]
    groups = sorted(group_plans(plans, args.max_k), key=len, reverse=True)
    print(f"{len(runs)} runs of {runs[0][1].steps} steps in {len(groups)} groups "
          f"(sizes {[len(g) for g in groups]}), {args.workers} worker(s)", flush=True)
    if protocol is not None:  # build and cache the feature nets once, before the workers
        t = time.perf_counter()
        feature_nets(runs[0][1].dataset, protocol.features, args.device)
        print(f"feature nets ready in {time.perf_counter() - t:.1f} s", flush=True)
    options = {"cuda_graph": args.cuda_graph, "compile": args.compile}
    records = []
    ctx = mp.get_context("spawn")  # CUDA in workers
    with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool, \
            open(out / "groups.jsonl", "a") as log:
        futures = [pool.submit(run_group, [runs[i][0] for i in g], [runs[i][1] for i in g],
                               protocol, str(out), options, deadline) for g in groups]
        for fut in as_completed(futures):
            rec = fut.result()
            rec["elapsed_s"] = round(time.perf_counter() - t_start, 1)
            records.append(rec)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps({k: v for k, v in rec.items() if k != "runs"}), flush=True)
    wall = time.perf_counter() - t_start
    ran = [r for r in records if "skipped" not in r]
    scale = args.steps_scale
    # Full-budget projection: training scales with 1/scale; validation (same number of
    # points) and evaluation do not; divided over the workers (assumes they stay busy).
    busy = sum(r["train_time_s"] / scale + (r["train_wall_s"] - r["train_time_s"]) + r["eval_wall_s"]
               for r in ran)
    summary = {"experiment": args.experiment, "runs": len(runs), "groups": len(groups),
               "runs_trained": sum(r["k"] for r in ran),
               "diverged": sum(s == "diverged" for r in ran for s in r["status"]),
               "skipped_groups": len(records) - len(ran), "wall_s": round(wall, 1),
               "steps": runs[0][1].steps, "steps_scale": scale, "workers": args.workers,
               "protocol": protocol.to_dict() if protocol else None,
               "projected_full_budget_wall_s": round(busy / args.workers, 1) if ran else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
