"""One run's bookkeeping, shared by the lone loop (:mod:`ablate.training.loop`) and the
fused trainer (:mod:`ablate.fused.trainer`, one :class:`RunLog` per member).

A :class:`RunLog` owns what a run writes besides its weights and samples: the
``log.jsonl`` records (a training record per log window, a validation record per
validation), the divergence step, ``generator_best.pt`` (the generator with the lowest
validation FID so far), ``result.json``, and its own part of the training checkpoint
(the records, the best generator, the steps earlier attempts resumed from). The
trainer owns the numbers: it hands each window's per-step statistics and timings in.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ablate.artefacts import write_atomic
from ablate.errors import ConfigError
from ablate.layout import RunDir
from ablate.training import checkpoint

Validator = Callable[[nn.Module], float]  # generator -> validation FID
# The per-step statistics of a training record, in the trainers' window column order.
STATS = ("loss_d", "loss_g", "d_real", "d_fake")
# log.jsonl keys the trainers write themselves: ``ctx.log`` may not use them.
LOG_KEYS = frozenset({"step", *STATS, "images_per_s", "elapsed_s",
                      "diverged_step", "val_fid", "val_n", "best_step"})


class HackLog:
    """``ctx.log(name, value)``: numbers hooks report, averaged over the log window.

    Each call adds one value (a number or a one-element tensor; a tensor costs a host
    sync); at the end of a log window the mean of each name's values since the previous
    record is written as an extra key of the step's ``log.jsonl`` record (a name not
    logged in a window is absent from it; a non-finite mean is written as null). The
    window's values are part of the training checkpoint, so a resumed run logs the
    same numbers bit for bit.
    """

    def __init__(self) -> None:
        self.window: dict[str, list[float]] = {}

    def __call__(self, name: str, value: Any) -> None:
        if not isinstance(name, str) or not name or name in LOG_KEYS:
            raise ConfigError(f"ctx.log(): bad name {name!r} (a non-empty string other than "
                              f"the loop's own keys {', '.join(sorted(LOG_KEYS))})")
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ConfigError(f"ctx.log({name!r}, ...): a number or a one-element tensor "
                                  f"expected, got a tensor of shape {tuple(value.shape)}")
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"ctx.log({name!r}, ...): a number expected, got {type(value).__name__}")
        self.window.setdefault(name, []).append(float(value))

    def flush(self) -> dict[str, float | None]:
        """The window's means by name (in first-logged order); the window restarts."""
        out = {}
        for name, values in self.window.items():
            mean = sum(values) / len(values)
            out[name] = mean if math.isfinite(mean) else None
        self.window = {}
        return out


@dataclass
class TrainResult:
    """The outcome of a run's training, also written as ``result.json``."""

    status: str  # "done" or "diverged"
    steps: int  # generator updates completed
    diverged_step: int | None
    wall_time_s: float
    train_time_s: float
    images_per_s: float
    out_dir: str
    extra: dict[str, Any] = field(default_factory=dict)


class RunLog:
    """One run's log window records, divergence step, best checkpoint and result.

    ``validate`` is the run's validation callable (None: the run is not validated).
    """

    def __init__(self, out_dir: Path, validate: Validator | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.dir = RunDir(self.out_dir)
        self.validate = validate
        self.records: list[dict] = []  # log.jsonl's records, for the checkpoint
        self.status: str = "done"
        self.diverged_step: int | None = None
        self.best_fid, self.best_step = math.inf, None
        self.val_time = 0.0  # seconds this run spent validating
        self.resumed_from: list[int] = []
        self.resumed_wall_s = 0.0  # wall time of the earlier attempts, up to the checkpoint resumed

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    def append(self, record: dict) -> None:
        self.dir.append_log(record)
        self.records.append(record)

    def window(self, step: int, stats: torch.Tensor, timing: dict[str, float],
               extra: dict[str, Any] | None = None) -> bool:
        """Log the window ending at ``step``: ``stats`` holds its per-step :data:`STATS`
        (one row per step, on the host); ``timing`` gives ``images_per_s`` and
        ``elapsed_s``; ``extra`` (the hooks' ``ctx.log`` means) follows them. A
        non-finite statistic marks the run diverged at its step; returns whether it is."""
        n = stats.shape[0]
        bad = (~torch.isfinite(stats)).any(dim=1).nonzero()
        means = [v if math.isfinite(v) else None for v in stats.mean(0).tolist()]
        record = {"step": step, **dict(zip(STATS, means)), **timing}
        if extra:
            record.update(extra)
        if len(bad):
            self.status, self.diverged_step = "diverged", step - n + int(bad[0]) + 1
            record["diverged_step"] = self.diverged_step
        self.append(record)
        return self.diverged

    def validated(self, step: int, g: nn.Module, val_n: int, since: float) -> None:
        """Validate generator ``g`` at ``step``: keep it as ``generator_best.pt`` when its
        FID is the lowest so far and log the validation; the time since ``since``
        (``time.perf_counter()``) counts as validation time."""
        assert self.validate is not None
        val_fid = self.validate(g)
        if val_fid < self.best_fid:  # NaN (non-finite samples) never becomes the best
            self.best_fid, self.best_step = val_fid, step
            write_atomic(self.dir.generator_best, lambda f: torch.save(g.state_dict(), f))
        self.append({"step": step, "val_fid": val_fid, "val_n": val_n, "best_step": self.best_step})
        self.val_time += time.perf_counter() - since

    def state(self) -> dict[str, Any]:
        """This run's part of a training checkpoint (:mod:`ablate.training.checkpoint`)."""
        best = None
        if self.best_step is not None:  # generator_best.pt's state, written at best_step
            best = torch.load(self.dir.generator_best, map_location="cpu", weights_only=True)
        return {"resumed_from": self.resumed_from, "log": self.records,
                "best": {"fid": self.best_fid, "step": self.best_step, "state": best}}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from checkpoint ``state``: ``log.jsonl`` and ``generator_best.pt``
        are rewritten as they were at its step."""
        self.best_fid, self.best_step = state["best"]["fid"], state["best"]["step"]
        self.records = list(state["log"])
        self.resumed_from = [*state["resumed_from"], state["step"]]
        self.resumed_wall_s = state["time"]["wall_s"]
        self.val_time = state["time"]["val_s"]
        text = "".join(json.dumps(r) + "\n" for r in self.records)
        write_atomic(self.dir.log, lambda f: f.write(text), mode="w")
        best = state["best"]["state"]
        if best is None:
            self.dir.generator_best.unlink(missing_ok=True)
        else:
            write_atomic(self.dir.generator_best, lambda f: torch.save(best, f))

    def finish(self, step: int, batch_size: int, wall_s: float, train_s: float, config: Any,
               extra: dict[str, Any] | None = None) -> TrainResult:
        """Write ``result.json`` (``extra``: the trainer's own keys, before
        ``resumed_from``) and remove the run's checkpoint; returns the result."""
        result = TrainResult(self.status, step, self.diverged_step, wall_s, train_s,
                             step * batch_size / train_s, str(self.out_dir))
        if self.validate is not None:
            result.extra.update(best_step=self.best_step,
                                best_val_fid=self.best_fid if self.best_step else None,
                                val_n=config.val_n, val_every=config.val_every,
                                val_time_s=round(self.val_time, 3))
        result.extra.update(extra or {})
        if self.resumed_from:
            result.extra["resumed_from"] = self.resumed_from
            result.extra["resumed_wall_s"] = round(self.resumed_wall_s, 3)
        self.dir.write_result(dataclasses.asdict(result))
        checkpoint.remove(self.out_dir)  # finished: no longer needed
        return result
