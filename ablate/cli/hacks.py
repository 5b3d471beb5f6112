"""``ablate hacks``: the registry as a table or JSON."""

from __future__ import annotations

import argparse
import json

from ablate import registry

HELP = "list the registered hacks"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run(args: argparse.Namespace) -> int:
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
