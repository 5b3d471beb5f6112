"""A synthetic results directory with known hack effects, written by the real writers:
``ablate.grid.driver.write_experiment_meta`` (experiment.json, from a parsed experiment and
its design) and ``ablate.grid.store.Store`` (``record_plan``, ``claim``, ``commit``), plus run
directories in the runner's layout (config.json, log.jsonl, metrics.json, samples.png).

FID is multiplicative: log FID = log BASE + Σ LOG_EFFECT[h]·on[h] + seed offset + noise,
so the report's ratios can be checked against the truth.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ablate.experiment.design import build_design
from ablate.experiment.spec import parse_experiment
from ablate.grid.driver import Grid, write_experiment_meta
from ablate.grid.store import Status, Store

HACKS = ("leaky-relu", "batch-norm", "label-smoothing", "noisy-labels")  # canonical registry order
# The known truth on the log scale: batch-norm ON multiplies FID by 1.25 (it hurts here).
LOG_EFFECTS = {"batch-norm": math.log(1.25), "label-smoothing": 0.0, "noisy-labels": 0.0, "leaky-relu": 0.0}
SEEDS = (0, 1, 2)
BASE_FID = 40.0
NOISE_SD = 0.01  # log scale
SEED_OFFSET = {s: 0.02 * (s - 1) for s in range(20)}  # shared by every variant of a seed
PRIMARY = "best.classifier.fid"
REAL_COUNTS = [515, 510, 518, 461, 508, 502, 434, 512, 530, 510]  # a 10-class test histogram


def experiment_doc(design: str, seeds=SEEDS, hacks=HACKS) -> dict:
    return {"name": f"synthetic-{design}", "description": "synthetic store", "seeds": list(seeds),
            "data": {"dataset": "fake"}, "model": {"ngf": 8, "ndf": 8},
            "budget": {"steps": 300, "batch_size": 16},
            "evaluation": {"features": ["classifier"], "n": 5000, "val_every": 100},
            "design": {"kind": design}, "hacks": {"scope": list(hacks)}}


def make_results(root: Path, design: str = "leave-one-out", *, log_effects=None, seeds=SEEDS,
                 artefacts: bool = True, extra_runs: bool = True, interaction: float = 0.0,
                 rng_seed: int = 7, analysis: dict | None = None, seed_policy: dict | None = None,
                 per_variant_seeds: dict[str, int] | None = None, noise_sd: float = NOISE_SD,
                 pending: bool = True, extra_seed: int | None = None) -> Path:
    """Write a results directory under ``root`` and return it.

    One run (leaky-relu OFF, seed 2) misses three classes (collapsed); with ``extra_runs``
    all-on (or all-off) gets a diverged seed and (``pending``) a pending one, which makes
    the report an interim one (a planned run not finished), at seeds ``extra_seed`` and the
    next (default: five past ``seeds``). ``per_variant_seeds`` gives some variants more
    seeds than others (as an adaptive grid does).
    """
    effects = dict(LOG_EFFECTS if log_effects is None else log_effects)
    rng = np.random.default_rng(rng_seed)
    experiment = parse_experiment(experiment_doc(design, seeds), f"synthetic-{design}")
    d = build_design(experiment.design, experiment.hacks)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n_seeds = {v.name: len(seeds) for v in d.variants}
    n_seeds.update(per_variant_seeds or {})
    plan = [(v, s) for s in range(max(n_seeds.values())) for v in d.variants if s < n_seeds[v.name]]
    first = d.variants[0].name
    at = len(seeds) + 5 if extra_seed is None else extra_seed
    extras = ([(first, at, "diverged")] + ([(first, at + 1, "pending")] if pending else [])
              if extra_runs else [])
    rows = [{"variant": v.name, "seed": s, "key": f"{v.name.strip('+-')}-{s}".replace("all-", "all"),
             "hacks": sorted(v.hacks), "config": {"seed": s}} for v, s in plan]
    rows += [{"variant": v, "seed": s, "key": f"x-{status}", "hacks": sorted(next(x.hacks for x in d.variants
                                                                                     if x.name == v)),
              "config": {}} for v, s, status in extras]
    write_experiment_meta(Grid(experiment, d, root, ()), len(rows))
    if analysis is not None or seed_policy is not None:  # the driver's future experiment.json keys
        meta = json.loads((root / "experiment.json").read_text())
        meta.update({k: v for k, v in (("analysis", analysis), ("seed_policy", seed_policy)) if v is not None})
        (root / "experiment.json").write_text(json.dumps(meta))
    store = Store(root)
    try:
        store.record_plan(rows)
        for row, (v, s) in zip(rows, plan):
            on = v.hacks
            log_fid = (math.log(BASE_FID) + sum(effects[h] for h in on) + SEED_OFFSET[s]
                       + rng.normal(0, noise_sd))
            if {"batch-norm", "label-smoothing"} <= on:
                log_fid += interaction
            collapsed = s == 2 and v.name in ("-leaky-relu", "+leaky-relu")
            metrics = _metrics(math.exp(log_fid), collapsed, rng)
            token = store.claim(row["key"])
            if artefacts:
                _write_run(root / "runs" / row["key"], sorted(on), s, metrics)
            store.commit(row["key"], token, Status.DONE, lambda: None, steps=300, wall_time_s=100 + 10 * len(on),
                         train_time_s=90 + 10 * len(on), eval_time_s=5.0, images_per_s=600.0,
                         metrics=metrics, run_dir=f"runs/{row['key']}")
        if any(status == "diverged" for _, _, status in extras):
            token = store.claim("x-diverged")
            store.commit("x-diverged", token, Status.DIVERGED, lambda: None, steps=150, diverged_step=150,
                         wall_time_s=50.0, run_dir="runs/x-diverged")
    finally:
        store.close()
    return root


def _metrics(fid: float, collapsed: bool, rng) -> dict:
    counts = np.array(REAL_COUNTS, float)
    counts = counts / counts.sum() * 5000
    if collapsed:  # three classes (almost) gone
        counts[[0, 4, 7]] = [3, 10, 0]
    counts = np.round(counts).astype(int)
    modes = int(sum(c / counts.sum() >= 0.1 * r / sum(REAL_COUNTS) and c > 0 for c, r in zip(counts, REAL_COUNTS)))
    p = counts / counts.sum()
    q = np.array(REAL_COUNTS) / sum(REAL_COUNTS)
    kl = float(np.sum(p[p > 0] * np.log(p[p > 0] / q[p > 0])))
    out = {}
    for ckpt, shift in (("last", 1.05), ("best", 1.0)):
        out[ckpt] = {"step": 300, "classifier": {
            "fid": fid * shift, "kid_mean": fid * shift / 1000, "kid_std": 1e-4,
            "precision": 0.7 + rng.normal(0, .01), "recall": 0.5 + rng.normal(0, .01),
            "density": 0.9 + rng.normal(0, .02), "coverage": 0.8 + rng.normal(0, .01),
            "n_gen": 5000, "n_real": 5000, "kid_subset_size": 1000, "modes": modes, "num_modes": 10,
            "kl": kl, "mode_rule": "share >= 0.1 x real share", "n_mode_samples": 5000,
            "class_counts": counts.tolist(), "real_class_counts": REAL_COUNTS}}
    out["best"]["val_fid"] = fid * 1.02
    out["protocol"] = {"features": ["classifier"], "n": 5000, "real_split": "test", "mode_min_frac": 0.1}
    out["provenance"] = {"dataset": "fake", "real_split": "test", "n_gen": 5000,
                         "features": {"classifier": {"classifier_test_accuracy": 0.891}}}
    return out


def _write_run(run_dir: Path, hacks: list[str], seed: int, metrics: dict) -> None:
    import torch
    from torchvision.utils import save_image

    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"train": {"dataset": "fake", "steps": 300, "batch_size": 16, "seed": seed,
                        "ngf": 8, "ndf": 8, "latent_dim": 100, "hacks": hacks},
              "hacks": [{"name": h, "params": {}, "provider": "ablate"} for h in hacks],
              "data": {"dataset": "fake", "split": "train", "source": "synthetic blobs",
                       "num_images": 1000, "shape": [1, 28, 28]},
              "device": "cpu", "hardware": {"cpu": "Synthetic CPU", "cpu_count": 2},
              "versions": {"python": "3.11", "torch": "2.14.1"}, "git_commit": "abc1234"}
    (run_dir / "config.json").write_text(json.dumps(config))
    fid = metrics["best"]["classifier"]["fid"]
    with open(run_dir / "log.jsonl", "w") as f:
        for step in range(50, 301, 50):
            f.write(json.dumps({"step": step, "loss_d": 1.0, "loss_g": 2.0}) + "\n")
            if step % 100 == 0:  # the trainer's validation record
                f.write(json.dumps({"step": step, "val_fid": fid * (1 + 3 * math.exp(-step / 100)),
                                    "val_n": 1000, "best_step": step}) + "\n")
    g = torch.Generator().manual_seed(seed)
    save_image(torch.rand(64, 1, 28, 28, generator=g), run_dir / "samples.png", nrow=8, padding=2)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
