"""The grid survives SIGKILL, shares a results dir with a second grid, and runs on Ray.

These run `ablate grid` as real processes (spawned worker pools included).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablate.grid.store import Store, load_frame

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "experiments/smoke.toml"
ABLATE = [sys.executable, "-c", "import sys; from ablate.cli import main; sys.exit(main())"]
EXPECTED_FILES = {"config.json", "generator.pt", "result.json", "run.json", "log.jsonl", "samples.png"}


def _experiment(tmp_path: Path, steps: int = 40) -> Path:
    """smoke.toml with a longer budget, so a kill lands in the middle of runs."""
    text = SMOKE.read_text().replace("steps = 20", f"steps = {steps}")
    path = tmp_path / "smoke.toml"
    path.write_text(text)
    return path


def _grid(exp: Path, results: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*ABLATE, "grid", str(exp), "--results-dir", str(results),
                             "--no-progress", "--no-report", "--workers", "2", "--threads", "1",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _statuses(results: Path) -> dict[str, str]:
    db = results / "runs.sqlite"
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return dict(con.execute("SELECT key, status FROM runs").fetchall())
        finally:
            con.close()
    except sqlite3.Error:
        return {}


def _assert_complete_and_once(results: Path, n_keys: int) -> None:
    store = Store(results)
    try:
        runs = store.runs()
        done_events = store.events("done")
    finally:
        store.close()
    assert len(runs) == n_keys and {r["status"] for r in runs} == {"done"}
    # Every key was committed exactly once...
    counts: dict[str, int] = {}
    for e in done_events:
        counts[e["key"]] = counts.get(e["key"], 0) + 1
    assert counts == {r["key"]: 1 for r in runs}
    # ...into one complete run directory, and no partial artefacts remain.
    assert sorted(p.name for p in (results / "runs").iterdir()) == sorted(r["key"] for r in runs)
    for r in runs:
        files = {p.name for p in (results / r["run_dir"]).iterdir()}
        assert EXPECTED_FILES <= files, (r["key"], files)
        assert not [f for f in files if f.endswith(".tmp")]
    assert not list((results / "tmp").iterdir()) if (results / "tmp").exists() else True


def _main(exp: Path, results: Path, capsys, *extra: str) -> tuple[int, str]:
    """The same `ablate grid` command as :func:`_grid`, run in this process (its own pool of
    spawned workers): the exit code and what it printed."""
    from ablate.cli import main

    capsys.readouterr()
    code = main(["grid", str(exp), "--results-dir", str(results), "--no-progress", "--no-report",
                 "--workers", "2", "--threads", "1", *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_sigkill_mid_run_then_resume(tmp_path, capsys):
    exp, results = _experiment(tmp_path), tmp_path / "res"
    proc = _grid(exp, results)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until some runs are done and others in flight
        st = _statuses(results)
        if "done" in st.values() and "running" in st.values():
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    else:
        pytest.fail("the grid never had a run in flight")
    done_before = {k for k, s in _statuses(results).items() if s == "done"}
    proc.send_signal(signal.SIGKILL)  # the driver only: its workers die with it (PDEATHSIG)
    proc.wait()
    proc.stdout.close()
    st = _statuses(results)
    assert "running" in st.values() and len(done_before) < 10  # killed mid-grid, mid-run
    time.sleep(0.5)
    code, out = _main(exp, results, capsys)  # the resume (the killed driver was a real process)
    assert code == 0, out
    assert f"{len(done_before)} already finished" in out or "already finished" in out
    _assert_complete_and_once(results, 10)
    # Runs finished before the kill were reused, not retrained.
    store = Store(results)
    try:
        claims = [e["key"] for e in store.events("claim")]
    finally:
        store.close()
    assert all(claims.count(k) == 1 for k in done_before)
    frame = load_frame(results)
    assert len(frame) == 10 and (frame["status"] == "done").all()


def test_two_grids_on_one_results_dir_never_train_a_key_twice(tmp_path, capsys):
    exp, results = _experiment(tmp_path, steps=30), tmp_path / "res"
    a = _grid(exp, results, "--workers", "1")
    time.sleep(1.0)  # let the first create the store; the second then joins mid-flight
    b = _grid(exp, results, "--workers", "1")
    out_a = a.communicate(timeout=400)[0]
    out_b = b.communicate(timeout=400)[0]
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    _assert_complete_and_once(results, 10)
    store = Store(results)
    try:
        claims = store.events("claim")
    finally:
        store.close()
    assert len(claims) == 10  # no key was even started twice
    assert len({c["pid"] for c in claims}) >= 2  # both grids did work
    # A third invocation has nothing to do.
    code, out_c = _main(exp, results, capsys)
    assert code == 0 and "trained 0 now, reused 10" in out_c, out_c


@pytest.mark.skipif(os.environ.get("ABLATE_TEST_RAY") == "0", reason="ABLATE_TEST_RAY=0")
def test_ray_executor_runs_smoke(tmp_path):
    """Runs where Ray is installed (`make test-ray` installs it; ~15 s with a local Ray)."""
    pytest.importorskip("ray", reason="Ray is not installed: make test-executors installs ablate[ray]")
    results = tmp_path / "res"
    proc = subprocess.run([*ABLATE, "grid", str(SMOKE), "--results-dir", str(results),
                           "--executor", "ray", "--workers", "2", "--threads", "1",
                           "--no-progress", "--no-report"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "executor: ray" in proc.stderr
    _assert_complete_and_once(results, 10)


def test_slurm_executor_through_submitit_local_mode(tmp_path):
    """The SLURM executor's code path, with submitit's local cluster standing in for SLURM."""
    pytest.importorskip("submitit", reason="submitit is not installed: pip install -e .[test] (or make test)")
    text = SMOKE.read_text().replace("seeds = [0, 1]", "seeds = [0]").replace(
        'scope = ["batch-norm", "adam-dcgan", "label-smoothing"]', 'scope = ["batch-norm"]')
    exp = tmp_path / "tiny.toml"
    exp.write_text(text)
    results = tmp_path / "res"
    proc = subprocess.run([*ABLATE, "grid", str(exp), "--results-dir", str(results),
                           "--executor", "slurm", "--address", "local", "--threads", "1",
                           "--no-progress", "--no-report"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_complete_and_once(results, 2)
    store = Store(results)
    try:  # each run executed in its own submitit job process
        assert len({e["pid"] for e in store.events("done")}) == 2
    finally:
        store.close()
    assert any((results / "slurm").iterdir())  # submitit's job logs


def test_a_preempted_slurm_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    """Issue 17.1: SLURM warns a job with SIGUSR2 before preempting it (submitit's
    ``job._interrupt()`` sends the same in local mode). The job training a run gets it at
    step 7 (a plugin waits there): submitit calls the task's checkpoint hook, which
    releases the claim and keeps the step-5 checkpoint; the job is requeued, claims the run
    again, resumes from step 5 and ends bit for bit as the run uninterrupted."""
    pytest.importorskip("submitit", reason="submitit is not installed: pip install -e .[test] (or make test)")
    sys.path.insert(0, str(Path(__file__).parent))
    from gridutil import grid_cmd, rows, run_cli, wait_for
    from test_resume import _grid_exp, _killer_env, assert_same_run

    ref = tmp_path / "ref"
    (ref / "x").mkdir(parents=True)
    out = run_cli(*grid_cmd(_grid_exp(ref / "x"), ref / "res", "--executor", "inline",
                            "--threads", "1")[3:], env=_killer_env(ref / "x", ""))
    assert out.returncode == 0, out.stderr
    res = tmp_path / "res"
    env = {**os.environ, **_killer_env(tmp_path, "7"), "ABLATE_TEST_KILL_MODE": "sleep"}
    proc = subprocess.Popen(grid_cmd(_grid_exp(tmp_path), res, "--executor", "slurm",
                                     "--address", "local", "--threads", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    marker = Path(env["ABLATE_TEST_KILL_MARKER"])
    wait_for(marker.exists, what="the job at step 7", proc=proc)
    (key, row), = rows(res).items()
    os.kill(row["pid"], signal.SIGUSR2)  # what job._interrupt() sends
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output
    (key, row), = rows(res).items()
    assert row["status"] == "done" and row["attempts"] == 2, row
    store = Store(res)
    try:
        assert [e["detail"] for e in store.events("release")] == ["preempted"]
        assert len({e["pid"] for e in store.events("claim")}) == 2  # the requeued job
    finally:
        store.close()
    run = (res / "runs" / key / "run.json").read_text()
    assert '"resumed_from": [\n    5\n  ]' in run
    assert_same_run(ref / "res" / "runs" / key, res / "runs" / key, metrics=True)
