"""The run store: an SQLite index of every run of an experiment (``runs.sqlite``).

Each run key has one row whose ``status`` moves ``pending -> running -> done |
diverged | failed``. Claims are atomic (``BEGIN IMMEDIATE``), so two grid processes,
or two executors' workers, never train the same key; a ``running`` claim whose owner
died (same host: its pid is gone, or it sent no heartbeat for ``STALE_LOCAL_S``; another
host: no heartbeat for ``STALE_AFTER_S``) is reclaimable.

**Commit protocol.** :meth:`Store.commit` checks, inside one write transaction, that
the caller still holds its claim (the token is the fence), then lets it rename its tmp
dir into ``runs/<key>`` and marks the key done. A stale owner that wakes up after its
claim was taken over finds another token and commits nothing; its tmp dir is left for
the sweep. A committed run directory is never deleted.

The index can be rebuilt from the run directories (each holds ``run.json``,
``result.json`` and ``metrics.json``): see :mod:`ablate.grid.rundirs`.

Writers use WAL mode with ``synchronous=FULL``: a killed process loses nothing that was
committed. Readers (``ablate status``, ``grid --dry-run``, the report) open the database
read-only and work on a read-only results directory.

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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.grid.db import (
    ADDED_COLUMNS,
    DB_NAME,
    SCHEMA,
    NoStore,
    StoreCorrupt,
    connect_readonly,
    corrupt,
    damaged,
    schema_problem,
    heartbeat_interval,
    pid_alive,
    planned_rows,
    stale_limits,
)
from ablate.grid.frame import EXPERIMENT_JSON, load_experiment_meta, load_frame

# Names the rest of the grid imports from here.
__all__ = ["DB_NAME", "EXPERIMENT_JSON", "TERMINAL", "NoStore", "Outcome", "Status", "Store",
           "StoreCorrupt", "heartbeat_interval", "load_experiment_meta", "load_frame"]

class Status(enum.StrEnum):
    """Every status a run row or a run attempt's outcome can have."""

    # Row statuses (the ``status`` column).
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DIVERGED = "diverged"  # NaN/inf during training; final, like done
    FAILED = "failed"  # an exception, or its worker died MAX_DEATHS times; --retry-failed
    # Outcomes of one attempt that leave the row to someone else.
    HELD = "held"  # not claimed: another live process holds the key, or it is finished
    DIED = "died"  # the worker process died (killed, OOM, segfault) during the attempt
    LOST = "lost"  # the claim was taken over (stale) before the commit; nothing committed
    ABANDONED = "abandoned"  # stopped (Ctrl-C, disk full): claim released, key pending


ROW_STATUSES = (Status.PENDING, Status.RUNNING, Status.DONE, Status.DIVERGED, Status.FAILED)
TERMINAL = frozenset({Status.DONE, Status.DIVERGED})  # finished; never recomputed


@dataclass(frozen=True)
class Outcome:
    """What one attempt at a run came to (returned by ``run_one`` and the executors).

    ``halt`` says the cause would fail every other run too (disk full, the store cannot
    be written): the grid stops claiming and says so.
    """

    key: str
    variant: str
    seed: int
    status: Status
    error: str | None = None
    diverged_step: int | None = None
    wall_time_s: float | None = None
    halt: bool = False

    @classmethod
    def of(cls, spec: Any, status: Status, **fields: Any) -> Outcome:
        """An outcome for ``spec`` (anything with ``key``, ``variant`` and ``seed``)."""
        return cls(spec.key, spec.variant, spec.seed, Status(status), **fields)


class Store:
    """One experiment's run index; a context manager. Cheap to open; one per process.

    ``readonly=True`` opens an existing database for reading only: no WAL switch, no
    table creation, nothing written, so it works on a read-only results directory.
    Raises :class:`NoStore` (missing or empty file, read-only only) or
    :class:`StoreCorrupt`.
    """

    def __init__(self, results_dir: Path | str, *, readonly: bool = False) -> None:
        self.results_dir = Path(results_dir)
        self.path = self.results_dir / DB_NAME
        self.readonly = readonly
        self.host = socket.gethostname()
        self.stale_after_s, self.stale_local_s = stale_limits()
        try:
            if readonly:
                self.db = connect_readonly(self.path)
                self._check_schema(added=False)  # first: a foreign table is no empty index
                tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master")}
                if not {"runs", "plan"} <= tables:
                    self.db.close()
                    raise NoStore(f"{self.path} holds no run index (empty file)")
            else:
                self.results_dir.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
                self.db.execute("PRAGMA busy_timeout = 60000")
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = FULL")
                self._create()
                self._check_schema(added=True)
        except sqlite3.DatabaseError as exc:
            if not damaged(exc):
                raise
            raise corrupt(self.path, exc) from exc
        self.db.row_factory = sqlite3.Row

    def _create(self) -> None:
        with self.transaction() as db:
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            for table, columns in ADDED_COLUMNS.items():
                have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                for col in columns:
                    if col.split()[0] not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {col}")

    def _check_schema(self, *, added: bool) -> None:
        """A database SQLite reads but that is not a run index is as corrupt as a torn one:
        :class:`StoreCorrupt`, whose message names ``--rebuild-index``."""
        problem = schema_problem(self.db, added=added)
        if problem:
            self.db.close()
            raise corrupt(self.path, sqlite3.DatabaseError(f"not a run index: {problem}"))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> None:
        """``PRAGMA quick_check``; raise :class:`StoreCorrupt` if the database is damaged."""
        try:
            result = [r[0] for r in self.db.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            raise corrupt(self.path, exc) from exc
        if result != ["ok"]:
            raise corrupt(self.path, sqlite3.DatabaseError("; ".join(result[:3])))

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

    def _event(self, key: str, event: str, token: str | None, detail: str | None = None) -> None:
        self.db.execute("INSERT INTO events (key, event, time, host, pid, token, detail)"
                        " VALUES (?,?,?,?,?,?,?)",
                        (key, event, time.time(), self.host, os.getpid(), token, detail))

    # ----- the plan ---------------------------------------------------------------------
    def record_plan(self, rows: Iterable[dict[str, Any]], keep_superset: bool = False) -> None:
        """Replace the plan (variant, seed -> key) and add pending rows for new keys.

        Each row: ``variant, seed, key, hacks (list), config (the key's identity)`` and
        optionally ``look``. An unchanged plan writes nothing (a grid over finished
        runs leaves ``runs.sqlite`` byte-identical, so a committed store stays clean).
        ``keep_superset``: neither does a plan the stored one already contains (an
        adaptive grid replaying an earlier look; it records its last look exactly).
        """
        rows = list(rows)
        want = [(r["variant"], r["seed"], r["key"], json.dumps(list(r["hacks"])), i, r.get("look", 1))
                for i, r in enumerate(rows)]
        have = [tuple(r) for r in self.db.execute(
            "SELECT variant, seed, key, hacks, position, look FROM plan ORDER BY position").fetchall()]
        known = {r[0] for r in self.db.execute("SELECT key FROM runs").fetchall()}
        if all(r["key"] in known for r in rows) and (have == want or keep_superset and (
                {w[:4] + w[5:] for w in want} <= {h[:4] + h[5:] for h in have})):
            return
        now = time.time()
        with self.transaction() as db:
            db.execute("DELETE FROM plan")
            for i, r in enumerate(rows):
                hacks = json.dumps(list(r["hacks"]))
                db.execute("INSERT INTO plan (variant, seed, key, hacks, position, look)"
                           " VALUES (?,?,?,?,?,?)",
                           (r["variant"], r["seed"], r["key"], hacks, i, r.get("look", 1)))
                db.execute("INSERT OR IGNORE INTO runs (key, status, variant, seed, hacks, config, created)"
                           " VALUES (?, 'pending', ?, ?, ?, ?, ?)",
                           (r["key"], r["variant"], r["seed"], hacks,
                            json.dumps(r.get("config"), sort_keys=True), now))

    # ----- claims -----------------------------------------------------------------------
    def _stale(self, row: sqlite3.Row, now: float) -> bool:
        beat = row["heartbeat"] or 0.0
        if row["host"] == self.host:
            return not pid_alive(row["pid"] or -1) or now - beat > self.stale_local_s
        return now - beat > self.stale_after_s

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
            elif row["status"] == Status.FAILED:
                self._event(key, "retry", None)  # worker deaths are counted afresh
            db.execute("UPDATE runs SET status='running', token=?, pid=?, host=?, heartbeat=?,"
                       " started=?, attempts=attempts+1, error=NULL WHERE key=?",
                       (token, os.getpid(), self.host, now, now, key))
            self._event(key, "claim", token)
        return token

    def heartbeat(self, key: str, token: str) -> bool:
        """Refresh a claim; False if it was lost (reclaimed as stale)."""
        cur = self.db.execute("UPDATE runs SET heartbeat=? WHERE key=? AND token=? AND status='running'",
                              (time.time(), key, token))
        return cur.rowcount == 1

    def owns(self, key: str, token: str) -> bool:
        """Whether ``token`` still holds ``key`` (False once another process took it over)."""
        return self._owned(key, token)

    def _owned(self, key: str, token: str) -> bool:
        row = self._one("SELECT token, status FROM runs WHERE key=?", (key,))
        return row is not None and row["token"] == token and row["status"] == Status.RUNNING

    def _set(self, key: str, event: str, token: str | None, fields: dict[str, Any],
             detail: str | None = None) -> None:
        if "metrics" in fields and not isinstance(fields["metrics"], (str, type(None))):
            fields = {**fields, "metrics": json.dumps(fields["metrics"])}
        sets = ", ".join(f"{c}=?" for c in fields)
        self.db.execute(f"UPDATE runs SET {sets} WHERE key=?", (*fields.values(), key))
        self._event(key, event, token, detail)

    def commit(self, key: str, token: str, status: Status, publish: Callable[[], None],
               **fields: Any) -> bool:
        """The commit point of a run: fenced by the claim token.

        Inside one write transaction: if ``token`` still holds ``key``, call
        ``publish()`` (which renames the run's tmp dir to ``runs/<key>``) and record
        ``status`` with ``fields``. Returns False, calling nothing, if the claim was
        taken over. A crash after ``publish`` and before the commit leaves a complete
        ``runs/<key>`` that the next grid adopts (see ``rundirs.reconcile``).
        """
        if status not in TERMINAL:
            raise ValueError(f"commit records done or diverged, not {status!r}")
        with self.transaction():
            if not self._owned(key, token):
                return False
            publish()
            self._set(key, str(status), token, {"status": str(status), "finished": time.time(),
                                                "token": None, **fields})
        return True

    def fail(self, key: str, token: str, error: str, **fields: Any) -> bool:
        """Record that a claimed run raised an exception. False if not owned."""
        with self.transaction():
            if not self._owned(key, token):
                return False
            self._set(key, "failed", token, {"status": "failed", "finished": time.time(),
                                             "error": error, "token": None, **fields})
        return True

    def release(self, key: str, token: str, why: str = "release") -> bool:
        """Give a claim back unfinished (Ctrl-C, disk full): the key is pending again."""
        with self.transaction():
            if not self._owned(key, token):
                return False
            self._set(key, "release", token,
                      {"status": "pending", "token": None, "pid": None, "heartbeat": None}, why)
        return True

    def record_death(self, key: str, cause: str, max_deaths: int) -> Status | None:
        """A worker died running ``key``: count it; at ``max_deaths`` the key fails.

        Acts only while the row is ``running`` with a dead owner (a worker that was
        merely stopped released its claim itself). Returns the new row status
        (``pending``: retry; ``failed``: the limit is reached), or None if the row was
        not a dead claim.
        """
        now = time.time()
        with self.transaction():
            row = self._one("SELECT * FROM runs WHERE key=?", (key,))
            if row is None or row["status"] != Status.RUNNING or not self._stale(row, now):
                return None
            since = self._one("SELECT max(time) FROM events WHERE key=? AND event IN"
                              " ('failed', 'retry', 'repair')", (key,))[0] or 0.0
            deaths = 1 + self._one("SELECT count(*) FROM events WHERE key=? AND event='died'"
                                   " AND time > ?", (key, since))[0]
            self._event(key, "died", row["token"], cause)
            if deaths >= max_deaths:
                self._set(key, "failed", row["token"], {
                    "status": "failed", "finished": now, "token": None,
                    "error": f"its worker process died {deaths} times (the limit); last: {cause}"})
                return Status.FAILED
            self._set(key, "release", row["token"],
                      {"status": "pending", "token": None, "pid": None, "heartbeat": None},
                      f"worker died ({deaths} of {max_deaths})")
            return Status.PENDING

    def adopt(self, key: str, fields: dict[str, Any]) -> bool:
        """Index a complete run directory found on disk as finished (``fields`` from it).

        Skips keys that are finished already or held by a live claim.
        """
        now = time.time()
        with self.transaction() as db:
            row = self._one("SELECT * FROM runs WHERE key=?", (key,))
            if row is not None and (row["status"] in TERMINAL or (
                    row["status"] == Status.RUNNING and not self._stale(row, now))):
                return False
            if row is None:
                db.execute("INSERT INTO runs (key, created) VALUES (?, ?)", (key, now))
            self._set(key, "adopt", None, {"token": None, "pid": None, "heartbeat": None,
                                           "error": None, **fields})
        return True

    def reopen(self, key: str, why: str) -> bool:
        """Make a finished key pending again (``--repair``: its directory is gone)."""
        with self.transaction():
            row = self._one("SELECT status FROM runs WHERE key=?", (key,))
            if row is None or row["status"] not in TERMINAL:
                return False
            self._set(key, "repair", None, {"status": "pending", "token": None}, why)
        return True

    def set_execution(self, key: str, threads: int | None, device: str | None) -> None:
        """Fill in the thread count and device of a run indexed before they were recorded."""
        self.db.execute("UPDATE runs SET threads=?, device=? WHERE key=? AND threads IS NULL",
                        (threads, device, key))

    # ----- reading ----------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM runs WHERE key=?", (key,))
        return dict(row) if row else None

    def runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM runs ORDER BY created, key")]

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT * FROM events" + (" WHERE event = ?" if event else "") + " ORDER BY time"
        return [dict(r) for r in self.db.execute(q, (event,) if event else ())]

    def planned_runs(self) -> list[dict[str, Any]]:
        """The recorded plan joined with each key's run row, in plan order."""
        return planned_rows(self.db)

    def live_token(self, key: str) -> str | None:
        """The token of a live (non-stale) running claim on ``key``, if any."""
        row = self._one("SELECT * FROM runs WHERE key=?", (key,))
        if row is None or row["status"] != Status.RUNNING or self._stale(row, time.time()):
            return None
        return row["token"]
