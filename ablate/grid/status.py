"""What ``ablate grid --dry-run`` and ``ablate status`` print. Read-only: both work on a
read-only results directory.
"""

from __future__ import annotations

from pathlib import Path

from ablate.design import Design
from ablate.experiment import Experiment
from ablate.grid.keys import RunSpec
from ablate.grid.store import DB_NAME, TERMINAL, Store, load_experiment_meta


def _short(hacks: frozenset[str], scope: tuple[str, ...]) -> str:
    if len(hacks) == len(scope):
        return "all"
    if not hacks:
        return "none"
    if len(hacks) > len(scope) / 2:
        return "all but " + ", ".join(h for h in scope if h not in hacks)
    return ", ".join(h for h in scope if h in hacks)


def print_dry_run(experiment: Experiment, design: Design, results_dir: Path,
                  specs: list[RunSpec]) -> None:
    train = experiment.train_kwargs()
    keys = {s.key for s in specs}
    done: set[str] = set()
    if (results_dir / DB_NAME).exists():
        with Store(results_dir, readonly=True) as store:
            done = {k for k in keys if (store.get(k) or {}).get("status") in TERMINAL}
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
    key_of = {(s.variant, s.seed): s.key for s in specs}
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
    if not (results_dir / DB_NAME).exists():
        print(f"no runs yet in {results_dir} (run `ablate grid` first)")
        return 0
    meta = load_experiment_meta(results_dir)
    with Store(results_dir, readonly=True) as store:
        rows = store.planned_runs()
        live = {r["key"] for r in rows if r["status"] == "running" and store.live_token(r["key"])}
    order = [v["name"] for v in meta.get("variants", [])]
    by_var: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] == "running" and r["key"] not in live:
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

