"""A report is published whole (ablate.report.publish): a build that fails or is stopped
leaves the old report, whole, never REPORT.md beside another build's tables; two builds
on one folder take turns; files the build did not write are kept. Checked by failing
every rename of the swap in turn, a real SIGTERM mid-swap, SIGKILL and SIGTERM to a real
`ablate report` mid-build, two racing, and the grid's final report stopped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_synthetic import make_results  # noqa: E402

from ablate.report import publish  # noqa: E402

OUTPUTS = ("REPORT.md", "tables", "figures")


def _build(out: Path, tag: str) -> None:
    """A fake report build: every output says which build wrote it."""
    with publish.staged(out, OUTPUTS) as stage:
        for name in ("tables", "figures"):
            (stage.path / name).mkdir()
            (stage.path / name / "a.txt").write_text(tag)
        (stage.path / "REPORT.md").write_text(tag)


def _state(out: Path) -> str | None:
    """The build the folder shows (None: no REPORT.md); fails on a mixed folder."""
    if not (out / "REPORT.md").exists():
        return None
    tags = {(out / "REPORT.md").read_text()} | {(out / n / "a.txt").read_text() for n in ("tables", "figures")
                                                if (out / n / "a.txt").exists()}
    assert len(tags) == 1, f"REPORT.md beside another build's files: {tags}"
    assert all((out / n / "a.txt").exists() for n in ("tables", "figures")), "REPORT.md without its files"
    return tags.pop()


def _snapshot_all(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != publish.LOCK}


def _stages(out: Path) -> list[Path]:
    return sorted(out.glob(publish.STAGE_PREFIX + "*"))


@pytest.mark.parametrize("fail_at", range(6))
def test_a_swap_that_fails_at_any_rename_puts_the_old_report_back_whole(tmp_path, monkeypatch, fail_at):
    out = tmp_path / "out"
    _build(out, "old")
    before = _snapshot_all(out)
    real, calls = os.replace, []

    def replace(a, b):
        calls.append((a, b))
        if len(calls) == fail_at + 1:  # this rename only (the roll-back's go through)
            raise OSError(16, "Device or resource busy")  # EBUSY: a mount point, say
        real(a, b)

    monkeypatch.setattr(publish.os, "replace", replace)
    with pytest.raises(OSError):
        _build(out, "new")
    monkeypatch.setattr(publish.os, "replace", real)
    assert _state(out) == "old" and _snapshot_all(out) == before and not _stages(out)
    _build(out, "new")
    assert _state(out) == "new" and not _stages(out)


def test_a_real_sigterm_mid_swap_waits_for_the_swap_with_other_threads_running(tmp_path, monkeypatch):
    """The kernel may give SIGTERM to any thread (numpy's, torch's); Python runs the handler
    in the main thread at its next bytecode. It must not land between two renames."""
    import threading

    out = tmp_path / "out"
    _build(out, "old")
    stop = threading.Event()
    busy = threading.Thread(target=lambda: stop.wait(30))  # another thread alive, as in a report
    busy.start()
    real, calls = os.replace, []

    def replace(a, b):
        calls.append((a, b))
        if len(calls) == 2:  # REPORT.md is out, tables/ about to go
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler would run here, mid-swap
        real(a, b)

    class Terminated(Exception):
        pass

    def handler(signum, frame):
        raise Terminated

    monkeypatch.setattr(publish.os, "replace", replace)
    old = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(Terminated):  # delivered, once the swap is done
            _build(out, "new")
    finally:
        signal.signal(signal.SIGTERM, old)
        stop.set()
        busy.join()
    assert len(calls) == 6 and _state(out) == "new" and not _stages(out)


def test_files_the_build_did_not_write_are_carried_over_and_links_or_files_in_the_way_refused(tmp_path):
    from ablate.errors import ConfigError

    out = tmp_path / "paper"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "my-figure.pdf").write_text("a user's own figure")
    (out / "figures" / "a.txt").write_text("an output the new build rewrites")
    _build(out, "new")
    assert (out / "figures" / "my-figure.pdf").read_text() == "a user's own figure" and _state(out) == "new"
    (tmp_path / "elsewhere").mkdir()
    shutil.rmtree(out / "tables")
    (out / "tables").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="is a link"):
        _build(out, "newer")
    (out / "tables").unlink()
    (out / "tables").write_text("a file")
    with pytest.raises(ConfigError, match="is a file"):
        _build(out, "newer")
    (out / "tables").unlink()
    (out / "REPORT.md").unlink()
    (out / "REPORT.md").mkdir()
    (out / "REPORT.md" / "notes.txt").write_text("a user's folder")
    with pytest.raises(ConfigError, match="is a folder"):
        _build(out, "newer")
    assert (out / "REPORT.md" / "notes.txt").read_text() == "a user's folder"


def test_a_build_that_raises_leaves_the_old_report_untouched(tmp_path):
    out = tmp_path / "out"
    _build(out, "old")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError), publish.staged(out, OUTPUTS) as stage:
        (stage.path / "REPORT.md").write_text("half")
        raise RuntimeError("a figure's backend failed")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before and not _stages(out)


def test_links_point_where_the_report_will_live(tmp_path):
    out = tmp_path / "results" / "exp"
    with publish.staged(out, OUTPUTS) as stage:
        assert stage.link(stage.path / "tables" / "effects.md") == "tables/effects.md"
        assert stage.link(out / "anchor.json") == "anchor.json"  # outside the build: as it is
        assert stage.link(tmp_path / "results" / "other" / "REPORT.md") == "../other/REPORT.md"


# --------------------------------------------------------------------------------------
# Real `ablate report` processes on one output folder
# --------------------------------------------------------------------------------------
def _ablate(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ablate", "report", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for name in OUTPUTS for p in
            ([out / name] if name.endswith(".md") else sorted((out / name).rglob("*"))) if p.is_file()}


@pytest.fixture(scope="module")
def two_reports(tmp_path_factory):
    """Two results directories with different numbers, and each one's report as it reads in
    one shared output folder (built there in turn)."""
    base = tmp_path_factory.mktemp("publish")
    a = make_results(base / "a", artefacts=False, rng_seed=1)
    b = make_results(base / "b", artefacts=False, rng_seed=2)
    out = base / "out"
    refs = {}
    for name, root in (("b", b), ("a", a)):
        p = _ablate(str(root), "--out", str(out))
        assert p.wait(120) == 0, p.stderr.read()
        refs[name] = _snapshot(out)
    assert refs["a"]["REPORT.md"] != refs["b"]["REPORT.md"]
    return a, b, out, refs


def test_a_report_killed_mid_build_leaves_the_old_one_whole_and_the_next_sweeps_its_folder(two_reports):
    a, b, out, refs = two_reports
    assert _snapshot(out) == refs["a"]
    p = _ablate(str(b), "--out", str(out))
    deadline = time.monotonic() + 60  # killed once its tables are written, before its figures
    while not any((s / "tables").is_dir() for s in _stages(out)) and p.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    assert p.poll() is None, "the build ended before it could be killed"
    p.kill()
    p.wait()
    assert _stages(out), "the killed build's staging folder"
    assert _snapshot(out) == refs["a"]  # the old report, byte for byte
    q = _ablate(str(b), "--out", str(out))
    assert q.wait(120) == 0, q.stderr.read()
    assert _snapshot(out) == refs["b"] and not _stages(out)


def test_two_reports_racing_on_one_folder_leave_one_of_them_whole(two_reports):
    a, b, out, refs = two_reports
    procs = [_ablate(str(r), "--out", str(out)) for r in (a, b)]
    assert [p.wait(180) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    assert _snapshot(out) in (refs["a"], refs["b"]) and not _stages(out)


def test_sigterm_mid_report_cleans_up_says_so_and_exits_143(two_reports):
    a, b, out, refs = two_reports
    q = _ablate(str(a), "--out", str(out))  # the folder as the fixture left it: a's report
    assert q.wait(120) == 0
    p = _ablate(str(b), "--out", str(out))
    _wait_for_stage(p, out)
    assert p.poll() is None, "the build ended before it could be stopped"  # else no signal is sent
    p.send_signal(signal.SIGTERM)
    code, err = p.wait(60), p.stderr.read()
    assert code == 128 + signal.SIGTERM and "stopped by SIGTERM" in err, (code, err)
    assert _snapshot(out) == refs["a"] and not _stages(out)  # the handler ran the clean-up


def test_sigterm_during_the_grids_final_report_says_where_things_stand(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from gridutil import ABLATE, experiment, grid_cmd

    exp = experiment(tmp_path, steps=4, seeds="[0]", scope='["batch-norm"]')
    res = tmp_path / "results"
    first = subprocess.run(grid_cmd(exp, res, "--threads", "1"), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    p = subprocess.Popen([*ABLATE, "grid", str(exp), "--results-dir", str(res), "--no-progress", "--threads", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_stage(p, res)
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 128 + signal.SIGTERM
    err = p.stderr.read()
    assert "stopped while writing the report" in err and f"`ablate report {res}`" in err, err
    assert not (res / "REPORT.md").exists() and not _stages(res)
    assert subprocess.run([*ABLATE, "report", str(res)], capture_output=True, timeout=120).returncode == 0
    assert (res / "REPORT.md").is_file() and not _stages(res)


def _wait_for_stage(p: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 120
    while not _stages(out) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert p.poll() is None and _stages(out), "the report ended before the signal"


class _Stop(Exception):
    """What the SIGTERM handler of the two tests below raises (the CLI's raises Terminated)."""


@contextlib.contextmanager
def _sigterm_inside(factory: str, folder: Path):
    """``tempfile.<factory>`` (mkdtemp, mkstemp) raises SIGTERM once it has created its entry
    in ``folder`` (not pytest's own temp files), before it returns; the handler raises
    _Stop. The patch is undone before the handler, so no later call meets the default one."""
    real = getattr(tempfile, factory)

    def then_signal(*args, **kwargs):
        out = real(*args, **kwargs)
        if Path(kwargs.get("dir", "")) == folder:
            signal.raise_signal(signal.SIGTERM)  # delivered before it returns, unless deferred
        return out

    def stop(_n, _f):
        raise _Stop

    old = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tempfile, factory, then_signal)
            yield
    finally:
        signal.signal(signal.SIGTERM, old)


def test_a_signal_right_after_the_staging_folder_is_made_still_removes_it(tmp_path):
    """The SIGTERM of the test above can land between mkdtemp's mkdir and the line that
    keeps its name (it did once, on a loaded machine): here it lands there every time, and
    the handler's exception still finds the folder and removes it."""
    with _sigterm_inside("mkdtemp", tmp_path), pytest.raises(_Stop):
        with publish.staged(tmp_path, ("REPORT.md", "tables")) as stage:
            (stage.path / "REPORT.md").write_text("never published\n")
    assert not list(tmp_path.glob(publish.STAGE_PREFIX + "*")) and not (tmp_path / "REPORT.md").exists()


def test_a_signal_right_after_an_atomic_writes_temp_file_is_made_still_removes_it(tmp_path):
    """write_atomic's temp file, like the staging folder: a SIGTERM landing between mkstemp
    and the line that keeps its name leaves neither the temp file nor a half-written target."""
    from ablate import artefacts

    with _sigterm_inside("mkstemp", tmp_path), pytest.raises(_Stop):
        artefacts.write_json(tmp_path / "metrics.json", {"fid": 1.0})
    assert list(tmp_path.iterdir()) == []
    artefacts.write_json(tmp_path / "metrics.json", {"fid": 1.0})  # and it still writes
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
