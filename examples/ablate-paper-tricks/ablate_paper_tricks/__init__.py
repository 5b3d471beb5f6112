"""Eleven GAN-paper tricks as ablate hacks, through ablate's public API only.

Importing this package registers every hack (the ``ablate.hacks`` entry point in
pyproject.toml names it). One module per trick; each says which hooks it uses.
"""

from ablate_paper_tricks.ada import ADA
from ablate_paper_tricks.diffaugment import DiffAugment
from ablate_paper_tricks.ema import GeneratorEMA
from ablate_paper_tricks.feature_matching import FeatureMatching
from ablate_paper_tricks.hinge import HingeLoss
from ablate_paper_tricks.lsgan import LSGAN
from ablate_paper_tricks.mbstd import MinibatchStddev
from ablate_paper_tricks.r1 import R1Penalty
from ablate_paper_tricks.ttur import TTUR
from ablate_paper_tricks.wgan_gp import WGANGP
from ablate_paper_tricks.weight_clipping import WeightClipping

__all__ = ["ADA", "DiffAugment", "FeatureMatching", "GeneratorEMA", "HingeLoss", "LSGAN",
           "MinibatchStddev", "R1Penalty", "TTUR", "WGANGP", "WeightClipping"]
