"""What ``ablate grid --dry-run`` and ``ablate status`` show, as lines of text (the CLI
prints them: ablate/cli/grid.py, ablate/cli/status.py). Both only read (the store is
opened read-only), so both work on a read-only results directory; both cross-check the
index with the run directories and say what ``--repair`` or ``--rebuild-index`` would
do (:func:`reconciled_lines`, which also words what the grid did). ``ablate status``
also shows each running run's step (from the last line of its tmp dir's ``log.jsonl``)
and an ETA for the grid from measured step rates.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.artefacts import read_jsonl
from ablate.errors import ConfigError
from ablate.experiment.axes import label
from ablate.grid import reuse, rundirs
from ablate.grid.keys import plan_runs
from ablate.layout import RUN_INFO, ExperimentDir, RunDir
from ablate.grid.store import (
    DB_NAME,
    TERMINAL,
    NoStore,
    Status,
    Store,
    load_experiment_meta,
)

if TYPE_CHECKING:  # type names only: importing the driver loads the training stack
    from ablate.grid.driver import Grid


def _short(hacks: frozenset[str], scope: tuple[str, ...]) -> str:
    if len(hacks) == len(scope):
        return "all"
    if not hacks:
        return "none"
    if len(hacks) > len(scope) / 2:
        return "all but " + ", ".join(h for h in scope if h not in hacks)
    return ", ".join(h for h in scope if h in hacks)


def _open(results_dir: Path) -> Store | None:
    """The store read-only, or None where there is none yet (missing or empty file)."""
    try:
        return Store(results_dir, readonly=True)
    except NoStore:
        return None


def dry_run_lines(grid: Grid, fuse: int | None = None, retry_failed: bool = False) -> list[str]:
    """What ``ablate grid`` would do (plan, state, fused groups); writes nothing. Failed runs
    are skipped, as the grid skips them, unless ``retry_failed``."""
    experiment, design, results_dir, specs = grid.experiment, grid.design, grid.results_dir, grid.specs
    policy, looks = experiment.policy, _recorded_looks(results_dir)
    if policy.adaptive and looks:  # where the grid stands: the plan of its next look
        last = looks[-1]
        counts = last.get("next") or last["seeds"]
        specs = tuple(plan_runs(experiment, design, results_dir, counts,
                                device=specs[0].config.device, threads=specs[0].config.threads))
    train = experiment.train_kwargs()
    keys = {s.key for s in specs}
    done: set[str] = set()
    failed: set[str] = set()  # skipped, as the grid skips them, without --retry-failed
    found = rundirs.Reconciled()
    store = _open(results_dir) if results_dir.is_dir() else None
    if store is not None:
        with store:
            status = {k: (store.get(k) or {}).get("status") for k in keys}
            done = {k for k, st in status.items() if st in TERMINAL}
            if not retry_failed:
                failed = {k for k, st in status.items() if st == Status.FAILED}
            found = rundirs.check(store, specs)
    elif ExperimentDir(results_dir).runs.is_dir():  # no index: what `ablate grid` would adopt
        found.adopted = [s.key for s in {s.key: s for s in specs}.values()
                         if rundirs.index_fields(rundirs.run_dir(results_dir, s.key), s.key,
                                                 s.evaluates)]
    done |= set(found.adopted)
    reused = set(reuse.reusable(None, [s for s in specs if s.key not in done | failed],
                                experiment.reuse))
    out = []
    out.append(f"experiment: {experiment.name}  ({experiment.source})")
    if experiment.description:
        out.append(f"  {experiment.description}")
    out.append(f"dataset: {experiment.dataset}   model/budget: "
          + ", ".join(f"{k}={v}" for k, v in sorted(train.items())))
    ev_text = ", ".join(f"{k}={v}" for k, v in experiment.evaluation_record().items())
    out.append(f"evaluation: {ev_text if experiment.evaluates() else 'none (features = [])'}")
    seeds = (f"adaptive, {policy.min} to {policy.max} per variant (looks at "
             f"{', '.join(map(str, policy.looks()))} seeds)" if policy.adaptive
             else str(list(experiment.seeds)))
    out.append(f"seeds: {seeds}   hacks in scope ({len(design.hacks)}): " + ", ".join(design.hacks))
    if experiment.analysis:
        a = experiment.analysis
        out.append(f"analysis: sesoi={a.sesoi}, alpha={a.alpha}, metric={a.metric or 'default'}")
    if experiment.params:
        out.append("fixed hack parameters: " + ", ".join(f"{h}.{k}={v}" for h, k, v in experiment.params))
    out.append(f"design: {design.kind}" + (f", resolution {design.resolution}" if design.resolution else ""))
    for note in design.notes:
        out.append(f"  {note}")
    out.append(f"variants ({len(design.variants)}):")
    w = max(len(v.name) for v in design.variants)
    for v in design.variants:
        ks = [s.key for s in specs if s.variant == v.name]
        state = f"{sum(k in done for k in ks)}/{len(ks)} done" + (
            f", {sum(k in reused for k in ks)} to copy" if reused else "") + (
            f", {sum(k in failed for k in ks)} failed" if failed & set(ks) else "")
        out.append(f"  {v.name:<{w}}  [{state}]  on: {_short(v.hacks, design.hacks)}")
    if design.comparisons:
        out.append("effect of each hack = (variant with it) vs (reference without it):")
        for c in design.comparisons:
            out.append(f"  {c.hack}: {c.on} vs {c.off}")
    if design.aliasing:
        out.append("aliasing (main effects and two-factor interactions):")
        for a in design.aliasing[:40]:
            out.append(f"  {a}")
        if len(design.aliasing) > 40:
            out.append(f"  ... {len(design.aliasing) - 40} more chains")
    elif design.kind == "fractional-factorial":
        out.append("aliasing: none among main effects and two-factor interactions")
    shape = (f"{len(design.variants)} variants x {len(experiment.seeds)} seeds" if not policy.adaptive
             else f"look {len(looks) + 1 if looks and not looks[-1]['done'] else max(len(looks), 1)}"
                  f" of at most {len(policy.looks())}")
    copied = (f"{len(reused)} finished in a reuse directory (copied, not trained: "
              f"{', '.join(map(str, experiment.reuse))}), " if experiment.reuse else "")
    out.append(f"runs: {len(specs)} ({shape}), "
          f"{len(keys)} distinct keys, {len(done)} already finished, {copied}"
          f"{len(keys - done - reused - failed)} to run"
          + (f" ({len(failed)} failed, skipped without --retry-failed)" if failed else ""))
    out += _level_lines(design, specs, done, reused, failed)
    out += _look_lines({"looks": looks, "max_looks": len(policy.looks())})
    out += reconciled_lines(found, results_dir, done=False)
    out += _fuse_lines([s for s in {s.key: s for s in specs}.values()
                       if s.key not in done | reused | failed], fuse)
    out.append(f"results: {results_dir}")
    return out


def _level_lines(design, specs, done: set[str], reused: set[str], failed: set[str]) -> list[str]:
    """Per level of ``[axes]``: its runs, finished, to copy, to run (runs shared by several
    levels, whose variants do not use the axis, count in each; failed ones skipped, as in
    ``failed``, do not run)."""
    by_level: dict[str, set[str]] = {}
    level_of = {v.name: label(v.level) for v in design.variants if v.level}
    for s in specs:
        if s.variant in level_of:
            by_level.setdefault(level_of[s.variant], set()).add(s.key)
    out = [f"  level {name}: {len(ks)} distinct keys, {len(ks & done)} finished, "
           + (f"{len(ks & reused)} to copy, " if reused else "") + f"{len(ks - done - reused - failed)} to run"
           for name, ks in by_level.items()]
    return (["levels:"] + out) if out else []


def _fuse_lines(todo: list, fuse: int | None) -> list[str]:
    """The fused groups the grid would train (``--fuse``; on a GPU, capped when it starts)."""
    if not todo:
        return []
    # Import-time saving: grouping builds models (torch); only a dry run with runs to do asks.
    from ablate.environment import resolve_device
    from ablate.fused import fuse_blocker
    from ablate.grid.groups import GPU_CAP, make_tasks
    from ablate.training.resolve import resolve

    on_gpu = resolve_device(todo[0].config.device).type == "cuda"
    if fuse is None and not on_gpu:
        return ["fused training: off (CPU: every run trains alone; --fuse K groups up to K)"]
    tasks = make_tasks(todo, fuse or GPU_CAP)
    cap = f"at most {fuse}" if fuse else f"capped by GPU memory when the grid starts (<= {GPU_CAP})"
    lines = [f"fused training: {len(tasks)} task(s) for {len(todo)} run(s), groups of {cap}:"]
    for t in tasks:
        if len(t) > 1:
            variants = list(dict.fromkeys(s.variant for s in t))
            lines.append(f"  group of {len(t)}: {', '.join(variants)} "
                         f"(seeds {', '.join(str(s) for s in sorted({s.seed for s in t}))})")
    alone: dict[str, list[str]] = {}
    for t in tasks:
        if len(t) == 1:
            why = fuse_blocker(resolve(t[0].config)) or "no other run shares its architecture"
            alone.setdefault(why, []).append(t[0].variant)
    for why, variants in alone.items():
        names = list(dict.fromkeys(variants))
        lines.append(f"  alone ({len(variants)} run(s): {', '.join(names)}): {why}")
    return lines


def reconciled_lines(found: rundirs.Reconciled, results_dir: Path, *, done: bool) -> list[str]:
    """What cross-checking the index with the run directories found, in one place for
    both readers: as ``ablate grid`` reports what it did (``done``), or as ``ablate
    status`` and the dry run say what a grid would do (read-only: nothing reopened)."""
    out = []
    if found.adopted:
        out.append(f"indexed {len(found.adopted)} finished run dir(s) the store did not list "
                   "(adopted, not retrained)" if done else
                   f"{len(found.adopted)} finished run dir(s) are not in the index; "
                   "`ablate grid` indexes them (no retraining)")
    if found.reopened:
        out.append(f"--repair: retraining {len(found.reopened)} run(s) whose directory, results "
                   f"or checkpoint were missing (remains moved to {ExperimentDir(results_dir).broken})")
    elif found.missing and done:
        out.append(f"warning: {len(found.missing)} finished run(s) have lost their directory or "
                   f"result files, or hold unreadable ones ({', '.join(found.missing[:5])}); "
                   "`--repair` retrains them")
    elif found.missing:
        out.append(f"missing: {len(found.missing)} finished run(s) lost their directory or "
                   f"result files, or hold unreadable ones ({', '.join(found.missing[:5])}"
                   f"{', ...' if len(found.missing) > 5 else ''}); `ablate grid --repair` retrains them")
    if found.no_checkpoint and not found.reopened:
        out.append(f"note: {len(found.no_checkpoint)} finished run(s) have no readable "
                   "checkpoint (generator.pt); their metrics are intact; `--repair` retrains them"
                   if done else
                   f"no checkpoint: {len(found.no_checkpoint)} finished run(s) have no readable "
                   "generator.pt (metrics intact; committed results omit checkpoints); "
                   "`ablate grid --repair` retrains them")
    return out


def status_lines(results_dir: Path) -> list[str]:
    """``ablate status``: each variant's runs by state, the cross-check with the run
    directories, failures, running runs' steps and an ETA. Reads only."""
    results_dir = Path(results_dir)
    if not (results_dir / DB_NAME).exists():
        runs = ExperimentDir(results_dir).runs
        n = len(list(runs.glob(f"*/{RUN_INFO}"))) if runs.is_dir() else 0
        return [f"no run index in {results_dir}" + (
            f", but {n} run directories: `ablate grid <experiment>` indexes them (no retraining)"
            if n else " (run `ablate grid` first)")]
    meta = load_experiment_meta(results_dir)
    store = _open(results_dir)
    if store is None:
        return [f"{results_dir / DB_NAME} is empty or holds no run index: `ablate grid <experiment>` "
                "rebuilds the index from the run directories (no retraining)"]
    with store:
        rows = store.planned_runs()
        for r in rows:  # a cell of another type (a damaged index) is unknown, not a crash
            for k in ("wall_time_s", "steps"):
                if not isinstance(r.get(k), (int, float)):
                    r[k] = None
        live = {r["key"] for r in rows if r["status"] == Status.RUNNING and store.live_token(r["key"])}
        found = rundirs.check(store, [_RowSpec(r, meta) for r in rows])
    order = [v["name"] for v in meta.get("variants", [])]
    by_var: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] == Status.RUNNING and r["key"] not in live:
            r["status"] = "running?"  # owner gone: reclaimed by the next `ablate grid`
        if r["key"] in found.missing:
            r["status"] = "missing"
        by_var.setdefault(r["variant"], []).append(r)
    cols = ["done", "diverged", "failed", "running", "running?", "pending", "missing"]
    w = max([len(v) for v in by_var] + [7])
    out = [f"{meta['experiment']['name']}: {results_dir}", *_look_lines(meta)]
    out.append(f"{'variant':<{w}}  " + "  ".join(f"{c:>8}" for c in cols) + "   wall/run")
    total = dict.fromkeys(cols, 0)
    for v in sorted(by_var, key=lambda n: order.index(n) if n in order else len(order)):
        rs = by_var[v]
        c = {k: sum(r["status"] == k for r in rs) for k in cols}
        for k in cols:
            total[k] += c[k]
        walls = [r["wall_time_s"] for r in rs if r.get("wall_time_s") and r["status"] in TERMINAL]
        wall = f"{sum(walls) / len(walls):8.1f}s" if walls else ""
        out.append(f"{v:<{w}}  " + "  ".join(f"{c[k]:>8}" for k in cols) + f"   {wall}")
    out.append(f"{'total':<{w}}  " + "  ".join(f"{total[k]:>8}" for k in cols))
    out.append(f"{total['done'] + total['diverged']}/{len(rows)} runs finished")
    out += reconciled_lines(found, results_dir, done=False)
    for r in rows:
        if r["status"] == Status.FAILED:
            last = (r.get("error") or "").strip().splitlines()[-1:] or [""]
            out.append(f"failed: {r['variant']} seed {r['seed']} ({r['key']}): {last[0]}")
    out += progress_lines(results_dir, rows, len(live))
    return out


def _steps(row: dict) -> int | None:
    """A planned run's step budget, from the identity stored with its row."""
    try:
        return int(json.loads(row.get("config") or "null")["train"]["steps"])
    except (TypeError, ValueError, KeyError):
        return None


def run_progress(results_dir: Path, row: dict) -> tuple[int, float] | None:
    """(step, seconds since its start) of an unfinished run, from the last training line
    of its attempt's ``log.jsonl`` (``elapsed_s`` goes on across resumes)."""
    logs = [ExperimentDir(results_dir).attempt(row["key"], row.get("token")).log]
    logs += [RunDir(d).log for d in rundirs.attempt_dirs(results_dir, row["key"])]
    best = None
    for log in logs:
        try:
            records = [r for r in read_jsonl(log) if "elapsed_s" in r]
        except OSError:
            continue
        if records and (best is None or records[-1]["step"] > best[0]):
            best = (int(records[-1]["step"]), float(records[-1]["elapsed_s"]))
    return best


def _duration(seconds: float) -> str:
    m = int(round(seconds / 60))
    return f"{m // 60}h {m % 60:02d}m" if m >= 60 else f"{max(m, 1)} min"


def progress_lines(results_dir: Path, rows: list[dict[str, Any]], n_live: int) -> list[str]:
    """Each running run's step and rate, and an ETA for the planned runs left.

    Seconds per step come from the finished runs (wall time incl. validation and
    scoring, over steps: the median) or, before any finished, from the running runs'
    logs; the runs left share ``max(1, running now)`` workers.
    """
    out, left_steps, rates = [], 0, []
    for r in rows:
        steps = _steps(r)
        if r["status"] in ("running", "running?"):
            at = run_progress(results_dir, r)
            step = at[0] if at else 0
            if at and at[0] and at[1] > 0:
                rates.append(at[1] / at[0])
            pct = f" ({100 * step / steps:.0f}%)" if steps else ""
            rate = f", {at[0] / at[1]:.2f} steps/s" if at and at[1] > 0 else ""
            note = " (owner gone; the next grid resumes it)" if r["status"] == "running?" else ""
            out.append(f"{r['status']}: {r['variant']} seed {r['seed']} ({r['key']}): step "
                       f"{step:,}/{steps:,}{pct}{rate}{note}" if steps else
                       f"{r['status']}: {r['variant']} seed {r['seed']} ({r['key']}): step {step:,}")
            left_steps += max(0, (steps or 0) - step)
        elif r["status"] == "pending":
            left_steps += steps or 0
    done = [r["wall_time_s"] / r["steps"] for r in rows
            if r["status"] in TERMINAL and r.get("wall_time_s") and r.get("steps")]
    per_step = statistics.median(done) if done else statistics.median(rates) if rates else None
    if left_steps and per_step:
        source = (f"{per_step:.3g} s/step, median of {len(done)} finished run(s)" if done
                  else f"{per_step:.3g} s/step from the running runs")
        out.append(f"ETA for the planned runs: {_duration(left_steps * per_step / max(1, n_live))}"
                   f" ({left_steps:,} steps left, {max(1, n_live)} at a time; {source})")
    return out


def _recorded_looks(results_dir: Path) -> list[dict]:
    try:
        return load_experiment_meta(results_dir).get("looks") or []
    except ConfigError:
        return []


def _look_lines(meta: dict) -> list[str]:
    """Where an adaptive grid stands: its looks and why it continues (experiment.json)."""
    looks = meta.get("looks") or []
    if not looks:
        return []
    last = looks[-1]
    if last.get("done"):
        head = f"adaptive seeds: stopped after look {last['look']}"
    else:
        more = ", ".join(f"{v} to {n}" for v, n in (last.get("next") or {}).items()
                         if n > last["seeds"].get(v, 0))
        head = (f"adaptive seeds: look {last['look']} of at most {meta.get('max_looks', '?')} "
                f"decided; look {last['look'] + 1} continues ({more})")
    return [head] + [f"  {r}" for r in last.get("reasons", [])]


class _RowSpec:
    """A planned row dressed as much like a RunSpec as rundirs.check needs."""

    def __init__(self, row: dict, meta: dict) -> None:
        self.key = row["key"]
        ev = (meta.get("experiment") or {}).get("evaluation") or {}
        self.evaluates = bool(ev) and bool(ev.get("features", True))
