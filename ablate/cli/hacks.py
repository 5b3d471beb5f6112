"""``ablate hacks``: the registry as a table or JSON (with each hack's provider and version)."""

from __future__ import annotations

import argparse
import json

from ablate.hacks import registry

HELP = "list the registered hacks"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run(args: argparse.Namespace) -> int:
    # Broken or clashing plugins are reported as warnings by the registry, not fatal here.
    rows = [registry.describe(h.name) for h in registry.list_hacks()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(r["name"]) for r in rows)
    pw = max(len(f"{r['provider']} {r['version']}") for r in rows)
    print(f"{'hack':<{w}}  {'provider version':<{pw}}  ON (the hack) / OFF (baseline); params")
    pad = " " * (w + pw + 4)
    for r in rows:
        params = ", ".join(f"{k}={v['default']}" for k, v in r["params"].items())
        print(f"{r['name']:<{w}}  {r['provider'] + ' ' + r['version']:<{pw}}  ON:  {r['on']}")
        print(f"{pad}OFF: {r['off']}")
        if params:
            print(f"{pad}params: {params}")
        for key in ("overrides", "conflicts", "before", "after"):  # what --json says too
            if r.get(key):
                print(f"{pad}{key}: {', '.join(r[key])}")
    return 0
