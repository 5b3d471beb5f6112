"""``ablate doctor`` (ablate.training.doctor): measured roofs and step rates at tiny sizes, a verdict
that follows the measured ratio, the FLOPs of the timed step equal to a train() step's,
and the CLI's text and JSON output."""

from __future__ import annotations

import functools
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ablate.training import doctor
from ablate.cli import main
from ablate.training.resolve import resolve
from ablate.training.loop import train

TINY = {"matmul_n": 64, "reps": 2, "rounds": 2, "steps": 1}


def test_tiny_diagnosis_measures_finite_positive_rates_and_a_consistent_verdict():
    before = torch.get_num_threads()
    d = doctor.diagnose(width=8, threads=1, device="cpu", **TINY)
    assert torch.get_num_threads() == before  # --threads does not leak out of the measurement
    for rate in (d.roof_fp32, d.roof_bf16, d.step_fp32, d.step_bf16):
        assert math.isfinite(rate) and rate > 0
    assert d.flops_per_step > 0 and d.rounds == 2 and d.machine.threads == 1
    assert d.bf16_pays == (d.ratio >= doctor.PAYS_AT)
    assert d.verdict.startswith("bf16 pays: ×" if d.bf16_pays else "fp32: bf16 is ×")
    assert d.machine.bf16_unit in d.verdict
    assert d.roof == (d.roof_bf16 if d.bf16_pays else d.roof_fp32)
    assert set(d.machine.flags) <= set(doctor.CPU_FLAGS)
    json.dumps(d.to_dict())  # plain JSON values only


@pytest.mark.parametrize("step_bf16, pays", [(160.0, True), (30.0, False), (105.0, False)])
def test_verdict_follows_the_measured_ratio(monkeypatch, step_bf16, pays):
    # fp32 100 img/s; bf16 ×1.6 pays, ×0.3 does not, ×1.05 is within the PAYS_AT margin.
    monkeypatch.setattr(doctor, "matmul_rates", lambda dev, n, reps: (100.0, 400.0))
    monkeypatch.setattr(doctor, "step_rates", lambda *a, **k: (100.0, step_bf16, 64 * 10**9, 3))
    d = doctor.diagnose(width=8, device="cpu")
    assert d.bf16_pays is pays and d.precision == ("bf16" if pays else "fp32")
    ratio = f"×{step_bf16 / 100:.2f}"
    if pays:
        assert d.verdict == f"bf16 pays: {ratio} a step ({d.machine.bf16_unit})"
        assert d.roof == 400.0 and 'precision = "bf16"' in d.advice and "run key" in d.advice
        assert d.share("bf16") == pytest.approx(160 / 400)  # 1 GFLOP an image
    else:
        assert d.verdict == f"fp32: bf16 is {ratio} here ({d.machine.bf16_unit})"
        assert d.roof == 100.0 and 'keep precision = "fp32"' in d.advice
        assert d.share("fp32") == pytest.approx(1.0)


def test_bf16_unit_names_the_instructions(monkeypatch):
    def with_flags(text):
        monkeypatch.setattr(doctor.Path, "read_text", lambda self, *a, **k: text)
        return doctor.machine(torch.device("cpu"))

    assert with_flags("flags\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n").bf16_unit == "AMX-BF16"
    assert with_flags("flags\t: avx2 avx512f avx512_bf16\n").flags == ("avx512_bf16", "avx512f", "avx2")
    assert with_flags("flags\t: avx2 avx512f avx512_bf16\n").bf16_unit == "AVX512-BF16"
    assert with_flags("flags\t: avx2\n").bf16_unit == "no BF16 instructions"


def test_the_timed_step_is_a_train_step():
    """Same FLOPs as one step of train() itself (FLOPs of 2 steps - FLOPs of 1 step)."""
    config = doctor.step_config(width=8)
    counts = []
    for steps in (1, 2):
        with tempfile.TemporaryDirectory() as tmp, FlopCounterMode(display=False) as fc:
            train(resolve(doctor.dataclasses.replace(config, steps=steps)), Path(tmp) / "run")
        counts.append(fc.get_total_flops())
    step = doctor._step(config, torch.device("cpu"))
    assert doctor._flops(step) == counts[1] - counts[0]


@pytest.fixture
def tiny_cli(monkeypatch):
    monkeypatch.setattr(doctor, "diagnose", functools.partial(doctor.diagnose, **TINY))


def test_cli_prints_the_verdict(tiny_cli, capsys):
    assert main(["doctor", "--width", "8", "--threads", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    verdict = [line for line in out.splitlines() if line.startswith("verdict   ")]
    assert len(verdict) == 1 and ("bf16 pays: ×" in verdict[0] or "fp32: bf16 is ×" in verdict[0])
    assert "GFLOP/s" in out and "img/s" in out and "meaning   " in out


def test_cli_json_parses(tiny_cli, capsys):
    assert main(["doctor", "--width", "8", "--threads", "1", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["width"] == 8 and out["precision"] in ("fp32", "bf16")
    assert out["verdict"].startswith("bf16 pays" if out["bf16_pays"] else "fp32: bf16 is")
    assert out["step_fp32"] > 0 and out["machine"]["device"] == "cpu"
