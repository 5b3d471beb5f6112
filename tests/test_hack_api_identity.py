"""Identity across hack API v2: the built-ins train bit for bit as before the hooks, and a
plugin's version is part of its runs' keys (bumping it retrains exactly its variants)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from ablate.hacks import registry
from ablate.cli import main
from ablate.config import TrainConfig
from ablate.training.resolve import resolve
from ablate.training.loop import train

REPO = Path(__file__).resolve().parent.parent

# ----- the built-ins train bit for bit as the pre-v2 loop (5859f55) --------------------
# ``ablate_ref`` is a frozen copy of the training path at 5859f55, before the hack API v2
# hooks (tests/fixtures/reference_5859f55/README.md). Both loops run here, in this process
# and on this CPU, so the comparison is exact on every machine: no digests of one CPU.
REFERENCE = REPO / "tests/fixtures/reference_5859f55"
sys.path.insert(0, str(REFERENCE))
import ablate_ref  # noqa: E402
import ablate_ref.config  # noqa: E402
import ablate_ref.resolve  # noqa: E402
import ablate_ref.train  # noqa: E402
from ablate_ref import registry as ref_registry  # noqa: E402
from ablate_ref.hacks import BUILTIN as REF_BUILTIN  # noqa: E402

assert Path(ablate_ref.__file__).parent == REFERENCE / "ablate_ref"  # not an installed copy
# Built-ins only: the frozen registry must not load the ``ablate.hacks`` entry points
# (today's plugins import today's ``ablate``). This is the first half of its _discover().
if not ref_registry._discovered:
    ref_registry._discovered = True
    for _cls in REF_BUILTIN:
        ref_registry.register_hack(_cls, provider="ablate")

STEPS = 6
TIMING = ("images_per_s", "elapsed_s")  # the only logged fields that may differ


def config_for(config_cls: type, hacks: tuple[str, ...]):
    """6 steps on synthetic data, 1 thread (the numbers do not depend on the core count)."""
    return config_cls(dataset="fake", steps=STEPS, batch_size=16, seed=3, hacks=hacks, ngf=8,
                      ndf=8, latent_dim=16, device="cpu", threads=1, log_every=2)


def variants() -> dict[str, tuple[str, ...]]:
    """All-on, all-off and all-on minus each built-in (as at 5859f55): 13 variants."""
    on = tuple(ref_registry.builtin_names())
    out = {"all-on": on, "all-off": ()}
    out.update({f"-{h}": tuple(x for x in on if x != h) for h in on})
    return out


def digest(run: Path) -> dict:
    """sha256 (with dtype and shape) of every tensor of the saved generator, and every
    logged record without its timings (losses, D(x), D(G(z)), step)."""
    state = torch.load(run / "generator.pt")
    tensors = {k: (str(v.dtype), tuple(v.shape), hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest())
               for k, v in state.items()}
    log = [{k: v for k, v in r.items() if k not in TIMING}
           for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())]
    return {"generator": tensors, "log": log}


def test_builtins_are_those_of_the_reference():
    assert registry.builtin_names() == ref_registry.builtin_names()


@pytest.mark.parametrize("variant", list(variants()))
def test_builtins_train_bit_for_bit_as_before_the_hooks(variant, tmp_path):
    """All-on, all-off and all-on minus each built-in, 6 steps on fake data: every tensor
    of the saved generator and every logged loss equals the pre-v2 loop's (5859f55), run
    live beside today's loop."""
    hacks = variants()[variant]
    ablate_ref.train.train(ablate_ref.resolve.resolve(config_for(ablate_ref.config.TrainConfig, hacks)),
                           tmp_path / "reference")
    train(resolve(config_for(TrainConfig, hacks)), tmp_path / "today")
    want, got = digest(tmp_path / "reference"), digest(tmp_path / "today")
    assert len(want["log"]) == STEPS // 2 and all("loss_d" in r and "loss_g" in r for r in want["log"])
    assert len(got["log"]) == len(want["log"])
    for i, (g, w) in enumerate(zip(got["log"], want["log"])):
        assert g == w, f"log record {i}: today {g} != reference {w}"
    assert got["generator"].keys() == want["generator"].keys()
    differ = [k for k in want["generator"] if got["generator"][k] != want["generator"][k]]
    assert not differ, f"generator tensors that differ from the reference: {differ}"


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
