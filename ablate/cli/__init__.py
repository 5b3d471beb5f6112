"""The ``ablate`` command line: the only package that knows argparse.

Each subcommand is a module here with ``HELP``, ``arguments(parser)`` and
``run(args) -> int``; library modules never import this package. Usage and
configuration errors (:class:`~ablate.errors.ConfigError`) exit with code 2 and their
message.

Import time: a subcommand module imports only light modules (config, registry) at the
top and the training/metrics stack inside ``run``; importing it all up front costs
about 9 s on the 2-core dev machine (torchmetrics alone 5.6 s), paid by `ablate --help`.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from ablate.artefacts import raise_dropped
from ablate.cli import anchor, compare, data, doctor, evaluate, grid, hacks, report, status, train
from ablate.errors import ConfigError, Terminated
from ablate.grid.db import damaged
from ablate.messages import show_on_stderr

# Subcommand name -> module, in the order `ablate --help` lists them.
COMMANDS: dict[str, ModuleType] = {
    "hacks": hacks, "train": train, "data": data, "eval": evaluate, "grid": grid,
    "status": status, "report": report, "compare": compare, "anchor": anchor,
    "doctor": doctor,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ablate", description="Which GAN training hacks "
                                     "actually matter, by how much, and with what certainty.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP)
        module.arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    show_on_stderr()  # the layers below: notes and plugin warnings as `ablate: ...` lines
    try:
        with _ctrl_c_from_python():
            return args.run(args)
    except ConfigError as exc:
        print(f"ablate: error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:  # a run index damaged past what opening it checks
        print(f"ablate: error: a run index (runs.sqlite) cannot be read: {exc}. "
              + ("The run directories are intact: `ablate grid <experiment> --results-dir DIR "
                 "--rebuild-index` moves it aside and rebuilds it from DIR/runs/*/ (nothing is retrained)"
                 if damaged(exc) else "Check that the file and its folder are readable (and writable for "
                 "`ablate grid`)"), file=sys.stderr)
        return 2
    except PermissionError as exc:  # an input or output this user may not read or write
        print(f"ablate: error: permission denied: {exc.filename or exc}; give this user access to it, "
              "or choose another path", file=sys.stderr)
        return 2
    except Terminated:
        print("ablate: stopped by SIGTERM", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:  # Ctrl-C outside a grid (which handles it itself): no traceback
        print("ablate: interrupted", file=sys.stderr)
        return 130


def _ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _sigterm(signum: int, frame: object) -> None:
    raise Terminated


@contextmanager
def _ctrl_c_from_python() -> Iterator[None]:
    """Ctrl-C raised from a Python handler rather than Python's default one (from C): a hook
    that raises KeyboardInterrupt itself is then told from a real Ctrl-C, and fails its run
    (:func:`ablate.hacks.hooks.call_hook`). SIGTERM raises :class:`Terminated` the same way,
    so a command stopped by it cleans up and says so instead of dying silently (the grid
    installs its own handlers while it runs; pool workers theirs). Only where the default
    handlers are installed. Either exception raised while a finalizer runs is raised again
    after it (:func:`ablate.artefacts.raise_dropped`), not lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mine = {s: h for s, h in ((signal.SIGINT, _ctrl_c), (signal.SIGTERM, _sigterm))
            if signal.getsignal(s) is (signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)}
    old = {s: signal.signal(s, h) for s, h in mine.items()}
    undo = raise_dropped({Terminated: signal.SIGTERM, KeyboardInterrupt: signal.SIGINT})
    try:
        yield
    finally:
        undo()
        for s, h in old.items():
            signal.signal(s, h)
