"""Run identity: which fields define a run's result, and the run key hashed from them.

The key is built **by inclusion**: :func:`identity` lists every field that changes what a
run computes and nothing else, so a field added to ``config.json`` for provenance
(library versions, hardware, a timestamp) can never change a key. The fields:

* training (:data:`TRAIN_FIELDS`): dataset, steps, batch size, seed, the enabled hacks,
  model widths, latent size, precision and the validation-curve settings — not the
  device, thread count or log interval, which say where and how a run executed;
* every enabled hack with all its parameters (defaults resolved) and, for hacks that
  ``ablate`` does not provide itself, the ``version`` their record carries (built-in
  hacks are covered by :data:`CODE_VERSION`, so their keys never carry one); disabled
  hacks do not enter the key, so adding a hack to an experiment keeps every old key;
* the folded Recipe, the evaluation protocol and :data:`CODE_VERSION`.

The committed results (``results/*/runs.sqlite``) pin these rules: the tests re-plan
those experiments and must find exactly their keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.config import EvalProtocol, TrainConfig
from ablate.experiment.axes import apply_level
from ablate.experiment.design import Design
from ablate.errors import ConfigError
from ablate.experiment.spec import Experiment
from ablate.training.resolve import resolve
from ablate.training.loop import TrainPlan

# Bump when a code change alters what a finished run means (training or metrics), so
# old results are not mixed with new ones: every key changes and everything retrains.
CODE_VERSION = "1"
KEY_LENGTH = 16  # hex digits of sha256 kept in a run key (64 bits)
# TrainConfig fields that define a result (device, threads and log_every do not; params
# enter through the hack records, with every default resolved).
TRAIN_FIELDS = ("dataset", "steps", "batch_size", "seed", "hacks", "ngf", "ndf", "latent_dim",
                "precision", "val_every", "val_n")
BUILTIN_PROVIDER = "ablate"  # registry.provider() of the built-in hacks


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: the JSON shape the key is hashed from."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def hack_identity(record: Mapping[str, Any]) -> dict[str, Any]:
    """What of a hack record (``TrainPlan.hack_records``) enters the key."""
    out = {"name": record["name"], "params": _plain(dict(record["params"]))}
    if record.get("provider") != BUILTIN_PROVIDER and record.get("version") is not None:
        out["version"] = record["version"]
    return out


def evaluation_fields(protocol: EvalProtocol | None,
                      unscored: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> dict[str, Any]:
    """The evaluation mapping a run key hashes (:func:`identity`'s ``evaluation``): the
    protocol's fields; for a run scored by nothing, ``unscored`` as given (an experiment's
    ``features = []`` table, ``Experiment.unscored``; ``ablate train`` without ``--eval``: none).
    The one place a protocol becomes part of a key."""
    if protocol is not None:
        return protocol.to_dict()
    return dict(unscored)


def identity(plan: TrainPlan, evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a resolved run that define its result (hashed into its key);
    ``evaluation`` is :func:`evaluation_fields`'s mapping."""
    config = plan.config
    return {
        "train": {f: _plain(getattr(config, f)) for f in TRAIN_FIELDS},
        "hacks": [hack_identity(r) for r in plan.hack_records],
        "recipe": _plain(plan.recipe.to_dict()),
        "evaluation": {k: _plain(v) for k, v in sorted(evaluation.items())},
        "code_version": CODE_VERSION,
    }


def run_key(ident: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of an identity (see :func:`identity`)."""
    text = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def key_of(config: TrainConfig, evaluation: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Resolve ``config`` (validating hack names, parameters, conflicts); its key and identity."""
    ident = identity(resolve(config), evaluation)
    return run_key(ident), ident


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to execute one run (picklable)."""

    key: str
    variant: str
    seed: int
    config: TrainConfig
    protocol: EvalProtocol | None  # how the run is scored; None: it is not
    results_dir: str  # absolute
    retry_failed: bool = False
    # What was hashed into the key (stored with the plan); not part of equality.
    identity: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def evaluates(self) -> bool:
        return self.protocol is not None


# What an executor runs at once: one run, or a fused group trained as one model.
Task = tuple[RunSpec, ...]


def plan_runs(experiment: Experiment, design: Design, results_dir: Path | str,
              counts: Mapping[str, int] | None = None, *, device: str = "auto",
              threads: int | None = None) -> list[RunSpec]:
    """Each (variant, seed) of the experiment as a RunSpec, seed-major.

    ``counts`` (variant -> n) plans seeds ``0 .. n-1`` per variant (adaptive seeds);
    without it every variant gets the experiment's seeds. Seed-major order makes a
    partly finished grid useful: every variant gets seed 0 before any gets seed 1.
    """
    evaluation = evaluation_fields(experiment.protocol, experiment.unscored)
    results = str(Path(results_dir).resolve())
    if counts is None:
        seeds: Iterable[int] = experiment.seeds
    else:
        seeds = range(max(counts.values(), default=0))
    out = []
    for seed in seeds:
        for v in design.variants:
            if counts is not None and seed >= counts.get(v.name, 0):
                continue
            params, train = experiment.params, experiment.train_kwargs()
            if v.level:  # [axes]: this variant's level of each axis
                params, train = apply_level(v.level, v.hacks, params, train)
            config = TrainConfig(dataset=experiment.dataset, seed=seed, hacks=tuple(sorted(v.hacks)),
                                 params=params, device=device, threads=threads, **train)
            try:
                key, ident = key_of(config, evaluation)
            except ConfigError as exc:
                raise ConfigError(f"variant {v.name!r}: {exc}") from exc
            out.append(RunSpec(key, v.name, seed, config, experiment.protocol, results,
                               identity=ident))
    return out
