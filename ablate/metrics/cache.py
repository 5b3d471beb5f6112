"""The metrics cache: classifier weights, their accuracy, real-data statistics.

Location: ``$ABLATE_CACHE`` or ``~/.cache/ablate/cache``. Every entry is named by a hash
of everything it depends on, so a change of any input gives a new entry instead of a
stale hit. Writes are atomic (temp file + rename) and guarded by a file lock, so two
processes that need the same entry compute it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ablate.artefacts import write_atomic
from ablate.errors import ConfigError


def cache_dir() -> Path:
    """``$ABLATE_CACHE`` or ``~/.cache/ablate/cache`` (created on demand)."""
    path = Path(os.environ.get("ABLATE_CACHE") or Path.home() / ".cache" / "ablate" / "cache")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:  # a file where the folder goes
        raise ConfigError(f"the feature cache {path} ({'$ABLATE_CACHE' if os.environ.get('ABLATE_CACHE') else 'its default'}) "
                          f"cannot be a folder: {exc.strerror} at {exc.filename}; set ABLATE_CACHE to a "
                          "folder, or move the file aside") from None
    return path


def key_hash(obj: Any, length: int = 16) -> str:
    """A stable short hash of a JSON-able object (dict keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def save_tensors(path: Path, obj: Any) -> None:
    """``torch.save`` atomically."""
    write_atomic(path, lambda f: torch.save(obj, f))


def load_tensors(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` + ``.lock`` (one writer per cache entry)."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        yield
