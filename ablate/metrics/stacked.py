"""The per-channel classifier on Stacked images: its accuracy on the stacked test split.

Mode counting on Stacked MNIST (``ablate.metrics.modes``) classifies each channel with
the base dataset's classifier; a generated sample's mode is the predicted digit triple.
The base classifier's test accuracy (single digits) says how good each channel's call
is; what the mode count rests on is how often *all three* calls are right. This module
measures that on the stacked test split (10,000 triples drawn from the base test split,
``ablate.data.stacked``) and records, beside it, what the real stacked images give under
the same counting rule: modes covered (a mode counts when at least one image is
predicted in it) and KL(p_pred || uniform), at the split's own N.

:func:`stacked_accuracy` ``(dataset, net, classifier_key) -> dict`` is computed once per
(classifier, stacked dataset) and cached as JSON beside the classifier's weights. The
numbers are provenance (``metrics.json`` ``provenance.features.classifier``): they never
enter a run key.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from ablate.artefacts import write_json
from ablate.data import base_dataset, dataset_spec, load, scale
from ablate.errors import ConfigError
from ablate.metrics.cache import cache_dir, locked
from ablate.metrics.modes import histogram, mode_metrics

VERSION = "stacked-acc-v1"  # bump when the measurement changes: invalidates the cached JSON
DIGITS = 3  # channels of a Stacked image, one digit each
BASE = 10  # classes per channel


def digits(labels: torch.Tensor) -> torch.Tensor:
    """Base-10 coded triples (``100*c0 + 10*c1 + c2``) -> (N, 3) digits, channel order."""
    weights = BASE ** torch.arange(DIGITS - 1, -1, -1)
    return (labels.reshape(-1, 1) // weights) % BASE


@torch.inference_mode()
def channel_predictions(net: nn.Module, images01: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """(N, 3, H, W) images in [0, 1] -> (N, 3) predicted digits, one per channel."""
    was = net.training
    net.eval()
    n, c, h, w = images01.shape
    flat = images01.reshape(n * c, 1, h, w)
    pred = torch.cat([net(flat[i:i + batch]).argmax(1) for i in range(0, n * c, batch)])
    net.train(was)
    return pred.reshape(n, c)


def score(pred: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy and the real images' own mode metrics from per-channel predictions.

    ``pred``: (N, 3) predicted digits; ``labels``: (N,) base-10 coded true triples.
    """
    true = digits(labels)
    code = (pred * BASE ** torch.arange(DIGITS - 1, -1, -1)).sum(1)
    modes = mode_metrics(histogram(code, BASE ** DIGITS), None, min_count=1)
    n = int(labels.numel())
    return {
        "stacked_test_accuracy": float((pred == true).all(1).double().mean()),  # all 3 digits right
        "stacked_channel_accuracy": [float(a) for a in (pred == true).double().mean(0)],
        "stacked_test_n": n,
        "stacked_test_modes": modes["modes"],  # modes the real images cover, as predicted
        "stacked_test_kl": modes["kl"],  # KL(p_pred || uniform) of the real images, nats
        "stacked_test_true_modes": int(torch.unique(labels).numel()),  # by their true labels
        "stacked_test_true_kl": mode_metrics(histogram(labels, BASE ** DIGITS), None, min_count=1)["kl"],
    }


def stacked_accuracy(dataset: str, net: nn.Module, classifier_key: str) -> dict:
    """The per-channel classifier ``net`` (cached as ``classifier_key``) on the stacked test
    split of ``dataset``: :func:`score`'s fields plus ``stacked_dataset`` and the sizes of
    the base splits its triples are drawn from, ``stacked_pool_train`` (the official
    training split: train + val) and ``stacked_pool_test`` (cached)."""
    path = cache_dir() / "classifier" / f"{classifier_key}-{dataset}-{VERSION}.json"
    with locked(path):
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass  # a torn or foreign file: measure again
        test = load(dataset, "test")
        if test.images.shape[1] != DIGITS or dataset_spec(dataset).num_classes != BASE ** DIGITS:
            raise ConfigError(f"{dataset!r} is not a stacked dataset of {DIGITS} digits")
        base = base_dataset(dataset)  # the pools the triples are drawn from: official splits
        pools = {"stacked_pool_train": len(load(base, "train")) + len(load(base, "val")),
                 "stacked_pool_test": len(load(base, "test"))}
        out = {"stacked_dataset": dataset, **pools,
               **score(channel_predictions(net, scale(test.images, "unit")), test.labels)}
        write_json(path, out)
        return out
