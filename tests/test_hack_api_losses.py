"""Composable losses (issue 19): a hack replacing g_loss/d_loss reaches the loss it
replaces through ``ctx.previous(ctx)``, so top-k (Sinha et al. 2020) can wrap a hinge
loss; checked against an independent computation."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from ablate import Hack, registry
from ablate.config import TrainConfig
from ablate.training.resolve import resolve
from ablate.training.loop import train

SEEN: list[tuple] = []


class _Hinge(Hack):
    name = "test-hinge"
    on = off = "test"

    def d_loss(self, ctx):
        return F.relu(1 - ctx.out_real).mean() + F.relu(1 + ctx.out_fake).mean()

    def g_loss(self, ctx):
        return -ctx.out_fake.mean()


class _TopK(Hack):
    """Keeps the k fakes D rates most real, and applies the loss it overrides to them."""

    name = "test-topk"
    on = off = "test"
    overrides = ("test-hinge",)

    def g_loss(self, ctx):
        k = ctx.out_fake.shape[0] // 2
        idx = ctx.out_fake.topk(k).indices
        top = dataclasses.replace(ctx, out_fake=ctx.out_fake[idx], fake=ctx.fake[idx],
                                  features_fake=None)
        loss = ctx.previous(top)
        SEEN.append(("g", ctx.out_fake.detach().clone(), loss.detach().clone()))
        return loss

    def d_loss(self, ctx):  # a weighted chain: twice the loss it replaces
        loss = ctx.previous(ctx)
        SEEN.append(("d", ctx.out_real.detach().clone(), ctx.out_fake.detach().clone(),
                     loss.detach().clone()))
        return 2 * loss


class _Weighted(Hack):
    """Three times the G loss of the hack it overrides (top-k), which wraps the hinge loss:
    a chain of three where only neighbours declare ``overrides``."""

    name = "test-weighted"
    on = off = "test"
    overrides = ("test-topk",)

    def g_loss(self, ctx):
        return 3 * ctx.previous(ctx)


@pytest.fixture
def registered():
    for cls in (_Hinge, _TopK, _Weighted):
        registry.register_hack(cls)
    yield
    for cls in (_Hinge, _TopK, _Weighted):
        registry.unregister_hack(cls.name)


def _run(tmp_path, *hacks):
    SEEN.clear()
    plan = resolve(TrainConfig(dataset="fake", steps=3, batch_size=8, seed=2, ngf=8, ndf=8,
                               latent_dim=16, device="cpu", threads=1, log_every=1, hacks=hacks))
    train(plan, tmp_path / "run")
    return [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]


def test_topk_wraps_hinge(registered, tmp_path):
    log = _run(tmp_path, "test-hinge", "test-topk")
    g = [s for s in SEEN if s[0] == "g"]
    d = [s for s in SEEN if s[0] == "d"]
    assert len(g) == 3 and len(d) == 3
    for (_, out_fake, loss), rec in zip(g, log):
        want = -out_fake.topk(4).values.mean()  # hinge's G loss over the top half
        torch.testing.assert_close(loss, want)
        assert rec["loss_g"] == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
    for (_, out_real, out_fake, loss), rec in zip(d, log):
        want = F.relu(1 - out_real).mean() + F.relu(1 + out_fake).mean()
        torch.testing.assert_close(loss, want)
        assert rec["loss_d"] == pytest.approx(2 * want.item(), rel=1e-5, abs=1e-6)


def test_topk_alone_wraps_the_default_losses(registered, tmp_path):
    log = _run(tmp_path, "test-topk")
    for _, out_fake, loss in [s for s in SEEN if s[0] == "g"]:
        top = out_fake.topk(4).values
        want = F.binary_cross_entropy_with_logits(top, torch.ones_like(top))
        torch.testing.assert_close(loss, want)
    for (_, out_real, out_fake, loss) in [s for s in SEEN if s[0] == "d"]:
        want = F.binary_cross_entropy_with_logits(
            torch.cat([out_real, out_fake]), torch.cat([torch.ones(8), torch.zeros(8)]))
        torch.testing.assert_close(loss, want)
    assert log


def test_a_chain_of_three_needs_only_each_neighbours_override(registered, tmp_path):
    """weighted overrides top-k, which overrides hinge: weighted need not name hinge (the docs'
    "which in turn sees the one *it* overrides"); the G loss is 3 x hinge over the top half."""
    log = _run(tmp_path, "test-hinge", "test-topk", "test-weighted")
    g = [s for s in SEEN if s[0] == "g"]
    assert len(g) == 3
    for (_, out_fake, loss), rec in zip(g, log):
        want = -out_fake.topk(4).values.mean()
        torch.testing.assert_close(loss, want)  # what top-k computed over the hinge
        assert rec["loss_g"] == pytest.approx(3 * want.item(), rel=1e-5, abs=1e-6)
