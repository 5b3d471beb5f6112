"""``run_one``: the one run function every executor calls.

It claims the key in the store (atomically; a key another live process holds is left
alone), trains and scores into ``tmp/<key>-<token>/`` inside the results directory
(:func:`ablate.pipeline.train_and_score`), renames the directory to ``runs/<key>`` and
marks the key ``done`` (the commit point). A killed run leaves a tmp dir (swept on the
next start) and a ``running`` row whose owner is dead (reclaimed).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import traceback
from pathlib import Path

from ablate.artefacts import fsync_dir, write_json
from ablate.config import EvalProtocol
from ablate.grid.keys import CODE_VERSION, RunSpec
from ablate.grid.store import HEARTBEAT_S, Outcome, Status, Store
from ablate.pipeline import train_and_score


class _Heartbeat(threading.Thread):
    """Refreshes a claim's heartbeat from a thread with its own connection."""

    def __init__(self, results_dir: str, key: str, token: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{key}")
        self.args_ = (results_dir, key, token)
        self.stop = threading.Event()

    def run(self) -> None:
        results_dir, key, token = self.args_
        with Store(results_dir) as store:
            while not self.stop.wait(HEARTBEAT_S):
                store.heartbeat(key, token)


def _remove_tmp_for(results_dir: Path, key: str, keep: str | None = None) -> None:
    tmp = results_dir / "tmp"
    if tmp.is_dir():
        for d in tmp.glob(f"{key}-*"):
            if d.name != keep:
                shutil.rmtree(d, ignore_errors=True)


def run_one(spec: RunSpec) -> Outcome:
    """Claim, train, evaluate and commit one run; return its :class:`Outcome`."""
    results_dir = Path(spec.results_dir)
    with Store(results_dir) as store:
        token = store.claim(spec.key, spec.retry_failed)
        if token is None:
            return Outcome.of(spec, Status.HELD)
        name = f"{spec.key}-{token[:8]}"
        _remove_tmp_for(results_dir, spec.key)  # a dead attempt's leftovers: we own the key now
        tmp = results_dir / "tmp" / name
        beat = _Heartbeat(spec.results_dir, spec.key, token)
        beat.start()
        t0 = time.perf_counter()
        try:
            protocol = EvalProtocol.from_dict(dict(spec.evaluation)) if spec.evaluates else None
            scored = train_and_score(spec.config, protocol, tmp)
            result, metrics, eval_time = scored.result, scored.metrics, scored.eval_time_s
            write_json(tmp / "run.json", {"key": spec.key, "variant": spec.variant, "seed": spec.seed,
                                          "code_version": CODE_VERSION, "token": token,
                                          "host": store.host, "pid": os.getpid()})
            final = results_dir / "runs" / spec.key
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # renamed by an attempt killed before its commit: not valid
                shutil.rmtree(final)
            os.rename(tmp, final)
            fsync_dir(final.parent)
            wall = time.perf_counter() - t0
            status = Status(result.status)
            committed = store.finish(
                spec.key, token, status, steps=result.steps, diverged_step=result.diverged_step,
                wall_time_s=wall, train_time_s=result.train_time_s, eval_time_s=eval_time,
                images_per_s=result.images_per_s, metrics=metrics,
                run_dir=str(final.relative_to(results_dir)))
            return Outcome.of(spec, status if committed else Status.LOST,
                              diverged_step=result.diverged_step, wall_time_s=wall)
        except (KeyboardInterrupt, SystemExit):
            store.release(spec.key, token)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except Exception as exc:  # a failed run must not stop the grid
            err = "".join(traceback.format_exception(exc))[-4000:]
            store.finish(spec.key, token, Status.FAILED, error=err,
                         wall_time_s=time.perf_counter() - t0)
            shutil.rmtree(tmp, ignore_errors=True)
            return Outcome.of(spec, Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        finally:
            beat.stop.set()
