"""``ablate data``: datasets, whether they are here and where from; ``fetch`` one."""

from __future__ import annotations

import argparse

from ablate.errors import ConfigError

HELP = "list datasets and where they come from; fetch one"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["list", "fetch"], default="list")
    p.add_argument("name", nargs="?", help="dataset to fetch")


def run(args: argparse.Namespace) -> int:
    from ablate import data  # import-time saving: loads torch

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
