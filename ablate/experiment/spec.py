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

    [report]                               # report-only: no run key, not in experiment.json
    beside = ["results/fashion-mnist-1k"]  # verdicts of these experiments beside this one's

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
from ablate.config import (MAX_SEED, VALIDATION_FIELDS, AnalysisSpec, EvalProtocol, SeedPolicy,
                           TrainConfig, with_validation)
from ablate.data import dataset_spec
from ablate.errors import ConfigError
from ablate.experiment.axes import Axis, parse_axes
from ablate.experiment.tables import (MAX_SEED_COUNT, DesignSpec, ReportSpec, check_keys,
                                      parse_analysis, parse_design, parse_evaluation,
                                      parse_report, parse_seed_policy, table_of)
from ablate.experiment.execution import parse_table as parse_execution
from ablate.hacks.params import check

# TrainConfig fields an experiment may not set: they are per-run (seed, hacks, params)
# or per-machine (device, threads), which the grid command decides.
_RESERVED_TRAIN = {"dataset", "seed", "hacks", "params", "device", "threads"}
_MODEL_KEYS = {"ngf", "ndf", "latent_dim"}
# Where a key misplaced in [model], [budget] or at the top belongs (named in the error),
# besides the model and budget keys themselves.
_ELSEWHERE = {"seed": "seeds = [...] at the top", "dataset": "[data]",
              "device": "[execution] or the grid's --device",
              "threads": "[execution] or the grid's --threads", "workers": "[execution]",
              "hacks": "[hacks] scope = [...]", "params": "[hacks.params]", "scope": "[hacks]",
              "kind": "[design]", "features": "[evaluation]", "sesoi": "[analysis]",
              "alpha": "[analysis]", "beside": "[report]", "val_every": "[evaluation]",
              "val_n": "[evaluation]"}


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
    # How runs are scored, resolved once (its val_every/val_n are the training's:
    # ablate.config.with_validation); None when [evaluation] features = [] scores nothing.
    protocol: EvalProtocol | None = None
    # protocol None: the [evaluation] table that said so (features = [], and n if given),
    # recorded in experiment.json and hashed into the run keys as given.
    unscored: tuple[tuple[str, Any], ...] = ()
    description: str = ""
    results_dir: Path = Path("results")
    source: str | None = None  # the file it came from
    # Defaults for the grid command (overridden by its options).
    execution: tuple[tuple[str, Any], ...] = field(default=())
    seed_policy: SeedPolicy | None = None  # None: fixed, the seeds above
    analysis: AnalysisSpec | None = None  # the [analysis] table, if given
    axes: tuple[Axis, ...] = ()  # [axes]: the design crossed with these levels
    reuse: tuple[Path, ...] = ()  # results dirs whose finished runs of the same key are copied
    # [report]: read by `ablate report` from the file itself (load_report_spec), so it is
    # deliberately left out of to_dict(): no run key and no experiment.json changes with it.
    report: ReportSpec = ReportSpec()

    @property
    def policy(self) -> SeedPolicy:
        """The seed policy (a fixed one over ``seeds`` unless the file asked for adaptive)."""
        return self.seed_policy or SeedPolicy(seeds=self.seeds)

    # ------------------------------------------------------------------------------
    def train_kwargs(self) -> dict[str, Any]:
        return dict(self.train)

    def evaluates(self) -> bool:
        """Whether runs are scored (an empty ``features`` list skips evaluation)."""
        return self.protocol is not None

    def evaluation_record(self) -> dict[str, Any]:
        """``[evaluation]`` as recorded (``experiment.json``): the protocol's fields or the
        table that scores nothing, sorted by name, tuples as lists."""
        fields = self.protocol.to_dict() if self.protocol is not None else dict(self.unscored)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(fields.items())}

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
            "evaluation": self.evaluation_record(),
            "design": {k: (v if not isinstance(v, tuple) else [[n, list(h)] for n, h in v])
                       for k, v in dataclasses.asdict(self.design).items()},
            "results_dir": str(self.results_dir),
            "execution": dict(self.execution),
            # absent when unused, so experiment.json of experiments without them is unchanged
            **({"axes": {a.name: list(a.levels) for a in self.axes}} if self.axes else {}),
            **({"reuse": [str(p) for p in self.reuse]} if self.reuse else {}),
        }


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------
_TOP_KEYS = {"name", "description", "results_dir", "seeds", "data", "model", "budget",
             "evaluation", "design", "hacks", "execution", "analysis", "axes", "reuse", "report"}


def _train_fields() -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def parse_experiment(doc: dict, stem: str, source: str | None = None) -> Experiment:
    """Validate a TOML document (already parsed) into an :class:`Experiment`."""
    fields = _train_fields()
    budget_keys = set(fields) - _RESERVED_TRAIN - _MODEL_KEYS
    elsewhere = {**dict.fromkeys(_MODEL_KEYS, "[model]"), **dict.fromkeys(budget_keys, "[budget]"),
                 **_ELSEWHERE}
    check_keys(doc, _TOP_KEYS, "experiment", elsewhere)
    name = check(doc.get("name", stem), str, "name")
    if not name.strip():
        raise ConfigError("name is blank; give a name or leave it out (default: the file's stem)")
    description = check(doc.get("description", ""), str, "description")
    results_dir = directory(check(doc.get("results_dir", f"results/{stem}"), str, "results_dir"))

    data = table_of(doc, "data")
    check_keys(data, {"dataset"}, "[data]", elsewhere)
    if "dataset" not in data:
        raise ConfigError("[data]: missing key 'dataset'")
    dataset = check(data["dataset"], str, "[data].dataset")
    dataset_spec(dataset)  # unknown datasets raise, listing the valid ones

    train: dict[str, Any] = {}
    model = table_of(doc, "model")
    check_keys(model, _MODEL_KEYS & set(fields), "[model]", elsewhere)
    budget = table_of(doc, "budget")
    check_keys(budget, budget_keys, "[budget]", elsewhere)
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
        policy = parse_seed_policy(seeds)
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

    hacks_t = table_of(doc, "hacks")
    check_keys(hacks_t, {"scope", "params"}, "[hacks]")
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
            cls = registry.get_hack(hack)
            cls.make_params(values)  # names and types checked here
        except ConfigError as exc:
            raise ConfigError(f"[hacks.params].{hack}: {exc}") from exc
        if cls.name not in scope:  # no variant enables it: the values would do nothing
            raise ConfigError(f"[hacks.params].{hack}: hack {hack!r} is not in scope; hacks in "
                              f"scope: {', '.join(scope) or '(none)'}; add it to [hacks].scope "
                              "or drop its parameters")
        params.extend((hack, k, v) for k, v in sorted(values.items()))

    design = parse_design(table_of(doc, "design"))
    eval_t = table_of(doc, "evaluation")
    protocol, unscored = parse_evaluation(eval_t, "[evaluation]")
    # The validation settings act during training: TrainConfig owns them (ablate.config,
    # VALIDATION_FIELDS). A file sets them in [evaluation] (or, when nothing is scored,
    # in [budget]); the protocol takes the training's values (with_validation).
    for key in VALIDATION_FIELDS:
        if key in eval_t:
            if key in train and train[key] != eval_t[key]:
                raise ConfigError(f"[budget].{key} = {train[key]} contradicts "
                                  f"[evaluation].{key} = {eval_t[key]}; set it once")
            train[key] = eval_t[key]
        elif key in train and protocol is not None:
            raise ConfigError(f"[budget].{key} = {train[key]}: the evaluation protocol records "
                              f"the validation settings; set it in [evaluation] instead")
    if protocol is not None:
        protocol = with_validation(protocol, train)
    execution = parse_execution(table_of(doc, "execution"))
    analysis = parse_analysis(doc["analysis"], protocol) if "analysis" in doc else None
    axes = parse_axes(doc["axes"], scope) if "axes" in doc else ()
    if any(a.name == "width" for a in axes):
        ngf, ndf = (train.get(k, getattr(TrainConfig, k)) for k in ("ngf", "ndf"))
        if ngf != ndf:  # no level would plan this file's own runs
            raise ConfigError(f"[axes].width sets ngf = ndf, but [model] has ngf = {ngf}, ndf = {ndf}; "
                              "give them one value or drop the axis")
    reuse = doc.get("reuse", [])
    if not isinstance(reuse, list) or not all(isinstance(p, str) for p in reuse):
        raise ConfigError(f"reuse must be a list of results directories whose finished runs "
                          f"may be copied, e.g. reuse = [\"results/fashion-mnist-1k\"]; got {reuse!r}")
    if len(set(reuse)) != len(reuse):
        raise ConfigError(f"reuse lists a results directory twice: {reuse!r}")
    reuse = tuple(directory(p, "reuse", use="read") for p in reuse)
    report = parse_report(doc["report"]) if "report" in doc else ReportSpec()

    return Experiment(name=name, dataset=dataset, seeds=tuple(seeds), hacks=scope, design=design,
                      train=tuple(sorted(train.items())), params=tuple(params),
                      protocol=protocol, unscored=unscored, description=description, results_dir=results_dir,
                      source=source, execution=tuple(sorted(execution.items())),
                      seed_policy=policy, analysis=analysis, axes=axes, reuse=reuse, report=report)


def _read_toml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not TOML
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
    return doc


def load_experiment(path: Path | str) -> Experiment:
    """Read and validate an experiment file (TOML). Errors name the key or line."""
    path = Path(path)
    doc = _read_toml(path)
    try:
        return parse_experiment(doc, path.stem, str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_report_spec(path: Path | str) -> ReportSpec:
    """Only the ``[report]`` table of an experiment file (what ``ablate report`` reads of it:
    the rest of the file is the grid's, recorded in ``experiment.json``)."""
    path = Path(path)
    doc = _read_toml(path)
    try:
        return parse_report(doc["report"]) if "report" in doc else ReportSpec()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
