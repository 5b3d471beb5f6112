"""A synthetic run store with known hack effects, in the schema of ``ablate.store``.

Used by tests/test_report*.py. FID = base + Σ effect[h]·on[h] + seed offset + noise, so
the report's estimates can be checked against the truth.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

HACKS = ("batch-norm", "label-smoothing", "noisy-labels", "leaky-relu")
# The known truth: batch-norm ON adds +5 FID (it "hurts" here); label-smoothing adds nothing.
EFFECTS = {"batch-norm": 5.0, "label-smoothing": 0.0, "noisy-labels": 0.0, "leaky-relu": 0.0}
SEEDS = (0, 1, 2)
BASE_FID = 40.0
NOISE_SD = 0.25
SEED_OFFSET = {0: -1.0, 1: 0.5, 2: 1.5}  # shared by every variant: pairing removes it


def design_variants(design: str, hacks=HACKS) -> list[dict]:
    """name, on-set and reference for leave-one-out, add-one-in or full-factorial."""
    hacks = list(hacks)
    if design == "leave-one-out":
        out = [{"name": "all-on", "hacks": hacks, "reference": None}]
        out += [{"name": f"-{h}", "hacks": [x for x in hacks if x != h], "reference": "all-on"} for h in hacks]
    elif design == "add-one-in":
        out = [{"name": "all-off", "hacks": [], "reference": None}]
        out += [{"name": f"+{h}", "hacks": [h], "reference": "all-off"} for h in hacks]
    elif design == "full-factorial":
        out = []
        for i in range(2 ** len(hacks)):
            on = [h for j, h in enumerate(hacks) if i >> j & 1]
            name = "all-on" if len(on) == len(hacks) else "all-off" if not on else "+" + "+".join(on)
            out.append({"name": name, "hacks": on, "reference": None})
    else:
        raise ValueError(design)
    return out


def make_store(root: Path, design: str = "leave-one-out", *, effects=None, interaction=0.0,
               artefacts: bool = True, rng_seed: int = 7, flat: bool = False
               ) -> tuple[pd.DataFrame, dict]:
    """Write run dirs under ``root/runs`` and return (frame, meta).

    ``interaction`` adds that much FID when both batch-norm and label-smoothing are on.
    One run (leaky-relu off / on, seed 2) collapses; one extra run is diverged.
    """
    effects = dict(EFFECTS if effects is None else effects)
    rng = np.random.default_rng(rng_seed)
    variants = design_variants(design)
    rows = []
    for v in variants:
        on = set(v["hacks"])
        for seed in SEEDS:
            fid = BASE_FID + sum(effects[h] for h in on) + SEED_OFFSET[seed] + rng.normal(0, NOISE_SD)
            if {"batch-norm", "label-smoothing"} <= on:
                fid += interaction
            collapsed = seed == 2 and v["name"] in ("-leaky-relu", "+leaky-relu")
            modes = 6.0 if collapsed else 10.0
            kl = 0.9 if collapsed else 0.02 + 0.01 * rng.random()
            run_dir = root / "runs" / f"{v['name']}-s{seed}"
            row = {"key": f"k{len(rows):04d}", "variant": v["name"], "seed": seed, "status": "done",
                   "diverged_step": None, "wall_time_s": 100 + 10 * len(on) + rng.normal(0, 1),
                   "train_time_s": 90 + 10 * len(on), "images_per_s": 600 - 5 * len(on),
                   "run_dir": str(run_dir)}
            row.update({f"hack:{h}": h in on for h in HACKS})
            for ckpt, shift in (("last", 2.0), ("best", 0.0)):
                f = fid + shift
                row.update({
                    f"{ckpt}.classifier.fid": f, f"{ckpt}.classifier.kid_mean": f / 1000,
                    f"{ckpt}.classifier.kid_std": 1e-4, f"{ckpt}.classifier.modes": modes,
                    f"{ckpt}.classifier.kl": kl, f"{ckpt}.classifier.num_modes": 10.0, f"{ckpt}.classifier.precision": 0.7 + rng.normal(0, .01),
                    f"{ckpt}.classifier.recall": 0.5 + rng.normal(0, .01),
                    f"{ckpt}.classifier.density": 0.9 + rng.normal(0, .02),
                    f"{ckpt}.classifier.coverage": 0.8 + rng.normal(0, .01)})
            rows.append(row)
            if artefacts:
                _write_run(run_dir, v, seed, row, rng)
    # One diverged run (no metrics) and one still pending.
    extra = dict(rows[0], key="kdiv", seed=3, status="diverged", diverged_step=150,
                 run_dir=str(root / "runs" / "div"))
    for k in list(extra):
        if k.count(".") == 2:
            extra[k] = math.nan
    rows.append(extra)
    rows.append(dict(extra, key="kpend", seed=4, status="pending", diverged_step=None))
    frame = pd.DataFrame(rows)
    return frame, (flat_meta(design, variants) if flat else experiment_meta(design, variants))


def experiment_meta(design: str, variants: list[dict]) -> dict:
    """The shape of ``experiment.json`` as ablate.runner writes it (ablate.store returns it)."""
    ref = {v["name"].lstrip("+-"): {"on": v["name"], "off": v["reference"]} if design == "add-one-in"
           else {"on": v["reference"], "off": v["name"]}
           for v in variants if v.get("reference")}
    spec = {"kind": design, "include_all_off": True, "include_all_on": True, "method": "fracfact",
            "resolution": 4, "generators": None, "variants": []}
    return {
        "experiment": {"name": f"synthetic-{design}", "description": "synthetic store",
                       "source": "experiments/synthetic.toml", "dataset": "fashion-mnist",
                       "seeds": list(SEEDS), "hacks": list(HACKS), "params": {},
                       "train": {"steps": 1000, "batch_size": 64, "ngf": 32, "ndf": 32, "log_every": 50},
                       "evaluation": {"features": ["classifier"], "n": 5000, "real_split": "test"},
                       "design": spec, "results_dir": "results", "execution": {}},
        "design": {"kind": design, "hacks": list(HACKS),
                   "variants": [{"name": v["name"], "hacks": v["hacks"]} for v in variants],
                   "comparisons": [{"hack": h, **c} for h, c in ref.items()],
                   "resolution": None, "aliasing": [], "notes": []},
        "hacks": list(HACKS), "reference": ref,
        "variants": [{"name": v["name"], "hacks": v["hacks"]} for v in variants],
        "seeds": list(SEEDS), "runs": len(variants) * len(SEEDS), "code_version": "test",
    }


def flat_meta(design: str, variants: list[dict]) -> dict:
    """A flatter meta (design as a string, references on the variants): also accepted."""
    return {"name": f"synthetic-{design}", "dataset": "fashion-mnist", "steps": 1000,
            "batch_size": 64, "ngf": 32, "ndf": 32, "seeds": list(SEEDS), "design": design,
            "eval": {"num_gen": 5000, "num_real": 5000, "split": "test"},
            "variants": variants, "hacks": list(HACKS)}


def _write_run(run_dir: Path, variant: dict, seed: int, row: dict, rng) -> None:
    import torch
    from torchvision.utils import save_image

    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"train": {"dataset": "fashion-mnist", "steps": 1000, "batch_size": 64, "seed": seed,
                        "ngf": 32, "ndf": 32, "latent_dim": 100, "hacks": variant["hacks"]},
              "hacks": [{"name": h, "params": {}, "provider": "ablate"} for h in variant["hacks"]],
              "data": {"dataset": "fashion-mnist", "split": "train",
                       "source": "/usr/share/datasets/fashion-mnist", "num_images": 60000,
                       "shape": [1, 28, 28]},
              "device": "cpu", "hardware": {"cpu": "Synthetic CPU", "cpu_count": 2},
              "versions": {"python": "3.12", "torch": "2.14.1"}, "git_commit": "abc1234"}
    (run_dir / "config.json").write_text(json.dumps(config))
    with open(run_dir / "log.jsonl", "w") as f:
        for step in range(100, 1001, 100):
            rec = {"step": step, "loss_d": 1.0, "loss_g": 2.0, "d_real": .6, "d_fake": .3,
                   "images_per_s": 600.0, "val_fid": row["best.classifier.fid"] * (1 + 3 * math.exp(-step / 300))}
            f.write(json.dumps(rec) + "\n")
    g = torch.Generator().manual_seed(seed)
    save_image(torch.rand(64, 1, 28, 28, generator=g), run_dir / "samples.png", nrow=8, padding=2)
    hist = np.full(10, 0.1)
    if row["best.classifier.modes"] < 10:
        hist = np.array([0.3, 0.3, 0.2, 0.1, 0.05, 0.05, 0, 0, 0, 0])
    metrics = {ckpt: {"classifier": {k.split(".")[2]: row[k] for k in row if k.startswith(f"{ckpt}.")}}
               for ckpt in ("last", "best")}
    metrics["best"]["classifier"]["class_histogram"] = hist.tolist()
    metrics["best"]["step"] = 700
    metrics["protocol"] = {"num_gen": 5000, "num_real": 5000, "real_split": "test",
                           "feature_nets": ["classifier"]}
    metrics["provenance"] = {"dataset": "fashion-mnist", "real_split": "test", "n_gen": 5000,
                             "features": {"classifier": {"classifier_test_accuracy": 0.891,
                                                         "target_accuracy": 0.85}}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
