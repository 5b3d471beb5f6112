"""Mode-collapse metrics from classifier predictions: histograms, modes covered, KL.

* 10-class datasets: a class counts as *covered* when its share of the generated
  samples is at least ``min_frac`` of its share of the real ones (default 0.1: with
  10k samples and 10 balanced classes, at least 100 samples). A plain ">= 1 sample"
  rule would count the classifier's stray errors on a collapsed generator as modes.
  KL is KL(p_gen || p_real), p_real being the classifier's histogram on real test images.
* Stacked datasets (1000 modes, PacGAN / VEEGAN protocol): each channel is classified;
  a mode is covered when at least one sample falls in it; KL is KL(p_gen || uniform).
"""

from __future__ import annotations

import torch

EPS = 1e-12  # floor for p_real where p_gen > 0 (a class the real data never shows)


def histogram(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class counts (float64) of integer predictions."""
    return torch.bincount(labels.reshape(-1).long(), minlength=num_classes).double()


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """(N, groups, classes) logits -> one label per sample, base-``classes`` coded.

    One group: the argmax. Three groups of 10 (Stacked MNIST): 100*c0 + 10*c1 + c2.
    """
    pred = logits.argmax(-1)
    if pred.ndim == 1:
        return pred
    k = logits.shape[-1]
    weights = k ** torch.arange(pred.shape[1] - 1, -1, -1, device=pred.device)
    return (pred * weights).sum(1)


def kl_divergence(p_gen: torch.Tensor, p_real: torch.Tensor) -> float:
    """KL(p_gen || p_real) in nats; terms with p_gen = 0 contribute nothing."""
    p = p_gen / p_gen.sum()
    q = (p_real / p_real.sum()).clamp_min(EPS)
    mask = p > 0
    return float((p[mask] * (p[mask] / q[mask]).log()).sum())


def mode_metrics(gen_counts: torch.Tensor, real_counts: torch.Tensor | None,
                 min_frac: float = 0.1, min_count: int | None = None) -> dict:
    """Modes covered and KL from class counts.

    ``real_counts=None`` means a uniform reference (Stacked MNIST). ``min_count``
    (Stacked MNIST: 1) replaces the ``min_frac`` rule.
    """
    k = gen_counts.numel()
    ref = torch.ones(k, dtype=torch.float64) if real_counts is None else real_counts.double()
    n = float(gen_counts.sum())
    if min_count is not None:
        covered = gen_counts >= min_count
    else:
        covered = gen_counts / n >= min_frac * ref / ref.sum()
        covered &= gen_counts > 0
    return {"modes": int(covered.sum()), "num_modes": k,
            "kl": kl_divergence(gen_counts.double(), ref),
            "mode_rule": f"count >= {min_count}" if min_count is not None
            else f"share >= {min_frac} x real share",
            "n_mode_samples": int(n)}
