"""The results-directory contract (``ablate/layout.py``, issue #18 item 1): the file
names of a run directory and an experiment's results directory, ``experiment.json``'s
record, and that no other module spells those names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ablate import layout
from ablate.errors import ConfigError
from ablate.layout import ExperimentDir, ExperimentRecord, RunDir

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted((ROOT / "results").glob("*/experiment.json"))


def test_run_dir_names():
    d = RunDir("x")
    assert isinstance(d.path, Path)
    names = {"config": "config.json", "log": "log.jsonl", "result": "result.json",
             "metrics": "metrics.json", "run_info": "run.json", "samples": "samples.png",
             "generator": "generator.pt", "generator_best": "generator_best.pt",
             "discriminator": "discriminator.pt", "train_state": "train_state.pt",
             "train_state_prev": "train_state.prev.pt"}
    for attr, name in names.items():
        assert getattr(d, attr) == Path("x") / name, attr
    assert d.train_states == (Path("x/train_state.pt"), Path("x/train_state.prev.pt"))
    assert layout.RUN_FILES == ("config.json", "result.json", "run.json")


def test_experiment_dir_names():
    e = ExperimentDir("res")
    assert e.experiment_json == Path("res/experiment.json")
    assert e.db == Path("res/runs.sqlite")
    assert e.runs == Path("res/runs") and e.tmp == Path("res/tmp") and e.broken == Path("res/broken")
    assert e.report == Path("res/REPORT.md")
    assert e.tables == Path("res/tables") and e.figures == Path("res/figures")
    assert e.effects_csv == Path("res/tables/effects.csv")
    assert e.anchor == Path("res/anchor.json")
    assert e.run("abc") == RunDir("res/runs/abc") and str(e.run_rel("abc")) == "runs/abc"
    assert e.attempt("abc", "t1") == RunDir("res/tmp/abc-t1")
    assert (layout.SUMMARY_MD, layout.SUMMARY_DIR) == ("SUMMARY.md", "summary")


def test_the_old_constant_names_are_the_layout_s():
    from ablate.grid import db, frame, rundirs
    from ablate.training import checkpoint

    assert db.DB_NAME == layout.DB_NAME and frame.EXPERIMENT_JSON == layout.EXPERIMENT_JSON
    assert checkpoint.STATE_FILES == layout.TRAIN_STATES == rundirs.TRAIN_STATES
    assert rundirs.RUN_FILES == layout.RUN_FILES and rundirs.METRICS == layout.METRICS


def test_run_dir_json_round_trip(tmp_path):
    d = RunDir(tmp_path / "run")
    d.write_result({"status": "done", "steps": 3})
    d.write_config({"a": 1})
    d.write_metrics({"m": 2.0})
    d.write_run_info({"key": "k"})
    assert d.read_result() == {"status": "done", "steps": 3} and d.read_config() == {"a": 1}
    assert d.read_metrics() == {"m": 2.0} and d.read_run_info() == {"key": "k"}
    assert d.result.read_text() == json.dumps({"status": "done", "steps": 3}, indent=2) + "\n"
    d.append_log({"step": 1})
    d.append_log({"step": 2})
    with open(d.log, "a") as f:
        f.write('{"step": 3')  # a torn last line
    assert d.read_log() == [{"step": 1}, {"step": 2}]
    assert d.read(layout.RESULT) == {"status": "done", "steps": 3} and d.read("nope.json") is None


@pytest.mark.parametrize("path", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_experiment_json_round_trips(path, tmp_path):
    """Every committed experiment.json reads into the record and writes back the same
    JSON, byte for byte (the grid's writer goes through ``to_json``)."""
    doc = json.loads(path.read_text())
    rec = ExperimentRecord.from_json(doc, str(path))
    assert rec.to_json() == doc
    assert list(rec.to_json()) == list(doc)  # key order too
    assert rec == ExperimentDir(path.parent).read_experiment()
    out = ExperimentDir(tmp_path)
    out.write_experiment(rec)
    assert out.experiment_json.read_bytes() == path.read_bytes()


def test_one_comparison_type():
    from ablate.experiment.design import Comparison
    from ablate.report import results

    assert results.Comparison is Comparison
    meta = results.parse_meta(ExperimentDir(ROOT / "results" / "default").read_experiment())
    assert meta.comparisons and all(type(c) is Comparison for c in meta.comparisons)


def test_malformed_record_names_the_key():
    with pytest.raises(ConfigError, match="'design'"):
        ExperimentRecord.from_json({"experiment": {}, "hacks": []}, "x/experiment.json")
    with pytest.raises(ConfigError, match="'hacks' has the wrong type"):
        ExperimentRecord.from_json({"experiment": {}, "design": {}, "hacks": "a"})
    with pytest.raises(ConfigError, match="JSON object"):
        ExperimentRecord.from_json([])


# Run-directory and results-directory names, as string literals ("config.json",
# 'runs.sqlite') or as path parts (`/ "runs"`, `/ "tmp"`): only ablate/layout.py spells them.
NAMES = ("config.json", "log.jsonl", "result.json", "metrics.json", "run.json", "samples.png",
         "generator.pt", "generator_best.pt", "discriminator.pt", "train_state.pt",
         "train_state.prev.pt", "experiment.json", "runs.sqlite", "REPORT.md", "SUMMARY.md",
         "effects.csv", "anchor.json")
LITERAL = re.compile(r"""(["'])(?:""" + "|".join(re.escape(n) for n in NAMES) + r""")\1""")
PATH_PART = re.compile(r"""(?:/\s*|Path\()(["'])(?:runs|tmp|broken|tables|figures|summary)\1""")
ALLOWED = {
    "layout.py",  # the contract itself
    # `ablate train`'s default output root (`runs/<dataset>-...` in the working
    # directory), not a results directory: matched by PATH_PART's Path("runs").
    "cli/train.py",
}


def test_no_module_but_layout_spells_a_results_file_name():
    pkg = ROOT / "ablate"
    offenders = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        if rel in ALLOWED:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if LITERAL.search(line) or PATH_PART.search(line):
                offenders.append(f"ablate/{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_cli_train_spells_no_run_file_name():
    """cli/train.py is allowed its default output root only."""
    text = (ROOT / "ablate" / "cli" / "train.py").read_text()
    assert not LITERAL.search(text)
