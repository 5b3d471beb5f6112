"""Published figures a report may put beside its own, each with its source and protocol.

Only for context: a report prints them next to its anchor numbers together with every
protocol difference (architecture, budget, N, feature net), never as a target. Each
figure is copied from the paper named in its ``source``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    """One published figure: ``value`` (± ``sd`` where given) of ``metric`` for ``model``."""

    source: str     # short citation
    dataset: str    # ablate's dataset name it speaks to
    model: str      # the model as the source names it
    metric: str     # "tf_inception_fid", "modes" or "kl"
    value: float
    sd: float | None
    protocol: str   # how the source measured it, in a phrase


FIGURES: tuple[Published, ...] = (
    Published("Lucic et al. 2018, Are GANs Created Equal?", "fashion-mnist", "NS-GAN",
              "tf_inception_fid", 26.5, 1.6,
              "best FID after a large hyperparameter search, InfoGAN-style architecture "
              "(not DCGAN), 20 epochs at batch 64, 10k generated vs the test split"),
    Published("Lucic et al. 2018, Are GANs Created Equal?", "fashion-mnist", "MM-GAN",
              "tf_inception_fid", 29.6, 1.6,
              "as NS-GAN: best after a large search, InfoGAN-style architecture, 20 epochs"),
    Published("Lucic et al. 2018, Are GANs Created Equal?", "mnist", "NS-GAN",
              "tf_inception_fid", 6.8, 0.5,
              "best after a large search, InfoGAN-style architecture, 20 epochs, 10k vs test"),
    Published("VEEGAN (Srivastava et al. 2017), as quoted in PacGAN (Lin et al. 2018)", "stacked-mnist", "DCGAN",
              "modes", 99.0, None, "VEEGAN's setting: 26k samples, a ~99% MNIST classifier per channel"),
    Published("VEEGAN (Srivastava et al. 2017), as quoted in PacGAN (Lin et al. 2018)", "stacked-mnist", "DCGAN",
              "kl", 3.40, None, "VEEGAN's setting: KL(p_gen || uniform) over the 1000 modes"),
    Published("PacGAN (Lin et al. 2018), Tables 2-3", "stacked-mnist", "DCGAN",
              "modes", 78.9, 6.5, "PacGAN's own DCGAN runs, 26k samples, VEEGAN protocol"),
    Published("PacGAN (Lin et al. 2018), Tables 2-3", "stacked-mnist", "DCGAN",
              "kl", 4.50, None, "PacGAN's own DCGAN runs, VEEGAN protocol"),
    Published("PacGAN (Lin et al. 2018), Tables 2-3", "stacked-mnist", "PacDCGAN2",
              "modes", 1000.0, None, "PacGAN's packed discriminator (m = 2), VEEGAN protocol"),
    Published("PacGAN (Lin et al. 2018), Tables 2-3", "stacked-mnist", "PacDCGAN2",
              "kl", 0.06, None, "PacGAN's packed discriminator (m = 2), VEEGAN protocol"),
)


def figures_for(dataset: str, metric: str) -> list[Published]:
    """The published figures for a dataset (``stacked-mnist*`` -> ``stacked-mnist``) and metric."""
    base = "stacked-mnist" if dataset.startswith("stacked-mnist") else dataset.split("-5k")[0]
    return [f for f in FIGURES if f.dataset == base and f.metric == metric]
