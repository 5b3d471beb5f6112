"""Stacked MNIST in the report (#17 item 3): modes and KL per variant with 95% t intervals,
the collapse verdicts per hack, the per-channel classifier's accuracy on stacked test
images, and all-on / all-off beside the published DCGAN figures. Every number is checked
against an independent computation (numpy / scipy by hand)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from ablate.experiment.design import build_design
from ablate.experiment.spec import parse_experiment
from ablate.grid.driver import Grid, write_experiment_meta
from ablate.grid.store import Status, Store
from ablate.metrics import stacked as mstacked
from ablate.report import context
from ablate.report import stacked as rstacked
from ablate.report.markdown import _Doc
from ablate.report.results import Results

HACKS = ("batch-norm", "adam-dcgan")
SEEDS = (0, 1, 2)
# Known modes per (variant, seed): batch-norm OFF loses ~300 modes; adam-dcgan OFF changes nothing.
MODES = {"all-on": (990, 998, 975), "-batch-norm": (600, 580, 640), "-adam-dcgan": (985, 996, 980),
         "all-off": (300, 280, 350)}
N_MODE = 26_000
STACKED_INFO = {"name": "classifier", "classifier_dataset": "mnist-5k", "classifier_key": "mnist-5k-abc",
                "classifier_test_accuracy": 0.968, "feature_dim": 384, "stacked_dataset": "stacked-mnist-5k",
                "stacked_pool_train": 4000, "stacked_pool_test": 1000, "stacked_test_accuracy": 0.907,
                "stacked_channel_accuracy": [0.97, 0.968, 0.966], "stacked_test_n": 10000,
                "stacked_test_modes": 1000, "stacked_test_kl": 0.07, "stacked_test_true_modes": 1000,
                "stacked_test_true_kl": 0.06}


def _kl(modes: int, seed: int) -> float:
    """A KL that falls with coverage (log(1000/modes) is a uniform-on-covered generator's)."""
    return math.log(1000 / modes) + 0.01 * seed


def _stacked_results(root: Path, provenance: dict | None = None) -> Path:
    doc = {"name": "stacked-synthetic", "description": "synthetic stacked store", "seeds": list(SEEDS),
           "data": {"dataset": "stacked-mnist-5k"}, "model": {"ngf": 32, "ndf": 32},
           "budget": {"steps": 5000, "batch_size": 64},
           "evaluation": {"features": ["classifier"], "n": 5000, "n_stacked": N_MODE},
           "design": {"kind": "leave-one-out"}, "hacks": {"scope": list(HACKS)}}
    experiment = parse_experiment(doc, "stacked-synthetic")
    design = build_design(experiment.design, experiment.hacks)
    plan = [(v, s) for s in SEEDS for v in design.variants]
    rows = [{"variant": v.name, "seed": s, "key": f"{v.name.strip('-')}-{s}", "hacks": sorted(v.hacks),
             "config": {"seed": s}} for v, s in plan]
    write_experiment_meta(Grid(experiment, design, root, ()), len(rows))
    store = Store(root)
    try:
        store.record_plan(rows)
        for row, (v, s) in zip(rows, plan):
            modes = MODES[v.name][s]
            cls = {"fid": 50.0 + 1000 / modes + s, "kid_mean": 0.05, "kid_std": 1e-3, "modes": modes,
                   "num_modes": 1000, "kl": _kl(modes, s), "mode_rule": "count >= 1", "n_mode_samples": N_MODE}
            metrics = {"last": {"step": 5000, "classifier": cls}, "best": {"step": 4500, "classifier": cls},
                       "protocol": {"features": ["classifier"], "n": 5000, "n_stacked": N_MODE},
                       "provenance": {"dataset": "stacked-mnist-5k",
                                      "features": {"classifier": provenance or STACKED_INFO}}}
            run_dir = root / "runs" / row["key"]
            run_dir.mkdir(parents=True)
            (run_dir / "metrics.json").write_text(json.dumps(metrics))
            token = store.claim(row["key"])
            store.commit(row["key"], token, Status.DONE, lambda: None, steps=5000, wall_time_s=100.0,
                         train_time_s=90.0, eval_time_s=5.0, images_per_s=600.0, metrics=metrics,
                         run_dir=str(run_dir))
    finally:
        store.close()
    return root


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = _stacked_results(tmp_path_factory.mktemp("stacked"))
    c = context.compute(Results.load(root), root).rounded()
    rstacked.write(c, root / "tables")
    return c


def _section(c) -> str:
    d = _Doc(c.out_dir)
    rstacked.section(d, c)
    return d.text()


# ---- metrics: the per-channel classifier on stacked images ---------------------------
def test_digits_decode_the_base10_triples():
    labels = torch.tensor([0, 7, 123, 999, 450])
    assert mstacked.digits(labels).tolist() == [[0, 0, 0], [0, 0, 7], [1, 2, 3], [9, 9, 9], [4, 5, 0]]


def test_score_matches_a_hand_count():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 10, (400, 3))
    pred = true.copy()
    wrong = rng.random((400, 3)) < 0.1  # about 10% of channels misread
    pred[wrong] = (pred[wrong] + 1 + rng.integers(0, 9, wrong.sum())) % 10
    labels = true @ np.array([100, 10, 1])
    out = mstacked.score(torch.from_numpy(pred), torch.from_numpy(labels))
    assert out["stacked_test_accuracy"] == pytest.approx(np.mean((pred == true).all(1)))
    assert out["stacked_channel_accuracy"] == pytest.approx(list((pred == true).mean(0)))
    assert out["stacked_test_n"] == 400
    code = pred @ np.array([100, 10, 1])
    hist = np.bincount(code, minlength=1000)
    assert out["stacked_test_modes"] == int((hist > 0).sum()) == len(set(code.tolist()))
    p = hist[hist > 0] / hist.sum()
    assert out["stacked_test_kl"] == pytest.approx(float(np.sum(p * np.log(p * 1000))))
    assert out["stacked_test_true_modes"] == len(set(labels.tolist()))


class _ByMean(nn.Module):
    """A fake 10-class classifier: digit = round(mean pixel * 9)."""

    def forward(self, x01):
        d = (x01.mean((1, 2, 3)) * 9).round().long()
        return nn.functional.one_hot(d, 10).float()


def test_channel_predictions_read_each_channel():
    digits = torch.tensor([[3, 0, 9], [5, 5, 1]])
    images = (digits.float() / 9)[:, :, None, None].expand(2, 3, 4, 4).contiguous()
    assert mstacked.channel_predictions(_ByMean(), images, batch=4).tolist() == digits.tolist()


def test_stacked_accuracy_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))
    triples = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 0, 0]])
    images = (triples.float() / 9 * 255).round().to(torch.uint8)[:, :, None, None].expand(4, 3, 4, 4)

    class Split:
        def __init__(self, n, imgs=None, labels=None):
            self.images, self.labels, self.n = imgs, labels, n

        def __len__(self):
            return self.n

    calls = []

    def fake_load(name, split):
        calls.append((name, split))
        if name == "stacked-mnist-5k":
            return Split(4, images.contiguous(), triples @ torch.tensor([100, 10, 1]))
        return Split({"train": 3600, "val": 400, "test": 1000}[split])

    monkeypatch.setattr(mstacked, "load", fake_load)
    out = mstacked.stacked_accuracy("stacked-mnist-5k", _ByMean(), "k1")
    assert out["stacked_test_accuracy"] == 1.0 and out["stacked_test_modes"] == 4
    assert out["stacked_pool_train"] == 4000 and out["stacked_pool_test"] == 1000
    n_calls = len(calls)
    assert mstacked.stacked_accuracy("stacked-mnist-5k", _ByMean(), "k1") == out
    assert len(calls) == n_calls  # the second call read the cache


def test_classifier_provenance_carries_the_stacked_accuracy_and_keys_do_not():
    from ablate.metrics.classifier import ClassifierFeatures, ClassifierNet

    net = ClassifierNet((1, 28, 28), 10).eval()
    base = {"dataset": "mnist-5k", "key": "mnist-5k-x", "test_accuracy": 0.97}
    plain = ClassifierFeatures(net, base, 3)
    with_acc = ClassifierFeatures(net, {**base, "stacked_test_accuracy": 0.9, "stacked_test_n": 10}, 3)
    assert with_acc.provenance()["stacked_test_accuracy"] == 0.9
    assert "stacked_test_accuracy" not in plain.provenance()
    assert with_acc.identity() == plain.identity()  # real-statistics caches and run keys unchanged


# ---- report: modes and KL per variant ------------------------------------------------
def test_modes_and_kl_per_variant_match_a_t_interval_by_hand(ctx):
    t = rstacked.modes_frame(ctx).set_index("variant")
    for v, modes in MODES.items():
        x = np.array(modes, float)
        h = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
        assert t.loc[v, "modes_mean"] == pytest.approx(x.mean())
        # intervals clipped to the metrics' ranges: modes [0, 1000], KL [0, log 1000]
        assert (t.loc[v, "modes_low"], t.loc[v, "modes_high"]) == pytest.approx(
            (max(x.mean() - h, 0), min(x.mean() + h, 1000)))
        kl = np.array([_kl(m, s) for s, m in enumerate(modes)])
        hk = stats.t.ppf(0.975, 2) * kl.std(ddof=1) / math.sqrt(3)
        assert (t.loc[v, "kl_low"], t.loc[v, "kl_mean"], t.loc[v, "kl_high"]) == pytest.approx(
            (max(kl.mean() - hk, 0), kl.mean(), min(kl.mean() + hk, math.log(1000))), rel=1e-8)
        assert t.loc[v, "modes_per_seed"] == " ".join(map(str, modes))
        assert t.loc[v, "n_mode_samples"] == N_MODE and t.loc[v, "n"] == 3
        assert t.loc[v, "collapsed"] == 3  # every run misses far more than the rule's few modes


def test_the_section_shows_the_table_and_clips_intervals_to_the_range(ctx):
    text = _section(ctx)
    assert "## Stacked MNIST: modes covered and KL" in text
    assert "N = 26,000 generated samples" in text
    x = np.array(MODES["all-on"], float)
    h = stats.t.ppf(0.975, 2) * x.std(ddof=1) / math.sqrt(3)
    assert x.mean() + h > 1000  # the t interval passes the 1000 modes there are: shown clipped
    assert f"| all-on | 3 (0,1,2) | 26000 | {x.mean():.0f} [{x.mean() - h:.0f}, 1000] |" in text
    assert "modes 0–1000, KL 0–log 1000 = 6.91" in text


def test_the_section_says_what_the_strict_collapse_flag_means(ctx):
    """At 1000 modes the rule flags a run that misses 2 triples: the section says so and
    names the flagged run closest to full coverage (all-on's 998 of 1000, by hand)."""
    text = _section(ctx)
    flagged = [1000 - m for ms in MODES.values() for m in ms if 1000 - m >= 2]
    assert min(flagged) == 2
    assert "The collapse flag (≥ 2 modes missing, the failures rule) is strict at 1000 modes" in text
    assert f"the flagged run closest to full coverage misses {min(flagged)} of 1000" in text


def test_the_collapse_threshold_is_stated_as_the_runs_were_judged():
    from ablate.report.failures import rule_text

    assert rule_text(pd.DataFrame({"rule_modes": [2, 2, 2]})) == "2"
    assert rule_text(pd.DataFrame({"rule_modes": [3, 2, 4]})) == "2–4"  # calibration raised some
    assert rule_text(pd.DataFrame()) == "2"  # no flags: the rule's floor


# ---- report: collapse verdicts ---------------------------------------------------------
def test_collapse_verdicts_match_the_pooled_model_by_hand(ctx):
    v = rstacked.verdict_frame(ctx).set_index("hack")
    # Leave-one-out, balanced seeds: the pooled model's contrast is the mean seed-paired
    # difference ON - OFF; its se uses the residual variance of variant + seed (OLS by hand).
    names = list(MODES)
    y = np.array([[MODES[n][s] for s in SEEDS] for n in names], float)  # variants x seeds
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    df = (len(names) - 1) * (len(SEEDS) - 1)
    sigma2 = (resid ** 2).sum() / df
    se = math.sqrt(2 * sigma2 / len(SEEDS))
    est = {h: y[0].mean() - y[names.index(f"-{h}")].mean() for h in HACKS}
    p = {h: 2 * stats.t.sf(abs(est[h] / se), df) for h in HACKS}
    lo, hi = sorted(HACKS, key=p.get)  # Holm over the two hacks, by hand
    holm = {lo: min(1.0, 2 * p[lo])}
    holm[hi] = max(holm[lo], min(1.0, p[hi]))
    sec = ctx.secondary.set_index(["metric", "hack"])
    for h in HACKS:
        assert v.loc[h, "modes_estimate"] == pytest.approx(est[h])
        assert v.loc[h, "modes_p_holm"] == pytest.approx(holm[h], rel=1e-8)
        half = stats.t.isf(sec.loc[("best.classifier.modes", h), "level"] / 2, df) * se
        assert (v.loc[h, "modes_ci_low"], v.loc[h, "modes_ci_high"]) == pytest.approx(
            (est[h] - half, est[h] + half), rel=1e-8)
    assert v.loc["batch-norm", "modes_verdict"] == "helps" and v.loc["batch-norm", "kl_verdict"] == "helps"
    assert v.loc["adam-dcgan", "modes_verdict"] != "helps"
    assert v.loc["batch-norm", "collapse_pairs"] == 3 and v.loc["batch-norm", "collapse_on_only"] == 0
    text = _section(ctx)
    assert "### Collapse verdicts per hack" in text and "| batch-norm | all-on vs -batch-norm | +381 [" in text


# ---- report: the classifier and the published figures ---------------------------------
def test_the_stacked_accuracy_and_the_uniform_floor_are_shown(ctx):
    text = _section(ctx)
    assert "all three digits right 0.907" in text and "per channel 0.97, 0.968, 0.966" in text
    assert "single-digit test accuracy 0.968" in text
    for n in (10_000, N_MODE):
        exp_modes = 1000 * (1 - (1 - 1 / 1000) ** n)  # by hand: 1000 x P(a mode is seen in n draws)
        assert rstacked.uniform_reference(n) == pytest.approx((exp_modes, 999 / (2 * n)))
    rng = np.random.default_rng(1)  # and by simulation: KL of n uniform draws, 2n KL ~ chi2(999)
    kls = [stats.entropy(np.bincount(rng.integers(0, 1000, N_MODE), minlength=1000), np.ones(1000))
           for _ in range(200)]
    assert np.mean(kls) == pytest.approx(999 / (2 * N_MODE), rel=0.05)
    assert "at their N = 10,000, where uniform draws would give 1000 modes and KL ≈ 0.05" in text
    assert f"N = 26,000 it covers 1000 modes on average and scores KL ≈ {999 / 52000:.3g}" in text
    assert "Base pools: 4,000 training and 1,000 test digits" in text


def test_runs_without_the_stacked_accuracy_say_so(tmp_path):
    info = {k: v for k, v in STACKED_INFO.items() if not k.startswith("stacked_")}
    root = _stacked_results(tmp_path, provenance=info)
    c = context.compute(Results.load(root), root).rounded()
    rstacked.write(c, root / "tables")
    text = _section(c)
    assert "single-digit test accuracy 0.968" in text and "is not in these runs' `metrics.json`" in text


def test_all_on_and_all_off_beside_the_published_figures(ctx):
    p = rstacked.published_frame(ctx, rstacked.modes_frame(ctx))
    pub = p[p["source"] != "this report"].set_index("model")
    assert pub.loc["PacDCGAN2", "modes"] == 1000 and pub.loc["PacDCGAN2", "kl"] == 0.06
    assert sorted(pub["modes"]) == [78.9, 99.0, 1000.0] and sorted(pub["kl"]) == [0.06, 3.40, 4.50]
    ours = p[p["source"] == "this report"].set_index("model")
    assert list(ours.index) == ["DCGAN all-on", "DCGAN all-off"]
    assert ours.loc["DCGAN all-off", "modes"] == pytest.approx(np.mean(MODES["all-off"]))
    text = _section(ctx)
    assert "### Beside the published DCGAN figures" in text
    assert "78.9 ± 6.5" in text and "| 3.4 |" in text
    assert "every triple is drawn from 4,000 training digits (about 400 per digit)" in text
    assert "width 32/32, 5000 generator steps at batch 64" in text
    assert "published on 26,000" in text


def test_published_rows_carry_the_summarys_clipped_intervals(ctx):
    """Our rows beside the published figures show the interval the summary clipped
    (all-on's t interval passes 1000 modes: shown up to 1000), not a second clip of their own."""
    p = rstacked.published_frame(ctx, rstacked.modes_frame(ctx))
    shown = rstacked.published_display(p).set_index("model")
    x = np.array(MODES["all-on"], float)
    h = stats.t.ppf(0.975, 2) * x.std(ddof=1) / math.sqrt(3)
    assert x.mean() + h > 1000
    assert shown.loc["DCGAN all-on", "modes of 1000"] == f"{x.mean():.0f} [{x.mean() - h:.0f}, 1000]"


def test_other_datasets_get_no_stacked_section(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from report_synthetic import make_results

    root = make_results(tmp_path, artefacts=False, extra_runs=False)
    c = context.compute(Results.load(root), root).rounded()
    rstacked.write(c, root / "tables")
    assert not any(k.startswith("stacked") for k in c.tables) and _section(c) == "\n"


def test_the_failures_section_gives_no_class_js_for_mode_counts(ctx):
    """Stacked runs record mode counts, not class histograms: the failures section says JS is
    not computed instead of a median of nothing beside a ten-class calibration."""
    from ablate.report import markdown

    d = _Doc(ctx.out_dir)
    markdown._failures(d, ctx)
    text = d.text()
    assert "A run is *collapsed* when it misses ≥" in text
    assert "Class JS divergence: not computed" in text and "noise floor" not in text
