"""Regression (issue 19): a wrapper that packs two samples per D input (PacGAN2) gives one
logit and one feature row per pack; the hooked D update splits them into real and fake
packs (before: every pack went to the real side and the fake side got none), packs the
targets, and the plain path trains too."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ablate import Hack, registry
from ablate.config import TrainConfig
from ablate.errors import ConfigError
from ablate.training.resolve import resolve
from ablate.training.steps import pack_size, pack_targets, split_packed
from ablate.training.loop import train

SEEN: list[dict] = []


class Pack(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x):
        n, c, h, w = x.shape
        return x.reshape(n // self.k, self.k * c, h, w)


class _PacGAN2(Hack):
    name = "test-pacgan2"
    on = off = "test"

    def wrap_discriminator(self, d, recipe, info):
        for i, m in enumerate(d):
            if isinstance(m, nn.Conv2d):  # the input conv sees two stacked images
                assert m.in_channels == info.image_shape[0]
                d[i] = nn.Conv2d(2 * m.in_channels, m.out_channels, m.kernel_size, m.stride,
                                 m.padding, bias=m.bias is not None)
                break
        return nn.Sequential(Pack(2), d)


class _Probe(Hack):
    """Records what a d_penalty sees (features as feature matching and R1 use them)."""

    name = "test-pac-probe"
    on = off = "test"

    def d_penalty(self, ctx):
        rec = {"side": ctx.side}
        for k in ("out_real", "out_fake", "features_real", "features_fake", "t_real", "t_fake"):
            v = getattr(ctx, k)
            rec[k] = None if v is None else v.detach().clone()
        if ctx.real is not None:
            rec["direct_real"] = [t.detach().clone() for t in ctx.discriminate(ctx.real) if t is not None]
        if ctx.fake is not None:
            rec["direct_fake"] = [t.detach().clone() for t in ctx.discriminate(ctx.fake) if t is not None]
        SEEN.append(rec)
        return None


@pytest.fixture
def registered():
    for cls in (_PacGAN2, _Probe):
        registry.register_hack(cls)
    yield
    for cls in (_PacGAN2, _Probe):
        registry.unregister_hack(cls.name)


def _cfg(*hacks):
    return TrainConfig(dataset="fake", steps=2, batch_size=8, seed=3, ngf=8, ndf=8,
                       latent_dim=16, device="cpu", threads=1, log_every=1, hacks=hacks)


@pytest.mark.parametrize("separate", [False, True])
def test_packed_d_splits_real_and_fake_packs(registered, tmp_path, separate):
    SEEN.clear()
    hacks = ("test-pacgan2", "test-pac-probe") + (("separate-batches",) if separate else ())
    train(resolve(_cfg(*hacks)), tmp_path / "run")
    assert SEEN
    for rec in SEEN:
        for side in ("real", "fake"):
            out, feat = rec[f"out_{side}"], rec[f"features_{side}"]
            if separate and rec["side"] != side:
                assert out is None and feat is None
                continue
            assert out.shape == (4,) and feat.shape[0] == 4  # 8 images in 4 packs per side
            assert rec[f"t_{side}"].shape == (4,)
            direct_out, direct_feat = rec[f"direct_{side}"]  # D on that side's rows alone
            torch.testing.assert_close(feat, direct_feat, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(out, direct_out, rtol=1e-5, atol=1e-6)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(0 < r["d_real"] < 1 and 0 < r["d_fake"] < 1 for r in log if "d_real" in r)


def test_packed_d_on_the_plain_path(registered, tmp_path):
    train(resolve(_cfg("test-pacgan2")), tmp_path / "run")
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(0 < r["d_real"] < 1 and 0 < r["d_fake"] < 1 for r in log if "d_real" in r)


def test_packing_helpers():
    assert pack_size(16, 16, 8) == 1 and pack_size(16, 8, 8) == 2
    with pytest.raises(ConfigError, match="real and fake rows apart"):
        pack_size(12, 3, 6)  # packs of 4 would straddle the boundary
    t = torch.tensor([1.0, 0.8, 0.0, 0.2])
    torch.testing.assert_close(pack_targets(t, 2), torch.tensor([0.9, 0.1]))
    assert pack_targets(t, 4) is t
    r, f = split_packed(torch.arange(8), 8, 16)
    assert r.tolist() == [0, 1, 2, 3] and f.tolist() == [4, 5, 6, 7]
