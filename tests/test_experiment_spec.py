"""Experiment files: the shipped ones parse; bad ones fail naming the key or line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate import ConfigError
from ablate.data import DATASETS
from ablate.experiment.spec import load_experiment
from ablate.hacks.registry import builtin_names

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "experiments").glob("*.toml"))

GOOD = """
seeds = 2
[data]
dataset = "fake"
[model]
ngf = 8
ndf = 8
[budget]
steps = 5
batch_size = 8
[evaluation]
features = []
[hacks]
scope = ["batch-norm", "adam-dcgan"]
[hacks.params]
adam-dcgan = { lr = 1e-3 }
"""


def test_every_shipped_experiment_parses():
    names = {p.stem for p in SHIPPED}
    assert {"default", "smoke", "factorial", "fashion-mnist", "mnist", "mnist-5k", "cifar10",
            "stacked-mnist"} <= names
    for path in SHIPPED:
        exp = load_experiment(path)
        assert exp.seeds and exp.hacks and exp.dataset in DATASETS, path
        assert exp.results_dir == Path("results") / path.stem


def test_default_is_leave_one_out_over_the_eleven_with_three_seeds():
    exp = load_experiment(REPO / "experiments/default.toml")
    assert exp.dataset == "fashion-mnist" and exp.design.kind == "leave-one-out"
    assert exp.hacks == tuple(builtin_names()) and len(exp.seeds) == 3
    assert exp.evaluates() and exp.protocol is not None and exp.protocol.n == 5000


def test_good_file_is_parsed_with_defaults(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(GOOD)
    exp = load_experiment(f)
    assert exp.name == "mine" and exp.results_dir == Path("results/mine")
    assert exp.seeds == (0, 1)  # a count expands to range
    assert exp.hacks == ("batch-norm", "adam-dcgan")  # canonical order
    assert exp.params == (("adam-dcgan", "lr", 1e-3),)
    assert exp.train_kwargs() == {"ngf": 8, "ndf": 8, "steps": 5, "batch_size": 8}
    assert not exp.evaluates()


def test_scope_keywords(tmp_path):
    f = tmp_path / "e.toml"
    f.write_text(GOOD.replace('scope = ["batch-norm", "adam-dcgan"]', 'scope = "builtin"'))
    assert load_experiment(f).hacks == tuple(builtin_names())


BAD = [
    ("seeds = [0,\n[data]", "line"),  # TOML syntax error: the message has the line
    ("bogus = 1\n" + GOOD, "'bogus'"),  # unknown top-level key
    (GOOD.replace("steps = 5", "stepz = 5"), "'stepz'"),  # unknown budget key
    (GOOD.replace("ngf = 8", "ngf = 8\ndevice = 'cpu'"), "'device'"),  # not settable here
    (GOOD.replace('"adam-dcgan"]', '"adam-dcgan", "no-such-hack"]'), "'no-such-hack'"),
    (GOOD.replace("lr = 1e-3", "learning_rate = 1e-3"), "'learning_rate'"),  # unknown param
    (GOOD.replace("seeds = 2", "seeds = []"), "no seeds"),
    (GOOD.replace("seeds = 2\n", ""), "'seeds'"),
    (GOOD.replace('dataset = "fake"', 'dataset = "imagenet"'), "'imagenet'"),
    (GOOD + '[design]\nkind = "latin-square"\n', "'latin-square'"),
    (GOOD + '[design]\nkind = "fractional-factorial"\nresolution = 3\n', "resolution IV"),
    (GOOD + '[design]\nkind = "explicit"\n', "design.variants"),
    (GOOD.replace("steps = 5", "steps = 0"), "steps"),
    (GOOD.replace("steps = 5", 'steps = "many"'), "steps"),
    # a protocol key under features = [] names why it cannot apply, not "unknown key"
    (GOOD.replace("features = []", "features = []\nval_every = 3"),
     "features = [] scores nothing, so 'val_every' would do nothing"),
    ('reuse = [""]\n' + GOOD, "reuse is blank, which would read the working directory"),
    (GOOD + '[design]\nkind = "explicit"\n[design.variants]\nv = ["batch-norm", "batch-norm"]\n',
     "[design.variants].v lists 'batch-norm' twice"),
]


@pytest.mark.parametrize("text, needle", BAD)
def test_bad_files_raise_naming_the_problem(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        from ablate.grid.driver import prepare

        prepare(f, tmp_path / "results")
    assert needle in str(err.value)


@pytest.mark.parametrize("text, needle", [BAD[0], BAD[1], BAD[4], BAD[6],
                                          (GOOD + '[design]\nkind = "explicit"\n'
                                           '[design.variants]\nx = ["noisy-labels"]\n', "not in scope")])
def test_cli_exits_2_and_writes_nothing(tmp_path, text, needle, capsys, monkeypatch):
    from ablate.cli import main  # the CLI in this process: its exit code and its stderr

    f = tmp_path / "bad.toml"
    f.write_text(text)
    monkeypatch.chdir(tmp_path)
    code = main(["grid", str(f), "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err
    assert not (tmp_path / "results").exists()
