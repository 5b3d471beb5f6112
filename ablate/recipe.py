"""The Recipe: every choice the model builder, data pipeline and training loop make.

A Recipe is a frozen value of plain data (strings, numbers, tuples), so it can be
hashed into a run key and written to ``config.json``. The *all-off* Recipe — the
defaults below — is the naive baseline of DESIGN.md §1; each enabled hack returns a
modified copy through :meth:`ablate.hack.Hack.apply`. The training loop and the
model builder read only Recipe fields, never hack names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Downsample = Literal["strided", "pool"]
Upsample = Literal["transposed", "resize"]
Norm = Literal["batch", "none"]
DataRange = Literal["symmetric", "unit"]
Latent = Literal["gaussian", "uniform"]
DUpdate = Literal["separate", "mixed"]


@dataclass(frozen=True)
class Activation:
    """A hidden-layer activation: ``relu``, or ``leaky`` with its negative slope."""

    kind: Literal["relu", "leaky"] = "relu"
    slope: float = 0.0


@dataclass(frozen=True)
class Init:
    """Weight initialisation: PyTorch's ``default``, or ``normal`` with std (DCGAN)."""

    kind: Literal["default", "normal"] = "default"
    std: float = 0.02


@dataclass(frozen=True)
class Optimizer:
    """An Adam optimizer's settings (the only family the eleven hacks vary)."""

    name: Literal["adam"] = "adam"
    lr: float = 1e-3  # torch.optim.Adam's default: what a practitioner gets without the hack
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Recipe:
    """Every training choice, all-off (naive baseline) by default. See DESIGN.md §1."""

    # --- model structure -------------------------------------------------------------
    downsample: Downsample = "pool"  # D: 3x3 conv + 2x2 avg-pool instead of strided conv
    upsample: Upsample = "resize"  # G: nearest 2x + 3x3 conv instead of transposed conv
    d_activation: Activation = Activation()
    g_activation: Activation = Activation()
    g_norm: Norm = "none"  # applied to every G layer but the output
    d_norm: Norm = "none"  # applied to every D layer but the first and the last
    init: Init = Init()
    # --- optimisation ----------------------------------------------------------------
    g_optimizer: Optimizer = Optimizer()
    d_optimizer: Optimizer = Optimizer()
    d_steps: int = 1  # discriminator updates per generator update
    # --- data and latent -------------------------------------------------------------
    data_range: DataRange = "unit"  # [0,1] data and a sigmoid output layer
    latent: Latent = "uniform"  # z ~ U(-1, 1)
    # --- discriminator targets -------------------------------------------------------
    real_target: tuple[float, float] = (1.0, 1.0)  # targets drawn from U(lo, hi)
    fake_target: tuple[float, float] = (0.0, 0.0)
    label_flip_p: float = 0.0  # probability of swapping a D target real<->fake
    d_update: DUpdate = "mixed"  # one update on a shuffled real+fake batch
    # Free-form settings for third-party hacks whose behaviour lives in module
    # wrappers; part of the run identity. A tuple of (key, value) pairs keeps it hashable.
    extra: tuple[tuple[str, Any], ...] = field(default=())

    def replace(self, **changes: Any) -> "Recipe":
        """Return a copy with ``changes`` applied (fields are validated by name)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)
