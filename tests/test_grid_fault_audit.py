"""Findings of a black-box fault-injection audit, each checked here: a foreign SQLite schema
is a damaged index (named fix, --rebuild-index recovers), an unwritable runs/ stops the grid
before training, a rebuilt index keeps the committed wall times, an empty metrics.json is
not a finished run, a checkpoint past the budget is never resumed, and the write-failure
messages name what failed. In-process, inline executor, tiny fake-data runs."""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gridutil import experiment, rows  # noqa: E402

from ablate.cli import main  # noqa: E402
from ablate.grid import rundirs  # noqa: E402
from ablate.grid.driver import prepare, run_grid  # noqa: E402
from ablate.grid.executors import InlineExecutor  # noqa: E402
from ablate.grid.store import Store  # noqa: E402
from ablate.grid.worker import write_problem  # noqa: E402


def _grid(exp: Path, results: Path, **kw):
    return run_grid(prepare(exp, results, threads=1), InlineExecutor(threads=1),
                    progress=False, log=lambda m: None, **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("finished")
    exp = experiment(root)
    assert _grid(exp, root / "res").counts == {"done": 5}
    return exp, root / "res"


def _copy(finished, tmp_path) -> Path:
    dst = tmp_path / "res"
    shutil.copytree(finished[1], dst)
    return dst


@pytest.mark.parametrize("schema", [
    "create table runs(key text primary key, status text); create table plan(x)",
    "create table runs(key text primary key, status text)",
    "create table plan(x)",
])
def test_a_foreign_sqlite_schema_is_a_damaged_index_that_rebuild_index_recovers(finished, tmp_path, capsys, schema):
    res = _copy(finished, tmp_path)
    for f in res.glob("runs.sqlite*"):
        f.unlink()
    sqlite3.connect(res / "runs.sqlite").executescript(schema)
    exp = str(finished[0])
    assert main(["status", exp, "--results-dir", str(res)]) == 2
    assert "--rebuild-index" in capsys.readouterr().err
    assert main(["grid", exp, "--results-dir", str(res), "--no-progress", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "not a run index" in err and "--rebuild-index" in err and "Traceback" not in err
    assert main(["grid", exp, "--results-dir", str(res), "--no-progress", "--no-report", "--rebuild-index"]) == 0
    assert "trained 0 now" in capsys.readouterr().out
    assert len(list(res.glob("runs.sqlite.corrupt-*"))) == 1


def test_an_unwritable_runs_folder_stops_the_grid_before_any_training(finished, tmp_path, capsys, monkeypatch):
    res = _copy(finished, tmp_path)
    exp = experiment(tmp_path, seeds="[0, 1]")  # 5 more runs to train
    real = tempfile.mkdtemp

    def refuse(*a, dir=None, **k):  # as an immutable runs/ (chattr +i) does, even for root
        if dir is not None and Path(dir).name == "runs":
            raise PermissionError(errno.EPERM, "Operation not permitted", str(Path(dir) / ".ablate-probe-x"))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    assert main(["grid", str(exp), "--results-dir", str(res), "--no-progress", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "Operation not permitted" in err and "write permission" in err
    status = [r["status"] for r in rows(res).values()]
    assert status.count("done") == 5 and set(status) <= {"done", "pending"}  # none claimed
    assert not list((res / "tmp").iterdir())  # nothing trained


def test_a_rebuilt_index_keeps_the_committed_wall_times(finished, tmp_path):
    res = _copy(finished, tmp_path)
    before = {k: r["wall_time_s"] for k, r in rows(res).items()}
    for f in res.glob("runs.sqlite*"):
        f.unlink()
    assert _grid(finished[0], res).trained == 0
    after = {k: r["wall_time_s"] for k, r in rows(res).items()}
    assert after.keys() == before.keys()
    for k in before:
        assert after[k] == pytest.approx(before[k], abs=1e-9), k
        run = json.loads((res / "runs" / k / "run.json").read_text())
        assert after[k] == pytest.approx(run["attempt_wall_s"], abs=1e-9)  # none was resumed


def test_committed_wall_adds_the_resumed_attempts_and_falls_back_for_old_runs():
    assert rundirs.committed_wall({"attempt_wall_s": 2.5}, {"extra": {"resumed_wall_s": 7.25}}) == 9.75
    assert rundirs.committed_wall({}, {"wall_time_s": 4.0, "extra": {}}) == 4.0
    assert rundirs.committed_wall({"attempt_wall_s": "x"}, {"wall_time_s": 4.0}) == 4.0


@pytest.mark.parametrize("doc, lost", [
    ({"last": {"classifier": {"fid": 1.0}}}, False),
    ({"last": {"classifier": {"fid": 1.0}}, "best": {"step": 3}}, False),
    ({}, True), ({"last": {}}, True), ({"last": {"x": 1}, "best": None}, True), ([], True),
])
def test_a_metrics_file_that_parses_but_holds_no_scores_is_lost(tmp_path, doc, lost):
    d = tmp_path / "run"
    d.mkdir()
    for name, body in (("run.json", {"key": "k"}), ("result.json", {"status": "done"}),
                       ("config.json", {}), ("log.jsonl", None), ("metrics.json", doc)):
        (d / name).write_text("" if body is None else json.dumps(body))
    missing = rundirs.missing_files(d, evaluates=True)
    assert ("metrics.json" in missing) == lost, missing


def test_a_checkpoint_past_the_budget_or_with_a_bad_step_is_never_resumed(tmp_path, capsys):
    from ablate.training import checkpoint

    args = ["train", "--dataset", "fake", "--steps", "6", "--batch-size", "8", "--ngf", "8", "--ndf", "8",
            "--hacks", "none", "--device", "cpu", "--threads", "1", "--log-every", "2", "--checkpoint-every", "2",
            "--no-eval"]
    cut = tmp_path / "cut"
    real, calls = checkpoint.save, []

    def save(path, state):
        calls.append(1)
        real(path, state)
        if len(calls) == 1:
            raise KeyboardInterrupt

    checkpoint.save = save
    try:
        assert main([*args, "--out", str(cut)]) == 130
    finally:
        checkpoint.save = real
    state = checkpoint.load(cut / checkpoint.STATE_FILE)
    for step in (1_000_000, -1, "2"):
        checkpoint.save(cut / checkpoint.STATE_FILE, {**state, "step": step})
        assert not checkpoint.pick([cut / checkpoint.STATE_FILE], state["fingerprint"], state["about"], max_step=6)
    capsys.readouterr()
    checkpoint.save(cut / checkpoint.STATE_FILE, {**state, "step": 1_000_000})
    # --resume finds no checkpoint of this run: it says why and leaves the directory as it is
    assert main([*args, "--out", str(cut), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "past the run's 6 steps" in err and "remove it to train from step 0" in err
    assert checkpoint.step_of(cut / checkpoint.STATE_FILE) == 1_000_000 and not (cut / "generator.pt").exists()


@pytest.mark.parametrize("exc, words", [
    (OSError(errno.ENOSPC, "No space left on device", "/r/runs/x"), ["disk holding /r/runs/x is full"]),
    (OSError(errno.EROFS, "Read-only file system", "/cache/f"), ["/cache/f is on a read-only file system"]),
    (PermissionError(errno.EPERM, "Operation not permitted", "/r/runs"), ["/r/runs cannot be written", "lsattr"]),
    (sqlite3.OperationalError("attempt to write a readonly database"), ["runs.sqlite", "-wal/-shm", "permission"]),
])
def test_write_problems_name_what_failed_and_the_fix(tmp_path, exc, words):
    text = write_problem(tmp_path, exc)
    assert all(w in text for w in words), text
    full = getattr(exc, "errno", None) == errno.ENOSPC
    assert ("free disk space" in text) == full


def test_a_fifo_or_stray_file_in_tmp_neither_hangs_nor_is_touched(finished, tmp_path):
    import os

    res = _copy(finished, tmp_path)
    (res / "tmp").mkdir(exist_ok=True)
    os.mkfifo(res / "tmp" / "junk-fifo")
    (res / "tmp" / "stray.txt").write_text("x")
    with Store(res) as store:
        rundirs.sweep_tmp(store)  # used to block in open() on the FIFO
    assert (res / "tmp" / "junk-fifo").exists() and (res / "tmp" / "stray.txt").read_text() == "x"


def test_a_task_submitted_to_a_pool_a_worker_just_broke_starts_in_the_next_pool(monkeypatch):
    """A worker dies; before poll() sees it, the scheduler submits the next task. The broken
    pool refuses it (BrokenProcessPool, which used to end the grid with a traceback): it is
    held, the dead task is reported as died, and the held one then runs in a fresh pool."""
    import time
    from concurrent.futures import wait

    import executor_tasks
    from ablate.grid.executors import local

    monkeypatch.setattr(local, "_died", lambda t, error: [("died", t)])
    ex = local.LocalExecutor(workers=1, threads=1, device="cpu")
    try:
        ex.submit(executor_tasks.die, ["a"])
        wait(list(ex.futures), timeout=120)
        deadline = time.monotonic() + 60
        while not ex.pool._broken and time.monotonic() < deadline:
            time.sleep(0.05)
        ex.submit(executor_tasks.echo, ["b"])  # raised BrokenProcessPool here before
        assert ex.in_flight == 2
        out = []
        while ex.in_flight and time.monotonic() < deadline + 120:
            out += ex.poll(timeout=1)
        assert out == [("died", "a"), ("ran", "b")]
    finally:
        ex.close()


def test_one_more_ctrl_c_while_the_pool_winds_down_stops_the_wait_and_kills_the_workers():
    """After the grid stops, closing the pool waits up to ABANDON_GRACE_S for its workers.
    A Ctrl-C in that wait used to escape from the grid's `finally` (only "interrupted" was
    printed, no resume command); now it ends the wait: the workers are killed at once."""
    import multiprocessing
    import signal
    import time

    import executor_tasks
    from ablate.grid.executors import local

    ex = local.LocalExecutor(workers=1, threads=1, device="cpu")
    ex.submit(executor_tasks.deaf_sleeper, ["a"])
    deadline = time.monotonic() + 60
    while not multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2)  # the worker is in the task

    def ctrl_c(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, ctrl_c)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        t0 = time.monotonic()
        ex.close()  # raised KeyboardInterrupt here before
        took = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert took < local.ABANDON_GRACE_S / 2
    deadline = time.monotonic() + 10  # killed: gone as soon as the kernel reaps it
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()


def test_a_signal_during_a_commit_waits_for_it_whichever_thread_the_kernel_gave_it_to():
    """The run's commit and the report's swap hold Ctrl-C/SIGTERM/SIGUSR2 back
    (artefacts.signals_deferred). A blocked mask in the main thread did not: with another
    thread alive (a heartbeat, numpy's) the kernel may give the signal to it, and Python
    then runs the handler in the main thread at once, mid-commit."""
    import os
    import signal
    import threading
    import time

    from ablate.artefacts import signals_deferred

    order: list[str] = []
    stop = threading.Event()
    other = threading.Thread(target=lambda: stop.wait(30))
    other.start()
    old = signal.signal(signal.SIGUSR2, lambda n, f: order.append("handler"))
    try:
        with signals_deferred((signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)):
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.3)  # a handler let through would run here
            order.append("end of the block")
        assert order == ["end of the block", "handler"]
        assert signal.getsignal(signal.SIGUSR2) is not None and len(order) == 2
    finally:
        signal.signal(signal.SIGUSR2, old)
        stop.set()
        other.join()


class _SlowFinalizer:
    """An object whose ``__del__`` runs until ``handled`` is set: a signal sent meanwhile
    has its handler run inside the finalizer, where Python drops what the handler raises."""

    def __init__(self, handled):
        self.handled = handled

    def __del__(self):
        import time

        deadline = time.monotonic() + 30
        while not self.handled.is_set() and time.monotonic() < deadline:
            pass  # bytecodes: the handler runs here, in the finalizer


def _raised_within(seconds: float) -> None:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass  # the re-raised exception lands here


def _sigterm_inside_a_finalizer() -> None:
    """SIGTERM to this process while a finalizer runs; once its handler has run there (and
    Python dropped what it raised), 10 s for the signal sent again to land."""
    import os
    import signal
    import threading

    handled = threading.Event()
    real = signal.getsignal(signal.SIGTERM)

    def handler(n, f):
        handled.set()
        real(n, f)

    signal.signal(signal.SIGTERM, handler)
    x = _SlowFinalizer(handled)
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
    del x  # the handler runs in __del__ and raises there
    assert handled.is_set()
    _raised_within(10)


def test_a_sigterm_landing_in_a_finalizer_still_stops_the_command_with_143(monkeypatch, capsys):
    """Python runs a signal handler in whatever the main thread runs, finalizers included,
    and drops what it raises there ("Exception ignored"): the command went on and exited 0.
    artefacts.raise_dropped sends the signal again once the finalizer has returned."""
    import signal

    from ablate.cli import hacks

    def command(args):
        _sigterm_inside_a_finalizer()
        return 0  # reached only if the SIGTERM was lost

    monkeypatch.setattr(hacks, "run", command)
    hook = sys.unraisablehook
    assert main(["hacks"]) == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and sys.unraisablehook is hook


def test_only_the_kinds_given_and_only_until_undo_are_sent_again(monkeypatch):
    """Inside the window a dropped KeyboardInterrupt comes back as SIGINT; another kind, or
    one dropped after undo(), goes to the previous hook as before."""
    import signal

    from ablate.artefacts import raise_dropped

    class Other(BaseException):
        pass

    class Raises:
        def __init__(self, exc):
            self.exc = exc

        def __del__(self):
            raise self.exc

    seen, sent = [], []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(type(u.exc_value).__name__))
    old = signal.signal(signal.SIGINT, lambda n, f: sent.append(n))
    try:
        undo = raise_dropped({KeyboardInterrupt: signal.SIGINT})
        try:
            Raises(KeyboardInterrupt())
            _raised_within(0.5)
            Raises(Other())
            _raised_within(0.5)
        finally:
            undo()
        Raises(KeyboardInterrupt())
        _raised_within(0.5)
    finally:
        signal.signal(signal.SIGINT, old)
    assert sent == [signal.SIGINT] and seen == ["Other", "KeyboardInterrupt"]


def test_a_pool_workers_sigterm_landing_in_a_finalizer_still_abandons_its_run(tmp_path):
    """The same in a pool worker: its SIGTERM raises Abandoned, which must reach the run."""
    import subprocess

    code = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_grid_fault_audit import _sigterm_inside_a_finalizer
from ablate.grid import worker

worker.install_worker_signals(os.getpid())
worker.in_run()
try:
    _sigterm_inside_a_finalizer()
    print("lost")
except worker.Abandoned:
    print("abandoned")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "abandoned", (p.stdout, p.stderr)
    assert "Exception ignored" not in p.stderr


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(("runs.sqlite", ".ablate-report.lock"))}


def test_a_runs_index_damaged_inside_names_rebuild_index_which_then_recovers_it(finished, tmp_path, capsys):
    """Opening the index reads its header only: a page damaged further in surfaced as a
    sqlite3 traceback from `status` and from `grid --rebuild-index` itself (its thread
    check read the store before the rebuild moved it aside)."""
    res = _copy(finished, tmp_path)
    db = res / "runs.sqlite"
    size = db.stat().st_size
    assert size >= 3 * 4096
    with open(db, "r+b") as f:
        f.seek(size - 2 * 4096)
        f.write(b"\xff" * 4096)
    for args in (["status", str(res)], ["grid", str(finished[0]), "--results-dir", str(res), "--dry-run"]):
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2 and "--rebuild-index" in err and "Traceback" not in err, (args, err)
    before = _files(res / "runs")
    assert main(["grid", str(finished[0]), "--results-dir", str(res), "--rebuild-index", "--threads", "1",
                 "--no-report", "--no-progress"]) == 0
    assert {k: r["status"] for k, r in rows(res).items()} == {k: "done" for k in rows(finished[1])}
    assert _files(res / "runs") == before and list(res.glob("runs.sqlite.corrupt-*"))


def test_a_report_refuses_an_index_of_another_experiment_and_another_results_dir_as_out(
        finished, tmp_path, capsys):
    """A runs.sqlite copied from another experiment (same dataset, 10 steps) was reported
    under this one's name; `--out` pointing at another results directory replaced its
    report. Both now stop before writing anything."""
    exp10 = experiment(tmp_path, "ten.toml", steps=10)
    assert _grid(exp10, tmp_path / "ten").counts == {"done": 5}
    res = _copy(finished, tmp_path)
    shutil.copy(tmp_path / "ten" / "runs.sqlite", res / "runs.sqlite")
    before = _files(res)
    assert main(["report", str(res)]) == 2
    err = capsys.readouterr().err
    assert "indexes runs of another experiment" in err and "steps 10 vs 20" in err and "--rebuild-index" in err
    assert _files(res) == before
    other = _copy(finished, tmp_path / "b")
    before = _files(other)
    assert main(["report", str(tmp_path / "ten"), "--out", str(other)]) == 2
    assert "is another experiment's results directory" in capsys.readouterr().err
    assert _files(other) == before


@pytest.mark.parametrize("value", ["banana", "-5", "nan", "0"])
def test_a_junk_stale_limit_in_the_environment_is_a_usage_error(finished, monkeypatch, capsys, value):
    monkeypatch.setenv("ABLATE_STALE_AFTER_S", value)
    assert main(["status", str(finished[1])]) == 2
    err = capsys.readouterr().err
    assert f"ABLATE_STALE_AFTER_S={value!r} must be a positive number of seconds" in err


@pytest.mark.parametrize("where,words", [("runs/k/config.json", "cannot read"),
                                         (".ablate-stage-x/REPORT.md", "cannot write the report to")])
def test_a_report_names_an_unreadable_run_file_as_input_and_a_failed_write_as_output(
        finished, tmp_path, monkeypatch, capsys, where, words):
    """Every OSError while reporting was called a write error in the output folder, also
    for a run file this user may not read (then 'make the folder writable' misleads)."""
    import errno

    import ablate.report as report

    res = _copy(finished, tmp_path)

    def denied(results, out):
        raise PermissionError(errno.EACCES, "Permission denied", str(res / where))

    monkeypatch.setattr(report, "build_report", denied)
    assert main(["report", str(res)]) == 2
    assert words in capsys.readouterr().err
