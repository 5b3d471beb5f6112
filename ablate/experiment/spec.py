"""Experiment files: a TOML file -> a frozen, validated :class:`Experiment`.

An experiment fixes everything but the hack switches and the seed: the dataset, the
model width, the training budget, the evaluation protocol, the seeds, the design
(which hack combinations to train) and fixed hack parameters. Example::

    name = "default"                       # optional; default: the file's stem
    description = "quick leave-one-out ablation on Fashion-MNIST"
    results_dir = "results/default"        # optional; default: results/<stem>
    seeds = [0, 1, 2]                      # or a count: seeds = 3 -> 0, 1, 2; or adaptive:
                                           # seeds = { min = 3, max = 10 } (step = 1)

    [data]
    dataset = "fashion-mnist"

    [model]
    ngf = 32                               # any of TrainConfig's ngf, ndf, latent_dim
    ndf = 32

    [budget]
    steps = 300                            # any other TrainConfig field (batch_size, ...)
    batch_size = 64

    [evaluation]
    features = ["classifier"]              # [] skips evaluation
    n = 5000

    [design]
    kind = "leave-one-out"                 # add-one-in, full-factorial,
                                           # fractional-factorial, explicit

    [hacks]
    scope = "all"                          # "builtin" (the eleven), or a list of names
                                           # and keywords: ["builtin", "spectral-norm"]
    [hacks.params]
    noisy-labels = { p = 0.1 }

    [analysis]                             # what the report decides (ablate.config.AnalysisSpec)
    sesoi = 0.10                           # smallest effect of interest: a relative change
    alpha = 0.05
    metric = "best.classifier.fid"         # optional; <checkpoint>.<feature net>.<metric>

Every table and key is checked: an unknown key, hack, dataset or parameter raises a
:class:`~ablate.errors.ConfigError` that names it (the CLI exits with code 2).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.hacks import registry
from ablate.artefacts import directory
from ablate.config import MAX_SEED, AnalysisSpec, EvalProtocol, SeedPolicy, TrainConfig
from ablate.data import dataset_spec
from ablate.errors import ConfigError
from ablate.experiment.execution import parse_table as parse_execution
from ablate.hacks.params import check

DESIGN_KINDS = ("leave-one-out", "add-one-in", "full-factorial", "fractional-factorial", "explicit")
# TrainConfig fields an experiment may not set: they are per-run (seed, hacks, params)
# or per-machine (device, threads), which the grid command decides.
_RESERVED_TRAIN = {"dataset", "seed", "hacks", "params", "device", "threads"}
_MODEL_KEYS = {"ngf", "ndf", "latent_dim"}


@dataclass(frozen=True)
class DesignSpec:
    """The ``[design]`` table."""

    kind: str = "leave-one-out"
    include_all_off: bool = True  # leave-one-out: also train the naive baseline
    include_all_on: bool = True  # add-one-in: also train the full recipe
    method: str = "fracfact"  # fractional-factorial: "fracfact" or "plackett-burman"
    resolution: int = 4  # fractional-factorial (fracfact): IV keeps main effects clear of 2FIs
    generators: str | None = None  # fractional-factorial: explicit pyDOE3 generator string
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()  # explicit: (name, hacks)


@dataclass(frozen=True)
class Experiment:
    """A parsed experiment file. Build one with :func:`load_experiment`."""

    name: str
    dataset: str
    seeds: tuple[int, ...]  # fixed policy: the seeds; adaptive: 0 .. max-1 (the most planned)
    hacks: tuple[str, ...]  # the hacks in scope, canonical order
    design: DesignSpec = DesignSpec()
    # TrainConfig keyword arguments common to every run (model width and budget).
    train: tuple[tuple[str, Any], ...] = ()
    params: tuple[tuple[str, str, Any], ...] = ()  # fixed (hack, param, value)
    evaluation: tuple[tuple[str, Any], ...] = ()  # the evaluation protocol's fields
    description: str = ""
    results_dir: Path = Path("results")
    source: str | None = None  # the file it came from
    # Defaults for the grid command (overridden by its options).
    execution: tuple[tuple[str, Any], ...] = field(default=())
    seed_policy: SeedPolicy | None = None  # None: fixed, the seeds above
    analysis: AnalysisSpec | None = None  # the [analysis] table, if given

    @property
    def policy(self) -> SeedPolicy:
        """The seed policy (a fixed one over ``seeds`` unless the file asked for adaptive)."""
        return self.seed_policy or SeedPolicy(seeds=self.seeds)

    # ------------------------------------------------------------------------------
    def train_kwargs(self) -> dict[str, Any]:
        return dict(self.train)

    def evaluation_dict(self) -> dict[str, Any]:
        return dict(self.evaluation)

    def evaluates(self) -> bool:
        """Whether runs are scored (an empty ``features`` list skips evaluation)."""
        return bool(self.evaluation) and bool(dict(self.evaluation).get("features", True))

    def check_decidable(self) -> None:
        """Adaptive seeds are decided on a metric (ablate.report.sequential): refuse an
        experiment that scores nothing, before a grid writes anything."""
        if self.policy.adaptive and not self.evaluates():
            raise ConfigError(f"{self.source or self.name}: seeds = {{ min, max }} (adaptive) "
                              "decides on a metric, but [evaluation] features = [] scores "
                              "nothing: set features = [\"classifier\"] or give fixed seeds")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (written to ``experiment.json`` in the results dir)."""
        params: dict[str, dict[str, Any]] = {}
        for hack, key, value in self.params:
            params.setdefault(hack, {})[key] = value
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "dataset": self.dataset,
            "seeds": list(self.seeds),
            "hacks": list(self.hacks),
            "params": params,
            "train": dict(self.train),
            "evaluation": {k: list(v) if isinstance(v, tuple) else v for k, v in self.evaluation},
            "design": {k: (v if not isinstance(v, tuple) else [[n, list(h)] for n, h in v])
                       for k, v in dataclasses.asdict(self.design).items()},
            "results_dir": str(self.results_dir),
            "execution": dict(self.execution),
        }


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------
_TOP_KEYS = {"name", "description", "results_dir", "seeds", "data", "model", "budget",
             "evaluation", "design", "hacks", "execution", "analysis"}
_SEED_POLICY_KEYS = {"min", "max", "step"}
_ANALYSIS_KEYS = {"sesoi", "alpha", "metric"}
MAX_SEED_COUNT = 1000  # a count expands to a list; more seeds than this is a typo


def _check_keys(table: dict, valid: set[str], where: str) -> None:
    for key in table:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(valid))}")


def _table(doc: dict, name: str) -> dict:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table, got {type(value).__name__}")
    return value


def _train_fields() -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _evaluation(table: dict, where: str) -> tuple[tuple[str, Any], ...]:
    """Validate ``[evaluation]`` against :class:`~ablate.config.EvalProtocol`."""
    table = dict(table)
    if "features" in table:
        feats = table["features"]
        if not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
            raise ConfigError(f"{where}.features must be a list of feature-net names, got {feats!r}")
        table["features"] = tuple(feats)
    skipped = table.get("features", ("x",)) == ()
    _check_keys(table, {"features", "n"} if skipped else
                {f.name for f in dataclasses.fields(EvalProtocol)}, where)
    try:  # skipped: n, if given, is still checked
        proto = EvalProtocol.from_dict({k: v for k, v in table.items() if not skipped or k == "n"})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if skipped:
        return tuple(sorted(table.items()))
    out = {}
    for k, v in dataclasses.asdict(proto).items():
        out[k] = tuple(v) if isinstance(v, list) else v
    return tuple(sorted(out.items()))


def parse_experiment(doc: dict, stem: str, source: str | None = None) -> Experiment:
    """Validate a TOML document (already parsed) into an :class:`Experiment`."""
    _check_keys(doc, _TOP_KEYS, "experiment")
    name = check(doc.get("name", stem), str, "name")
    if not name.strip():
        raise ConfigError("name is blank; give a name or leave it out (default: the file's stem)")
    description = check(doc.get("description", ""), str, "description")
    results_dir = directory(check(doc.get("results_dir", f"results/{stem}"), str, "results_dir"))

    data = _table(doc, "data")
    _check_keys(data, {"dataset"}, "[data]")
    if "dataset" not in data:
        raise ConfigError("[data]: missing key 'dataset'")
    dataset = check(data["dataset"], str, "[data].dataset")
    dataset_spec(dataset)  # unknown datasets raise, listing the valid ones

    fields = _train_fields()
    train: dict[str, Any] = {}
    model = _table(doc, "model")
    _check_keys(model, _MODEL_KEYS & set(fields), "[model]")
    budget = _table(doc, "budget")
    _check_keys(budget, set(fields) - _RESERVED_TRAIN - _MODEL_KEYS, "[budget]")
    for where, table in (("[model]", model), ("[budget]", budget)):
        for key, value in table.items():
            default = fields[key].default
            typ = type(default) if default is not None and default is not dataclasses.MISSING else None
            train[key] = check(value, typ, f"{where}.{key}") if typ in (int, float, str, bool) else value
    try:  # TrainConfig validates ranges (positive steps, ...)
        TrainConfig(dataset=dataset, **train)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[budget]/[model]: {exc}") from exc

    seeds = doc.get("seeds")
    if seeds is None:
        raise ConfigError("missing key 'seeds': give a list (seeds = [0, 1, 2]), a count (seeds = 3) "
                          "or an adaptive range (seeds = { min = 3, max = 10 })")
    policy = None
    if isinstance(seeds, dict):
        policy = _seed_policy(seeds)
        seeds = list(policy.seeds)
    elif isinstance(seeds, int) and not isinstance(seeds, bool):
        if not 1 <= seeds <= MAX_SEED_COUNT:
            raise ConfigError(f"seeds = {seeds}: a count must be in 1 .. {MAX_SEED_COUNT}")
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                              and 0 <= s <= MAX_SEED for s in seeds):
        raise ConfigError(f"seeds must be a list of integers in [0, {MAX_SEED}] or a count, "
                          f"got {seeds!r}")
    if not seeds:
        raise ConfigError("seeds: no seeds given; an experiment needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: duplicate seeds in {seeds}")

    hacks_t = _table(doc, "hacks")
    _check_keys(hacks_t, {"scope", "params"}, "[hacks]")
    scope = hacks_t.get("scope", "all")
    if isinstance(scope, str):
        scope = [scope]
    if not isinstance(scope, list) or not all(isinstance(h, str) for h in scope):
        raise ConfigError(f"[hacks].scope must be \"all\", \"builtin\" or a list of hack names "
                          f"(keywords allowed: [\"builtin\", \"spectral-norm\"]), got {scope!r}")
    try:  # unknown hacks -> an error listing the valid ones
        scope = registry.expand(scope)
    except ConfigError as exc:
        raise ConfigError(f"[hacks].scope: {exc}") from exc

    params_t = hacks_t.get("params", {})
    if not isinstance(params_t, dict):
        raise ConfigError("[hacks.params] must be a table of hack = { param = value }")
    params: list[tuple[str, str, Any]] = []
    for hack, values in params_t.items():
        if not isinstance(values, dict):
            raise ConfigError(f"[hacks.params].{hack} must be a table, e.g. {hack} = {{ p = 0.1 }}")
        try:
            registry.get_hack(hack).make_params(values)  # names and types checked here
        except ConfigError as exc:
            raise ConfigError(f"[hacks.params].{hack}: {exc}") from exc
        params.extend((hack, k, v) for k, v in sorted(values.items()))

    design = _design_spec(_table(doc, "design"))
    eval_t = _table(doc, "evaluation")
    evaluation = _evaluation(eval_t, "[evaluation]")
    # Validation-FID settings live in the protocol but act during training.
    for key in ("val_every", "val_n"):
        if key in eval_t and key in fields:
            if key in train and train[key] != eval_t[key]:
                raise ConfigError(f"[budget].{key} = {train[key]} contradicts "
                                  f"[evaluation].{key} = {eval_t[key]}; set it once")
            train[key] = eval_t[key]
    execution = parse_execution(_table(doc, "execution"))
    analysis = _analysis(doc["analysis"], evaluation) if "analysis" in doc else None

    return Experiment(name=name, dataset=dataset, seeds=tuple(seeds), hacks=scope, design=design,
                      train=tuple(sorted(train.items())), params=tuple(params),
                      evaluation=evaluation, description=description, results_dir=results_dir,
                      source=source, execution=tuple(sorted(execution.items())),
                      seed_policy=policy, analysis=analysis)


def _seed_policy(table: dict) -> SeedPolicy:
    """``seeds = { min = 3, max = 10, step = 1 }``: adaptive seeds."""
    _check_keys(table, _SEED_POLICY_KEYS, "seeds")
    for key in ("min", "max"):
        if key not in table:
            raise ConfigError(f"seeds: an adaptive range needs '{key}', e.g. seeds = {{ min = 3, max = 10 }}")
    values = {}
    for key in _SEED_POLICY_KEYS & set(table):
        value = table[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"seeds.{key} must be an integer, got {value!r}")
        values[key] = value
    if values["max"] > MAX_SEED_COUNT:
        raise ConfigError(f"seeds.max = {values['max']}; valid: 2 .. {MAX_SEED_COUNT}")
    return SeedPolicy(seeds=tuple(range(max(values["max"], 0))), adaptive=True, **values)


def _analysis(table: Any, evaluation: tuple[tuple[str, Any], ...]) -> AnalysisSpec:
    """``[analysis]``: sesoi, alpha and the primary metric, checked against the protocol."""
    if not isinstance(table, dict):
        raise ConfigError(f"[analysis] must be a table, got {type(table).__name__}")
    _check_keys(table, _ANALYSIS_KEYS, "[analysis]")
    kw: dict[str, Any] = {}
    for key in ("sesoi", "alpha"):
        if key in table:
            kw[key] = check(table[key], float, f"[analysis].{key}")
    if "metric" in table:
        metric = check(table["metric"], str, "[analysis].metric")
        ev = dict(evaluation)
        parts = metric.split(".")
        features = ev.get("features") or ()
        if len(parts) != 3 or parts[0] not in ("last", "best") or not parts[2]:
            raise ConfigError(f"[analysis].metric = {metric!r}; valid: <checkpoint>.<feature net>"
                              ".<metric> with checkpoint last or best, e.g. \"best.classifier.fid\"")
        if parts[1] not in features:
            raise ConfigError(f"[analysis].metric = {metric!r} names feature net {parts[1]!r}, "
                              f"but [evaluation].features = {list(features)}")
        if parts[0] == "best" and not ev.get("val_every"):
            raise ConfigError(f"[analysis].metric = {metric!r}: a best checkpoint needs "
                              "[evaluation].val_every > 0; use last.<...> or set val_every")
        kw["metric"] = metric
    return AnalysisSpec(**kw)


def _design_spec(table: dict) -> DesignSpec:
    valid = {f.name for f in dataclasses.fields(DesignSpec)}
    _check_keys(table, valid, "[design]")
    kind = table.get("kind", "leave-one-out")
    if kind not in DESIGN_KINDS:
        raise ConfigError(f"[design].kind: unknown design {kind!r}; valid designs: {', '.join(DESIGN_KINDS)}")
    kw: dict[str, Any] = {"kind": kind}
    for key in ("include_all_off", "include_all_on"):
        if key in table:
            kw[key] = check(table[key], bool, f"[design].{key}")
    if "method" in table:
        kw["method"] = check(table["method"], str, "[design].method")
        if kw["method"] not in ("fracfact", "plackett-burman"):
            raise ConfigError(f"[design].method: unknown method {kw['method']!r}; "
                              "valid: fracfact, plackett-burman")
    if "resolution" in table:
        kw["resolution"] = check(table["resolution"], int, "[design].resolution")
    if "generators" in table:
        kw["generators"] = check(table["generators"], str, "[design].generators")
    if "variants" in table:
        raw = table["variants"]
        if not isinstance(raw, dict):
            raise ConfigError("[design.variants] must be a table of name = [hacks]")
        out = []
        for vname, hacks in raw.items():
            if not isinstance(hacks, list) or not all(isinstance(h, str) for h in hacks):
                raise ConfigError(f"[design.variants].{vname} must be a list of hack names")
            out.append((vname, tuple(hacks)))
        kw["variants"] = tuple(out)
    if kind == "explicit" and not kw.get("variants"):
        raise ConfigError("[design]: kind = \"explicit\" needs a [design.variants] table "
                          "of name = [hacks]")
    return DesignSpec(**kw)


def load_experiment(path: Path | str) -> Experiment:
    """Read and validate an experiment file (TOML). Errors name the key or line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read experiment file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason}); "
                          "TOML files are UTF-8") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from exc
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{path}: arrays or inline tables nested too deeply to parse") from None
    try:
        return parse_experiment(doc, path.stem, str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
