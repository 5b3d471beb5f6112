"""Parameter axes (``[axes]``): parsing, the crossed design, run keys per level, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ablate.config import TrainConfig
from ablate.errors import ConfigError
from ablate.experiment.axes import apply_level, label, levels
from ablate.experiment.design import build_design
from ablate.experiment.spec import load_experiment
from ablate.grid.keys import key_of, plan_runs
from ablate.training.resolve import resolve

from gridutil import events, experiment, grid_cmd, rows


def _plan(path: Path, tmp_path: Path):
    exp = load_experiment(path)
    design = build_design(exp.design, exp.hacks, exp.axes)
    return exp, design, plan_runs(exp, design, tmp_path / "results")


def test_lr_scale_level_one_keeps_the_keys_and_other_levels_scale_both_optimizers(tmp_path):
    base = experiment(tmp_path, "base.toml")
    axis = experiment(tmp_path, "axis.toml", extra="\n[axes]\nlr_scale = [0.5, 1, 2]\n")
    _, _, runs0 = _plan(base, tmp_path)
    exp, design, runs = _plan(axis, tmp_path)
    assert [a.name for a in exp.axes] == ["lr_scale"] and exp.axes[0].levels == (0.5, 1.0, 2.0)
    assert len(design.variants) == 3 * 5 and len(design.comparisons) == 3 * 3
    assert {c.level for c in design.comparisons} == {"lr_scale=0.5", "lr_scale=1", "lr_scale=2"}
    base_keys = {(r.variant, r.seed): r.key for r in runs0}
    by = {(r.variant, r.seed): r for r in runs}
    for (variant, seed), key in base_keys.items():
        assert by[(f"{variant} @ lr_scale=1", seed)].key == key  # x1: today's keys
        half, double = by[(f"{variant} @ lr_scale=0.5", seed)], by[(f"{variant} @ lr_scale=2", seed)]
        assert len({key, half.key, double.key}) == 3
        r1 = resolve(by[(f"{variant} @ lr_scale=1", seed)].config).recipe
        for side in ("g_optimizer", "d_optimizer"):
            assert getattr(resolve(half.config).recipe, side).lr == getattr(r1, side).lr * 0.5
            assert getattr(resolve(double.config).recipe, side).lr == getattr(r1, side).lr * 2
    assert len({r.key for r in runs}) == len(runs)  # no level shares a run here


def test_a_hack_parameter_axis_shares_the_runs_of_variants_without_the_hack(tmp_path):
    axis = experiment(tmp_path, "axis.toml",
                      extra="\n[axes]\nlabel-smoothing.one_sided = [false, true]\n")
    exp, design, runs = _plan(axis, tmp_path)
    by = {(r.variant, r.seed): r.key for r in runs}
    off = "-label-smoothing @ label-smoothing.one_sided="
    assert by[(off + "false", 0)] == by[(off + "true", 0)]  # no label smoothing: one run
    assert by[("all-off @ label-smoothing.one_sided=false", 0)] == \
        by[("all-off @ label-smoothing.one_sided=true", 0)]
    on = "all-on @ label-smoothing.one_sided="
    assert by[(on + "false", 0)] != by[(on + "true", 0)]
    # the default level is today's key; the other carries the parameter
    base = {(r.variant, r.seed): r.key for r in _plan(experiment(tmp_path, "b.toml"), tmp_path)[2]}
    assert by[(on + "false", 0)] == base[("all-on", 0)]
    cfg = [r.config for r in runs if r.variant == on + "true"][0]
    assert ("label-smoothing", "one_sided", True) in cfg.params


def test_levels_cross_in_order_and_width_sets_both_widths():
    from ablate.experiment.axes import Axis

    axes = (Axis("width", (8, 16)), Axis("lr_scale", (0.5, 1.0)))
    lv = levels(axes)
    assert [label(level) for level in lv] == ["width=8, lr_scale=0.5", "width=8, lr_scale=1",
                                              "width=16, lr_scale=0.5", "width=16, lr_scale=1"]
    params, train = apply_level(lv[2], frozenset(), (), {"ngf": 32, "ndf": 32, "steps": 5})
    assert train == {"ngf": 16, "ndf": 16, "steps": 5, "lr_scale": 0.5}
    params, train = apply_level(lv[1], frozenset(), (), {"ngf": 32})
    assert "lr_scale" not in train  # x1 leaves the TrainConfig as it was


@pytest.mark.parametrize("axes, message", [
    ("lr_scale = []", "non-empty list"),
    ("lr_scale = [0, 1]", "> 0.0"),
    ("lr_scale = [1, 1.0]", "listed twice"),
    ("width = [8.5]", "must be int"),
    ("depth = [1, 2]", "lr_scale, width or <hack>.<param>"),
    ("spectral-norm.x = [1]", "not in scope"),
    ("label-smoothing.nope = [1]", "nope"),
    ("noisy-labels.p = [0.1]", "not in scope"),
    ("label-smoothing.one_sided = [1, 2]", "one_sided"),
])
def test_bad_axes_name_the_axis_and_the_fix(tmp_path, axes, message):
    path = experiment(tmp_path, extra=f"\n[axes]\n{axes}\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert "[axes]" in str(err.value) and message in str(err.value)


def test_axes_need_a_one_factor_design(tmp_path):
    path = experiment(tmp_path, extra="\n[axes]\nlr_scale = [0.5, 1]\n",
                      replace={'kind = "leave-one-out"': 'kind = "full-factorial"'})
    exp = load_experiment(path)
    with pytest.raises(ConfigError, match="one-factor design"):
        build_design(exp.design, exp.hacks, exp.axes)


def test_experiment_json_without_axes_is_unchanged(tmp_path):
    exp = load_experiment(experiment(tmp_path))
    doc = exp.to_dict()
    assert "axes" not in doc and "reuse" not in doc
    design = build_design(exp.design, exp.hacks, exp.axes).to_dict()
    assert all("level" not in v for v in design["variants"])
    assert all(set(c) == {"hack", "on", "off"} for c in design["comparisons"])


def test_lr_scale_is_checked_by_the_train_config():
    for bad in (0, -1, float("nan"), 1e9, True):
        with pytest.raises(ConfigError, match="lr_scale"):
            TrainConfig(dataset="fake", lr_scale=bad)
    key1, _ = key_of(TrainConfig(dataset="fake"), {})
    assert key_of(TrainConfig(dataset="fake", lr_scale=1.0), {})[0] == key1
    assert key_of(TrainConfig(dataset="fake", lr_scale=0.5), {})[0] != key1


def test_reuse_copies_finished_runs_of_the_same_key_and_trains_only_the_rest(tmp_path, capsys):
    """A grid over lr_scale = [1, 2] with reuse of a finished x1 grid trains only x2."""
    from ablate.cli import main  # the `ablate grid` commands in this process (same flags)

    base = experiment(tmp_path, "base.toml", steps=4, scope='["batch-norm"]')
    src = tmp_path / "src"
    assert main(grid_cmd(base, src, "--workers", "1", "--threads", "1")[3:]) == 0, capsys.readouterr().err
    done = rows(src)
    assert len(done) == 2 and all(r["status"] == "done" for r in done.values())
    axis = experiment(tmp_path, "axis.toml", steps=4, scope='["batch-norm"]',
                      extra='\n[axes]\nlr_scale = [1, 2]\n',
                      replace={"seeds = [0]": f'seeds = [0]\nreuse = ["{src}"]'})
    dst = tmp_path / "dst"
    capsys.readouterr()
    assert main(grid_cmd(axis, dst, "--dry-run")[3:]) == 0
    dry = capsys.readouterr()
    assert "2 finished in a reuse directory" in dry.out + dry.err
    assert main(grid_cmd(axis, dst, "--workers", "1", "--threads", "1")[3:]) == 0, capsys.readouterr().err
    after = rows(dst)
    assert len(after) == 4 and all(r["status"] == "done" for r in after.values())
    for key in done:  # copied, with their results, not retrained
        assert key in after
        a = json.loads((src / "runs" / key / "result.json").read_text())
        b = json.loads((dst / "runs" / key / "result.json").read_text())
        assert a == b
    trained = [e for e in events(dst) if e["event"] == "claim"]
    assert len(trained) == 2  # only the x2 level trained
    assert all(r["status"] == "done" for r in rows(src).values()) and len(rows(src)) == 2
