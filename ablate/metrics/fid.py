"""FID and KID through torchmetrics with ablate's feature networks, and real statistics.

FID/KID are ``torchmetrics.image.fid.FrechetInceptionDistance`` and
``torchmetrics.image.kid.KernelInceptionDistance`` built with ``feature=`` one of our
:class:`~ablate.metrics.features.FeatureNet` modules. The real side is not recomputed
per evaluation: :func:`real_stats` computes, once per (dataset, split, feature net, N),
the feature sum and second-moment sum (FID), the features themselves (KID, PRDC), their
k-NN radii (PRDC) and, for the classifier, the class histogram; the result is cached
under ``<cache>/real/`` and loaded into the metric states by :func:`load_real`.

KID and sample size: torchmetrics raises when a set is smaller than ``subset_size``.
:func:`kid_subset_size` instead adapts: the subset size used is
``min(requested, n_real, n_gen)`` (and at least 2), and it is reported with every KID.
"""

from __future__ import annotations

import warnings

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ablate import data
from ablate.errors import ConfigError
from ablate.metrics.cache import cache_dir, key_hash, load_tensors, locked, save_tensors
from ablate.metrics.features import FeatureNet, Passthrough
from ablate.metrics.modes import histogram, predictions
from ablate.metrics.prdc import knn_sq_radii

STATS_VERSION = 3  # bump when the content of cached real statistics changes (3: squared radii)


def make_fid(net: FeatureNet) -> FrechetInceptionDistance:
    """A torchmetrics FID with ``net`` as its feature module; real features are kept."""
    return FrechetInceptionDistance(feature=net, reset_real_features=False).to(_device_of(net))


def kid_subset_size(requested: int, n_real: int, n_gen: int) -> int:
    """The KID subset size actually used: ``min(requested, n_real, n_gen)``, >= 2."""
    size = min(requested, n_real, n_gen)
    if size < 2:
        raise ConfigError(f"KID needs at least 2 real and 2 generated samples "
                          f"(got {n_real} real, {n_gen} generated)")
    return size


def make_kid(net: FeatureNet, subset_size: int, subsets: int = 100) -> KernelInceptionDistance:
    """A torchmetrics KID with ``net`` as its feature module (polynomial kernel, degree 3)."""
    with warnings.catch_warnings():  # "KID keeps all features": intended (10k x 128 floats)
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        return KernelInceptionDistance(feature=net, subsets=subsets, subset_size=subset_size,
                                       reset_real_features=False).to(_device_of(net))


def _device_of(net: torch.nn.Module) -> torch.device:
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def load_real(stats: dict, fid: FrechetInceptionDistance | None = None,
              kid: KernelInceptionDistance | None = None) -> None:
    """Put cached real statistics into the metric states (as ``update(real=True)`` would).

    The states are torchmetrics' own (``metric_state``); their names are checked here and
    the version range is pinned in pyproject.toml, and a test compares the result with
    ``update(real=True)``, so a torchmetrics release that renames them fails loudly.
    """
    if fid is not None:
        _check_states(fid, ("real_features_sum", "real_features_cov_sum", "real_features_num_samples"))
        dev = fid.real_features_sum.device
        fid.real_features_sum = stats["feature_sum"].to(dev, torch.float64).clone()
        fid.real_features_cov_sum = stats["cov_sum"].to(dev, torch.float64).clone()
        fid.real_features_num_samples = torch.tensor(int(stats["n"]), device=dev)
    if kid is not None:
        _check_states(kid, ("real_features",))
        kid.real_features = [stats["features"].to(_device_of(kid.inception))]


def _check_states(metric, names: tuple[str, ...]) -> None:
    missing = [n for n in names if n not in metric.metric_state]
    if missing:
        import torchmetrics

        raise RuntimeError(f"torchmetrics {torchmetrics.__version__}: {type(metric).__name__} has no "
                           f"state {missing}; install the version range pinned in pyproject.toml")


def compute_kid(kid: KernelInceptionDistance, seed: int = 0) -> tuple[float, float]:
    """KID mean and std over subsets, with the subset draws seeded (reproducible)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return float(mean), float(std)


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """torchmetrics' FID of two feature sets (e.g. to check against a reference)."""
    fid = FrechetInceptionDistance(feature=Passthrough(real.shape[1]))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return float(fid.compute())


def kid_from_features(real: torch.Tensor, fake: torch.Tensor, subset_size: int = 1000,
                      subsets: int = 100, seed: int = 0) -> tuple[float, float, int]:
    """torchmetrics' KID of two feature sets with the adapted subset size; (mean, std, size)."""
    size = kid_subset_size(subset_size, real.shape[0], fake.shape[0])
    kid = make_kid(Passthrough(real.shape[1]), size, subsets)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    return (*compute_kid(kid, seed), size)


def real_stats(dataset: str, split: str, net: FeatureNet, n: int, ks: tuple[int, ...] = (3, 5),
               batch_size: int = 500, seed: int = 0) -> dict:
    """Real statistics of up to ``n`` images of ``dataset``/``split`` under ``net`` (cached).

    Keys: ``feature_sum``, ``cov_sum`` (float64), ``n``, ``features`` (float32),
    ``sq_radii`` {k: squared k-NN radii}, ``class_counts`` (classifier only: predicted classes,
    base-coded for stacked images), ``meta`` (provenance).
    """

    ident = {"dataset": dataset, "split": split, "features": net.identity(), "n": n,
             "ks": sorted(ks), "seed": seed, "version": STATS_VERSION}
    path = cache_dir() / "real" / f"{dataset}-{split}-{net.name}-n{n}-{key_hash(ident)}.pt"
    with locked(path):
        if path.exists():
            return load_tensors(path)
        real = data.load(dataset, split)
        images = real.images
        if len(real) > n:  # a fixed random subset
            idx = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:n]
            images = images[idx.sort().values]
        device = _device_of(net)
        feats, logits = [], []
        for i in range(0, images.shape[0], batch_size):
            feats.append(net(images[i:i + batch_size].to(device)).float().cpu())
            if getattr(net, "last_logits", None) is not None:
                logits.append(net.last_logits.cpu())
        net.forget()
        f = torch.cat(feats)
        f64 = f.double()
        stats = {"feature_sum": f64.sum(0), "cov_sum": f64.T @ f64, "n": f.shape[0],
                 "features": f, "sq_radii": {int(k): knn_sq_radii(f, k) for k in ks},
                 "meta": {"dataset": dataset, "split": split, "n": f.shape[0],
                          "source": real.source, "features": net.identity()}}
        if logits:
            lg = torch.cat(logits)
            stats["class_counts"] = histogram(predictions(lg), lg.shape[-1] ** lg.shape[1])
        save_tensors(path, stats)
        return stats
