"""Messages for the person running ablate from code that does not print (only the CLI
prints): a grid worker's or a fused group's note, logged on the ``ablate.messages``
logger by :func:`say`, and warnings of class :class:`UserNote` (a plugin that failed to
load).

:func:`show_on_stderr` shows them as ``ablate: <message>`` and ``ablate: warning:
<message>`` lines on stderr (flushed).
The CLI installs it; so does each process a grid's runs execute in (a local-pool
worker, a Ray task, a SLURM job: :func:`ablate.grid.groups.run_task`), which has no
CLI of its own and whose stderr reaches the user as it did when workers printed.
Without it, the messages go wherever the embedding program's logging sends them.
"""

from __future__ import annotations

import logging
import sys
import warnings

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


class UserNote(UserWarning):
    """A warning for the person running ablate rather than for a developer (a plugin that
    failed to load): :func:`show_on_stderr` prints it as one ``ablate: warning:`` line,
    without Python's file and line."""


def _notes_as_lines(show):
    def _show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, UserNote):
            sys.stderr.write(f"ablate: warning: {message}\n")
            sys.stderr.flush()
        else:
            show(message, category, filename, lineno, file, line)
    _show.ablate_notes = True
    return _show


def show_on_stderr() -> None:
    """Show :func:`say`'s messages as ``ablate: <message>`` lines and :class:`UserNote`
    warnings as ``ablate: warning: <message>`` lines on stderr (idempotent). The CLI calls
    it, and so does every process a grid's runs execute in (a pool worker's plugin
    warning then reads like the driver's)."""
    if not any(isinstance(h, _StderrLines) for h in LOGGER.handlers):
        LOGGER.addHandler(_StderrLines())
        LOGGER.propagate = False  # once shown here, not again by the root logger's handlers
    if not getattr(warnings.showwarning, "ablate_notes", False):
        warnings.showwarning = _notes_as_lines(warnings.showwarning)
