"""The second example package, examples/ablate-paper-tricks: nine GAN-paper tricks
written against the public hook API, each checked against an independent computation
of what it claims to do (issue 12, item 5; weight-clipping and ada, API v3: issue 19)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate import DContext, GContext, Hack, Recipe, registry
from ablate.config import TrainConfig
from ablate.training.models import Discriminator, Generator
from ablate.training.resolve import resolve
from ablate.training.loop import resolved_config, train

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "examples/ablate-paper-tricks"
if importlib.util.find_spec("ablate_paper_tricks") is None:  # not installed: load it by path
    sys.path.insert(0, str(PACKAGE))
import ablate_paper_tricks as tricks  # noqa: E402  (registers the seven hacks)
from ablate_paper_tricks.ada import blit  # noqa: E402
from ablate_paper_tricks.diffaugment import cutout, translate  # noqa: E402
from ablate_paper_tricks.ema import ema_beta  # noqa: E402
from ablate_paper_tricks.mbstd import MinibatchStd  # noqa: E402

TRICKS = ["ttur", "r1-penalty", "minibatch-stddev", "generator-ema", "feature-matching",
          "diffaugment", "hinge-loss", "weight-clipping", "ada"]
SHAPE = (1, 28, 28)


def _cfg(hacks=(), **kw) -> TrainConfig:
    base = dict(dataset="fake", steps=2, batch_size=8, seed=2, ngf=8, ndf=8, latent_dim=16,
                device="cpu", threads=1, log_every=1)
    return TrainConfig(**{**base, "hacks": tuple(hacks), **kw})


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture
def register():
    names = []

    def _register(cls):
        registry.register_hack(cls)
        names.append(cls.name)
        return cls

    yield _register
    for n in names:
        registry.unregister_hack(n)


# ----- every trick: metadata, typed parameters, trains alone and with all-on ----------
@pytest.mark.parametrize("name", TRICKS)
def test_trick_is_described_and_trains(name, tmp_path):
    row = registry.describe(name)
    assert row["source"] and row["on"] and row["off"] and row["version"]
    assert row["provider"] in ("ablate-paper-tricks", "ablate_paper_tricks")  # installed / by path
    assert not registry.get_hack(name).__module__.startswith("ablate.")
    for hacks in ((name,), tuple(registry.builtin_names()) + (name,)):
        run = tmp_path / str(len(hacks))
        assert train(resolve(_cfg(hacks)), run).status == "done"
        cfg = json.loads((run / "config.json").read_text())
        record = next(h for h in cfg["hacks"] if h["name"] == name)
        assert record["version"] == row["version"] and record["provider"] == row["provider"]
    assert "ablate_paper_tricks" not in (REPO / "ablate/training/loop.py").read_text()


def test_every_trick_uses_only_the_public_api():
    for path in (PACKAGE / "ablate_paper_tricks").glob("*.py"):
        imports = [line for line in path.read_text().splitlines() if line.startswith(("from ablate", "import ablate"))]
        assert all(line.startswith(("from ablate import", "from ablate_paper_tricks")) for line in imports), path


# ----- TTUR -----------------------------------------------------------------------------
def test_ttur_sets_two_learning_rates_and_overrides_adam_dcgan():
    alone = resolve(_cfg(("ttur",))).recipe
    assert (alone.g_optimizer.lr, alone.d_optimizer.lr) == (1e-4, 4e-4)
    assert alone.g_optimizer.betas == (0.9, 0.999)  # betas untouched
    plan = resolve(_cfg(("adam-dcgan", "ttur")))
    assert (plan.recipe.g_optimizer.lr, plan.recipe.d_optimizer.lr) == (1e-4, 4e-4)
    assert plan.recipe.d_optimizer.betas == (0.5, 0.999)  # adam-dcgan's betas stay
    assert resolved_config(plan)["overrides"] == [{
        "hack": "ttur", "overrides": "adam-dcgan", "fields": ["d_optimizer.lr", "g_optimizer.lr"], "hooks": []}]
    custom = resolve(_cfg(("ttur",), params=(("ttur", "d_lr", "3e-4"),))).recipe
    assert custom.d_optimizer.lr == 3e-4


# ----- R1 ------------------------------------------------------------------------------
def _d_ctx(d, real=None, fake=None) -> DContext:
    out_r = d(real) if real is not None else None
    out_f = d(fake) if fake is not None else None
    return DContext(0, Recipe(), real, fake, out_r, out_f, None, None, None, None,
                    lambda x: (d(x), None), torch.Generator())


def test_r1_is_half_gamma_times_mean_squared_input_gradient_on_real_data():
    torch.manual_seed(0)
    d = Discriminator(Recipe(), SHAPE, 4).double()  # no BatchNorm: samples independent
    real = torch.rand(5, *SHAPE, dtype=torch.float64)
    gamma = 7.0
    hack = registry.get_hack("r1-penalty")(registry.get_hack("r1-penalty").make_params({"gamma": gamma}))
    penalty = hack.d_penalty(_d_ctx(d, real=real, fake=torch.rand(5, *SHAPE, dtype=torch.float64)))
    # Independently: one sample at a time, torch.autograd.grad of D(x_i) w.r.t. x_i.
    norms = []
    for i in range(5):
        x = real[i:i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(d(x).sum(), x)
        norms.append(float((g ** 2).sum()))
    assert penalty.item() == pytest.approx(gamma / 2 * sum(norms) / 5, rel=1e-10)
    penalty.backward()  # differentiable in D's weights (double backprop); not in the last bias
    assert all(p.grad.abs().sum() > 0 for n, p in d.named_parameters() if n.endswith("weight"))
    assert hack.d_penalty(_d_ctx(d, fake=real)) is None  # fake-only update: no real data


def test_r1_reaches_ds_loss_in_training(tmp_path):
    train(resolve(_cfg(("r1-penalty",), steps=1)), tmp_path / "r1")
    train(resolve(_cfg((), steps=1)), tmp_path / "plain")
    (r1,), (plain,) = _log(tmp_path / "r1"), _log(tmp_path / "plain")
    assert r1["loss_d"] > plain["loss_d"]  # the first D loss is the same BCE plus a positive term
    assert r1["d_real"] == pytest.approx(plain["d_real"], rel=1e-6)  # before D's first step


# ----- minibatch standard deviation -------------------------------------------------
def _mbstd_expected(x: torch.Tensor, group: int) -> torch.Tensor:
    """Per sample: mean over (c, h, w) of the population std over its group, where PGGAN's
    reshape puts sample i in group i mod (n / group)."""
    n = x.shape[0]
    m = n // group
    out = torch.empty(n)
    for i in range(n):
        members = x[[j for j in range(n) if j % m == i % m]]
        out[i] = (members.var(0, unbiased=False) + 1e-8).sqrt().mean()
    return out


def test_minibatch_stddev_layer_matches_a_hand_computation():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 2, 2)
    y = MinibatchStd(4, mixed=False)(x)
    assert y.shape == (8, 4, 2, 2) and torch.equal(y[:, :3], x)
    assert torch.allclose(y[:, 3], _mbstd_expected(x, 4).view(8, 1, 1).expand(8, 2, 2), atol=1e-6)


def test_minibatch_stddev_never_mixes_real_and_fake_in_a_mixed_batch():
    torch.manual_seed(0)
    real, fake = torch.randn(8, 3, 2, 2), torch.randn(8, 3, 2, 2)
    layer = MinibatchStd(4, mixed=True)
    a = layer(torch.cat([real, fake]))
    b = layer(torch.cat([real, fake * 100]))  # change only the fakes
    assert torch.equal(a[:8], b[:8])
    assert torch.allclose(a[:8, 3], _mbstd_expected(real, 4).view(8, 1, 1).expand(8, 2, 2), atol=1e-6)
    mixed_naive = MinibatchStd(4, mixed=False)(torch.cat([real, fake]))
    assert not torch.allclose(mixed_naive[:8, 3], a[:8, 3])  # strided groups would straddle


def test_minibatch_stddev_wrapper_follows_the_recipe():
    cls = registry.get_hack("minibatch-stddev")
    recipe = resolve(_cfg(("gaussian-init", "separate-batches"))).recipe
    torch.manual_seed(0)
    d = Discriminator(recipe, SHAPE, 8)
    old = [m for m in d.modules() if isinstance(m, nn.Conv2d)][-1]
    wrapped = cls(cls.make_params()).wrap_discriminator(d, recipe)
    layer = next(m for m in wrapped.modules() if isinstance(m, MinibatchStd))
    new = [m for m in wrapped.modules() if isinstance(m, nn.Conv2d)][-1]
    assert new.in_channels == old.in_channels + 1 and not layer.mixed
    assert torch.equal(new.weight[:, :old.in_channels], old.weight)
    assert new.weight[:, -1].std().item() == pytest.approx(recipe.init.std, rel=0.5)  # N(0, 0.02)
    assert wrapped(torch.rand(8, *SHAPE)).shape == (8,)
    mixed = cls(cls.make_params()).wrap_discriminator(Discriminator(Recipe(), SHAPE, 8), Recipe())
    assert next(m for m in mixed.modules() if isinstance(m, MinibatchStd)).mixed


# ----- generator EMA -------------------------------------------------------------------
SNAPSHOTS: list[dict[str, torch.Tensor]] = []


class _Recorder(Hack):
    """Records G's initial weights and its weights after every step."""

    name = "test-recorder"
    on = off = "records G"

    def wrap_generator(self, g, recipe):
        SNAPSHOTS.append({k: v.detach().clone().double() for k, v in g.state_dict().items()})
        return g

    def after_step(self, ctx):
        SNAPSHOTS.append({k: v.detach().clone().double() for k, v in ctx.g.state_dict().items()})


def test_ema_weights_equal_a_hand_computed_average(register, tmp_path):
    register(_Recorder)
    SNAPSHOTS.clear()
    steps, beta = 4, 0.6
    hacks = tuple(registry.builtin_names()) + ("generator-ema", "test-recorder")
    cfg = _cfg(hacks, steps=steps, params=(("generator-ema", "beta", beta),))
    train(resolve(cfg), tmp_path / "run")
    assert len(SNAPSHOTS) == steps + 1
    saved = torch.load(tmp_path / "run/generator.pt")
    params = {n for n, _ in Generator(resolve(cfg).recipe, SHAPE, 8, 16).named_parameters()}
    for key, value in saved.items():
        if key in params:  # parameters: ema_t = b_t ema_{t-1} + (1 - b_t) g_t, from g_0
            ema = SNAPSHOTS[0][key]
            for t in range(1, steps + 1):
                b = min(beta, (1 + t) / (10 + t))
                ema = b * ema + (1 - b) * SNAPSHOTS[t][key]
            assert torch.allclose(value.double(), ema, atol=1e-6), key
            assert not torch.allclose(value.double(), SNAPSHOTS[-1][key]), key  # not the last G
        else:  # buffers (BatchNorm statistics) follow G's
            assert torch.equal(value.double(), SNAPSHOTS[-1][key]), key
    assert ema_beta(0.999, 0, True) == 0.1 and ema_beta(0.999, 10**6, True) == 0.999
    assert ema_beta(0.9, 1, False) == 0.9


# ----- feature matching ------------------------------------------------------------------
FM: list[float] = []


class _FMCheck(Hack):
    """Recomputes |mean f(real) - mean f(fake)|^2 from D's layers, independently of the loop."""

    name = "test-fm-check"
    on = off = "checks"

    def wrap_discriminator(self, d, recipe):
        self.trunk = nn.Sequential(*list(d)[:-2])  # D without its last conv and flatten
        return d

    def g_penalty(self, ctx):
        with torch.no_grad():
            fr, ff = self.trunk(ctx.real).flatten(1), self.trunk(ctx.fake).flatten(1)
            FM.append(float(((fr.mean(0) - ff.mean(0)) ** 2).sum()))
        return None


def test_feature_matching_g_loss_is_the_l2_of_mean_feature_differences(register, tmp_path):
    register(_FMCheck)
    FM.clear()
    train(resolve(_cfg(("feature-matching", "test-fm-check"), steps=3)), tmp_path / "run")
    logged = [r["loss_g"] for r in _log(tmp_path / "run")]
    assert len(FM) == 3 and logged == pytest.approx(FM, rel=1e-5)
    assert all(v > 0 for v in FM)
    add = resolve(_cfg(("feature-matching",), params=(("feature-matching", "mode", "add"),)))
    assert add.hacks[0].params.mode == "add"
    with pytest.raises(Exception, match="must be one of 'replace', 'add'"):
        resolve(_cfg(("feature-matching",), params=(("feature-matching", "mode", "bogus"),)))


def test_feature_matching_add_mode_adds_to_the_non_saturating_loss():
    torch.manual_seed(0)
    d = Discriminator(Recipe(), SHAPE, 4)
    trunk = nn.Sequential(*list(d)[:-2])
    real, fake = torch.rand(6, *SHAPE), torch.rand(6, *SHAPE)
    cls = registry.get_hack("feature-matching")
    hack = cls(cls.make_params({"mode": "add", "weight": 0.5}))
    ctx = GContext(0, Recipe(), real, fake, d(fake), trunk(fake), lambda x: (d(x), trunk(x)), torch.Generator())
    fm = ((trunk(real).flatten(1).mean(0) - trunk(fake).flatten(1).mean(0)) ** 2).sum()
    ns = F.binary_cross_entropy_with_logits(d(fake), torch.ones(6))
    assert hack.g_loss(ctx).item() == pytest.approx((ns + 0.5 * fm).item(), rel=1e-6)


# ----- DiffAugment ------------------------------------------------------------------------
def _shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[y, x] = img[y + dy, x + dx], zero outside (a plain slicing implementation)."""
    h, w = img.shape[-2:]
    out = torch.zeros_like(img)
    ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
    yi, xi = slice(max(0, dy), min(h, h + dy)), slice(max(0, dx), min(w, w + dx))
    out[..., ys, xs] = img[..., yi, xi]
    return out


def _explains(before: torch.Tensor, after: torch.Tensor, shift: int, size: int) -> bool:
    """Whether ``after`` = cutout(translate(before)) for some shift in [-shift, shift]^2 and
    some size x size square (anywhere overlapping the image), by exhaustive search."""
    h, w = before.shape[-2:]
    for dy, dx in itertools.product(range(-shift, shift + 1), repeat=2):
        moved = _shift(before, dy, dx)
        bad = moved != after
        if (after[bad] != 0).any():  # a difference the cutout (zeros) cannot explain
            continue
        for oy, ox in itertools.product(range(-(size // 2), h), range(-(size // 2), w)):
            square = torch.zeros(h, w, dtype=torch.bool)
            square[max(0, oy):max(0, oy + size), max(0, ox):max(0, ox + size)] = True
            if not (bad & ~square).any() and not (after[square] != 0).any():
                return True
    return False


def test_diffaugment_transforms_are_translation_and_cutout():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 12, 12) + 0.1  # no zero pixels: every zero comes from the transform
    rng = torch.Generator().manual_seed(1)
    t = translate(x, 0.125, rng)  # shift up to int(12/8 + 0.5) = 2 px
    c = cutout(t, 0.5, rng)  # a 6x6 square
    assert not torch.equal(c, x)
    for i in range(6):
        assert _explains(x[i, 0], c[i, 0], shift=2, size=6), i
    assert (c == 0).flatten(1).sum(1).max() <= 36 + 2 * 12 * 2  # a square plus shifted-in borders


AUG: dict[str, list[torch.Tensor]] = {"before": [], "after": []}


class _Before(Hack):
    name = "aa-test-before"  # sorts before diffaugment: sees D's inputs unaugmented
    on = off = "records"

    def augment(self, x, ctx):
        AUG["before"].append(x.detach().clone())
        return x


class _After(_Before):
    name = "zz-test-after"  # sorts after diffaugment

    def augment(self, x, ctx):
        AUG["after"].append(x.detach().clone())
        return x


@pytest.mark.parametrize("separate", [False, True])
def test_diffaugment_transforms_real_and_fake_alike(register, tmp_path, separate):
    register(_Before)
    register(_After)
    AUG["before"].clear(), AUG["after"].clear()
    hacks = ("aa-test-before", "diffaugment", "zz-test-after") + (("separate-batches",) if separate else ())
    train(resolve(_cfg(hacks, steps=1, batch_size=4)), tmp_path / "run")
    # mixed: one D input cat([real, fake]) (8 rows), then G's fakes (4); separate: 4, 4, 4.
    sizes = [4, 4, 4] if separate else [8, 4]
    assert [len(x) for x in AUG["before"]] == [len(x) for x in AUG["after"]] == sizes
    kinds = (["real", "fake", "G fake"] if separate else ["real+fake", "G fake"])
    for kind, before, after in zip(kinds, AUG["before"], AUG["after"]):
        changed = [i for i in range(len(before)) if not torch.equal(before[i], after[i])]
        assert len(changed) >= len(before) - 1, kind  # (a zero shift may leave a row as is)
        for i in (0, len(before) - 1):  # the first row is real, the last fake, in mixed mode
            assert _explains(before[i, 0], after[i, 0], shift=4, size=14), (kind, i)


# ----- hinge loss ---------------------------------------------------------------------------
def test_hinge_losses():
    cls = registry.get_hack("hinge-loss")
    hack = cls()
    out_real, out_fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.3])
    both = DContext(0, Recipe(), None, None, out_real, out_fake, None, None, None, None, None, None)
    assert float(hack.d_loss(both)) == pytest.approx((0 + 0.5) / 2 + (0 + 1.3) / 2)
    real_only = DContext(0, Recipe(), None, None, out_real, None, None, None, None, None, None, None)
    assert float(hack.d_loss(real_only)) == pytest.approx(0.25)
    g = GContext(0, Recipe(), None, None, out_fake, None, None, None)
    assert float(hack.g_loss(g)) == pytest.approx(0.85)
    assert set(cls.overrides) == {"label-smoothing", "noisy-labels"}
    plan = resolve(_cfg(tuple(registry.builtin_names()) + ("hinge-loss",)))  # declared: plans
    assert {o["overrides"] for o in resolved_config(plan)["overrides"]} == {
        "label-smoothing", "noisy-labels"}


def test_declared_and_undeclared_loss_overlaps_between_tricks():
    plan = resolve(_cfg(("hinge-loss", "feature-matching")))  # feature-matching declares it
    from ablate.hacks.interactions import select_hooks
    hooks = select_hooks(plan.hacks)
    assert hooks.g_loss.name == "feature-matching" and hooks.d_loss.name == "hinge-loss"
    assert tricks.__all__  # the package exports its hack classes


# ----- WGAN weight clipping (API v3: after_d_update) ------------------------------------
CLIP_EVENTS: list[tuple[str, list[torch.Tensor]]] = []


class _ClipSpy(Hack):
    """Sorted before weight-clipping ("aa-..."): after each D update it sees D's weights
    before the clip; at the next D or G loss, the weights the clip left."""

    name = "aa-test-clip-spy"
    on = off = "records D"

    def _d(self, ctx):
        return [p.detach().clone() for p in ctx.d.parameters()]

    def after_d_update(self, ctx):
        CLIP_EVENTS.append(("pre", self._d(ctx)))

    def d_penalty(self, ctx):
        CLIP_EVENTS.append(("post", self._d(ctx)))

    def g_penalty(self, ctx):
        CLIP_EVENTS.append(("post", self._d(ctx)))


@pytest.mark.parametrize("builtin", [False, True])
def test_weight_clipping_clips_d_after_every_d_update(register, tmp_path, builtin):
    register(_ClipSpy)
    CLIP_EVENTS.clear()
    c = 0.02
    hacks = (tuple(registry.builtin_names()) if builtin else ()) + ("weight-clipping", _ClipSpy.name)
    steps = 3
    train(resolve(_cfg(hacks, steps=steps, params=(("weight-clipping", "clip", c),))), tmp_path / "run")
    kinds = [k for k, _ in CLIP_EVENTS]
    updates = 2 if builtin else 1  # separate batches: two D updates a step
    assert kinds.count("pre") == steps * updates
    checked = bound = 0
    for (k0, before), (k1, after) in itertools.pairwise(CLIP_EVENTS):
        if (k0, k1) == ("pre", "post"):  # independently: clamp what the update left
            assert all(torch.equal(a, b.clamp(-c, c)) for a, b in zip(after, before))
            checked += 1
            bound += any(bool((b.abs() > c).any()) for b in before)
    assert checked == steps * updates and bound == checked  # the clip binds every time
    saved = torch.load(tmp_path / "run/discriminator.pt")
    assert all(float(v.abs().max()) <= c for k, v in saved.items() if v.is_floating_point()
               and "running" not in k)


# ----- ADA (API v3: per-run state, side-aware hooks, ctx.log) ---------------------------
def test_ada_blit_is_a_flip_then_a_rotation_with_probability_p():
    x = torch.rand(16, 1, 6, 6)
    gen = torch.Generator().manual_seed(5)
    assert torch.equal(blit(x, 0.0, torch.Generator().manual_seed(5)), x)
    for p in (1.0, 0.5):
        got = blit(x, p, torch.Generator().manual_seed(5))
        gen = torch.Generator().manual_seed(5)  # the same draws, applied one sample at a time
        u, k = torch.rand(16, 2, generator=gen), torch.randint(1, 4, (16,), generator=gen)
        for i in range(16):
            want = x[i].flip(-1) if u[i, 0] < p else x[i]
            want = torch.rot90(want, int(k[i]), (1, 2)) if u[i, 1] < p else want
            assert torch.equal(got[i], want), (p, i)
        if p == 1.0:
            assert not torch.equal(got, x)


ADA_SEEN: list[tuple[str, torch.Tensor | None]] = []


class _AdaSpy(Hack):
    """Sorted after ada: records each D update's side and its real logits."""

    name = "test-ada-spy"
    on = off = "records D's logits"

    def after_d_update(self, ctx):
        ADA_SEEN.append((ctx.side, ctx.step, None if ctx.out_real is None else ctx.out_real.clone()))


@pytest.mark.parametrize("separate", [False, True])
def test_ada_adapts_p_from_the_signs_of_ds_real_logits(register, tmp_path, separate):
    register(_AdaSpy)
    ADA_SEEN.clear()
    steps, interval, speed, target = 7, 2, 40, 0.6
    hacks = ("ada", "test-ada-spy") + (("separate-batches",) if separate else ())
    params = (("ada", "interval", interval), ("ada", "speed", speed), ("ada", "target", target),
              ("ada", "p0", 0.3))
    train(resolve(_cfg(hacks, steps=steps, params=params)), tmp_path / "run")
    assert [s for s, _, _ in ADA_SEEN] == (["real", "fake"] if separate else ["mixed"]) * steps
    # Independently: r_t over the real logits of each interval, p moved by n / speed.
    p, want_p, want_rt = 0.3, [], {}
    for step in range(1, steps + 1):
        if step % interval == 0:
            logits = torch.cat([o for _, s, o in ADA_SEEN if o is not None
                                and step - interval <= s < step])
            rt = float(logits.sign().mean())
            want_rt[step] = rt
            p = min(1.0, max(0.0, p + (1 if rt > target else -1 if rt < target else 0)
                             * logits.numel() / speed))
        want_p.append(p)
    log = _log(tmp_path / "run")
    assert [r["ada_p"] for r in log] == pytest.approx(want_p, abs=1e-12)
    assert {r["step"]: r["ada_rt"] for r in log if "ada_rt" in r} == pytest.approx(want_rt)
    assert len(set(want_p)) > 1  # p moved


def test_ada_state_survives_a_checkpoint():
    hack = registry.get_hack("ada")()
    hack.p, hack.sign_sum, hack.n = 0.25, 3.0, 16
    fresh = registry.get_hack("ada")()
    fresh.load_state_dict(hack.state_dict())
    assert (fresh.p, fresh.sign_sum, fresh.n) == (0.25, 3.0, 16)
