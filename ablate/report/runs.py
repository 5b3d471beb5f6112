"""Reading per-run artefacts (config.json, log.jsonl, metrics.json, samples.png) for the
report. Every reader tolerates missing files and keys, and says what was missing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.artefacts import read_jsonl

VAL_FID_KEYS = ("val_fid", "val/fid", "fid_val", "val_fid_classifier", "val_fid_inception")


class RunArtefacts:
    """Lazy access to the run directories named in the frame's ``run_dir`` column."""

    def __init__(self, frame: pd.DataFrame, results_dir: Path | None):
        self.frame = frame
        self.results_dir = Path(results_dir) if results_dir is not None else None
        self.missing: list[str] = []
        self._json_cache: dict[Path, dict | None] = {}

    # -- paths ------------------------------------------------------------------------
    def run_dir(self, row) -> Path | None:
        raw = row.get("run_dir") if hasattr(row, "get") else None
        if raw is None or (isinstance(raw, float) and np.isnan(raw)) or raw == "":
            return None
        p = Path(str(raw))
        if not p.is_absolute() and self.results_dir is not None and (self.results_dir / p).exists():
            return self.results_dir / p
        return p

    def _json(self, path: Path) -> dict | None:
        if path not in self._json_cache:
            try:
                self._json_cache[path] = json.loads(path.read_text())
            except (OSError, ValueError):
                self._json_cache[path] = None
        return self._json_cache[path]

    def rows(self, done_only: bool = True):
        f = self.frame
        if done_only and "status" in f.columns:
            f = f[f["status"] == "done"]
        return f.sort_values(["variant", "seed"]).iterrows()

    def _each_json(self, name: str):
        found = 0
        total = 0
        for _, row in self.rows():
            d = self.run_dir(row)
            if d is None:
                continue
            total += 1
            obj = self._json(d / name)
            if obj is not None:
                found += 1
                yield row, obj
        if total and found < total:
            self.missing.append(f"`{name}` missing or unreadable in {total - found} of {total} finished runs")

    # -- provenance -------------------------------------------------------------------
    def configs(self) -> list[dict]:
        return [c for _, c in self._each_json("config.json")]

    def metrics_docs(self) -> list[dict]:
        return [m for _, m in self._each_json("metrics.json")]

    def provenance(self) -> dict:
        """Union of what the runs recorded: data, hardware, versions, git commits, device."""
        configs = self.configs()
        out: dict = {"runs_with_config": len(configs)}
        count = lambda key: Counter(json.dumps(c.get(key), sort_keys=True) for c in configs if c.get(key))  # noqa: E731
        for key in ("data", "hardware", "versions", "git_commit", "device"):
            out[key] = [(json.loads(k), n) for k, n in count(key).most_common()]
        trains = [c.get("train", {}) for c in configs]
        out["train"] = trains[0] if trains else {}
        out["latent_dim"] = sorted({t.get("latent_dim") for t in trains if t.get("latent_dim")})
        metrics = self.metrics_docs()
        out["protocol"] = [(json.loads(k), n) for k, n in Counter(
            json.dumps(m.get("protocol"), sort_keys=True) for m in metrics if m.get("protocol")).most_common()]
        out["metrics_provenance"] = [(json.loads(k), n) for k, n in Counter(
            json.dumps(m.get("provenance"), sort_keys=True) for m in metrics
            if m.get("provenance")).most_common()]
        out["mode_rule"] = sorted({str(m[c]["classifier"]["mode_rule"]) for m in metrics for c in ("last", "best")
                                   if isinstance(m.get(c), dict) and isinstance(m[c].get("classifier"), dict)
                                   and m[c]["classifier"].get("mode_rule")})
        return out

    # -- curves -----------------------------------------------------------------------
    def val_curves(self) -> tuple[pd.DataFrame, str | None]:
        """Validation-FID records from each run's log.jsonl: variant, seed, step, value."""
        records, key_used = [], None
        with_log = 0
        for _, row in self.rows():
            d = self.run_dir(row)
            if d is None or not (d / "log.jsonl").exists():
                continue
            with_log += 1
            for rec in read_jsonl(d / "log.jsonl"):
                key = next((k for k in VAL_FID_KEYS if k in rec), None)
                if key is None:
                    key = next((k for k in rec if "val" in k and "fid" in k), None)
                if key is None or "step" not in rec or rec[key] is None:
                    continue
                key_used = key_used or key
                records.append({"variant": row["variant"], "seed": row["seed"],
                                "step": rec["step"], "value": float(rec[key])})
        if not records:
            self.missing.append("no validation-FID records in any run's `log.jsonl` "
                                f"({with_log} logs read): the training-curve figure is skipped")
        return pd.DataFrame(records, columns=["variant", "seed", "step", "value"]), key_used

    # -- samples ----------------------------------------------------------------------
    def sample_paths(self, variants: list[str]) -> dict[str, tuple[int, Path]]:
        """variant -> (seed, samples.png) for the lowest finished seed that has one."""
        out: dict[str, tuple[int, Path]] = {}
        for _, row in self.rows():
            d = self.run_dir(row)
            v = row["variant"]
            if v in out or d is None or not (d / "samples.png").is_file():
                continue
            out[v] = (int(row["seed"]), d / "samples.png")
        lacking = [v for v in variants if v not in out]
        if lacking:
            self.missing.append(f"no `samples.png` for {len(lacking)} variant(s): {', '.join(lacking)}")
        return {v: out[v] for v in variants if v in out}

    # -- class histograms -------------------------------------------------------------
    def class_histograms(self, checkpoint: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """variant -> mean generated class histogram over seeds (from metrics.json), and a
        real-data histogram where the metrics recorded one."""
        per_variant: dict[str, list[np.ndarray]] = {}
        reference = None
        for row, m in self._each_json("metrics.json"):
            hist, ref = _find_histogram(m, checkpoint)
            if hist is not None:
                per_variant.setdefault(row["variant"], []).append(hist)
            if ref is not None and reference is None:
                reference = ref
        if not per_variant:
            self.missing.append("no per-class histograms in `metrics.json`: the class-histogram "
                                "figure is skipped (modes and KL are still reported)")
        out = {}
        for v, hs in per_variant.items():
            size = max(len(h) for h in hs)
            hs = [np.pad(h / h.sum() if h.sum() else h, (0, size - len(h))) for h in hs]
            out[v] = np.mean(hs, axis=0)
        return out, reference


def _numbers(x) -> np.ndarray | None:
    if isinstance(x, dict):  # {"0": count, ...}
        try:
            items = sorted(x.items(), key=lambda kv: int(kv[0]))
            x = [v for _, v in items]
        except (TypeError, ValueError):
            return None
    if isinstance(x, list) and len(x) > 1 and all(isinstance(v, (int, float)) for v in x):
        return np.asarray(x, dtype=float)
    return None


def _find_histogram(doc: dict, checkpoint: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Find a generated-class histogram (a key containing 'hist' or 'class_counts') and a
    real one (a path mentioning 'real'), preferring the given checkpoint."""
    gen, real = [], []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                p = path + (str(k),)
                key = str(k).lower()
                arr = _numbers(v) if ("hist" in key or "class_counts" in key) else None
                if arr is not None:
                    (real if any("real" in s.lower() for s in p) else gen).append((p, arr))
                else:
                    walk(v, p)

    walk(doc, ())
    pick = lambda found: next((a for p, a in found if p and p[0] == checkpoint), found[0][1] if found else None)  # noqa: E731
    return pick(gen), pick(real)
