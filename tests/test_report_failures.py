"""Failures as outcomes: the collapse rule's calibration (real data never flagged, two
missing classes always flagged) on a 10-class MNIST-like fixture and on Stacked MNIST's
1000 modes; JS, exact rates and McNemar tests against independent computations."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from report_synthetic import make_results  # noqa: E402

from ablate.metrics.modes import mode_metrics  # noqa: E402
from ablate.report import context, failures  # noqa: E402
from ablate.report.results import Results  # noqa: E402
from ablate.data.stacked import stack  # noqa: E402

MNIST_TEST = np.array([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])  # MNIST test classes


@pytest.mark.parametrize("n", [1000, 5000, 10_000])
def test_mnist_like_real_samples_are_never_flagged_and_two_missing_classes_always_are(n):
    rng = np.random.default_rng(n)
    q = MNIST_TEST / MNIST_TEST.sum()
    rule = failures.calibrate(MNIST_TEST, 10, n, int(MNIST_TEST.sum()), 0.1)  # as run_flags does
    assert rule.modes == 2 and rule.null_prob < failures.NULL_FLAG_PROB
    flag = lambda c: rule.flags(failures.missing_modes(c, MNIST_TEST.astype(float), 0.1))  # noqa: E731
    for _ in range(2000):  # N real test images: a multinomial draw of the real labels
        assert not flag(rng.multinomial(n, q))
    for _ in range(500):  # a generator that misses two classes, any shares on the others
        gone = rng.choice(10, 2, replace=False)
        p = rng.dirichlet(np.full(10, 0.5))
        p[gone] = 0
        assert flag(rng.multinomial(n, p / p.sum()))
    # The missing-mode count is the evaluation's own rule (ablate.metrics.modes).
    for _ in range(200):
        c = rng.multinomial(n, rng.dirichlet(np.full(10, 0.3)))
        mm = mode_metrics(torch.tensor(c, dtype=torch.float64), torch.tensor(MNIST_TEST, dtype=torch.float64))
        assert failures.missing_modes(c, MNIST_TEST.astype(float), 0.1) == 10 - mm["modes"]


def test_stacked_mnist_1000_modes():
    rng = np.random.default_rng(0)
    labels = torch.tensor(rng.choice(10, 10_000, p=MNIST_TEST / MNIST_TEST.sum()))
    images = torch.zeros(10_000, 1, 2, 2, dtype=torch.uint8)
    _, codes = stack(images, labels, 26_000, seed=12)  # the real Stacked-MNIST protocol: 3 digits
    real = np.bincount(codes.numpy(), minlength=1000)
    rule = failures.calibrate(None, 1000, 26_000, None, None, min_count=1)
    assert rule.modes == 2 and rule.null_prob < failures.NULL_FLAG_PROB
    assert not rule.flags(failures.missing_modes(real, np.ones(1000), None, 1))
    share = np.bincount(codes.numpy(), minlength=1000) / 26_000
    for _ in range(200):  # fresh stacked samples of real digits: never flagged
        c = rng.multinomial(26_000, share)
        assert not rule.flags(failures.missing_modes(c, np.ones(1000), None, 1))
    for _ in range(200):  # a generator that misses two of the 1000 modes: always flagged
        p = share.copy()
        p[rng.choice(1000, 2, replace=False)] = 0
        c = rng.multinomial(26_000, p / p.sum())
        assert rule.flags(failures.missing_modes(c, np.ones(1000), None, 1))
    # JS cannot separate two of 1000 modes from sampling noise at 26k: the count does it.
    assert rule.js_two_modes < rule.js_noise


def test_calibration_raises_the_threshold_when_n_is_too_small():
    rule = failures.calibrate(MNIST_TEST, 10, 60, None, 0.1)  # 6 per class: misses happen
    assert rule.modes > 2 and rule.null_prob <= failures.NULL_FLAG_PROB


def test_elementary_symmetric_bound_by_hand():
    p = np.array([0.1, 0.2, 0.3])
    assert failures._at_least(p, 2) == pytest.approx(0.1 * 0.2 + 0.1 * 0.3 + 0.2 * 0.3)


def test_js_divergence_by_hand():
    p, q = np.array([0.0, 0.5, 0.5]), np.array([0.2, 0.4, 0.4])
    m = (p + q) / 2
    kl = lambda a, b: float(np.sum(a[a > 0] * np.log(a[a > 0] / b[a > 0])))  # noqa: E731
    assert failures.js_divergence(p * 7, q * 3) == pytest.approx(0.5 * kl(p, m) + 0.5 * kl(q, m), rel=1e-12)


def test_clopper_pearson_matches_scipy():
    for k, n in ((0, 3), (1, 3), (3, 3), (7, 20)):
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        assert failures.clopper_pearson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_report_failure_tables_match_independent_counts(tmp_path):
    root = make_results(tmp_path, artefacts=True, seeds=(0, 1, 2))
    ctx = context.compute(Results.load(root), tmp_path)
    f = ctx.flags.set_index(["variant", "seed"])
    assert f.loc[("-leaky-relu", 2), "collapsed"] and f.loc[("-leaky-relu", 2), "missing"] == 3
    assert f["collapsed"].sum() == 1
    c = ctx.counts.set_index("variant")
    assert (c.loc["all-on", "diverged"], c.loc["all-on", "finished"]) == (1, 4)
    ci = stats.binomtest(1, 4).proportion_ci(0.95, method="exact")
    assert (c.loc["all-on", "divergence_low"], c.loc["all-on", "divergence_high"]) == pytest.approx((ci.low, ci.high))
    t = ctx.failure_tests.set_index("hack")
    lr = t.loc["leaky-relu"]  # all-on vs -leaky-relu: OFF collapsed at seed 2 only
    assert (lr["collapse_pairs"], lr["collapse_on_only"], lr["collapse_off_only"]) == (3, 0, 1)
    assert lr["collapse_p"] == pytest.approx(stats.binomtest(0, 1, 0.5).pvalue)  # exact McNemar
    assert t.loc["batch-norm", "diverge_pairs"] == 3  # the diverged seed has no OFF partner
    js = ctx.frame.set_index(["variant", "seed"])["best.classifier.js"]
    assert js.loc[("-leaky-relu", 2)] > 10 * js.loc[("all-on", 0)] >= 0
    assert math.isfinite(ctx.flags["js_noise"].iloc[0])
