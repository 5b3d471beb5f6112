"""The index and the run directories (issue 11, items 3, 7, 11 and the commit protocol):
a lost, empty or corrupt store is rebuilt from the run directories without retraining;
missing directories and checkpoints are reported and `--repair` retrains only those;
a run killed between its rename and its commit is adopted; the thread count is recorded
and a results directory keeps one. In-process, inline executor, tiny fake-data runs."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gridutil import assert_complete_once, events, experiment, rows  # noqa: E402

from ablate.cli import main  # noqa: E402
from ablate.grid.driver import prepare, run_grid  # noqa: E402
from ablate.grid.executors import InlineExecutor  # noqa: E402
from ablate.grid.store import Status, Store, load_frame  # noqa: E402


def _grid(exp: Path, results: Path, threads: int = 1, **kw):
    return run_grid(prepare(exp, results, threads=threads), InlineExecutor(threads=threads),
                    progress=False, log=lambda m: None, **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A finished 5-run grid (leave-one-out over three hacks, one seed): copy it per test."""
    root = tmp_path_factory.mktemp("finished")
    exp = experiment(root)
    summary = _grid(exp, root / "res")
    assert summary.counts == {"done": 5}
    return exp, root / "res"


@pytest.fixture
def grid_copy(finished, tmp_path) -> tuple[Path, Path]:
    exp, res = finished
    shutil.copytree(res, tmp_path / "res")
    return exp, tmp_path / "res"


def _dir_state(results: Path) -> dict[str, tuple[int, float]]:
    """(inode, mtime) of every run directory's generator.pt: proves nothing was rewritten."""
    return {p.parent.name: (p.stat().st_ino, p.stat().st_mtime)
            for p in (results / "runs").glob("*/generator.pt")}


@pytest.mark.parametrize("damage", ["zero-byte", "missing"])
def test_a_lost_or_empty_store_is_rebuilt_from_the_run_dirs(grid_copy, damage):
    exp, res = grid_copy
    before, frame_before = _dir_state(res), load_frame(res)
    for p in res.glob("runs.sqlite*"):
        p.unlink()
    if damage == "zero-byte":
        (res / "runs.sqlite").touch()
    out = main(["status", str(exp), "--results-dir", str(res)])
    assert out == 0
    summary = _grid(exp, res)
    assert summary.trained == 0 and summary.adopted == 5 and summary.counts == {"done": 5}
    assert _dir_state(res) == before  # not retrained, not rewritten
    frame = load_frame(res)
    cols = ["key", "variant", "seed", "status", "train_time_s", "images_per_s"]
    assert frame[cols].equals(frame_before[cols])
    assert_complete_once(res, 5)


def test_a_corrupt_store_is_refused_with_the_rebuild_command_then_rebuilt(grid_copy, capsys):
    exp, res = grid_copy
    before = _dir_state(res)
    for p in res.glob("runs.sqlite-*"):
        p.unlink()
    (res / "runs.sqlite").write_bytes(os.urandom(8192))
    for cmd in (["grid", str(exp), "--no-report", "--executor", "inline"], ["status", str(exp)]):
        assert main([*cmd, "--results-dir", str(res)]) == 2
        err = capsys.readouterr().err
        assert "--rebuild-index" in err and "not a readable SQLite database" in err
    summary = _grid(exp, res, rebuild_index=True)
    assert summary.trained == 0 and summary.adopted == 5
    assert _dir_state(res) == before
    assert list(res.glob("runs.sqlite.corrupt-*"))  # the damaged file is kept, not deleted


def test_missing_dirs_and_checkpoints_are_reported_and_repaired(grid_copy, capsys):
    exp, res = grid_copy
    keys = sorted(rows(res))
    shutil.rmtree(res / "runs" / keys[0])
    (res / "runs" / keys[1] / "generator.pt").unlink()
    assert main(["status", str(exp), "--results-dir", str(res)]) == 0
    out = capsys.readouterr().out
    assert "missing: 1 finished run(s)" in out and "no checkpoint: 1" in out and "--repair" in out
    assert main(["grid", str(exp), "--results-dir", str(res), "--dry-run"]) == 0
    assert "missing: 1" in capsys.readouterr().out
    plain = _grid(exp, res)
    assert plain.trained == 0 and plain.missing == [keys[0]] and plain.no_checkpoint == [keys[1]]
    repaired = _grid(exp, res, repair=True)
    assert repaired.trained == 2 and repaired.counts == {"done": 5}
    assert {e["key"] for e in events(res, "repair")} == set(keys[:2])
    assert (res / "broken").is_dir() and len(list((res / "broken").iterdir())) == 1  # keys[1]'s old dir
    assert_complete_once(res, 5)


def test_a_run_killed_between_rename_and_commit_is_adopted(grid_copy):
    """The rename happened, the commit did not (SIGKILL): the next grid adopts the dir."""
    exp, res = grid_copy
    key = sorted(rows(res))[0]
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    with Store(res) as s:  # the row as a killed committer leaves it
        s.db.execute("UPDATE runs SET status='running', token='t', pid=?, heartbeat=0 WHERE key=?",
                     (dead, key))
    before = _dir_state(res)
    summary = _grid(exp, res)
    assert summary.trained == 0 and summary.adopted == 1
    assert _dir_state(res) == before and rows(res)[key]["status"] == "done"


def test_an_incomplete_leftover_in_runs_is_moved_aside_never_deleted(grid_copy):
    exp, res = grid_copy
    key = sorted(rows(res))[0]
    path = res / "runs" / key
    (path / "result.json").unlink()  # not a complete run any more
    with Store(res) as s:
        s.db.execute("UPDATE runs SET status='pending' WHERE key=?", (key,))
    summary = _grid(exp, res)
    assert summary.trained == 1
    kept = list((res / "broken").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith(key) and (kept[0] / "generator.pt").exists()
    assert rows(res)[key]["status"] == "done" and (path / "result.json").exists()


def test_the_thread_count_is_recorded_and_one_results_dir_keeps_one(grid_copy, capsys):
    exp, res = grid_copy
    for r in rows(res).values():
        assert r["threads"] == 1 and r["device"] == "cpu"
        run = json.loads((res / r["run_dir"] / "run.json").read_text())
        assert run["threads"] == 1 and run["device"] == "cpu"
    grown = experiment(exp.parent, "grown.toml", seeds="[0, 1]")
    code = main(["grid", str(grown), "--results-dir", str(res), "--executor", "inline",
                 "--threads", "2", "--no-report", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "with 1 thread(s)" in err and "would train with 2" in err
    assert "--threads 1" in err
    assert len(rows(res)) == 5  # refused before anything was written
    # Nothing to train: any thread count may read and re-plan.
    assert main(["grid", str(exp), "--results-dir", str(res), "--executor", "inline",
                 "--threads", "2", "--no-report", "--no-progress"]) == 0


def test_old_runs_without_a_recorded_thread_count_are_read_from_config_json(grid_copy, capsys):
    """The committed results predate the threads column: their config.json says 1."""
    exp, res = grid_copy
    with Store(res) as s:
        s.db.execute("UPDATE runs SET threads=NULL, device=NULL")
    for run in (res / "runs").glob("*/run.json"):
        doc = json.loads(run.read_text())
        doc.pop("threads"), doc.pop("device")
        run.write_text(json.dumps(doc))
    grown = experiment(exp.parent, "grown.toml", seeds="[0, 1]")
    assert main(["grid", str(grown), "--results-dir", str(res), "--executor", "inline",
                 "--threads", "2", "--no-report", "--no-progress"]) == 2
    assert "would train with 2" in capsys.readouterr().err


def test_committed_results_dry_run_reports_no_checkpoints_but_all_finished(capsys):
    repo = Path(__file__).resolve().parent.parent
    assert main(["grid", str(repo / "experiments/default.toml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "39 already finished, 0 to run" in out and "no checkpoint: 39" in out


def test_a_stale_commit_publishes_nothing(tmp_path):
    """The fence: a token that lost its claim never renames into runs/<key>."""
    with Store(tmp_path) as a, Store(tmp_path) as b:
        old = a.claim("k")
        a.db.execute("UPDATE runs SET heartbeat = 0, host = 'elsewhere' WHERE key = 'k'")
        new = b.claim("k")
        assert new and new != old
        published = []
        assert not a.commit("k", old, Status.DONE, lambda: published.append("old"))
        assert b.commit("k", new, Status.DONE, lambda: published.append("new"))
        assert published == ["new"]
        assert not a.release("k", old) and not a.fail("k", old, "late")
        assert b.get("k")["status"] == "done"


def test_read_only_store_never_writes(grid_copy):
    _, res = grid_copy
    for p in res.glob("runs.sqlite-*"):
        p.unlink()
    before = (res / "runs.sqlite").read_bytes()
    with Store(res, readonly=True) as s:
        assert len(s.planned_runs()) == 5
        with pytest.raises(sqlite3.OperationalError):
            s.db.execute("UPDATE runs SET status='pending'")
    assert (res / "runs.sqlite").read_bytes() == before
