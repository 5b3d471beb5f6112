"""The tuned bf16 path (issue #21 item 2, ablate.training.precision): a bf16 run resumed
from its checkpoints ends bit for bit as the uninterrupted one; the projection matmul
computes G's first layer under autocast and leaves it alone outside; fp32 keeps the
foreach optimizers; differentiating G's loss for G only changes no number. Tiny runs
on fake data, one thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ablate import checkpoint, registry
from ablate.config import TrainConfig
from ablate.experiment.pipeline import validator
from ablate.hacks.recipe import Optimizer
from ablate.training import precision
from ablate.training.loop import train
from ablate.training.resolve import resolve

TIMINGS = {"images_per_s", "elapsed_s"}


def _cfg(**kw) -> TrainConfig:
    base = dict(dataset="fake", steps=8, batch_size=8, seed=3, ngf=8, ndf=8, latent_dim=8,
                device="cpu", threads=1, log_every=2, val_every=2, val_n=64, checkpoint_every=3,
                precision="bf16", hacks=tuple(registry.builtin_names()))
    return TrainConfig(**{**base, **kw})


class Interrupt(Exception):
    pass


def _log(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in (run / "log.jsonl").read_text().splitlines()]


def test_a_resumed_bf16_run_ends_bit_for_bit(tmp_path):
    """Interrupted at its 3rd validation (step 6, after the checkpoint at step 3)."""
    plan = resolve(_cfg())
    train(plan, tmp_path / "whole", validator(plan))
    real, calls = validator(plan), [0]

    def interrupting(g):
        calls[0] += 1
        if calls[0] == 3:
            raise Interrupt
        return real(g)

    cut, state = tmp_path / "cut", tmp_path / "cut" / checkpoint.STATE_FILE
    with pytest.raises(Interrupt):
        train(resolve(_cfg()), cut, interrupting)
    assert state.exists()
    result = train(resolve(_cfg()), cut, validator(plan), resume=[state])
    assert result.extra["resumed_from"] == [3]
    for name in ("generator.pt", "generator_best.pt", "discriminator.pt"):
        a, b = torch.load(tmp_path / "whole" / name), torch.load(cut / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        assert all(v.dtype != torch.bfloat16 for v in a.values()), name  # fp32 weights saved
    assert _log(tmp_path / "whole") == _log(cut)
    assert not state.exists()


def test_the_projection_matmul_only_under_autocast():
    torch.manual_seed(0)
    proj = nn.ConvTranspose2d(8, 16, 7, 1, 0, bias=False).to(memory_format=torch.channels_last)
    plain = nn.ConvTranspose2d(8, 16, 7, 1, 0, bias=False).to(memory_format=torch.channels_last)
    plain.load_state_dict(proj.state_dict())
    precision.tune(proj)
    assert proj.state_dict().keys() == plain.state_dict().keys()
    z = torch.randn(4, 8, 1, 1)
    assert torch.equal(proj(z), plain(z))  # fp32: the convolution itself
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = proj(z), plain(z)
    assert got.dtype == want.dtype == torch.bfloat16 and got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)
    x = torch.randn(4, 8, 2, 2)  # not a 1x1 input: the convolution, under autocast too
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(proj(x), plain(x))


def test_fp32_keeps_foreach_adam_and_plain_modules():
    spec = Optimizer(name="adam", lr=2e-4, betas=(0.5, 0.999))
    p = [nn.Parameter(torch.zeros(3))]
    fp32 = precision.make_optimizer(p, spec, torch.device("cpu"))
    bf16 = precision.make_optimizer(p, spec, torch.device("cpu"), "bf16")
    assert fp32.defaults["foreach"] and not fp32.defaults["fused"]
    assert bf16.defaults["fused"]
    g, d = nn.Linear(2, 2), nn.Linear(2, 2)
    assert precision.forwards(g, d, "fp32", torch.device("cpu")) == (g, d)


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_g_grads_only_changes_no_number(tmp_path, monkeypatch, prec):
    """G's loss differentiated for G's parameters only: the same run, bit for bit, as
    with D's unused weight gradients computed."""
    cfg = _cfg(checkpoint_every=0, val_every=0, precision=prec)
    runs = {}
    for on in (False, True):
        monkeypatch.setitem(precision.TUNING, "g_grads_only", on)
        train(resolve(cfg), tmp_path / str(on))
        runs[on] = torch.load(tmp_path / str(on) / "generator.pt")
    assert all(torch.equal(runs[False][k], runs[True][k]) for k in runs[True])
    assert _log(tmp_path / "False") == _log(tmp_path / "True")
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1), requires_grad=False)])
    assert [p.shape for p in precision.g_grad_inputs(opt)] == [torch.Size([2])]
    monkeypatch.setitem(precision.TUNING, "g_grads_only", False)
    assert precision.g_grad_inputs(opt) is None
