"""The benchmark scripts still speak the package's API. They run rarely (`make bench`, the GPU
check when a GPU is lent), so an API change broke one unseen: `fused_experiment.py`, stage 4
of `benchmarks/gpu_check.sh`, called a method that no longer existed. Importing every script
and expanding the GPU check's experiment catches that here, in about a second."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import pytest

from ablate.config import TrainConfig
from ablate.experiment.design import build_design
from ablate.experiment.spec import load_experiment

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py"))


@pytest.fixture(autouse=True)
def _benchmarks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # they import each other
    yield
    for name in SCRIPTS:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_benchmark_script_imports(name):
    """Import only (every script runs its work under ``if __name__ == "__main__"``): a name
    it imports from the package that is gone fails here."""
    module = importlib.import_module(name)
    assert Path(module.__file__) == REPO / "benchmarks" / f"{name}.py"


def test_the_gpu_checks_experiment_expands_with_its_scaled_budget_and_protocol():
    """Stage 4's expansion of experiments/fashion-mnist.toml: every variant x seed, the
    budget scaled, the protocol overridden as asked and validating as the training does."""
    fused_experiment = importlib.import_module("fused_experiment")
    path = REPO / "experiments" / "fashion-mnist.toml"
    exp = load_experiment(path)
    args = argparse.Namespace(experiment=str(path), steps_scale=0.05, features=["classifier"],
                              n=500, device="cpu", threads=1)
    runs, protocol = fused_experiment.expand(args)
    variants = build_design(exp.design, exp.hacks).variants
    assert len(runs) == len(variants) * len(exp.seeds)
    assert len({name for name, _ in runs}) == len(runs)
    config = runs[0][1]
    assert isinstance(config, TrainConfig) and config.device == "cpu" and config.threads == 1
    full = exp.train_kwargs()
    assert config.steps == max(1, round(full["steps"] * 0.05))
    assert protocol.features == ("classifier",) and protocol.n == 500
    assert (protocol.val_every, protocol.val_n) == (config.val_every, config.val_n)
    if full.get("val_every"):
        assert config.val_every == max(1, round(full["val_every"] * 0.05))
