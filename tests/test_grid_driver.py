"""Run keys, the store's claims, the run function and the grid driver (in-process)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ablate import Hack, registry
from ablate.config import TrainConfig
from ablate.grid.driver import prepare, run_grid
from ablate.grid.executors import InlineExecutor
from ablate.grid.keys import CODE_VERSION, key_of
from ablate.grid.store import Status, Store, load_experiment_meta, load_frame

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "experiments/smoke.toml"


def _key(**kw) -> str:
    base = dict(dataset="fake", steps=20, batch_size=32, ngf=8, ndf=8)
    return key_of(TrainConfig(**{**base, **kw}), {"features": []})[0]


def test_key_is_the_resolved_config_not_the_machine():
    k = _key(hacks=("batch-norm",))
    assert k == _key(hacks=("batch-norm",), device="cpu", threads=2, log_every=5)
    assert k == _key(hacks=("batch-norm",), params=(("noisy-labels", "p", 0.3),))  # disabled hack
    assert k != _key(hacks=("batch-norm",), seed=1)
    assert k != _key(hacks=("batch-norm", "noisy-labels"))
    assert _key(hacks=("noisy-labels",)) != _key(hacks=("noisy-labels",),
                                                 params=(("noisy-labels", "p", 0.3),))
    assert k != _key(hacks=("batch-norm",), steps=21)
    cfg = key_of(TrainConfig(dataset="fake"), {"features": ["classifier"], "n": 10})[1]
    assert cfg["code_version"] == CODE_VERSION and cfg["evaluation"]["n"] == 10
    assert "git_commit" not in cfg and "versions" not in cfg


def test_claims_are_exclusive_and_dead_claims_reclaimable(tmp_path):
    a, b = Store(tmp_path), Store(tmp_path)
    tok = a.claim("k1")
    assert tok and b.claim("k1") is None  # a live claim (this pid) is not reclaimable
    assert a.commit("k1", tok, Status.DONE, lambda: None, wall_time_s=1.0)
    assert b.claim("k1") is None  # done is final
    assert not a.commit("k1", tok, Status.DONE, _never)  # a claim commits once
    # A claim by a dead process on this host is stale at once.
    tok2 = a.claim("k2")
    a.db.execute("UPDATE runs SET pid = ? WHERE key = 'k2'", (_dead_pid(),))
    tok3 = b.claim("k2")
    assert tok3 and tok3 != tok2
    assert not a.commit("k2", tok2, Status.DONE, _never)  # the old owner lost it: no publish
    # Another host: stale only once its heartbeat is old.
    a.claim("k3")
    a.db.execute("UPDATE runs SET host = 'elsewhere', heartbeat = ? WHERE key = 'k3'", (time.time(),))
    assert b.claim("k3") is None
    a.db.execute("UPDATE runs SET heartbeat = ? WHERE key = 'k3'", (time.time() - 3600,))
    assert b.claim("k3")
    # Failed keys come back only when asked.
    t = a.claim("k4")
    a.fail("k4", t, "boom")
    assert b.claim("k4") is None and b.claim("k4", retry_failed=True)
    assert [e["event"] for e in a.events() if e["key"] == "k1"] == ["claim", "done"]


def _never() -> None:
    raise AssertionError("a commit without the claim must not publish")


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _grid(path: Path, results: Path, **kw):
    grid = prepare(path, results, threads=1)  # no oversubscription
    return run_grid(grid, InlineExecutor(threads=1), progress=False,
                    log=lambda m: None, **kw)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _smoke_text(**replace: str) -> str:
    text = SMOKE.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return text


def test_smoke_grid_inline_then_nothing_to_do_and_frame(tmp_path):
    results = tmp_path / "res"
    s1 = _grid(SMOKE, results)
    assert s1.planned == 10 and s1.trained == 10 and s1.counts == {"done": 10}
    s2 = _grid(SMOKE, results)
    assert s2.trained == 0 and s2.reused == 10
    frame = load_frame(results)
    assert len(frame) == 10 and set(frame["status"]) == {"done"}
    assert list(frame.columns[:9]) == ["key", "variant", "seed", "status", "diverged_step",
                                       "wall_time_s", "train_time_s", "images_per_s", "run_dir"]
    assert {"hack:batch-norm", "hack:adam-dcgan", "hack:label-smoothing"} <= set(frame.columns)
    all_off = frame[frame["variant"] == "all-off"]
    assert not all_off["hack:batch-norm"].any() and frame[frame.variant == "all-on"]["hack:adam-dcgan"].all()
    for d in frame["run_dir"]:
        assert {"config.json", "generator.pt", "result.json", "run.json"} <= {p.name for p in Path(d).iterdir()}
    assert (frame["train_time_s"] > 0).all() and (frame["images_per_s"] > 0).all()
    meta = load_experiment_meta(results)
    assert meta["reference"]["batch-norm"] == {"on": "all-on", "off": "-batch-norm"}
    assert [v["name"] for v in meta["variants"]][0] == "all-on"
    assert not any((results / "tmp").iterdir())


def test_divergence_is_recorded_and_the_grid_goes_on(tmp_path):
    exp = _write(tmp_path, "div.toml", _smoke_text(**{
        'scope = ["batch-norm", "adam-dcgan", "label-smoothing"]':
            'scope = ["batch-norm", "adam-dcgan", "label-smoothing"]\n'
            '[hacks.params]\nadam-dcgan = { lr = 1e30 }',
        "seeds = [0, 1]": "seeds = [0]"}))
    summary = _grid(exp, tmp_path / "res")
    frame = load_frame(tmp_path / "res").set_index("variant")
    # adam-dcgan (on in all-on, -batch-norm, -label-smoothing) carries the absurd lr.
    assert frame.loc["all-on", "status"] == "diverged"
    assert frame.loc["all-on", "diverged_step"] >= 1
    assert frame.loc["-adam-dcgan", "status"] == "done" and frame.loc["all-off", "status"] == "done"
    assert summary.counts["diverged"] == 3 and summary.counts["done"] == 2
    assert _grid(exp, tmp_path / "res").trained == 0  # diverged is final, not retried


_FAIL = {"on": True}


class _Explodes(Hack):
    """A test-only hack whose generator wrapper raises while switched on."""

    name = "test-explodes"
    on = "raises"
    off = "nothing"

    def wrap_generator(self, g):
        if _FAIL["on"]:
            raise RuntimeError("boom (test)")
        return g


@pytest.fixture
def explodes():
    """Register the test-only hack for one test (a registry entry must not leak)."""

    registry.register_hack(_Explodes)
    yield _Explodes
    registry.unregister_hack(_Explodes.name)


def test_failed_runs_are_retried_only_when_asked(tmp_path, explodes):
    exp = _write(tmp_path, "fail.toml", _smoke_text(**{
        'scope = ["batch-norm", "adam-dcgan", "label-smoothing"]': 'scope = ["batch-norm", "test-explodes"]',
        'kind = "leave-one-out"': 'kind = "add-one-in"', "seeds = [0, 1]": "seeds = [0]"}))
    res = tmp_path / "res"
    s = _grid(exp, res)
    assert s.counts == {"done": 2, "failed": 2}  # +test-explodes and all-on fail
    frame = load_frame(res).set_index("variant")
    assert "boom (test)" in frame.loc["+test-explodes", "error"]
    # The dry run plans as the grid runs: failed keys skipped unless asked (it counted
    # them "to run" while the grid trained none).
    from ablate.grid.status import dry_run_lines

    plan = [line for line in dry_run_lines(prepare(exp, res, threads=1)) if line.startswith("runs:")]
    assert plan[0].endswith("2 already finished, 0 to run (2 failed, skipped without --retry-failed)")
    plan = dry_run_lines(prepare(exp, res, threads=1), retry_failed=True)
    assert any(line.startswith("runs:") and line.endswith("2 already finished, 2 to run") for line in plan)
    _FAIL["on"] = False
    try:
        assert _grid(exp, res).trained == 0  # failed keys are left alone...
        s = _grid(exp, res, retry_failed=True)  # ...unless asked
        assert s.trained == 2 and s.counts == {"done": 4}
    finally:
        _FAIL["on"] = True
    assert load_frame(res).set_index("variant").loc["+test-explodes", "attempts"] == 2


def test_rebenchmark_trains_only_variants_with_the_new_hack(tmp_path, explodes):
    """Add a hack to an experiment's scope: every finished run is reused."""
    import importlib.util

    new = "spectral-norm" if importlib.util.find_spec("ablate_spectral_norm") else "test-explodes"
    _FAIL["on"] = False
    try:
        for kind in ("add-one-in", "leave-one-out"):
            # 4 steps, not 20: which keys train or are reused does not depend on the budget.
            short = {"steps = 20": "steps = 4", "log_every = 10": "log_every = 2"}
            old = _write(tmp_path, f"old-{kind}.toml",
                         _smoke_text(**short, **{'kind = "leave-one-out"': f'kind = "{kind}"'}))
            grown = _write(tmp_path, f"new-{kind}.toml", _smoke_text(**short, **{
                'kind = "leave-one-out"': f'kind = "{kind}"',
                '"label-smoothing"]': f'"label-smoothing", "{new}"]'}))
            res = tmp_path / f"res-{kind}"
            first = _grid(old, res)
            before = {r["key"]: r["finished"] for r in Store(res).runs()}
            second = _grid(grown, res)
            frame = load_frame(res)
            with_new = frame[frame[f"hack:{new}"]]
            # Exactly the keys of variants that enable the new hack were trained...
            assert second.trained == with_new["key"].nunique() == len(set(with_new["key"]) - set(before))
            # ...and every other planned run is an old key, untouched.
            others = frame[~frame[f"hack:{new}"]]
            assert set(others["key"]) <= set(before)
            after = {r["key"]: r["finished"] for r in Store(res).runs()}
            assert all(after[k] == before[k] for k in before)
            if kind == "add-one-in":  # all-off and each +old-hack are reused
                assert set(with_new["variant"]) == {f"+{new}", "all-on"}
            else:  # the old all-on is the new "-<new hack>"
                old_all_on = set(Store(res).runs()[i]["key"] for i in range(first.keys)
                                 if Store(res).runs()[i]["variant"] == "all-on")
                assert set(frame[frame.variant == f"-{new}"]["key"]) == old_all_on
    finally:
        _FAIL["on"] = True


def test_dry_run_writes_nothing(tmp_path, capsys):
    from ablate.cli import main

    assert main(["grid", str(REPO / "experiments/factorial.toml"), "--dry-run",
                 "--results-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "resolution IV" in out and "runs: 64 (32 variants x 2 seeds)" in out
    assert "aliasing" in out and "strided-downsample×strided-upsample" in out
    assert not (tmp_path / "r").exists()
    assert main(["grid", str(REPO / "experiments/default.toml"), "--dry-run",
                 "--results-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "runs: 39 (13 variants x 3 seeds)" in out and "adam-dcgan: all-on vs -adam-dcgan" in out


def test_evaluated_runs_fill_the_metric_columns(tmp_path):
    """With [evaluation] features, each run is scored before commit; load_frame flattens it."""
    exp = _write(tmp_path, "ev.toml", _smoke_text(**{
        "features = []": 'features = ["classifier"]\nn = 200\nval_every = 10\nval_n = 100',
        "seeds = [0, 1]": "seeds = [0]",
        'scope = ["batch-norm", "adam-dcgan", "label-smoothing"]': 'scope = ["batch-norm"]'}))
    _grid(exp, tmp_path / "res")
    frame = load_frame(tmp_path / "res")
    assert len(frame) == 2 and (frame["status"] == "done").all()
    for col in ("last.classifier.fid", "last.classifier.kid_mean", "last.classifier.modes",
                "best.classifier.fid", "last.classifier.precision"):
        assert frame[col].notna().all() and (frame[col] >= 0).all(), col
    for d in frame["run_dir"]:
        metrics = json.loads((Path(d) / "metrics.json").read_text())
        assert metrics["protocol"]["n"] == 200  # the protocol that entered the key
