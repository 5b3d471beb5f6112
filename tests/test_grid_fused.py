"""The grid's fused groups (``--fuse``): grouped, claimed and committed per run, resumable."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time

from gridutil import assert_complete_once, events, experiment, grid_cmd, rows, wait_for

from ablate.artefacts import read_json
from ablate.grid.driver import prepare, run_grid
from ablate.grid.executors import InlineExecutor
from ablate.grid.groups import make_tasks, run_group, run_task
from ablate.grid.store import Status, Store
from ablate.grid.frame import load_frame

SCORED = {"features = []": 'features = ["classifier"]\nn = 150\nkid_subsets = 5\n'
                           'kid_subset_size = 50\nval_every = 4\nval_n = 100'}


def _grid(tmp_path, **kw):
    exp = experiment(tmp_path, **kw)
    grid = prepare(exp, tmp_path / "res", device="cpu", threads=1)
    specs = tuple(dataclasses.replace(s, config=dataclasses.replace(s.config, threads=1))
                  for s in grid.specs)
    return dataclasses.replace(grid, specs=specs)


def test_groups_follow_the_fusable_key_and_the_cap(tmp_path):
    grid = _grid(tmp_path, seeds="[0, 1]")
    specs = list(grid.specs)
    assert make_tasks(specs, 1) == [(s,) for s in specs]
    tasks = make_tasks(specs, 3)
    assert sorted(s.key for t in tasks for s in t) == sorted(s.key for s in specs)
    assert max(map(len, tasks)) == 3
    # batch-norm changes the modules: runs with and without it never share a group.
    for t in tasks:
        assert len({"batch-norm" in s.config.hacks for s in t}) == 1


def test_fused_grid_trains_each_run_once_and_scores_it_like_a_lone_run(tmp_path):
    grid = _grid(tmp_path, steps=8, seeds="[0, 1]", replace=SCORED)
    results = grid.results_dir
    first = grid.specs[0]
    # One run finished before the grid (lone); another is held by a live process.
    assert run_task((first,))[0].status == Status.DONE
    token_first = read_json(results / "runs" / first.key / "run.json")["token"]
    held = next(s for s in grid.specs[1:] if "batch-norm" in s.config.hacks)
    with Store(results) as store:
        held_token = store.claim(held.key)
    group = [s for s in grid.specs if "batch-norm" in s.config.hacks]
    assert first in group
    outs = run_group(group)
    expect = {s.key: Status.HELD if s.key in (first.key, held.key) else Status.DONE for s in group}
    assert {o.key: o.status for o in outs} == expect
    with Store(results) as store:
        store.release(held.key, held_token, "test")
    summary = run_grid(grid, InlineExecutor(1), fuse=4, progress=False, log=lambda m: None)
    assert summary.counts == {"done": len(grid.specs)}
    assert_complete_once(results, len(grid.specs))
    assert read_json(results / "runs" / first.key / "run.json")["token"] == token_first
    fused = [read_json(results / "runs" / s.key / "run.json").get("fused") for s in grid.specs]
    assert sum(f is not None for f in fused) >= len(grid.specs) - 2
    for s, f in zip(grid.specs, fused):
        run = results / "runs" / s.key
        metrics = read_json(run / "metrics.json")
        assert metrics["last"]["classifier"]["fid"] > 0 and "best" in metrics
        if f is not None:
            assert read_json(run / "config.json")["fused"]["k"] == f["k"] >= 2
            assert s.key in f["members"] and metrics["provenance"]["evaluated_with"] == f["k"]
    frame = load_frame(results)
    assert len(frame) == len(grid.specs) and frame["last.classifier.fid"].gt(0).all()


def test_a_failing_group_trains_its_members_alone(tmp_path, monkeypatch):
    grid = _grid(tmp_path, steps=4, seeds="[0, 1, 2]", scope='["adam-dcgan"]')
    import ablate.grid.groups as groups

    def broken(*a, **k):
        raise RuntimeError("fused step exploded")

    monkeypatch.setattr(groups, "train_group", broken)
    outs = run_task(tuple(s for s in grid.specs if s.variant == "all-on"))
    assert [o.status for o in outs] == [Status.DONE] * 3
    for o in outs:
        assert "fused" not in read_json(grid.results_dir / "runs" / o.key / "run.json")


def test_sigkill_mid_group_then_resume(tmp_path):
    exp = experiment(tmp_path, steps=40, seeds="[0, 1, 2]", scope='["adam-dcgan"]')
    results = tmp_path / "res"
    proc = subprocess.Popen(grid_cmd(exp, results, "--fuse", "3", "--workers", "1", "--threads", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: sum(r["status"] == "running" for r in rows(results).values()) == 3,
             timeout=300, what="a group of three in flight", proc=proc)
    proc.send_signal(signal.SIGKILL)  # the driver; its worker dies with it (PDEATHSIG)
    proc.wait()
    proc.stdout.close()
    claimed = {e["key"] for e in events(results, "claim")}
    assert len(claimed) >= 3
    time.sleep(0.5)
    from ablate.cli import main  # the resume in this process (the same CLI, pool and flags)

    assert main(grid_cmd(exp, results, "--fuse", "3", "--workers", "1", "--threads", "1")[3:]) == 0
    assert_complete_once(results, 6)
    ks = [read_json(results / "runs" / k / "run.json")["fused"]["k"] for k in rows(results)]
    assert ks == [3] * 6  # the killed group was regrouped, not trained alone


def test_dry_run_shows_the_groups_and_a_bad_fuse_is_a_usage_error(tmp_path, capsys):
    from ablate.cli import main  # the CLI in this process: output and exit codes as a subprocess's

    exp = experiment(tmp_path, seeds="[0, 1]")
    assert main(["grid", str(exp), "--results-dir", str(tmp_path / "res"), "--dry-run",
                 "--fuse", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert "fused training: 4 task(s) for 10 run(s), groups of at most 3" in out.out, out.err
    assert "group of 3: all-on, -adam-dcgan, -label-smoothing (seeds 0)" in out.out
    main(["grid", str(exp), "--results-dir", str(tmp_path / "res"), "--dry-run", "--device", "cpu"])
    assert "fused training: off (CPU" in capsys.readouterr().out
    try:
        code = main(["grid", str(exp), "--results-dir", str(tmp_path / "res"), "--fuse", "0"])
    except SystemExit as exc:  # argparse-style usage errors exit rather than return
        code = exc.code
    assert code == 2 and "--fuse must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


def test_a_group_out_of_gpu_memory_is_split_down_to_lone_runs(tmp_path, monkeypatch):
    import torch

    import ablate.grid.groups as groups

    grid = _grid(tmp_path, steps=4, seeds="[0, 1, 2]", scope='["adam-dcgan"]')
    real = groups.train_group
    sizes = []

    def small_gpu(plans, *a, **k):  # only a group of one fits
        sizes.append(len(plans))
        if len(plans) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(plans, *a, **k)

    monkeypatch.setattr(groups, "train_group", small_gpu)
    outs = run_task(tuple(s for s in grid.specs if s.variant == "all-on"))
    assert [o.status for o in outs] == [Status.DONE] * 3 and sizes == [3, 1, 2, 1, 1]
    assert_complete_once(grid.results_dir, 3)
