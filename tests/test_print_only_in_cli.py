"""Only the CLI prints (docs/design.md, Layout; #18 item 6): the grid returns lines and
logs its workers' notes (ablate.messages), which the CLI and each worker process show."""

from __future__ import annotations

from pathlib import Path

GRID = Path(__file__).resolve().parent.parent / "ablate" / "grid"


def test_the_grid_layer_never_prints():
    printing = [str(p.relative_to(GRID.parent.parent)) for p in sorted(GRID.rglob("*.py"))
                if "print(" in p.read_text()]
    assert GRID.is_dir() and not printing, printing


def test_worker_notes_are_ablate_lines_on_stderr_once_shown(capsys):
    from ablate import messages

    messages.show_on_stderr()
    messages.show_on_stderr()  # idempotent: one line per note, not two
    messages.say("run 0123 (v, seed 0) starts at step 0: why")
    assert capsys.readouterr().err == "ablate: run 0123 (v, seed 0) starts at step 0: why\n"


def test_plugin_warnings_are_one_ablate_line_in_every_process_that_shows_notes(capsys):
    """A grid worker calls show_on_stderr (no CLI of its own): a plugin that failed to load
    reads there as it does in the driver, one `ablate: warning:` line without Python's file
    and line; other warnings keep Python's format."""
    import warnings

    from ablate import messages
    from ablate.hacks.providers import PluginWarning

    passed_on = []
    with warnings.catch_warnings():  # restores warnings.showwarning afterwards
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, *a, **k: passed_on.append((str(message), category))
        messages.show_on_stderr()
        messages.show_on_stderr()  # idempotent: not wrapped twice
        warnings.warn("plugin audit-bad failed to load: ImportError: x; its hacks are unavailable", PluginWarning,
                      stacklevel=2)
        warnings.warn("something else", RuntimeWarning, stacklevel=2)
    assert capsys.readouterr().err == ("ablate: warning: plugin audit-bad failed to load: ImportError: x; "
                                       "its hacks are unavailable\n")
    assert passed_on == [("something else", RuntimeWarning)]  # other warnings: the previous handler
    assert issubclass(PluginWarning, messages.UserNote) and issubclass(PluginWarning, UserWarning)
