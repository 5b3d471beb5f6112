"""Identity across hack API v2: the built-ins train bit for bit as before the hooks, and a
plugin's version is part of its runs' keys (bumping it retrains exactly its variants)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ablate import registry
from ablate.cli import main
from ablate.resolve import resolve
from ablate.train import train

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests/fixtures"
sys.path.insert(0, str(FIXTURES))
import make_reference  # noqa: E402  (the script that wrote the reference, before the hooks)

REFERENCE = json.loads((FIXTURES / "reference_weights.json").read_text())


def _platform_matches() -> bool:
    return make_reference.platform() == REFERENCE["platform"]


@pytest.mark.skipif(not _platform_matches(), reason=(
    f"reference weights were written with {REFERENCE['platform']}; float results of another "
    "torch build or CPU instruction set may differ in the last bit"))
@pytest.mark.parametrize("variant", list(make_reference.variants()))
def test_builtins_train_bit_for_bit_as_before_the_hooks(variant, tmp_path):
    """All-on, all-off and all-on minus each built-in, 6 steps on fake data: every tensor
    of the saved generator and every logged loss equals the pre-v2 loop's (5859f55)."""
    hacks = make_reference.variants()[variant]
    train(resolve(make_reference.config_for(hacks)), tmp_path / "run")
    got = make_reference.digest(tmp_path / "run")
    want = REFERENCE["runs"][variant]
    assert got["losses"] == want["losses"]
    assert got["generator_sha256"] == want["generator_sha256"]


# ----- a plugin version bump retrains exactly the variants that enable it -------------
PLUGIN = """
from ablate import Hack, register_hack


@register_hack
class Bump(Hack):
    name = "bump-hack"
    source = "tests"
    on, off = "identity (only its version matters here)", "-"
"""


def _set_version(info: Path, version: str) -> None:
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: bump-dist\nVersion: {version}\n")


@pytest.fixture
def bump_plugin(monkeypatch, tmp_path):
    """An installed plugin distribution ``bump-dist`` (version 1.0) in a fresh registry."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "bump_plugin_mod.py").write_text(PLUGIN)
    info = site / "bump_dist-1.0.dist-info"
    info.mkdir()
    _set_version(info, "1.0")
    (info / "entry_points.txt").write_text("[ablate.hacks]\nbump = bump_plugin_mod\n")
    monkeypatch.syspath_prepend(str(site))
    for attr, value in (("_REGISTRY", {}), ("_PROVIDERS", {}), ("_DUPLICATES", {}),
                        ("_FAILURES", []), ("_discovered", False)):
        monkeypatch.setattr(registry, attr, value)
    yield info
    sys.modules.pop("bump_plugin_mod", None)


def _grid(exp: Path, results: Path) -> set[str]:
    assert main(["grid", str(exp), "--results-dir", str(results), "--executor", "inline",
                 "--no-progress", "--no-report"]) == 0
    return {p.name for p in (results / "runs").iterdir()}


def _hacks_of(run_dir: Path) -> list[str]:
    return [h["name"] for h in json.loads((run_dir / "config.json").read_text())["hacks"]]


def test_plugin_version_bump_retrains_only_its_variants(bump_plugin, tmp_path, capsys):
    """The smoke experiment (fake data) over batch-norm, adam-dcgan and the plugin,
    leave-one-out, one seed: 5 runs. After a version bump only the 3 variants that enable
    the plugin (all-on, -batch-norm, -adam-dcgan) train again; -bump-hack and all-off are
    reused. The built-ins' keys carry no version, the plugin's records carry it."""
    text = (REPO / "experiments/smoke.toml").read_text()
    text = text.replace('scope = ["batch-norm", "adam-dcgan", "label-smoothing"]',
                        'scope = ["batch-norm", "adam-dcgan", "bump-hack"]')
    text = text.replace("seeds = [0, 1]", "seeds = [0]").replace("steps = 20", "steps = 4")
    exp, results = tmp_path / "bump.toml", tmp_path / "results"
    exp.write_text(text)
    first = _grid(exp, results)
    assert len(first) == 5
    assert _grid(exp, results) == first  # nothing changed: nothing retrains
    _set_version(bump_plugin, "1.1")
    second = _grid(exp, results)
    new = second - first
    assert len(new) == 3 and len(second) == 8
    assert all("bump-hack" in _hacks_of(results / "runs" / k) for k in new)
    without = [k for k in first if "bump-hack" not in _hacks_of(results / "runs" / k)]
    assert len(without) == 2  # -bump-hack and all-off: their keys did not move
    record = next(h for k in new for h in json.loads((results / "runs" / k / "config.json").read_text())["hacks"]
                  if h["name"] == "bump-hack")
    assert (record["provider"], record["version"]) == ("bump-dist", "1.1")
    capsys.readouterr()
