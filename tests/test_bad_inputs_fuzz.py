"""Cases from a black-box malformed-input audit (about 600 commands on copies of committed
results, plugins installed beside the tree, and experiment files): each was a traceback, a
hang, a silent exit or a silently accepted damaged file, and is now a clear error or a
failed run naming the cause."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gridutil import experiment, no_traceback, rows  # noqa: E402

from ablate import Hack  # noqa: E402
from ablate.cli import main  # noqa: E402
from ablate.hacks.hooks import HookError, call_hook  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GRID_FLAGS = ["--workers", "1", "--threads", "1", "--no-progress"]


class _Exits(Hack):
    name = "test-exits"
    on, off = "on", "off"

    def after_step(self, ctx):
        sys.exit(5)


def test_sys_exit_in_a_hook_is_a_hook_error_naming_the_hack():
    """A hook calling sys.exit() ended a pool worker without a word (the grid hung with its
    claims held; inline, the grid exited 5 silently): it is an error of that hack's run."""
    with pytest.raises(HookError, match=r"hack 'test-exits': after_step\(\) raised SystemExit: 5"):
        call_hook(_Exits(None), "after_step", None)


def test_sys_exit_from_a_signal_handler_during_a_hook_still_exits():
    """A scheduler that ends the process from a signal handler (submitit's requeue raises
    SystemExit on SIGUSR2) is obeyed even when the signal lands inside a hook."""
    def handler(signum, frame):
        sys.exit(-1)

    class Waits(Hack):
        name = "test-waits"
        on, off = "on", "off"

        def after_step(self, ctx):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(5)  # the handler runs here, between bytecodes of this frame

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        with pytest.raises(SystemExit) as info:
            call_hook(Waits(None), "after_step", None)
        assert not isinstance(info.value, HookError) and info.value.code == -1
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.parametrize("name, fix", [("experiment.json", "the grid rewrites it"),
                                       ("runs.sqlite", "--rebuild-index")])
def test_a_directory_where_the_grid_keeps_a_file_exits_2_before_training(tmp_path, capsys, name, fix):
    """experiment.json or runs.sqlite replaced by a directory was a traceback
    (IsADirectoryError in the atomic write, sqlite3's 'unable to open database file')."""
    exp = experiment(tmp_path, scope='["batch-norm"]')
    res = tmp_path / "res"
    (res / name).mkdir(parents=True)
    for argv in (["grid", str(exp), "--results-dir", str(res), *GRID_FLAGS],
                 ["grid", str(exp), "--results-dir", str(res), "--dry-run"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{res / name} is not a file" in err and fix in err and no_traceback(err), err
    assert sorted(p.name for p in res.iterdir()) == [name] and not any((res / name).iterdir())


def test_a_missing_beside_directory_exits_2_before_anything_trains(tmp_path, capsys):
    """[report] beside naming no directory was found by the report, after every run had
    trained (exit 1 with stack frames); the grid and its dry run now refuse it first."""
    exp = experiment(tmp_path, scope='["batch-norm"]')
    exp.write_text(exp.read_text() + f'\n[report]\nbeside = ["{tmp_path / "nope"}"]\n')
    res = tmp_path / "res"
    for extra in (["--dry-run"], GRID_FLAGS):
        assert main(["grid", str(exp), "--results-dir", str(res), *extra]) == 2
        err = capsys.readouterr().err
        assert "[report].beside entry" in err and "is not a directory" in err and no_traceback(err), err
    assert not res.exists() or not rows(res)


@pytest.mark.parametrize("doc, words", [
    ("[]", "a JSON list, not an object"), ("{}", "no 'experiment' object with a 'name'"),
    ('{"experiment": []}', "no 'experiment' object"),
    ('{"experiment": {"name": "x"}, "variants": {}}', "'variants' is a dict, not a JSON list"),
    ('{"experiment": {"name": "x"}, "looks": [1]}', "must list JSON objects")])
def test_an_experiment_record_of_another_shape_exits_2(tmp_path, capsys, doc, words):
    """Valid JSON of the wrong shape in experiment.json was an AttributeError / KeyError
    traceback in `ablate status`; it is named as damaged, with the fix."""
    res = tmp_path / "r"
    shutil.copytree(REPO / "results" / "label-smoothing-sides", res)
    before = sorted(p.relative_to(res) for p in (res / "runs").rglob("*"))
    (res / "experiment.json").write_text(doc)
    assert main(["status", str(res)]) == 2
    err = capsys.readouterr().err
    assert "experiment.json is damaged" in err and words in err and "ablate grid" in err, err
    assert no_traceback(err)
    assert sorted(p.relative_to(res) for p in (res / "runs").rglob("*")) == before


def test_compare_refuses_a_torn_effects_table(tmp_path, capsys):
    """An effects.csv cut mid-row (a torn copy) was read as a shorter table: the summary
    dropped a contrast without a word. Now it names the file and the fix."""
    src = tmp_path / "label-smoothing-sides"
    shutil.copytree(REPO / "results" / "label-smoothing-sides", src)
    eff = src / "tables" / "effects.csv"
    eff.write_bytes(eff.read_bytes()[: len(eff.read_bytes()) // 2])
    assert main(["compare", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "effects.csv is truncated" in err and f"rerun `ablate report {src}`" in err, err
    assert no_traceback(err) and not (tmp_path / "out").exists()


def test_compare_names_an_experiment_that_scores_nothing(tmp_path, capsys):
    """An experiment with features = [] has no effects table, and "run `ablate report`"
    could not make one: the message says why and what would."""
    src = tmp_path / "label-smoothing-sides"
    shutil.copytree(REPO / "results" / "label-smoothing-sides", src)
    meta = json.loads((src / "experiment.json").read_text())
    meta["experiment"]["evaluation"] = {"features": []}
    (src / "experiment.json").write_text(json.dumps(meta))
    (src / "tables" / "effects.csv").unlink()
    assert main(["compare", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "scores nothing ([evaluation] features = []" in err and "leave it out" in err, err
    assert "run `ablate report" not in err and no_traceback(err)


class _Interrupts(Hack):
    name = "test-interrupts"
    on, off = "on", "off"

    def after_step(self, ctx):
        raise KeyboardInterrupt


def _with_sigint(handler, call):
    old = signal.signal(signal.SIGINT, handler)
    try:
        return call()
    finally:
        signal.signal(signal.SIGINT, old)


def test_a_hooks_own_keyboard_interrupt_in_a_pool_worker_is_a_hook_error():
    """A pool worker ignores SIGINT, so a KeyboardInterrupt there is the hook's own: it
    stopped the grid with exit 1 blaming worker deaths; it is that run's error now."""
    with pytest.raises(HookError, match=r"hack 'test-interrupts': after_step\(\) raised "
                                        r"KeyboardInterrupt$"):
        _with_sigint(signal.SIG_IGN, lambda: call_hook(_Interrupts(None), "after_step", None))


def test_a_hooks_own_keyboard_interrupt_under_the_grids_handler_is_a_hook_error():
    """The inline grid's Ctrl-C handler is Python code: a real Ctrl-C raises from its frame,
    so one that does not is the hook's."""
    def grid_handler(signum, frame):
        pass  # the first press stops claiming and raises nothing

    with pytest.raises(HookError, match="raised KeyboardInterrupt"):
        _with_sigint(grid_handler, lambda: call_hook(_Interrupts(None), "after_step", None))


TRAIN = ["train", "--dataset", "fake", "--steps", "3", "--batch-size", "8", "--ngf", "8",
         "--ndf", "8", "--threads", "1", "--no-eval"]


def test_ablate_train_fails_a_hook_that_raises_keyboard_interrupt(register, tmp_path, capsys):
    """The CLI handles Ctrl-C in Python, so `ablate train` too tells a hook's own
    KeyboardInterrupt (exit 2, naming the hack) from a real Ctrl-C (exit 130, below)."""
    register(_Interrupts)
    assert main([*TRAIN, "--hacks", "test-interrupts", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "hack 'test-interrupts': after_step() raised KeyboardInterrupt" in err, err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back


def test_ctrl_c_that_lands_inside_a_hook_interrupts_ablate_train(tmp_path):
    """A real Ctrl-C while a hook runs is still Ctrl-C: exit 130, no traceback."""
    script = (
        "import sys, time\n"
        "from ablate import Hack, registry\n"
        "from ablate.cli import main\n"
        "class Slow(Hack):\n"
        "    name = 'test-slow-hook'\n"
        "    on, off = 'on', 'off'\n"
        "    def after_step(self, ctx):\n"
        "        print('in the hook', flush=True)\n"
        "        time.sleep(120)\n"
        "registry.register_hack(Slow)\n"
        f"sys.exit(main({[*TRAIN, '--hacks', 'test-slow-hook', '--out', str(tmp_path / 'out')]!r}))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "in the hook"
    os.killpg(proc.pid, signal.SIGINT)
    text = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130 and "interrupted" in text and no_traceback(text), text


def test_ctrl_c_during_a_hook_still_stops():
    """A KeyboardInterrupt from a Python SIGINT handler (the inline grid's second press)
    stops, and so does any under Python's default handler (`ablate train`), where a real
    Ctrl-C cannot be told from the hook's own."""
    def abandon(signum, frame):
        raise KeyboardInterrupt

    class Waits(Hack):
        name = "test-waits-int"
        on, off = "on", "off"

        def after_step(self, ctx):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler runs here

    for handler, hack in [(abandon, Waits(None)),
                          (signal.default_int_handler, Waits(None)),
                          (signal.default_int_handler, _Interrupts(None))]:
        with pytest.raises(KeyboardInterrupt):
            _with_sigint(handler, lambda hack=hack: call_hook(hack, "after_step", None))


def test_status_of_an_experiment_on_another_experiments_folder(capsys):
    """`ablate status EXP --results-dir DIR` printed DIR's own experiment without a word
    (exit 0) where `ablate grid` refuses or warns: it now says whose progress it prints, and
    refuses another dataset's folder as the grid does."""
    exp = str(REPO / "experiments" / "default.toml")
    assert main(["status", exp, "--results-dir", str(REPO / "results" / "label-smoothing-sides")]) == 0
    out, err = capsys.readouterr()
    assert "holds experiment 'label-smoothing-sides'" in err and "not 'default'" in err, err
    assert out.startswith("label-smoothing-sides:"), out
    assert main(["status", exp, "--results-dir", str(REPO / "results" / "mnist-5k-quick")]) == 2
    err = capsys.readouterr().err
    assert "on mnist-5k" in err and "share no run" in err and no_traceback(err), err


def test_a_dry_run_says_that_repair_and_rebuild_index_did_nothing(tmp_path, capsys):
    """`--dry-run --rebuild-index` was accepted without a word: the dry run says these act
    in a real run only, and leaves the index's bytes as they were."""
    res = tmp_path / "label-smoothing-sides"
    shutil.copytree(REPO / "results" / "label-smoothing-sides", res)
    before = (res / "runs.sqlite").read_bytes()
    assert main(["grid", str(REPO / "experiments" / "label-smoothing-sides.toml"), "--results-dir",
                 str(res), "--dry-run", "--repair", "--rebuild-index"]) == 0
    out = capsys.readouterr().out
    assert "--repair: acts in a real run only" in out and "--rebuild-index: acts in a real run only" in out
    assert (res / "runs.sqlite").read_bytes() == before


@pytest.mark.parametrize("value", ["", " , "])
def test_hacks_naming_no_hack_exits_2(value, tmp_path, capsys):
    """`ablate train --hacks ""` (an unset shell variable) trained with no hacks; `none` says
    that, so an empty selection is refused before anything is written."""
    assert main(["train", "--hacks", value, "--dataset", "fake", "--steps", "2",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "names no hack" in err and "none (no hacks)" in err and no_traceback(err), err
    assert not (tmp_path / "out").exists()
