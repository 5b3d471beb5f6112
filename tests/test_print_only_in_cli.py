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
