"""Publish a report whole: build it in a staging folder, then swap it in under a lock.

``ablate report`` writes REPORT.md, ``tables/`` and ``figures/``; ``ablate compare`` writes
SUMMARY.md and ``summary/``. Written file by file into place, a build killed half way, or
two builds racing (the grid's final report and a user's ``ablate report``), could leave a
REPORT.md beside another build's tables. So a build holds the output folder's lock
(:func:`lock`) from before it reads its inputs until it has published, and :func:`staged`
gives it an empty folder inside the output folder (same filesystem, so a rename moves it);
when the build returns, the old outputs move out and the new ones move in, the Markdown
file last, and the old ones are deleted. Readers of another folder's report (``ablate
compare``) take that folder's lock while they read it (:func:`reading`).

Nothing a build did not write is lost: a file in the old ``tables/`` or ``figures/`` that
the new build did not write (a user's own, or an output an earlier version wrote) is
carried into the new folder, as when reports were written in place.

What a stop leaves, at any point:

* during the build: the old report, whole (the staging folder goes; a SIGKILL leaves it
  for the next build to sweep);
* during the swap (a few renames): Ctrl-C and SIGTERM wait until it is done (they are
  recorded and delivered after it); an error part way moves everything back. Only a
  SIGKILL or a crash there can leave a folder without its Markdown file, which ``make
  ablation`` treats as "no report yet"; rerunning the command restores it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ablate.artefacts import fsync_dir, signals_deferred
from ablate.errors import ConfigError

__all__ = ["Stage", "staged", "lock", "reading", "LOCK", "STAGE_PREFIX"]

LOCK = ".ablate-report.lock"  # in the output folder; ignored by git, kept (unlinking a lock file races)
STAGE_PREFIX = ".ablate-stage-"  # a staging folder in the output folder

_LOCKS: dict[Path, object] = {}  # this process's locks by folder: re-entrant (a build's lock, then staged's)


@dataclass(frozen=True)
class Stage:
    """Where a build writes (``path``) and where its outputs will live (``final``)."""

    path: Path
    final: Path

    @classmethod
    def at(cls, out_dir: Stage | Path | str) -> Stage:
        """``out_dir`` as a Stage: a Stage as it is, a folder as one written in place."""
        return out_dir if isinstance(out_dir, Stage) else cls(Path(out_dir), Path(out_dir))

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
def lock(out_dir: Path | str) -> Iterator[None]:
    """Hold ``out_dir``'s report lock (one build at a time per folder; re-entrant in a process)."""
    from filelock import FileLock

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = out.resolve()
    held = _LOCKS.setdefault(key, FileLock(str(out / LOCK)))
    with held:  # FileLock counts re-entries of one object
        yield


@contextlib.contextmanager
def reading(folder: Path | str) -> Iterator[None]:
    """Hold ``folder``'s report lock while its report is read, where the lock can be taken
    (a read-only folder of someone else's results is read without it)."""
    with contextlib.ExitStack() as stack:
        if Path(folder).is_dir():
            with contextlib.suppress(OSError):
                stack.enter_context(lock(folder))
        yield


@contextlib.contextmanager
def staged(out_dir: Path | str, outputs: tuple[str, ...]) -> Iterator[Stage]:
    """Yield a :class:`Stage` in ``out_dir``; when the block returns, swap ``outputs`` in.

    ``outputs`` are the names the build writes directly under the staging folder, the
    Markdown file first: it leaves first and arrives last; the others are folders. An
    exception in the block leaves the old outputs as they were and removes the staging
    folder. Takes :func:`lock` (the caller may hold it already).
    """
    out = Path(out_dir)
    md = out / outputs[0]
    if md.is_dir() and not md.is_symlink():  # a folder where the Markdown file goes: not ours to replace
        raise ConfigError(f"{md} is a folder, where the report writes its Markdown file: move it aside, or "
                          "write the report elsewhere with --out DIR")
    for name in outputs[1:]:  # a folder output where a file or a link is: refuse, do not replace it
        p = out / name
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            raise ConfigError(f"{p} is {'a link' if p.is_symlink() else 'a file'}, where the report writes "
                              f"its {name}/ folder (each report builds a new one and renames it into place): "
                              "move it aside, or write the report elsewhere with --out DIR")
    with lock(out):
        _sweep(out)  # what a killed build left: none is running while the lock is held
        stage = None
        try:
            # A SIGTERM between mkdtemp's mkdir and the assignment would leave the folder
            # behind (a fault-injection test hit it once on a loaded machine): it waits here.
            with signals_deferred():
                stage = Stage(Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out)), out)
            yield stage
            for name in outputs[1:]:
                _carry(out / name, stage.path / name)
            _swap(stage.path, out, outputs)
        finally:
            if stage is not None:
                shutil.rmtree(stage.path, ignore_errors=True)


def _carry(old: Path, new: Path) -> None:
    """Files under ``old`` that the build did not write go into ``new`` (linked, not copied)."""
    if not old.is_dir():
        return
    for src in sorted(old.rglob("*")):
        dst = new / src.relative_to(old)
        if src.is_dir() and not src.is_symlink():
            dst.mkdir(parents=True, exist_ok=True)
        elif not os.path.lexists(dst):
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst, follow_symlinks=False)
            except OSError:  # a filesystem without hard links
                shutil.copy2(src, dst, follow_symlinks=False)


def _swap(stage: Path, out: Path, outputs: tuple[str, ...]) -> None:
    old = stage / ".old"
    old.mkdir()
    moved: list[str] = []
    arrived: list[str] = []
    with signals_deferred():  # Ctrl-C and SIGTERM wait for these few renames
        try:
            for name in outputs:  # the Markdown file first ...
                if os.path.lexists(out / name):
                    os.replace(out / name, old / name)
                    moved.append(name)
            for name in reversed(outputs):  # ... and back last
                if os.path.lexists(stage / name):
                    os.replace(stage / name, out / name)
                    arrived.append(name)
        except BaseException:  # put the old report back as it was
            for name in arrived:
                os.replace(out / name, stage / name)
            for name in moved:
                os.replace(old / name, out / name)
            raise
    fsync_dir(out)


def _sweep(out: Path) -> None:
    for p in out.glob(STAGE_PREFIX + "*"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
