"""Search-space YAML -> SweepSpec: fixed settings, model families ("arms"), grid axes, seeds,
Optuna / random distributions, resources. Strict: the document is checked by the same
validator as an experiment config (`config.coerce`), and every error names the file, the key
path and the line. Imports neither Ray nor MLflow.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from raywae import config as cfgmod
from raywae import distributions, scheduling
from raywae.config import ConfigError, check
from raywae.distributions import Distribution, Space
from raywae.families import FAMILIES, unpackable
from raywae.logkeys import reported
from raywae.scheduling import SchedulerDoc, SchedulerName, SchedulerSpec

# A population scheduler's trial config: the planned trial dict under this key (Tune's own grid,
# as PBT takes no searcher), the hyperparameters it varies at the top level.
PLANNED = "planned"
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # one path component: a folder name

Grid = dict[str, tuple[Any, ...]]


# --- the document's schema (checked by config.coerce) ------------------------------------------
@dataclass(frozen=True)
class SearchDoc:
    algorithm: Literal["grid", "optuna", "random"] = "grid"
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    metric: str | tuple[str, ...] = "metric/beta_vae_5"
    mode: str | tuple[str, ...] = "max"
    num_samples: int = 1
    seed: int = 0
    scheduler: SchedulerDoc | SchedulerName = "fifo"

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
        return cfgmod.compose(self.base, flat, self.source)


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


def _spec(doc: SweepDoc, source: str) -> SweepSpec:
    try:
        cfgmod.compose(doc.base, {}, source)
    except ConfigError as err:
        raise ConfigError(f"base.{err.key}", err.message) from None
    search = doc.search
    shared_grid = _grid(doc.grid, "grid")
    shared_space = distributions.parse(doc.space, "space")
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
        space = {**shared_space, **distributions.parse(arm_doc.space, f"arms.{name}.space")}
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
    steps = max(cfgmod.compose(doc.base, arm.settings, source).train.steps for arm in arms.values())
    return SweepSpec(
        scheduler=scheduling.resolve(
            search.scheduler,
            (search.algorithm, _as_tuple(search.metric), _as_tuple(search.mode)),
            {name: arm.grid for name, arm in arms.items()},
            steps,
        ),
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
    """Build the config of every planned grid setting (or, for a search, of each arm with each
    probe value of each distribution: every choice, both ends of an interval) so that a bad
    value fails now, naming where in the file it came from; and check that each of them
    reports the searched metrics (search.metric, also what a grid's summary ranks by)."""
    if spec.algorithm == "grid":  # one seed per setting: the seed changes no other key
        settings = {(t.arm, repr(t.params)): t for t in spec.trials()}
        probes = [t.as_config() for t in settings.values()]
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
        scheduling.check_reports(spec.scheduler, spec.config(trial), trial["arm"], lines)
