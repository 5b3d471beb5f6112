"""Messages for the person running ablate from code that does not print (only the CLI
prints): a grid worker's or a fused group's note, logged on the ``ablate.messages``
logger by :func:`say`.

:func:`show_on_stderr` shows them as ``ablate: <message>`` lines on stderr (flushed).
The CLI installs it; so does each process a grid's runs execute in (a local-pool
worker, a Ray task, a SLURM job: :func:`ablate.grid.groups.run_task`), which has no
CLI of its own and whose stderr reaches the user as it did when workers printed.
Without it, the messages go wherever the embedding program's logging sends them.
"""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("ablate.messages")


def say(message: str) -> None:
    """A note for the user (a run restarting from step 0, a fused group split)."""
    LOGGER.warning(message)


class _StderrLines(logging.Handler):
    """``ablate: <message>`` on the current ``sys.stderr`` (looked up at each message,
    so a redirected or captured stderr gets it), flushed at once."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"ablate: {record.getMessage()}\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging's own convention for a broken stream
            self.handleError(record)


def show_on_stderr() -> None:
    """Show :func:`say`'s messages as ``ablate: <message>`` lines on stderr (idempotent)."""
    if not any(isinstance(h, _StderrLines) for h in LOGGER.handlers):
        LOGGER.addHandler(_StderrLines())
        LOGGER.propagate = False  # once shown here, not again by the root logger's handlers
