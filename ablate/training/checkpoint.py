"""Training checkpoints: what a run saves every ``checkpoint_every`` steps to resume bit
for bit (docs/design.md, "Checkpoints and resume").

A checkpoint is one file, ``train_state.pt`` in the run's directory, written atomically
(:func:`ablate.artefacts.write_atomic`: a kill during the write leaves the previous one).
It is a dict (``torch.save``; loaded with ``weights_only=True``)::

    {"format": 1, "fingerprint": str, "about": {"threads", "device", "torch", "ablate",
                                                "extra", "hacks"},
     "step": int,                        # generator updates completed
     "resumed_from": [int, ...],          # the steps earlier attempts resumed from
     "log": [record, ...],                # every log.jsonl record so far
     "best": {"fid", "step", "state"},    # generator_best.pt's state (None before any)
     "time": {"wall_s", "train_s", "val_s"},
     ... the trainer's own state (ablate.training.loop via lone_state: "g", "d", "g_sample", "opt_g", "opt_d",
     "rng", "perm", "cursor", "window", "hacks"; ablate.fused: per member)}

``fingerprint`` is a digest of everything a resumed run must share with the run that
wrote it for the result to be the same: the training config (less where it runs and the
checkpoint interval), the hacks with their parameters and versions, the Recipe, the
torch thread count, the device type, the torch and ablate versions and the caller's
``extra`` (the grid passes the run key). A checkpoint whose fingerprint differs is not
resumed (:class:`CheckpointMismatch` says what differs), except one of the same run key
from another ablate commit (:func:`same_run`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ablate import layout
from ablate.artefacts import write_atomic
from ablate.environment import versions
from ablate.errors import ConfigError
from ablate.messages import say
from ablate.hacks.hooks import call_hook

# The file names are ablate.layout's; a fused group's member keeps its previous checkpoint
# too (the members' files are written one after another, so a kill between two writes
# leaves a step they all share).
STATE_FILE, PREV_FILE, STATE_FILES = layout.TRAIN_STATE, layout.TRAIN_STATE_PREV, layout.TRAIN_STATES
FORMAT = 1
# TrainConfig fields that say where or how often, not what: outside the fingerprint.
VOLATILE = ("device", "threads", "checkpoint_every")


class CheckpointMismatch(ConfigError):
    """No given checkpoint was written by this run (another config, thread count, ...)."""


def fingerprint(config: Any, hack_records: Iterable[dict], recipe: dict, device: torch.device,
                extra: str = "") -> tuple[str, dict[str, Any]]:
    """(digest, readable parts) of what a checkpoint must match to be resumed."""
    train = {k: v for k, v in dataclasses.asdict(config).items() if k not in VOLATILE}
    v = versions()
    about = {"threads": torch.get_num_threads(), "device": device.type,
             "torch": v.get("torch", torch.__version__), "ablate": v.get("ablate"), "extra": extra}
    text = json.dumps({"train": train, "hacks": list(hack_records), "recipe": recipe, **about},
                      sort_keys=True, default=str)
    # The hacks in the readable parts, outside the digest (earlier checkpoints keep theirs),
    # so that a mismatch names the hack whose version or parameters differ.
    hacks = {h["name"]: {"version": h.get("version"), "params": h.get("params")} for h in hack_records}
    return hashlib.sha256(text.encode()).hexdigest(), {**about, "hacks": hacks}


def save(path: Path, state: dict[str, Any], keep_previous: bool = False) -> None:
    """Write ``state`` to ``path`` atomically (the old file stays until the rename);
    ``keep_previous``: first move the old file to :data:`PREV_FILE` beside it."""
    path = Path(path)
    if keep_previous and path.exists():
        os.replace(path, path.with_name(PREV_FILE))
    write_atomic(path, lambda f: torch.save(state, f))


def remove(directory: Path) -> None:
    """Remove a finished run's checkpoint files."""
    for name in STATE_FILES:
        (Path(directory) / name).unlink(missing_ok=True)


def _load(path: Path, mmap: bool) -> dict[str, Any] | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        return None  # swept meanwhile
    except Exception as exc:  # noqa: BLE001 (truncated or foreign: not a checkpoint of ours)
        say(f"ignoring the unreadable checkpoint {path} ({type(exc).__name__}: {exc})")
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return None
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        say(f"ignoring the checkpoint {path}: its step {step!r} is not a step count")
        return None
    return state


def step_of(path: Path) -> int | None:
    """The step a checkpoint file was written at (None: missing or unreadable); cheap."""
    state = _load(Path(path), mmap=True)
    return None if state is None else int(state["step"])


def readable(paths: Iterable[Path]) -> list[tuple[int, Path, dict]]:
    """(step, path, state memory-mapped) of each readable checkpoint among ``paths``."""
    out = []
    for p in paths:
        state = _load(Path(p), mmap=True)
        if state is not None:
            out.append((int(state["step"]), Path(p), state))
    return out


def load(path: Path) -> dict[str, Any] | None:
    """A checkpoint, fully read (None: gone or unreadable)."""
    return _load(Path(path), mmap=False)


def pick(paths: Iterable[Path], digest: str, about: dict[str, Any],
         max_step: int | None = None) -> tuple[Path, dict] | None:
    """The newest (highest step) checkpoint among ``paths`` made by this run, loaded.

    None when ``paths`` holds no readable checkpoint; :class:`CheckpointMismatch` when
    some exist but none has ``digest`` (the message names what differs). A checkpoint past
    ``max_step`` (the run's budget) cannot be this run's: it is ignored, saying so.
    """
    found = readable(paths)
    if max_step is not None:
        for step, p, _ in [f for f in found if f[0] > max_step]:
            say(f"ignoring the checkpoint {p}: its step {step} is past the run's {max_step} steps")
        found = [f for f in found if f[0] <= max_step]
    if not found:
        return None
    mine = [f for f in found if f[2]["fingerprint"] == digest or same_run(f[2].get("about", {}), about)]
    if not mine:
        step, p, state = max(found, key=lambda f: f[0])
        raise CheckpointMismatch(f"the checkpoint {p} (step {step}) was written by another "
                                 f"run: {differences(state.get('about', {}), about)}")
    step, p, _ = max(mine, key=lambda f: f[0])
    state = _load(p, mmap=False)
    if state is None:  # removed between the look and the load: take the next one
        return pick([q for _, q, _ in mine if q != p], digest, about, max_step)
    return p, state


# What must match besides the run key for a checkpoint of another ablate commit to resume.
_NUMERICS = ("threads", "device", "torch", "ablate")


def same_run(theirs: dict[str, Any], ours: dict[str, Any]) -> bool:
    """Whether a checkpoint whose digest differs was still written by this lone run.

    The digest covers the whole training config, so a field added later at its default
    (``lr_scale``) changed it although the run did not change: an upgrade mid-grid would
    restart every in-flight run at step 0. The grid passes the run key as ``extra``, and
    a key is the promise of what a run means (its code version bumps when that changes);
    so a checkpoint with the same key, thread count, device and torch and ablate versions
    is this run's, from another commit (``ablate train`` passes its training key). Fused
    members and callers that pass no key still need the digest itself.
    """
    if not ours.get("extra") or theirs.get("fused") is not None or ours.get("fused") is not None:
        return False
    return theirs.get("extra") == ours["extra"] and all(theirs.get(k) == ours.get(k) for k in _NUMERICS)


def differences(theirs: dict[str, Any], ours: dict[str, Any]) -> str:
    """What differs between two fingerprints' readable parts, in words."""
    names = {"threads": "torch threads", "device": "device", "torch": "torch version",
             "ablate": "ablate version", "extra": "run key", "fused": "fused group"}
    diffs = [f"{names.get(k, k)} {theirs.get(k)!r} there, {ours.get(k)!r} here"
             for k in names if theirs.get(k) != ours.get(k)]
    there, here = theirs.get("hacks"), ours.get("hacks")
    for name in dict.fromkeys([*(here or {}), *(there or {})]) if there is not None else ():
        a, b = there.get(name), (here or {}).get(name)
        if a is None or b is None:
            diffs.append(f"hack {name!r} {'on' if a else 'off'} there, {'on' if b else 'off'} here")
            continue
        if a["version"] != b["version"]:
            diffs.append(f"hack {name!r} version {a['version']!r} there, {b['version']!r} here")
        keys = [k for k in {**a["params"], **b["params"]} if a["params"].get(k) != b["params"].get(k)]
        if keys:
            diffs.append(f"hack {name!r} parameters {({k: a['params'].get(k) for k in keys})} there, "
                         f"{({k: b['params'].get(k) for k in keys})} here")
    return "; ".join(diffs) or "the training configuration, hacks or Recipe differ"


def rng_state(gen: torch.Generator | None) -> torch.Tensor | None:
    return None if gen is None else gen.get_state()


def global_rng() -> dict[str, Any]:
    """The global CPU (and CUDA) random states, which plugin code may draw from."""
    out: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_global_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


def hack_states(hacks: Iterable[Any]) -> dict[str, Any]:
    """Per-run state of hacks that keep any outside their modules.

    A hack keeps per-run state in the modules it returns (saved with G, D and the
    sampling generator) or returns it from :meth:`~ablate.hacks.hack.Hack.state_dict` (None:
    nothing to save); that is saved here under its name and given back by
    ``load_state_dict(state)`` on resume. The loop's ``ctx.log`` window is saved with
    the rest of the loop's state.
    """
    out = {}
    for h in hacks:
        if callable(getattr(h, "state_dict", None)):
            state = call_hook(h, "state_dict")
            if state is not None:
                bad = unloadable(state)
                if bad:
                    raise ConfigError(
                        f"hack {h.name!r}: state_dict() must return tensors, numbers, strings, "
                        f"booleans and None, in lists, tuples and dicts (a checkpoint loads "
                        f"nothing else back); got {bad}: convert it (float(x), "
                        f"torch.as_tensor(x), a dict of its fields)")
                out[h.name] = state
    return out


def unloadable(value: Any, where: str = "state") -> str | None:
    """Where in a hack's state lies a value a checkpoint cannot load back (``weights_only``:
    a NumPy number, an object), as ``"<type> at state['key'][0]"``; None when there is none."""
    if isinstance(value, torch.Tensor) or type(value) in (int, float, bool, str, type(None)):
        return None
    if type(value) in (list, tuple, torch.Size):
        items: Iterable[tuple[Any, Any]] = enumerate(value)
    elif type(value) in (dict, OrderedDict) and all(type(k) in (str, int) for k in value):
        items = value.items()
    else:
        kind = type(value)
        return f"{kind.__module__}.{kind.__qualname__} at {where}".replace("builtins.", "")
    for key, item in items:
        bad = unloadable(item, f"{where}[{key!r}]")
        if bad:
            return bad
    return None


def load_hack_states(hacks: Iterable[Any], states: dict[str, Any]) -> None:
    for h in hacks:
        if h.name in states and callable(getattr(h, "load_state_dict", None)):
            call_hook(h, "load_state_dict", states[h.name])


def header(digest: str, about: dict[str, Any], step: int, run: dict[str, Any],
           times: dict[str, float]) -> dict[str, Any]:
    """The fields every trainer's checkpoint holds (the module docstring's first lines):
    ``run`` is the run's own part (:meth:`ablate.training.runlog.RunLog.state`)."""
    return {"format": FORMAT, "fingerprint": digest, "about": about, "step": step, **run,
            "time": times}


def lone_state(parts: dict[str, Any], gen: torch.Generator, hook_rng: torch.Generator | None,
               hacks: Iterable[Any], **loop: Any) -> dict[str, Any]:
    """The lone loop's own state: ``parts`` (name -> module or optimizer), its random
    streams, its hacks' states and ``loop`` (data order, cursor, stats window, ...)."""
    return {**{name: part.state_dict() for name, part in parts.items()},
            "rng": {"loop": gen.get_state(), "global": global_rng(), "hooks": rng_state(hook_rng)},
            **loop, "hacks": hack_states(hacks)}


def restore_lone(state: dict[str, Any], parts: dict[str, Any], gen: torch.Generator,
                 hook_rng: torch.Generator | None, hacks: Iterable[Any]) -> None:
    """Load what :func:`lone_state` saved back into ``parts``, the random streams and
    the hacks (the loop restores its own ``loop`` fields)."""
    for name, part in parts.items():
        part.load_state_dict(state[name])
    gen.set_state(state["rng"]["loop"])
    if hook_rng is not None:
        hook_rng.set_state(state["rng"]["hooks"])
    set_global_rng(state["rng"]["global"])
    load_hack_states(hacks, state.get("hacks", {}))
