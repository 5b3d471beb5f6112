"""``ablate train``: train (and by default score) one variant into a run directory."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ablate.experiment import execution
from ablate.hacks import registry
from ablate.artefacts import check_creatable, directory
from ablate.cli.evaluate import print_summary, protocol_for
from ablate.config import TrainConfig, with_validation
from ablate.errors import ConfigError
from ablate.layout import RunDir

HELP = "train one variant"


def parse_hack_selection(hacks: str, off: str | None) -> tuple[str, ...]:
    """``--hacks all|builtin|none|a,b`` minus ``--off a,b`` -> enabled hack names."""
    if not _items(hacks):  # an unset shell variable, most likely: "none" says it
        raise ConfigError(f"--hacks {hacks!r} names no hack; give all, builtin, none (no hacks) "
                          "or a comma-separated list")
    return registry.expand(_items(hacks), _items(off or ""))


def _items(text: str) -> list[str]:
    return [h.strip() for h in text.split(",") if h.strip()]


def parse_sets(sets: list[str]) -> tuple[tuple[str, str, str], ...]:
    """``hack.param=value`` strings -> (hack, param, value) triples."""
    out = []
    for s in sets:
        key, eq, value = s.partition("=")
        hack, dot, param = key.partition(".")
        if not eq or not dot or not hack or not param:
            raise ConfigError(f"bad --set {s!r}: expected hack.param=value, e.g. noisy-labels.p=0.1")
        hack, param, value = hack.strip(), param.strip(), value.strip()
        for h, k, v in out:
            if (h, k) == (hack, param):
                raise ConfigError(f"--set {hack}.{param} is given twice ({v} and {value}); give it once")
        out.append((hack, param, value))
    return tuple(out)


def arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--dataset", default=d.dataset)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--hacks", default="all",
                   help="all (plugins included), builtin (the eleven), none, or a comma-separated list")
    p.add_argument("--off", default=None, help="hacks to switch off from --hacks")
    p.add_argument("--set", action="append", default=[], metavar="HACK.PARAM=VALUE",
                   help="set a hack parameter (repeatable)")
    p.add_argument("--ngf", type=int, default=d.ngf)
    p.add_argument("--ndf", type=int, default=d.ndf)
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's; at most this machine's cores)")
    p.add_argument("--precision", default=d.precision, choices=["fp32", "bf16"],
                   help="bf16 autocasts G and D forward passes, fp32 master weights and evaluation: pays on "
                        "GPUs and CPUs with AMX or AVX512-BF16, not on AVX2-only CPUs (`ablate doctor` "
                        "measures it here); a different run key; off by default")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--val-every", type=int, default=d.val_every,
                   help="validation FID every K steps; keeps generator_best.pt (0 = off)")
    p.add_argument("--val-n", type=int, default=d.val_n, help="samples per validation FID")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, metavar="N",
                   help="write a training checkpoint (train_state.pt) every N steps, to resume "
                        "an interrupted run bit for bit (0 = off)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its checkpoint "
                        "(train from step 0 if it has none)")
    p.add_argument("--eval", action=argparse.BooleanOptionalAction, default=True,
                   help="score the run at the end (ablate eval) and write metrics.json")
    p.add_argument("--eval-n", type=int, default=10_000, help="samples for the final evaluation")
    p.add_argument("--eval-features", default="auto",
                   help="classifier, inception, both, or auto (classifier on CPU, both on GPU)")
    p.add_argument("--out", default=None, help="run directory (default runs/<dataset>-<variant>-s<seed>-<config digest>)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    from ablate.data import dataset_spec

    dataset_spec(args.dataset)  # unknown datasets fail here, listing the valid ones
    execution.check_threads(args.threads, "--threads", "inline")  # the run trains here
    hacks, params = parse_hack_selection(args.hacks, args.off), parse_sets(args.set)
    for hack, param, value in params:  # a parameter of a hack that is off would do nothing
        cls = registry.get_hack(hack)  # an unknown hack: the error lists the valid ones
        if cls.name not in hacks:
            cls.make_params({param: value})  # a bad name or value says so first
            selection = f"--hacks {args.hacks}" + (f" --off {args.off}" if args.off else "")
            raise ConfigError(f"--set {hack}.{param}={value}: hack {hack!r} is not enabled "
                              f"({selection}); enable it or drop the --set")
    return TrainConfig(
        dataset=args.dataset, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
        hacks=hacks, params=params,
        ngf=args.ngf, ndf=args.ndf, device=args.device, threads=args.threads,
        precision=args.precision,
        log_every=args.log_every, val_every=args.val_every, val_n=args.val_n,
        checkpoint_every=args.checkpoint_every)


def _check_runnable(config: TrainConfig) -> None:
    """The device exists here and the batch fits the dataset (checked by the run itself
    when it starts; a dry run checks them without training)."""
    from ablate.data import check_batch_size
    from ablate.environment import resolve_device

    resolve_device(config.device)
    note = check_batch_size(config.dataset, config.batch_size, f"--batch-size {config.batch_size}",
                            provision=False)  # a dry run writes nothing, data root included
    if note:
        print(f"ablate: note: {note}", file=sys.stderr)


def variant_name(config: TrainConfig) -> str:
    """A readable name of a config's hack selection (all-on, all-off, a+b, 12hacks)."""
    if set(config.hacks) == set(registry.builtin_names()):
        return "all-on"
    if not config.hacks:
        return "all-off"
    return "+".join(config.hacks) if len(config.hacks) <= 3 else f"{len(config.hacks)}hacks"


def default_out(plan, protocol=None) -> Path:
    """``runs/<dataset>-<variant>-s<seed>-<digest>``: the digest is the start of the run's
    key (:func:`ablate.grid.keys.run_key`, the one identity function), so two different
    runs never share a default directory, while rerunning one finds its own."""
    from ablate.grid.keys import evaluation_fields, identity, run_key

    digest = run_key(identity(plan, evaluation_fields(protocol)))[:8]
    c = plan.config
    return Path("runs") / f"{c.dataset}-{variant_name(c)}-s{c.seed}-{digest}"


def run(args: argparse.Namespace) -> int:
    # Import-time saving: the training stack (torch, torchvision, torchmetrics) loads
    # only when a run is trained, not for `--help` or `--dry-run`.
    from ablate.training.checkpoint import STATE_FILE
    from ablate.experiment.pipeline import train_and_score
    from ablate.training.resolve import resolve
    from ablate.training.loop import resolved_config

    from ablate.hacks.interactions import notes

    config = config_from_args(args)
    plan = resolve(config)
    for note in notes(plan.hacks):  # a plugin overriding a built-in it does not name
        print(f"ablate: note: {note}", file=sys.stderr)
    protocol = None
    if args.eval:
        protocol = with_validation(protocol_for(args.eval_features, config.device,
                                                n=args.eval_n), config)
    if args.dry_run:  # what the run itself would refuse before training, refused here too
        _check_runnable(config)
        print(json.dumps(resolved_config(plan), indent=2))
        return 0
    out = directory(args.out, "--out") if args.out is not None else default_out(plan, protocol)
    check_creatable(out, "--out")
    state = out / STATE_FILE
    # The checkpoint names the run by its training key (the key without the evaluation, so
    # --resume may score differently): a checkpoint of the same run written by another
    # ablate commit then resumes too (ablate.training.checkpoint.same_run).
    from ablate.grid.keys import identity, run_key

    if args.resume and not state.exists() and not RunDir(out).result.exists():  # a finished run: refused below
        print(f"ablate: note: --resume: no checkpoint ({STATE_FILE}) in {out}; training from "
              "step 0", file=sys.stderr)
    try:
        scored = train_and_score(config, protocol, out,
                                 resume=[state] if args.resume and state.exists() else [],
                                 fingerprint=run_key(identity(plan, {})))
    except BaseException as exc:  # interrupted or crashed mid-run: say how to go on
        from ablate.hacks.hooks import HookError

        hook = isinstance(exc, HookError)  # a hack crashed mid-run (other ConfigErrors: a refused checkpoint)
        if state.exists() and (hook or not isinstance(exc, ConfigError)):
            print(f"ablate: the run's checkpoint is in {out}; {'once the hack is fixed, ' if hook else ''}"
                  f"continue it with the same command and --resume (--out {out})"
                  + (", unless the fix changed the hack's version" if hook else ""), file=sys.stderr)
        raise
    print(json.dumps(dataclasses.asdict(scored.result), indent=2))
    if scored.metrics is not None:
        print_summary(scored.metrics)
        print(f"metrics: {RunDir(out).metrics}", file=sys.stderr)
    print(f"samples: {RunDir(out).samples}", file=sys.stderr)
    return 0 if scored.result.status == "done" else 3
