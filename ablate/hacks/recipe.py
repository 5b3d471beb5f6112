"""The Recipe: every choice the model builder, data pipeline and training loop make.

A Recipe is a frozen value of plain, typed data (strings, numbers, tuples, small frozen
dataclasses), so it can be hashed into a run key and written to ``config.json``. The
*all-off* Recipe — the defaults below — is the naive baseline of the README's table "The
eleven hacks"; each enabled hack returns a modified copy through
:meth:`ablate.hacks.hack.Hack.apply`. The training loop and the model builder read every field
and never a hack name.

Every field but ``extra`` is read by the loop or the model builder, and every value is
checked on construction (``Literal`` choices, ranges): a Recipe cannot hold a choice
nothing implements. A plugin's own settings live in its ``Params``. ``extra`` is the
first plugin API's free-form field, kept so that its plugins work unchanged: ``(key,
value)`` pairs that a plugin's module wrappers read, part of the run's identity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from ablate.errors import ConfigError
from ablate.hacks.params import FLOAT32_MAX, Bounds, check_fields

Downsample = Literal["strided", "pool"]
Upsample = Literal["transposed", "resize"]
Norm = Literal["batch", "none", "instance", "layer"]  # layer: GroupNorm(1, C)
DataRange = Literal["symmetric", "unit"]
Latent = Literal["gaussian", "uniform"]
DUpdate = Literal["separate", "mixed"]
Probability = Annotated[float, Bounds(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Bounds(ge=0.0)]
Beta = Annotated[float, Bounds(ge=0.0, lt=1.0)]
Scalar = bool | int | float | str | None
ExtraValue = Scalar | tuple[Scalar, ...]


@dataclass(frozen=True)
class Activation:
    """A hidden-layer activation: ``relu``, or ``leaky`` with its negative slope."""

    kind: Literal["relu", "leaky"] = "relu"
    slope: NonNegative = 0.0

    def __post_init__(self) -> None:
        check_fields(self, "Activation")


@dataclass(frozen=True)
class Init:
    """Weight initialisation: PyTorch's ``default``, or ``normal`` with std (DCGAN)."""

    kind: Literal["default", "normal"] = "default"
    std: NonNegative = 0.02

    def __post_init__(self) -> None:
        check_fields(self, "Init")


@dataclass(frozen=True)
class Optimizer:
    """An optimizer's settings: Adam (the only family the eleven hacks vary), or RMSProp
    (``lr``, ``weight_decay``; smoothing 0.99, no momentum; ``betas`` unused), as WGAN
    with weight clipping uses."""

    name: Literal["adam", "rmsprop"] = "adam"
    lr: Annotated[float, Bounds(gt=0.0)] = 1e-3  # torch.optim.Adam's default: what a practitioner gets without the hack
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    weight_decay: NonNegative = 0.0

    def __post_init__(self) -> None:
        check_fields(self, "Optimizer")
        # Adam's first step is lr / (1 - beta1) (bias correction), computed in float32: a
        # larger one fails inside every run. A large lr that fits (1e20) diverges, which
        # the grid records as an outcome.
        if self.name == "adam" and self.lr / (1 - self.betas[0]) > FLOAT32_MAX:
            raise ConfigError(f"Optimizer.lr = {self.lr}: Adam's first step lr / (1 - beta1) = "
                              f"{self.lr / (1 - self.betas[0]):.4g} exceeds float32's "
                              f"{FLOAT32_MAX:.4g}; valid: lr <= {FLOAT32_MAX * (1 - self.betas[0]):.4g}")


@dataclass(frozen=True)
class Recipe:
    """Every training choice, all-off (naive baseline) by default (README, "The eleven hacks")."""

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
    d_steps: Annotated[int, Bounds(ge=1)] = 1  # discriminator updates per generator update
    # --- data and latent -------------------------------------------------------------
    data_range: DataRange = "unit"  # [0,1] data and a sigmoid output layer
    latent: Latent = "uniform"  # z ~ U(-1, 1)
    # --- discriminator targets -------------------------------------------------------
    real_target: tuple[float, float] = (1.0, 1.0)  # targets drawn from U(lo, hi)
    fake_target: tuple[float, float] = (0.0, 0.0)
    label_flip_p: Probability = 0.0  # probability of swapping a D target real<->fake
    d_update: DUpdate = "mixed"  # one update on a real+fake batch
    # --- the first plugin API's free-form settings -------------------------------------
    # (key, value) pairs for third-party hacks whose behaviour lives in module wrappers
    # (read by them, never by ablate); part of the run identity. New plugins use Params.
    extra: tuple[tuple[str, ExtraValue], ...] = ()

    def __post_init__(self) -> None:
        check_fields(self, "Recipe")
        # A key appended again (``r.extra + (("k", v),)``) is set again: one pair per key,
        # in first-set order, so that two hacks setting one key overlap (interactions).
        object.__setattr__(self, "extra", tuple(dict(self.extra).items()))
        for key in ("real_target", "fake_target"):
            lo, hi = getattr(self, key)
            if lo > hi:
                raise ConfigError(f"Recipe.{key} = {(lo, hi)}: needs low <= high")

    def replace(self, **changes: Any) -> Recipe:
        """Return a copy with ``changes`` applied; unknown fields and bad values raise
        :class:`~ablate.errors.ConfigError` naming the field."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise ConfigError(f"Recipe has no field {unknown[0]!r}; fields: {', '.join(FIELDS)} "
                              "(a hack's own settings belong in its Params)")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (what config.json records and run keys hash;
        ``"extra"`` is ``[]`` unless a first-API plugin sets it, as in every committed run)."""
        return {**dataclasses.asdict(self), "extra": [list(kv) for kv in self.extra]}

    def extra_value(self, key: str, default: Any = None) -> Any:
        """The value ``extra`` holds for ``key`` (``default`` when it holds none)."""
        return dict(self.extra).get(key, default)


FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))
