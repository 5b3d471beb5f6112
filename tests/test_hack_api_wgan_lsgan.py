"""WGAN-GP and LSGAN in examples/ablate-paper-tricks (issue #19, item 4): each loss and
the gradient penalty (its value and its gradient w.r.t. D's weights) against an
independent computation written here, the Recipe WGAN-GP sets, and short training runs
whose logged losses and ``ctx.log`` values are recomputed from what a spy hack saw."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from ablate import DContext, GContext, Hack, Optimizer, Recipe, registry
from ablate.cli import main
from ablate.config import TrainConfig
from ablate.training.models import Discriminator
from ablate.training.resolve import resolve
from ablate.training.loop import resolved_config, train

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "examples/ablate-paper-tricks"
if importlib.util.find_spec("ablate_paper_tricks") is None:  # not installed: load it by path
    sys.path.insert(0, str(PACKAGE))
import ablate_paper_tricks as tricks  # noqa: E402,F401  (registers the hacks)

SHAPE = (1, 28, 28)
NEW = ["wgan-gp", "lsgan"]

from test_hack_api_tricks import _cfg, _log  # noqa: E402  (the same tiny runs as the other tricks)


def _hack(name: str, **params) -> Hack:
    cls = registry.get_hack(name)
    return cls(cls.make_params(params))


# ----- independent computations -------------------------------------------------------
def _gp(d, real, fake, eps, create_graph=True):
    """E[(|grad_x D(x_hat)| - 1)^2] and the norms, one sample at a time (each x_hat_i
    through D alone), the norm as the square root of the sum of squares."""
    norms = []
    for i in range(real.shape[0]):
        x = (eps[i] * real[i] + (1 - eps[i]) * fake[i]).unsqueeze(0).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(d(x).sum(), x, create_graph=create_graph)
        norms.append(g.square().sum().sqrt())
    norms = torch.stack(norms)
    return ((norms - 1) ** 2).mean(), norms


def _d(recipe: Recipe, state: dict) -> Discriminator:
    d = Discriminator(recipe, SHAPE, 8)
    d.load_state_dict(state)
    return d


def _ctx(d, real=None, fake=None, t_real=None, t_fake=None, rng=None, log=None) -> DContext:
    kw = {"log": log} if log is not None else {}
    return DContext(0, Recipe(), real, fake, None if real is None else d(real),
                    None if fake is None else d(fake), t_real, t_fake, None, None,
                    lambda x: (d(x), None), rng if rng is not None else torch.Generator(), **kw)


# ----- both: metadata, `ablate hacks`, training alone and with the built-ins -----------
@pytest.mark.parametrize("name", NEW)
def test_described_listed_and_trains_alone_and_with_the_builtins(name, tmp_path, capsys):
    row = registry.describe(name)
    assert row["source"] and row["on"] and row["off"] and row["version"] == "0.1.0"
    assert row["provider"] in ("ablate-paper-tricks", "ablate_paper_tricks")  # installed / by path
    assert {"d_loss", "g_loss"} <= set(row["hooks"])
    assert not registry.get_hack(name).__module__.startswith("ablate.")
    assert main(["hacks"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.split()[:1] == [name]]
    assert line.split()[1:3] == [row["provider"], "0.1.0"]
    for hacks in ((name,), tuple(registry.builtin_names()) + (name,)):
        run = tmp_path / str(len(hacks))
        assert train(resolve(_cfg(hacks)), run).status == "done"
        cfg = json.loads((run / "config.json").read_text())
        record = next(h for h in cfg["hacks"] if h["name"] == name)
        assert (record["version"], record["provider"]) == (row["version"], row["provider"])
        for rec in _log(run):
            assert all(math.isfinite(rec[k]) for k in ("loss_d", "loss_g")), rec
    # `ablate train` itself, with a parameter through --set.
    param = "wgan-gp.n_critic=2" if name == "wgan-gp" else "lsgan.c=0.5"
    assert main(["train", "--dataset", "fake", "--steps", "3", "--batch-size", "8", "--seed", "1",
                 "--ngf", "8", "--ndf", "8", "--hacks", name, "--set", param, "--device", "cpu",
                 "--threads", "1", "--log-every", "1", "--val-every", "0", "--no-eval",
                 "--out", str(tmp_path / "cli")]) == 0
    cli = _log(tmp_path / "cli")
    assert len(cli) == 3 and all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in cli)
    if name == "wgan-gp":  # ctx.log: the penalty is in every record, and positive
        assert all(r["wgan_gp"] > 0 and r["wgan_grad_norm"] > 0 for r in cli)
    (record,) = json.loads((tmp_path / "cli/config.json").read_text())["hacks"]
    assert record["params"][param.split(".")[1].split("=")[0]] == float(param.split("=")[1])
    # As tests/test_hacks_builtin.py trains every registered hack: one step, batch 2.
    one = TrainConfig(dataset="fake", steps=1, batch_size=2, seed=0, hacks=(name,), ngf=8,
                      ndf=8, device="cpu", log_every=1, threads=1)
    assert train(resolve(one), tmp_path / "b2").status == "done"


def test_every_hack_together_still_plans_and_trains(tmp_path):
    """``--hacks all`` (tests/test_training_loop.py, tests/test_resume.py) needs every overlap
    declared: WGAN-GP's losses win over LSGAN's, hinge's and feature matching's."""
    from ablate.hacks.interactions import select_hooks

    names = registry.expand(["all"])
    assert {"wgan-gp", "lsgan", "hinge-loss", "feature-matching", "ttur"} <= set(names)
    plan = resolve(_cfg(names, steps=1))
    hooks = select_hooks(plan.hacks)
    assert hooks.d_loss.name == hooks.g_loss.name == "wgan-gp"
    assert plan.recipe.d_steps == 5 and plan.recipe.d_optimizer.lr == 1e-4
    assert train(plan, tmp_path / "all").status == "done"
    without = resolve(_cfg([n for n in names if n != "wgan-gp"], steps=1))
    assert select_hooks(without.hacks).d_loss.name == "lsgan"


# ----- WGAN-GP: the Recipe ------------------------------------------------------------
def test_wgan_gp_sets_n_critic_adam_and_layer_norm_in_the_critic():
    alone = resolve(_cfg(("wgan-gp",))).recipe
    opt = Optimizer("adam", 1e-4, (0.0, 0.9))
    assert (alone.d_steps, alone.d_optimizer, alone.g_optimizer) == (5, opt, opt)
    assert (alone.d_norm, alone.g_norm) == ("layer", "none")
    d = Discriminator(alone, SHAPE, 8)
    norms = [m for m in d.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 1 for m in norms)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    # With the built-ins: batch norm stays in G only, adam-dcgan's optimizers give way.
    plan = resolve(_cfg(tuple(registry.builtin_names()) + ("wgan-gp",)))
    assert (plan.recipe.g_norm, plan.recipe.d_norm, plan.recipe.d_steps) == ("batch", "layer", 5)
    assert plan.recipe.d_optimizer == plan.recipe.g_optimizer == opt
    assert plan.recipe.real_target == (0.7, 1.2)  # label smoothing still folds (and is moot)
    over = {o["overrides"]: o for o in resolved_config(plan)["overrides"] if o["hack"] == "wgan-gp"}
    assert over["batch-norm"]["fields"] == ["d_norm"]
    assert set(over["adam-dcgan"]["fields"]) == {"d_optimizer.lr", "d_optimizer.betas",
                                                  "g_optimizer.lr", "g_optimizer.betas"}
    assert not any(o.get("implicit") for o in over.values())  # declared, not implicit
    params = (("wgan-gp", "n_critic", 2), ("wgan-gp", "critic_norm", "none"),
              ("wgan-gp", "lr", "3e-4"), ("wgan-gp", "beta2", 0.99))
    custom = resolve(_cfg(("wgan-gp",), params=params)).recipe
    assert (custom.d_steps, custom.d_norm, custom.d_optimizer) == (
        2, "none", Optimizer("adam", 3e-4, (0.0, 0.99)))
    with pytest.raises(Exception, match="must be one of 'layer', 'none'"):
        resolve(_cfg(("wgan-gp",), params=(("wgan-gp", "critic_norm", "batch"),)))


# ----- WGAN-GP: losses and the penalty ------------------------------------------------
def test_wgan_gp_critic_and_generator_losses_by_hand():
    hack = _hack("wgan-gp")
    out_real, out_fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.3, 4.0])
    both = DContext(0, Recipe(), None, None, out_real, out_fake, None, None, None, None, None, None)
    assert float(hack.d_loss(both)) == pytest.approx(0.7667 - 0.5, abs=1e-4)  # 2.3/3 - 1.5/3
    real_only = DContext(0, Recipe(), None, None, out_real, None, None, None, None, None, None, None)
    assert float(hack.d_loss(real_only)) == pytest.approx(-0.5)
    fake_only = DContext(0, Recipe(), None, None, None, out_fake, None, None, None, None, None, None)
    assert float(hack.d_loss(fake_only)) == pytest.approx(2.3 / 3)
    g = GContext(0, Recipe(), None, None, out_fake, None, None, None)
    assert float(hack.g_loss(g)) == pytest.approx(-2.3 / 3)


def test_wgan_gp_penalty_and_its_gradient_match_independent_computations():
    torch.manual_seed(0)
    d = Discriminator(Recipe(d_norm="layer"), SHAPE, 4).double()  # samples independent
    real = torch.rand(5, *SHAPE, dtype=torch.float64)
    fake = torch.rand(5, *SHAPE, dtype=torch.float64) * 2 - 1
    lam = 7.0
    logged: dict[str, list[float]] = {}
    ctx = _ctx(d, real, fake, rng=torch.Generator().manual_seed(3),
               log=lambda k, v: logged.setdefault(k, []).append(float(v)))
    penalty = _hack("wgan-gp", lam=lam).d_penalty(ctx)
    # Independently: eps_i ~ U[0, 1], one per sample, the generator's first draws.
    eps = torch.rand(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gp, norms = _gp(d, real, fake, eps)
    assert penalty.item() == pytest.approx(lam * gp.item(), rel=1e-10)
    assert gp.item() > 1e-3 and not torch.allclose(norms, torch.ones_like(norms))  # a real penalty
    assert logged == {"wgan_gp": [pytest.approx(gp.item(), rel=1e-10)],
                      "wgan_grad_norm": [pytest.approx(norms.mean().item(), rel=1e-10)],
                      "wgan_w": [pytest.approx((d(real).mean() - d(fake).mean()).item(), rel=1e-10)]}
    # Its gradient w.r.t. D's weights (double backpropagation) ...
    params = [p for p in d.parameters()]
    got = torch.autograd.grad(penalty, params, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(lam * gp, params, allow_unused=True)  # ... is the per-sample one's
    for (n, _), a, b in zip(d.named_parameters(), got, want):
        if a is None or b is None:  # D's last bias: no part of grad_x D
            assert a is None and b is None and n == list(dict(d.named_parameters()))[-1], n
            continue
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-14), n
        if n.endswith("weight"):
            assert a.abs().sum() > 0, n
    # ... and central finite differences agree on a few weights.
    with torch.no_grad():
        for p, g in zip(params, got):
            if g is None:
                continue
            flat, gflat = p.view(-1), g.reshape(-1)
            for j in (0, flat.numel() // 2, flat.numel() - 1):
                h, old = 1e-6, flat[j].item()
                flat[j] = old + h
                with torch.enable_grad():
                    up = lam * _gp(d, real, fake, eps, create_graph=False)[0].item()
                flat[j] = old - h
                with torch.enable_grad():
                    down = lam * _gp(d, real, fake, eps, create_graph=False)[0].item()
                flat[j] = old
                assert (up - down) / (2 * h) == pytest.approx(gflat[j].item(), rel=1e-5, abs=1e-8)


def test_wgan_gp_penalty_with_separate_batches_pairs_the_real_update_with_the_fake_one():
    torch.manual_seed(1)
    d = Discriminator(Recipe(d_norm="layer"), SHAPE, 4).double()
    real, fake = torch.rand(4, *SHAPE, dtype=torch.float64), torch.rand(4, *SHAPE, dtype=torch.float64)
    hack = _hack("wgan-gp")
    assert hack.d_penalty(_ctx(d, real=real)) is None  # real-only: nothing yet
    rng = torch.Generator().manual_seed(9)
    penalty = hack.d_penalty(_ctx(d, fake=fake, rng=rng))
    eps = torch.rand(4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert penalty.item() == pytest.approx(10 * _gp(d, real, fake, eps)[0].item(), rel=1e-10)
    assert hack.d_penalty(_ctx(d, fake=fake)) is None  # the real batch served once


# ----- WGAN-GP and LSGAN trained: the logged numbers, recomputed ------------------------
SEEN: list[dict] = []


class _Spy(Hack):
    """Sorts before both hacks ("aa-"): at each D update (in d_penalty, before theirs) it
    keeps D's inputs, targets, weights and the hooks' rng state; at the G update, G's
    fakes and D's weights."""

    name = "aa-test-loss-spy"
    on = off = "records"

    def _state(self, ctx):
        return {k: v.detach().clone() for k, v in ctx.d.state_dict().items()}

    def d_penalty(self, ctx):
        SEEN.append({"kind": "d", "side": ctx.side, "step": ctx.step, "d": self._state(ctx),
                     "rng": ctx.rng.get_state(),
                     **{k: None if getattr(ctx, k) is None else getattr(ctx, k).detach().clone()
                        for k in ("real", "fake", "t_real", "t_fake")}})
        return None

    def g_penalty(self, ctx):
        SEEN.append({"kind": "g", "step": ctx.step, "d": self._state(ctx),
                     "fake": ctx.fake.detach().clone()})
        return None


@pytest.mark.parametrize("separate", [False, True])
def test_wgan_gp_training_logs_the_penalty_and_losses_it_claims(register, tmp_path, separate):
    register(_Spy)
    SEEN.clear()
    steps, n_critic, lam = 2, 3, 4.0
    hacks = ("wgan-gp", _Spy.name) + (("separate-batches",) if separate else ())
    params = (("wgan-gp", "n_critic", n_critic), ("wgan-gp", "lam", lam))
    plan = resolve(_cfg(hacks, steps=steps, params=params))
    assert train(plan, tmp_path / "run").status == "done"
    sides = ["real", "fake"] if separate else ["mixed"]
    d_seen = [s for s in SEEN if s["kind"] == "d"]
    assert [s["side"] for s in d_seen] == sides * n_critic * steps  # n_critic = d_steps
    log = _log(tmp_path / "run")
    for step, rec in enumerate(log):
        ups = [s for s in d_seen if s["step"] == step]
        gps, ws, losses = [], [], []
        for i, up in enumerate(ups):
            d = _d(plan.recipe, up["d"])
            if up["side"] == "real":  # -E D(x); its batch waits for the fake-side update
                losses.append(-d(up["real"]).mean().item())
                continue
            real = up["real"] if up["real"] is not None else ups[i - 1]["real"]
            rng = torch.Generator()
            rng.set_state(up["rng"])
            gp, _ = _gp(d, real, up["fake"], torch.rand(len(real), generator=rng))
            gps.append(gp.item())
            d_real = _d(plan.recipe, ups[i - 1]["d"])(real) if separate else d(real)
            ws.append(d_real.mean().item() - d(up["fake"]).mean().item())
            losses.append(d(up["fake"]).mean().item() - (0 if separate else d(real).mean().item())
                          + lam * gp.item())
        # loss_d: the last D update's (separate: the mean of its real and fake halves)
        want_d = sum(losses[-2:]) / 2 if separate else losses[-1]
        assert rec["loss_d"] == pytest.approx(want_d, rel=1e-4, abs=1e-6)
        assert rec["wgan_gp"] == pytest.approx(sum(gps) / len(gps), rel=1e-4)
        assert rec["wgan_w"] == pytest.approx(sum(ws) / len(ws), rel=1e-4, abs=1e-6)
        assert rec["wgan_grad_norm"] > 0 and len(gps) == n_critic
        (g_up,) = [s for s in SEEN if s["kind"] == "g" and s["step"] == step]
        want_g = -_d(plan.recipe, g_up["d"])(g_up["fake"]).mean().item()
        assert rec["loss_g"] == pytest.approx(want_g, rel=1e-4, abs=1e-6)
    # the critic moved between its updates: every update is a real optimizer step
    firsts = [next(iter(s["d"].values())) for s in d_seen]
    assert all(not torch.equal(a, b) for a, b in zip(firsts, firsts[1:]))


def test_lsgan_losses_by_hand_and_its_targets():
    hack = _hack("lsgan")
    out_real, out_fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.3])
    both = DContext(0, Recipe(), None, None, out_real, out_fake, torch.ones(2), torch.zeros(2),
                    None, None, None, None)
    # 0.5 * mean((2-1)^2, (0.5-1)^2) + 0.5 * mean((-2)^2, 0.3^2)
    assert float(hack.d_loss(both)) == pytest.approx(0.5 * 1.25 / 2 + 0.5 * 4.09 / 2)
    no_targets = DContext(0, Recipe(), None, None, out_real, out_fake, None, None, None, None, None, None)
    assert float(hack.d_loss(no_targets)) == pytest.approx(float(hack.d_loss(both)))
    g = GContext(0, Recipe(), None, None, out_fake, None, None, None)
    assert float(hack.g_loss(g)) == pytest.approx(0.5 * (9 + 0.49) / 2)
    other = _hack("lsgan", a=-1.0, b=1.0, c=0.0)  # Mao et al.'s other codes
    smooth = DContext(0, Recipe(), None, None, out_real, None, torch.tensor([0.9, 0.0]), None,
                      None, None, None, None)  # a smoothed target, a flipped one
    # codes a + (b - a) t = 0.8 and -1
    assert float(other.d_loss(smooth)) == pytest.approx(0.5 * ((2 - 0.8) ** 2 + 1.5 ** 2) / 2)
    assert float(other.g_loss(g)) == pytest.approx(0.5 * (4 + 0.09) / 2)
    fake_only = DContext(0, Recipe(), None, None, None, out_fake, None, torch.tensor([0.25, 1.0]),
                         None, None, None, None)  # codes -0.5, 1
    assert float(other.d_loss(fake_only)) == pytest.approx(0.5 * (1.5 ** 2 + 0.7 ** 2) / 2)
    assert registry.get_hack("lsgan").overrides == ("hinge-loss", "feature-matching")


def test_lsgan_training_uses_the_loops_smoothed_and_flipped_targets(register, tmp_path):
    register(_Spy)
    SEEN.clear()
    a, b, c = -1.0, 2.0, 0.5
    hacks = ("label-smoothing", "noisy-labels", "lsgan", _Spy.name)
    params = (("lsgan", "a", a), ("lsgan", "b", b), ("lsgan", "c", c), ("noisy-labels", "p", 0.4))
    plan = resolve(_cfg(hacks, steps=3, params=params))
    assert train(plan, tmp_path / "run").status == "done"
    cfg = json.loads((tmp_path / "run/config.json").read_text())
    assert not [o for o in cfg["overrides"] if o["hack"] == "lsgan"]  # it reads the targets
    log = _log(tmp_path / "run")
    flipped = 0
    for step, rec in enumerate(log):
        (up,) = [s for s in SEEN if s["kind"] == "d" and s["step"] == step]
        t_r, t_f = up["t_real"], up["t_fake"]
        assert ((t_r >= 0) & (t_r <= 1.2)).all() and ((t_f >= 0) & (t_f <= 1.2)).all()
        flipped += int((t_r <= 0.3).sum() + (t_f >= 0.7).sum())
        d = _d(plan.recipe, up["d"])
        o_r, o_f = d(up["real"]), d(up["fake"])
        want = 0.5 * ((o_r - (a + (b - a) * t_r)) ** 2).mean() + 0.5 * ((o_f - (a + (b - a) * t_f)) ** 2).mean()
        hard = 0.5 * ((o_r - b) ** 2).mean() + 0.5 * ((o_f - a) ** 2).mean()
        assert rec["loss_d"] == pytest.approx(want.item(), rel=1e-5)
        assert rec["loss_d"] != pytest.approx(hard.item(), rel=1e-3)  # the targets mattered
        (g_up,) = [s for s in SEEN if s["kind"] == "g" and s["step"] == step]
        want_g = 0.5 * ((_d(plan.recipe, g_up["d"])(g_up["fake"]) - c) ** 2).mean()
        assert rec["loss_g"] == pytest.approx(want_g.item(), rel=1e-5)
    assert flipped > 0  # noisy labels flipped some targets, and the loss used them


@pytest.mark.parametrize("hacks", [("separate-batches", "wgan-gp"), ("label-smoothing", "noisy-labels", "lsgan")])
def test_an_interrupted_run_resumes_bit_for_bit(tmp_path, hacks):
    """Neither hack keeps state across steps (WGAN-GP's remembered real batch lives within
    one step), and their draws come from ctx.rng, which the checkpoint saves."""
    from ablate.training.loop import StopRequested

    cfg = _cfg(hacks, steps=6, checkpoint_every=2, params=(("wgan-gp", "n_critic", 2),))
    train(resolve(cfg), tmp_path / "whole")
    asked = []
    with pytest.raises(StopRequested, match="step 4"):
        train(resolve(cfg), tmp_path / "cut", stop=lambda: asked.append(1) or len(asked) == 4)
    resumed = train(resolve(cfg), tmp_path / "cut", resume=[tmp_path / "cut/train_state.pt"])
    assert resumed.extra["resumed_from"] == [2]  # from the step-2 checkpoint, not from 0
    for f in ("generator.pt", "discriminator.pt"):
        a, b = torch.load(tmp_path / "whole" / f), torch.load(tmp_path / "cut" / f)
        assert all(torch.equal(a[k], b[k]) for k in a), f
    strip = ("images_per_s", "elapsed_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in _log(tmp_path / "whole")] == \
        [{k: v for k, v in r.items() if k not in strip} for r in _log(tmp_path / "cut")]
