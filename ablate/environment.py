"""Where a run executes: the device choice, its thread count (:func:`apply_threads`),
and its provenance (code version, library versions, hardware)."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path

import torch

from ablate.errors import ConfigError

_REPO = Path(__file__).resolve().parent.parent


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"bad --device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for CUDA, but no GPU is visible; use cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"bad --device {name!r}: use auto, cpu, cuda or cuda:N")
    return device


def apply_threads(threads: int | None, *, environ: bool = False) -> None:
    """Give this process a run's torch thread count (None: keep torch's default).

    The one place a run's thread count is applied (:func:`threads_for` sets one for a
    block and restores the caller's); call it where runs start, before anything
    builds a net (the classifier may train there). ``environ`` also sets
    ``OMP_NUM_THREADS``, for processes that exist to run runs (the local pool's workers)
    and the OpenMP pools they start; ``ablate train`` and the inline executor leave the
    environment of the user's process alone.
    """
    if not threads:
        return
    if environ:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


@contextlib.contextmanager
def threads_for(threads: int | None) -> Iterator[None]:
    """torch's thread count set to ``threads`` inside the block, the caller's restored after
    (None: unchanged): for work whose numbers or timing must not follow the caller's count
    (the classifier's training, ``ablate doctor``'s measurement)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.cache
def git_commit() -> str:
    """The commit of the ablate checkout (``+dirty`` if modified), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        # Only code makes a result's commit "dirty" (results/ is rewritten by reports).
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                "ablate", "examples", "pyproject.toml"],
                               cwd=_REPO, capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_CODE_PATHS = ("ablate", "examples", "pyproject.toml")


@functools.cache
def code_commit() -> str:
    """The newest commit that changed the code (``ablate/``, ``examples/``,
    ``pyproject.toml``), ``+dirty`` if the code is modified now, or ``unknown``.

    Unlike :func:`git_commit` it stays the same when only results are committed, so a
    report regenerated from unchanged runs by unchanged code is byte-identical.
    """
    try:
        sha = subprocess.run(["git", "log", "-1", "--format=%H", "--", *_CODE_PATHS], cwd=_REPO,
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                *_CODE_PATHS], cwd=_REPO, capture_output=True, text=True,
                               timeout=5).stdout.strip()
        return (sha or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries a result depends on."""
    out = {"python": platform.python_version()}
    for pkg in ("ablate", "torch", "torchvision", "torchmetrics", "numpy", "scipy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def hardware(device: torch.device | None = None) -> dict[str, object]:
    """CPU model, core count, threads in use and the GPU name where used."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, object] = {"cpu": cpu, "cpu_count": os.cpu_count(),
                               "torch_threads": torch.get_num_threads()}
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
