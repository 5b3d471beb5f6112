"""Mid-run checkpoints and resume (issue 17 item 1): a run interrupted at any point and
resumed, once or several times, ends bit for bit equal to the same run uninterrupted
(``generator.pt``, ``generator_best.pt``, every number of ``log.jsonl`` but timings,
``metrics.json`` but timings); a kill during a checkpoint write leaves the previous one
usable; a checkpoint of another run is never resumed.

Tiny runs on fake data (one thread): 12 steps, a log line every 2, validation every 2,
a checkpoint every 3, so interruptions fall between checkpoints.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ablate import Hack, checkpoint, registry
from ablate.cli import main
from ablate.config import EvalProtocol, TrainConfig
from ablate.pipeline import train_and_score, validator
from ablate.resolve import resolve
from ablate.train import StopRequested, train

TIMINGS = {"images_per_s", "elapsed_s", "time_s", "timing_by_checkpoint_s", "run_dir"}
EVAL = EvalProtocol(n=64, kid_subset_size=32, kid_subsets=2, batch_size=64, val_every=2, val_n=64)


def _cfg(hacks=(), **kw) -> TrainConfig:
    base = dict(dataset="fake", steps=12, batch_size=8, seed=3, ngf=8, ndf=8, latent_dim=8,
                device="cpu", threads=1, log_every=2, val_every=2, val_n=64, checkpoint_every=3)
    return TrainConfig(**{**base, "hacks": tuple(hacks), **kw})


# ----- a plugin hack with per-run state ---------------------------------------------
class _Counted(nn.Module):
    """G with a step counter (a buffer) that changes its output every training forward."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("count", torch.zeros(()))

    def forward(self, z):
        if self.training:
            self.count += 1
        return self.inner(z) * (1 + 0.01 * torch.sin(self.count))


class Stateful(Hack):
    """State everywhere a plugin can keep it: a buffer in its G wrapper, an EMA copy of G
    (the sampling generator), draws from ``ctx.rng`` and from the global RNG, and a
    counter on the hack itself (saved through ``state_dict``/``load_state_dict``)."""

    name = "test-stateful"
    on = off = "test"

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.updates = 0

    def wrap_generator(self, g, recipe):
        return _Counted(g)

    def sampling_generator(self, g, recipe):
        return copy.deepcopy(g)

    def augment(self, x, ctx):
        return x + 0.05 * torch.randn(x.shape, generator=ctx.rng)

    def after_step(self, ctx):
        self.updates += 1
        decay = 0.5 + 0.4 * float(torch.rand(())) / self.updates  # the global RNG
        with torch.no_grad():
            for e, p in zip(ctx.g_sample.state_dict().values(), ctx.g.state_dict().values()):
                e.copy_(p) if not e.is_floating_point() else e.mul_(decay).add_(p, alpha=1 - decay)

    def state_dict(self):
        return {"updates": self.updates}

    def load_state_dict(self, state):
        self.updates = state["updates"]


@pytest.fixture
def stateful():
    registry.register_hack(Stateful)
    yield
    registry.unregister_hack(Stateful.name)


# ----- helpers ----------------------------------------------------------------------
class Interrupt(Exception):
    pass


def _interrupting(plan, at: int):
    """The run's validator, raising at its ``at``-th call (None: never)."""
    real = validator(plan)
    calls = [0]

    def validate(g):
        calls[0] += 1
        if calls[0] == at:
            raise Interrupt
        return real(g)

    return validate


def _log(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in (run / "log.jsonl").read_text().splitlines()]


def _no_timings(doc):
    if isinstance(doc, dict):
        return {k: _no_timings(v) for k, v in doc.items() if k not in TIMINGS}
    return doc


def assert_same_run(a: Path, b: Path, metrics: bool = False) -> None:
    """Bit for bit: both checkpoints (tensors and bytes), the log but timings, metrics."""
    for name in ("generator.pt", "generator_best.pt"):
        wa, wb = torch.load(a / name), torch.load(b / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _log(a) == _log(b)
    if metrics:
        ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
        assert _no_timings(ma) == _no_timings(mb)
    assert not (b / checkpoint.STATE_FILE).exists()  # removed when the run ends


def _resumed(plan, out: Path, interrupts: list[int]) -> list[int]:
    """Train ``plan`` into ``out``, interrupted at each validation call in ``interrupts``
    (counted from each attempt's start) and resumed; returns ``resumed_from``."""
    state = out / checkpoint.STATE_FILE
    for at in interrupts:
        with pytest.raises(Interrupt):
            train(plan, out, _interrupting(plan, at), resume=[state] if state.exists() else [])
        assert state.exists()
    result = train(plan, out, validator(plan), resume=[state])
    return result.extra["resumed_from"]


# ----- the lone training loop -------------------------------------------------------
@pytest.mark.parametrize("hacks", ["all-on", "all-off", "stateful"])
def test_interrupted_and_resumed_runs_end_bit_for_bit(tmp_path, hacks, request):
    """Interrupted at validation calls 3 and 3 again (steps 6 and 8, between checkpoints
    3, 6, 9): resumed from steps 3 and 6, the run ends as the uninterrupted one."""
    if hacks == "stateful":
        request.getfixturevalue("stateful")
    names = {"all-on": registry.builtin_names(), "all-off": (),
             "stateful": ("batch-norm", Stateful.name)}[hacks]
    plan = resolve(_cfg(names))
    train(plan, tmp_path / "whole", validator(plan))
    assert _resumed(resolve(_cfg(names)), tmp_path / "cut", [3, 3]) == [3, 6]
    assert_same_run(tmp_path / "whole", tmp_path / "cut")


def test_resumed_once_at_each_point(tmp_path):
    """A single interruption at every validation call of the run (steps 2 .. 10)."""
    names = registry.builtin_names()
    plan = resolve(_cfg(names))
    train(plan, tmp_path / "whole", validator(plan))
    for at in range(1, 6):
        out = tmp_path / f"cut{at}"
        if at == 1:  # before the first checkpoint: nothing to resume, starts over
            with pytest.raises(Interrupt):
                train(plan, out, _interrupting(plan, at))
            assert not (out / checkpoint.STATE_FILE).exists()
            continue
        resumed = _resumed(resolve(_cfg(names)), out, [at])
        assert resumed == [3 * ((2 * at - 1) // 3)]
        assert_same_run(tmp_path / "whole", out)


def test_a_kill_during_the_checkpoint_write_leaves_the_previous_one(tmp_path):
    """The process is SIGKILLed halfway through writing its second checkpoint (step 6):
    the first (step 3) is intact and the run resumed from it ends bit for bit."""
    plan = resolve(_cfg())
    train(plan, tmp_path / "whole", validator(plan))
    out = tmp_path / "cut"
    script = f"""
import os, signal, torch
torch.set_num_threads(1)
from ablate import checkpoint
from ablate.artefacts import write_atomic
from ablate.config import TrainConfig
from ablate.pipeline import validator
from ablate.resolve import resolve
from ablate.train import train
real, calls = checkpoint.save, []
def save(path, state):
    calls.append(1)
    if len(calls) < 2:
        return real(path, state)
    def die(f):
        f.write(b"PK\\x03\\x04 half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    write_atomic(path, die)
checkpoint.save = save
plan = resolve(TrainConfig(**{_cfg().__dict__!r}))
train(plan, {str(out)!r}, validator(plan))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert proc.returncode == -9, proc.stderr
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert leftovers and leftovers[0].startswith(".train_state.pt.")  # the torn write
    assert checkpoint.step_of(out / checkpoint.STATE_FILE) == 3
    state = out / checkpoint.STATE_FILE
    result = train(plan, out, validator(plan), resume=[state])
    assert result.extra["resumed_from"] == [3]
    assert_same_run(tmp_path / "whole", out)


def test_a_checkpoint_of_another_run_is_never_resumed(tmp_path):
    """Another thread count (or config) than the checkpoint's: refused before anything
    is written, naming what differs; a torn or foreign file is skipped."""
    plan = resolve(_cfg())
    out = tmp_path / "cut"
    with pytest.raises(Interrupt):
        train(plan, out, _interrupting(plan, 3))
    state = out / checkpoint.STATE_FILE
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    threads = torch.get_num_threads()
    try:
        other = resolve(_cfg(threads=2))
        torch.set_num_threads(2)
        with pytest.raises(checkpoint.CheckpointMismatch, match="torch threads 1 there, 2 here"):
            train(other, out, validator(other), resume=[state])
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(checkpoint.CheckpointMismatch, match="differ"):
        train(resolve(_cfg(steps=13)), out, None, resume=[state])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # A torn file is no checkpoint: nothing to resume, and --out is not empty.
    torn = tmp_path / "torn.pt"
    torn.write_bytes(state.read_bytes()[:1000])
    assert checkpoint.pick([torn], "x", {}) is None


def test_stop_is_asked_at_log_and_checkpoint_boundaries(tmp_path):
    plan = resolve(_cfg())
    asked = []

    def stop():
        asked.append(1)
        return len(asked) == 3

    with pytest.raises(StopRequested, match="step 4"):
        train(plan, tmp_path / "run", None, stop=stop)  # asked at steps 2, 3, 4


def test_ablate_train_checkpoint_every_and_resume(tmp_path, monkeypatch, capsys):
    """``ablate train --checkpoint-every 3``, interrupted (Ctrl-C) during its third
    checkpoint write, keeps its directory and says how to go on; ``--resume`` finishes it
    with the uninterrupted run's weights, log and metrics."""
    args = ["train", "--dataset", "fake", "--steps", "12", "--batch-size", "8", "--seed", "3",
            "--ngf", "8", "--ndf", "8", "--hacks", "all", "--device", "cpu", "--threads", "1",
            "--log-every", "2", "--val-every", "2", "--val-n", "64", "--eval-n", "64",
            "--checkpoint-every", "3"]
    monkeypatch.setattr("ablate.cli.train.protocol_for",
                        lambda *a, **k: EvalProtocol(n=64, kid_subset_size=32, kid_subsets=2,
                                                     batch_size=64, val_every=2, val_n=64))
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    real, calls = checkpoint.save, []

    def save(path, state):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(path, state)

    monkeypatch.setattr(checkpoint, "save", save)
    cut = tmp_path / "cut"
    assert main([*args, "--out", str(cut)]) == 130
    assert "--resume" in capsys.readouterr().err
    assert checkpoint.step_of(cut / checkpoint.STATE_FILE) == 6
    assert main([*args, "--out", str(cut)]) == 2  # not empty: add --resume
    assert "add --resume" in capsys.readouterr().err
    monkeypatch.setattr(checkpoint, "save", real)
    assert main([*args, "--out", str(cut), "--resume"]) == 0
    assert json.loads((cut / "result.json").read_text())["extra"]["resumed_from"] == [6]
    assert_same_run(tmp_path / "whole", cut, metrics=True)
    assert main([*args, "--out", str(cut), "--resume"]) == 2  # finished: nothing to resume


def test_pipeline_keeps_an_interrupted_run_with_a_checkpoint_only(tmp_path, monkeypatch):
    """train_and_score removes an unfinished directory unless it holds a checkpoint."""
    monkeypatch.setattr("ablate.pipeline.validator", lambda plan: _interrupting(plan, 1))
    with pytest.raises(Interrupt):
        train_and_score(_cfg(), None, tmp_path / "early")  # step 2: no checkpoint yet
    assert not (tmp_path / "early").exists()
    monkeypatch.setattr("ablate.pipeline.validator", lambda plan: _interrupting(plan, 3))
    with pytest.raises(Interrupt):
        train_and_score(_cfg(), None, tmp_path / "later")
    assert (tmp_path / "later" / checkpoint.STATE_FILE).exists()
