"""Top-level task functions for the executor tests (a spawn pool pickles them by name)."""

from __future__ import annotations

import os


def die(task):
    os._exit(9)  # as the OOM killer would: the pool breaks


def echo(task):
    return [("ran", task)]
