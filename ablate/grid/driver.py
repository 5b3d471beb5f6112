"""The grid driver: load and expand an experiment (:func:`prepare`), then run every
unfinished key of its plan on an executor (:func:`run_grid`).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ablate import registry
from ablate.artefacts import write_json
from ablate.config import EvalProtocol
from ablate.design import Design, build_design
from ablate.environment import resolve_device
from ablate.errors import ConfigError
from ablate.evaluate import feature_nets
from ablate.experiment import Experiment, load_experiment
from ablate.grid.executors import Executor
from ablate.grid.keys import CODE_VERSION, RunSpec, plan_runs
from ablate.grid.store import EXPERIMENT_JSON, TERMINAL, Status, Store
from ablate.grid.worker import run_one


@dataclass
class GridSummary:
    planned: int  # variant x seed pairs
    keys: int  # distinct run keys
    reused: int  # keys already finished before this invocation
    trained: int = 0  # keys this invocation ran to done/diverged
    counts: dict[str, int] = dataclasses.field(default_factory=dict)  # final status counts
    wall_time_s: float = 0.0


def sweep_tmp(store: Store) -> int:
    """Delete tmp dirs of attempts that are no longer live (killed, failed, superseded)."""
    tmp = store.results_dir / "tmp"
    n = 0
    if not tmp.is_dir():
        return 0
    for d in tmp.iterdir():
        key, _, tok = d.name.rpartition("-")
        live = store.live_token(key)
        if live is None or not live.startswith(tok):
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n


def write_experiment_meta(experiment: Experiment, design: Design, results_dir: Path,
                          n_runs: int) -> None:
    hack_info = {}
    for h in design.hacks:
        cls = registry.get_hack(h)
        params = {k: v for hh, k, v in experiment.params if hh == h}
        hack_info[h] = {**cls.describe(), "provider": registry.provider(h),
                        "resolved_params": cls(cls.make_params(params)).params_dict()}
    write_json(results_dir / EXPERIMENT_JSON, {
        "experiment": experiment.to_dict(), "design": design.to_dict(),
        "hacks": list(design.hacks), "reference": design.reference(),
        "variants": [v.to_dict(design.hacks) for v in design.variants],
        "seeds": list(experiment.seeds), "runs": n_runs, "code_version": CODE_VERSION,
        "hack_info": hack_info})


def warm_up(experiment: Experiment, device: str, log: Callable[[str], None]) -> None:
    """Build the feature nets once in the driver, before the workers start.

    The first time on a machine this trains the dataset's classifier (cached
    afterwards) with every core, instead of inside one single-threaded worker while
    the others wait on the cache lock.
    """
    t0 = time.perf_counter()
    try:
        protocol = EvalProtocol.from_dict(experiment.evaluation_dict())
        feature_nets(experiment.dataset, protocol.features, resolve_device(device))
    except Exception as exc:  # the runs will report it; the grid itself goes on
        log(f"warning: could not prepare the feature nets ({type(exc).__name__}: {exc})")
        return
    if time.perf_counter() - t0 > 10:
        log(f"prepared the feature nets in {time.perf_counter() - t0:.0f} s (cached from now on)")


def prepare(path: Path | str, results_dir: Path | str | None = None, *, device: str = "auto",
            threads: int | None = None, retry_failed: bool = False
            ) -> tuple[Experiment, Design, Path, list[RunSpec]]:
    """Load, validate and expand an experiment; touches nothing on disk."""
    experiment = load_experiment(path)
    results = Path(results_dir) if results_dir else experiment.results_dir
    try:
        design = build_design(experiment.design, experiment.hacks)
        specs = plan_runs(experiment, design, results, device=device, threads=threads)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return experiment, design, results, specs


def run_grid(experiment: Experiment, design: Design, results_dir: Path,
             specs: list[RunSpec], executor: Executor, *,
             retry_failed: bool = False, progress: bool = True, poll_s: float = 2.0,
             log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> GridSummary:
    """Run every unfinished key of the plan; wait for keys other processes hold."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    results_dir = Path(results_dir)
    with Store(results_dir) as store:
        write_experiment_meta(experiment, design, results_dir, len(specs))
        store.record_plan([{"variant": s.variant, "seed": s.seed, "key": s.key,
                            "hacks": s.config.hacks, "config": s.identity} for s in specs])
        swept = sweep_tmp(store)
        if swept:
            log(f"removed {swept} unfinished run dir(s) left by killed runs")
        unique: dict[str, RunSpec] = {}
        for s in specs:
            unique.setdefault(s.key, dataclasses.replace(s, retry_failed=retry_failed))
        finished_before = {k for k in unique if (store.get(k) or {}).get("status") in TERMINAL}
        todo = [s for k, s in unique.items() if k not in finished_before]
        summary = GridSummary(planned=len(specs), keys=len(unique), reused=len(finished_before))
        failed_before = sum((store.get(k) or {}).get("status") == Status.FAILED for k in unique)
        log(f"{experiment.name}: {len(specs)} runs ({len(design.variants)} variants x "
            f"{len(experiment.seeds)} seeds), {len(unique)} distinct keys, "
            f"{len(finished_before)} already finished, {len(todo)} to run"
            + (f" ({failed_before} failed, skipped without --retry-failed)"
               if failed_before and not retry_failed else "")
            + f"; executor: {executor.describe()}")
        if todo and experiment.evaluates():
            warm_up(experiment, todo[0].config.device, log)
        bar = tqdm(total=len(todo), desc=experiment.name, unit="run", disable=not progress,
                   dynamic_ncols=True)
        attempted: set[str] = set()
        counts: dict[str, int] = {}
        try:
            while True:
                submit = [s for s in todo if s.key not in attempted
                          and store.claimable(s.key, retry_failed)]
                if submit:
                    progressed = False
                    for out in executor.map(run_one, submit):
                        st = out.status
                        if st in (Status.HELD, Status.DIED):
                            # Held by another live process (waited for below), or its
                            # worker died (the claim is then stale and is retaken).
                            row = store.get(out.key) or {}
                            if st == Status.HELD and row.get("status") != Status.RUNNING:
                                attempted.add(out.key)  # finished elsewhere meanwhile
                            continue
                        progressed = True
                        attempted.add(out.key)
                        counts[st] = counts.get(st, 0) + 1
                        if st in TERMINAL:
                            summary.trained += 1
                        if st == Status.FAILED:
                            bar.write(f"run {out.key} ({out.variant}, seed {out.seed}) "
                                      f"failed: {out.error}")
                        elif st == Status.DIVERGED:
                            bar.write(f"run {out.key} ({out.variant}, seed {out.seed}) "
                                      f"diverged at step {out.diverged_step}")
                        bar.update(1)
                        bar.set_postfix(counts, refresh=False)
                    if not progressed:
                        time.sleep(poll_s)  # only skips/crashes: do not spin
                    continue
                rows = {s.key: store.get(s.key) or {} for s in todo}
                elsewhere = [k for k, r in rows.items() if r.get("status") == Status.RUNNING
                             and store.live_token(k)]
                # Runs other processes finished while we worked count as progress too.
                other_done = sum(1 for k, r in rows.items() if k not in attempted
                                 and r.get("status") in TERMINAL)
                bar.n = len(attempted) + other_done
                bar.refresh()
                if not elsewhere:
                    break
                bar.set_description(f"{experiment.name} (waiting for {len(elsewhere)} run(s) "
                                    "held by another process)")
                time.sleep(poll_s)
        finally:
            bar.close()
        final = [(store.get(k) or {}).get("status", "pending") for k in unique]
        summary.counts = {st: final.count(st) for st in dict.fromkeys(final)}
        summary.wall_time_s = time.perf_counter() - t0
        return summary
