"""Edge cases of the metric computations (ablate/metrics/fid.py, prdc.py, modes.py,
stacked.py and evaluate.mode_summary) that test_metrics and test_report_stacked leave
open (a mutation audit): each test plants a small synthetic input (fixed seeds) and
checks the output against an independent computation — FID from ``scipy.linalg.sqrtm``
of the covariances, KID as the unbiased MMD² with the cubic polynomial kernel
(Bińkowski et al. 2018) written from the formula, precision/recall/density/coverage
from brute-force numpy k-NN distances (Kynkäänniemi et al. 2019, Naeem et al. 2020),
KL from ``scipy.stats.entropy`` / ``scipy.special.rel_entr``, mode counts with exact ``fractions`` or by hand —
never against the implementation's own helpers or earlier output.

Found by mutating those modules one operator at a time (comparisons, arithmetic,
constants, and/or, min/max, argument order): each test here fails on at least one
mutant that the quick tests of test_metrics, test_report_stacked and
test_report_failures let pass."""

from __future__ import annotations

import inspect
import itertools
import math
import time
from types import SimpleNamespace
from fractions import Fraction

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy import special, stats
from torchmetrics.image.kid import KernelInceptionDistance

from ablate import data
from ablate.errors import ConfigError
from ablate.metrics import fid as fidm
from ablate.metrics import modes
from ablate.metrics import stacked as mstacked
from ablate.metrics.evaluate import mode_summary
from ablate.metrics.features import FeatureNet, Passthrough
from ablate.metrics.prdc import knn_sq_radii, prdc


# --------------------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------------------
def _fid_ref(x, y) -> float:
    """Fréchet distance of two Gaussians fitted to the rows (unbiased covariances)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _mmd2_ref(x, y) -> float:
    """Unbiased MMD² with k(a, b) = (a·b / d + 1)³: the mean of k over distinct pairs
    within each set, minus twice the mean over all cross pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    d, m, n = x.shape[1], len(x), len(y)

    def k(a, b):
        return (a @ b.T / d + 1.0) ** 3

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.sum() / (m * n))


def _dist(a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def _radii_ref(x, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest row, the row itself being the 0-th."""
    return np.sort(_dist(x, x), axis=1)[:, k]


def _prdc_ref(real, fake, k_pr: int, k_dc: int) -> dict:
    """Precision, recall, density, coverage by brute force, strict ``<`` against radii."""
    d = _dist(real, fake)  # (real, fake)
    r_pr, r_dc, f_pr = _radii_ref(real, k_pr), _radii_ref(real, k_dc), _radii_ref(fake, k_pr)
    return {"precision": float((d < r_pr[:, None]).any(0).mean()),
            "recall": float((d < f_pr[None, :]).any(1).mean()),
            "density": float((d < r_dc[:, None]).sum() / (k_dc * d.shape[1])),
            "coverage": float((d.min(1) < r_dc).mean())}


def _covered_exact(gen, real, min_frac: Fraction) -> list[bool]:
    """The share rule in exact rationals: gen/n >= min_frac * real/total and gen > 0."""
    n, total = sum(gen), sum(real)
    return [g > 0 and Fraction(g, n) >= min_frac * Fraction(r, total) for g, r in zip(gen, real)]


# --------------------------------------------------------------------------------------
# fid.py: FID, KID, the KID subset size, cached real statistics
# --------------------------------------------------------------------------------------
def test_fid_of_unequal_sets_matches_scipy_and_is_zero_for_a_set_against_itself():
    """fid_from_features on 300 vs 200 correlated, shifted float64 features equals the
    sqrtm formula; a set against itself scores 0 (up to sqrtm's error)."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 6))
    b = rng.normal(size=(200, 6)) @ (np.eye(6) + 0.4 * rng.normal(size=(6, 6))) + 0.7
    ours = fidm.fid_from_features(torch.from_numpy(a), torch.from_numpy(b))
    assert ours == pytest.approx(_fid_ref(a, b), rel=1e-6)
    assert fidm.fid_from_features(torch.from_numpy(a), torch.from_numpy(a)) == pytest.approx(0.0, abs=1e-6)


def test_kid_with_the_subset_as_large_as_both_sets_is_the_unbiased_mmd():
    """With 40 real and 40 fake samples every subset of 40 is a permutation of the whole
    sets, so the KID mean is the unbiased MMD² of the full sets (cubic polynomial kernel,
    gamma = 1/d) and the std over subsets is 0; the adapted size is reported."""
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(40, 5)), 0.8 * rng.normal(size=(40, 5)) + 0.3
    mean, std, size = fidm.kid_from_features(torch.from_numpy(real), torch.from_numpy(fake),
                                             subset_size=1000, subsets=4)
    assert size == 40
    assert mean == pytest.approx(_mmd2_ref(real, fake), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)
    # More real than fake: the size is the fake count whatever the order of the sets
    mean2, _, size2 = fidm.kid_from_features(torch.from_numpy(np.vstack([real, real[:9]])),
                                             torch.from_numpy(fake), subset_size=1000, subsets=2)
    assert size2 == 40 and mean2 > 0
    # The default requested size is torchmetrics' default subset size (1000)
    default = inspect.signature(KernelInceptionDistance).parameters["subset_size"].default
    big = torch.from_numpy(rng.normal(size=(1001, 2)))
    assert fidm.kid_from_features(big, big + 1.0, subsets=1)[2] == default == 1000


@pytest.mark.parametrize("args, size", [((5, 7, 9), 5), ((9, 5, 7), 5), ((9, 7, 5), 5),
                                        ((2, 2, 2), 2), ((2, 100, 100), 2), ((100, 3, 2), 2)])
def test_kid_subset_size_is_the_smallest_of_the_three_from_two_up(args, size):
    """min(requested, n_real, n_gen), whichever argument is smallest; 2 is allowed."""
    assert fidm.kid_subset_size(*args) == size


@pytest.mark.parametrize("args", [(1, 50, 50), (50, 1, 50), (50, 50, 1), (0, 50, 50)])
def test_kid_subset_size_below_two_is_refused(args):
    """A size under 2 (the unbiased within-set term divides by m(m-1)) is a ConfigError."""
    with pytest.raises(ConfigError, match="at least 2"):
        fidm.kid_subset_size(*args)


def test_cached_real_statistics_loaded_into_the_states_give_reference_fid_and_kid():
    """Real statistics written by hand (feature sum, second-moment sum, n, features) and
    put into a make_fid / make_kid state by load_real, then fed generated features:
    FID equals the sqrtm formula, KID (subset = both set sizes) the unbiased MMD²."""
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) * 1.3 - 0.2
    stats_ = {"feature_sum": torch.from_numpy(real.sum(0)), "cov_sum": torch.from_numpy(real.T @ real),
              "n": 30, "features": torch.from_numpy(real)}
    fid = fidm.make_fid(Passthrough(4))
    fidm.load_real(stats_, fid)
    fid.update(torch.from_numpy(fake), real=False)
    assert float(fid.compute()) == pytest.approx(_fid_ref(real, fake), rel=1e-6)
    kid = fidm.make_kid(Passthrough(4), subset_size=30, subsets=3)
    fidm.load_real(stats_, None, kid)
    kid.update(torch.from_numpy(fake), real=False)
    mean, std = fidm.compute_kid(kid)
    assert mean == pytest.approx(_mmd2_ref(real, fake), rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_metric_states_keep_the_real_side_across_reset():
    """make_fid's state keeps its real features through reset() (as its docstring says)
    and so does make_kid's: after a reset and a new generated set, FID is the sqrtm
    formula and KID the unbiased MMD² against the real set fed before the reset. make_kid's
    default number of subsets is torchmetrics' own default."""
    rng = np.random.default_rng(8)
    real, old, new = rng.normal(size=(25, 3)), rng.normal(size=(25, 3)) + 3.0, rng.normal(size=(25, 3)) * 0.7
    fid = fidm.make_fid(Passthrough(3))
    kid = fidm.make_kid(Passthrough(3), subset_size=25, subsets=2)
    for metric in (fid, kid):
        metric.update(torch.from_numpy(real), real=True)
        metric.update(torch.from_numpy(old), real=False)
        metric.reset()
        metric.update(torch.from_numpy(new), real=False)
    assert float(fid.compute()) == pytest.approx(_fid_ref(real, new), rel=1e-6)
    assert fidm.compute_kid(kid, seed=3)[0] == pytest.approx(_mmd2_ref(real, new), rel=1e-9)
    default = inspect.signature(KernelInceptionDistance).parameters["subsets"].default
    assert fidm.make_kid(Passthrough(3), subset_size=5).subsets == default == 100


class _PoolNet(FeatureNet):
    """A toy feature net: 2x3 average-pooled pixels (6 features); its logits are 2 groups
    of 3 classes (class code base 3, 9 classes): two pooled values per group and a third
    class at -1 that no image ever gets, so the codes 2, 5, 6, 7, 8 never occur."""

    name = "toy-pool"
    num_features = 6

    def __init__(self):
        super().__init__()
        self.last_logits = None

    def extract(self, x):
        f = torch.nn.functional.adaptive_avg_pool2d(x, (2, 3)).reshape(x.shape[0], 6)
        g = f.reshape(-1, 2, 3)[..., :2]
        self.last_logits = torch.cat([g, -torch.ones(g.shape[0], 2, 1)], -1)
        return f


def test_real_stats_of_a_toy_feature_net_match_numpy():
    """real_stats on the 1000 mnist-5k test images (n above the split size: all of them, in
    order; batches of 128 leave a remainder) equals the features computed in one go: the
    feature sum, the second-moment sum X'X, n, the k-NN radii by brute force for k = 2, 4
    (by default k = 3, 5) and the base-3 class histogram of the two logit groups, padded to
    9 classes. With n = 300, the rows are 300 distinct test images in increasing index order."""
    images = data.load("mnist-5k", "test").images
    x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255.0, (2, 3)).reshape(-1, 6)
    full = x.double().numpy()
    s = fidm.real_stats("mnist-5k", "test", _PoolNet(), 5000, (2, 4), batch_size=128)
    assert s["n"] == 1000 and s["meta"]["n"] == 1000
    np.testing.assert_allclose(s["features"].double().numpy(), full, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s["feature_sum"].numpy(), full.sum(0), rtol=1e-6)
    np.testing.assert_allclose(s["cov_sum"].numpy(), full.T @ full, rtol=1e-6)
    assert sorted(s["sq_radii"]) == [2, 4]
    for k in (2, 4):
        np.testing.assert_allclose(s["sq_radii"][k].double().numpy(), _radii_ref(full, k) ** 2,
                                   rtol=1e-3, atol=1e-3)
    lg = full.reshape(-1, 2, 3)[..., :2].argmax(-1)
    assert s["class_counts"].tolist() == np.bincount(3 * lg[:, 0] + lg[:, 1], minlength=9).tolist()

    # Default ks: the protocol's precision/recall and density/coverage k (3 and 5)
    dflt = fidm.real_stats("mnist-5k", "test", _PoolNet(), 5000)
    assert sorted(dflt["sq_radii"]) == [3, 5]
    for k in (3, 5):
        np.testing.assert_allclose(dflt["sq_radii"][k].double().numpy(), _radii_ref(full, k) ** 2,
                                   rtol=1e-3, atol=1e-3)

    sub = fidm.real_stats("mnist-5k", "test", _PoolNet(), 300, (2,), batch_size=128)
    f = sub["features"].double().numpy()
    assert sub["n"] == 300 and f.shape == (300, 6)
    idx = [int(np.argmin(np.abs(full - row).sum(1))) for row in f]
    assert all(np.allclose(full[i], row, atol=1e-6) for i, row in zip(idx, f))
    assert idx == sorted(idx) and len(set(idx)) == 300
    np.testing.assert_allclose(sub["feature_sum"].numpy(), f.sum(0), rtol=1e-6)


# --------------------------------------------------------------------------------------
# prdc.py: k-NN radii, precision/recall/density/coverage
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 4, 37, 1024])
def test_knn_sq_radii_match_brute_force_for_any_chunk(chunk):
    """Squared k-th neighbour distances (self = 0-th) of 37 points, one of them duplicated,
    for k = 1, 2, 5, in row blocks of 1, 4, 37 and more than all rows."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(37, 3)).astype(np.float32)
    x[9] = x[20]  # a duplicate: its 1st neighbour is at distance 0
    for k in (1, 2, 5):
        got = knn_sq_radii(torch.from_numpy(x), k, chunk).double().numpy()
        np.testing.assert_allclose(got, _radii_ref(x, k) ** 2, rtol=1e-5, atol=1e-5)
    assert knn_sq_radii(torch.from_numpy(x), 1, chunk)[9] == 0.0


@pytest.mark.parametrize("chunk", [7, 1024])
def test_prdc_matches_brute_force_with_distinct_ks(chunk):
    """45 real vs 33 fake points of another distribution, k_pr = 2 and k_dc = 4 (distinct,
    so precision/recall cannot borrow the density/coverage radii), chunked or not; then
    the default ks (3, 5); then with the real radii passed in (both ks, or only one)."""
    rng = np.random.default_rng(5)
    real = rng.normal(size=(45, 3)).astype(np.float32)
    fake = (1.3 * rng.normal(size=(33, 3)) + 0.5).astype(np.float32)
    r, f = torch.from_numpy(real), torch.from_numpy(fake)
    ref = _prdc_ref(real, fake, 2, 4)
    assert 0 < ref["precision"] < 1 and 0 < ref["recall"] < 1 and 0 < ref["coverage"] < 1
    assert prdc(r, f, k_pr=2, k_dc=4, chunk=chunk) == pytest.approx(ref, abs=1e-12)
    assert prdc(r, f, chunk=chunk) == pytest.approx(_prdc_ref(real, fake, 3, 5), abs=1e-12)
    radii = {k: torch.from_numpy(_radii_ref(real, k) ** 2) for k in (2, 4)}
    assert prdc(r, f, 2, 4, real_sq_radii=radii, chunk=chunk) == pytest.approx(ref, abs=1e-12)
    assert prdc(r, f, 2, 4, real_sq_radii={4: radii[4]}, chunk=chunk) == pytest.approx(ref, abs=1e-12)
    swapped = _prdc_ref(fake, real, 2, 4)  # the roles are not symmetric
    assert prdc(f, r, 2, 4, chunk=chunk) == pytest.approx(swapped, abs=1e-12)


def test_prdc_ties_at_the_radius_are_outside_the_ball():
    """Points on a 1-D integer grid (exact squared distances, perfect squares) make many
    real-fake distances equal a k-NN radius: those count as outside (strict ``<``), as in
    the brute-force reference, for every one of the four numbers; and a hand-made tie."""
    rng = np.random.default_rng(6)
    real = np.c_[rng.integers(0, 25, 30), np.zeros(30)].astype(np.float32)
    fake = np.c_[rng.integers(0, 25, 20), np.zeros(20)].astype(np.float32)
    d = _dist(real, fake)
    assert (d == _radii_ref(real, 3)[:, None]).any() and (d == _radii_ref(fake, 2)[None, :]).any()
    for k_pr, k_dc in ((2, 3), (3, 5)):
        ours = prdc(torch.from_numpy(real), torch.from_numpy(fake), k_pr, k_dc, chunk=8)
        assert ours == pytest.approx(_prdc_ref(real, fake, k_pr, k_dc), abs=1e-12)
    # By hand, k = 1: reals 0, 3, 10, 13 all have radius 3; the fake at -3 lies exactly on
    # the ball of 0 and in no other, the fakes at 100 and 101 far away: precision 0.
    real1 = torch.tensor([[0.0], [3.0], [10.0], [13.0]])
    fake1 = torch.tensor([[-3.0], [100.0], [101.0]])
    assert prdc(real1, fake1, 1, 1)["precision"] == 0.0
    # A tie whose squared distance is not a perfect square (6): radii kept as square roots
    # and squared again round up (sqrt(6)^2 = 6.0000005 in float32) and counted the fake at
    # (-2, -1, -1), exactly on the ball of (0, 0, 0), as inside: 1/3, 1/3, 0.25 for 0, 0, 0.
    real3 = np.array([[0, 0, 0], [1, 1, 2], [20, 20, 20], [21, 21, 22]], np.float32)
    fake3 = np.array([[-2, -1, -1], [40, 40, 40], [41, 41, 42]], np.float32)
    ref3 = _prdc_ref(real3, fake3, 1, 1)
    assert (ref3["precision"], ref3["density"], ref3["coverage"]) == (0.0, 0.0, 0.0)
    assert prdc(torch.from_numpy(real3), torch.from_numpy(fake3), 1, 1) == pytest.approx(ref3, abs=1e-12)


# --------------------------------------------------------------------------------------
# modes.py: histograms, predicted labels, KL, modes covered
# --------------------------------------------------------------------------------------
def test_histogram_and_predicted_labels_by_hand():
    """Histogram of a 2-D label tensor padded to num_classes; labels from (N, C) logits
    (argmax), (N, 1, C) (argmax), (N, 2, 4) (4·c0 + c1) and (N, 3, 10) (100·c0 + 10·c1 + c2)."""
    h = modes.histogram(torch.tensor([[0, 3], [3, 1]]), 6)
    assert h.dtype == torch.float64 and h.tolist() == [1, 1, 0, 2, 0, 0]
    rng = np.random.default_rng(7)
    flat = rng.normal(size=(8, 5))
    assert modes.predictions(torch.from_numpy(flat)).tolist() == flat.argmax(1).tolist()
    assert modes.predictions(torch.from_numpy(flat[:, None, :])).tolist() == flat.argmax(1).tolist()
    two = rng.normal(size=(8, 2, 4))
    c = two.argmax(-1)
    assert modes.predictions(torch.from_numpy(two)).tolist() == (4 * c[:, 0] + c[:, 1]).tolist()
    three = rng.normal(size=(8, 3, 10))
    c = three.argmax(-1)
    assert modes.predictions(torch.from_numpy(three)).tolist() == (100 * c[:, 0] + 10 * c[:, 1] + c[:, 2]).tolist()


def test_kl_divergence_of_unnormalised_counts_against_scipy():
    """KL(p || q) of counts with different totals equals scipy.stats.entropy(p, q) (which
    normalises); zero-count classes of p add nothing; a class q never shows gets q = 1e-12
    (scipy.special.rel_entr on the floored shares)."""
    p = np.array([5.0, 0.0, 3.0, 12.0])
    q = np.array([2.0, 7.0, 1.0, 4.0])
    assert modes.kl_divergence(torch.from_numpy(p), torch.from_numpy(q)) == pytest.approx(
        stats.entropy(p, q), rel=1e-12)
    floored = np.maximum(p / p.sum(), 1e-12)  # q's class 1 is p's zero class
    assert modes.kl_divergence(torch.from_numpy(q), torch.from_numpy(p)) == pytest.approx(
        float(special.rel_entr(q / q.sum(), floored).sum()), rel=1e-12)
    p2, q2 = np.array([1.0, 1.0]), np.array([1.0, 0.0])
    assert modes.kl_divergence(torch.from_numpy(p2), torch.from_numpy(q2)) == pytest.approx(
        0.5 * math.log(0.5 / 1.0) + 0.5 * math.log(0.5 / 1e-12), rel=1e-12)


def test_mode_metrics_share_rule_in_exact_fractions():
    """Every count vector of 3 classes with entries 0..4, against real histograms with a
    zero class and without, for min_frac 1/2, 1/4 and 1: the covered classes are those
    with gen/n >= min_frac·real share and gen > 0, in exact rationals (ties covered; a
    class that neither set shows is not a mode); num_modes, n and KL (scipy) beside."""
    for real in ((2, 1, 1), (0, 3, 1), (1, 1, 6)):
        for min_frac in (Fraction(1, 2), Fraction(1, 4), Fraction(1)):
            for gen in itertools.product(range(5), repeat=3):
                if sum(gen) == 0:
                    continue
                m = modes.mode_metrics(torch.tensor(gen, dtype=torch.float64),
                                       torch.tensor(real, dtype=torch.float64), float(min_frac))
                assert m["modes"] == sum(_covered_exact(gen, real, min_frac)), (gen, real, min_frac)
                assert m["num_modes"] == 3 and m["n_mode_samples"] == sum(gen)
                q = np.maximum(np.array(real, float) / sum(real), 1e-12)
                assert m["kl"] == pytest.approx(float(special.rel_entr(np.array(gen) / sum(gen), q).sum()),
                                                rel=1e-9, abs=1e-15)


def test_mode_metrics_count_rule_and_uniform_reference():
    """min_count = 2: a class with exactly 2 samples is covered, 1 is not, whatever the
    real shares; real_counts = None compares with the uniform distribution; the recorded
    rule names the count rule or the share rule, whichever was applied."""
    gen = torch.tensor([2.0, 1.0, 0.0, 5.0, 3.0], dtype=torch.float64)
    m = modes.mode_metrics(gen, None, min_count=2)
    assert m["modes"] == 3 and m["num_modes"] == 5 and m["n_mode_samples"] == 11
    assert m["mode_rule"] == "count >= 2"  # the rule recorded beside the count
    assert modes.mode_metrics(gen, None, 0.5)["mode_rule"] == "share >= 0.5 x real share"
    assert m["kl"] == pytest.approx(stats.entropy(gen.numpy(), np.ones(5)), rel=1e-12)
    real = torch.tensor([100.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    m2 = modes.mode_metrics(gen, real, min_count=2)
    assert m2["modes"] == 3 and m2["kl"] == pytest.approx(stats.entropy(gen.numpy(), real.numpy()), rel=1e-12)
    m1 = modes.mode_metrics(gen, None, min_count=1)
    assert m1["modes"] == 4


def test_mode_summary_counts_classes_against_the_real_histogram_or_1000_stacked_modes():
    """evaluate.mode_summary: 10-class labels are counted against the real histogram with
    the share rule (both histograms returned as integer lists); stacked labels against
    1000 uniform modes, one sample each, with no histograms."""
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 2 + [9] * 18)
    real_counts = torch.tensor([10.0] * 10)
    out = mode_summary(labels, {"classifier": {"class_counts": real_counts}}, False, 0.25)
    hand = np.bincount(labels.numpy(), minlength=10)
    # share >= 0.25 x 0.1 = 2.5%: classes 0, 1 and 9 (2% for class 2 is not enough)
    assert out["modes"] == 3 and out["num_modes"] == 10 and out["n_mode_samples"] == 100
    assert out["class_counts"] == hand.tolist() and out["real_class_counts"] == [10] * 10
    q = np.full(10, 0.1)
    assert out["kl"] == pytest.approx(stats.entropy(hand, q), rel=1e-9)
    st = mode_summary(torch.tensor([5, 5, 998, 123]), {}, True, 0.25)
    assert st["modes"] == 3 and st["num_modes"] == 1000 and "class_counts" not in st
    assert st["kl"] == pytest.approx(stats.entropy(np.bincount([5, 5, 998, 123], minlength=1000), np.ones(1000)))


# --------------------------------------------------------------------------------------
# evaluate.py: scoring several samplers with a toy feature net
# --------------------------------------------------------------------------------------
class _ToyClassifier(_PoolNet):
    """_PoolNet under the name ``classifier`` (mode metrics read its logits)."""

    name = "classifier"


def _toy_features(images01: torch.Tensor) -> np.ndarray:
    x = torch.nn.functional.adaptive_avg_pool2d(images01, (2, 3))
    return x.reshape(-1, 6).double().numpy()


@pytest.mark.parametrize("max_batch", [250, 4096])
def test_score_many_equals_the_references_for_each_sampler(max_batch):
    """score_many with a toy 'classifier' (6 pooled pixels; logits = 2 groups of 3) on the
    1000 mnist-5k test images, three samplers read in batches of 300 (the last one short),
    one feature-net call per sampler (max_batch 250) or one for all (4096): each good
    sampler's FID (sqrtm), KID (subset 1000 = both sets: the unbiased MMD²), PRDC (brute
    force, k = 3 / 5), modes (exact share rule at 1/10 of the real share) and KL (rel_entr)
    match the references; the sampler that turns non-finite in its 2nd batch gets None."""
    from ablate.config import EvalProtocol
    from ablate.metrics.evaluate import NON_FINITE, Scoring, score_many

    test = data.load("mnist-5k", "test").images
    train = data.load("mnist-5k", "train").images
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    # float images in [0, 1] (8-bit values, as the generators' are after quantisation);
    # the train split is stored sorted by class: its first 1000 images are a collapsed set
    gens = {"mixed": train[perm[:1000]].float() / 255, "sorted": train[:1000].float() / 255}
    bad = torch.zeros(1000, 1, 28, 28)
    bad[400] = math.nan
    scorings = [Scoring(lambda s, c, g=g: g[s:s + c]) for g in gens.values()]
    scorings.append(Scoring(lambda s, c: bad[s:s + c]))
    protocol = EvalProtocol(n=1000, batch_size=300, kid_subsets=2, kid_subset_size=1000)
    t0 = time.perf_counter()
    out, prov = score_many(scorings, "mnist-5k", protocol, nets={"classifier": _ToyClassifier()},
                           max_batch=max_batch)
    elapsed = time.perf_counter() - t0
    # time_s is the call's wall time; the components are disjoint parts of it
    assert 0 < prov["time_s"] <= elapsed + 1e-3
    assert all(v >= 0 for v in prov["timing_s"].values())
    assert sum(prov["timing_s"].values()) <= prov["time_s"] + 1e-3 * len(prov["timing_s"])
    assert out[2] is None and scorings[2].error == NON_FINITE
    assert prov["n_real"] == {"classifier": 1000} and prov["kid_subset_size"] == {"classifier": 1000}
    real = _toy_features(test.float() / 255)
    lr = real.reshape(-1, 2, 3)[..., :2].argmax(-1)
    real_counts = np.bincount(3 * lr[:, 0] + lr[:, 1], minlength=9)
    for (name, images), m in zip(gens.items(), out):
        fake = _toy_features(images)
        c = m["classifier"]
        assert c["n_gen"] == 1000 and c["n_real"] == 1000 and c["kid_subset_size"] == 1000
        assert c["fid"] == pytest.approx(_fid_ref(real, fake), rel=1e-5), name
        assert c["kid_mean"] == pytest.approx(_mmd2_ref(real, fake), rel=1e-3, abs=1e-6), name
        ref = _prdc_ref(real, fake, 3, 5)
        for key in ref:
            assert c[key] == pytest.approx(ref[key], abs=2e-3), (name, key)
        lf = fake.reshape(-1, 2, 3)[..., :2].argmax(-1)
        counts = np.bincount(3 * lf[:, 0] + lf[:, 1], minlength=9)
        assert c["class_counts"] == counts.tolist() and c["real_class_counts"] == real_counts.tolist()
        assert c["modes"] == sum(_covered_exact(counts.tolist(), real_counts.tolist(), Fraction(1, 10)))
        q = np.maximum(real_counts / real_counts.sum(), 1e-12)
        assert c["kl"] == pytest.approx(float(special.rel_entr(counts / counts.sum(), q).sum()), rel=1e-9)


# --------------------------------------------------------------------------------------
# stacked.py: the per-channel classifier's score on stacked images
# --------------------------------------------------------------------------------------
def test_stacked_score_with_digits_below_five_compares_with_1000_uniform_modes():
    """Triples whose digits are all below 5 (codes up to 444, so a histogram sized by its
    largest code would be too short): modes and KL — of the predicted triples and of the
    true labels — are against 1000 uniform modes (rel_entr with q = 1/1000), beside the
    all-three-right and per-channel accuracies counted by hand."""
    rng = np.random.default_rng(9)
    true = rng.integers(0, 5, (60, 3))
    pred = true.copy()
    pred[::4, 1] = (pred[::4, 1] + 1) % 5  # every 4th sample: the middle digit misread
    pred[::7, 2] = (pred[::7, 2] + 2) % 5
    labels = 100 * true[:, 0] + 10 * true[:, 1] + true[:, 2]
    out = mstacked.score(torch.from_numpy(pred), torch.from_numpy(labels))
    code = 100 * pred[:, 0] + 10 * pred[:, 1] + pred[:, 2]

    def kl_uniform(c):
        p = np.bincount(c, minlength=1000) / len(c)
        return float(special.rel_entr(p, np.full(1000, 1e-3)).sum())

    right = pred == true
    assert out["stacked_test_accuracy"] == pytest.approx(np.mean(right.all(1)))
    assert out["stacked_channel_accuracy"] == pytest.approx([1.0, 0.75, 1 - 9 / 60])
    assert out["stacked_test_modes"] == len(set(code.tolist()))
    assert out["stacked_test_kl"] == pytest.approx(kl_uniform(code), rel=1e-12)
    assert out["stacked_test_true_modes"] == len(set(labels.tolist()))
    assert out["stacked_test_true_kl"] == pytest.approx(kl_uniform(labels), rel=1e-12)


@pytest.mark.parametrize("dataset, channels", [("cifar10", 3), ("stacked-mnist-5k", 1)])
def test_stacked_accuracy_refuses_what_is_not_a_three_digit_stacked_set(dataset, channels, tmp_path, monkeypatch):
    """Either condition alone refuses: 3-channel images of a 10-class set (CIFAR-10), or
    1-channel images under a 1000-class stacked name; nothing is measured or cached."""
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))
    split = type("Split", (), {"images": torch.zeros(4, channels, 4, 4, dtype=torch.uint8),
                               "labels": torch.zeros(4, dtype=torch.long), "__len__": lambda self: 4})()
    monkeypatch.setattr(mstacked, "load", lambda name, which: split)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(10))
    with pytest.raises(ConfigError, match="not a stacked dataset of 3 digits"):
        mstacked.stacked_accuracy(dataset, net, "k0")
    assert not list(tmp_path.rglob("*.json"))


def test_score_many_with_only_inception_features_still_counts_modes_with_the_classifier():
    """features = ("inception",): FID/PRDC come from the 'inception' net (a second toy, 3x2
    pooling) and match the references; the classifier runs only for the mode metrics,
    which are counted against its real-split histogram, with no FID under 'classifier'."""
    from ablate.config import EvalProtocol
    from ablate.metrics.evaluate import Scoring, score_many

    class _Incep(FeatureNet):
        name, num_features = "inception", 6

        def extract(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, (3, 2)).reshape(x.shape[0], 6)

    test = data.load("mnist-5k", "test").images.float() / 255
    gen = data.load("mnist-5k", "train").images[:1000].float() / 255
    protocol = EvalProtocol(n=1000, batch_size=400, kid_subsets=1, kid_subset_size=1000, features=("inception",))
    [m], _ = score_many([Scoring(lambda s, c: gen[s:s + c])], "mnist-5k", protocol,
                        nets={"classifier": _ToyClassifier(), "inception": _Incep()})

    def pool32(x):
        return torch.nn.functional.adaptive_avg_pool2d(x, (3, 2)).reshape(-1, 6).double().numpy()

    real, fake = pool32(test), pool32(gen)
    assert m["inception"]["fid"] == pytest.approx(_fid_ref(real, fake), rel=1e-5)
    assert m["inception"]["precision"] == pytest.approx(_prdc_ref(real, fake, 3, 5)["precision"], abs=2e-3)
    assert "fid" not in m["classifier"]
    lf = _toy_features(gen).reshape(-1, 2, 3)[..., :2].argmax(-1)
    lr = _toy_features(test).reshape(-1, 2, 3)[..., :2].argmax(-1)
    assert m["classifier"]["class_counts"] == np.bincount(3 * lf[:, 0] + lf[:, 1], minlength=9).tolist()
    assert m["classifier"]["real_class_counts"] == np.bincount(3 * lr[:, 0] + lr[:, 1], minlength=9).tolist()


def test_score_many_gives_a_uint8_sampler_beside_a_float_one_the_same_numbers():
    """Samplers that share one feature-net call are concatenated: a uint8 sampler (0-255)
    beside a float one ([0, 1]) was promoted to floats 0-255, then clamped to [0, 1] by the
    nets. The same images as uint8 and as floats now score alike, alone or together."""
    from ablate.config import EvalProtocol
    from ablate.metrics.evaluate import Scoring, score_many

    images = data.load("mnist-5k", "train").images[:600]
    as_float = images.float() / 255
    protocol = EvalProtocol(n=600, batch_size=200, kid_subsets=1, kid_subset_size=600)

    def score(*samplers):
        out, _ = score_many([Scoring(f) for f in samplers], "mnist-5k", protocol,
                            nets={"classifier": _ToyClassifier()}, max_batch=4096)
        return [m["classifier"] for m in out]

    together = score(lambda s, c: images[s:s + c], lambda s, c: as_float[s:s + c])
    alone = score(lambda s, c: as_float[s:s + c])[0]
    for m in together:
        assert m["fid"] == pytest.approx(alone["fid"], rel=1e-9)
        assert m["class_counts"] == alone["class_counts"] and m["precision"] == alone["precision"]


class _DigitByMean(FeatureNet):
    """A toy stacked classifier: per channel, digit = round(mean pixel x 9); features are the
    three channel means and their squares."""

    name, num_features = "classifier", 6

    def extract(self, x):
        m = x.mean((2, 3))  # (N, 3)
        self.last_logits = torch.nn.functional.one_hot((m * 9).round().long().clamp(0, 9), 10).float()
        return torch.cat([m, m * m], 1)


@pytest.mark.parametrize("n", [250, 300])
def test_stacked_scoring_uses_n_samples_for_fid_and_n_stacked_for_modes(n):
    """Stacked MNIST: batches of 150 up to n_stacked = 500; FID is over exactly the first n
    samples (n = 250: the 2nd batch crosses n; n = 300: a batch starts at n) against the
    real side (sqrtm), and the 1000-mode count and KL to uniform over all 500 samples, by
    hand. (With n = 250 the mode count saw only 450 samples: the cut that kept FID to n
    dropped samples 250-299 from the mode count too.)"""
    from ablate.config import EvalProtocol
    from ablate.metrics.evaluate import Scoring, score_many

    images = data.load("stacked-mnist-5k", "test").images[:700].float() / 255
    protocol = EvalProtocol(n=n, n_stacked=500, batch_size=150, kid_subsets=1, kid_subset_size=50)
    [m], _ = score_many([Scoring(lambda s, c: images[s:s + c])], "stacked-mnist-5k", protocol,
                           nets={"classifier": _DigitByMean()})
    c = m["classifier"]
    real = fidm.real_stats("stacked-mnist-5k", "test", _DigitByMean(), n, (3, 5), 150)["features"]
    means = images.mean((2, 3)).double()
    fake = torch.cat([means, means * means], 1)[:n].numpy()
    assert c["fid"] == pytest.approx(_fid_ref(real.double().numpy(), fake), rel=1e-4)
    assert c["n_gen"] == n and c["num_modes"] == 1000
    assert c["n_mode_samples"] == 500
    d = (means[:500] * 9).round().long().numpy()
    code = 100 * d[:, 0] + 10 * d[:, 1] + d[:, 2]
    assert c["modes"] == len(set(code.tolist()))
    p = np.bincount(code, minlength=1000) / 500
    assert c["kl"] == pytest.approx(float(special.rel_entr(p, np.full(1000, 1e-3)).sum()), rel=1e-9)


def test_generator_sampler_reads_one_seeded_latent_stream_in_order():
    """Reads of 3, 4 and 2 samples are successive randn draws from one generator seeded with
    the given seed (identity generator, [-1, 1] data range mapped to [0, 1]); a read out of
    order is refused."""
    from ablate.metrics.evaluate import generator_sampler

    recipe = SimpleNamespace(latent="gaussian", data_range="symmetric")
    sample = generator_sampler(torch.nn.Identity(), recipe, 5, 7, "cpu")
    got = torch.cat([sample(0, 3), sample(3, 4), sample(7, 2)])
    gen = torch.Generator().manual_seed(7)
    z = torch.cat([torch.randn(k, 5, generator=gen) for k in (3, 4, 2)])
    assert torch.equal(got, ((z + 1) / 2).clamp(0, 1))
    with pytest.raises(RuntimeError, match="in order"):
        sample(0, 3)
