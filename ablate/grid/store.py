"""The run store: an SQLite index of every run of an experiment (``runs.sqlite``).

The store is the index of a grid. Each run key has one row whose ``status`` moves
``pending -> running -> done | diverged | failed``; the transition to ``done`` is the
commit point of a run (its directory is renamed into ``runs/<key>`` in the same
transaction). Claims are atomic (``BEGIN IMMEDIATE``), so two grid processes, or two
executors' workers, never train the same key; a ``running`` claim whose owner died
(same host: its pid is gone; any host: its heartbeat is older than ``STALE_AFTER_S``)
is reclaimable. Writers use WAL mode with ``synchronous=FULL``: a killed process loses
nothing that was committed. Readers (``ablate status``, ``grid --dry-run``, the report)
open the database read-only and work on a read-only results directory.

Readers of results use :func:`load_frame` and :func:`load_experiment_meta`.

Note: SQLite locking needs a filesystem with working POSIX locks; on a cluster, put
the results directory on a local or a lock-capable shared filesystem.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

DB_NAME = "runs.sqlite"
EXPERIMENT_JSON = "experiment.json"
HEARTBEAT_S = 10.0  # a running claim refreshes its heartbeat this often
STALE_AFTER_S = 120.0  # a claim from another host with an older heartbeat is dead
STALE_LOCAL_S = 900.0  # same host, pid alive (possibly reused) but no heartbeat for this long


class Status(enum.StrEnum):
    """Every status a run row or a run attempt's outcome can have."""

    # Row statuses (the ``status`` column).
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DIVERGED = "diverged"  # NaN/inf during training; final, like done
    FAILED = "failed"  # an exception; retried only with --retry-failed
    # Outcomes of one attempt that leave the row to someone else.
    HELD = "held"  # not claimed: another live process holds the key, or it is finished
    DIED = "died"  # the worker process died (killed, OOM, segfault) during the attempt
    LOST = "lost"  # the claim was taken over (stale) before the commit


ROW_STATUSES = (Status.PENDING, Status.RUNNING, Status.DONE, Status.DIVERGED, Status.FAILED)
TERMINAL = frozenset({Status.DONE, Status.DIVERGED})  # finished; never recomputed


@dataclass(frozen=True)
class Outcome:
    """What one attempt at a run came to (returned by ``run_one`` and the executors)."""

    key: str
    variant: str
    seed: int
    status: Status
    error: str | None = None
    diverged_step: int | None = None
    wall_time_s: float | None = None

    @classmethod
    def of(cls, spec: Any, status: Status, **fields: Any) -> Outcome:
        """An outcome for ``spec`` (anything with ``key``, ``variant`` and ``seed``)."""
        return cls(spec.key, spec.variant, spec.seed, Status(status), **fields)


_SCHEMA = """
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
    run_dir TEXT             -- relative to the results directory
);
CREATE TABLE IF NOT EXISTS events (   -- audit log: every claim and outcome
    key TEXT NOT NULL,
    event TEXT NOT NULL,     -- claim, done, diverged, failed, release
    time REAL NOT NULL,
    host TEXT,
    pid INTEGER,
    token TEXT
);
CREATE TABLE IF NOT EXISTS plan (
    variant TEXT NOT NULL,
    seed INTEGER NOT NULL,
    key TEXT NOT NULL,
    hacks TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (variant, seed)
);
"""


def _pid_alive(pid: int) -> bool:
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


class Store:
    """One experiment's run index; a context manager. Cheap to open; one per process.

    ``readonly=True`` opens an existing database for reading only: no WAL switch, no
    table creation, nothing written, so it works on a read-only results directory.
    """

    def __init__(self, results_dir: Path | str, *, readonly: bool = False) -> None:
        self.results_dir = Path(results_dir)
        self.path = self.results_dir / DB_NAME
        self.readonly = readonly
        self.host = socket.gethostname()
        if readonly:
            if not self.path.is_file():
                raise FileNotFoundError(self.path)
            self.db = _connect_readonly(self.path)
        else:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout = 60000")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = FULL")
            with self.transaction():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        """One row; the statement is finished at once (an open cursor holds a read lock)."""
        rows = self.db.execute(sql, args).fetchall()
        return rows[0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE``: take the write lock up front, so read-then-write is atomic."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ----- the plan ---------------------------------------------------------------------
    def record_plan(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the plan (variant, seed -> key) and add pending rows for new keys.

        Each row: ``variant, seed, key, hacks (list), config (the key's identity)``.
        """
        now = time.time()
        with self.transaction() as db:
            db.execute("DELETE FROM plan")
            for i, r in enumerate(rows):
                hacks = json.dumps(list(r["hacks"]))
                db.execute("INSERT INTO plan (variant, seed, key, hacks, position) VALUES (?,?,?,?,?)",
                           (r["variant"], r["seed"], r["key"], hacks, i))
                db.execute("INSERT OR IGNORE INTO runs (key, status, variant, seed, hacks, config, created)"
                           " VALUES (?, 'pending', ?, ?, ?, ?, ?)",
                           (r["key"], r["variant"], r["seed"], hacks,
                            json.dumps(r.get("config"), sort_keys=True), now))

    # ----- claims -----------------------------------------------------------------------
    def _stale(self, row: sqlite3.Row, now: float) -> bool:
        beat = row["heartbeat"] or 0.0
        if row["host"] == self.host:
            return not _pid_alive(row["pid"] or -1) or now - beat > STALE_LOCAL_S
        return now - beat > STALE_AFTER_S

    def claimable(self, key: str, retry_failed: bool = False) -> bool:
        row = self._one("SELECT * FROM runs WHERE key = ?", (key,))
        return row is None or self._claimable(row, retry_failed, time.time())

    def _claimable(self, row: sqlite3.Row, retry_failed: bool, now: float) -> bool:
        status = row["status"]
        return (status == Status.PENDING or (status == Status.FAILED and retry_failed)
                or (status == Status.RUNNING and self._stale(row, now)))

    def claim(self, key: str, retry_failed: bool = False) -> str | None:
        """Atomically take ``key`` for this process; return a claim token or None."""
        now = time.time()
        token = uuid.uuid4().hex
        with self.transaction() as db:
            row = self._one("SELECT * FROM runs WHERE key = ?", (key,))
            if row is None:
                db.execute("INSERT INTO runs (key, created) VALUES (?, ?)", (key, now))
            elif not self._claimable(row, retry_failed, now):
                return None
            db.execute("UPDATE runs SET status='running', token=?, pid=?, host=?, heartbeat=?,"
                       " started=?, attempts=attempts+1, error=NULL WHERE key=?",
                       (token, os.getpid(), self.host, now, now, key))
            self._event(key, "claim", token)
        return token

    def _event(self, key: str, event: str, token: str | None) -> None:
        self.db.execute("INSERT INTO events (key, event, time, host, pid, token) VALUES (?,?,?,?,?,?)",
                        (key, event, time.time(), self.host, os.getpid(), token))

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT * FROM events" + (" WHERE event = ?" if event else "") + " ORDER BY time"
        return [dict(r) for r in self.db.execute(q, (event,) if event else ())]

    def heartbeat(self, key: str, token: str) -> bool:
        """Refresh a claim; False if it was lost (reclaimed as stale)."""
        cur = self.db.execute("UPDATE runs SET heartbeat=? WHERE key=? AND token=? AND status='running'",
                              (time.time(), key, token))
        return cur.rowcount == 1

    def finish(self, key: str, token: str, status: Status, **fields: Any) -> bool:
        """Record the outcome of a claimed run (the commit point). False if not owned."""
        if status not in ROW_STATUSES:
            raise ValueError(f"unknown status {status!r}")
        cols = {"status": str(status), "finished": time.time(), **fields}
        if "metrics" in cols and not isinstance(cols["metrics"], (str, type(None))):
            cols["metrics"] = json.dumps(cols["metrics"])
        sets = ", ".join(f"{c}=?" for c in cols)
        with self.transaction() as db:
            cur = db.execute(f"UPDATE runs SET {sets} WHERE key=? AND token=? AND status='running'",
                             (*cols.values(), key, token))
            if cur.rowcount == 1:
                self._event(key, str(status), token)
            return cur.rowcount == 1

    def release(self, key: str, token: str) -> None:
        """Give a claim back unfinished (e.g. on Ctrl-C): the key is pending again."""
        with self.transaction() as db:
            cur = db.execute("UPDATE runs SET status='pending', token=NULL, pid=NULL, heartbeat=NULL"
                             " WHERE key=? AND token=? AND status='running'", (key, token))
            if cur.rowcount == 1:
                self._event(key, "release", token)

    # ----- reading ----------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM runs WHERE key=?", (key,))
        return dict(row) if row else None

    def runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM runs ORDER BY created, key")]

    def planned_runs(self) -> list[dict[str, Any]]:
        """The recorded plan joined with each key's run row, in plan order."""
        q = ("SELECT p.variant, p.seed, p.key, p.hacks AS plan_hacks, r.* FROM plan p"
             " LEFT JOIN runs r ON r.key = p.key ORDER BY p.position")
        out = []
        for row in self.db.execute(q):
            d = dict(row)
            d["variant"], d["seed"], d["key"] = row[0], row[1], row[2]
            d["status"] = d.get("status") or Status.PENDING.value
            out.append(d)
        return out

    def live_token(self, key: str) -> str | None:
        """The token of a live (non-stale) running claim on ``key``, if any."""
        row = self._one("SELECT * FROM runs WHERE key=?", (key,))
        if row is None or row["status"] != Status.RUNNING or self._stale(row, time.time()):
            return None
        return row["token"]


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection that writes nothing, on a writable or read-only directory.

    A WAL database needs its ``-shm`` index; where the directory is read-only and no
    writer left one, SQLite can only open the file as immutable (no writer can be
    active there anyway).
    """
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
        db.execute("SELECT count(*) FROM sqlite_master").fetchall()
        return db
    except sqlite3.OperationalError:
        if os.access(path.parent, os.W_OK):
            raise
    db = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
    db.execute("SELECT count(*) FROM sqlite_master").fetchall()
    return db


# --------------------------------------------------------------------------------------
# Readers for the report
# --------------------------------------------------------------------------------------
def flatten_metrics(metrics: dict | None) -> dict[str, float]:
    """``{"last": {"classifier": {"fid": 3.1}}}`` -> ``{"last.classifier.fid": 3.1}``.

    Only numeric leaves are kept; ``protocol`` and ``provenance`` are skipped.
    """
    out: dict[str, float] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not prefix and k in ("protocol", "provenance"):
                    continue
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            out[prefix] = float(node)
        elif node is None and prefix:
            out[prefix] = float("nan")

    walk("", metrics or {})
    return out


BASE_COLUMNS = ["key", "variant", "seed", "status", "diverged_step", "wall_time_s",
                "train_time_s", "images_per_s", "run_dir"]


def load_frame(results_dir: Path | str):
    """One row per planned run (variant x seed) of an experiment, as a DataFrame.

    Columns: ``key, variant, seed, status, diverged_step, wall_time_s, train_time_s,
    images_per_s, run_dir`` (absolute path or None), then ``hack:<name>`` (bool) for
    every hack in scope, then metric columns ``<checkpoint>.<feature>.<metric>``
    flattened from each run's ``metrics.json`` (e.g. ``last.classifier.fid``), NaN
    where a run has no metrics (pending, failed, diverged). Extra columns
    ``eval_time_s``, ``attempts`` and ``error`` follow the base columns. Opens the
    store read-only.
    """
    import pandas as pd  # import-time saving: pandas loads only for readers of results

    results_dir = Path(results_dir).resolve()
    meta = load_experiment_meta(results_dir)
    scope = list(meta.get("hacks", []))
    with Store(results_dir, readonly=True) as store:
        rows = store.planned_runs()
    records = []
    metric_cols: dict[str, None] = {}
    for r in rows:
        hacks = set(json.loads(r["plan_hacks"]))
        rec: dict[str, Any] = {
            "key": r["key"], "variant": r["variant"], "seed": int(r["seed"]),
            "status": r["status"], "diverged_step": r.get("diverged_step"),
            "wall_time_s": r.get("wall_time_s"), "train_time_s": r.get("train_time_s"),
            "images_per_s": r.get("images_per_s"),
            "run_dir": str(results_dir / r["run_dir"]) if r.get("run_dir") else None,
            "eval_time_s": r.get("eval_time_s"), "attempts": r.get("attempts") or 0,
            "error": r.get("error"),
        }
        for h in scope:
            rec[f"hack:{h}"] = h in hacks
        metrics = flatten_metrics(json.loads(r["metrics"]) if r.get("metrics") else None)
        metric_cols.update(dict.fromkeys(metrics))
        rec.update(metrics)
        records.append(rec)
    columns = BASE_COLUMNS + ["eval_time_s", "attempts", "error"] + [f"hack:{h}" for h in scope] \
        + sorted(metric_cols)
    frame = pd.DataFrame.from_records(records, columns=columns)
    for c in ("diverged_step",):
        frame[c] = frame[c].astype("Int64")
    for c in ("wall_time_s", "train_time_s", "images_per_s", "eval_time_s", *metric_cols):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    return frame


def load_experiment_meta(results_dir: Path | str) -> dict[str, Any]:
    """The ``experiment.json`` of a results directory.

    Keys: ``experiment`` (the parsed experiment file), ``design`` (kind, variants with
    their hacks, comparisons ``{hack, on, off}`` = each hack's variant and reference
    variant, resolution, aliasing), ``hacks`` (in scope, in order), ``reference``
    (``{hack: {"on": variant, "off": reference}}``), ``code_version``, ``hack_info``
    (each hack's description and resolved parameters) and ``runs`` (planned count).
    """
    path = Path(results_dir) / EXPERIMENT_JSON
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `ablate grid` on the experiment first")
    return json.loads(path.read_text())
