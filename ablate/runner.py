"""The grid runner: run specs, run keys, the run function, executors, ``ablate grid``.

A grid is an experiment (:mod:`ablate.experiment`) expanded by its design
(:mod:`ablate.design`) into variants x seeds. Each (variant, seed) resolves to a
:class:`RunSpec` whose **run key** is a hash of everything that determines its result:
the resolved training config (dataset, budget, model width, the enabled hacks with
every parameter, the folded Recipe, seed), the evaluation protocol and
:data:`CODE_VERSION`. Disabled hacks do not enter the key, so adding a hack to an
experiment leaves every existing variant's key unchanged and only the variants that
enable the new hack train.

:func:`run_one` is the one run function every executor calls. It claims the key in the
store (atomically; a key another live process holds is skipped), trains into
``tmp/<key>-<token>/`` inside the results directory, evaluates, renames the directory
to ``runs/<key>`` and only then marks the key ``done`` (the commit point). A killed
run leaves a tmp dir (deleted on the next start) and a ``running`` row whose owner is
dead (reclaimed); nothing finished is ever lost or redone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate import registry
from ablate.artefacts import fsync_dir, write_json
from ablate.config import EvalProtocol, TrainConfig
from ablate.design import Design, build_design
from ablate.errors import ConfigError
from ablate.experiment import Experiment, load_experiment
from ablate.environment import resolve_device
from ablate.evaluate import feature_nets
from ablate.pipeline import train_and_score
from ablate.resolve import resolve
from ablate.store import EXPERIMENT_JSON, HEARTBEAT_S, TERMINAL, Store, load_experiment_meta
from ablate.train import resolved_config

# Bump when a code change alters what a finished run means (training or metrics), so
# old results are not mixed with new ones: every key changes and everything retrains.
CODE_VERSION = "1"
KEY_LENGTH = 16  # hex digits of sha256 kept in a run key (64 bits)
# resolved_config fields that describe where/how a run executed, not what it computes.
_VOLATILE_TRAIN = ("device", "threads", "log_every")
_VOLATILE_TOP = ("versions", "git_commit", "hardware", "device", "data")


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to execute one run (picklable)."""

    key: str
    variant: str
    seed: int
    config: TrainConfig
    evaluation: tuple[tuple[str, Any], ...]  # the evaluation protocol's fields
    results_dir: str  # absolute
    retry_failed: bool = False

    @property
    def evaluates(self) -> bool:
        ev = dict(self.evaluation)
        return bool(ev) and bool(ev.get("features", True))


# --------------------------------------------------------------------------------------
# Keys and specs
# --------------------------------------------------------------------------------------
def key_config(config, evaluation: dict[str, Any]) -> dict[str, Any]:
    """The part of a run's resolved config that defines its result (hashed into the key)."""
    cfg = resolved_config(resolve(config))  # validates names, parameters and conflicts
    for k in _VOLATILE_TOP:
        cfg.pop(k, None)
    for k in _VOLATILE_TRAIN:
        cfg["train"].pop(k, None)
    for h in cfg["hacks"]:
        # Moving a hack between packages keeps its results; a plugin's version is part of
        # the key (bumping it retrains its variants); built-ins follow CODE_VERSION.
        if h.pop("provider", None) == "ablate":
            h.pop("version", None)
    for k in ("recipe_changes", "overrides"):  # derived from hacks + recipe (provenance)
        cfg.pop(k, None)
    cfg["evaluation"] = {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(evaluation.items())}
    cfg["code_version"] = CODE_VERSION
    return cfg


def run_key(cfg: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of a key config."""
    text = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def plan(experiment: Experiment, design: Design, results_dir: Path, *, device: str = "auto",
         threads: int | None = None, retry_failed: bool = False) -> list[tuple[RunSpec, dict]]:
    """Every (variant, seed) as a RunSpec with its key config, seed-major order.

    Seed-major order makes a partially finished grid useful: every variant gets seed 0
    before any gets seed 1.
    """
    out = []
    evaluation = experiment.evaluation_dict()
    for seed in experiment.seeds:
        for v in design.variants:
            config = TrainConfig(dataset=experiment.dataset, seed=seed, hacks=tuple(sorted(v.hacks)),
                                 params=experiment.params, device=device, threads=threads,
                                 **experiment.train_kwargs())
            try:
                cfg = key_config(config, evaluation)
            except ConfigError as exc:
                raise ConfigError(f"variant {v.name!r}: {exc}") from exc
            spec = RunSpec(run_key(cfg), v.name, seed, config, experiment.evaluation,
                           str(Path(results_dir).resolve()), retry_failed)
            out.append((spec, cfg))
    return out


# --------------------------------------------------------------------------------------
# The run function
# --------------------------------------------------------------------------------------
class _Heartbeat(threading.Thread):
    """Refreshes a claim's heartbeat from a thread with its own connection."""

    def __init__(self, results_dir: str, key: str, token: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{key}")
        self.args_ = (results_dir, key, token)
        self.stop = threading.Event()

    def run(self) -> None:
        results_dir, key, token = self.args_
        store = Store(results_dir)
        try:
            while not self.stop.wait(HEARTBEAT_S):
                store.heartbeat(key, token)
        finally:
            store.close()


def _remove_tmp_for(results_dir: Path, key: str, keep: str | None = None) -> None:
    tmp = results_dir / "tmp"
    if tmp.is_dir():
        for d in tmp.glob(f"{key}-*"):
            if d.name != keep:
                shutil.rmtree(d, ignore_errors=True)


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Claim, train, evaluate and commit one run. Returns an outcome dict.

    ``status`` is ``done``, ``diverged``, ``failed`` or ``skipped`` (another live
    process holds the key, or it is finished).
    """
    results_dir = Path(spec.results_dir)
    store = Store(results_dir)
    token = store.claim(spec.key, spec.retry_failed)
    if token is None:
        row = store.get(spec.key) or {}
        store.close()
        return {"key": spec.key, "variant": spec.variant, "seed": spec.seed, "status": "skipped",
                "held_by": row.get("status")}
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
        committed = store.finish(
            spec.key, token, result.status, steps=result.steps, diverged_step=result.diverged_step,
            wall_time_s=wall, train_time_s=result.train_time_s, eval_time_s=eval_time,
            images_per_s=result.images_per_s, metrics=metrics,
            run_dir=str(final.relative_to(results_dir)))
        status = result.status if committed else "lost-claim"
        return {"key": spec.key, "variant": spec.variant, "seed": spec.seed, "status": status,
                "diverged_step": result.diverged_step, "wall_time_s": wall}
    except (KeyboardInterrupt, SystemExit):
        store.release(spec.key, token)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:  # a failed run must not stop the grid
        err = "".join(traceback.format_exception(exc))[-4000:]
        store.finish(spec.key, token, "failed", error=err, wall_time_s=time.perf_counter() - t0)
        shutil.rmtree(tmp, ignore_errors=True)
        return {"key": spec.key, "variant": spec.variant, "seed": spec.seed, "status": "failed",
                "error": f"{type(exc).__name__}: {exc}"}
    finally:
        beat.stop.set()
        store.close()


# --------------------------------------------------------------------------------------
# Executors: one interface, the same run function
# --------------------------------------------------------------------------------------
class Executor:
    """Runs ``fn(spec)`` for many specs, yielding outcomes as they complete."""

    name = "base"
    workers = 1

    def map(self, fn: Callable[[RunSpec], dict], specs: list[RunSpec]) -> Iterator[dict]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.name


def _init_worker(threads: int | None, gpu_queue) -> None:
    """Pool worker setup: die with the driver, pin a GPU, set the thread count."""
    if sys.platform.startswith("linux"):  # a crashed driver takes its workers with it
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


def gpu_count() -> int:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    import torch

    return torch.cuda.device_count()


class InlineExecutor(Executor):
    """Runs in this process, one run at a time (debugging; tests with in-process hacks)."""

    name = "inline"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def map(self, fn, specs):
        for s in specs:
            yield fn(s)

    def describe(self):
        return "inline (this process, one run at a time)"


class LocalExecutor(Executor):
    """A spawn process pool on this machine: one process per GPU, else CPU workers.

    With GPUs, worker i sees only GPU i (``CUDA_VISIBLE_DEVICES``); on CPU, ``workers``
    processes each use ``threads`` torch threads (default: the cores split evenly).
    """

    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None,
                 device: str = "auto") -> None:
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        gpus = gpu_count() if device in ("auto", "cuda") else 0
        cores = os.cpu_count() or 1
        self.gpus = gpus
        self.workers = workers or (gpus if gpus else max(1, cores // (threads or 1)))
        self.threads = threads or max(1, cores // self.workers)
        self.pool = None

    def _pool(self):
        from concurrent.futures import ProcessPoolExecutor

        if self.pool is None:
            queue = None
            if self.gpus:
                queue = self.ctx.Queue()
                for i in range(self.workers):
                    queue.put(i % self.gpus)
            self.pool = ProcessPoolExecutor(self.workers, mp_context=self.ctx,
                                            initializer=_init_worker, initargs=(self.threads, queue))
        return self.pool

    def map(self, fn, specs):
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        futures = {self._pool().submit(fn, s): s for s in specs}
        try:
            for fut in as_completed(futures):
                s = futures[fut]
                try:
                    yield fut.result()
                except BrokenProcessPool:  # a worker died (OOM, segfault): the store
                    self.pool = None       # row stays 'running' with a dead pid -> reclaimed
                    yield {"key": s.key, "variant": s.variant, "seed": s.seed, "status": "crashed"}
        finally:
            for fut in futures:
                fut.cancel()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def describe(self):
        where = f"{self.gpus} GPU(s)" if self.gpus else f"CPU, {self.threads} thread(s) each"
        return f"local pool: {self.workers} worker(s), {where}"


class RayExecutor(Executor):
    """One Ray task per run (``num_cpus`` = threads, ``num_gpus`` = 1 on GPU clusters).

    ``address=None`` starts a local Ray instance; ``"auto"`` joins a running cluster.
    Workers must see the results directory (a shared filesystem) and have ablate
    installed.
    """

    name = "ray"

    def __init__(self, address: str | None = None, threads: int | None = None,
                 gpus_per_run: float | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("--executor ray needs Ray: pip install 'ablate[ray]'") from exc
        self.ray = ray
        if not ray.is_initialized():
            kw: dict[str, Any] = {"address": address, "ignore_reinit_error": True,
                                  "include_dashboard": False, "log_to_driver": False}
            if address is None and workers:
                kw["num_cpus"] = workers * (threads or 1)
            ray.init(**kw)
        self.threads = threads or 1
        if gpus_per_run is None:
            gpus_per_run = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        self.gpus_per_run = gpus_per_run
        cpus = ray.cluster_resources().get("CPU", 1)
        self.workers = int(cpus // self.threads)

    def map(self, fn, specs):
        remote = self.ray.remote(num_cpus=self.threads, num_gpus=self.gpus_per_run,
                                 max_retries=0)(fn)
        pending = {remote.remote(s): s for s in specs}
        try:
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                s = pending.pop(done[0])
                try:
                    yield self.ray.get(done[0])
                except self.ray.exceptions.RayError as exc:
                    yield {"key": s.key, "variant": s.variant, "seed": s.seed, "status": "crashed",
                           "error": str(exc)}
        finally:
            for ref in pending:
                self.ray.cancel(ref, force=True)

    def describe(self):
        return f"ray: {self.ray.cluster_resources().get('CPU', 0):.0f} CPUs, " \
               f"{self.threads} per run, {self.gpus_per_run} GPU per run"


class SlurmExecutor(Executor):
    """One SLURM array task per run through submitit (``pip install 'ablate[slurm]'``).

    ``cluster="local"`` runs the tasks as local processes (submitit's test mode).
    """

    name = "slurm"

    def __init__(self, folder: Path, threads: int | None = None, gpus_per_run: int = 0,
                 timeout_min: int = 240, partition: str | None = None,
                 cluster: str | None = None) -> None:
        try:
            import submitit
        except ImportError as exc:
            raise ConfigError("--executor slurm needs submitit: pip install 'ablate[slurm]'") from exc
        self.submitit = submitit
        self.ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params: dict[str, Any] = {"timeout_min": timeout_min, "cpus_per_task": threads or 1}
        if gpus_per_run:
            params["gpus_per_node"] = gpus_per_run
        if partition:
            params["slurm_partition"] = partition
        self.ex.update_parameters(**params)
        self.threads = threads or 1

    def map(self, fn, specs):
        jobs = self.ex.map_array(fn, specs)
        by_job = dict(zip(jobs, specs))
        for job in self.submitit.helpers.as_completed(jobs):
            s = by_job[job]
            try:
                yield job.result()
            except Exception as exc:  # job failed outside run_one (node loss, timeout)
                yield {"key": s.key, "variant": s.variant, "seed": s.seed, "status": "crashed",
                       "error": str(exc)[-500:]}


def make_executor(name: str, *, workers: int | None = None, threads: int | None = None,
                  device: str = "auto", address: str | None = None,
                  results_dir: Path | None = None, partition: str | None = None) -> Executor:
    if name == "local":
        return LocalExecutor(workers, threads, device)
    if name == "inline":
        return InlineExecutor(threads)
    if name == "ray":
        return RayExecutor(address, threads, workers=workers,
                           gpus_per_run=0 if device == "cpu" else None)
    if name == "slurm":
        return SlurmExecutor(Path(results_dir or ".").resolve() / "slurm", threads,
                             gpus_per_run=0 if device == "cpu" else 1,
                             partition=partition, cluster="local" if address == "local" else None)
    raise ConfigError(f"unknown executor {name!r}; valid executors: local, inline, ray, slurm")


# --------------------------------------------------------------------------------------
# The grid driver
# --------------------------------------------------------------------------------------
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
            ) -> tuple[Experiment, Design, Path, list[tuple[RunSpec, dict]]]:
    """Load, validate and expand an experiment; touches nothing on disk."""
    experiment = load_experiment(path)
    results = Path(results_dir) if results_dir else experiment.results_dir
    try:
        design = build_design(experiment.design, experiment.hacks)
        specs = plan(experiment, design, results, device=device, threads=threads,
                     retry_failed=retry_failed)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return experiment, design, results, specs


def run_grid(experiment: Experiment, design: Design, results_dir: Path,
             specs: list[tuple[RunSpec, dict]], executor: Executor, *,
             retry_failed: bool = False, progress: bool = True, poll_s: float = 2.0,
             log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> GridSummary:
    """Run every unfinished key of the plan; wait for keys other processes hold."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    results_dir = Path(results_dir)
    store = Store(results_dir)
    try:
        write_experiment_meta(experiment, design, results_dir, len(specs))
        store.set_plan([{"variant": s.variant, "seed": s.seed, "key": s.key,
                         "hacks": s.config.hacks, "config": cfg} for s, cfg in specs])
        swept = sweep_tmp(store)
        if swept:
            log(f"removed {swept} unfinished run dir(s) left by killed runs")
        unique: dict[str, RunSpec] = {}
        for s, _ in specs:
            unique.setdefault(s.key, dataclasses.replace(s, retry_failed=retry_failed))
        finished_before = {k for k in unique if (store.get(k) or {}).get("status") in TERMINAL}
        todo = [s for k, s in unique.items() if k not in finished_before]
        summary = GridSummary(planned=len(specs), keys=len(unique), reused=len(finished_before))
        failed_before = sum((store.get(k) or {}).get("status") == "failed" for k in unique)
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
                        st = out["status"]
                        if st in ("skipped", "crashed"):
                            # Held by another live process (waited for below), or its
                            # worker died (the claim is then stale and is retaken).
                            row = store.get(out["key"]) or {}
                            if st == "skipped" and row.get("status") != "running":
                                attempted.add(out["key"])  # finished elsewhere meanwhile
                            continue
                        progressed = True
                        attempted.add(out["key"])
                        counts[st] = counts.get(st, 0) + 1
                        if st in TERMINAL:
                            summary.trained += 1
                        if st == "failed":
                            bar.write(f"run {out['key']} ({out['variant']}, seed {out['seed']}) "
                                      f"failed: {out.get('error')}")
                        elif st == "diverged":
                            bar.write(f"run {out['key']} ({out['variant']}, seed {out['seed']}) "
                                      f"diverged at step {out.get('diverged_step')}")
                        bar.update(1)
                        bar.set_postfix(counts, refresh=False)
                    if not progressed:
                        time.sleep(poll_s)  # only skips/crashes: do not spin
                    continue
                rows = {s.key: store.get(s.key) or {} for s in todo}
                elsewhere = [k for k, r in rows.items() if r.get("status") == "running"
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
    finally:
        store.close()


# --------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------
def _short(hacks: frozenset[str], scope: tuple[str, ...]) -> str:
    if len(hacks) == len(scope):
        return "all"
    if not hacks:
        return "none"
    if len(hacks) > len(scope) / 2:
        return "all but " + ", ".join(h for h in scope if h not in hacks)
    return ", ".join(h for h in scope if h in hacks)


def print_dry_run(experiment: Experiment, design: Design, results_dir: Path,
                  specs: list[tuple[RunSpec, dict]]) -> None:
    train = experiment.train_kwargs()
    keys = {s.key for s, _ in specs}
    done: set[str] = set()
    if (results_dir / "runs.sqlite").exists():
        store = Store(results_dir, create=False)
        try:
            done = {k for k in keys if (store.get(k) or {}).get("status") in TERMINAL}
        finally:
            store.close()
    print(f"experiment: {experiment.name}  ({experiment.source})")
    if experiment.description:
        print(f"  {experiment.description}")
    print(f"dataset: {experiment.dataset}   model/budget: "
          + ", ".join(f"{k}={v}" for k, v in sorted(train.items())))
    ev = experiment.evaluation_dict()
    ev_text = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in ev.items())
    print(f"evaluation: {ev_text if experiment.evaluates() else 'none (features = [])'}")
    print(f"seeds: {list(experiment.seeds)}   hacks in scope ({len(design.hacks)}): "
          + ", ".join(design.hacks))
    if experiment.params:
        print("fixed hack parameters: " + ", ".join(f"{h}.{k}={v}" for h, k, v in experiment.params))
    print(f"design: {design.kind}" + (f", resolution {design.resolution}" if design.resolution else ""))
    for note in design.notes:
        print(f"  {note}")
    print(f"variants ({len(design.variants)}):")
    w = max(len(v.name) for v in design.variants)
    key_of = {(s.variant, s.seed): s.key for s, _ in specs}
    for v in design.variants:
        ks = [key_of[(v.name, seed)] for seed in experiment.seeds]
        state = f"{sum(k in done for k in ks)}/{len(ks)} done"
        print(f"  {v.name:<{w}}  [{state}]  on: {_short(v.hacks, design.hacks)}")
    if design.comparisons:
        print("effect of each hack = (variant with it) vs (reference without it):")
        for c in design.comparisons:
            print(f"  {c.hack}: {c.on} vs {c.off}")
    if design.aliasing:
        print("aliasing (main effects and two-factor interactions):")
        for a in design.aliasing[:40]:
            print(f"  {a}")
        if len(design.aliasing) > 40:
            print(f"  ... {len(design.aliasing) - 40} more chains")
    elif design.kind == "fractional-factorial":
        print("aliasing: none among main effects and two-factor interactions")
    print(f"runs: {len(specs)} ({len(design.variants)} variants x {len(experiment.seeds)} seeds), "
          f"{len(keys)} distinct keys, {len(done)} already finished, {len(keys - done)} to run")
    print(f"results: {results_dir}")


def print_status(results_dir: Path) -> int:
    if not (results_dir / "runs.sqlite").exists():
        print(f"no runs yet in {results_dir} (run `ablate grid` first)")
        return 0
    meta = load_experiment_meta(results_dir)
    store = Store(results_dir, create=False)
    try:
        rows = store.plan()
    finally:
        store.close()
    order = [v["name"] for v in meta.get("variants", [])]
    by_var: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] == "running" and r.get("pid") and not _live(results_dir, r["key"]):
            r["status"] = "running?"  # owner gone: reclaimed by the next `ablate grid`
        by_var.setdefault(r["variant"], []).append(r)
    cols = ["done", "diverged", "failed", "running", "running?", "pending"]
    w = max([len(v) for v in by_var] + [7])
    print(f"{meta['experiment']['name']}: {results_dir}")
    print(f"{'variant':<{w}}  " + "  ".join(f"{c:>8}" for c in cols) + "   wall/run")
    total = dict.fromkeys(cols, 0)
    for v in sorted(by_var, key=lambda n: order.index(n) if n in order else len(order)):
        rs = by_var[v]
        c = {k: sum(r["status"] == k for r in rs) for k in cols}
        for k in cols:
            total[k] += c[k]
        walls = [r["wall_time_s"] for r in rs if r.get("wall_time_s") and r["status"] in TERMINAL]
        wall = f"{sum(walls) / len(walls):8.1f}s" if walls else ""
        print(f"{v:<{w}}  " + "  ".join(f"{c[k]:>8}" for k in cols) + f"   {wall}")
    print(f"{'total':<{w}}  " + "  ".join(f"{total[k]:>8}" for k in cols))
    n = len(rows)
    print(f"{total['done'] + total['diverged']}/{n} runs finished")
    for r in rows:
        if r["status"] == "failed":
            last = (r.get("error") or "").strip().splitlines()[-1:] or [""]
            print(f"failed: {r['variant']} seed {r['seed']} ({r['key']}): {last[0]}")
    return 0


def _live(results_dir: Path, key: str) -> bool:
    store = Store(results_dir, create=False)
    try:
        return store.live_token(key) is not None
    finally:
        store.close()
