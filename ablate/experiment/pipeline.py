"""The one flow the CLI and the grid share: resolve a config, train, score.

``train_and_score(config, protocol, out_dir)`` resolves the hacks
(:func:`ablate.training.resolve.resolve`; the Recipe refuses a bad value on construction,
and the fold names the hack that set it), builds the validation callable when the config asks for a
validation curve, trains into ``out_dir`` (:func:`ablate.training.loop.train`) and, when the
run finished and ``protocol`` is given, writes ``metrics.json``
(:func:`ablate.metrics.evaluate.evaluate_run`). A run that fails before training finished
leaves no directory behind (one it created), so ``--out`` can be reused, unless it wrote
a training checkpoint: then the directory stays, to be resumed (``resume``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from collections.abc import Callable, Iterable
from pathlib import Path

from ablate.training.checkpoint import STATE_FILE

from ablate.artefacts import folder_lock
from ablate.config import EvalProtocol, TrainConfig
from ablate.environment import apply_threads, resolve_device
from ablate.errors import ConfigError
from ablate.layout import RunDir
from ablate.metrics.evaluate import ValidationFID, evaluate_run
from ablate.training.resolve import resolve
from ablate.training.loop import TrainPlan, TrainResult, Validator, train


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


def train_and_score(config: TrainConfig, protocol: EvalProtocol | None, out_dir: Path | str,
                    *, resume: Iterable[Path | str] = (), fingerprint: str = "",
                    stop: Callable[[], bool] | None = None) -> Scored:
    """Train ``config`` into ``out_dir``; score it with ``protocol`` if it finished.

    ``resume``, ``fingerprint`` and ``stop`` are :func:`ablate.training.loop.train`'s.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file, not a run directory; choose another --out")
    apply_threads(config.threads)  # before anything builds a net (the classifier may train here)
    plan = resolve(config)  # validates hack names, parameters and conflicts first
    created = not out_dir.exists()
    # One process per run directory, from the checks to the scores; a second one stops
    # here, before the clean-up below could remove what the first is writing.
    with folder_lock(out_dir, "--out"):
        try:
            result = train(plan, out_dir, validator(plan), resume=resume, fingerprint=fingerprint,
                           stop=stop)
        except BaseException:  # incl. Ctrl-C: an unfinished run is worth only its checkpoint
            if created and not RunDir(out_dir).result.exists() \
                    and not (out_dir / STATE_FILE).exists():
                shutil.rmtree(out_dir, ignore_errors=True)
            raise
        metrics, t0 = None, time.perf_counter()
        if protocol is not None and result.status == "done":
            metrics = evaluate_run(out_dir, protocol, config.device)
    return Scored(result, metrics, time.perf_counter() - t0)
