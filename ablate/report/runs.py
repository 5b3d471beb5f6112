"""Per-run artefacts the report reads besides the store: ``config.json`` (provenance),
``log.jsonl`` (validation-FID curves), ``metrics.json`` (class histograms) and
``samples.png``. One schema, the one the runner writes: the validation FID is the
``val_fid`` key of ``log.jsonl`` lines; the class histograms are ``class_counts`` and
``real_class_counts`` under ``<checkpoint>.classifier`` in ``metrics.json``. A missing
file or key is not an error: it becomes a line in the report's *Gaps* section.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ablate import layout
from ablate.layout import RunDir

VAL_FID_KEY = "val_fid"  # ablate.training.loop writes {"step", "val_fid", "val_n", "best_step"}



def _shaped_provenance(p) -> bool:
    """metrics.json's provenance as the scorer writes it: a dict whose ``features`` (if
    any) maps each feature net to a dict."""
    f = p.get("features", {}) if isinstance(p, dict) else None
    return isinstance(f, dict) and all(isinstance(v, dict) for v in f.values())

def _plugins(configs: list[dict]) -> list[tuple[str, str, list[str], int]]:
    """(provider, version, its hacks, runs) for each plugin package the runs' hack records
    name (every provider but ablate's built-ins), most runs first: the packages a reader
    installs to rerun them (their versions are part of the run keys)."""
    from ablate.hacks.providers import BUILTIN_PROVIDER

    runs: Counter = Counter()
    hacks: dict[tuple[str, str], set[str]] = {}
    for c in configs:
        records = c.get("hacks") if isinstance(c.get("hacks"), list) else []
        seen = set()
        for r in records:
            if not isinstance(r, dict) or not isinstance(r.get("provider"), str) \
                    or r["provider"] == BUILTIN_PROVIDER:
                continue
            pv = (r["provider"], str(r.get("version")))
            hacks.setdefault(pv, set()).add(str(r.get("name")))
            seen.add(pv)
        runs.update(seen)
    return [(p, v, sorted(hacks[(p, v)]), n) for (p, v), n in
            sorted(runs.items(), key=lambda kv: (-kv[1], kv[0]))]


class RunArtefacts:
    """Lazy, cached access to the run directories named in the frame's ``run_dir`` column."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.missing: list[str] = []
        self._json_cache: dict[Path, dict | None] = {}

    def rows(self, statuses: tuple[str, ...] = ("done",)):
        f = self.frame[self.frame["status"].isin(statuses)]
        return f.sort_values(["variant", "seed"]).iterrows()

    @staticmethod
    def run_dir(row) -> Path | None:
        raw = row.get("run_dir")
        return Path(raw) if isinstance(raw, str) and raw else None

    def _json(self, path: Path) -> dict | None:
        if path not in self._json_cache:
            try:
                doc = json.loads(path.read_text())
                self._json_cache[path] = doc if isinstance(doc, dict) else None
            except (OSError, ValueError):
                self._json_cache[path] = None
        return self._json_cache[path]

    def _each_json(self, name: str, per_run: bool = False):
        """(row, parsed ``name``) of each finished run's directory; ``per_run``: once per run
        key ([axes] plans a shared run under several variant names), else once per row."""
        found = total = 0
        seen: set = set()
        for _, row in self.rows():
            d = self.run_dir(row)
            if d is None or (per_run and d in seen):
                continue
            seen.add(d)
            total += 1
            obj = self._json(d / name)
            if obj is not None:
                found += 1
                yield row, obj
        if total and found < total:
            self.missing.append(f"`{name}` missing or unreadable in {total - found} of {total} finished runs")

    # -- provenance -------------------------------------------------------------------
    def provenance(self) -> dict:
        """What the runs recorded: data, hardware, versions, git commits, device, protocol;
        each run counted once, however many variant names share it."""
        configs = [c for _, c in self._each_json(layout.CONFIG, per_run=True)]
        out: dict = {"runs_with_config": len(configs)}

        def count(docs, key, shaped=lambda v: True):
            return [(json.loads(k), n) for k, n in Counter(
                json.dumps(d.get(key), sort_keys=True) for d in docs
                if d.get(key) and shaped(d[key])).most_common()]

        for key in ("data", "hardware", "versions", "git_commit", "device"):
            out[key] = count(configs, key)
        out["plugins"] = _plugins(configs)
        trains = [c.get("train") or {} for c in configs]
        out["train"] = trains[0] if trains else {}
        out["latent_dim"] = sorted({t["latent_dim"] for t in trains if t.get("latent_dim")})
        metrics = [m for _, m in self._each_json(layout.METRICS, per_run=True)]
        out["protocol"] = count(metrics, "protocol", lambda v: isinstance(v, dict))
        # A hand-edited record of another shape is left out rather than read as one.
        out["metrics_provenance"] = count(metrics, "provenance", _shaped_provenance)
        out["mode_rule"] = sorted({str(m[c]["classifier"]["mode_rule"]) for m in metrics for c in ("last", "best")
                                   if isinstance(m.get(c), dict) and isinstance(m[c].get("classifier"), dict)
                                   and m[c]["classifier"].get("mode_rule")})
        return out

    # -- curves -----------------------------------------------------------------------
    def val_curves(self) -> pd.DataFrame:
        """``val_fid`` records of each finished run's log.jsonl: variant, seed, step, value
        (one value per step: a repeated step keeps its last record)."""
        records = []
        with_log = 0
        for _, row in self.rows():
            d = self.run_dir(row)
            if d is None or not RunDir(d).log.is_file():
                continue
            with_log += 1
            per_step: dict[int, float] = {}
            try:
                records_ = RunDir(d).read_log()
            except (OSError, UnicodeDecodeError):
                self.missing.append(f"`log.jsonl` unreadable in {d.name}")
                continue
            for rec in records_:
                if not isinstance(rec, dict):
                    continue
                v = rec.get(VAL_FID_KEY)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(rec.get("step"), int):
                    per_step[rec["step"]] = float(v)
            records += [{"variant": row["variant"], "seed": int(row["seed"]), "step": s, "value": v}
                        for s, v in sorted(per_step.items())]
        if not records:
            self.missing.append(f"no `{VAL_FID_KEY}` records in any run's `log.jsonl` ({with_log} logs "
                                "read; set `[evaluation] val_every`): curves and effects over training "
                                "are skipped")
        return pd.DataFrame(records, columns=["variant", "seed", "step", "value"])

    # -- samples ----------------------------------------------------------------------
    def sample_paths(self, variants: list[str]) -> dict[str, tuple[int, Path]]:
        """variant -> (seed, samples.png) for the lowest finished seed that has one."""
        out: dict[str, tuple[int, Path]] = {}
        for _, row in self.rows():
            d = self.run_dir(row)
            v = row["variant"]
            if v in out or d is None or not RunDir(d).samples.is_file():
                continue
            out[v] = (int(row["seed"]), RunDir(d).samples)
        lacking = [v for v in variants if v not in out]
        if lacking:
            self.missing.append(f"no `samples.png` for {len(lacking)} variant(s): {', '.join(lacking)}")
        return {v: out[v] for v in variants if v in out}

    # -- class histograms -------------------------------------------------------------
    def class_counts(self, checkpoint: str) -> pd.DataFrame:
        """Per finished run: key, variant, seed, ``counts`` and ``real_counts`` (arrays) from
        ``metrics.json`` at ``checkpoint`` (runs without histograms are left out)."""
        rows = []
        for row, m in self._each_json(layout.METRICS):
            ck = m.get(checkpoint)
            c = ck.get("classifier") if isinstance(ck, dict) else None
            gen, real = (c.get("class_counts"), c.get("real_class_counts")) if isinstance(c, dict) else (None, None)
            numbers = lambda x: isinstance(x, list) and all(  # noqa: E731
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in x)
            if numbers(gen) and numbers(real) and len(gen) == len(real) > 1 and sum(gen) > 0 and sum(real) > 0:
                rows.append({"key": row["key"], "variant": row["variant"], "seed": int(row["seed"]),
                             "counts": np.asarray(gen, float), "real_counts": np.asarray(real, float)})
        return pd.DataFrame(rows, columns=["key", "variant", "seed", "counts", "real_counts"])
