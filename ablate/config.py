"""Typed, frozen run configuration: what to train (:class:`TrainConfig`) and how to score
it (:class:`EvalProtocol`). Plain data, no torch import: the CLI, the experiment parser,
the grid and the report all read these without loading a deep-learning stack.

Both are part of a run's identity (see ``ablate.grid.keys`` and docs/design.md, "Run
keys"): change a field and the run is a different run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from ablate.errors import ConfigError
from ablate.hacks.params import Bounds, check, check_fields

LATENT_DIM = 100  # DCGAN's z size
PRECISIONS = ("fp32", "bf16")
FEATURES = ("classifier", "inception")  # the feature nets FID/KID/PRDC can use
REAL_SPLITS = ("test", "train")  # never "val": validation FID picks checkpoints with it
MAX_SEED = 2**32 - 1  # seeds feed torch and numpy generators (numpy takes < 2**32)
# Upper bounds that refuse typos before every run of a grid fails on them:
MAX_STEPS = 100_000_000  # steps: 200x BigGAN's 500k
MAX_WIDTH = 1024  # ngf, ndf: 16x DCGAN's 64 (G's widest layer has 4 x width channels)
MAX_LATENT = 1024  # latent_dim: DCGAN 100, StyleGAN 512
MAX_SAMPLES = 1_000_000  # n, val_n, n_stacked: 20x the usual 50k of Inception FID
MAX_KID_SUBSETS = 10_000  # torchmetrics' default is 100
MAX_LR_SCALE = 1000.0  # lr_scale: x1000 of Adam's 2e-4 is 0.2, far past any GAN's lr
LR_SCALE = Annotated[float, Bounds(gt=0.0, le=MAX_LR_SCALE)]


def _bounded(obj: Any, where: str, keys: tuple[str, ...], low: int, high: int) -> None:
    for key in keys:
        if not low <= getattr(obj, key) <= high:
            raise ConfigError(f"{where}{key} = {getattr(obj, key)}; valid: {low} .. {high}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (and so its identity)."""

    dataset: str = "fashion-mnist"
    steps: int = 1000  # generator updates
    batch_size: int = 64  # real images per discriminator update (and fakes alike)
    seed: int = 0
    hacks: tuple[str, ...] = ()  # enabled hacks; order is irrelevant (canonical order used)
    # (hack, param, value) overrides; also for disabled hacks, which then just validate.
    params: tuple[tuple[str, str, Any], ...] = ()
    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width
    latent_dim: int = LATENT_DIM
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    log_every: int = 50  # steps between log lines and divergence checks
    # bf16 autocast for G and D forward passes: pays on GPUs and on CPUs with AMX or
    # AVX512-BF16 (`ablate doctor` measures it), a trap on AVX2-only CPUs. Off by default so
    # that numbers compare across machines; it is part of the run identity.
    precision: str = "fp32"
    # Validation FID (classifier features, vs the val split) every val_every steps; 0 = off.
    # It draws the curve in log.jsonl and picks generator_best.pt (never the test split).
    # TrainConfig owns val_every and val_n (VALIDATION_FIELDS); EvalProtocol records a copy
    # made by with_validation() only.
    val_every: int = 0
    val_n: int = 2000  # samples per validation FID: cheap (~1 s on CPU), stable enough to rank
    # A training checkpoint (train_state.pt) every checkpoint_every steps, to resume an
    # interrupted run bit for bit; 0 = none. Not part of the run identity.
    checkpoint_every: int = 1000
    # Multiplies the learning rate of both optimizers after the hacks folded (a parameter
    # axis: is a verdict robust to a 4x range of learning rates?). It enters the run key
    # through the folded Recipe, so 1.0 keeps every key as it was.
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "ngf", "ndf", "latent_dim", "log_every", "val_n"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be a positive integer, got {getattr(self, key)}")
        _bounded(self, "", ("steps", "log_every"), 1, MAX_STEPS)
        _bounded(self, "", ("ngf", "ndf"), 1, MAX_WIDTH)
        _bounded(self, "", ("latent_dim",), 1, MAX_LATENT)
        _bounded(self, "", ("val_n",), 1, MAX_SAMPLES)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {self.threads}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.val_every < 0:
            raise ConfigError(f"val_every must be >= 0 (0 = off), got {self.val_every}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0 (0 = off), got {self.checkpoint_every}")
        check(self.lr_scale, LR_SCALE, "lr_scale")  # the coercion hack parameters use
        if not 0 <= self.seed <= MAX_SEED:  # torch and numpy seeds; larger ones overflow
            raise ConfigError(f"seed must be in [0, {MAX_SEED}], got {self.seed}")

    def param_dict(self) -> dict[str, dict[str, Any]]:
        """``params`` as ``{hack: {param: value}}``."""
        return params_to_dict(self.params)


def params_to_dict(triples: tuple[tuple[str, str, Any], ...]) -> dict[str, dict[str, Any]]:
    """``(hack, param, value)`` triples -> ``{hack: {param: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for hack, key, value in triples:
        out.setdefault(hack, {})[key] = value
    return out


@dataclass(frozen=True)
class EvalProtocol:
    """How runs are scored; part of a run's identity (hashed into run keys)."""

    features: tuple[str, ...] = ("classifier",)  # CPU default; Inception costs ~18 min/10k on CPU
    n: int = 10_000  # generated samples vs (up to) n real test images: FID depends on N
    real_split: str = "test"  # final metrics never touch the validation split
    kid_subsets: int = 100  # torchmetrics' default
    kid_subset_size: int = 1000  # adapted down (and reported) when a set is smaller
    pr_k: int = 3  # improved precision/recall (Kynkäänniemi et al. 2019)
    dc_k: int = 5  # density/coverage (Naeem et al. 2020)
    mode_min_frac: float = 0.1  # a class is covered at >= 10% of its real share
    n_stacked: int = 26_000  # Stacked MNIST mode count (PacGAN / VEEGAN: 26k samples)
    # Copies of the training's validation settings (TrainConfig owns them; set them with
    # with_validation()). Recorded here, and in the run key, as they always were.
    val_every: int = 0  # training: validation FID every K steps (0 = off)
    val_n: int = 2000  # training: samples per validation FID (vs the val split)
    batch_size: int = 500  # generation / feature batch
    seed: int = 0  # latents of the evaluation samples and KID subsets

    def __post_init__(self) -> None:
        if isinstance(self.features, str) or not self.features:
            raise ConfigError(f"features must be a non-empty tuple, got {self.features!r}")
        bad = [f for f in self.features if f not in FEATURES]
        if bad:
            raise ConfigError(f"unknown feature net(s) {bad}; valid: {', '.join(FEATURES)}")
        check_fields(self, "EvalProtocol")  # types: n = nan or 1e400 is no sample count
        for key in ("n", "kid_subsets", "kid_subset_size", "pr_k", "dc_k", "n_stacked",
                    "val_n", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"EvalProtocol.{key} must be positive, got {getattr(self, key)}")
        if self.n < 2:
            raise ConfigError("EvalProtocol.n must be at least 2")
        _bounded(self, "EvalProtocol.", ("n",), 2, MAX_SAMPLES)
        _bounded(self, "EvalProtocol.", ("val_n", "n_stacked"), 1, MAX_SAMPLES)
        _bounded(self, "EvalProtocol.", ("kid_subsets",), 1, MAX_KID_SUBSETS)
        _bounded(self, "EvalProtocol.", ("pr_k", "dc_k"), 1, self.n - 1)  # k-NN among n samples
        _bounded(self, "EvalProtocol.", ("seed",), 0, MAX_SEED)
        if self.real_split not in REAL_SPLITS:
            raise ConfigError(f"EvalProtocol.real_split must be one of {', '.join(REAL_SPLITS)}, "
                              f"got {self.real_split!r} (val is kept for validation FID)")
        if not 0 <= self.mode_min_frac <= 1:
            raise ConfigError(f"EvalProtocol.mode_min_frac = {self.mode_min_frac}; valid: 0 .. 1 "
                              "(a share of a class's real frequency)")
        if self.val_every < 0:
            raise ConfigError("EvalProtocol.val_every must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalProtocol:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown protocol keys {sorted(unknown)}; valid: {sorted(names)}")
        d = dict(d)
        if "features" in d:
            d["features"] = parse_features(d["features"])
        return cls(**d)

    @classmethod
    def for_device_type(cls, device_type: str, **changes: Any) -> EvalProtocol:
        """Default features for a device type: classifier on CPU, classifier + Inception on GPU."""
        feats = ("classifier", "inception") if device_type == "cuda" else ("classifier",)
        return cls(**{"features": feats, **changes})


# The validation-curve settings. The training loop draws the curve, so TrainConfig owns
# them; EvalProtocol carries the same values (both enter the run key, as they always did),
# and with_validation() is the one place they are copied from the one to the other.
VALIDATION_FIELDS = ("val_every", "val_n")


def validation_of(train: TrainConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The validation settings of a TrainConfig, or of its ``config.json`` ``train`` record
    (a mapping: a missing field has TrainConfig's default)."""
    if isinstance(train, Mapping):
        return {k: train.get(k, getattr(TrainConfig, k)) for k in VALIDATION_FIELDS}
    return {k: getattr(train, k) for k in VALIDATION_FIELDS}


def with_validation(protocol: EvalProtocol, train: TrainConfig | Mapping[str, Any]) -> EvalProtocol:
    """``protocol`` carrying the validation settings of the training that owns them."""
    return dataclasses.replace(protocol, **validation_of(train))


def parse_features(value: str | list | tuple) -> tuple[str, ...]:
    """``classifier|inception|both`` (or a list) -> a features tuple."""
    if isinstance(value, str):
        value = {"both": list(FEATURES)}.get(value, [v.strip() for v in value.split(",") if v.strip()])
    return tuple(value)


@dataclass(frozen=True)
class SeedPolicy:
    """How many seeds each variant gets: a fixed list, or an adaptive range.

    Fixed (``adaptive`` False): every variant runs ``seeds``. Adaptive
    (``seeds = { min = 3, max = 12 }`` in an experiment file): every variant runs
    seeds ``0 .. min-1``; after each look the grid analyses the finished runs and adds
    ``step`` seeds to the variants of undecided contrasts, until every contrast is
    decided or a variant reaches ``max`` seeds. Looks happen at ``min, min+step, ...,
    max`` seeds (see ``ablate.report.sequential``).
    """

    seeds: tuple[int, ...] = (0, 1, 2)  # fixed policy: the seeds; adaptive: 0 .. max-1
    adaptive: bool = False
    min: int = 3
    max: int = 3
    step: int = 1

    def __post_init__(self) -> None:
        if self.adaptive:
            if not 2 <= self.min <= self.max:
                raise ConfigError(f"seeds: need 2 <= min <= max, got min={self.min}, max={self.max}")
            if self.step < 1:
                raise ConfigError(f"seeds.step must be a positive integer, got {self.step}")

    def looks(self) -> tuple[int, ...]:
        """Seeds per variant at each look (the last one is ``max``)."""
        if not self.adaptive:
            return (len(self.seeds),)
        ns = list(range(self.min, self.max, self.step)) + [self.max]
        return tuple(ns)


@dataclass(frozen=True)
class AnalysisSpec:
    """The ``[analysis]`` table: what the report decides and how strictly.

    ``sesoi`` is the smallest effect of interest as a relative change of the metric
    (0.10: a hack that changes FID by less than ±10% is *equivalent*); ``alpha`` the
    family-wise error rate across the hacks, for both the difference and the
    equivalence tests; ``metric`` the primary metric column (default: FID of the
    headline checkpoint with the first feature net).
    """

    sesoi: float = 0.10
    alpha: float = 0.05
    metric: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.sesoi < 1:
            raise ConfigError(f"[analysis].sesoi must be in (0, 1) (a relative change, "
                              f"0.10 = ±10%), got {self.sesoi}")
        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"[analysis].alpha must be in (0, 0.5), got {self.alpha}")
