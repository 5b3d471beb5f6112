"""The command line: usage errors exit 2, ablate hacks and --dry-run, the example plugin through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ablate import registry
from ablate.cli import main


REPO = Path(__file__).resolve().parent.parent
ABLATE = [sys.executable, "-m", "ablate.cli"]


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
