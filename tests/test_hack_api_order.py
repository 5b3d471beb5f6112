"""Declared call order (issue 19): ``before``/``after`` on a Hack override the alphabet
(canonical order) among the enabled hacks; a cycle is refused naming the hacks."""

from __future__ import annotations

import pytest

from ablate import Hack, registry
from ablate.cli import main
from ablate.config import TrainConfig
from ablate.errors import ConfigError
from ablate.training.resolve import resolve
from ablate.training.loop import train

CALLS: list[str] = []


class _Replay(Hack):
    """Alphabetically last, declared to run before the augmentation."""

    name = "zz-test-replay"
    on = off = "test"
    before = ("aa-test-augment",)

    def augment(self, x, ctx):
        CALLS.append(self.name)
        return x

    def wrap_discriminator(self, d, recipe=None):
        CALLS.append("wrap:" + self.name)
        return d


class _Augment(Hack):
    name = "aa-test-augment"
    on = off = "test"

    def augment(self, x, ctx):
        CALLS.append(self.name)
        return x * 1.0

    def wrap_discriminator(self, d, recipe=None):
        CALLS.append("wrap:" + self.name)
        return d


class _Middle(Hack):
    """No declaration: keeps its canonical place relative to the undeclared pairs."""

    name = "mm-test-middle"
    on = off = "test"
    after = ("zz-test-replay",)


class _CycleA(Hack):
    name = "test-cycle-a"
    on = off = "test"
    before = ("test-cycle-b",)


class _CycleB(Hack):
    name = "test-cycle-b"
    on = off = "test"
    before = ("test-cycle-a",)


@pytest.fixture
def registered():
    classes = (_Replay, _Augment, _Middle, _CycleA, _CycleB)
    for cls in classes:
        registry.register_hack(cls)
    yield
    for cls in classes:
        registry.unregister_hack(cls.name)


def _cfg(hacks) -> TrainConfig:
    return TrainConfig(dataset="fake", steps=1, batch_size=4, seed=1, ngf=8, ndf=8,
                       latent_dim=16, device="cpu", threads=1, log_every=1, hacks=tuple(hacks))


def test_declared_order_beats_the_alphabet(registered, tmp_path):
    assert registry.canonical(["zz-test-replay", "aa-test-augment"])[0] == "aa-test-augment"
    plan = resolve(_cfg(["aa-test-augment", "zz-test-replay"]))
    assert [h.name for h in plan.hacks] == ["zz-test-replay", "aa-test-augment"]
    assert [r["name"] for r in plan.hack_records] == ["zz-test-replay", "aa-test-augment"]
    # replay must precede augment and middle; augment and middle keep the alphabet
    assert registry.call_order(["aa-test-augment", "mm-test-middle", "zz-test-replay"]) == (
        "zz-test-replay", "aa-test-augment", "mm-test-middle")
    CALLS.clear()
    train(plan, tmp_path / "run")
    assert CALLS[:2] == ["wrap:zz-test-replay", "wrap:aa-test-augment"]
    augments = [c for c in CALLS if not c.startswith("wrap:")]
    assert augments and all(augments[i] == "zz-test-replay" for i in range(0, len(augments), 2))
    assert all(augments[i] == "aa-test-augment" for i in range(1, len(augments), 2))


def test_no_declaration_keeps_canonical_order(registered):
    assert registry.call_order(["aa-test-augment", "test-cycle-a", "generator-ema", "label-smoothing"]) \
        == registry.canonical(["aa-test-augment", "test-cycle-a", "generator-ema", "label-smoothing"])
    # a declaration naming a hack that is not enabled is ignored
    assert registry.call_order(["zz-test-replay", "label-smoothing"]) == (
        "label-smoothing", "zz-test-replay")


def test_cycle_is_refused_naming_the_hacks(registered, tmp_path, capsys):
    with pytest.raises(ConfigError, match="'test-cycle-a', 'test-cycle-b'.*cycle"):
        registry.call_order(["test-cycle-a", "test-cycle-b"])
    code = main(["train", "--dataset", "fake", "--steps", "1", "--batch-size", "4", "--ngf", "8",
                 "--ndf", "8", "--hacks", "test-cycle-a,test-cycle-b", "--no-eval",
                 "--out", str(tmp_path / "x")])
    assert code == 2
    assert "test-cycle-a" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_before_after_must_be_tuples():
    class Bad(Hack):
        name = "test-bad-order"
        on = off = "test"
        after = "ema"

    with pytest.raises(ConfigError, match="after must be a tuple"):
        registry.validate_class(Bad)
