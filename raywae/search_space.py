"""Search-space YAML -> SweepSpec: fixed settings, model families ("arms"), grid axes, seeds,
Optuna / random distributions, resources. Strict: the document is checked by the same
validator as an experiment config (`config.coerce`), and every error names the file, the key
path and the line. Imports neither Ray nor MLflow.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from raywae import config as cfgmod
from raywae.config import ConfigError, check
from raywae.families import FAMILIES, unpackable
from raywae.logkeys import during_training, reported

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
# A population scheduler's trial config: the planned trial dict under this key (Tune's own grid,
# as PBT takes no searcher), the hyperparameters it varies at the top level.
PLANNED = "planned"
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # one path component: a folder name

Grid = dict[str, tuple[Any, ...]]
Space = dict[str, dict[str, tuple[Any, ...]]]


# --- the document's schema (checked by config.coerce) ------------------------------------------
SCHEDULER_KEYS: dict[str, tuple[str, ...]] = {  # the settings each scheduler reads
    "fifo": (),
    "asha": ("grace_period", "reduction_factor", "max_t", "brackets", "final_eval"),
    "hyperband": ("reduction_factor", "max_t", "final_eval"),
    "median": ("grace_period", "min_samples_required", "final_eval"),
    "pbt": (
        "perturbation_interval",
        "burn_in_period",
        "quantile_fraction",
        "resample_probability",
        "synch",
        "mutations",
    ),  # fmt: skip
    "pb2": ("perturbation_interval", "burn_in_period", "quantile_fraction", "synch", "mutations"),
    "mo_asha": ("grace_period", "reduction_factor", "max_t", "final_eval"),
}
SchedulerName = Literal["fifo", "asha", "hyperband", "median", "pbt", "pb2", "mo_asha"]
POPULATION = ("pbt", "pb2")  # schedulers that change a trial's hyperparameters


@dataclass(frozen=True)
class SchedulerDoc:
    """search.scheduler: Tune's schedulers (and raywae's mo_asha) over training steps. metric /
    mode: what it ranks trials by (default search.metric / search.mode), reported during
    training (a proxy/ or train/ key); mo_asha takes a list. Times are training steps:
    grace_period (default: the first rung at max_t / reduction_factor²), max_t (default
    base.train.steps), perturbation_interval (pbt, pb2; a multiple of the checkpoint
    cadence); synch: perturb once every trial has reached the interval. mutations (pbt,
    pb2): hyperparameter -> {uniform | loguniform: [low, high]} or {choice: [...]} (pb2:
    intervals only), the bounds trials explore inside. final_eval (asha, hyperband, median,
    mo_asha): a trial stopped early also gets the full final evaluation from its newest
    checkpoint (default false: a minute per model on a CPU, for a model its proxies already
    ranked out)."""

    name: SchedulerName = "fifo"
    metric: str | tuple[str, ...] | None = None
    mode: str | tuple[str, ...] | None = None
    grace_period: int | None = None
    reduction_factor: float = 3.0
    max_t: int | None = None
    brackets: int = 1
    min_samples_required: int = 3
    perturbation_interval: int | None = None
    burn_in_period: int = 0
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    synch: bool = False
    final_eval: bool = False
    mutations: Space = field(default_factory=dict)

    def __post_init__(self) -> None:
        defaults = SchedulerDoc.__dataclass_fields__
        for key, f in defaults.items():
            default = f.default_factory() if callable(f.default_factory) else f.default
            used = key in ("name", "metric", "mode") or key in SCHEDULER_KEYS[self.name]
            check(
                used or getattr(self, key) == default,
                key,
                f"not a setting of scheduler {self.name!r}; it reads "
                f"{['metric', 'mode', *SCHEDULER_KEYS[self.name]]}",
            )
        check(self.reduction_factor > 1, "reduction_factor", "must be > 1")
        for key in ("grace_period", "max_t", "perturbation_interval"):
            value = getattr(self, key)
            check(value is None or value >= 1, key, f"steps: must be >= 1, got {value}")
        check(0 < self.quantile_fraction <= 0.5, "quantile_fraction", "must lie in (0, 0.5]")
        check(0 <= self.resample_probability <= 1, "resample_probability", "must lie in [0, 1]")
        check(self.brackets >= 1, "brackets", "must be >= 1")
        check(self.min_samples_required >= 1, "min_samples_required", "must be >= 1")
        if self.name in POPULATION:
            check(bool(self.mutations), "mutations", f"{self.name} needs hyperparameters to vary")
            check(
                self.perturbation_interval is not None,
                "perturbation_interval",
                f"{self.name} needs one (training steps between exploits)",
            )


@dataclass(frozen=True)
class SearchDoc:
    algorithm: Literal["grid", "optuna", "random"] = "grid"
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    metric: str | tuple[str, ...] = "metric/beta_vae_5"
    mode: str | tuple[str, ...] = "max"
    num_samples: int = 1
    seed: int = 0
    scheduler: (
        SchedulerDoc | Literal["fifo", "asha", "hyperband", "median", "pbt", "pb2", "mo_asha"]
    ) = "fifo"

    def __post_init__(self) -> None:
        metric, mode = _as_tuple(self.metric), _as_tuple(self.mode)
        check(
            len(metric) == len(mode) and all(m in ("min", "max") for m in mode),
            "mode",
            f"one of min/max per metric {list(metric)}, got {list(mode)}",
        )
        check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")


@dataclass(frozen=True)
class ResourcesDoc:
    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        check(self.cpu >= 0, "cpu", f"must be >= 0, got {self.cpu}")
        check(self.gpu >= 0, "gpu", f"must be >= 0, got {self.gpu}")
        check(self.gpu <= 1, "gpu", f"more than one GPU per trial is not supported, got {self.gpu}")


@dataclass(frozen=True)
class TrackingDoc:
    """log_model: a finished run carries its weights (model.pt, ~55 MB for the paper network)."""

    log_model: bool = True


@dataclass(frozen=True)
class ArmDoc:
    family: str | None = None
    set: dict[str, Any] = field(default_factory=dict)
    grid: Grid = field(default_factory=dict)
    space: Space = field(default_factory=dict)


@dataclass(frozen=True)
class SweepDoc:
    name: str
    description: str | None = None
    base: dict[str, Any] = field(default_factory=dict)
    arms: dict[str, ArmDoc | None] = field(default_factory=dict)
    grid: Grid = field(default_factory=dict)
    space: Space = field(default_factory=dict)
    seeds: int | tuple[int, ...] = 1
    search: SearchDoc = field(default_factory=SearchDoc)
    resources: ResourcesDoc = field(default_factory=ResourcesDoc)
    concurrency: int = 0
    max_failures: int = 1
    storage: str = "runs"
    tracking_uri: str | None = None
    tracking: TrackingDoc = field(default_factory=TrackingDoc)
    pack: int | Literal["auto"] = 1

    def __post_init__(self) -> None:
        check(
            self.pack == "auto" or self.pack >= 1,
            "pack",
            f"models per trial: a count >= 1 or 'auto', got {self.pack!r}",
        )
        check(
            SAFE_NAME.fullmatch(self.name) is not None and ".." not in self.name,
            "name",
            f"a folder and MLflow experiment name: letters, digits, '_', '-', '.' "
            f"(no '/', no '..'), got {self.name!r}",
        )
        check(self.concurrency >= 0, "concurrency", f"must be >= 0, got {self.concurrency}")
        check(self.max_failures >= 0, "max_failures", f"must be >= 0, got {self.max_failures}")
        seeds = self.seeds
        check(
            seeds >= 1 if isinstance(seeds, int) else len(seeds) > 0,
            "seeds",
            f"a positive count or a non-empty list of ints, got {seeds!r}",
        )


# --- the resolved sweep ----------------------------------------------------------------------
@dataclass(frozen=True)
class Distribution:
    """One searched hyperparameter: kind in DISTRIBUTIONS; args (low, high) or the choices."""

    kind: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Arm:
    """A model family: dotted settings over `base`, its own grid axes and distributions."""

    name: str
    settings: dict[str, Any]
    grid: Grid
    space: dict[str, Distribution]


@dataclass(frozen=True)
class Trial:
    """One planned trial: family, dotted overrides (grid values), seed."""

    arm: str
    params: dict[str, Any]
    seed: int

    def as_config(self) -> dict[str, Any]:
        """The flat trial dict every Tune trial receives, grid or Optuna:
        {"arm": name, "seed": int, "<dotted.key>": value, ...}."""
        return {"arm": self.arm, "seed": self.seed, **self.params}


@dataclass(frozen=True)
class SchedulerSpec:
    """search.scheduler resolved: its name, the metrics it ranks by with their modes, its
    settings (the keys SCHEDULER_KEYS names, times in training steps, defaults filled in) and
    the hyperparameters a population scheduler varies."""

    name: str = "fifo"
    metric: tuple[str, ...] = ()
    mode: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    mutations: dict[str, Distribution] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for --dry-run: the scheduler and every setting it runs with."""
        if self.name == "fifo":
            return "scheduler fifo: every trial trains its full budget"
        ranks = ", ".join(f"{m} ({o})" for m, o in zip(self.metric, self.mode))
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        varied = ", ".join(f"{k} ~ {d.kind}{list(d.args)}" for k, d in self.mutations.items())
        return f"scheduler {self.name} on {ranks}, in steps: {settings}" + (
            f"; varies {varied}" if varied else ""
        )


@dataclass(frozen=True)
class SweepSpec:
    source: str
    name: str
    base: dict[str, Any]
    arms: dict[str, Arm]
    seeds: tuple[int, ...]
    algorithm: str = "grid"
    sampler: str = "tpe"
    metric: tuple[str, ...] = ("metric/beta_vae_5",)
    mode: tuple[str, ...] = ("max",)
    num_samples: int = 1
    search_seed: int = 0
    cpu: float = 1.0
    gpu: float = 0.0
    concurrency: int = 0  # 0: as many as the resources allow
    max_failures: int = 1
    storage: str = "runs"
    tracking_uri: str | None = None
    log_model: bool = True
    description: str = ""
    pack: int = 1  # models per Tune trial (resolved: `auto` is already a count here)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)

    def packs(self) -> list[list[int]]:
        """A grid sweep's planned trials (indices into `trials()`) grouped into packs: the
        seeds of one setting, `pack` at a time (the last pack of a setting may be smaller).
        A pack is one Tune trial with `resources` (its GPU share is the pack's)."""
        out: list[list[int]] = []
        trials = self.trials()
        for i, t in enumerate(trials):
            prev = trials[out[-1][0]] if out else None
            same = prev is not None and (prev.arm, prev.params) == (t.arm, t.params)
            if same and len(out[-1]) < self.pack:
                out[-1].append(i)
            else:
                out.append([i])
        return out

    def planned(self) -> list[dict[str, Any]]:
        """A grid sweep's Tune trials as flat trial dicts: each planned trial's, or with
        pack > 1 one per pack of two or more: its first member's with `seeds` (every
        member's seed, in order) in place of `seed` (see `members`)."""
        trials = [t.as_config() for t in self.trials()]
        out = []
        for members in self.packs():
            first = dict(trials[members[0]])
            if len(members) > 1:
                del first["seed"]
                first["seeds"] = [trials[i]["seed"] for i in members]
            out.append(first)
        return out

    @staticmethod
    def members(trial: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A Tune trial's runs as trial dicts: one per seed of a pack, else the trial. A
        population scheduler's trial holds its planned dict under PLANNED and the values it
        varies beside it (they win)."""
        trial = {**trial.get(PLANNED, {}), **{k: v for k, v in trial.items() if k != PLANNED}}
        if "seeds" not in trial:
            return [trial]
        rest = {k: v for k, v in trial.items() if k != "seeds"}
        return [{**rest, "seed": seed} for seed in trial["seeds"]]

    def trials(self) -> list[Trial]:
        """The planned trials of a grid sweep: per arm, grid product x seeds (arm order)."""
        out = []
        for arm in self.arms.values():
            keys = list(arm.grid)
            for values in itertools.product(*(arm.grid[k] for k in keys)):
                out.extend(Trial(arm.name, dict(zip(keys, values)), s) for s in self.seeds)
        return out

    def example(self, arm: str | None = None) -> dict[str, Any]:
        """A trial dict of `arm` (default: the first): its first grid values or the low ends
        of its distributions, and the first seed."""
        a = self.arms[arm or next(iter(self.arms))]
        values = {k: v[0] for k, v in a.grid.items()} | {k: d.args[0] for k, d in a.space.items()}
        return {"arm": a.name, "seed": self.seeds[0], **values}

    def configs(self, trial: Mapping[str, Any]) -> list[cfgmod.Config]:
        """The Configs of a Tune trial's models (see `members`), in member order."""
        return [self.config(member) for member in self.members(trial)]

    def config(self, trial: Mapping[str, Any]) -> cfgmod.Config:
        """The full experiment config of a trial dict (see Trial.as_config)."""
        params = dict(trial)
        arm = self.arms[params.pop("arm")]
        flat = {**arm.settings, **params}
        return cfgmod.override(cfgmod.from_dict(self.base, self.source), flat, self.source)


# --- loading -----------------------------------------------------------------------------
def load(path: str | Path, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read and check a search-space YAML. overrides: dotted keys over the file (the CLI's
    --set), e.g. {"base.train.steps": 200, "search.num_samples": 3}."""
    source = str(path)
    doc, lines = cfgmod.read_yaml(path)
    try:
        for key, value in (overrides or {}).items():
            cfgmod.set_path(doc, key, value, source)
        spec = _spec(cfgmod.coerce(doc, SweepDoc, ""), source)
        _check_configs(spec, lines)
    except ConfigError as err:
        raise err.located(source, lines) from None
    return spec


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings -> dotted keys ({"model": {"prior": "uniform"}} -> model.prior)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, f"{key}.") if isinstance(v, Mapping) else {key: v})
    return out


def _grid(grid: Grid, key: str) -> Grid:
    for k, values in grid.items():
        check(bool(values), f"{key}.{k}", "empty grid axis: give at least one value")
    return grid


def _distributions(space: Space, key: str) -> dict[str, Distribution]:
    out = {}
    for k, spec in space.items():
        sub = f"{key}.{k}"
        check(
            len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS,
            sub,
            f"a distribution is one of {list(DISTRIBUTIONS)}: e.g. {{loguniform: [1, 100]}}; "
            f"got {spec!r}",
        )
        kind, args = next(iter(spec.items()))
        check(bool(args), f"{sub}.{kind}", "expected a non-empty list")
        if kind != "choice":
            check(len(args) == 2, f"{sub}.{kind}", f"expected [low, high], got {list(args)}")
            low, high = (cfgmod.coerce(a, float, f"{sub}.{kind}") for a in args)
            check(
                low < high and (kind != "loguniform" or low > 0),
                f"{sub}.{kind}",
                f"need {'0 < ' * (kind == 'loguniform')}low < high, got [{low}, {high}]",
            )
            args = (int(low), int(high)) if kind == "int" else (low, high)
        out[k] = Distribution(kind, tuple(args))
    return out


def _spec(doc: SweepDoc, source: str) -> SweepSpec:
    try:
        cfgmod.from_dict(doc.base, source)
    except ConfigError as err:
        raise ConfigError(f"base.{err.key}", err.message) from None
    search = doc.search
    shared_grid = _grid(doc.grid, "grid")
    shared_space = _distributions(doc.space, "space")
    arms = {}
    for name, arm_doc in (doc.arms or {"default": None}).items():
        arm_doc = arm_doc or ArmDoc()
        family = arm_doc.family or (name if name in FAMILIES else None)
        check(
            family is None or family in FAMILIES,
            f"arms.{name}.family",
            f"unknown family {family!r}; known: {sorted(FAMILIES)} "
            "(or leave it out and `set:` everything)",
        )
        settings = {**(FAMILIES[family].preset if family else {}), **_flat(arm_doc.set)}
        # An arm that names no family would silently train the base settings (a β-VAE).
        near = difflib.get_close_matches(name, FAMILIES, n=1)
        check(
            not doc.arms or "objective.name" in settings,
            f"arms.{name}",
            f"{name!r} is not a model family and the arm sets none: "
            + (f"did you mean {near[0]!r}? " if near else "")
            + f"name one with `family:` ({sorted(FAMILIES)}) or `set: {{objective: ...}}`",
        )
        grid = {**shared_grid, **_grid(arm_doc.grid, f"arms.{name}.grid")}
        space = {**shared_space, **_distributions(arm_doc.space, f"arms.{name}.space")}
        arms[name] = Arm(name, settings, grid, space)
    check(
        search.algorithm != "grid" or not any(a.space for a in arms.values()),
        "space",
        "distributions need search.algorithm optuna or random",
    )
    if search.algorithm != "grid":
        _check_same_distributions(arms)
    seeds = tuple(range(doc.seeds)) if isinstance(doc.seeds, int) else doc.seeds
    pack = _pack(doc, arms, len(seeds))
    steps = max(
        cfgmod.override(cfgmod.from_dict(doc.base, source), arm.settings, source).train.steps
        for arm in arms.values()
    )
    return SweepSpec(
        scheduler=_scheduler(search, arms, steps),
        pack=pack,
        source=source,
        name=doc.name,
        base=doc.base,
        arms=arms,
        seeds=seeds,
        algorithm=search.algorithm,
        sampler=search.sampler,
        metric=_as_tuple(search.metric),
        mode=_as_tuple(search.mode),
        num_samples=search.num_samples,
        search_seed=search.seed,
        cpu=doc.resources.cpu,
        gpu=doc.resources.gpu,
        concurrency=doc.concurrency,
        max_failures=doc.max_failures,
        storage=doc.storage,
        tracking_uri=doc.tracking_uri,
        log_model=doc.tracking.log_model,
        description=doc.description or "",
    )


def _scheduler(search: SearchDoc, arms: dict[str, Arm], steps: int) -> SchedulerSpec:
    """search.scheduler -> SchedulerSpec (metric / mode default to search's; max_t to the
    longest arm's train.steps; grace_period to the first rung at max_t / η²); checks that a
    single-objective scheduler has one metric and a population one runs over a grid whose
    axes it does not also vary."""
    doc = (
        search.scheduler
        if isinstance(search.scheduler, SchedulerDoc)
        else SchedulerDoc(name=search.scheduler)
    )
    key = "scheduler"
    metric = _as_tuple(doc.metric if doc.metric is not None else search.metric)
    mode = _as_tuple(doc.mode if doc.mode is not None else search.mode)
    check(
        len(metric) == len(mode) and all(m in ("min", "max") for m in mode),
        f"{key}.mode",
        f"one of min/max per metric {list(metric)}, got {list(mode)}",
    )
    check(
        doc.name in ("fifo", "mo_asha") or len(metric) == 1,
        f"{key}.metric",
        f"{doc.name} ranks trials by one metric, got {list(metric)}: set "
        "search.scheduler.metric (e.g. proxy/beta_vae_5) or use mo_asha",
    )
    if doc.name in POPULATION:
        check(
            search.algorithm == "grid",
            key,
            f"{doc.name} changes trials' hyperparameters as they train, which an "
            f"{search.algorithm} search cannot follow: use search.algorithm grid",
        )
        for arm in arms.values():
            both = sorted(set(arm.grid) & set(doc.mutations))
            check(
                not both,
                f"{key}.mutations",
                f"{both} are grid axes of arm {arm.name!r} too: {doc.name} draws their "
                "initial values from the mutation bounds",
            )
    mutations = _distributions(doc.mutations, f"{key}.mutations")
    if doc.name == "pb2":
        for k, d in mutations.items():
            check(
                d.kind in ("uniform", "loguniform"),
                f"{key}.mutations.{k}",
                "pb2 varies continuous hyperparameters: uniform or loguniform",
            )
    max_t = doc.max_t or steps
    rf = doc.reduction_factor
    settings = {
        "max_t": max_t,
        "grace_period": doc.grace_period or max(1, math.ceil(max_t / rf**2)),
        "reduction_factor": rf,
        "brackets": doc.brackets,
        "min_samples_required": doc.min_samples_required,
        "perturbation_interval": doc.perturbation_interval,
        "burn_in_period": doc.burn_in_period,
        "quantile_fraction": doc.quantile_fraction,
        "resample_probability": doc.resample_probability,
        "synch": doc.synch,
        "final_eval": doc.final_eval,
    }
    settings = {k: v for k, v in settings.items() if k in SCHEDULER_KEYS[doc.name]}
    if "grace_period" in settings:
        check(
            settings["grace_period"] < max_t,
            f"{key}.grace_period",
            f"must be below max_t ({max_t} steps), got {settings['grace_period']}",
        )
    return SchedulerSpec(doc.name, metric, mode, settings, mutations)


def _pack(doc: SweepDoc, arms: dict[str, Arm], seeds: int) -> int:
    """Models per trial. `auto`: the seeds of one setting on a GPU (resources.gpu > 0), else
    1: on CPU cores a pack was measured slower than one model at a time (bench/paper_speed.py)."""
    if doc.pack == "auto":
        return seeds if doc.resources.gpu > 0 and doc.search.algorithm == "grid" else 1
    if doc.pack > 1:
        check(
            doc.search.algorithm == "grid",
            "pack",
            "packs hold the seeds of one grid setting: optuna / random searches need pack: 1",
        )
        base = {f"objective.{k}": v for k, v in doc.base.get("objective", {}).items()}
        for name, arm in arms.items():
            settings = {"objective.name": "beta_vae", "objective.acai": 0, **base, **arm.settings}
            why = unpackable(settings["objective.name"], float(settings["objective.acai"]))
            check(why is None, "pack", f"arm {name!r} cannot be packed: {why}")
    return doc.pack


def _as_tuple(v: str | tuple[str, ...]) -> tuple[str, ...]:
    return (v,) if isinstance(v, str) else tuple(v)


def _check_same_distributions(arms: dict[str, Arm]) -> None:
    """Optuna learns one distribution per parameter name, whichever arm suggests it."""
    seen: dict[str, tuple[str, Distribution]] = {}
    for arm in arms.values():
        for key, d in arm.space.items():
            first, other = seen.setdefault(key, (arm.name, d))
            check(
                other == d,
                f"arms.{arm.name}.space.{key}",
                f"differs from arms.{first}.space.{key}; a searched name needs one "
                "distribution in every arm",
            )


def _check_configs(spec: SweepSpec, lines: Mapping[str, int]) -> None:
    """Build the config of every planned grid trial (or, for a search, of each arm with each
    probe value of each distribution: every choice, both ends of an interval) so that a bad
    value fails now, naming where in the file it came from; and check that each of them
    reports the searched metrics (search.metric, also what a grid's summary ranks by)."""
    if spec.algorithm == "grid":
        probes = [t.as_config() for t in spec.trials()]
    else:
        probes = []
        for arm in spec.arms.values():
            low = spec.example(arm.name)
            probes.append(low)
            for key, d in arm.space.items():
                probes += [{**low, key: v} for v in d.args[1:]]
    for trial in probes:
        try:
            keys = reported(spec.config(trial))
        except ConfigError as err:
            arm = trial["arm"]
            where = [
                f"arms.{arm}.grid.{err.key}",
                f"grid.{err.key}",
                f"arms.{arm}.space.{err.key}",
                f"space.{err.key}",
                f"arms.{arm}.set.{err.key}",
                f"arms.{arm}.family",
                f"base.{err.key}",
            ]
            key = next((w for w in where if w in lines), f"arms.{arm}")
            value = {k: v for k, v in trial.items() if k not in ("arm", "seed")}
            raise ConfigError(key, f"{err.key}: {err.message} (trial values {value})") from None
        missing = [m for m in spec.metric if m not in keys]
        check(
            not missing,
            "search.metric",
            f"arm {trial['arm']!r} never reports {missing}; its final figures are "
            f"{sorted(k for k in keys if k.startswith(('test/', 'metric/')))}",
        )
        _check_scheduler(spec, spec.config(trial), trial["arm"], lines)


def _check_scheduler(
    spec: SweepSpec, cfg: cfgmod.Config, arm: str, lines: Mapping[str, int]
) -> None:
    """A scheduler acts on reports during training: its metrics must be reported then (a
    proxy needs metrics.every), and a population scheduler's perturbations must fall on
    checkpoints (it copies them) carrying its metric."""
    sched = spec.scheduler
    if sched.name == "fifo":
        return
    key = next(
        (k for k in ("search.scheduler.metric", "search.metric") if k in lines), "search.metric"
    )
    during = during_training(cfg)
    unreported = [m for m in sched.metric if m not in during]
    check(
        not unreported,
        key,
        f"scheduler {sched.name} acts on reports during training, and arm {arm!r} reports "
        f"{unreported} only at the end (or never)"
        + (
            "; the proxies need base.metrics.every > 0"
            if any(m.startswith("proxy/beta_vae") for m in unreported)
            else ""
        )
        + f"; during training it reports {sorted(k for k in during if '/' in k)}",
    )
    if sched.name in POPULATION:
        interval = sched.settings["perturbation_interval"]
        cadence = cfg.train.checkpoint_every or cfg.train.report_every
        every = cfg.metrics.every if any(m.startswith("proxy/beta") for m in sched.metric) else 1
        check(
            interval % cadence == 0 and interval % every == 0,
            "search.scheduler.perturbation_interval",
            f"{sched.name} copies a trial's checkpoint when it perturbs: {interval} steps must "
            f"be a multiple of the checkpoint cadence ({cadence}: train.checkpoint_every, else "
            f"train.report_every) and of metrics.every ({every}) for its metric",
        )
