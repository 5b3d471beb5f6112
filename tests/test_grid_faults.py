"""Faults on a real `ablate grid` process (issue 11): a stale owner that wakes up, a
worker that kills itself, Ctrl-C to the process group (once and twice), a driver killed
while its pool starts, a read-only results directory, a full disk. Each reproduces the
fault the issue reports and checks it now ends cleanly: nothing finished is lost or
trained twice, no traceback, and a rerun resumes."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gridutil import (  # noqa: E402
    assert_complete_once,
    events,
    experiment,
    grid_cmd,
    no_traceback,
    rows,
    run_cli,
    wait_for,
)

from ablate.cli import main  # noqa: E402
from ablate.grid.driver import prepare, run_grid  # noqa: E402
from ablate.grid.executors import InlineExecutor  # noqa: E402

POOL = ("--workers", "2", "--threads", "1")


def _popen(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})})


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_a_stale_owner_that_wakes_up_commits_nothing_and_deletes_nothing(tmp_path, monkeypatch):
    """Issue 11.1: kill -STOP a grid past the stale limit, let a second grid finish the
    run, kill -CONT the first: the committed run stays whole and is committed once."""
    exp = experiment(tmp_path, steps=60, scope='["batch-norm"]',
                     replace={'kind = "leave-one-out"': 'kind = "explicit"\n'
                              '[design.variants]\nbn = ["batch-norm"]'})
    res = tmp_path / "res"
    env = {"ABLATE_STALE_LOCAL_S": "3"}  # shortened stale limit (default 15 min)
    monkeypatch.setenv("ABLATE_STALE_LOCAL_S", "3")  # the same for the grids run in this process
    first = _popen(grid_cmd(exp, res, "--executor", "inline"), env)
    wait_for(lambda: any(r["status"] == "running" for r in rows(res).values())
             and (res / "tmp").is_dir() and any((res / "tmp").iterdir()),
             what="the first grid's claim", proc=first)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        time.sleep(4)  # past the stale limit: the heartbeat stopped with the process
        # The second owner: another process's grid (this one's, the CLI called in-process).
        assert main(grid_cmd(exp, res, "--executor", "inline")[3:]) == 0
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out = first.communicate(timeout=600)[0]
    assert no_traceback(out), out
    assert "taken over" in out  # the first grid says it lost the claim
    key = next(iter(rows(res)))
    run = json.loads((res / "runs" / key / "run.json").read_text())
    done = events(res, "done")
    assert len(done) == 1 and done[0]["token"] == run["token"]  # the second grid's commit
    files = {p.name for p in (res / "runs" / key).iterdir()}
    assert {"config.json", "generator.pt", "result.json", "run.json", "samples.png"} <= files
    assert main(grid_cmd(exp, res, "--executor", "inline")[3:]) == 0
    assert_complete_once(res, 1)  # the loser's tmp dir was swept


SUICIDE = '''
import os
import signal

from torch import nn

from ablate import Hack, register_hack


class _Dies(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        os.kill(os.getpid(), signal.SIGKILL)  # like the OOM killer


@register_hack
class Suicide(Hack):
    name = "test-suicide"
    source = "tests"
    on = "D's forward kills its own process"
    off = "nothing"

    def wrap_discriminator(self, d):
        return _Dies(d)
'''


def _plugin(tmp_path: Path) -> dict[str, str]:
    """A third-party hack package on PYTHONPATH, registered through its entry point."""
    site = tmp_path / "site"
    (site / "ablate_test_suicide-0.1.dist-info").mkdir(parents=True)
    (site / "ablate_test_suicide.py").write_text(SUICIDE)
    meta = site / "ablate_test_suicide-0.1.dist-info"
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: ablate-test-suicide\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text("[ablate.hacks]\ntest-suicide = ablate_test_suicide\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_a_worker_that_kills_itself_fails_its_run_after_three_deaths_and_the_rest_go_on(tmp_path):
    """Issue 11.2: a worker dying (OOM killer, segfault) used to make the grid retry forever."""
    env = _plugin(tmp_path)
    exp = experiment(tmp_path, scope='["batch-norm", "test-suicide"]', replace={
        'kind = "leave-one-out"': 'kind = "explicit"\n[design.variants]\n'
                                  'off = []\ndies = ["test-suicide"]\nbn = ["batch-norm"]'})
    res = tmp_path / "res"
    t0 = time.time()
    out = run_cli(*grid_cmd(exp, res, *POOL)[3:], env=env, timeout=900)
    assert out.returncode == 1, out.stdout + out.stderr  # a failed run: exit 1, no hang
    assert no_traceback(out.stderr), out.stderr
    by_variant = {r["variant"]: r for r in rows(res).values()}
    assert by_variant["dies"]["status"] == "failed"
    assert "died 3 times" in by_variant["dies"]["error"]
    assert by_variant["off"]["status"] == by_variant["bn"]["status"] == "done"
    deaths = [e["key"] for e in events(res, "died")]
    assert deaths == [by_variant["dies"]["key"]] * 3  # innocent co-workers are not blamed
    assert time.time() - t0 < 900


def _start_pool_grid(tmp_path: Path, steps: int, seeds: str) -> tuple[Path, Path, subprocess.Popen]:
    exp = experiment(tmp_path, steps=steps, seeds=seeds)
    res = tmp_path / "res"
    proc = _popen(grid_cmd(exp, res, *POOL))
    wait_for(lambda: sum(r["status"] == "running" for r in rows(res).values()) == 2,
             what="two runs in flight", proc=proc)
    return exp, res, proc


def test_ctrl_c_once_stops_claiming_and_lets_running_runs_finish(tmp_path):
    """Issue 11.4: SIGINT to the process group (what Ctrl-C sends)."""
    exp, res, proc = _start_pool_grid(tmp_path, steps=40, seeds="[0]")
    running = {k for k, r in rows(res).items() if r["status"] == "running"}
    t_sig = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=600)[0]
    stop_s = time.time() - t_sig
    assert proc.returncode == 130, out
    assert no_traceback(out) and "no new runs start" in out, out
    claims = events(res, "claim")  # (a claim already on its way may land a moment later)
    assert all(c["time"] <= t_sig + 2 for c in claims), "a run was claimed after Ctrl-C"
    st = rows(res)
    assert {k for k in running if st[k]["status"] == "done"} == running  # finished, kept
    assert not any(r["status"] == "running" for r in st.values())
    print(f"first Ctrl-C: exit after {stop_s:.1f} s (the running runs finished)")
    assert main(grid_cmd(exp, res, *POOL)[3:]) == 0  # the resume: same CLI and pool, in-process
    assert_complete_once(res, 5)


def test_ctrl_c_twice_abandons_running_runs_quickly_and_resume_completes(tmp_path):
    exp, res, proc = _start_pool_grid(tmp_path, steps=200, seeds="[0]")
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)
    t_sig = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    stop_s = time.time() - t_sig
    assert proc.returncode == 130, out
    assert no_traceback(out) and "abandoning" in out, out
    st = rows(res)
    assert not any(r["status"] == "running" for r in st.values())  # claims released
    assert len(events(res, "release")) == 2
    assert not (res / "tmp").exists() or not list((res / "tmp").iterdir())
    print(f"second Ctrl-C: exit after {stop_s:.1f} s (runs abandoned)")
    assert stop_s < 30
    assert main(grid_cmd(exp, res, *POOL)[3:]) == 0  # the resume: same CLI and pool, in-process
    assert_complete_once(res, 5)


def test_workers_do_not_outlive_a_driver_killed_while_the_pool_starts(tmp_path):
    """Issue 11.5: workers spawned just before the driver's SIGKILL must not claim runs."""
    exp = experiment(tmp_path, seeds="[0, 1]")
    res = tmp_path / "res"
    proc = _popen(grid_cmd(exp, res, *POOL))
    wait_for(lambda: len([c for c in _children(proc.pid) if "spawn_main" in
                          Path(f"/proc/{c}/cmdline").read_text(errors="replace")]) >= 2,
             timeout=300, what="the pool's workers", proc=proc)
    workers = [c for c in _children(proc.pid)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    t_kill = time.time()
    wait_for(lambda: not any(_alive(w) for w in workers), timeout=300, what="the workers to exit")
    assert not [e for e in events(res, "claim") if e["time"] > t_kill]
    assert not any(r["status"] == "running" and _alive(r["pid"] or -1) for r in rows(res).values())


def _unshare_works() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    # A real mount, not just the namespace: a container may grant unshare and deny mount
    # (AppArmor, seccomp), and the tests below would then fail rather than skip.
    with tempfile.TemporaryDirectory() as d:
        probe = subprocess.run(["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$1"', "sh", d],
                               capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _unshare_works(), reason="needs root and `unshare --mount` "
                                  "(a private mount namespace) to make read-only / tiny mounts")


@needs_mounts
def test_status_dry_run_and_load_frame_work_on_a_read_only_results_dir(tmp_path):
    """Issue 11.6: read-only commands needed write access (WAL switch, table creation)."""
    exp = experiment(tmp_path)
    res = tmp_path / "res"
    run_grid(prepare(exp, res, threads=1), InlineExecutor(threads=1), progress=False,
             log=lambda m: None)
    py = sys.executable
    # The four commands in one interpreter (one torch import, not four), each as its own
    # CLI call on the read-only mount: status and --dry-run must exit 0 (as `set -e` had
    # it), load_frame must read the store, and a grid must refuse with exit 2.
    script = textwrap.dedent(f"""
        set -e
        mount --bind {res} {res}
        mount -o remount,bind,ro {res}
        touch {res}/probe 2>/dev/null && exit 9
        {py} - <<'PY'
        import sys
        from ablate.cli import main
        from ablate.grid.store import load_frame
        for argv in (["status", "{exp}", "--results-dir", "{res}"],
                     ["grid", "{exp}", "--results-dir", "{res}", "--dry-run"]):
            code = main(argv)
            if code:
                sys.exit(code)
        print("frame rows", len(load_frame("{res}")), flush=True)
        code = main(["grid", "{exp}", "--results-dir", "{res}", "--executor", "inline", "--no-report"])
        if code:
            print(f"grid={{code}}")
        PY
    """)
    out = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5/5 runs finished" in out.stdout and "5 already finished, 0 to run" in out.stdout
    assert "frame rows 5" in out.stdout and no_traceback(out.stderr)
    assert "grid=2" in out.stdout and "is read-only" in out.stderr  # a writer says so, exit 2


@needs_mounts
def test_a_full_disk_stops_the_grid_with_a_message_and_resume_works(tmp_path):
    """Issue 11.9: 'database or disk is full' aborted the grid with a traceback."""
    exp = experiment(tmp_path, seeds="[0, 1]")
    res = tmp_path / "res"
    res.mkdir()
    cmd = shlex.join(grid_cmd(exp, res, *POOL))
    script = textwrap.dedent(f"""
        mount -t tmpfs -o size=600k tmpfs {res} || exit 97
        {cmd} > {tmp_path}/full.log 2>&1; echo "first=$?" >> {tmp_path}/codes
        mount -o remount,size=64m {res}
        {cmd} > {tmp_path}/resume.log 2>&1; echo "second=$?" >> {tmp_path}/codes
        cp -a {res} {tmp_path}/copy
    """)
    assert subprocess.run(["unshare", "--mount", "sh", "-c", script], timeout=900).returncode != 97, "mount failed"
    codes = (tmp_path / "codes").read_text()
    full = (tmp_path / "full.log").read_text()
    assert "first=1" in codes, full
    assert no_traceback(full) and "the grid stopped" in full and "resume" in full, full
    assert "second=0" in codes, (tmp_path / "resume.log").read_text()
    assert_complete_once(tmp_path / "copy", 10)
