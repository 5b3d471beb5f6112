"""The ``ablate`` command line. Usage and config errors exit with code 2."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ablate.errors import ConfigError

# Subcommands register here: name -> (add_arguments, run). Other modules (eval, grid,
# report) add theirs with :func:`command`, so this file stays a thin dispatcher.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, help: str):
    """Decorator: register ``run(args) -> int`` as a subcommand; it sets ``run.arguments``."""

    def deco(run):
        COMMANDS[name] = (help, getattr(run, "arguments", lambda p: None), run)
        return run

    return deco


# --------------------------------------------------------------------------------------
# ablate hacks
# --------------------------------------------------------------------------------------
def _hacks_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def _hacks(args) -> int:
    from ablate import registry

    rows = [{**h.describe(), "provider": registry.provider(h.name)} for h in registry.list_hacks()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(r["name"]) for r in rows)
    print(f"{'hack':<{w}}  {'provider':<14} ON (the hack) / OFF (baseline); params")
    for r in rows:
        params = ", ".join(f"{k}={v['default']}" for k, v in r["params"].items())
        print(f"{r['name']:<{w}}  {r['provider']:<14} ON:  {r['on']}")
        print(f"{'':<{w}}  {'':<14} OFF: {r['off']}" + (f"\n{'':<{w+16}} params: {params}" if params else ""))
    return 0


# --------------------------------------------------------------------------------------
# ablate train
# --------------------------------------------------------------------------------------
def parse_hack_selection(hacks: str, off: str | None) -> tuple[str, ...]:
    """``--hacks all|builtin|none|a,b`` minus ``--off a,b`` -> enabled hack names.

    ``all`` is every registered hack (plugins included), ``builtin`` the eleven of
    DESIGN.md §1; keywords and names can be mixed: ``builtin,spectral-norm``.
    """
    from ablate import registry

    keywords = {"all": registry.hack_names(), "builtin": registry.builtin_names(), "none": []}
    chosen: list[str] = []
    for item in (h.strip() for h in hacks.split(",")):
        if item:
            chosen += keywords.get(item, [item])
    removed = [h.strip() for h in (off or "").split(",") if h.strip()]
    for h in chosen + removed:
        registry.get_hack(h)  # unknown names raise, listing the valid ones
    return tuple(dict.fromkeys(h for h in chosen if h not in removed))


def parse_sets(sets: list[str]) -> tuple[tuple[str, str, str], ...]:
    """``hack.param=value`` strings -> (hack, param, value) triples."""
    out = []
    for s in sets:
        key, eq, value = s.partition("=")
        hack, dot, param = key.partition(".")
        if not eq or not dot or not hack or not param:
            raise ConfigError(f"bad --set {s!r}: expected hack.param=value, e.g. noisy-labels.p=0.1")
        out.append((hack.strip(), param.strip(), value.strip()))
    return tuple(out)


def _train_args(p: argparse.ArgumentParser) -> None:
    from ablate.train import TrainConfig

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
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", default=d.precision, choices=["fp32", "bf16"],
                   help="bf16 autocasts G and D forward passes (a GPU speed option; off by default)")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--val-every", type=int, default=d.val_every,
                   help="validation FID every K steps; keeps generator_best.pt (0 = off)")
    p.add_argument("--val-n", type=int, default=d.val_n, help="samples per validation FID")
    p.add_argument("--eval", action=argparse.BooleanOptionalAction, default=True,
                   help="score the run at the end (ablate eval) and write metrics.json")
    p.add_argument("--eval-n", type=int, default=10_000, help="samples for the final evaluation")
    p.add_argument("--eval-features", default="auto",
                   help="classifier, inception, both, or auto (classifier on CPU, both on GPU)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<name>)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def config_from_args(args) -> "TrainConfig":
    from ablate.data import dataset_spec
    from ablate.train import TrainConfig

    dataset_spec(args.dataset)  # unknown datasets fail here, listing the valid ones
    return TrainConfig(
        dataset=args.dataset, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
        hacks=parse_hack_selection(args.hacks, args.off), params=parse_sets(args.set),
        ngf=args.ngf, ndf=args.ndf, device=args.device, threads=args.threads,
        precision=args.precision,
        log_every=args.log_every, val_every=args.val_every, val_n=args.val_n)


def _train(args) -> int:
    from ablate import registry
    from ablate.data import dataset_spec
    from ablate.train import resolved_config, train

    config = config_from_args(args)
    hacks = config.resolve_hacks()
    if args.dry_run:
        print(json.dumps(resolved_config(config, hacks, registry.build_recipe(hacks)), indent=2))
        return 0
    dataset_spec(config.dataset)
    out = args.out or Path("runs") / f"{config.dataset}-{_variant_name(config)}-s{config.seed}"
    result = train(config, out)
    print(json.dumps(dataclasses.asdict(result), indent=2))
    if args.eval and (out / "generator.pt").exists():
        from ablate import evaluate

        protocol = evaluate.protocol_from_args(
            argparse.Namespace(features=args.eval_features, device=config.device),
            n=args.eval_n, val_every=config.val_every, val_n=config.val_n)
        doc = evaluate.evaluate_run(out, protocol, config.device)
        evaluate._print_summary(doc)
        print(f"metrics: {out / 'metrics.json'}", file=sys.stderr)
    print(f"samples: {out / 'samples.png'}", file=sys.stderr)
    return 0 if result.status == "done" else 3


def _variant_name(config) -> str:
    from ablate import registry

    if set(config.hacks) == set(registry.builtin_names()):
        return "all-on"
    if not config.hacks:
        return "all-off"
    return "+".join(config.hacks) if len(config.hacks) <= 3 else f"{len(config.hacks)}hacks"


# --------------------------------------------------------------------------------------
# ablate data
# --------------------------------------------------------------------------------------
def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["list", "fetch"], default="list")
    p.add_argument("name", nargs="?", help="dataset to fetch")


def _data(args) -> int:
    from ablate import data

    if args.action == "fetch":
        if not args.name:
            raise ConfigError(f"ablate data fetch needs a dataset name; one of: {', '.join(data.DATASETS)}")
        data.dataset_spec(args.name)
        print(f"{args.name}: {data.provision(args.name)} (root {data.data_root()})")
        return 0
    print(f"data root: {data.data_root()}")
    for name, spec in data.DATASETS.items():
        ok, where = data.availability(name)
        print(f"{name:<22} {'yes' if ok else 'no ':<4} {where}\n{'':<27}{spec.description}")
    return 0


COMMANDS.update({
    "hacks": ("list the registered hacks", _hacks_args, _hacks),
    "train": ("train one variant", _train_args, _train),
    "data": ("list datasets and where they come from; fetch one", _data_args, _data),
})

_PLUGIN_MODULES = ("ablate.evaluate", "ablate.runner", "ablate.report")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    for mod in _PLUGIN_MODULES:  # modules that register further subcommands
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    parser = argparse.ArgumentParser(prog="ablate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"ablate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run the imported module's main: subcommands register into ablate.cli, not __main__.
    from ablate.cli import main as _main

    sys.exit(_main())
