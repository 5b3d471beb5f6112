"""Evaluate a run: FID/KID, PRDC and mode metrics of its generator(s) -> ``metrics.json``.

Public API::

    from ablate.config import EvalProtocol
    from ablate.metrics.evaluate import evaluate_run
    metrics = evaluate_run("runs/x", EvalProtocol(n=10_000, features=("classifier",)))

``evaluate_run`` scores the last checkpoint (``generator.pt``) and, when training kept
one, the best checkpoint by validation FID (``generator_best.pt``), and writes
``<run_dir>/metrics.json`` atomically::

    {
      "last": {                       # generator.pt, after the final step
        "step": 1000,
        "classifier": {"fid", "kid_mean", "kid_std", "precision", "recall", "density",
                       "coverage", "modes", "num_modes", "kl", "mode_rule",
                       "n_mode_samples", "n_gen", "n_real", "kid_subset_size",
                       "class_counts", "real_class_counts"},  # histograms: 10-class data
        "inception":  {"fid", "kid_mean", "kid_std", "precision", "recall", "density",
                       "coverage", "n_gen", "n_real", "kid_subset_size"}   # if requested
      },
      "best": {... same, plus "val_fid" ...},   # only if generator_best.pt exists
      "protocol": {EvalProtocol fields},
      "provenance": {"dataset", "real_split", "n_real", "n_gen", "kid_subset_size",
                     "features": {"classifier": {"classifier_test_accuracy", ...},
                                  "inception": {...}},
                     "device", "time_s", "timing_s": {component: seconds},
                     "git_commit", "versions"}
    }

Conventions: images reach every feature net in [0, 1] (``ablate.training.models.generate``'s
range), quantised to 8 bits; real images are the ``test`` split (never ``val``, which
is for checkpoint selection); N is recorded with every number because FID depends on
it. Mode metrics (modes, kl) always use the classifier and appear under
``"classifier"``; Stacked datasets count 1000 modes at ``n_stacked`` (26k) samples with
KL to uniform (PacGAN protocol), while FID/KID/PRDC use the first ``n`` samples.
KID uses ``min(kid_subset_size, n_real, n_gen)`` as subset size and reports it.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ablate.config import EvalProtocol
from ablate.data import is_stacked
from ablate.environment import git_commit, resolve_device, versions
from ablate.errors import ConfigError
from ablate import layout
from ablate.layout import RunDir
from ablate.metrics import fid as fidm
from ablate.metrics.classifier import classifier_features
from ablate.metrics.features import Passthrough, to_unit
from ablate.metrics.modes import histogram, mode_metrics, predictions
from ablate.metrics.prdc import prdc
from ablate.training.models import generate, sample_latent
from ablate.training.resolve import load_into, load_run

METRICS_FILE = layout.METRICS  # ablate.layout names it; kept for importers


# --------------------------------------------------------------------------------------
# Scoring streams of samples: one core for one run (score_samples) and a group
# (ablate.fused.evaluate.evaluate_group)
# --------------------------------------------------------------------------------------
Sampler = Callable[[int, int], torch.Tensor]  # (start, count) -> images in [0, 1]
MAX_BATCH = 2048  # images per feature-net call across samplers (Inception at 299x299: ~2 GB of input)
NON_FINITE = "the generator produced non-finite images"


class NonFinite(Exception):
    """A sampler produced NaN or inf images: the run scores as failed (NON_FINITE), not as a number."""


@dataclass
class Scoring:
    """One sampler being scored (a run's checkpoint): its metric states."""

    sampler: Sampler
    run: int = 0  # the caller's index of the run
    label: str = "last"  # "last" or "best"
    fid: dict = field(default_factory=dict)
    kid: dict = field(default_factory=dict)
    feats: dict = field(default_factory=dict)
    labels: list = field(default_factory=list)
    error: str | None = None


def feature_nets(dataset: str, features: tuple[str, ...], device) -> dict:
    """name -> FeatureNet for ``dataset`` on ``device`` (the classifier is always built)."""
    nets = {"classifier": classifier_features(dataset, device)}
    if "inception" in features:
        from ablate.metrics.inception import InceptionFeatures

        nets["inception"] = InceptionFeatures().to(device)
    return nets


def mode_summary(pred: torch.Tensor, real: dict, stacked: bool, min_frac: float) -> dict:
    """The mode metrics of predicted labels ``pred`` (and, unstacked, both class histograms).

    Stacked datasets count 1000 modes, each covered by one sample; otherwise the
    classes are compared with the real split's histogram (``real["classifier"]``).
    """
    k = 1000 if stacked else int(real["classifier"]["class_counts"].numel())
    counts = histogram(pred, k)
    if stacked:
        return mode_metrics(counts, None, min_count=1)
    modes = mode_metrics(counts, real["classifier"]["class_counts"], min_frac)
    # The histograms themselves, for the report's class-histogram figure.
    modes.update(class_counts=counts.long().tolist(),
                 real_class_counts=real["classifier"]["class_counts"].long().tolist())
    return modes


def _metric_states(real: dict, protocol: EvalProtocol, dim: int, device) -> tuple:
    """FID and KID states fed precomputed features, loaded with the real statistics."""
    fid = FrechetInceptionDistance(feature=Passthrough(dim), reset_real_features=False).to(device)
    size = fidm.kid_subset_size(protocol.kid_subset_size, int(real["n"]), protocol.n)
    with warnings.catch_warnings():  # "KID keeps all features": intended
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        kid = KernelInceptionDistance(feature=Passthrough(dim), subsets=protocol.kid_subsets,
                                      subset_size=size, reset_real_features=False).to(device)
    fidm.load_real(real, fid, kid)
    kid.real_features = [real["features"].to(device)]  # beside the fake ones (Passthrough has no device)
    return fid, kid


def score_many(scorings: list[Scoring], dataset: str, protocol: EvalProtocol,
               device: str | torch.device = "cpu", nets: dict | None = None,
               max_batch: int = MAX_BATCH) -> tuple[list[dict | None], dict]:
    """Score the samplers of ``scorings`` against ``dataset``'s real split together.

    Each batch of every sampler goes through each feature net as one batch (at most
    ``max_batch`` images); FID and KID are fed each sampler's own features. Returns
    each scoring's metrics (feature name -> metric dict; None where its sampler gave
    non-finite images, ``error`` saying so) and the shared provenance, whose
    ``timing_s`` sums the components over the samplers.
    """
    t_start = time.perf_counter()
    device = torch.device(device)
    timing: dict[str, float] = {}

    def tick(key: str, t0: float) -> float:
        now = time.perf_counter()
        timing[key] = timing.get(key, 0.0) + now - t0
        return now

    t = time.perf_counter()
    nets = nets or feature_nets(dataset, protocol.features, device)
    stacked = is_stacked(dataset)
    n_total = max(protocol.n, protocol.n_stacked) if stacked else protocol.n
    real = {}
    for name in protocol.features:
        real[name] = fidm.real_stats(dataset, protocol.real_split, nets[name], protocol.n,
                                     (protocol.pr_k, protocol.dc_k), protocol.batch_size)
    if "classifier" not in real and not stacked:  # class histogram of real data for KL
        real["classifier"] = fidm.real_stats(dataset, protocol.real_split, nets["classifier"],
                                             protocol.n, (protocol.pr_k, protocol.dc_k),
                                             protocol.batch_size)
    for s in scorings:
        for name in protocol.features:
            s.fid[name], s.kid[name] = _metric_states(real[name], protocol,
                                                      nets[name].num_features, device)
            s.feats[name] = []
    t = tick("setup (nets, real stats)", t)
    for start in range(0, n_total, protocol.batch_size):
        count = min(protocol.batch_size, n_total - start)
        scored = start < protocol.n  # FID/KID/PRDC use the first n samples...
        keep = min(count, protocol.n - start)  # ...of a batch that crosses n, its first ones
        batch, owners = [], []
        for s in scorings:
            if s.error:
                continue
            x = s.sampler(start, count).to(device)
            if not torch.isfinite(x).all():
                s.error = NON_FINITE
                continue
            batch.append(x)  # whole: the mode count (n_stacked > n) takes every sample
            owners.append(s)
        t = tick("generate", t)
        per = batch[0].shape[0] if batch else 0
        step = max(1, max_batch // max(per, 1))  # samplers per feature-net call
        for lo in range(0, len(batch), step):
            chunk = batch[lo:lo + step]
            if len({c.dtype for c in chunk}) > 1:  # cat would turn uint8 into floats 0-255
                chunk = [to_unit(c) for c in chunk]
            x = chunk[0] if len(chunk) == 1 else torch.cat(chunk)
            group = owners[lo:lo + step]
            names = list(protocol.features) if scored else []
            if "classifier" not in names:
                names.append("classifier")  # class predictions for the mode metrics
            for name in names:
                f = nets[name](x)
                t = tick(f"features ({name})", t)
                if name not in protocol.features or not scored:
                    continue
                for j, s in enumerate(group):
                    fj = f[j * per:j * per + keep]
                    s.feats[name].append(fj.float().cpu())
                    s.fid[name].update(fj, real=False)
                    t = tick("fid", t)
                    s.kid[name].update(fj, real=False)
                    t = tick("kid", t)
            logits = nets["classifier"].last_logits
            for j, s in enumerate(group):
                s.labels.append(predictions(logits[j * per:(j + 1) * per]).cpu())
            t = tick("modes", t)
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
            t = tick("fid", t)
            m["kid_mean"], m["kid_std"] = fidm.compute_kid(s.kid[name], protocol.seed)
            t = tick("kid", t)
            m.update(prdc(real[name]["features"], torch.cat(s.feats[name]), protocol.pr_k,
                          protocol.dc_k, real[name]["sq_radii"]))
            t = tick("prdc", t)
            m.update(n_gen=protocol.n, n_real=int(real[name]["n"]),
                     kid_subset_size=s.kid[name].subset_size)
            metrics[name] = m
        metrics.setdefault("classifier", {}).update(
            mode_summary(torch.cat(s.labels), real, stacked, protocol.mode_min_frac))
        t = tick("modes", t)
        out.append(metrics)
    n_real = {name: int(real[name]["n"]) for name in protocol.features}
    sizes = {name: fidm.kid_subset_size(protocol.kid_subset_size, n_real[name], protocol.n)
             for name in protocol.features}
    provenance = {
        "dataset": dataset, "real_split": protocol.real_split, "n_gen": protocol.n,
        "n_real": n_real, "kid_subset_size": sizes,
        "features": {name: nets[name].provenance() for name in nets},
        "device": str(device), "time_s": round(time.perf_counter() - t_start, 3),
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
    }
    return out, provenance


def score_samples(sampler: Sampler, dataset: str, protocol: EvalProtocol,
                  device: str | torch.device = "cpu", nets: dict | None = None) -> tuple[dict, dict]:
    """Score samples from ``sampler`` against ``dataset``'s real split (:func:`score_many`
    of one sampler; non-finite samples raise).

    Returns ``(metrics, provenance)``: metrics maps feature name -> metric dict.
    """
    [metrics], provenance = score_many([Scoring(sampler)], dataset, protocol, device, nets)
    if metrics is None:
        raise NonFinite
    return metrics, provenance


def score_images(images: torch.Tensor, dataset: str, protocol: EvalProtocol,
                 device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Score a tensor of images in [0, 1] (or uint8); ``protocol.n`` is set to its length."""
    n = images.shape[0]
    protocol = dataclasses.replace(protocol, n=n, n_stacked=n)
    return score_samples(lambda s, c: images[s:s + c], dataset, protocol, device)


def generator_sampler(g: torch.nn.Module, recipe, latent_dim: int, seed: int,
                      device) -> Sampler:
    """Samples of ``g`` in [0, 1] from a fixed latent stream (seeded; same for every run)."""
    gen = torch.Generator().manual_seed(seed)
    state = {"next": 0}

    def sample(start: int, count: int) -> torch.Tensor:
        if start != state["next"]:
            raise RuntimeError("generator_sampler must be read in order")
        state["next"] = start + count
        z = sample_latent(recipe, count, latent_dim, gen).to(device)
        return generate(g, z, recipe)

    return sample


# --------------------------------------------------------------------------------------
# Evaluating a run directory
# --------------------------------------------------------------------------------------
def evaluate_run(run_dir: Path | str, protocol: EvalProtocol | None = None,
                 device: str | torch.device = "auto", write: bool = True) -> dict:
    """Score ``run_dir``'s last (and best, if kept) generator; write ``metrics.json``."""
    run_dir = Path(run_dir)
    protocol = protocol or EvalProtocol()
    if not RunDir(run_dir).config.exists() or not RunDir(run_dir).generator.exists():
        raise ConfigError(f"{run_dir} is not a finished run directory "
                          "(needs config.json and generator.pt)")
    t0 = time.perf_counter()
    dev = resolve_device(str(device))
    cfg, recipe, g = load_run(run_dir, str(dev))
    dataset, latent_dim = cfg["train"]["dataset"], cfg["train"]["latent_dim"]
    try:
        result = RunDir(run_dir).read_result() if RunDir(run_dir).result.exists() else {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{RunDir(run_dir).result} is unreadable ({exc})") from exc
    result = result if isinstance(result, dict) else {}
    nets = feature_nets(dataset, protocol.features, dev)
    checkpoints = {"last": (RunDir(run_dir).generator, result.get("steps"))}
    extra = result.get("extra") or {}
    if RunDir(run_dir).generator_best.exists():
        checkpoints["best"] = (RunDir(run_dir).generator_best, extra.get("best_step"))
    out: dict[str, Any] = {}
    provenance: dict[str, Any] = {}
    timing: dict[str, dict] = {}
    for label, (path, step) in checkpoints.items():
        load_into(g, path, dev)  # a truncated or foreign checkpoint: ConfigError
        sampler = generator_sampler(g, recipe, latent_dim, protocol.seed, dev)
        try:
            metrics, provenance = score_samples(sampler, dataset, protocol, dev, nets)
        except NonFinite:
            metrics = {"error": NON_FINITE}
        out[label] = {"step": step, **metrics}
        if label == "best":
            out[label]["val_fid"] = extra.get("best_val_fid")
        if "timing_s" in provenance:
            timing[label] = provenance.pop("timing_s")
    provenance.update(timing_by_checkpoint_s=timing, time_s=round(time.perf_counter() - t0, 3),
                      git_commit=git_commit(),
                      versions=versions(), run_dir=str(run_dir))
    provenance.setdefault("features", {n: nets[n].provenance() for n in nets})
    doc = {**out, "protocol": protocol.to_dict(), "provenance": provenance}
    if write:
        RunDir(run_dir).write_metrics(doc)
    return doc


# --------------------------------------------------------------------------------------
# Validation FID during training
# --------------------------------------------------------------------------------------
class ValidationFID:
    """Cheap classifier-feature FID of a generator against the ``val`` split.

    Built once per run (the classifier and the val statistics are cached); each call
    draws the same ``n`` latents, so successive values form a curve.
    """

    def __init__(self, dataset: str, recipe, latent_dim: int, n: int = 2000,
                 device: str | torch.device = "cpu", seed: int = 0, batch_size: int = 500) -> None:
        self.net = classifier_features(dataset, device)
        self.stats = fidm.real_stats(dataset, "val", self.net, n, (), batch_size)
        self.n_real = int(self.stats["n"])
        self.n, self.recipe, self.batch_size = n, recipe, batch_size
        gen = torch.Generator().manual_seed(seed)
        self.z = sample_latent(recipe, n, latent_dim, gen).to(device)
        self.dataset = dataset

    def __call__(self, g: torch.nn.Module) -> float:
        fid = fidm.make_fid(self.net)
        fidm.load_real(self.stats, fid)
        for i in range(0, self.n, self.batch_size):
            x = generate(g, self.z[i:i + self.batch_size], self.recipe)
            if not torch.isfinite(x).all():
                return float("nan")
            fid.update(x, real=False)
        self.net.forget()
        return float(fid.compute())
