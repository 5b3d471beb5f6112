"""Top-level task functions for the executor tests (a spawn pool pickles them by name)."""

from __future__ import annotations

import os


def die(task):
    os._exit(9)  # as the OOM killer would: the pool breaks


def echo(task):
    return [("ran", task)]


def deaf_sleeper(task):
    """A worker stuck where SIGTERM does not reach it (as one in a long C call would be)."""
    import signal
    import time

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(120)
    return [("ran", task)]
