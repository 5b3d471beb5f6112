"""The training loop: determinism, the run directory, divergence, bf16, atomic artefacts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from ablate import registry
from ablate.errors import ConfigError
from ablate.config import TrainConfig
from ablate.training.resolve import load_run, resolve
from ablate.training.loop import train


REPO = Path(__file__).resolve().parent.parent
ABLATE = [sys.executable, "-m", "ablate.cli"]


def _tiny(**kw) -> TrainConfig:
    base = dict(dataset="fake", steps=20, batch_size=16, seed=3, ngf=8, ndf=8, device="cpu",
                log_every=10, hacks=tuple(registry.builtin_names()))
    return TrainConfig(**{**base, **kw})


def test_same_seed_gives_identical_weights(tmp_path):
    a, b = train(resolve(_tiny()), tmp_path / "a"), train(resolve(_tiny()), tmp_path / "b")
    wa = torch.load(tmp_path / "a/generator.pt")
    wb = torch.load(tmp_path / "b/generator.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    train(resolve(_tiny(seed=4)), tmp_path / "c")
    wc = torch.load(tmp_path / "c/generator.pt")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert a.status == b.status == "done"


def test_run_directory(tmp_path):
    result = train(resolve(_tiny()), tmp_path / "run")
    run = tmp_path / "run"
    assert {"config.json", "log.jsonl", "samples.png", "generator.pt", "result.json"} <= {
        p.name for p in run.iterdir()}
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["num_images"] == 1080 and cfg["data"]["source"].startswith("generated")
    assert {h["name"] for h in cfg["hacks"]} == set(registry.builtin_names())
    smooth = next(h for h in cfg["hacks"] if h["name"] == "label-smoothing")
    assert smooth["params"]["real_low"] == 0.7  # every default is resolved into the config
    assert cfg["versions"]["torch"] and cfg["device"] == "cpu"
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20] and all(r["images_per_s"] > 0 for r in log)
    res = json.loads((run / "result.json").read_text())
    assert res["status"] == "done" and res["steps"] == 20 and res["images_per_s"] > 0
    assert (run / "samples.png").read_bytes()[:4] == b"\x89PNG"
    _, recipe, g = load_run(run)
    assert g(torch.zeros(2, 100)).shape == (2, 1, 28, 28)
    assert result.images_per_s == pytest.approx(res["images_per_s"])


def test_divergence_is_recorded_with_its_step(tmp_path):
    config = _tiny(params=(("adam-dcgan", "lr", 1e20),), hacks=("adam-dcgan",), steps=60)
    result = train(resolve(config), tmp_path / "run")
    assert result.status == "diverged" and 1 <= result.diverged_step <= result.steps < 60
    res = json.loads((tmp_path / "run/result.json").read_text())
    assert res["diverged_step"] == result.diverged_step


def test_existing_run_directory_is_never_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run/keep.txt").write_text("finished result")
    with pytest.raises(ConfigError, match="already exists"):
        train(resolve(_tiny()), tmp_path / "run")
    assert (tmp_path / "run/keep.txt").read_text() == "finished result"


def test_bf16_precision_option(tmp_path):
    """bf16 autocast trains, is recorded in the config, and differs from fp32."""
    result = train(resolve(_tiny(precision="bf16")), tmp_path / "bf16")
    train(resolve(_tiny()), tmp_path / "fp32")
    cfg = json.loads((tmp_path / "bf16/config.json").read_text())
    assert result.status == "done" and cfg["train"]["precision"] == "bf16"
    a, b = torch.load(tmp_path / "bf16/generator.pt"), torch.load(tmp_path / "fp32/generator.pt")
    assert a.keys() == b.keys()  # plain G weights are saved, not the autocast wrapper
    assert not all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="precision must be one of"):
        _tiny(precision="fp16")


def test_batch_larger_than_dataset_leaves_no_run_dir(tmp_path):
    with pytest.raises(ConfigError, match="exceeds the 1080 training images"):
        train(resolve(_tiny(batch_size=5000)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_artefacts_are_readable_by_others(tmp_path, monkeypatch):
    """mkstemp creates 0600 files; atomic writes must leave the usual 0666 & ~umask."""
    from ablate import artefacts

    artefacts.write_json(tmp_path / "a.json", {"x": 1})  # the umask this process started with (022 usually; CI may differ)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~artefacts._UMASK
    monkeypatch.setattr(artefacts, "_UMASK", 0o022)  # and under the usual one, readable by others
    artefacts.write_json(tmp_path / "b.json", {"x": 1})
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o644
