"""Score several run directories together: one feature-net pass over all their samples
(the scoring core, :func:`ablate.metrics.evaluate.score_many`, is the lone scorer's too).

:func:`evaluate_group` writes each run's ``metrics.json`` with the same content as
:func:`ablate.metrics.evaluate.evaluate_run` (same samples, same metrics, same protocol and
provenance fields; timings differ). What it shares: the feature networks, built
once; the real statistics, loaded once per feature net; and the feature passes —
each batch of generated images from every member goes through each net as one batch
(at most ``max_batch`` images), so a GPU sees batches K times larger. FID and KID are
then fed each member's own features (torchmetrics with a pass-through feature module,
which is what they compute from the net's output anyway).

The classifier's features do not depend on the batch they are computed in on the CPU
(checked in ``tests/test_fused.py``), so the metrics equal ``evaluate_run``'s there;
on a GPU, cuDNN may pick another algorithm for a larger batch (rounding-level changes).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ablate.config import EvalProtocol
from ablate.environment import git_commit, resolve_device, versions
from ablate.errors import ConfigError
from ablate.layout import RunDir
from ablate.metrics.evaluate import MAX_BATCH, Scoring, feature_nets, generator_sampler, score_many
from ablate.training.resolve import load_run

__all__ = ["MAX_BATCH", "evaluate_group"]

def evaluate_group(run_dirs: Sequence[Path | str], protocol: EvalProtocol | None = None,
                   device: str | torch.device = "auto", write: bool = True,
                   max_batch: int = MAX_BATCH) -> list[dict]:
    """Score the last (and best, if kept) generator of each run; write each ``metrics.json``.

    The runs may come from any group (or none): runs of one dataset are scored
    together. Returns each run's ``metrics.json`` content, in order. Each document
    matches :func:`ablate.metrics.evaluate.evaluate_run`'s for that run (its provenance adds
    ``"evaluated_with"``, the number of runs scored together).
    """
    protocol = protocol or EvalProtocol()
    run_dirs = [Path(p) for p in run_dirs]
    for run_dir in run_dirs:
        if not RunDir(run_dir).config.exists() or not RunDir(run_dir).generator.exists():
            raise ConfigError(f"{run_dir} is not a finished run directory "
                              "(needs config.json and generator.pt)")
    dev = resolve_device(str(device))
    loaded = [load_run(d, str(dev)) for d in run_dirs]
    by_dataset: dict[str, list[int]] = {}
    for i, (cfg, _, _) in enumerate(loaded):
        by_dataset.setdefault(cfg["train"]["dataset"], []).append(i)
    docs: list[dict | None] = [None] * len(run_dirs)
    for dataset, idx in by_dataset.items():
        nets = feature_nets(dataset, protocol.features, dev)
        scorings: list[Scoring] = []
        steps: dict[tuple[int, str], Any] = {}
        for i in idx:
            cfg, recipe, g = loaded[i]
            result = RunDir(run_dirs[i]).read_result() if RunDir(run_dirs[i]).result.exists() else {}
            extra = result.get("extra") or {}
            checkpoints = {"last": (RunDir(run_dirs[i]).generator, result.get("steps"))}
            if RunDir(run_dirs[i]).generator_best.exists():
                checkpoints["best"] = (RunDir(run_dirs[i]).generator_best, extra.get("best_step"))
            for label, (path, step) in checkpoints.items():
                gl = g if label == "last" else load_run(run_dirs[i], str(dev))[2]
                gl.load_state_dict(torch.load(path, map_location=dev))
                sampler = generator_sampler(gl, recipe, cfg["train"]["latent_dim"], protocol.seed, dev)
                scorings.append(Scoring(sampler, i, label))
                steps[(i, label)] = (step, extra.get("best_val_fid"))
        t_group = time.perf_counter()
        metrics, provenance = score_many(scorings, dataset, protocol, dev, nets, max_batch)
        provenance.pop("timing_s")  # summed over the group: not one run's
        group_time = time.perf_counter() - t_group
        for i in idx:
            out: dict[str, Any] = {}
            scored = False
            for s, m in zip(scorings, metrics):
                if s.run != i:
                    continue
                step, val_fid = steps[(i, s.label)]
                out[s.label] = {"step": step, **(m if m is not None else {"error": s.error})}
                if s.label == "best":
                    out[s.label]["val_fid"] = val_fid
                scored |= m is not None
            # As evaluate_run: the scoring provenance only where a checkpoint was scored.
            prov = dict(provenance) if scored else {}
            prov.update(timing_by_checkpoint_s={}, time_s=round(group_time / len(idx), 3),
                        git_commit=git_commit(), versions=versions(), run_dir=str(run_dirs[i]),
                        evaluated_with=len(idx))
            prov.setdefault("features", {n: nets[n].provenance() for n in nets})
            doc = {**out, "protocol": protocol.to_dict(), "provenance": prov}
            if write:
                RunDir(run_dirs[i]).write_metrics(doc)
            docs[i] = doc
    return docs  # type: ignore[return-value]
