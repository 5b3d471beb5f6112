"""A report is published whole (ablate.report.publish): a build that fails or is killed,
at any point, leaves either the old report or none, never REPORT.md beside another
build's tables; two builds on one folder take turns. Checked by failing every rename of
the swap in turn, by SIGKILLing a real `ablate report`, and by racing two of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


def _stages(out: Path) -> list[Path]:
    return sorted(out.glob(publish.STAGE_PREFIX + "*"))


@pytest.mark.parametrize("fail_at", range(6))
def test_a_swap_stopped_at_any_rename_leaves_the_old_report_or_none_and_a_rerun_restores_it(
        tmp_path, monkeypatch, fail_at):
    out = tmp_path / "out"
    _build(out, "old")
    (out / "tables" / "stale.txt").write_text("a file the new build no longer writes")
    real, calls = os.replace, []

    def replace(a, b):
        if len(calls) == fail_at:
            raise KeyboardInterrupt  # as a kill between two renames would stop it
        calls.append((a, b))
        real(a, b)

    monkeypatch.setattr(publish.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        _build(out, "new")
    monkeypatch.setattr(publish.os, "replace", real)
    assert _state(out) in ("old", None)
    assert _state(out) == "old" or fail_at >= 1  # the old report goes only once the swap began
    assert not _stages(out)  # an exception removes the staging folder
    _build(out, "new")
    assert _state(out) == "new" and not (out / "tables" / "stale.txt").exists() and not _stages(out)


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
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONHASHSEED": "0"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


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
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in p.stderr.read()
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
    assert "stopped while writing the report" in err and f"ablate report {res}" in err, err
    assert not (res / "REPORT.md").exists() and not _stages(res)
    assert subprocess.run([*ABLATE, "report", str(res)], capture_output=True, timeout=120).returncode == 0
    assert (res / "REPORT.md").is_file() and not _stages(res)


def _wait_for_stage(p: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 120
    while not _stages(out) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert p.poll() is None and _stages(out), "the report ended before the signal"
