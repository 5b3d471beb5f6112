"""Values that used to pass the parser and fail inside every run, or be accepted without a
word (issue 16 item 5): each exits 2 naming the key, before anything is written, or has a
documented, bounded meaning. In-process through ``ablate.cli.main``; each case asserts the
exit code, the key in the message, no traceback and no results directory afterwards."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gridutil import experiment, no_traceback  # noqa: E402

from ablate.cli import main  # noqa: E402
from ablate.experiment.execution import cores  # noqa: E402

GRID_FLAGS = ["--executor", "inline", "--no-report", "--no-progress"]
SCORED = {"features = []": 'features = ["classifier"]'}
ONE_HACK = {'scope = ["batch-norm", "adam-dcgan", "label-smoothing"]': 'scope = ["batch-norm"]'}
TOO_MANY_THREADS = max(1000, cores() + 1)


def _eval(line: str) -> dict[str, str]:
    return {"features = []": f'features = ["classifier"]\n{line}'}


def _params(table: str) -> str:
    return f"\n[hacks.params]\n{table}\n"


# (what, replacements in smoke.toml, text appended, grid flags, words the message must hold)
CASES = [
    # The issue's cases: values that failed inside every run of the grid.
    ("real_split bogus", _eval('real_split = "bogus"'), "", [], ["real_split", "'bogus'", "test, train"]),
    ("n = nan", _eval("n = nan"), "", [], ["[evaluation]", "EvalProtocol.n", "nan"]),
    ("n = 1e400", _eval("n = 1e400"), "", [], ["[evaluation]", "EvalProtocol.n", "inf"]),
    ("ngf = 99999999999", {"ngf = 8": "ngf = 99999999999"}, "", [], ["ngf", "valid: 1 .. 1024"]),
    ("adam lr = 1e308", {}, _params("adam-dcgan = { lr = 1e308 }"), [],
     ["[hacks.params].adam-dcgan", "'lr'", "1e+308", "float32 range"]),
    # ... and values accepted that are now refused.
    ("workers = 100000", {}, "\n[execution]\nworkers = 100000\n", [],
     ["[execution].workers = 100000", "valid: 1 .. 1000"]),
    ("threads = 1000", {}, f"\n[execution]\nthreads = {TOO_MANY_THREADS}\n", [],
     ["[execution].threads", f"exceeds the {cores()} CPU cores", f"valid: 1 .. {cores()}"]),
    ('scope = ["all", "none"]', {'scope = ["batch-norm", "adam-dcgan", "label-smoothing"]':
                                'scope = ["all", "none"]'}, "", [], ["[hacks].scope", "'none'", "alone"]),
    ("fractional factorial over one hack", {**ONE_HACK, 'kind = "leave-one-out"':
                                           'kind = "fractional-factorial"'}, "", [],
     ["[design]", "at least 2 hacks", "leave-one-out"]),
    ("adaptive seeds without evaluation", {"seeds = [0]": "seeds = { min = 3, max = 5 }"}, "", [],
     ["seeds = { min, max }", "features = []", "features = [\"classifier\"]"]),
    # The same values through the grid command's flags.
    ("--workers 100000", {}, "", ["--workers", "100000"], ["--workers = 100000", "1 .. 1000"]),
    ("--threads 1000", {}, "", ["--threads", str(TOO_MANY_THREADS)], ["--threads", "CPU cores"]),
    ("--results-dir ''", {}, "", ["--results-dir", ""], ["--results-dir is blank", "working directory"]),
    ("--device gpu", {}, "", ["--device", "gpu"], ["--device", "cuda:N", "'gpu'"]),
    # More of the same families: non-finite, absurd, wrong type, unknown.
    ("adam lr = inf", {}, _params("adam-dcgan = { lr = inf }"), [], ["'lr'", "not a finite number"]),
    ("adam lr = nan", {}, _params("adam-dcgan = { lr = nan }"), [], ["'lr'", "not a finite number"]),
    ("adam lr = 3e38: its first Adam step overflows float32", {}, _params("adam-dcgan = { lr = 3e38 }"),
     [], ["adam-dcgan", "Optimizer.lr = 3e+38", "float32", "valid: lr <= 1.701e+38"]),
    ("adam lr an int beyond any float", {}, _params("adam-dcgan = { lr = 1" + "0" * 400 + " }"), [],
     ["'lr'", "not a finite number"]),
    ("label smoothing target -1e308", {}, _params("label-smoothing = { fake_low = -1e308 }"), [],
     ["label-smoothing", "'fake_low'", "float32 range"]),
    ("steps beyond any budget", {"steps = 20": "steps = 99999999999999999999999"}, "", [],
     ["steps", "valid: 1 .. 100000000"]),
    ("latent_dim = 100000", {"ngf = 8": "ngf = 8\nlatent_dim = 100000"}, "", [], ["latent_dim", "1 .. 1024"]),
    ("ngf = inf", {"ngf = 8": "ngf = inf"}, "", [], ["[model].ngf must be int", "inf"]),
    ("n too large", _eval("n = 99999999999"), "", [], ["EvalProtocol.n", "2 .. 1000000"]),
    ("n a string with evaluation skipped", {"features = []": 'features = []\nn = "many"'}, "", [],
     ["EvalProtocol.n must be int", "'many'"]),
    ("pr_k >= n", _eval("n = 100\npr_k = 100"), "", [], ["EvalProtocol.pr_k", "1 .. 99"]),
    ("mode_min_frac = nan", _eval("mode_min_frac = nan"), "", [], ["mode_min_frac", "not a finite number"]),
    ("mode_min_frac = 5", _eval("mode_min_frac = 5.0"), "", [], ["mode_min_frac", "0 .. 1"]),
    ("kid_subsets absurd", _eval("kid_subsets = 100000000"), "", [], ["kid_subsets", "1 .. 10000"]),
    ("evaluation seed negative", _eval("seed = -1"), "", [], ["EvalProtocol.seed", "0 .. 4294967295"]),
    ("real_split val", _eval('real_split = "val"'), "", [], ["real_split", "'val'"]),
    ("sesoi = nan", SCORED, "\n[analysis]\nsesoi = nan\n", [], ["[analysis].sesoi", "not a finite number"]),
    ("workers a float", {}, "\n[execution]\nworkers = 2.0\n", [], ["[execution].workers", "positive integer"]),
    ("threads a bool", {}, "\n[execution]\nthreads = true\n", [], ["[execution].threads", "positive integer"]),
    ("execution unknown key", {}, "\n[execution]\ngpus = 2\n", [], ["[execution]", "'gpus'"]),
    ("name blank", {"seeds = [0]": 'name = " "\nseeds = [0]'}, "", [], ["name is blank"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_values_exit_2_naming_the_key_and_write_nothing(tmp_path, capsys, case):
    what, replace, extra, flags, words = case
    exp = experiment(tmp_path, replace=replace, extra=extra)
    res = tmp_path / "res"
    assert main(["grid", str(exp), "--results-dir", str(res), *GRID_FLAGS, *flags]) == 2, what
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: ") and no_traceback(err), err
    for w in words:
        assert w in err, (what, w, err)
    assert not res.exists()


def test_a_deeply_nested_file_exits_2_without_a_recursion_traceback(tmp_path, capsys):
    exp = tmp_path / "deep.toml"
    exp.write_text("seeds = " + "[" * 5000 + "]" * 5000 + "\n")
    assert main(["grid", str(exp), "--results-dir", str(tmp_path / "res"), *GRID_FLAGS]) == 2
    err = capsys.readouterr().err
    assert "nested too deeply" in err and "deep.toml" in err and no_traceback(err), err
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("results_dir, words", [
    ('""', ["results_dir is blank", "working directory"]),
    ('"a\\u0000b"', ["results_dir", "NUL"]),
    ('"afile/res"', ["results_dir afile/res cannot be created", "Not a directory"]),
    pytest.param('"/proc/ablate-bad-input"', ["results_dir /proc/ablate-bad-input cannot be created"],
                 marks=pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc here")),
])
def test_a_blank_or_uncreatable_results_dir_exits_2_and_writes_nothing(tmp_path, capsys,
                                                                       monkeypatch, results_dir,
                                                                       words):
    """`results_dir = ""` wrote into the working directory; one under /proc started the grid."""
    exp = experiment(tmp_path, replace={"seeds = [0]": f"results_dir = {results_dir}\nseeds = [0]"})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "afile").write_text("x")
    monkeypatch.chdir(cwd)
    assert main(["grid", str(exp), *GRID_FLAGS]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, (w, err)
    assert no_traceback(err)
    assert sorted(os.listdir(cwd)) == ["afile"] and not Path("/proc/ablate-bad-input").exists()
    flag = tmp_path / "afile" / "res"
    (tmp_path / "afile").write_text("x")
    assert main(["grid", str(experiment(tmp_path, "ok.toml")), "--results-dir", str(flag),
                 *GRID_FLAGS]) == 2
    assert "--results-dir" in capsys.readouterr().err


def test_workers_above_the_cores_are_capped_with_a_note(tmp_path, capsys):
    """Bounded meaning: the local pool runs at most one worker process per core (extra ones
    only share the cores); above 1000 (any executor) it is a typo, refused (see CASES)."""
    exp = experiment(tmp_path)
    assert main(["grid", str(exp), "--workers", str(cores() + 1), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert f"note: --workers = {cores() + 1} capped at {cores()}, the CPU cores" in err, err
    assert main(["grid", str(exp), "--workers", str(cores()), "--dry-run"]) == 0
    assert "capped" not in capsys.readouterr().err
    # A cluster's scheduler queues what does not fit: no cap there.
    assert main(["grid", str(exp), "--workers", "1000", "--executor", "slurm", "--dry-run"]) == 0
    assert "capped" not in capsys.readouterr().err


def test_a_fraction_that_is_the_full_factorial_says_so(tmp_path, capsys):
    """Bounded meaning: three hacks have no resolution-IV fraction smaller than 2^3; the
    design is the full factorial, and the dry run (and experiment.json) says so."""
    exp = experiment(tmp_path, replace={'kind = "leave-one-out"': 'kind = "fractional-factorial"'})
    assert main(["grid", str(exp), "--dry-run"]) == 0
    assert "the full factorial, all 8 combinations: no smaller fraction of 3 hacks" in \
        capsys.readouterr().out


TRAIN = ["train", "--dataset", "fake", "--steps", "2", "--batch-size", "8", "--ngf", "8",
         "--ndf", "8", "--device", "cpu", "--no-eval"]


TRAIN_CASES = [
    (["--threads", str(TOO_MANY_THREADS)], ["--threads", "CPU cores"]),
    (["--threads", "0"], ["--threads must be a positive integer"]),
    (["--ngf", "99999999999"], ["ngf", "1 .. 1024"]),
    (["--set", "adam-dcgan.lr=1e308"], ["adam-dcgan", "'lr'", "float32 range"]),
    (["--set", "adam-dcgan.lr=nan"], ["'lr'", "not a finite number"]),
    (["--set", "noisy-labels.p=inf"], ["'p'", "not a finite number"]),
    (["--hacks", "all,none"], ["'none'", "alone"]),
    (["--val-n", "99999999999"], ["val_n", "1 .. 1000000"]),
    (["--eval", "--eval-n", "99999999999"], ["EvalProtocol.n", "2 .. 1000000"]),
    (["--out", ""], ["--out is blank"]),
    (["--out", "afile/run"], ["--out afile/run cannot be created"]),
]


@pytest.mark.parametrize("flags, words", TRAIN_CASES, ids=[" ".join(f) for f, _ in TRAIN_CASES])
def test_train_flags_exit_2_before_anything_is_written(tmp_path, capsys, monkeypatch, flags, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    out = [] if "--out" in flags else ["--out", str(tmp_path / "run")]
    assert main([*TRAIN, *flags, *out]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, (w, err)
    assert no_traceback(err) and sorted(os.listdir(tmp_path)) == ["afile"]


def test_eval_threads_above_the_cores_exit_2(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["eval", str(tmp_path / "run"), "--threads", str(TOO_MANY_THREADS)]) == 2
    assert "--threads" in capsys.readouterr().err
    assert not list((tmp_path / "run").iterdir())


def test_a_large_learning_rate_that_fits_float32_is_an_experiment_not_an_error(tmp_path, capsys):
    """Bounded meaning: lr = 1e20 is planned (the run diverges, an outcome the grid records;
    tests/test_training_loop.py checks it), lr = 1e308 is refused (see CASES)."""
    exp = experiment(tmp_path, extra=_params("adam-dcgan = { lr = 1e20 }"))
    assert main(["grid", str(exp), "--dry-run"]) == 0
    assert "error" not in capsys.readouterr().err
