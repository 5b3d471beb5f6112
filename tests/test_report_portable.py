"""A committed report regenerated on another machine has the same bytes (#16 item 3).

results/default was written on a CPU without AVX-512. On one with it, OpenBLAS picks other
kernels (SkylakeX, not Haswell) and numpy other exp/log loops, so the estimates came out
different in the 15th-17th significant digit and a fresh clone's `make ablation` changed 10
committed files (tables/*.csv, effects_all.md/.tex, figures/residuals.*). Both differences
are reproduced on one machine: OPENBLAS_CORETYPE forces an older OpenBLAS kernel and
NPY_DISABLE_CPU_FEATURES switches numpy's dispatched SIMD loops off; with both, the report
written before the rounding of ablate/report/precision.py was byte for byte the committed
one. The test writes the report twice from a copy of the committed runs, in subprocesses:
the host's kernels with 2 BLAS/OpenMP threads, and "another CPU" with 1 thread.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablate.report import precision

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "results" / "default"
THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _numpy_cpu() -> tuple[list[str], dict[str, bool]]:
    try:
        from numpy._core import _multiarray_umath as m
    except ImportError:  # numpy < 2
        from numpy.core import _multiarray_umath as m
    return list(m.__cpu_dispatch__), dict(m.__cpu_features__)


def other_cpu() -> dict[str, str]:
    """Environment that makes this machine compute like an older CPU: numpy without its
    dispatched SIMD loops and, on x86-64, an OpenBLAS kernel below the host's."""
    dispatch, features = _numpy_cpu()
    env = {}
    if disable := [f for f in dispatch if features.get(f)]:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(disable)
    if platform.machine().lower() in ("x86_64", "amd64"):
        env["OPENBLAS_CORETYPE"] = ("Haswell" if features.get("AVX512F") else
                                    "Sandybridge" if features.get("AVX2") else "Nehalem")
    return env


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).parts[0] in
            ("REPORT.md", "tables", "figures")}


@pytest.mark.skipif(not (COMMITTED / "runs.sqlite").is_file(), reason="results/default is not in this checkout")
def test_committed_report_has_the_same_bytes_under_other_kernels_and_thread_counts(tmp_path):
    base = {k: v for k, v in os.environ.items()
            if k not in (*THREADS, "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES")}
    envs = {"host-2-threads": {**base, **dict.fromkeys(THREADS, "2")},
            "other-cpu-1-thread": {**base, **dict.fromkeys(THREADS, "1"), **other_cpu()}}
    procs = {}
    for name, env in envs.items():  # both at once: the test takes one report's time
        out = tmp_path / name
        out.mkdir()
        shutil.copytree(COMMITTED / "runs", out / "runs")
        for f in ("runs.sqlite", "experiment.json"):
            shutil.copy2(COMMITTED / f, out / f)
        procs[name] = subprocess.Popen([sys.executable, "-m", "ablate", "report", str(out)], env=env,
                                       cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for name, p in procs.items():
        log, _ = p.communicate(timeout=300)
        assert p.returncode == 0, (name, envs[name].get("OPENBLAS_CORETYPE"), log[-3000:])
    a, b = (_digest(tmp_path / name) for name in envs)
    assert len(a) >= 40 and "figures/residuals.pdf" in a and "tables/effects.csv" in a
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    assert not changed, f"written differently under {envs['other-cpu-1-thread']}: {changed}"


def test_rounding_rule():
    assert precision.significant(0.21414436616185384) == precision.significant(0.21414436616185606) == 0.2141443662
    assert precision.significant(-0.0009999999999999998) == -0.001
    assert math.copysign(1, precision.significant(-0.0)) == 1.0 and math.isnan(precision.significant(math.nan))
    # Below the last kept digit of the column's largest value: cancellation noise, written as 0.
    noise = precision.round_array([7.105427357601002e-15, -3.2029323708433344, 2.4e-8, math.inf, math.nan])
    assert noise[0] == 0.0 and noise[1] == -3.202932371 and noise[2] == 2.4e-8
    assert np.isinf(noise[3]) and np.isnan(noise[4])
    frame = pd.DataFrame({"x": [7.1e-15, 1.0], "n": [3, 4], "s": ["a", "b"], "o": ["a", 0.12345678901234],
                          "p_holm": [8.521567961331047e-24, 1.0], "pairs": [1e-12, 1.0]})
    r = precision.round_frame(frame)
    assert r["x"].tolist() == [0.0, 1.0] and r["n"].dtype == frame["n"].dtype and r["s"].tolist() == ["a", "b"]
    assert r["o"].tolist() == ["a", 0.123456789] and frame["x"][0] == 7.1e-15  # a copy
    assert r["p_holm"].tolist() == [8.521567961e-24, 1.0] and r["pairs"].tolist() == [0.0, 1.0]  # p-values stay


MIXED_PROBE = """
import json, sys
from ablate.report import sequential
from ablate.report.effects import fit_mixed
from ablate.report.results import Results
r = Results.load(sys.argv[1])
result = sequential.analyse(r.frame, r.meta)
sub = sequential.runs_at(r.frame, result, 2)
print(json.dumps({h: list(ev) for h, ev in sorted(fit_mixed(sub, r.meta.comparisons, result.metric).items())}))
"""


@pytest.mark.skipif(not (REPO / "results" / "fashion-mnist-1k-lr" / "runs.sqlite").is_file(),
                    reason="results/fashion-mnist-1k-lr is not in this checkout")
def test_mixed_model_has_the_same_digits_under_other_kernels():
    """The mixed model of fashion-mnist-1k-lr's look 2 (28 contrasts, unbalanced seeds), where
    statsmodels' MixedLM.fit had landed on a different point per machine (its interval
    differed by a tenth of its width): under the host's kernels and "another CPU" the
    estimates and standard errors agree to 1e-9, i.e. to rounding noise, not to the
    tolerance of an optimiser."""
    base = {k: v for k, v in os.environ.items()
            if k not in (*THREADS, "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES")}
    envs = ({**base, **dict.fromkeys(THREADS, "2")}, {**base, **dict.fromkeys(THREADS, "1"), **other_cpu()})
    procs = [subprocess.Popen([sys.executable, "-c", MIXED_PROBE, str(REPO / "results" / "fashion-mnist-1k-lr")],
                              env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for env in envs]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert len(outs[0]) >= 20 and all(se > 0 for _, se in outs[0].values())
    assert outs[0].keys() == outs[1].keys()
    for h, (est, se) in outs[0].items():
        assert outs[1][h] == pytest.approx([est, se], rel=1e-9, abs=1e-12), h
