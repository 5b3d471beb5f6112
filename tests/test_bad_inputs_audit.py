"""Bad inputs found by an audit of the newer features (axes, reuse, [hacks.params], --set,
compare/report/anchor flags, damaged results directories): each exits 2 with a message
naming the problem and the fix, before anything is written, or (a damaged finished run) is
reported and repaired without losing what it held. In-process through ``ablate.cli.main``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gridutil import experiment, no_traceback, rows  # noqa: E402

from ablate.cli import main  # noqa: E402

GRID_FLAGS = ["--executor", "inline", "--no-report", "--no-progress", "--threads", "1"]
SCOPE = 'scope = ["batch-norm", "adam-dcgan", "label-smoothing"]'


def _explicit(variants: str) -> dict[str, str]:
    return {'kind = "leave-one-out"': 'kind = "explicit"'}, f"\n[design.variants]\n{variants}\n"


# (what, replacements in smoke.toml, text appended, words the message must hold)
GRID_CASES = [
    # The design's errors were prefixed with the repr of the whole Experiment object.
    ("explicit variant with an unknown hack", *_explicit('x = ["foo"]'),
     ["exp.toml: [design.variants].x: hack 'foo' is not in scope"]),
    ("fractional factorial resolution 1", {'kind = "leave-one-out"':
                                          'kind = "fractional-factorial"\nresolution = 1'}, "",
     ["exp.toml: [design].resolution = 1", "plackett-burman"]),
    # A reuse directory that is not there silently trained every run again.
    ("reuse a missing directory", {"seeds = [0]": 'seeds = [0]\nreuse = ["no/such/results"]'}, "",
     ["exp.toml: reuse: no/such/results is not a directory", "remove it from reuse"]),
    ("reuse a file", {"seeds = [0]": 'seeds = [0]\nreuse = ["afile"]'}, "",
     ["reuse: afile is not a directory"]),
    ("reuse a directory twice", {"seeds = [0]": 'seeds = [0]\nreuse = [".", "."]'}, "",
     ["reuse lists a results directory twice"]),
    # 100 levels x 5 variants x 1000 seeds: the dry run planned for a quarter of an hour.
    # width sets ngf = ndf: with ngf != ndf no level had the file's own runs.
    ("width axis over ngf != ndf", {"ndf = 8": "ndf = 16"}, "\n[axes]\nwidth = [8, 16]\n",
     ["[axes].width sets ngf = ndf, but [model] has ngf = 8, ndf = 16"]),
    # A key in the wrong table: the message says where it belongs.
    ("ngf in [budget]", {"steps = 20": "steps = 20\nngf = 16"}, "",
     ["[budget]: unknown key 'ngf' (ngf belongs in [model])"]),
    ("seed in [budget]", {"steps = 20": "steps = 20\nseed = 3"}, "",
     ["[budget]: unknown key 'seed' (seed belongs in seeds = [...] at the top)"]),
    ("steps at the top", {"seeds = [0]": "seeds = [0]\nsteps = 5"}, "",
     ["experiment: unknown key 'steps' (steps belongs in [budget])"]),
    ("half a million runs", {"seeds = [0]": "seeds = 1000"},
     "\n[axes]\nlr_scale = [" + ", ".join(str(i + 1) for i in range(100)) + "]\n",
     ["500 variants x 1,000 seeds = 500,000 runs; at most 100,000"]),
    # Parameters of a hack no variant enables did nothing, without a word.
    ("[hacks.params] of a hack out of scope", {}, "\n[hacks.params]\nnoisy-labels = { p = 0.1 }\n",
     ["[hacks.params].noisy-labels", "not in scope", "add it to [hacks].scope"]),
    # An axis over a parameter of a hack no variant enables planned the same runs per level.
    ("axis over a hack no variant enables",
     *_explicit('a = ["batch-norm"]\nb = []\n[axes]\nlabel-smoothing.one_sided = [false, true]'),
     ["[axes].label-smoothing.one_sided: no variant enables 'label-smoothing'", "drop the axis"]),
    ("blank variant name", *_explicit('"" = ["batch-norm"]\nb = []'),
     ["[design.variants]: a variant name is blank"]),
    # Keyed as given: a repeated feature net gave every run a new key (all retrained).
    ("a feature net listed twice", {"features = []": 'features = ["classifier", "classifier"]'}, "",
     ["[evaluation].features lists a feature net twice"]),
    # A top-level key written at the end of the file lands in the last table (TOML).
    ("reuse below the last table", {}, '\nreuse = ["results/x"]\n',
     ["unknown key 'reuse' (reuse is a top-level key", "move it above the first [table]"]),
]


@pytest.mark.parametrize("case", GRID_CASES, ids=[c[0] for c in GRID_CASES])
def test_bad_experiments_exit_2_naming_the_file_and_key(tmp_path, capsys, monkeypatch, case):
    what, replace, extra, words = case
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    exp = experiment(tmp_path, replace=replace, extra=extra)
    for flags in (["--dry-run"], GRID_FLAGS):
        assert main(["grid", str(exp), "--results-dir", str(tmp_path / "res"), *flags]) == 2, what
        err = capsys.readouterr().err
        assert err.startswith("ablate: error: ") and no_traceback(err), err
        assert "Experiment(" not in err, err
        for w in words:
            assert w in err, (what, w, err)
    assert not (tmp_path / "res").exists()


def test_a_parameter_of_a_hack_in_scope_is_still_fine(tmp_path, capsys):
    exp = experiment(tmp_path, extra="\n[hacks.params]\nlabel-smoothing = { one_sided = true }\n")
    assert main(["grid", str(exp), "--dry-run"]) == 0


TRAIN = ["train", "--dataset", "fake", "--steps", "2", "--batch-size", "8", "--ngf", "8",
         "--ndf", "8", "--device", "cpu", "--no-eval"]


@pytest.mark.parametrize("flags, words", [
    (["--hacks", "all", "--off", "noisy-labels", "--set", "noisy-labels.p=0.1"],
     ["--set noisy-labels.p=0.1", "'noisy-labels' is not enabled", "--off noisy-labels",
      "drop the --set"]),
    (["--hacks", "batch-norm", "--set", "noisy-labels.p=0.1"], ["not enabled (--hacks batch-norm)"]),
    # a bad name or value of a disabled hack's parameter still says what is wrong with it
    (["--hacks", "batch-norm", "--set", "noisy-labels.q=0.1"], ["has no parameter 'q'"]),
    (["--set", "noisy-labels.p=0.1", "--set", "noisy-labels.p=0.2"],
     ["--set noisy-labels.p is given twice (0.1 and 0.2)"]),
], ids=["off", "not selected", "not selected, bad name", "twice"])
def test_train_set_that_would_do_nothing_or_is_ambiguous_exits_2(tmp_path, capsys, flags, words):
    out = tmp_path / "run"
    for dry in ([], ["--dry-run"]):
        assert main([*TRAIN, *flags, *dry, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ablate: error: ") and no_traceback(err), err
        for w in words:
            assert w in err, (w, err)
    assert not out.exists()


def test_compare_report_and_anchor_out_flags(tmp_path, capsys, monkeypatch):
    """`compare --out FILE` (or a folder under a file) was a NotADirectoryError traceback;
    `compare --out ""` and `report --out ""` wrote into the working directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    res = str(tmp_path / "results" / "x")
    for argv, words in (
            (["compare", res, "--out", "afile"], ["--out afile is a file"]),
            (["compare", res, "--out", "afile/sub"], ["--out afile/sub cannot be created"]),
            (["compare", res, "--out", ""], ["--out is blank"]),
            (["report", res, "--out", ""], ["--out is blank"]),
            (["anchor", res, "--device", "gpu"], ["--device must be auto, cpu, cuda or cuda:N",
                                                  "'gpu'"])):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("ablate: error: ") and no_traceback(err), err
        for w in words:
            assert w in err, (argv, w, err)
    assert sorted(os.listdir(tmp_path)) == ["afile"]


@pytest.mark.parametrize("blocker", ["runs", "tmp", "broken"])
def test_a_file_where_the_grid_keeps_run_directories_exits_2(tmp_path, capsys, blocker):
    """Every run failed alike (NotADirectoryError / FileExistsError, exit 1) and was
    recorded as failed; now the grid refuses before it claims anything."""
    exp = experiment(tmp_path, scope='["batch-norm"]')
    res = tmp_path / "res"
    res.mkdir()
    (res / blocker).write_text("x")
    for extra in (GRID_FLAGS, ["--dry-run"]):  # the dry run refuses it too
        assert main(["grid", str(exp), "--results-dir", str(res), *extra]) == 2
        err = capsys.readouterr().err
        assert f"{res / blocker} is a file where the grid keeps run directories" in err, err
    assert no_traceback(err) and (res / blocker).read_text() == "x"
    assert not rows(res)


def test_a_finished_run_with_a_garbled_result_file_is_reported_and_repaired(tmp_path, capsys):
    """A truncated run.json/result.json/config.json of a finished run passed as finished
    (only a missing file counted): now it is reported as lost, `--repair` retrains it and
    its remains stay in broken/."""
    exp = experiment(tmp_path, scope='["batch-norm"]')
    res = tmp_path / "res"
    assert main(["grid", str(exp), "--results-dir", str(res), *GRID_FLAGS]) == 0
    run = sorted((res / "runs").iterdir())[0]
    text = (run / "result.json").read_text()
    (run / "result.json").write_text(text[: len(text) // 2])
    capsys.readouterr()
    assert main(["status", str(exp), "--results-dir", str(res)]) == 0
    by_file = capsys.readouterr().out
    assert f"lost their directory or result files, or hold unreadable ones ({run.name})" in by_file
    assert main(["status", str(res)]) == 0  # the results directory itself, as `ablate report` takes
    assert capsys.readouterr().out == by_file
    for argv, words in (([str(res), "--results-dir", str(res)], "give --results-dir only with an experiment file"),
                        ([str(tmp_path)], "without runs.sqlite: not a results directory")):
        assert main(["status", *argv]) == 2
        assert words in capsys.readouterr().err
    assert main(["grid", str(exp), "--results-dir", str(res), *GRID_FLAGS]) == 0
    assert "`--repair` retrains them" in capsys.readouterr().err
    assert main(["grid", str(exp), "--results-dir", str(res), "--repair", *GRID_FLAGS]) == 0
    kept = list((res / "broken").iterdir())
    assert len(kept) == 1 and (kept[0] / "result.json").read_text() == text[: len(text) // 2]
    assert (run / "result.json").is_file() and rows(res)[run.name]["status"] == "done"


def test_flags_that_did_nothing_or_ran_anyway_exit_2(tmp_path, capsys, monkeypatch):
    """`doctor --threads 0` timed with torch's default; `status --results-dir FILE` or `""`
    said "no run index", and with --results-dir the experiment file was never read;
    `grid --partition/--address` with the local executor were silently ignored."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    exp = str(experiment(tmp_path))
    for argv, words in (
            (["doctor", "--threads", "0"], ["--threads must be a positive integer, got 0"]),
            (["status", exp, "--results-dir", "afile"], ["results directory afile is a file"]),
            (["status", exp, "--results-dir", ""], ["--results-dir is blank"]),
            (["status", "nope.toml", "--results-dir", "res"], ["cannot read experiment file nope.toml"]),
            (["grid", exp, "--dry-run", "--partition", "gpu"],
             ["--partition applies to --executor slurm, but the executor is local"]),
            (["grid", exp, "--dry-run", "--executor", "inline", "--address", "auto"],
             ["--address applies to --executor ray or slurm, but the executor is inline"])):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("ablate: error: ") and no_traceback(err), err
        for w in words:
            assert w in err, (argv, w, err)
    assert sorted(os.listdir(tmp_path)) == ["afile", "exp.toml"]


def test_a_grid_into_another_datasets_results_dir_exits_2_and_keeps_its_record(tmp_path, capsys):
    """`ablate grid smoke.toml --results-dir results/<a fashion-mnist experiment>` overwrote
    that experiment's experiment.json and plan with its own."""
    other = tmp_path / "other"
    other.mkdir()
    record = '{"experiment": {"name": "fm", "dataset": "fashion-mnist"}}'
    (other / "experiment.json").write_text(record)
    exp = experiment(tmp_path, scope='["batch-norm"]')
    for flags in (["--dry-run"], GRID_FLAGS):
        assert main(["grid", str(exp), "--results-dir", str(other), *flags]) == 2
        err = capsys.readouterr().err
        assert "holds experiment 'fm' on fashion-mnist" in err and "this one is on fake" in err, err
    assert sorted(os.listdir(other)) == ["experiment.json"]
    assert (other / "experiment.json").read_text() == record


def test_garbage_in_rows_of_the_run_index_is_an_error_naming_the_fix(tmp_path, capsys):
    """A run row whose JSON is garbled made `ablate report` print a bare JSONDecodeError, a
    text in a number column made `ablate status` a TypeError traceback, and an index
    without its runs table an OperationalError: now each says how to rebuild the index."""
    import sqlite3

    exp = experiment(tmp_path, scope='["batch-norm"]')
    res = tmp_path / "res"
    assert main(["grid", str(exp), "--results-dir", str(res), *GRID_FLAGS]) == 0
    con = sqlite3.connect(res / "runs.sqlite")
    con.execute("UPDATE runs SET metrics = '{garbled', wall_time_s = 'x' "
                "WHERE rowid = (SELECT min(rowid) FROM runs)")
    con.commit()
    con.close()
    capsys.readouterr()
    assert main(["status", str(exp), "--results-dir", str(res)]) == 0
    assert "runs finished" in capsys.readouterr().out
    assert main(["report", str(res), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "is unreadable" in err and "--rebuild-index" in err and no_traceback(err), err
    con = sqlite3.connect(res / "runs.sqlite")
    con.execute("DROP TABLE runs")
    con.commit()
    con.close()
    assert main(["report", str(res), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "no plan or runs table" in err and "--rebuild-index" in err and no_traceback(err), err
    assert main(["status", str(exp), "--results-dir", str(res)]) == 0
    assert "holds no run index" in capsys.readouterr().out
    assert main(["grid", str(exp), "--results-dir", str(res), "--rebuild-index", *GRID_FLAGS]) == 0
    assert len(rows(res)) == 2 and {r["status"] for r in rows(res).values()} == {"done"}


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("damage,words", [
    (b"\xff\xfe\x00garbage\x81", ["effects.csv is unreadable", "rerun `ablate report"]),
    (None, ["non-numeric values in column(s) ['estimate']", "rerun `ablate report"])])
def test_compare_over_a_damaged_effects_table_exits_2(tmp_path, capsys, damage, words):
    """A binary effects.csv (UnicodeDecodeError) or a text estimate (ValueError) was a
    traceback in `ablate compare`."""
    import shutil
    src = tmp_path / "label-smoothing-sides"
    shutil.copytree(REPO / "results" / "label-smoothing-sides", src)
    eff = src / "tables" / "effects.csv"
    if damage is None:
        import pandas as pd
        t = pd.read_csv(eff)
        t["estimate"] = t["estimate"].astype(object)
        t.loc[0, "estimate"] = "oops"
        t.to_csv(eff, index=False)
    else:
        eff.write_bytes(damage)
    assert main(["compare", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: ") and no_traceback(err), err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "out").exists()


def test_report_leaves_out_a_hand_edited_provenance_of_another_shape(tmp_path, capsys):
    """metrics.json with "provenance": "x" (valid JSON, wrong shape) was an AttributeError
    traceback in `ablate report`; the record is left out and the report is written."""
    import json
    import shutil
    src = tmp_path / "label-smoothing-sides"
    shutil.copytree(REPO / "results" / "label-smoothing-sides", src)
    for i, m in enumerate(sorted(src.glob("runs/*/metrics.json"))[:2]):
        doc = json.loads(m.read_text())
        doc["provenance"] = "x" if i == 0 else {"features": "x"}
        m.write_text(json.dumps(doc))
    assert main(["report", str(src), "--out", str(tmp_path / "rep")]) == 0
    row = next(x for x in (tmp_path / "rep" / "REPORT.md").read_text().splitlines()
               if x.startswith("| feature nets |"))
    assert "test accuracy 0.9" in row, row  # the other runs' provenance is still read


# ---- a second audit: malformed inputs and injected faults (helper run, stop 32) ----------

def test_slurm_without_slurm_exits_2_and_its_local_mode_is_capped_at_the_cores(tmp_path, capsys,
                                                                             monkeypatch):
    """`--executor slurm` where no SLURM is installed fell back to submitit's local mode with
    1000 slots: every run of the grid trained here at once, unasked (10 processes on 2
    cores). Now it exits 2 naming --address local; that local mode is capped at the cores."""
    submitit = pytest.importorskip("submitit", reason="pip install -e .[test] (or make test)")
    from ablate.experiment.execution import cores
    from ablate.grid.executors import SlurmExecutor

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: -1))
    res = tmp_path / "res"
    exp = experiment(tmp_path, scope='["batch-norm"]')
    assert main(["grid", str(exp), "--results-dir", str(res), "--executor", "slurm",
                 "--threads", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no SLURM on this machine" in err and "--address local" in err and no_traceback(err), err
    assert not res.exists()
    local = SlurmExecutor(tmp_path / "slurm", threads=1, cluster="local")
    assert local.on_this_machine and local.slots == cores()
    assert SlurmExecutor(tmp_path / "slurm", threads=1, cluster="local", workers=1).slots == 1


def test_a_huge_log_every_is_refused_and_a_long_one_allocates_no_window(tmp_path, capsys):
    """log_every = 1e11 passed validation and every run failed allocating a 1.6 TB stats
    window (1e8: 1.6 GB per run). Now it is bounded like steps, and the window is never
    longer than the run."""
    out = tmp_path / "run"
    base = ["train", "--dataset", "fake", "--steps", "3", "--threads", "1", "--no-eval",
            "--hacks", "builtin", "--out", str(out)]
    assert main([*base, "--log-every", str(10**11)]) == 2
    err = capsys.readouterr().err
    assert "log_every = 100000000000; valid: 1 .. 100000000" in err and no_traceback(err), err
    assert not out.exists()
    assert main([*base, "--log-every", str(10**8)]) == 0
    lines = (out / "log.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"step": 3,' in lines[0], lines


def test_repair_that_cannot_move_a_run_dir_exits_2_with_the_resume_command(tmp_path, capsys,
                                                                          monkeypatch):
    """`--repair` of a run dir this user may not move printed a PermissionError traceback;
    and every "resume with" hint dropped --results-dir, so following it resumed (or
    started) the experiment's default results directory instead."""
    from ablate.grid import rundirs

    exp = experiment(tmp_path, scope='["batch-norm"]')
    res = tmp_path / "my results"
    assert main(["grid", str(exp), "--results-dir", str(res), *GRID_FLAGS]) == 0
    run = sorted((res / "runs").iterdir())[0]
    (run / "result.json").write_text("{")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    def refuse(results_dir, path):
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(rundirs, "quarantine", refuse)
    capsys.readouterr()
    assert main(["grid", str(exp), "--results-dir", str(res), "--repair", *GRID_FLAGS]) == 2
    err = capsys.readouterr().err
    assert "Operation not permitted" in err and "give this user write permission" in err, err
    assert f"`ablate grid {exp} --results-dir '{res}'`" in err and no_traceback(err), err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_corrupt_checkpoint_or_a_result_that_says_no_finish_is_reported_and_repaired(tmp_path,
                                                                                       capsys):
    """A truncated generator.pt and a result.json of `{}` passed as finished (only the
    files' existence, and that the JSON parsed, were checked): `--repair` never retrained
    them, while `ablate eval` said "retrain the run"."""
    exp = experiment(tmp_path, scope='["batch-norm"]')
    res = tmp_path / "res"
    assert main(["grid", str(exp), "--results-dir", str(res), *GRID_FLAGS]) == 0
    torn, empty = sorted((res / "runs").iterdir())[:2]
    with open(torn / "generator.pt", "r+b") as f:
        f.truncate(1000)
    (empty / "result.json").write_text("{}")
    capsys.readouterr()
    assert main(["status", str(exp), "--results-dir", str(res)]) == 0
    out = capsys.readouterr().out
    assert f"or hold unreadable ones ({empty.name})" in out, out
    assert "no checkpoint: 1 finished run(s) have no readable generator.pt" in out, out
    assert main(["grid", str(exp), "--results-dir", str(res), "--repair", *GRID_FLAGS]) == 0
    assert len(list((res / "broken").iterdir())) == 2
    assert all(r["status"] == "done" for r in rows(res).values())
    assert main(["status", str(exp), "--results-dir", str(res)]) == 0
    out = capsys.readouterr().out
    assert "no checkpoint" not in out and "unreadable" not in out, out


def test_a_grid_of_another_name_in_a_results_dir_warns_that_the_report_changes_hands(tmp_path,
                                                                                    capsys):
    """Another experiment on the same dataset took over a results directory silently:
    its experiment.json and REPORT.md replaced the first one's."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "experiment.json").write_text('{"experiment": {"name": "first", "dataset": "fake"}}')
    exp = experiment(tmp_path, scope='["batch-norm"]')
    assert main(["grid", str(exp), "--results-dir", str(other), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert f"results directory {other} holds experiment 'first'" in err, err
    assert "REPORT.md become 'exp''s" in err and "another --results-dir" in err, err


def test_dry_runs_refuse_what_the_runs_refuse(tmp_path, capsys, monkeypatch):
    """`train --dry-run` accepted --eval-n 0, an unknown feature net and a batch larger than
    the dataset; `grid --dry-run` accepted adaptive seeds with nothing scored. Each real run
    refused them (exit 2), so the dry run promised a run that could not start. And `report`
    on a file said the results dir "does not exist"."""
    monkeypatch.chdir(tmp_path)
    exp = experiment(tmp_path, seeds="{ min = 3, max = 4 }")
    (tmp_path / "afile").write_text("x")
    train = ["train", "--dataset", "fake", "--steps", "3", "--dry-run"]
    for argv, words in (
            ([*train, "--eval-n", "0"], "n must be positive, got 0"),
            ([*train, "--eval-features", "bogus"], "unknown feature net(s) ['bogus']"),
            ([*train, "--batch-size", "100000"], "--batch-size 100000 exceeds the"),
            (["grid", str(exp), "--dry-run"], "scores nothing: set features"),
            (["report", "afile"], "afile is a file, not a results directory")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert words in err and no_traceback(err), (argv, err)
    assert sorted(os.listdir(tmp_path)) == ["afile", "exp.toml"]
