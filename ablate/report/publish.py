"""Publish a report whole: build it in a staging folder, then swap it in under a lock.

``ablate report`` writes REPORT.md, ``tables/`` and ``figures/``; ``ablate compare`` writes
SUMMARY.md and ``summary/``. Written file by file into place, a build killed half way, or
two builds racing (the grid's final report and a user's ``ablate report``), could leave a
REPORT.md beside another build's tables. So :func:`staged` gives the build an empty
folder inside the output folder (same filesystem, so a rename moves it) and holds a file
lock for the whole build; when the build returns, the old outputs move out and the new
ones move in, the Markdown file last, and the old ones are deleted.

What a kill leaves, at any point:

* during the build: the old report, whole, and a staging folder the next build sweeps;
* during the swap (a few renames, which Ctrl-C and SIGTERM wait for: only a SIGKILL or a
  crash lands here): no Markdown file, which every reader treats as "no report yet"
  (``ablate compare`` refuses the folder, ``make ablation`` leaves it out), never a
  Markdown file beside another build's tables. Rerunning the command restores it.

Files a build no longer writes go with the old folder: ``tables/`` and ``figures/`` (and
``summary/``) hold the report's outputs only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ablate.artefacts import fsync_dir

__all__ = ["Stage", "staged", "LOCK", "STAGE_PREFIX"]

LOCK = ".ablate-report.lock"  # in the output folder; ignored by git, kept (unlinking a lock file races)
STAGE_PREFIX = ".ablate-stage-"  # a staging folder in the output folder


@dataclass(frozen=True)
class Stage:
    """Where a build writes (``path``) and where its outputs will live (``final``)."""

    path: Path
    final: Path

    def link(self, target: Path | str) -> str:
        """``target`` relative to the published report, as a Markdown link wants it: a file
        the build wrote (under ``path``) as it will be after the swap, any other as it is."""
        target = Path(target)
        try:
            target = self.final / target.relative_to(self.path)
        except ValueError:
            pass
        return Path(os.path.relpath(target, self.final)).as_posix()


@contextlib.contextmanager
def staged(out_dir: Path | str, outputs: tuple[str, ...]) -> Iterator[Stage]:
    """Yield a :class:`Stage` in ``out_dir``; when the block returns, swap ``outputs`` in.

    ``outputs`` are the names the build writes directly under the staging folder, the
    Markdown file first: it leaves first and arrives last. One build at a time per folder
    (a file lock, held for the whole build); an exception leaves the old outputs as they
    were and removes the staging folder.
    """
    from filelock import FileLock

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out / LOCK)):
        _sweep(out)  # what a killed build left: none is running while the lock is held
        stage = Stage(Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out)), out)
        try:
            yield stage
            _swap(stage.path, out, outputs)
        finally:
            shutil.rmtree(stage.path, ignore_errors=True)


def _swap(stage: Path, out: Path, outputs: tuple[str, ...]) -> None:
    old = stage / ".old"
    old.mkdir()
    # Ctrl-C and SIGTERM wait for these few renames (as a run's commit does), so only a
    # SIGKILL or a crash can stop the swap half way.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        for name in outputs:  # the Markdown file first: a kill from here on leaves none
            if os.path.lexists(out / name):
                os.replace(out / name, old / name)
        for name in reversed(outputs):  # ... until it arrives, last
            if os.path.lexists(stage / name):
                os.replace(stage / name, out / name)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    fsync_dir(out)


def _sweep(out: Path) -> None:
    for p in out.glob(STAGE_PREFIX + "*"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
