"""The eleven built-in hacks, in the order of the README's hack table.

:data:`BUILTIN` is the explicit list the registry registers first; the hack modules
import only :mod:`ablate.hacks.hack` and :mod:`ablate.hacks.recipe`, never the registry.
"""

from ablate.hacks.dcgan import (AdamDCGAN, BatchNorm, GaussianInit, LeakyReLU, StridedDownsample,
                                StridedUpsample, TanhRange)
from ablate.hacks.ganhacks import GaussianLatent, LabelSmoothing, NoisyLabels, SeparateBatches

BUILTIN = (StridedDownsample, StridedUpsample, LeakyReLU, BatchNorm, GaussianInit, AdamDCGAN,
           TanhRange, GaussianLatent, SeparateBatches, LabelSmoothing, NoisyLabels)

__all__ = ["BUILTIN"]
