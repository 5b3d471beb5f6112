"""A stale owner that wakes up (issue 16.1), at each point it can wake: its claim was
taken over by another grid while it was stopped, and that grid swept its tmp dir. Whatever
it was doing (training, validating, evaluating, committing), it ends ``lost``: it records
nothing, never touches the new owner's row or directories, and never reports ``failed``.

The takeover is done in-process at the exact point (a second :class:`Store` claims the
stale key and sweeps, as a second grid does); ``tests/test_grid_faults.py`` does the same
with a real ``kill -STOP`` of a grid process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gridutil import experiment  # noqa: E402

from ablate.experiment import pipeline  # noqa: E402
from ablate.cli import main  # noqa: E402
from ablate.config import EvalProtocol, TrainConfig
from ablate.grid import worker
from ablate.grid.keys import RunSpec
from ablate.grid.rundirs import sweep_tmp
from ablate.grid.store import Status, Store

KEY = "0123456789abcdef"
EVAL = EvalProtocol(n=64, kid_subset_size=32, kid_subsets=2, batch_size=64)


def _spec(tmp_path: Path, val_every: int = 0) -> RunSpec:
    config = TrainConfig(dataset="fake", steps=6, batch_size=8, ngf=8, ndf=8, latent_dim=8,
                         device="cpu", threads=1, log_every=2, val_every=val_every, val_n=32)
    return RunSpec(key=KEY, variant="v", seed=0, config=config,
                   protocol=EVAL, results_dir=str(tmp_path / "res"))


class Takeover:
    """A second grid: claims the (stale) key and sweeps the tmp dirs of dead attempts."""

    def __init__(self, results_dir: str) -> None:
        self.results_dir, self.token = results_dir, None

    def __call__(self, sweep: bool = True) -> None:
        with Store(self.results_dir) as other:
            other.stale_local_s = -1.0  # the first owner stopped past the stale limit
            self.token = other.claim(KEY)
            assert self.token is not None
            if sweep:
                sweep_tmp(other)


def _attempt(spec: RunSpec) -> tuple[worker.Outcome, dict]:
    with Store(spec.results_dir) as store:
        token = store.claim(KEY)
        out = worker.attempt(spec, store, token, Path(spec.results_dir))
        return out, store.get(KEY)


def _check_lost(out, row, takeover: Takeover, spec: RunSpec) -> None:
    assert out.status == Status.LOST, out
    assert "taken over" in out.error
    # The new owner's claim is untouched: still running, its token, nothing recorded.
    assert row["status"] == "running" and row["token"] == takeover.token and row["error"] is None
    res = Path(spec.results_dir)
    assert not (res / "runs").exists() or not any((res / "runs").iterdir())
    tmp = res / "tmp"
    assert not tmp.exists() or all(takeover.token not in d.name for d in tmp.iterdir())


def test_woken_mid_training_is_lost(tmp_path, monkeypatch):
    """Woken at a validation step (its tmp dir swept meanwhile); it trains on and ends lost."""
    spec = _spec(tmp_path, val_every=2)
    takeover = Takeover(spec.results_dir)
    calls = []

    def validate(g):
        if not calls:
            takeover()
        calls.append(1)
        return 1.0

    monkeypatch.setattr(pipeline, "validator", lambda plan: validate)
    out, row = _attempt(spec)
    _check_lost(out, row, takeover, spec)
    assert calls  # the takeover happened mid-training


def test_woken_mid_evaluation_is_lost(tmp_path, monkeypatch):
    """Trained, then woken as evaluation starts: its run directory is gone."""
    spec = _spec(tmp_path)
    takeover = Takeover(spec.results_dir)
    real = pipeline.evaluate_run

    def evaluate(out_dir, protocol, device):
        takeover()
        return real(out_dir, protocol, device)

    monkeypatch.setattr(pipeline, "evaluate_run", evaluate)
    out, row = _attempt(spec)
    _check_lost(out, row, takeover, spec)


@pytest.mark.parametrize("sweep", [False, True], ids=["tmp-kept", "tmp-swept"])
def test_woken_just_before_commit_is_lost(tmp_path, monkeypatch, sweep):
    """Trained and scored, woken just before the commit (run.json is the next write)."""
    spec = _spec(tmp_path)
    takeover = Takeover(spec.results_dir)
    real = worker.commit

    def commit(*args, **kwargs):
        takeover(sweep=sweep)
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "commit", commit)
    out, row = _attempt(spec)
    _check_lost(out, row, takeover, spec)


def test_a_run_that_really_fails_is_still_failed(tmp_path, monkeypatch):
    """The takeover check does not hide real failures: an owner that still holds its
    claim records ``failed`` with the error."""
    spec = _spec(tmp_path)

    def broken(out_dir, protocol, device):
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "evaluate_run", broken)
    out, row = _attempt(spec)
    assert out.status == Status.FAILED and "boom" in out.error
    assert row["status"] == "failed" and "boom" in row["error"]


def test_a_grid_with_nothing_to_do_draws_no_progress_bar(tmp_path, capsys):
    """Issue 16.6: a rerun over finished runs printed an empty bar (``0run [00:00, ?run/s]``)."""
    exp = experiment(tmp_path, steps=2, scope='["batch-norm"]')
    args = ["grid", str(exp), "--results-dir", str(tmp_path / "res"), "--no-report",
            "--executor", "inline"]
    assert main(args) == 0
    assert "run/s" in capsys.readouterr().err  # the bar is drawn while runs train
    assert main(args) == 0
    out = capsys.readouterr()
    assert "trained 0 now" in out.out + out.err
    assert "run/s" not in out.err and "0run" not in out.err, out.err


_SIGTERM_CHILD = r"""
import os, signal, sys, time
from ablate.config import EvalProtocol, TrainConfig
from ablate.grid import worker
from ablate.grid.keys import RunSpec
from ablate.grid.store import Store

res, key, when = sys.argv[1:]
config = TrainConfig(dataset="fake", steps=6, batch_size=8, ngf=8, ndf=8, latent_dim=8,
                     device="cpu", threads=1, log_every=2)
spec = RunSpec(key=key, variant="v", seed=0, config=config,
               protocol=EvalProtocol(n=64), results_dir=res)
worker.install_worker_signals(os.getppid())  # what a local-pool worker's initializer does
store = Store(res)
if when == "during":  # the signal lands inside Store.claim, after the row is written
    plain = Store.claim
    def claim(self, *args, **kwargs):
        token = plain(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return token
    Store.claim = claim
token = worker.claim(store, spec)
assert token is not None
if when == "after":  # between the claim and the run (the pool takes a co-worker down)
    os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
sys.exit(3)  # not reached: SIGTERM ends the worker
"""


@pytest.mark.parametrize("when", ["during", "after"])
def test_sigterm_between_claim_and_run_releases_the_claim(tmp_path, when):
    """A pool that breaks SIGTERMs every co-worker; one that has just claimed a key (in
    Store.claim, or before its run began) gives the claim back, so the grid does not
    charge the innocent key with a worker death (``record_death`` finds no dead claim)."""
    import subprocess

    res = tmp_path / "res"
    with Store(res) as store:
        store.record_plan([{"variant": "v", "seed": 0, "key": KEY, "hacks": [], "config": {}}])
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_CHILD, str(res), KEY, when],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, proc.stdout + proc.stderr
    with Store(res) as store:
        row = store.get(KEY)
        assert row["status"] == Status.PENDING and row["token"] is None, row
        assert [e["detail"] for e in store.events("release")] == ["abandoned"]
        assert store.record_death(KEY, "the pool broke", 3) is None  # nothing to blame
        assert store.events("died") == []
