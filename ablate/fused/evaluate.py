"""Score several run directories together: one feature-net pass over all their samples.

:func:`evaluate_group` writes each run's ``metrics.json`` with the same content as
:func:`ablate.metrics.evaluate.evaluate_run` (same samples, same metrics, same protocol and
provenance fields; timings differ). What it shares: the feature networks, built
once; the real statistics, loaded once per feature net; and the feature passes —
each batch of generated images from every member goes through each net as one batch
(at most ``max_batch`` images), so a GPU sees batches K times larger. FID and KID are
then fed each member's own features (torchmetrics with a pass-through feature module,
which is what they compute from the net's output anyway).

The classifier's features do not depend on the batch they are computed in on the CPU
(checked in ``tests/test_fused.py``), so the metrics equal ``evaluate_run``'s there;
on a GPU, cuDNN may pick another algorithm for a larger batch (rounding-level changes).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ablate.config import EvalProtocol
from ablate.environment import git_commit, resolve_device, versions
from ablate.errors import ConfigError
from ablate.layout import RunDir
from ablate.metrics.evaluate import feature_nets, generator_sampler, mode_summary
from ablate.metrics import fid as fidm
from ablate.metrics.features import Passthrough
from ablate.metrics.modes import predictions
from ablate.metrics.prdc import prdc
from ablate.training.resolve import load_run
from ablate.data import is_stacked

MAX_BATCH = 2048  # images per feature-net call across members (Inception at 299x299: ~2 GB of input)


@dataclass
class _Scoring:
    """One member checkpoint being scored: its sampler and metric states."""

    run: int  # index into the run list
    label: str  # "last" or "best"
    sampler: Any
    fid: dict = field(default_factory=dict)
    kid: dict = field(default_factory=dict)
    feats: dict = field(default_factory=dict)
    labels: list = field(default_factory=list)
    error: str | None = None


def _metric_states(name: str, real: dict, protocol: EvalProtocol, dim: int, device) -> tuple:
    """FID and KID states fed precomputed features, loaded with the real statistics."""
    fid = FrechetInceptionDistance(feature=Passthrough(dim), reset_real_features=False).to(device)
    size = fidm.kid_subset_size(protocol.kid_subset_size, int(real["n"]), protocol.n)
    with warnings.catch_warnings():  # "KID keeps all features": intended
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        kid = KernelInceptionDistance(feature=Passthrough(dim), subsets=protocol.kid_subsets,
                                      subset_size=size, reset_real_features=False).to(device)
    fidm.load_real(real, fid, kid)
    return fid, kid


def _score_group(scorings: list[_Scoring], dataset: str, protocol: EvalProtocol,
                 device: torch.device, nets: dict, max_batch: int) -> tuple[list[dict | None], dict]:
    """:func:`ablate.metrics.evaluate.score_samples` for several samplers at once.

    Returns each scoring's metrics (None where its generator gave non-finite images)
    and the shared provenance.
    """
    t_start = time.perf_counter()
    stacked = is_stacked(dataset)
    n_total = max(protocol.n, protocol.n_stacked) if stacked else protocol.n
    real = {}
    for name in protocol.features:
        real[name] = fidm.real_stats(dataset, protocol.real_split, nets[name], protocol.n,
                                     (protocol.pr_k, protocol.dc_k), protocol.batch_size)
    if "classifier" not in real and not stacked:
        real["classifier"] = fidm.real_stats(dataset, protocol.real_split, nets["classifier"],
                                             protocol.n, (protocol.pr_k, protocol.dc_k),
                                             protocol.batch_size)
    for s in scorings:
        for name in protocol.features:
            s.fid[name], s.kid[name] = _metric_states(name, real[name], protocol,
                                                      nets[name].num_features, device)
            s.feats[name] = []
    for start in range(0, n_total, protocol.batch_size):
        count = min(protocol.batch_size, n_total - start)
        scored = start < protocol.n
        batch, owners = [], []
        for s in scorings:
            if s.error:
                continue
            x = s.sampler(start, count).to(device)
            if not torch.isfinite(x).all():
                s.error = "the generator produced non-finite images"
                continue
            if scored and start + count > protocol.n:
                x = x[:protocol.n - start]  # (n not a multiple of the batch) keep exactly n
            batch.append(x)
            owners.append(s)
        per = batch[0].shape[0] if batch else 0
        step = max(1, max_batch // max(per, 1))  # members per feature-net call
        for lo in range(0, len(batch), step):
            x = torch.cat(batch[lo:lo + step])
            group = owners[lo:lo + step]
            names = list(protocol.features) if scored else []
            if "classifier" not in names:
                names.append("classifier")  # class predictions for the mode metrics
            for name in names:
                f = nets[name](x)
                if name == "classifier":
                    logits = nets["classifier"].last_logits
                for j, s in enumerate(group):
                    if name in protocol.features and scored:
                        fj = f[j * per:(j + 1) * per]
                        s.feats[name].append(fj.float().cpu())
                        s.fid[name].update(fj, real=False)
                        s.kid[name].update(fj, real=False)
                    if name == "classifier":
                        s.labels.append(predictions(logits[j * per:(j + 1) * per]).cpu())
    for net in nets.values():
        net.forget()

    out: list[dict | None] = []
    for s in scorings:
        if s.error:
            out.append(None)
            continue
        metrics: dict[str, dict] = {}
        for name in protocol.features:
            m: dict[str, Any] = {"fid": float(s.fid[name].compute())}
            m["kid_mean"], m["kid_std"] = fidm.compute_kid(s.kid[name], protocol.seed)
            m.update(prdc(real[name]["features"], torch.cat(s.feats[name]), protocol.pr_k,
                          protocol.dc_k, real[name]["radii"]))
            m.update(n_gen=protocol.n, n_real=int(real[name]["n"]),
                     kid_subset_size=s.kid[name].subset_size)
            metrics[name] = m
        metrics.setdefault("classifier", {}).update(
            mode_summary(torch.cat(s.labels), real, stacked, protocol.mode_min_frac))
        out.append(metrics)
    n_real = {name: int(real[name]["n"]) for name in protocol.features}
    sizes = {name: fidm.kid_subset_size(protocol.kid_subset_size, n_real[name], protocol.n)
             for name in protocol.features}
    provenance = {
        "dataset": dataset, "real_split": protocol.real_split, "n_gen": protocol.n,
        "n_real": n_real, "kid_subset_size": sizes,
        "features": {name: nets[name].provenance() for name in nets},
        "device": str(device), "time_s": round(time.perf_counter() - t_start, 3),
    }
    return out, provenance


def evaluate_group(run_dirs: Sequence[Path | str], protocol: EvalProtocol | None = None,
                   device: str | torch.device = "auto", write: bool = True,
                   max_batch: int = MAX_BATCH) -> list[dict]:
    """Score the last (and best, if kept) generator of each run; write each ``metrics.json``.

    The runs may come from any group (or none): runs of one dataset are scored
    together. Returns each run's ``metrics.json`` content, in order. Each document
    matches :func:`ablate.metrics.evaluate.evaluate_run`'s for that run (its provenance adds
    ``"evaluated_with"``, the number of runs scored together).
    """
    protocol = protocol or EvalProtocol()
    run_dirs = [Path(p) for p in run_dirs]
    for run_dir in run_dirs:
        if not RunDir(run_dir).config.exists() or not RunDir(run_dir).generator.exists():
            raise ConfigError(f"{run_dir} is not a finished run directory "
                              "(needs config.json and generator.pt)")
    dev = resolve_device(str(device))
    loaded = [load_run(d, str(dev)) for d in run_dirs]
    by_dataset: dict[str, list[int]] = {}
    for i, (cfg, _, _) in enumerate(loaded):
        by_dataset.setdefault(cfg["train"]["dataset"], []).append(i)
    docs: list[dict | None] = [None] * len(run_dirs)
    for dataset, idx in by_dataset.items():
        nets = feature_nets(dataset, protocol.features, dev)
        scorings: list[_Scoring] = []
        steps: dict[tuple[int, str], Any] = {}
        for i in idx:
            cfg, recipe, g = loaded[i]
            result = RunDir(run_dirs[i]).read_result() if RunDir(run_dirs[i]).result.exists() else {}
            extra = result.get("extra") or {}
            checkpoints = {"last": (RunDir(run_dirs[i]).generator, result.get("steps"))}
            if RunDir(run_dirs[i]).generator_best.exists():
                checkpoints["best"] = (RunDir(run_dirs[i]).generator_best, extra.get("best_step"))
            for label, (path, step) in checkpoints.items():
                gl = g if label == "last" else load_run(run_dirs[i], str(dev))[2]
                gl.load_state_dict(torch.load(path, map_location=dev))
                sampler = generator_sampler(gl, recipe, cfg["train"]["latent_dim"], protocol.seed, dev)
                scorings.append(_Scoring(i, label, sampler))
                steps[(i, label)] = (step, extra.get("best_val_fid"))
        t_group = time.perf_counter()
        metrics, provenance = _score_group(scorings, dataset, protocol, dev, nets, max_batch)
        group_time = time.perf_counter() - t_group
        for i in idx:
            out: dict[str, Any] = {}
            scored = False
            for s, m in zip(scorings, metrics):
                if s.run != i:
                    continue
                step, val_fid = steps[(i, s.label)]
                out[s.label] = {"step": step, **(m if m is not None else {"error": s.error})}
                if s.label == "best":
                    out[s.label]["val_fid"] = val_fid
                scored |= m is not None
            # As evaluate_run: the scoring provenance only where a checkpoint was scored.
            prov = dict(provenance) if scored else {}
            prov.update(timing_by_checkpoint_s={}, time_s=round(group_time / len(idx), 3),
                        git_commit=git_commit(), versions=versions(), run_dir=str(run_dirs[i]),
                        evaluated_with=len(idx))
            prov.setdefault("features", {n: nets[n].provenance() for n in nets})
            doc = {**out, "protocol": protocol.to_dict(), "provenance": prov}
            if write:
                RunDir(run_dirs[i]).write_metrics(doc)
            docs[i] = doc
    return docs  # type: ignore[return-value]
