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
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from ablate import Hack, checkpoint, pipeline, registry
from ablate.cli import main
from ablate.config import EvalProtocol, TrainConfig
from ablate.fused import train_group
from ablate.grid import groups, worker
from ablate.grid.keys import RunSpec
from ablate.grid.rundirs import checkpoints, sweep_tmp
from ablate.grid.store import Status, Store
from ablate.experiment.pipeline import train_and_score, validator
from ablate.training.resolve import resolve
from ablate.training.loop import StopRequested, train

KEY = "0123456789abcdef"
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
    (the sampling generator), draws from ``ctx.rng`` and from the global RNG, a counter on
    the hack itself (saved through ``state_dict``/``load_state_dict``), and numbers it
    reports through ``ctx.log`` (averaged over log windows that checkpoints cut)."""

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
        noise = 0.05 * torch.randn(x.shape, generator=ctx.rng)
        ctx.log(f"noise_{ctx.side}", noise.std())
        return x + noise

    def after_step(self, ctx):
        self.updates += 1
        ctx.log("updates", self.updates)
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


def _interrupting(plan, at: int | None, exc: type[BaseException] = Interrupt):
    """The run's validator, raising ``exc`` at its ``at``-th call (None: never)."""
    real = validator(plan)
    calls = [0]

    def validate(g):
        calls[0] += 1
        if calls[0] == at:
            raise exc
        return real(g)

    return validate


def _log(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in (run / "log.jsonl").read_text().splitlines()]


# Provenance that names the code, not a result: it moves when anything under ablate/ is
# committed or edited between the reference run and the resumed one (a shared checkout).
CODE_PROVENANCE = {"git_commit"}


def _no_timings(doc):
    if isinstance(doc, dict):
        return {k: _no_timings(v) for k, v in doc.items() if k not in TIMINGS | CODE_PROVENANCE}
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
    if hacks == "stateful":  # ctx.log's keys, on every training record
        train_log = [r for r in _log(tmp_path / "cut") if "loss_d" in r]
        assert all({"noise_mixed", "noise_g", "updates"} <= r.keys() for r in train_log)
        assert [r["updates"] for r in train_log] == [1.5 + 2 * i for i in range(6)]


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
from ablate.training import checkpoint
from ablate.artefacts import write_atomic
from ablate.config import TrainConfig
from ablate.experiment.pipeline import validator
from ablate.training.resolve import resolve
from ablate.training.loop import train
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


def test_a_checkpoint_of_the_same_run_key_from_another_commit_resumes(tmp_path):
    """A TrainConfig field added later at its default (lr_scale) changed every digest, so
    a grid upgraded mid-run restarted its runs at step 0. With the run key (the grid's
    ``fingerprint``) equal, and threads, device, torch and ablate versions, a checkpoint
    whose digest differs is this run's: it resumes, bit for bit; without a key, or with
    another key or thread count, it is refused as before."""
    plan = resolve(_cfg())
    train(plan, tmp_path / "whole", validator(plan))
    out = tmp_path / "cut"
    with pytest.raises(Interrupt):
        train(plan, out, _interrupting(plan, 3), fingerprint="key-1")
    state = out / checkpoint.STATE_FILE
    saved = checkpoint._load(state, mmap=False)
    checkpoint.save(state, {**saved, "fingerprint": "written-by-another-commit"})
    with pytest.raises(checkpoint.CheckpointMismatch):  # no key: the digest must match
        train(plan, out, validator(plan), resume=[state])
    with pytest.raises(checkpoint.CheckpointMismatch, match="run key 'key-1' there, 'key-2' here"):
        train(plan, out, validator(plan), resume=[state], fingerprint="key-2")
    about = checkpoint.fingerprint(plan.config, plan.hack_records, plan.recipe.to_dict(),
                                   torch.device("cpu"), "key-1")[1]
    assert checkpoint.same_run(saved["about"], about)
    assert not checkpoint.same_run({**saved["about"], "threads": 2}, about)
    assert not checkpoint.same_run({**saved["about"], "torch": "0.0"}, about)
    assert not checkpoint.same_run({**saved["about"], "fused": "abc (k=2)"}, about)
    result = train(plan, out, validator(plan), resume=[state], fingerprint="key-1")
    assert result.extra["resumed_from"] == [3]
    assert_same_run(tmp_path / "whole", out)


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
    # As if another ablate commit wrote it (a config field added since changes the digest):
    # the same training key still resumes it.
    state = checkpoint._load(cut / checkpoint.STATE_FILE, mmap=False)
    assert state["about"]["extra"]  # the run's training key
    checkpoint.save(cut / checkpoint.STATE_FILE, {**state, "fingerprint": "another-commit"})
    assert main([*args, "--out", str(cut), "--resume"]) == 0
    assert json.loads((cut / "result.json").read_text())["extra"]["resumed_from"] == [6]
    assert_same_run(tmp_path / "whole", cut, metrics=True)
    assert main([*args, "--out", str(cut), "--resume"]) == 2  # finished: nothing to resume


def test_a_second_ablate_train_on_a_run_being_trained_stops_before_touching_it(tmp_path):
    """Two ``ablate train --out DIR`` processes (the second with --resume, once the first's
    checkpoint exists) both continued one run and overwrote each other's files; now the
    second exits 2 at once, naming the folder in use, and the first ends as if alone."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "ablate", "train", "--dataset", "fake", "--steps", "3000",
            "--batch-size", "8", "--ngf", "8", "--ndf", "8", "--device", "cpu", "--threads", "1",
            "--no-eval", "--log-every", "50", "--checkpoint-every", "50", "--out", str(out)]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / checkpoint.STATE_FILE).exists() and first.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could start"
        before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        second = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"--out {out} is in use by another ablate process" in second.stderr
        assert "Traceback" not in second.stderr
        assert set(before) <= {p.name for p in out.iterdir()}  # nothing removed by the second
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
        first.wait(120)
    assert first.returncode == 128 + signal.SIGTERM, first.stderr.read()
    assert (out / checkpoint.STATE_FILE).exists()  # the first one's, resumable as it says


def test_a_hack_crashing_mid_run_says_where_its_checkpoint_is(tmp_path, capsys):
    """A hook raising after the first checkpoint: exit 2 naming the hack and the hook, and
    the directory kept with the checkpoint, which the message names with --resume."""
    from ablate import Hack, registry

    class Crash(Hack):
        name = "test-crash-at-5"
        on = off = "test"

        def after_step(self, ctx):
            if ctx.step == 5:
                raise RuntimeError("boom at step 5")

    registry.register_hack(Crash)
    try:
        out = tmp_path / "run"
        assert main(["train", "--dataset", "fake", "--steps", "8", "--batch-size", "8", "--ngf", "8",
                     "--ndf", "8", "--hacks", "test-crash-at-5", "--device", "cpu", "--threads", "1",
                     "--log-every", "2", "--checkpoint-every", "2", "--no-eval", "--out", str(out)]) == 2
    finally:
        registry.unregister_hack(Crash.name)
    err = capsys.readouterr().err
    assert "test-crash-at-5" in err and "after_step" in err and "boom at step 5" in err
    assert f"checkpoint is in {out}" in err and "--resume" in err
    assert checkpoint.step_of(out / checkpoint.STATE_FILE) in (2, 4)


def test_pipeline_keeps_an_interrupted_run_with_a_checkpoint_only(tmp_path, monkeypatch):
    """train_and_score removes an unfinished directory unless it holds a checkpoint."""
    monkeypatch.setattr("ablate.experiment.pipeline.validator", lambda plan: _interrupting(plan, 1))
    with pytest.raises(Interrupt):
        train_and_score(_cfg(), None, tmp_path / "early")  # step 2: no checkpoint yet
    assert not (tmp_path / "early").exists()
    monkeypatch.setattr("ablate.experiment.pipeline.validator", lambda plan: _interrupting(plan, 3))
    with pytest.raises(Interrupt):
        train_and_score(_cfg(), None, tmp_path / "later")
    assert (tmp_path / "later" / checkpoint.STATE_FILE).exists()


# ----- the grid ---------------------------------------------------------------------
sys.path.insert(0, str(Path(__file__).parent))
from gridutil import experiment, grid_cmd, rows, run_cli  # noqa: E402

KILLER = '''
import os
import signal
import time
from pathlib import Path

from ablate import Hack, register_hack


@register_hack
class Killer(Hack):
    name = "test-killer"
    source = "tests"
    on = "SIGKILLs its process (or sleeps) once at each step of $ABLATE_TEST_KILL_AT"
    off = "nothing"

    def after_step(self, ctx):
        marker = Path(os.environ["ABLATE_TEST_KILL_MARKER"])
        done = marker.read_text().split() if marker.exists() else []
        at = os.environ.get("ABLATE_TEST_KILL_AT", "").split(",")
        if str(ctx.step) in at and str(ctx.step) not in done:
            marker.write_text(" ".join([*done, str(ctx.step)]))
            if os.environ.get("ABLATE_TEST_KILL_MODE") == "sleep":
                time.sleep(300)  # until the test's signal ends the job
            os.kill(os.getpid(), signal.SIGKILL)  # like the OOM killer, or a power cut
'''


def _killer_env(tmp_path: Path, at: str) -> dict[str, str]:
    """A plugin (entry point on PYTHONPATH) that SIGKILLs its process once at each step
    in ``at`` (between checkpoints), whatever attempt reaches it first."""
    site = tmp_path / "site"
    meta = site / "ablate_test_killer-0.1.dist-info"
    meta.mkdir(parents=True, exist_ok=True)
    (site / "ablate_test_killer.py").write_text(KILLER)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: ablate-test-killer\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text("[ablate.hacks]\ntest-killer = ablate_test_killer\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
            "ABLATE_TEST_KILL_AT": at, "ABLATE_TEST_KILL_MARKER": str(tmp_path / f"killed-{at}")}


def _grid_exp(tmp_path: Path) -> Path:
    """One all-on-like run (batch-norm + the killer), 20 steps, a checkpoint every 5,
    validated every 5 and scored (tiny protocol)."""
    return experiment(tmp_path, steps=20, scope='["batch-norm", "test-killer"]', replace={
        'kind = "leave-one-out"': 'kind = "explicit"\n[design.variants]\n'
                                  'bn = ["batch-norm", "test-killer"]',
        "log_every = 10": "log_every = 2\ncheckpoint_every = 5",
        "features = []": 'features = ["classifier"]\nn = 64\nkid_subset_size = 32\n'
                         'kid_subsets = 2\nbatch_size = 64\nval_every = 5\nval_n = 64'})


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The grid's run uninterrupted (its killer never fires): runs/<key>/."""
    tmp = tmp_path_factory.mktemp("reference")
    res = tmp / "res"
    out = run_cli(*grid_cmd(_grid_exp(tmp), res, "--executor", "inline", "--threads", "1")[3:],
                  env=_killer_env(tmp, ""))
    assert out.returncode == 0, out.stderr
    (key,) = rows(res)
    return res / "runs" / key


def test_a_grid_whose_worker_is_killed_twice_resumes_each_time(tmp_path, reference):
    """The pool worker is SIGKILLed at steps 7 and 13: each death is retried in the same
    grid from the last checkpoint (5, then 10), and the run ends bit for bit as the
    uninterrupted one; the dead attempts' tmp dirs are swept by the next grid."""
    res = tmp_path / "res"
    env = _killer_env(tmp_path, "7,13")
    out = run_cli(*grid_cmd(_grid_exp(tmp_path), res, "--workers", "1", "--threads", "1")[3:],
                  env=env)
    assert out.returncode == 0, out.stderr
    (key, row), = rows(res).items()
    assert row["status"] == "done" and row["attempts"] == 3
    run = json.loads((res / "runs" / key / "run.json").read_text())
    assert run["resumed_from"] == [5, 10]
    assert_same_run(reference, res / "runs" / key, metrics=True)
    # The stored wall time is the whole run's: the earlier attempts up to the step-10
    # checkpoint (result.json's resumed_wall_s) plus the last attempt (run.json's).
    extra = json.loads((res / "runs" / key / "result.json").read_text())["extra"]
    assert extra["resumed_wall_s"] > 0 and run["attempt_wall_s"] > 0
    assert row["wall_time_s"] == pytest.approx(run["attempt_wall_s"] + extra["resumed_wall_s"], abs=2e-3)
    assert run_cli(*grid_cmd(_grid_exp(tmp_path), res, "--workers", "1", "--threads", "1")[3:],
                   env=env).returncode == 0
    assert not any((res / "tmp").iterdir())  # finished: the dead attempts' dirs are swept


def test_a_grid_killed_mid_run_resumes_from_its_checkpoint_when_rerun(tmp_path, reference):
    """The whole grid (inline executor) is SIGKILLed at step 13: its tmp dir keeps the
    step-10 checkpoint through the next grid's sweep, and the rerun resumes from it."""
    res = tmp_path / "res"
    env = _killer_env(tmp_path, "13")
    cmd = grid_cmd(_grid_exp(tmp_path), res, "--executor", "inline", "--threads", "1")[3:]
    first = run_cli(*cmd, env=env)
    assert first.returncode == -9, first.stderr
    (dead,) = (res / "tmp").iterdir()
    assert checkpoint.step_of(dead / checkpoint.STATE_FILE) == 10
    second = run_cli(*cmd, env=env)
    assert second.returncode == 0, second.stderr
    (key,) = rows(res)
    assert json.loads((res / "runs" / key / "run.json").read_text())["resumed_from"] == [10]
    assert_same_run(reference, res / "runs" / key, metrics=True)
    assert dead.exists()  # never written by the new owner; swept at the next start
    assert run_cli(*cmd, env=env).returncode == 0
    assert not dead.exists()


def _spec(results: Path, **kw) -> RunSpec:
    return RunSpec(key=KEY, variant="v", seed=3, config=_cfg(**kw), protocol=None,
                   results_dir=str(results))


def test_a_taken_over_owner_stops_at_its_next_boundary(tmp_path, monkeypatch):
    """Its heartbeat finds the claim gone; the loop stops at the next log boundary and the
    attempt ends ``lost`` (it used to train to the end first)."""
    monkeypatch.setenv("ABLATE_STALE_LOCAL_S", "1")  # heartbeats every 0.2 s
    res = tmp_path / "res"
    spec = _spec(res, steps=400, checkpoint_every=0)
    calls = []

    def validate(g):
        calls.append(1)
        if len(calls) == 1:
            with Store(res) as other:  # a second grid takes the claim over
                other.stale_local_s = -1.0
                assert other.claim(KEY)
        time.sleep(0.1)
        return 1.0

    monkeypatch.setattr(pipeline, "validator", lambda plan: validate)
    with Store(res) as store:
        out = worker.attempt(spec, store, store.claim(KEY), res)
    assert out.status == Status.LOST, out
    assert len(calls) < 40, len(calls)  # a few boundaries, not 200 validations


def _state(path: Path, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(path, {"format": checkpoint.FORMAT, "fingerprint": "x", "step": step})


def test_the_sweep_keeps_the_newest_checkpoint_of_an_unfinished_key(tmp_path):
    res = tmp_path / "res"
    other = "fedcba9876543210"
    with Store(res) as store:
        for key in (KEY, other):
            store.claim(key)
        assert store.commit(other, store.get(other)["token"], Status.DONE, lambda: None)
        live = store.get(KEY)["token"]
        tmp = res / "tmp"
        _state(tmp / f"{KEY}-old" / checkpoint.STATE_FILE, 5)
        _state(tmp / f"{KEY}-new" / checkpoint.STATE_FILE, 10)
        (tmp / f"{KEY}-none").mkdir()
        (tmp / f"{KEY}-{live}").mkdir()  # the live owner's (no checkpoint yet)
        _state(tmp / f"{other}-dead" / checkpoint.STATE_FILE, 15)
        assert sweep_tmp(store) == 3
        assert sorted(p.name for p in tmp.iterdir()) == [f"{KEY}-{live}", f"{KEY}-new"]
        assert checkpoints(res, KEY, live) == [tmp / f"{KEY}-new" / checkpoint.STATE_FILE]
        # The live owner's own checkpoint supersedes the one it resumed from.
        _state(tmp / f"{KEY}-{live}" / checkpoint.STATE_FILE, 15)
        assert sweep_tmp(store) == 1 and not (tmp / f"{KEY}-new").exists()


def test_abandon_keeps_a_tmp_dir_with_a_checkpoint(tmp_path):
    res = tmp_path / "res"
    spec = _spec(res)
    with Store(res) as store:
        token = store.claim(KEY)
        tmp = res / "tmp" / f"{KEY}-{token}"
        _state(tmp / checkpoint.STATE_FILE, 5)
        worker.abandon(store, [(spec, token, tmp)], KeyboardInterrupt())
        assert tmp.exists() and store.get(KEY)["status"] == "pending"
        token = store.claim(KEY)
        bare = res / "tmp" / f"{KEY}-{token}"
        bare.mkdir()
        worker.abandon(store, [(spec, token, bare)], KeyboardInterrupt())
        assert not bare.exists()


# ----- fused groups -----------------------------------------------------------------
def _group(tmp_path: Path, name: str):
    plans = [resolve(_cfg(registry.builtin_names(), seed=s)) for s in (0, 1)]
    return plans, [tmp_path / f"{name}{i}" for i in range(2)]


def _states(dirs):
    return [[d / n for n in checkpoint.STATE_FILES] for d in dirs]


def test_a_fused_group_resumes_bit_for_bit(tmp_path):
    """Members of a fused group (K = 2) interrupted at step 6 and at step 8 (member 0's
    validator raises) resume from steps 3 and 6 and end as the uninterrupted group's."""
    plans, whole = _group(tmp_path, "whole")
    train_group(plans, whole, [validator(p) for p in plans])
    plans, cut = _group(tmp_path, "cut")
    for at in (3, 3):
        with pytest.raises(Interrupt):
            train_group(plans, cut, [_interrupting(plans[0], at), validator(plans[1])],
                        resume=_states(cut))
    results = train_group(plans, cut, [validator(p) for p in plans], resume=_states(cut))
    assert [r.extra["resumed_from"] for r in results] == [[3, 6], [3, 6]]
    for a, b in zip(whole, cut):
        assert_same_run(a, b)
        assert not (b / checkpoint.PREV_FILE).exists()


def test_a_fused_group_killed_between_its_members_writes_resumes_from_their_common_step(
        tmp_path, monkeypatch):
    """Killed after member 0 wrote its step-9 checkpoint and before member 1 did: the
    group resumes from step 6 (member 0's previous checkpoint), bit for bit."""
    plans, whole = _group(tmp_path, "whole")
    train_group(plans, whole, [validator(p) for p in plans])
    real, calls = checkpoint.save, []

    def save(path, state, keep_previous=False):
        calls.append(1)
        if len(calls) == 6:
            raise Interrupt
        real(path, state, keep_previous)

    monkeypatch.setattr(checkpoint, "save", save)
    plans, cut = _group(tmp_path, "cut")
    with pytest.raises(Interrupt):
        train_group(plans, cut, [validator(p) for p in plans])
    monkeypatch.setattr(checkpoint, "save", real)
    assert [checkpoint.step_of(d / checkpoint.STATE_FILE) for d in cut] == [9, 6]
    results = train_group(plans, cut, [validator(p) for p in plans], resume=_states(cut))
    assert [r.extra["resumed_from"] for r in results] == [[6], [6]]
    for a, b in zip(whole, cut):
        assert_same_run(a, b)


def test_a_fused_checkpoint_is_not_resumed_alone_nor_by_another_group(tmp_path, capsys, caplog):
    plans, cut = _group(tmp_path, "cut")
    with pytest.raises(Interrupt):
        train_group(plans, cut, [_interrupting(plans[0], 3), validator(plans[1])])
    with pytest.raises(checkpoint.CheckpointMismatch, match="fused group"):
        train(plans[0], tmp_path / "alone", None, resume=_states(cut)[0])
    other = [plans[1], plans[0]]  # the same members in another order: another group
    results = train_group(other, [tmp_path / "o0", tmp_path / "o1"], None,
                          resume=_states(cut)[::-1])
    # a note through ablate.messages: on stderr where the CLI showed it, else in logging
    assert "starts at step 0" in capsys.readouterr().err + caplog.text
    assert all("resumed_from" not in r.extra for r in results)


def test_a_fused_grid_group_stopped_mid_run_resumes_on_its_next_claim(tmp_path, monkeypatch):
    """The grid's fused group (run_group) is stopped at step 6 by Ctrl-C: the claims are
    released but the members' tmp dirs keep their checkpoints; the next claim of the
    group resumes from step 3, records it in run.json and commits the same runs as an
    uninterrupted group (weights, log, metrics)."""

    def specs(res: Path) -> list[RunSpec]:
        return [RunSpec(key=f"{s:016x}", variant="all-on", seed=s,
                        config=_cfg(registry.builtin_names(), seed=s), protocol=EVAL,
                        results_dir=str(res)) for s in (0, 1)]

    ref, res = tmp_path / "ref", tmp_path / "res"
    assert {o.status for o in groups.run_group(specs(ref))} == {Status.DONE}
    stopping = [True]
    monkeypatch.setattr(groups, "validator", lambda plan: _interrupting(
        plan, 3 if stopping[0] and plan.config.seed == 0 else None, KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        groups.run_group(specs(res))
    with Store(res) as store:
        assert {r["status"] for r in store.runs()} == {"pending"}
    assert len(list((res / "tmp").iterdir())) == 2
    stopping[0] = False
    assert {o.status for o in groups.run_group(specs(res))} == {Status.DONE}
    for s in specs(res):
        run = json.loads((res / "runs" / s.key / "run.json").read_text())
        assert run["resumed_from"] == [3] and run["fused"]["k"] == 2
        assert_same_run(ref / "runs" / s.key, res / "runs" / s.key, metrics=True)


def test_status_shows_each_running_runs_step_and_an_eta(tmp_path, capsys):
    """``ablate status``: a running run's step from its tmp dir's log, and the grid's ETA
    from the finished runs' measured seconds per step."""
    res = tmp_path / "res"
    keys = [f"{i:016x}" for i in range(4)]
    with Store(res) as store:
        store.record_plan([{"variant": "v", "seed": i, "key": k, "hacks": [],
                            "config": {"train": {"steps": 100}}} for i, k in enumerate(keys)])
        store.claim(keys[0])
        assert store.commit(keys[0], store.get(keys[0])["token"], Status.DONE, lambda: None,
                            steps=100, wall_time_s=50.0)
        token = store.claim(keys[1])
    (res / "experiment.json").write_text(json.dumps({"experiment": {"name": "x"}}))
    done = res / "runs" / keys[0]  # a finished run's files, as the store's cross-check reads them
    done.mkdir(parents=True)
    for name in ("config.json", "run.json"):
        (done / name).write_text("{}")
    (done / "result.json").write_text('{"status": "done"}')
    torch.save({}, done / "generator.pt")
    log = res / "tmp" / f"{keys[1]}-{token}" / "log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("".join(json.dumps({"step": s, "loss_d": 1.0, "elapsed_s": s / 4}) + "\n"
                           for s in (20, 40)) + json.dumps({"step": 40, "val_fid": 3.0}) + "\n")
    from ablate.cli.status import print_status  # the CLI prints; ablate.grid.status returns lines

    assert print_status(res) == 0
    out = capsys.readouterr().out
    assert f"running: v seed 1 ({keys[1]}): step 40/100 (40%), 4.00 steps/s" in out
    # 60 + 100 + 100 steps left at 0.5 s/step (the finished run), one at a time.
    assert "ETA for the planned runs: 2 min (260 steps left, 1 at a time; 0.5 s/step" in out


def test_budget_checkpoint_every_is_read_and_changes_no_key(tmp_path):
    """``[budget] checkpoint_every`` reaches every run's TrainConfig, but not its key (keys
    are built by inclusion; the committed keys are pinned by tests/test_grid_keys.py)."""
    from ablate.experiment.design import build_design
    from ablate.experiment.spec import load_experiment
    from ablate.grid.keys import plan_runs

    def plan(extra: str):
        exp = load_experiment(experiment(tmp_path, name=f"e{len(extra)}.toml",
                                         replace={"log_every = 10": f"log_every = 10{extra}"}))
        return plan_runs(exp, build_design(exp.design, exp.hacks), tmp_path / "res")

    plain, every5 = plan(""), plan("\ncheckpoint_every = 5")
    assert {s.config.checkpoint_every for s in plain} == {1000}
    assert {s.config.checkpoint_every for s in every5} == {5}
    assert [s.key for s in plain] == [s.key for s in every5]
    bad = run_cli("grid", str(experiment(tmp_path, name="bad.toml", replace={
        "log_every = 10": "log_every = 10\ncheckpoint_every = -1"})), "--dry-run")
    assert bad.returncode == 2 and "checkpoint_every must be >= 0" in bad.stderr, bad.stderr
