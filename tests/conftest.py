"""Shared fixtures: an isolated data root and cache for every test session."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from ablate.hacks import registry

# Tests must be quick and reproducible on a 2-core machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# A shell that starts a job in the background (`make test &`, nohup, some CI runners) leaves
# SIGINT ignored, some CI runners SIGTERM too, and an ignored signal stays ignored in every
# child process: the tests that send Ctrl-C or SIGTERM to an `ablate` child would then see it
# do nothing (`ablate` keeps an ignored signal ignored, as a command should). Resetting them
# here means each child starts with both at their defaults, as under an interactive shell.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
for _sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
    if signal.getsignal(_sig) is signal.SIG_IGN:  # SIGCHLD ignored: children's exit codes read as 0
        signal.signal(_sig, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_SETMASK, set())  # a blocked mask is inherited too
# No network here or in CI: data that is not on disk comes from the offline fallbacks at
# once rather than after a download's timeouts (tests of the download path set their own).
os.environ.setdefault("ABLATE_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep test caches out of the user's ~/.cache (the data root stays shared, read-only)."""
    old = os.environ.get("ABLATE_CACHE")
    os.environ["ABLATE_CACHE"] = str(tmp_path_factory.mktemp("ablate-cache"))
    yield
    if old is None:
        os.environ.pop("ABLATE_CACHE", None)
    else:
        os.environ["ABLATE_CACHE"] = old


@pytest.fixture
def register():
    """Register test-only hack classes for one test; they never leak into the registry."""
    names = []

    def _register(*classes):
        for cls in classes:
            registry.register_hack(cls)
            names.append(cls.name)
        return classes[0] if len(classes) == 1 else classes

    yield _register
    for n in names:
        registry.unregister_hack(n)
