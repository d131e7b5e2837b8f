"""A sweep's `search.scheduler` section: its schema (which settings each scheduler reads), its
resolution into a SchedulerSpec (defaults filled in, times in training steps) and the checks
made before Ray starts. Imports neither Ray nor MLflow; raywae.tune.schedulers builds Tune's
objects from a SchedulerSpec."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from raywae import distributions
from raywae.config import Config, check
from raywae.distributions import Distribution, Space
from raywae.logkeys import during_training

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
    "pb2": ("perturbation_interval", "quantile_fraction", "synch", "mutations"),  # no burn-in
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


def resolve(
    doc: SchedulerDoc | str,
    search: tuple[str, tuple[str, ...], tuple[str, ...]],
    grids: dict[str, Iterable[str]],
    steps: int,
) -> SchedulerSpec:
    """search.scheduler -> SchedulerSpec. search: (algorithm, metric, mode) of the search;
    grids: arm -> its grid axes; steps: the longest arm's train.steps. metric / mode default
    to the search's, max_t to steps, grace_period to the first rung at max_t / η². Checks
    that a single-objective scheduler has one metric and a population one runs over a grid
    whose axes it does not also vary. ConfigError keys are relative to `search`."""
    doc = doc if isinstance(doc, SchedulerDoc) else SchedulerDoc(name=doc)
    algorithm, search_metric, search_mode = search
    key = "scheduler"
    metric = _as_tuple(doc.metric) if doc.metric is not None else search_metric
    mode = _as_tuple(doc.mode) if doc.mode is not None else search_mode
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
            algorithm == "grid",
            key,
            f"{doc.name} changes trials' hyperparameters as they train, which an "
            f"{algorithm} search cannot follow: use search.algorithm grid",
        )
        for arm, axes in grids.items():
            both = sorted(set(axes) & set(doc.mutations))
            check(
                not both,
                f"{key}.mutations",
                f"{both} are grid axes of arm {arm!r} too: {doc.name} draws their "
                "initial values from the mutation bounds",
            )
    mutations = distributions.parse(doc.mutations, f"{key}.mutations")
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


def check_reports(sched: SchedulerSpec, cfg: Config, arm: str, lines: Mapping[str, int]) -> None:
    """A scheduler acts on reports during training: its metrics must be reported then by
    `cfg` (arm `arm`'s trial; a proxy needs metrics.every), and a population scheduler's
    perturbations must fall on checkpoints (it copies them) carrying its metric. lines: the
    YAML's key lines (which key the error names)."""
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


def _as_tuple(v: str | tuple[str, ...]) -> tuple[str, ...]:
    return (v,) if isinstance(v, str) else tuple(v)
