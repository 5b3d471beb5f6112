"""Run keys are a promise: the committed results keep their keys, and only the fields
that define a result enter a key (provenance fields never do)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from ablate.config import TrainConfig
from ablate.grid.driver import prepare
from ablate.grid.keys import TRAIN_FIELDS, identity, key_of, run_key
from ablate.training.resolve import resolve
from ablate.training.loop import resolved_config

REPO = Path(__file__).resolve().parent.parent
COMMITTED = ["default", "mnist-5k-quick"]


def _committed(name: str) -> tuple[set[tuple[str, int, str]], dict[str, str]]:
    """(variant, seed, key) of the plan table and key -> stored identity JSON."""
    uri = f"file:{REPO / 'results' / name / 'runs.sqlite'}?mode=ro&immutable=1"
    db = sqlite3.connect(uri, uri=True)
    try:
        plan = set(db.execute("SELECT variant, seed, key FROM plan").fetchall())
        configs = dict(db.execute("SELECT key, config FROM runs").fetchall())
    finally:
        db.close()
    return plan, configs


@pytest.mark.parametrize("name", COMMITTED)
def test_replanning_the_committed_experiments_gives_their_keys(name):
    plan, configs = _committed(name)
    specs = prepare(REPO / "experiments" / f"{name}.toml", REPO / "results" / name).specs
    assert {(s.variant, s.seed, s.key) for s in specs} == plan
    assert len(plan) == 39
    for s in specs:  # the identity itself, field by field, not just its hash
        assert json.dumps(s.identity, sort_keys=True) == configs[s.key], s.variant


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(dataset="fake", steps=20, batch_size=32, ngf=8, ndf=8,
                                 hacks=("adam-dcgan", "batch-norm")), **kw})


def test_a_provenance_field_in_config_json_changes_no_key(monkeypatch):
    """Keys are built by inclusion: whatever config.json gains, the key ignores."""
    from ablate.training import loop as train

    config = _config()
    before = key_of(config, {"features": []})
    real = train.resolved_config

    def with_extra(plan, *a, **kw):  # config.json / resolved_config gains new fields
        cfg = real(plan, *a, **kw)
        cfg["hostname_of_the_lab"] = "somewhere"
        cfg["train"]["new_provenance_field"] = 1
        for h in cfg["hacks"]:
            h["homepage"] = "https://example.org"
        return cfg

    monkeypatch.setattr(train, "resolved_config", with_extra)
    assert "hostname_of_the_lab" in train.resolved_config(resolve(config))
    assert key_of(config, {"features": []}) == before
    # Where and how a run executes is not part of its identity either.
    assert key_of(_config(device="cpu", threads=3, log_every=7), {"features": []})[0] == before[0]


def test_the_identity_lists_exactly_the_defining_fields():
    ident = key_of(_config(), {"features": ["classifier"], "n": 10})[1]
    assert set(ident) == {"train", "hacks", "recipe", "evaluation", "code_version"}
    assert tuple(sorted(ident["train"])) == tuple(sorted(TRAIN_FIELDS))
    assert {"device", "threads", "log_every", "params"}.isdisjoint(ident["train"])
    assert [h["name"] for h in ident["hacks"]] == ["batch-norm", "adam-dcgan"]  # canonical order
    assert all(set(h) == {"name", "params"} for h in ident["hacks"])
    # Every field of resolved_config's "train" that is in the key is reproduced exactly.
    train_cfg = resolved_config(resolve(_config()))["train"]
    assert json.dumps({k: train_cfg[k] for k in TRAIN_FIELDS}) == json.dumps(ident["train"])


def test_hack_versions_enter_only_for_third_party_hacks():
    plan = resolve(_config())
    base = run_key(identity(plan, {}))

    def versioned(provider: str | None, version: str):
        records = tuple({**r, "version": version, **({"provider": provider} if provider else {})}
                        for r in plan.hack_records)
        return run_key(identity(dataclasses.replace(plan, hack_records=records), {}))

    # Built-ins are covered by CODE_VERSION: a version on their record changes nothing.
    assert versioned(None, "1") == versioned(None, "2") == base
    # A plugin's version is part of its results' identity.
    assert versioned("my-plugin", "1") != versioned("my-plugin", "2")
    assert versioned("my-plugin", "1") != base
