"""The one flow the CLI and the grid share: resolve a config, train, score.

``train_and_score(config, protocol, out_dir)`` resolves the hacks
(:func:`ablate.resolve.resolve`), builds the validation callable when the config asks
for a validation curve, trains into ``out_dir`` (:func:`ablate.train.train`) and, when
the run finished and ``protocol`` is given, writes ``metrics.json``
(:func:`ablate.evaluate.evaluate_run`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ablate.config import EvalProtocol, TrainConfig
from ablate.environment import resolve_device
from ablate.evaluate import ValidationFID, evaluate_run
from ablate.resolve import resolve
from ablate.train import TrainPlan, TrainResult, Validator, train


@dataclass
class Scored:
    """What :func:`train_and_score` produced."""

    result: TrainResult
    metrics: dict | None  # metrics.json's content; None when not evaluated
    eval_time_s: float = 0.0


def validator(plan: TrainPlan) -> Validator | None:
    """The validation-FID callable for a plan, or None when ``val_every`` is 0."""
    config = plan.config
    if not config.val_every:
        return None
    return ValidationFID(config.dataset, plan.recipe, config.latent_dim, config.val_n,
                         resolve_device(config.device), seed=config.seed)


def train_and_score(config: TrainConfig, protocol: EvalProtocol | None, out_dir: Path | str
                    ) -> Scored:
    """Train ``config`` into ``out_dir``; score it with ``protocol`` if it finished."""
    if config.threads:  # before anything builds a net (the classifier may train here)
        torch.set_num_threads(config.threads)
    plan = resolve(config)  # validates hack names, parameters and conflicts first
    result = train(plan, out_dir, validator(plan))
    metrics, t0 = None, time.perf_counter()
    if protocol is not None and result.status == "done":
        metrics = evaluate_run(out_dir, protocol, config.device)
    return Scored(result, metrics, time.perf_counter() - t0)
