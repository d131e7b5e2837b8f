"""Search-space YAML -> SweepSpec: fixed settings, model families ("arms"), grid axes, seeds,
Optuna / random distributions, resources. Strict: every error names the file, the key path
and, where the YAML has it, the line. Imports neither Ray nor MLflow.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raywae import config as cfgmod

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
ALGORITHMS = ("grid", "optuna", "random")
SAMPLERS = ("tpe", "nsga2", "random")
TOP_KEYS = {
    "name": str,
    "description": str,
    "base": dict,
    "arms": dict,
    "grid": dict,
    "space": dict,
    "seeds": (int, list),
    "search": dict,
    "resources": dict,
    "concurrency": int,
    "max_failures": int,
    "storage": str,
    "tracking_uri": str,
}
ARM_KEYS = {"family": str, "set": dict, "grid": dict, "space": dict}
# Model families (PROTOCOL §3-§4, §9): the settings an arm of that family starts from.
FAMILIES: dict[str, dict[str, Any]] = {
    "beta_vae": {
        "objective.name": "beta_vae",
        "model.posterior": "gaussian",
        "model.prior": "gaussian",
    },
    "wae_gaussian": {
        "objective.name": "wae_mmd",
        "model.posterior": "gaussian",
        "model.prior": "gaussian",
    },
    "wae_box": {"objective.name": "wae_mmd", "model.posterior": "box", "model.prior": "uniform"},
    "wae_gan": {
        "objective.name": "wae_gan",
        "model.posterior": "gaussian",
        "model.prior": "gaussian",
    },
    "wwae": {"objective.name": "wwae", "model.posterior": "gaussian", "model.prior": "gaussian"},
}
SEARCH_KEYS = {
    "algorithm": str,
    "sampler": str,
    "metric": (str, list),
    "mode": (str, list),
    "num_samples": int,
    "seed": int,
}


class SpecError(ValueError):
    """A bad search space; the message starts with `file:line: key.path:`."""

    def __init__(self, source: str, key: str, message: str, line: int | None = None) -> None:
        where = f"{source}:{line}" if line else source
        self.key = key
        super().__init__(f"{where}: {key or '<root>'}: {message}")


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
    grid: dict[str, tuple[Any, ...]]
    space: dict[str, Distribution]


@dataclass(frozen=True)
class Trial:
    """One planned trial: family, dotted overrides (grid values), seed."""

    arm: str
    params: dict[str, Any]
    seed: int

    def as_config(self) -> dict[str, Any]:
        """The flat dict a Tune trial receives (also what OptunaSearch produces)."""
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
    description: str = ""
    lines: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def trials(self) -> list[Trial]:
        """The planned trials of a grid sweep: per arm, grid product x seeds (arm order)."""
        out = []
        for arm in self.arms.values():
            keys = list(arm.grid)
            for values in itertools.product(*(arm.grid[k] for k in keys)):
                out.extend(Trial(arm.name, dict(zip(keys, values)), s) for s in self.seeds)
        return out

    def config(self, trial: Mapping[str, Any]) -> cfgmod.Config:
        """The full experiment config of a Tune trial dict (see Trial.as_config)."""
        trial = unwrap(trial)
        arm = self.arms[trial.pop("arm")]
        flat = {**arm.settings, **trial}
        return cfgmod.override(cfgmod.from_dict(self.base, self.source), flat, self.source)


def unwrap(config: Mapping[str, Any]) -> dict[str, Any]:
    """A Tune trial's config as Trial.as_config: grid sweeps nest it under "trial"."""
    return dict(config.get("trial", config))


# --- loading -----------------------------------------------------------------------------
def _line_map(node: yaml.Node, path: str = "", out: dict[str, int] | None = None) -> dict:
    """Dotted key path -> 1-based line of the key in the YAML text."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = f"{path}.{key.value}" if path else str(key.value)
            out[sub] = key.start_mark.line + 1
            _line_map(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            out[f"{path}[{i}]"] = value.start_mark.line + 1
            _line_map(value, f"{path}[{i}]", out)
    return out


class _Reader:
    """Checks one YAML document; every error carries the file and line."""

    def __init__(self, source: str, lines: dict[str, int]) -> None:
        self.source, self.lines = source, lines

    def error(self, key: str, message: str) -> SpecError:
        probe = key
        while probe and probe not in self.lines:  # fall back to the nearest enclosing key
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        return SpecError(self.source, key, message, self.lines.get(probe))

    def mapping(self, d: Any, key: str, schema: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(d, Mapping):
            raise self.error(key, f"expected a mapping, got {type(d).__name__}")
        for k, v in d.items():
            sub = f"{key}.{k}" if key else str(k)
            if k not in schema:
                raise self.error(sub, f"unknown key; allowed: {sorted(schema)}")
            want = schema[k]
            if isinstance(v, bool) or not isinstance(v, want):
                if not (want is float and isinstance(v, int) and not isinstance(v, bool)):
                    raise self.error(sub, f"expected {_names(want)}, got {type(v).__name__} {v!r}")
        return dict(d)

    def number(self, v: Any, key: str, low: float = -math.inf, high: float = math.inf) -> float:
        if isinstance(v, str):
            try:
                v = float(v)  # YAML 1.1 reads 1e-4 as a string
            except ValueError:
                raise self.error(key, f"expected a number, got string {v!r}") from None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self.error(key, f"expected a finite number, got {v!r}")
        if not low <= v <= high:
            raise self.error(key, f"must be in [{low}, {high}], got {v}")
        return v

    def grid(self, d: Any, key: str) -> dict[str, tuple[Any, ...]]:
        d = self.mapping(d, key, dict.fromkeys(d if isinstance(d, Mapping) else (), list))
        for k, values in d.items():
            if not values:
                raise self.error(f"{key}.{k}", "empty grid axis: give at least one value")
        return {k: tuple(v) for k, v in d.items()}

    def space(self, d: Any, key: str) -> dict[str, Distribution]:
        d = self.mapping(d, key, dict.fromkeys(d if isinstance(d, Mapping) else (), dict))
        out = {}
        for k, spec in d.items():
            sub = f"{key}.{k}"
            if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
                raise self.error(
                    sub,
                    f"a distribution is one of {list(DISTRIBUTIONS)}: "
                    f"e.g. {{loguniform: [1, 100]}}; got {spec!r}",
                )
            kind, args = next(iter(spec.items()))
            if not isinstance(args, list) or not args:
                raise self.error(f"{sub}.{kind}", f"expected a non-empty list, got {args!r}")
            if kind != "choice":
                if len(args) != 2:
                    raise self.error(f"{sub}.{kind}", f"expected [low, high], got {args!r}")
                low, high = (self.number(a, f"{sub}.{kind}") for a in args)
                if not low < high or (kind == "loguniform" and low <= 0):
                    raise self.error(
                        f"{sub}.{kind}",
                        f"need {'0 < ' * (kind == 'loguniform')}low < high, got [{low}, {high}]",
                    )
                args = [int(low), int(high)] if kind == "int" else [low, high]
            out[k] = Distribution(kind, tuple(args))
        return out


def _names(t: Any) -> str:
    return " or ".join(x.__name__ for x in (t if isinstance(t, tuple) else (t,)))


def load(path: str | Path, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read and check a search-space YAML. overrides: dotted keys over the file (the CLI's
    --set), e.g. {"base.train.steps": 200, "search.num_samples": 3}."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), "", "no such search-space file")
    text = path.read_text()
    try:
        node = yaml.compose(text)
        d = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(str(path), "", f"not valid YAML: {err}") from None
    lines = _line_map(node) if node is not None else {}
    r = _Reader(str(path), lines)
    d = r.mapping(d if d is not None else {}, "", TOP_KEYS)
    for key, value in (overrides or {}).items():
        _set(d, key, value, r)
    return _spec(d, r)


def _set(d: dict[str, Any], key: str, value: Any, r: _Reader) -> None:
    """--set key.path=value on the raw document (nested mappings are created)."""
    *parents, last = key.split(".")
    node = d
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise r.error(".".join(parents[: i + 1]), f"--set {key}: not a mapping")
    node[last] = value


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings -> dotted keys ({"model": {"prior": "uniform"}} -> model.prior)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, f"{key}.") if isinstance(v, Mapping) else {key: v})
    return out


def _spec(d: dict[str, Any], r: _Reader) -> SweepSpec:
    if "name" not in d:
        raise r.error("name", "missing: every sweep needs a name (its MLflow experiment)")
    base = d.get("base", {})
    if not isinstance(base, dict):
        raise r.error("base", "expected a mapping")
    try:
        cfgmod.from_dict(base, r.source)
    except cfgmod.ConfigError as err:
        raise r.error(f"base.{err.key}", err.message) from None

    search = r.mapping(d.get("search", {}), "search", SEARCH_KEYS)
    algorithm = search.get("algorithm", "grid")
    if algorithm not in ALGORITHMS:
        raise r.error("search.algorithm", f"must be one of {list(ALGORITHMS)}, got {algorithm!r}")
    sampler = search.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise r.error("search.sampler", f"must be one of {list(SAMPLERS)}, got {sampler!r}")
    metric = _as_tuple(search.get("metric", "metric/beta_vae_5"))
    mode = _as_tuple(search.get("mode", "max"))
    if len(metric) != len(mode) or any(m not in ("min", "max") for m in mode):
        raise r.error("search.mode", f"one of min/max per metric {list(metric)}, got {list(mode)}")

    arms_d = d.get("arms") or {"default": {}}
    shared_grid = r.grid(d.get("grid", {}), "grid")
    shared_space = r.space(d.get("space", {}), "space")
    arms = {}
    for name, arm_d in arms_d.items():
        arm_d = r.mapping(arm_d or {}, f"arms.{name}", ARM_KEYS)
        family = arm_d.get("family", name if name in FAMILIES else None)
        if family is not None and family not in FAMILIES:
            raise r.error(
                f"arms.{name}.family",
                f"unknown family {family!r}; "
                f"known: {sorted(FAMILIES)} (or leave it out and `set:` everything)",
            )
        settings = {**FAMILIES.get(family, {}), **_flat(arm_d.get("set", {}))}
        grid = {**shared_grid, **r.grid(arm_d.get("grid", {}), f"arms.{name}.grid")}
        space = {**shared_space, **r.space(arm_d.get("space", {}), f"arms.{name}.space")}
        arms[name] = Arm(name, settings, grid, space)
    if algorithm == "grid" and any(a.space for a in arms.values()):
        raise r.error("space", "distributions need search.algorithm optuna or random")

    seeds_v = d.get("seeds", 1)
    seeds = tuple(range(seeds_v)) if isinstance(seeds_v, int) else tuple(seeds_v)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise r.error("seeds", f"a positive count or a list of ints, got {seeds_v!r}")
    res = r.mapping(d.get("resources", {}), "resources", {"cpu": float, "gpu": float})
    cpu = r.number(res.get("cpu", 1), "resources.cpu", 0, math.inf)
    gpu = r.number(res.get("gpu", 0), "resources.gpu", 0, math.inf)
    if gpu > 1:
        raise r.error("resources.gpu", f"more than one GPU per trial is not supported, got {gpu}")
    for key, value, least in (
        ("concurrency", d.get("concurrency", 0), 0),
        ("max_failures", d.get("max_failures", 1), 0),
        ("search.num_samples", search.get("num_samples", 1), 1),
    ):
        if value < least:
            raise r.error(key, f"must be >= {least}, got {value}")
    spec = SweepSpec(
        source=r.source,
        name=d["name"],
        base=base,
        arms=arms,
        seeds=seeds,
        algorithm=algorithm,
        sampler=sampler,
        metric=metric,
        mode=mode,
        num_samples=search.get("num_samples", 1),
        search_seed=search.get("seed", 0),
        cpu=cpu,
        gpu=gpu,
        concurrency=d.get("concurrency", 0),
        max_failures=d.get("max_failures", 1),
        storage=d.get("storage", "runs"),
        tracking_uri=d.get("tracking_uri"),
        description=d.get("description", ""),
        lines=r.lines,
    )
    if algorithm != "grid":
        _check_same_distributions(arms, r)
    _check_configs(spec, r)
    return spec


def _as_tuple(v: str | list[str]) -> tuple[str, ...]:
    return (v,) if isinstance(v, str) else tuple(v)


def _check_same_distributions(arms: dict[str, Arm], r: _Reader) -> None:
    """Optuna learns one distribution per parameter name, whichever arm suggests it."""
    seen: dict[str, tuple[str, Distribution]] = {}
    for arm in arms.values():
        for key, d in arm.space.items():
            first, other = seen.setdefault(key, (arm.name, d))
            if other != d:
                raise r.error(
                    f"arms.{arm.name}.space.{key}",
                    f"differs from arms.{first}.space."
                    f"{key}; a searched name needs one distribution in every arm",
                )


def _check_configs(spec: SweepSpec, r: _Reader) -> None:
    """Build the config of every planned grid trial (or, for a search, each arm at the ends
    of its distributions) so that a bad value fails now, naming where it came from."""
    probes: list[tuple[str, dict[str, Any]]] = []
    if spec.algorithm == "grid":
        probes = [(t.arm, t.as_config()) for t in spec.trials()]
    else:
        for arm in spec.arms.values():
            ends = [
                {k: d.args[0] for k, d in arm.space.items()},
                {k: d.args[-1] for k, d in arm.space.items()},
            ]
            probes += [(arm.name, {"arm": arm.name, "seed": spec.seeds[0], **e}) for e in ends]
    for arm, trial in probes:
        try:
            spec.config(trial)
        except cfgmod.ConfigError as err:
            where = [
                f"arms.{arm}.grid.{err.key}",
                f"grid.{err.key}",
                f"arms.{arm}.space.{err.key}",
                f"space.{err.key}",
                f"arms.{arm}.set.{err.key}",
                f"arms.{arm}.family",
                f"base.{err.key}",
            ]
            key = next((w for w in where if w in r.lines), f"arms.{arm}")
            raise r.error(key, f"{err.key}: {err.message}") from None
