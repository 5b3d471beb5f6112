"""Hack API v3 (issue 19): per-run state and run information in every context, a hook
after each D update, side-aware augmentation, ``ctx.log``, D saved beside G, and the
fixes: first-API plugins overriding built-ins, hacks setting a field back to all-off,
and exceptions inside hooks naming the hack and the hook."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ablate import Hack, recipe_changes, registry
from ablate.cli import main
from ablate.config import TrainConfig
from ablate.errors import ConfigError
from ablate.training.resolve import resolve
from ablate.training.loop import resolved_config, train


def _cfg(hacks=(), **kw) -> TrainConfig:
    base = dict(dataset="fake", steps=3, batch_size=8, seed=1, ngf=8, ndf=8, latent_dim=16,
                device="cpu", threads=1, log_every=1)
    return TrainConfig(**{**base, "hacks": tuple(hacks), **kw})


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def _train_cli(tmp_path, hacks, out="cli", extra=()) -> int:
    return main(["train", "--dataset", "fake", "--steps", "1", "--batch-size", "4", "--ngf", "8",
                 "--ndf", "8", "--hacks", hacks, "--no-eval", "--out", str(tmp_path / out), *extra])


# ----- item 6: a first-API plugin that sets fields a built-in sets ------------------
class _OldTTUR(Hack):
    """Written against the first API: sets both learning rates, declares no override."""

    name = "test-old-ttur"
    on = off = "TTUR, API v1"

    def apply(self, recipe):
        return recipe.replace(g_optimizer=replace(recipe.g_optimizer, lr=1e-4),
                              d_optimizer=replace(recipe.d_optimizer, lr=4e-4))


def test_a_first_api_plugin_overrides_a_builtin_as_before(register, tmp_path, capsys):
    register(_OldTTUR)
    plan = resolve(_cfg((*registry.builtin_names(), "test-old-ttur")))
    assert (plan.recipe.g_optimizer.lr, plan.recipe.d_optimizer.lr) == (1e-4, 4e-4)
    assert plan.recipe.g_optimizer.betas == (0.5, 0.999)  # adam-dcgan's betas stay
    (override,) = resolved_config(plan)["overrides"]
    assert override["hack"] == "test-old-ttur" and override["overrides"] == "adam-dcgan"
    assert override["fields"] == ["d_optimizer.lr", "g_optimizer.lr"] and override["implicit"]
    assert "plugin hack 'test-old-ttur' overrides built-in 'adam-dcgan'" in override["note"]
    assert _train_cli(tmp_path, "builtin,test-old-ttur") == 0
    err = capsys.readouterr().err
    assert "note: plugin hack 'test-old-ttur' overrides built-in 'adam-dcgan' on " \
           "d_optimizer.lr, g_optimizer.lr" in err
    cfg = json.loads((tmp_path / "cli/config.json").read_text())
    assert cfg["overrides"][0]["fields"] == ["d_optimizer.lr", "g_optimizer.lr"]
    # Two plugins setting one field are still an error naming both.
    register(type("Twin", (_OldTTUR,), {"name": "test-old-ttur-twin"}))
    with pytest.raises(ConfigError, match="hacks 'test-old-ttur' and 'test-old-ttur-twin' both set"):
        resolve(_cfg(("test-old-ttur", "test-old-ttur-twin")))


# ----- item 7: a hack setting a field back to its all-off value --------------------
class _ForceMixed(Hack):
    name = "test-force-mixed"
    on = off = "real and fake in one batch"

    def apply(self, recipe):
        return recipe.replace(d_update="mixed")  # the all-off value


def test_setting_a_field_back_to_all_off_is_seen(register, tmp_path):
    register(_ForceMixed, type("Mixed2", (_ForceMixed,), {"name": "test-force-mixed-2"}))
    plan = resolve(_cfg((*registry.builtin_names(), "test-force-mixed")))
    assert plan.recipe.d_update == "mixed"
    assert recipe_changes(plan)["d_update"] == ("mixed", "mixed")
    assert recipe_changes(plan.hacks)["d_update"] == ("mixed", "mixed")
    cfg = resolved_config(plan)
    (override,) = cfg["overrides"]
    assert (override["hack"], override["overrides"], override["fields"]) == \
        ("test-force-mixed", "separate-batches", ["d_update"])
    assert "'separate-batches' changes nothing else, so it has no effect" in override["note"]
    assert cfg["recipe_changes"]["d_update"] == ["mixed", "mixed"]
    # Between two plugins (no built-in involved) it is an error, as any overlap is.
    register(type("Sep", (Hack,), {"name": "test-force-separate", "on": "x", "off": "y",
                                   "apply": lambda self, r: r.replace(d_update="separate")}))
    with pytest.raises(ConfigError, match="hacks 'test-force-mixed' and 'test-force-separate' "
                                          "both set the Recipe field\\(s\\) d_update"):
        resolve(_cfg(("test-force-mixed", "test-force-separate")))
    # Alone, a hack that sets the all-off value changes nothing and overrides nobody.
    alone = resolve(_cfg(("test-force-mixed",)))
    assert resolved_config(alone)["overrides"] == []
    assert recipe_changes(alone) == {}
    assert recipe_changes(resolve(_cfg(tuple(registry.builtin_names())))) == recipe_changes(
        registry.instantiate(registry.builtin_names()))


# ----- item 1: run information in every context; per-run instances -----------------
CALLS: list[tuple] = []


class _TwoDSteps(Hack):
    name = "test-two-d-steps"
    on = off = "two D updates a step"

    def apply(self, recipe):
        return recipe.replace(d_steps=2)


class _RunSpy(Hack):
    """Records, at every per-step hook, what the context says of the run."""

    name = "test-run-spy"
    on = off = "records"

    def _run(self, ctx):
        return (ctx.step, ctx.steps, ctx.g is SEEN["g"], ctx.d is SEEN["d"],
                isinstance(ctx.opt_g, torch.optim.Adam), isinstance(ctx.opt_d, torch.optim.Adam))

    def wrap_discriminator(self, d, recipe):
        SEEN["d"] = d
        return d

    def wrap_generator(self, g, recipe):
        SEEN["g"] = g
        return g

    def augment(self, x, ctx):
        CALLS.append(("augment", ctx.side, ctx.index, x.shape[0], ctx.n_real, *self._run(ctx)))
        return x

    def d_penalty(self, ctx):
        CALLS.append(("d_penalty", ctx.side, ctx.index, *self._run(ctx)))
        return None

    def after_d_update(self, ctx):
        CALLS.append(("after_d_update", ctx.side, ctx.index, ctx.out_real is not None,
                      ctx.out_fake is not None, *self._run(ctx)))

    def g_penalty(self, ctx):
        CALLS.append(("g_penalty", None, None, *self._run(ctx)))
        return None

    def after_step(self, ctx):
        CALLS.append(("after_step", ctx.side, None, *self._run(ctx)))


SEEN: dict = {}


@pytest.mark.parametrize("separate", [False, True])
def test_every_hook_sees_the_run_sides_and_update_index(register, tmp_path, separate):
    register(_RunSpy, _TwoDSteps)
    CALLS.clear()
    hacks = ("test-run-spy", "test-two-d-steps") + (("separate-batches",) if separate else ())
    train(resolve(_cfg(hacks, steps=2, batch_size=4)), tmp_path / "run")
    run0 = (0, 2, True, True, True, True)  # step 0 of 2, G, D, Adam, Adam
    if separate:
        one = []
        for i, side in enumerate(["real", "fake", "real", "fake"]):
            one += [("augment", side, i, 4, 4 if side == "real" else 0, *run0),
                    ("d_penalty", side, i, *run0),
                    ("after_d_update", side, i, side == "real", side == "fake", *run0)]
    else:
        one = []
        for i in range(2):
            one += [("augment", "mixed", i, 8, 4, *run0), ("d_penalty", "mixed", i, *run0),
                    ("after_d_update", "mixed", i, True, True, *run0)]
    n_upd = 4 if separate else 2
    one += [("augment", "g", n_upd, 4, 0, *run0), ("g_penalty", None, None, *run0),
            ("after_step", None, None, 1, 2, True, True, True, True)]
    assert CALLS[:len(one)] == one
    assert len(CALLS) == 2 * len(one) and CALLS[len(one)][2] == 0  # the index restarts


def test_hack_instances_are_per_run(register, tmp_path):
    register(_RunSpy)
    a, b = resolve(_cfg(("test-run-spy",))), resolve(_cfg(("test-run-spy",)))
    assert a.hacks[0] is not b.hacks[0] and a.hacks[0].params == b.hacks[0].params
    assert Hack().state_dict() is None  # the default: nothing outside the modules


def test_after_d_update_alone_takes_the_hooked_path_and_changes_nothing(register, tmp_path):
    """A no-op after_d_update switches to the hooked path; the run is bit for bit the
    plain one, and the plain path (no hack overriding it) never calls it."""
    from ablate.hacks.interactions import select_hooks

    class NoOp(Hack):
        name = "test-noop-after-d"
        on = off = "nothing"

        def after_d_update(self, ctx):
            CALLS.append("after_d_update")

    register(NoOp)
    assert select_hooks([NoOp()]).per_step
    assert not any(select_hooks([cls()]).after_d_update for cls in registry.list_hacks()
                   if registry.provider(cls.name) == "ablate")
    CALLS.clear()
    builtin = tuple(registry.builtin_names())
    train(resolve(_cfg(builtin)), tmp_path / "plain")
    assert CALLS == []
    train(resolve(_cfg(builtin + ("test-noop-after-d",))), tmp_path / "hooked")
    assert len(CALLS) == 3 * 2  # separate batches: two D updates a step
    for name in ("generator.pt", "discriminator.pt"):
        a, b = torch.load(tmp_path / "plain" / name), torch.load(tmp_path / "hooked" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


# ----- item 3: side-aware augmentation (an experience-replay buffer) ---------------
class _Replay(Hack):
    """Experience replay (Shrivastava et al. 2017): half of each fake batch D sees is
    replaced by fakes of earlier steps; real batches and G's fakes are left alone."""

    name = "test-replay"
    on = off = "replays old fakes to D"

    def __init__(self, params=None):
        super().__init__(params)
        self.buffer = None

    def augment(self, x, ctx):
        if ctx.side in ("real", "g"):
            out = x
        else:
            start = ctx.n_real if ctx.side == "mixed" else 0
            fakes = x[start:]
            half = fakes.shape[0] // 2
            if self.buffer is not None:
                fakes = torch.cat([self.buffer[:half], fakes[half:]])
            self.buffer = x[start:].detach().clone()
            out = torch.cat([x[:start], fakes])
        CALLS.append((ctx.side, x.detach().clone(), out.detach().clone(), ctx.n_real))
        return out

    def state_dict(self):
        return {"buffer": self.buffer}

    def load_state_dict(self, state):
        self.buffer = state["buffer"]


@pytest.mark.parametrize("separate", [False, True])
def test_augment_knows_the_side_and_replay_touches_only_ds_fakes(register, tmp_path, separate):
    register(_Replay)
    CALLS.clear()
    hacks = ("test-replay",) + (("separate-batches",) if separate else ())
    train(resolve(_cfg(hacks, steps=3, batch_size=4)), tmp_path / "run")
    sides = [c[0] for c in CALLS]
    assert sides == (["real", "fake", "g"] if separate else ["mixed", "g"]) * 3
    previous = None
    for side, x, out, n_real in CALLS:
        if side in ("real", "g"):
            assert torch.equal(x, out)
            continue
        real, fakes, got = x[:n_real], x[n_real:], out[n_real:]
        assert torch.equal(out[:n_real], real)  # the real rows of a mixed batch: untouched
        if previous is None:
            assert torch.equal(got, fakes)
        else:  # first half from the previous fake batch, second half the current one
            assert torch.equal(got[:2], previous[:2]) and torch.equal(got[2:], fakes[2:])
        previous = fakes


# ----- item 4: ctx.log --------------------------------------------------------------
class _Logger(Hack):
    name = "test-logger"
    on = off = "logs"

    def after_d_update(self, ctx):
        ctx.log("d_index", ctx.index)  # 0, 1 each step (separate batches)

    def after_step(self, ctx):
        ctx.log("step_seen", torch.tensor(float(ctx.step)))
        if ctx.step == 3:
            ctx.log("only_at_3", 7)


def test_ctx_log_writes_window_means_as_extra_keys(register, tmp_path):
    register(_Logger)
    train(resolve(_cfg(("test-logger", "separate-batches"), steps=5, log_every=2)), tmp_path / "run")
    log = _log(tmp_path / "run")
    assert [r["step"] for r in log] == [2, 4, 5]
    assert [r["d_index"] for r in log] == [0.5, 0.5, 0.5]
    assert [r["step_seen"] for r in log] == [1.5, 3.5, 5.0]  # means of (1, 2), (3, 4), (5)
    assert ["only_at_3" in r for r in log] == [False, True, False] and log[1]["only_at_3"] == 7.0


@pytest.mark.parametrize("name,value,message", [
    ("loss_d", 1.0, "ctx.log(): bad name 'loss_d'"),
    ("x", "high", "ctx.log('x', ...): a number expected, got str"),
    ("x", torch.ones(2), "ctx.log('x', ...): a number or a one-element tensor expected"),
])
def test_ctx_log_refuses_bad_names_and_values_naming_the_hack(register, tmp_path, name, value, message):
    register(type("BadLog", (Hack,), {"name": "test-bad-log", "on": "x", "off": "y",
                                      "after_step": lambda self, ctx: ctx.log(name, value)}))
    with pytest.raises(ConfigError, match=re.escape(f"hack 'test-bad-log': after_step(): {message}")):
        train(resolve(_cfg(("test-bad-log",), steps=1)), tmp_path / "run")


# ----- item 5: D saved beside G -----------------------------------------------------
def test_discriminator_is_saved_beside_the_generator(tmp_path):
    from ablate.grid.rundirs import RUN_FILES
    from ablate.training.loop import build

    plan = resolve(_cfg(tuple(registry.builtin_names())))
    train(plan, tmp_path / "run")
    _, d = build(plan, (1, 28, 28), torch.device("cpu"))
    d.load_state_dict(torch.load(tmp_path / "run/discriminator.pt"))
    assert "discriminator.pt" not in RUN_FILES  # old and committed runs need none


# ----- item 8: an exception inside a hook names the hack and the hook ---------------
def _raising(hook: str):
    def method(self, *args):
        raise ValueError("boom")
    return type(f"Raise_{hook}", (Hack,), {"name": f"test-raise-{hook.replace('_', '-')}",
                                           "on": "x", "off": "y", hook: method})


@pytest.mark.parametrize("hook", ["apply", "wrap_generator", "wrap_discriminator", "augment",
                                  "d_loss", "d_penalty", "after_d_update", "g_loss", "g_penalty",
                                  "after_step", "sampling_generator"])
def test_an_exception_in_a_hook_names_the_hack_and_the_hook(register, tmp_path, capsys, hook):
    cls = register(_raising(hook))
    message = f"hack {cls.name!r}: {hook}() raised ValueError: boom"
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        train(resolve(_cfg((cls.name,), steps=1)), tmp_path / "run")
    assert isinstance(info.value.__cause__, ValueError)
    assert _train_cli(tmp_path, cls.name) == 2
    assert message in capsys.readouterr().err


def test_an_exception_in_state_dict_names_the_hack(register, tmp_path):
    cls = register(type("BadState", (_Replay,), {"name": "test-bad-state",
                                                 "state_dict": lambda self: 1 / 0}))
    with pytest.raises(ConfigError, match=re.escape(
            "hack 'test-bad-state': state_dict() raised ZeroDivisionError: division by zero")):
        train(resolve(_cfg((cls.name,), steps=2, checkpoint_every=1)), tmp_path / "run")


# ----- item 9: instance-noise anneals per generator step ---------------------------
NOISE: list[tuple] = []


def _noise_spy(name: str, where: str):
    def augment(self, x, ctx):
        NOISE.append((where, ctx.step, ctx.side, x.detach().clone()))
        return x
    return type(name.title().replace("-", ""), (Hack,), {"name": name, "on": "x", "off": "y",
                                                         "augment": augment})


@pytest.mark.parametrize("d_steps", [1, 2])
def test_instance_noise_anneals_per_generator_step_whatever_d_steps(register, tmp_path, d_steps):
    import importlib.util
    import sys

    if importlib.util.find_spec("ablate_spectral_norm") is None:  # not installed: by path
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples/ablate-spectral-norm"))
    from ablate_spectral_norm import noise_sigma

    from ablate.training.loop import HOOK_SEED

    assert [noise_sigma(0.1, 1.0, s, 10) for s in (0, 5, 10, 12)] == [0.1, 0.05, 0.0, 0.0]
    assert noise_sigma(0.1, 0.5, 5, 10) == 0.0 and registry.version("instance-noise") == "0.2.0"
    # Spies before ("aa-...") and after ("test-...") instance-noise in canonical order.
    register(_noise_spy("aa-test-noise-in", "in"), _noise_spy("test-noise-out", "out"))
    NOISE.clear()
    hacks = ["aa-test-noise-in", "instance-noise", "test-noise-out", "separate-batches"]
    if d_steps == 2:
        register(_TwoDSteps)
        hacks.append("test-two-d-steps")
    steps, sigma = 4, 0.1
    train(resolve(_cfg(tuple(hacks), steps=steps, batch_size=4)), tmp_path / "run")
    assert len(NOISE) == 2 * steps * (2 * d_steps + 1)  # every D input, and G's fakes
    gen = torch.Generator().manual_seed((1 + HOOK_SEED) % 2**63)  # the hooks' stream, seed 1
    for (w0, step, side, x), (w1, step1, _, y) in zip(NOISE[::2], NOISE[1::2]):
        assert (w0, w1, step) == ("in", "out", step1)
        s = sigma * (1 - step / steps)  # independent of the D update and of d_steps
        assert torch.allclose(y, x + s * torch.randn(x.shape, generator=gen), atol=1e-7), (step, side)


def test_an_exception_in_a_hook_fails_only_that_run_of_a_grid(register, tmp_path):
    """In-process grid (inline executor): the variants that enable the raising hack fail,
    naming it and its hook; the others finish."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gridutil import experiment, rows

    from ablate.grid.driver import prepare, run_grid
    from ablate.grid.executors import InlineExecutor

    register(_raising("after_step"))
    exp = experiment(tmp_path, steps=2, seeds="[0]", scope='["batch-norm", "test-raise-after-step"]')
    run_grid(prepare(exp, tmp_path / "res", threads=1), InlineExecutor(threads=1), progress=False,
             log=lambda m: None)
    got = sorted((r["status"], r["error"] is not None and
                  "hack 'test-raise-after-step': after_step() raised ValueError: boom" in r["error"])
                 for r in rows(tmp_path / "res").values())
    assert got == [("done", False), ("done", False), ("failed", True), ("failed", True)]
