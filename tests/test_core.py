"""Trainer determinism and artefacts, dataset loaders on fixtures, registry and CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate import Hack, registry
from ablate.cli import main
from ablate.data import load
from ablate.errors import ConfigError
from ablate.config import TrainConfig
from ablate.training.resolve import load_run, resolve
from ablate.training.loop import train

from formats import write_cifar10, write_mnist_like

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


# ----- data loaders on fixtures in the real formats -----------------------------------
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_loaders(name, folder, tmp_path, monkeypatch):
    written = write_mnist_like(tmp_path, folder)
    monkeypatch.setenv("ABLATE_DATA", str(tmp_path))
    test = load(name, "test")
    assert test.images.shape == (20, 1, 28, 28) and test.images.dtype == torch.uint8
    assert np.array_equal(test.images[:, 0].numpy(), written["t10k"][0])
    assert np.array_equal(test.labels.numpy(), written["t10k"][1])
    train_, val = load(name, "train"), load(name, "val")
    assert len(train_) + len(val) == 50 and len(val) == 5
    assert test.source == "data root"


def test_cifar_loader(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    batches = write_cifar10(tmp_path)
    # The real files are checked against torchvision's MD5 sums; fixtures cannot match
    # them, so only that check is replaced (by an existence check).
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    monkeypatch.setenv("ABLATE_DATA", str(tmp_path))
    test = load("cifar10", "test")
    data, labels = batches["test_batch"]
    assert test.images.shape == (10, 3, 32, 32)
    assert np.array_equal(test.images.numpy().reshape(10, -1), data)  # CHW planes, like the file
    assert test.labels.tolist() == labels
    assert len(load("cifar10", "train")) + len(load("cifar10", "val")) == 50


def test_mnist5k_is_real_and_split(monkeypatch):
    train_, test = load("mnist-5k", "train"), load("mnist-5k", "test")
    val = load("mnist-5k", "val")
    assert len(train_) + len(val) == 4000 and len(test) == 1000
    assert torch.bincount(test.labels).tolist() == [100] * 10
    assert train_.images.float().mean() > 20  # real digits, not blank


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_DATA", str(tmp_path))
    monkeypatch.setenv("ABLATE_OFFLINE", "1")
    with pytest.raises(ConfigError, match="cifar-10-python.tar.gz"):
        load("cifar10", "train")


# ----- registry -----------------------------------------------------------------------
def test_duplicate_hack_name_is_rejected():
    class Dup(Hack):
        name = "batch-norm"

    with pytest.raises(ConfigError, match="already registered"):
        registry.register_hack(Dup)
    assert registry.get_hack("batch-norm") is not Dup


def test_conflicting_hacks_name_both():
    @dataclass(frozen=True)
    class P:
        x: int = 1

    class A(Hack):
        name, conflicts, Params = "test-conflict-a", ("test-conflict-b",), P

    class B(Hack):
        name = "test-conflict-b"

    registry.register_hack(A)
    registry.register_hack(B)
    try:
        with pytest.raises(ConfigError, match="'test-conflict-a' and 'test-conflict-b'"):
            registry.instantiate(["test-conflict-b", "test-conflict-a"])
        with pytest.raises(ConfigError, match="must be int"):
            registry.instantiate(["test-conflict-a"], {"test-conflict-a": {"x": "abc"}})
    finally:
        for n in ("test-conflict-a", "test-conflict-b"):
            registry.unregister_hack(n)


# ----- CLI ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["train", "--hacks", "nope"], "unknown hack 'nope'; valid hacks: strided-downsample"),
    (["train", "--off", "nope"], "unknown hack 'nope'"),
    (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'; valid datasets: mnist"),
    (["train", "--set", "noisy-labels.q=1"], "has no parameter 'q'; valid parameters: p"),
    (["train", "--set", "noisy-labels.p=2"], "p must lie in [0, 1]"),
    (["train", "--set", "noisylabels"], "expected hack.param=value"),
    (["train", "--steps", "0"], "steps must be a positive integer"),
    (["train", "--device", "tpu"], "bad --device"),
    (["data", "fetch"], "needs a dataset name"),
])
def test_cli_errors_exit_2(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "x")] if argv[0] == "train" else argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_train_refuses_existing_dir(tmp_path, capsys):
    (tmp_path / "done").mkdir()
    (tmp_path / "done/result.json").write_text("{}")
    code = main(["train", "--dataset", "fake", "--steps", "1", "--out", str(tmp_path / "done")])
    assert code == 2 and "holds a finished run" in capsys.readouterr().err
    assert (tmp_path / "done/result.json").read_text() == "{}"


def test_cli_hacks_json_and_dry_run(capsys):
    assert main(["hacks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert names[:11] == registry.builtin_names()
    assert all({"name", "source", "on", "off", "params", "provider"} <= r.keys() for r in rows)
    assert main(["train", "--hacks", "all", "--off", "noisy-labels", "--set",
                 "label-smoothing.one_sided=true", "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert "noisy-labels" not in cfg["train"]["hacks"]
    assert cfg["recipe"]["fake_target"] == [0.0, 0.0] and cfg["recipe"]["real_target"] == [0.7, 1.2]


# ----- the example plugin, through its entry point, without touching ablate/ ----------
@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """Install examples/ablate-spectral-norm into a throwaway folder (no index, no deps)."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(site),
                    str(REPO / "examples/ablate-spectral-norm")], check=True)
    return site


def _run_with(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([*ABLATE, *args], env=env, capture_output=True, text=True, cwd=REPO)


def test_example_plugin_is_listed_and_trains(plugin_site, tmp_path):
    out = _run_with(plugin_site, "hacks", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["spectral-norm"]["provider"] == "ablate-spectral-norm"
    assert rows["instance-noise"]["params"]["sigma"]["default"] == 0.1
    run = _run_with(plugin_site, "train", "--dataset", "fake", "--steps", "3", "--batch-size", "4",
                    "--ngf", "8", "--ndf", "8", "--hacks", "builtin,spectral-norm,instance-noise",
                    "--out", str(tmp_path / "run"), "--log-every", "1")
    assert run.returncode == 0, run.stderr
    cfg = json.loads((tmp_path / "run/config.json").read_text())
    providers = {h["name"]: h["provider"] for h in cfg["hacks"]}
    assert providers["spectral-norm"] == providers["instance-noise"] == "ablate-spectral-norm"
    assert len(cfg["hacks"]) == 13


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


def test_artefacts_are_readable_by_others(tmp_path):
    """mkstemp creates 0600 files; atomic writes must leave the usual 0666 & ~umask."""
    from ablate.artefacts import write_json

    write_json(tmp_path / "a.json", {"x": 1})
    assert (tmp_path / "a.json").stat().st_mode & 0o044 == 0o044
