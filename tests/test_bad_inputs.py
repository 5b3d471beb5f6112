"""Bad inputs end in exit 2 with a message naming the key and the valid range, before
anything is written (issue 11, items 8 and 10). In-process through ``ablate.cli.main``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from gridutil import ABLATE, experiment, no_traceback  # noqa: E402

from ablate.cli import main  # noqa: E402
from ablate.config import TrainConfig  # noqa: E402
from ablate.errors import ConfigError  # noqa: E402
from ablate.grid.store import load_frame  # noqa: E402
from ablate.experiment.pipeline import train_and_score  # noqa: E402

GRID_FLAGS = ["--executor", "inline", "--no-report", "--no-progress"]

# (what, experiment text changes or extra text, CLI flags, words the message must contain)
BAD_EXPERIMENTS = [
    ("batch larger than the dataset", {"batch_size = 32": "batch_size = 5000"}, [],
     ["batch_size", "5000", "training images"]),
    ("negative Adam lr", {}, [], ["adam-dcgan", "lr", "> 0"], "\n[hacks.params]\nadam-dcgan = { lr = -0.001 }\n"),
    ("beta outside [0, 1)", {}, [], ["adam-dcgan", "betas", ">= 0.0 and < 1.0"],
     "\n[hacks.params]\nadam-dcgan = { beta1 = 1.5 }\n"),
    ("negative init std", {'scope = ["batch-norm", "adam-dcgan", "label-smoothing"]':
                           'scope = ["gaussian-init"]'}, [], ["gaussian-init", "std", ">= 0"],
     "\n[hacks.params]\ngaussian-init = { std = -0.1 }\n"),
    ("flip probability above 1", {'scope = ["batch-norm", "adam-dcgan", "label-smoothing"]':
                                  'scope = ["noisy-labels"]'}, [], ["noisy-labels", "[0, 1]"],
     "\n[hacks.params]\nnoisy-labels = { p = 2.0 }\n"),
    ("workers not an integer", {}, [], ["[execution].workers", "positive integer"],
     '\n[execution]\nworkers = "two"\n'),
    ("threads zero", {}, [], ["[execution].threads", "positive integer"], "\n[execution]\nthreads = 0\n"),
    ("unknown device", {}, [], ["[execution].device", "cuda:N"], '\n[execution]\ndevice = "gpu"\n'),
    ("unknown executor", {}, [], ["[execution].executor", "local"], '\n[execution]\nexecutor = "k8s"\n'),
    ("seed overflows", {"seeds = [0]": "seeds = [99999999999999999999]"}, [], ["seeds", "4294967295"]),
    ("negative seed", {"seeds = [0]": "seeds = [-1]"}, [], ["seeds", "[0, 4294967295]"]),
    ("absurd seed count", {"seeds = [0]": "seeds = 1000000000"}, [], ["seeds", "1 .. 1000"]),
    ("--workers -1", {}, ["--workers", "-1"], ["--workers", "positive integer"]),
    ("--threads 0", {}, ["--threads", "0"], ["--threads", "positive integer"]),
    ("--threads -1 (the pool initializer failed forever)", {}, ["--threads", "-1"],
     ["--threads", "positive integer"]),
]


@pytest.mark.parametrize("case", BAD_EXPERIMENTS, ids=[c[0] for c in BAD_EXPERIMENTS])
def test_bad_experiment_inputs_exit_2_and_write_nothing(tmp_path, capsys, case):
    what, replace, flags, words, *extra = case
    exp = experiment(tmp_path, replace=replace, extra=extra[0] if extra else "")
    res = tmp_path / "res"
    assert main(["grid", str(exp), "--results-dir", str(res), *GRID_FLAGS, *flags]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, (what, err)
    assert not res.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_exits_2_before_the_store_is_written(tmp_path, capsys):
    exp = experiment(tmp_path)
    assert main(["grid", str(exp), "--results-dir", str(tmp_path / "res"), "--device", "cuda",
                 *GRID_FLAGS]) == 2
    assert "no GPU is visible" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


def test_non_utf8_experiment_and_results_dir_that_is_a_file(tmp_path, capsys):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(experiment(tmp_path).read_bytes().replace(b"smoke test", b"smoke t\xe9st"))
    assert main(["grid", str(bad), "--dry-run"]) == 2
    assert "not a UTF-8 text file" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["grid", str(experiment(tmp_path)), "--results-dir", str(tmp_path / "afile"),
                 *GRID_FLAGS]) == 2
    assert "is a file" in capsys.readouterr().err


def test_an_experiment_file_with_a_utf8_byte_order_mark_reads_as_without(tmp_path, capsys):
    """Windows editors save UTF-8 with a BOM; it gave 'TOML syntax error ... line 1, column 1'."""
    plain = experiment(tmp_path)
    bom = tmp_path / "bom" / plain.name
    bom.parent.mkdir()
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    outs = []
    for path in (plain, bom):
        assert main(["grid", str(path), "--dry-run", "--results-dir", str(tmp_path / "res")]) == 0
        outs.append(capsys.readouterr().out.replace(str(path), "EXP"))
    assert outs[0] == outs[1] and "to run" in outs[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    train_and_score(TrainConfig(dataset="fake", steps=2, batch_size=8, ngf=8, ndf=8, log_every=1,
                                threads=1), None, out)
    return out


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run_dir, tmp_path / "r"))


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "other-architecture",
                                    "config-not-json", "config-a-list", "config-no-train"])
def test_eval_on_a_damaged_run_exits_2(run_dir, tmp_path, capsys, damage):
    r = _copy(run_dir, tmp_path)
    g = r / "generator.pt"
    if damage == "truncated":
        g.write_bytes(g.read_bytes()[: g.stat().st_size // 2])
    elif damage == "random":
        g.write_bytes(os.urandom(4096))
    elif damage == "empty":
        g.write_bytes(b"")
    elif damage == "other-architecture":
        train_and_score(TrainConfig(dataset="fake", steps=1, batch_size=8, ngf=16, ndf=8,
                                    threads=1), None, tmp_path / "wide")
        g.write_bytes((tmp_path / "wide" / "generator.pt").read_bytes())
    elif damage == "config-not-json":
        (r / "config.json").write_text("{ not json")
    elif damage == "config-a-list":
        (r / "config.json").write_text("[1, 2]")
    else:
        (r / "config.json").write_text('{"hacks": []}')
    assert main(["eval", str(r), "--n", "50", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "ablate: error:" in err and ("generator.pt" in err or "config.json" in err), err


def test_train_rejects_bad_inputs_before_creating_its_directory(tmp_path, capsys):
    base = ["train", "--dataset", "fake", "--steps", "2", "--batch-size", "8", "--ngf", "8",
            "--ndf", "8", "--device", "cpu"]
    out = tmp_path / "out"
    for extra, word in ((["--seed", str(2**40)], "seed"),
                        (["--set", "adam-dcgan.lr=-1"], "lr"),
                        (["--eval-n", "1"], "EvalProtocol.n"),
                        (["--eval-features", "pixels"], "pixels")):
        assert main([*base, *extra, "--out", str(out)]) == 2, extra
        assert word in capsys.readouterr().err
        assert not out.exists()
    (tmp_path / "afile").write_text("x")
    assert main([*base, "--no-eval", "--out", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_ctrl_c_during_train_exits_130_without_traceback_and_frees_out(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([*ABLATE, "train", "--dataset", "fake", "--steps", "100000",
                             "--batch-size", "8", "--ngf", "8", "--ndf", "8", "--device", "cpu",
                             "--threads", "1", "--no-eval", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (out / "config.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and no_traceback(text) and "interrupted" in text, text
    assert not out.exists()  # an unfinished run directory would block reusing --out


def test_report_and_status_on_something_that_is_not_a_results_dir(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="run `ablate grid`"):  # what `ablate report` reads
        load_frame(empty)
    exp = experiment(tmp_path)
    half = tmp_path / "half"  # a store without experiment.json (half-written)
    assert main(["grid", str(exp), "--results-dir", str(half), *GRID_FLAGS]) == 0
    (half / "experiment.json").unlink()
    capsys.readouterr()
    assert main(["status", str(exp), "--results-dir", str(half)]) == 2
    assert "experiment.json not found" in capsys.readouterr().err


def test_a_dry_run_fetches_and_copies_no_data(tmp_path, monkeypatch, capsys):
    """`grid --dry-run` (and `train --dry-run`) counted the training images to check the
    batch size, which fetched the dataset into an empty data root (a download attempt, or
    Debian's copy installed there): a dry run writes nothing."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("ABLATE_DATA", str(root))
    exp = experiment(tmp_path, replace={'dataset = "fake"': 'dataset = "fashion-mnist"'})
    assert main(["grid", str(exp), "--dry-run", "--results-dir", str(tmp_path / "res")]) == 0
    assert "could not check batch_size against fashion-mnist without fetching it" in capsys.readouterr().err
    assert main(["train", "--dataset", "fashion-mnist", "--dry-run"]) == 0
    assert "without fetching it" in capsys.readouterr().err
    assert not any(root.iterdir()) and not (tmp_path / "res").exists()
