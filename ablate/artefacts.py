"""Atomic artefact writes: a temp file in the same folder, fsync, then rename.

A reader therefore sees either the old file or the complete new one, never a torn
write, even if the process is killed mid-write. :func:`signals_deferred` keeps a few
such steps together (a run's commit, a report's swap) against Ctrl-C and SIGTERM, and
:func:`raise_dropped` keeps their exceptions from being lost in a finalizer.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ablate.errors import ConfigError


_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it


def fsync_dir(path: Path | str) -> None:
    """fsync a directory, making a rename inside it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def signals_deferred(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """``signals`` arriving during the block are recorded and delivered after it, to the
    handlers installed before it.

    Python runs signal handlers in the main thread whichever thread the kernel gave the
    signal to (numpy's, torch's and a heartbeat thread get them too), so blocking them in
    this thread alone (``pthread_sigmask``) lets a handler run mid-block; replacing the
    handlers for the block does not. Outside the main thread, where handlers cannot be
    set, the signals are blocked in this thread (the best there is)."""
    if threading.current_thread() is not threading.main_thread():
        held = signal.pthread_sigmask(signal.SIG_BLOCK, set(signals))
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return
    got: list[int] = []
    old = {s: signal.signal(s, lambda n, _f: got.append(n)) for s in signals}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        for n in dict.fromkeys(got):
            signal.raise_signal(n)  # to the handler the caller had


_RESEND_AFTER_S = 0.02  # by then the finalizer and the hook below have long returned


def raise_dropped(kinds: dict[type[BaseException], int]) -> Callable[[], None]:
    """Until the returned function is called, a signal whose handler's exception (one of
    ``kinds``, each with its signal) Python had to drop is sent to the main thread again.

    Python runs a signal handler in whatever the main thread is running, finalizers
    included (a ``__del__`` or weakref callback that the garbage collector calls). An
    exception raised there cannot propagate: Python prints "Exception ignored in ..." and
    goes on, and the Ctrl-C or SIGTERM is lost: the command finishes with exit code 0
    (tests/test_grid_fault_audit.py makes it happen in a command and in a pool worker).
    ``sys.unraisablehook`` sees such an exception; a helper thread then sends its signal
    again, a moment later, so that the handler runs once the finalizer has returned (and
    :func:`signals_deferred` still holds it back where it must wait; dropped again, it
    comes round again). Only the main thread runs signal handlers, so other threads'
    dropped exceptions are left to the previous hook. The first kind an exception is an
    instance of gives its signal (a subclass before its base)."""
    previous, main, active = sys.unraisablehook, threading.main_thread(), threading.Event()
    active.set()

    def signal_of(exc: BaseException) -> int | None:
        return next((s for kind, s in kinds.items() if isinstance(exc, kind)), None)

    def resend(signum: int) -> None:
        time.sleep(_RESEND_AFTER_S)
        if active.is_set():
            signal.pthread_kill(main.ident, signum)

    def hook(unraisable: Any) -> None:
        signum = signal_of(unraisable.exc_value) if active.is_set() else None
        if signum is None or threading.current_thread() is not main:
            previous(unraisable)
            return
        try:
            threading.Thread(target=resend, args=(signum,), daemon=True).start()
        except tuple(kinds) as exc:  # another signal's exception, landed in this hook
            threading.Thread(target=resend, args=(signal_of(exc),), daemon=True).start()
        except RuntimeError:  # no new thread at interpreter shutdown: as Python would
            previous(unraisable)

    def undo() -> None:
        active.clear()
        if sys.unraisablehook is hook:
            sys.unraisablehook = previous

    sys.unraisablehook = hook
    return undo


@contextlib.contextmanager
def folder_lock(path: Path | str, flag: str) -> Iterator[None]:
    """Hold the folder ``path`` (created if missing) for one writer during the block.

    ``flock`` on the folder itself: nothing is left in it, and the kernel releases the
    lock however the process ends. A second process gets a :class:`ConfigError` at
    once, before it touches anything (two ``ablate train --out DIR --resume`` would both
    continue one checkpoint and overwrite each other's run). Where the filesystem has no
    locks, the block runs unlocked. ``flag`` names the setting, for the message."""
    import fcntl

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{flag} {path} is in use by another ablate process (a run training "
                              f"there); wait for it to end, or choose another {flag}") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                raise
        yield
    finally:
        os.close(fd)


def write_atomic(path: Path | str, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(fileobj)`` on a temp file next to ``path``, fsync, rename over it.

    The file gets the usual permissions (0666 less the umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = f = None
    try:
        with signals_deferred():  # a Ctrl-C or SIGTERM right after mkstemp still finds tmp
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            f = os.fdopen(fd, mode)
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if f is not None:
            f.close()
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: Path | str, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    write_atomic(path, lambda f: f.write(text), mode="w")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: Path | str, record: dict) -> None:
    """Append one JSON line (log files are append-only; a torn last line is skipped on read)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path | str) -> list[dict]:
    """Read a JSON-lines file, skipping a torn last line from a killed writer."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def directory(text: str, flag: str = "results_dir", use: str = "write into") -> Path:
    """A directory to write into (``results_dir``, ``--results-dir``, ``--out``) or to read
    (``use="read"``: ``reuse``). An empty string would silently be the working directory, so
    it is refused ("." says that)."""
    if not text.strip():
        raise ConfigError(f"{flag} is blank, which would {use} the working directory; "
                          "give a directory (\".\" if you mean that one)")
    if "\0" in text:
        raise ConfigError(f"{flag} {text!r} contains a NUL character, which no path can hold")
    try:
        Path(text).resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        raise ConfigError(f"{flag} {text!r} cannot be resolved ({exc}); remove the symlink loop "
                          f"or choose another {flag}") from None
    return Path(text)


def check_creatable(path: Path | str, flag: str) -> None:
    """Refuse a directory that does not exist and cannot be created, leaving nothing behind.

    A temporary directory is made and removed in its nearest existing parent: the only
    reliable test (``os.access`` says yes to root under ``/proc``, where mkdir fails). An
    existing directory is left to its writer's own check. ``flag`` names the setting.
    """
    path = Path(path)
    parent = path.absolute()
    if parent.exists():
        return
    while not parent.exists():
        parent = parent.parent
    try:
        with signals_deferred():  # not left behind by a signal between its mkdir and rmdir
            os.rmdir(tempfile.mkdtemp(prefix=".ablate-probe-", dir=parent))
    except OSError as exc:
        raise ConfigError(f"{flag} {path} cannot be created: {parent} is not a writable "
                          f"directory ({exc.strerror}); choose another {flag}") from None


def write_fix(exc: OSError) -> str:
    """What to do about a failed write, from its errno (for the error messages)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make the folder writable for this user"
    if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        return "move the file or folder in the way"
    return "check the folder"
