"""SQLite plumbing of the run store: schema, connections, staleness, damage.

:mod:`ablate.grid.store` builds the index on these; nothing else should need them.
"""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ablate import layout
from ablate.errors import ConfigError

DB_NAME = layout.DB_NAME  # ablate.layout names it
HEARTBEAT_S = 10.0  # a running claim refreshes its heartbeat this often (at most)
# A claim from another host whose heartbeat is older than this is dead. Environment
# override ABLATE_STALE_AFTER_S (shared filesystems with slow clocks want more).
STALE_AFTER_S = 120.0
# Same host, pid alive but no heartbeat for this long: the owner is stopped (Ctrl-Z,
# SIGSTOP) or its pid was reused. Override: ABLATE_STALE_LOCAL_S (the tests shorten it).
STALE_LOCAL_S = 900.0


def stale_limits() -> tuple[float, float]:
    """(other hosts, this host) stale-claim limits in seconds, with environment overrides
    (a positive number of seconds; anything else is a :class:`ConfigError` naming it)."""
    def limit(name: str, default: float) -> float:
        raw = os.environ.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"environment variable {name}={raw!r} must be a positive number of "
                              f"seconds (default {default:g}); set it so, or unset it")
        return value

    return limit("ABLATE_STALE_AFTER_S", STALE_AFTER_S), limit("ABLATE_STALE_LOCAL_S", STALE_LOCAL_S)


def heartbeat_interval() -> float:
    """A claim's heartbeat period: well inside both stale limits."""
    return min(HEARTBEAT_S, *(limit / 5 for limit in stale_limits()))


class StoreCorrupt(ConfigError):
    """``runs.sqlite`` exists but is not a readable SQLite database."""


class NoStore(ConfigError):
    """A results directory without a run index (``runs.sqlite`` missing or empty)."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'pending',
    variant TEXT,            -- the variant that first planned this key (informative)
    seed INTEGER,
    hacks TEXT,              -- JSON list of enabled hacks
    config TEXT,             -- JSON: the identity that was hashed into the key
    token TEXT,              -- the current claim
    pid INTEGER,
    host TEXT,
    heartbeat REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL,
    started REAL,
    finished REAL,
    steps INTEGER,
    diverged_step INTEGER,
    wall_time_s REAL,
    train_time_s REAL,
    eval_time_s REAL,
    images_per_s REAL,
    metrics TEXT,            -- JSON: metrics.json of the run
    error TEXT,
    run_dir TEXT,            -- relative to the results directory
    threads INTEGER,         -- torch threads the run trained with (results depend on it)
    device TEXT              -- device type it trained on (cpu, cuda)
);
CREATE TABLE IF NOT EXISTS events (   -- audit log: every claim and outcome
    key TEXT NOT NULL,
    event TEXT NOT NULL,     -- claim, done, diverged, failed, release, died, adopt, repair
    time REAL NOT NULL,
    host TEXT,
    pid INTEGER,
    token TEXT,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS plan (
    variant TEXT NOT NULL,
    seed INTEGER NOT NULL,
    key TEXT NOT NULL,
    hacks TEXT NOT NULL,
    position INTEGER NOT NULL,
    look INTEGER,            -- the look (adaptive seeds) that planned it, 1 for fixed seeds
    PRIMARY KEY (variant, seed)
);
"""
# Columns added since the first committed stores (added in place by a writer).
ADDED_COLUMNS = {"runs": ("threads INTEGER", "device TEXT"), "events": ("detail TEXT",),
                  "plan": ("look INTEGER",)}


def _schema_columns() -> dict[str, set[str]]:
    """``{table: columns}`` as :data:`SCHEMA` declares them."""
    out: dict[str, set[str]] = {}
    for stmt in SCHEMA.split(";"):
        if "CREATE TABLE" not in stmt:
            continue
        head, body = stmt.split("(", 1)
        cols = {line.split()[0] for line in body.splitlines()
                if line.strip() and not line.strip().startswith(("--", "PRIMARY", ")"))}
        out[head.split()[-1]] = cols
    return out


def schema_problem(db: sqlite3.Connection, *, added: bool) -> str | None:
    """What makes ``db`` not a run index though SQLite reads it: a table of ours lacking
    columns (another program's database, or a hand-made one). ``added``: also require the
    :data:`ADDED_COLUMNS` (a writer has added them in place; older stores lack them)."""
    for table, cols in _schema_columns().items():
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if not have:
            continue  # absent: a writer creates it, a reader treats the index as empty
        need = cols if added else cols - {c.split()[0] for c in ADDED_COLUMNS.get(table, ())}
        missing = sorted(need - have)
        if missing:
            return f"its table {table!r} lacks the column(s) {', '.join(missing)}"
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def corrupt(path: Path, exc: Exception) -> StoreCorrupt:
    return StoreCorrupt(
        f"{path} is not a readable SQLite database ({exc}). The run directories are "
        f"intact: `ablate grid <experiment> --rebuild-index` moves the file aside and "
        f"rebuilds the index from {path.parent}/runs/*/ (nothing is retrained)")


def damaged(exc: sqlite3.DatabaseError) -> bool:
    """Errors that mean the file is not a (healthy) SQLite database."""
    text = str(exc).lower()
    return any(s in text for s in ("not a database", "malformed", "corrupt"))


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection that writes nothing, on a writable or read-only directory.

    A WAL database needs its ``-shm`` index; where the directory is read-only and no
    writer left one, SQLite can only open the file as immutable (no writer can be
    active there anyway).
    """
    if path.exists() and not path.is_file():  # as `ablate grid` says it (driver.prepare)
        raise ConfigError(f"{path} is not a file (a directory?): move it aside (`mv {path} {path}.bad`) "
                          "and run `ablate grid` on the experiment with --rebuild-index, which rebuilds the "
                          f"index from {path.parent}/runs/*/ (nothing is retrained)")
    if not path.is_file() or path.stat().st_size == 0:
        raise NoStore(f"no run index at {path}" + (" (empty file)" if path.is_file() else "")
                      + ": run `ablate grid` on the experiment (it indexes any run directories)")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        try:
            db = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
            db.execute("SELECT count(*) FROM sqlite_master").fetchall()
            return db
        except sqlite3.OperationalError as exc:
            if damaged(exc) or os.access(path.parent, os.W_OK):
                raise
        db = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
        db.execute("SELECT count(*) FROM sqlite_master").fetchall()
        return db
    except sqlite3.DatabaseError as exc:
        if damaged(exc):
            raise corrupt(path, exc) from exc
        raise


def planned_rows(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """The plan table joined with each key's run row, in plan order (stores written before
    the plan had a ``look`` column read as look 1)."""
    cols = {r[1] for r in db.execute("PRAGMA table_info(plan)")}
    if "position" not in cols or not db.execute("PRAGMA table_info(runs)").fetchall():
        raise NoStore("the run index has no plan or runs table (empty or foreign database): "
                      "`ablate grid <experiment> --rebuild-index` moves it aside and rebuilds it "
                      "from the run directories (nothing is retrained)")
    look = "p.look" if "look" in cols else "1"
    cur = db.execute(f"SELECT p.variant, p.seed, p.key, p.hacks AS plan_hacks, {look} AS plan_look,"
                     " r.* FROM plan p LEFT JOIN runs r ON r.key = p.key ORDER BY p.position")
    names = [c[0] for c in cur.description]
    out = []
    for row in cur.fetchall():
        d = dict(zip(names, row))
        d["variant"], d["seed"], d["key"] = row[0], row[1], row[2]
        d["status"] = d.get("status") or "pending"
        out.append(d)
    return out
