"""Helpers for the grid's fault tests: tiny experiments, CLI subprocesses, store peeks."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "experiments/smoke.toml"
ABLATE = [sys.executable, "-c", "import sys; from ablate.cli import main; sys.exit(main())"]
RUN_FILES = {"config.json", "generator.pt", "result.json", "run.json", "log.jsonl", "samples.png"}


def experiment(tmp_path: Path, name: str = "exp.toml", *, steps: int = 20, seeds: str = "[0]",
               scope: str = '["batch-norm", "adam-dcgan", "label-smoothing"]',
               extra: str = "", replace: dict[str, str] | None = None) -> Path:
    """smoke.toml with another budget, seeds and scope (and any text replaced)."""
    text = SMOKE.read_text().replace("steps = 20", f"steps = {steps}") \
        .replace("seeds = [0, 1]", f"seeds = {seeds}") \
        .replace('scope = ["batch-norm", "adam-dcgan", "label-smoothing"]', f"scope = {scope}")
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text + extra)
    return path


def grid_cmd(exp: Path, results: Path, *extra: str) -> list[str]:
    return [*ABLATE, "grid", str(exp), "--results-dir", str(results), "--no-progress",
            "--no-report", *extra]


def run_cli(*args: str, timeout: float = 600, env: dict | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ABLATE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def rows(results: Path) -> dict[str, dict]:
    """key -> run row, read without locks getting in the way (empty if unreadable)."""
    db = results / "runs.sqlite"
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        con.row_factory = sqlite3.Row
        try:
            return {r["key"]: dict(r) for r in con.execute("SELECT * FROM runs")}
        finally:
            con.close()
    except sqlite3.Error:
        return {}


def events(results: Path, event: str | None = None) -> list[dict]:
    con = sqlite3.connect(f"file:{results / 'runs.sqlite'}?mode=ro", uri=True, timeout=5)
    con.row_factory = sqlite3.Row
    try:
        q = "SELECT * FROM events" + (" WHERE event = ?" if event else "") + " ORDER BY time"
        return [dict(r) for r in con.execute(q, (event,) if event else ())]
    finally:
        con.close()


def wait_for(predicate, timeout: float = 300, what: str = "condition", proc=None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process ended before {what}: {out}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def assert_complete_once(results: Path, n_keys: int) -> None:
    """Every key done, committed exactly once, into a complete directory; no tmp left."""
    rs = rows(results)
    assert len(rs) == n_keys and {r["status"] for r in rs.values()} == {"done"}, rs
    last_repair: dict[str, float] = {e["key"]: e["time"] for e in events(results, "repair")}
    done = [e["key"] for e in events(results) if e["event"] in ("done", "adopt")
            and e["time"] > last_repair.get(e["key"], 0.0)]  # once since any --repair
    assert sorted(done) == sorted(rs), done
    assert sorted(p.name for p in (results / "runs").iterdir()) == sorted(rs)
    for r in rs.values():
        files = {p.name for p in (results / r["run_dir"]).iterdir()}
        assert RUN_FILES <= files, (r["key"], files)
    tmp = results / "tmp"
    assert not tmp.exists() or not list(tmp.iterdir())


def no_traceback(text: str) -> bool:
    return "Traceback" not in text
