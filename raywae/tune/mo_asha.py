"""Multi-objective asynchronous successive halving for Tune, decided per setting over seeds.

MOASHA (Schmucker et al. 2021; Syne Tune's ``syne_tune/optimizer/schedulers/multiobjective/
moasha.py``) is ASHA with a multi-objective rung test: when a trial first reaches a rung, its
metric vector joins those already recorded there, all are ranked by non-dominated sorting (ties
inside a front broken by an epsilon-net, i.e. farthest-point order seeded at the best point of
one objective; crowding distance is the NSGA-II alternative), and the trial continues if its
rank is within the top 1/eta. Each trial is judged alone, asynchronously, on one seed.

This scheduler differs in three ways. Decisions are per *setting* (a config without its seed):
a setting's value at a rung is the paper's aggregate over its seed replicates (drop the worse
half by one metric, average the rest). A replicate that reaches a rung before its siblings
trains on until the last live one arrives; then the setting continues or stops as a whole, the
replicates still training included. (Pausing them instead deadlocks under a concurrency limit
below the replicate count: Tune counts a paused trial as running, so its siblings never
start.) Ties within a front are broken by crowding distance, then by the setting's first
arrival, so a decision is deterministic.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from raywae.logkeys import top_half_mean

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

Setting = Hashable


def _freeze(value: Any) -> Hashable:
    """A hashable twin of a config value: lists / tuples -> tuples, dicts -> sorted items."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def default_setting(config: dict) -> Setting:
    """The setting of a trial: its config without "seed", as a sorted tuple of items."""
    return tuple(sorted((k, _freeze(v)) for k, v in config.items() if k != "seed"))


def _as_loss(points: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """(n, m) points -> (n, m) losses, lower is better in every column."""
    sign = np.array([-1.0 if mode == "max" else 1.0 for mode in modes])
    return np.asarray(points, dtype=float) * sign


def aggregate(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """One setting's value from its seed replicates, the paper's aggregation.

    values: (n, m) one row per replicate, one column per metric. Rows are sorted by the last
    "max" metric (the first metric under its own mode when none is "max"), the best
    ceil(n / 2) are kept (ties: earlier rows first) and each column is averaged: (m,).
    """
    key = max((j for j, mode in enumerate(modes) if mode == "max"), default=0)
    return np.array(top_half_mean(np.asarray(values, float).tolist(), key, modes[key] == "max"))


def nondominated_rank(points: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Deb's non-dominated fronts: points (n, m) -> (n,) int, 0 for the Pareto front.

    A point dominates another when it is no worse in every metric (under its mode) and
    strictly better in one; front k+1 is the Pareto front of what fronts 0..k leave.
    """
    loss = _as_loss(points, modes)
    no_worse = (loss[:, None, :] <= loss[None, :, :]).all(axis=-1)
    better = (loss[:, None, :] < loss[None, :, :]).any(axis=-1)
    dominates = no_worse & better  # [i, j]: i dominates j
    ranks = np.full(len(loss), -1, dtype=int)
    front = 0
    while (ranks < 0).any():
        left = ranks < 0
        ranks[left & ~dominates[left].any(axis=0)] = front
        front += 1
    return ranks


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of points (n, m) in one front -> (n,) float.

    Per metric, points are sorted; the two ends get infinity and an inner point adds the gap
    between its neighbours divided by the metric's range (a constant metric adds nothing).
    Symmetric in each metric, so modes do not matter.
    """
    points = np.asarray(points, dtype=float)
    dist = np.zeros(len(points))
    for col in points.T:
        order = np.argsort(col, kind="stable")
        dist[order[[0, -1]]] = np.inf
        span = col[order[-1]] - col[order[0]]
        if len(points) > 2 and span > 0:
            dist[order[1:-1]] += (col[order[2:]] - col[order[:-2]]) / span
    return dist


def rank_order(points: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Indices of points (n, m), best first: by front, then by crowding distance within the
    front (descending), then by index (callers pass points in arrival order)."""
    points = np.asarray(points, dtype=float)
    fronts = nondominated_rank(points, modes)
    crowd = np.zeros(len(points))
    for front in np.unique(fronts):
        members = fronts == front
        crowd[members] = crowding_distance(points[members])
    # lexsort: last key is primary; -inf crowding sorts first as wanted
    return np.lexsort((np.arange(len(points)), -crowd, fronts))


class MultiObjectiveASHA(FIFOScheduler):
    """ASHA over several metrics with per-setting decisions across seed replicates.

    Rungs lie at grace_period * reduction_factor**k below max_t. At a rung, the settings
    recorded there (complete ones: every live replicate arrived) are ranked by rank_order of
    their aggregates; the deciding setting continues if its position is below
    max(1, ceil(n_settings / reduction_factor)).
    """

    _supports_buffered_results = False  # one decision per result, never a batch

    def __init__(
        self,
        *,
        metrics: Sequence[str],
        modes: Sequence[str],
        time_attr: str = "step",
        grace_period: int,
        reduction_factor: float = 3,
        max_t: int,
        replicates: int = 1,
        setting: Callable[[dict], Setting] | None = None,
    ) -> None:
        if len(metrics) != len(modes) or not metrics:
            raise ValueError(f"one mode per metric, got metrics={metrics} modes={modes}")
        if any(mode not in ("min", "max") for mode in modes):
            raise ValueError(f"modes must be 'min' or 'max', got {modes}")
        if not (0 < grace_period <= max_t and reduction_factor > 1 and replicates >= 1):
            raise ValueError(
                "need 0 < grace_period <= max_t, reduction_factor > 1, replicates >= 1"
            )
        super().__init__()
        self._metric = metrics[0]  # Tune reads .metric; the full list lives in self.metrics
        self.metrics, self.modes = list(metrics), list(modes)
        self.time_attr, self.max_t, self.eta = time_attr, max_t, reduction_factor
        self.replicates = replicates
        self.setting = setting or default_setting
        self.rungs: list[float] = []
        rung = grace_period
        while rung < max_t:
            self.rungs.append(rung)
            rung *= reduction_factor
        self._init_state()

    def _init_state(self) -> None:
        self._setting_of: dict[str, Setting] = {}  # trial_id -> setting
        self._arrival: dict[Setting, int] = {}  # setting -> first time recorded at a rung
        # rung index -> setting -> trial_id -> (step, metric vector (m,))
        self._records: list[dict[Setting, dict[str, tuple[float, np.ndarray]]]] = [
            {} for _ in self.rungs
        ]
        self._last_rung: dict[str, int] = {}  # trial_id -> highest rung index recorded
        self._decisions: dict[tuple[int, Setting], tuple[bool, str]] = {}  # promoted, reason
        self._waiting: dict[str, int] = {}  # trial_id -> rung its setting's decision is due at
        self._ended: set[str] = set()  # errored / removed / completed trials
        self.stopped: dict[str, tuple[int, str]] = {}

    # -- state -----------------------------------------------------------------------------

    _STATE = ("_setting_of", "_arrival", "_records", "_last_rung", "_decisions", "_waiting",
              "_ended", "stopped")  # fmt: skip

    def get_state(self) -> dict:
        """Everything the decisions depend on (rungs' records, decisions, stops, arrival)."""
        return pickle.loads(pickle.dumps({k: getattr(self, k) for k in self._STATE}))

    def set_state(self, state: dict) -> None:
        """Take back a get_state() dict (a copy, so the caller's dict stays theirs)."""
        for key, value in pickle.loads(pickle.dumps(state)).items():
            setattr(self, key, value)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        # metrics and modes are fixed at construction; accept only no-ops or the same metric
        return metric is None or metric == self._metric or metric == self.metrics

    def stop_reason(self, trial_id: str) -> tuple[int, str] | None:
        """(step, reason) for a trial this scheduler stopped, else None."""
        return self.stopped.get(trial_id)

    # -- trial events ----------------------------------------------------------------------

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        self._setting_of[trial.trial_id] = self.setting(trial.config)

    def on_trial_error(self, tune_controller: TuneController, trial: Trial) -> None:
        self._leave(tune_controller, trial)

    def on_trial_complete(
        self, tune_controller: TuneController, trial: Trial, result: dict
    ) -> None:
        self._leave(tune_controller, trial)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        self._leave(tune_controller, trial)

    def _leave(self, tune_controller: TuneController, trial: Trial) -> None:
        """A trial ended: siblings waiting at a rung it never reached stop waiting for it."""
        tid = trial.trial_id
        self._ended.add(tid)
        setting = self._setting_of.get(tid)
        for r, by_setting in enumerate(self._records):
            if setting in by_setting and (r, setting) not in self._decisions:
                if self._complete(r, setting):
                    self._decide(tune_controller, r, setting)

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict) -> str:
        tid = trial.trial_id
        self._ended.discard(tid)  # a retried trial is live again
        step = result.get(self.time_attr)
        if step is None or step >= self.max_t or any(m not in result for m in self.metrics):
            return TrialScheduler.CONTINUE
        passed = [r for r, rung in enumerate(self.rungs) if step >= rung]
        if not passed or passed[-1] <= self._last_rung.get(tid, -1):
            return TrialScheduler.CONTINUE
        r, setting = passed[-1], self._setting_of.setdefault(tid, self.setting(trial.config))
        self._last_rung[tid] = r
        self._arrival.setdefault(setting, len(self._arrival))
        values = np.array([float(result[m]) for m in self.metrics])
        self._records[r].setdefault(setting, {})[tid] = (step, values)
        if (r, setting) not in self._decisions:
            if not self._complete(r, setting):  # trains on until its siblings arrive
                self._waiting[tid] = r
                return TrialScheduler.CONTINUE
            self._decide(tune_controller, r, setting, arriving=tid)
        promoted, reason = self._decisions[(r, setting)]
        if promoted:
            return TrialScheduler.CONTINUE
        self.stopped[tid] = (int(step), reason)
        return TrialScheduler.STOP

    def _complete(self, r: int, setting: Setting) -> bool:
        """Have all live replicates of a setting recorded at rung r? A replicate that ended
        without a record there no longer counts; one not yet added still does."""
        recorded = self._records[r].get(setting, {})
        gone = sum(
            1
            for tid, s in self._setting_of.items()
            if s == setting and tid in self._ended and tid not in recorded
        )
        return len(recorded) >= self.replicates - gone

    def _decide(
        self, tune_controller: TuneController, r: int, setting: Setting, arriving: str | None = None
    ) -> None:
        """Rank the complete settings at rung r; promote or stop `setting` and its replicates
        that went on training while they waited for it (the arriving trial gets its answer
        from on_trial_result; a replicate that has already finished is left as it is)."""
        rivals = [s for s in self._records[r] if s == setting or (r, s) in self._decisions]
        rivals.sort(key=self._arrival.__getitem__)
        points = np.stack(
            [aggregate(np.stack([v for _, v in self._records[r][s].values()]), self.modes)
             for s in rivals]
        )  # fmt: skip
        order = rank_order(points, self.modes)
        idx = rivals.index(setting)
        position = int(np.flatnonzero(order == idx)[0])
        front = int(nondominated_rank(points, self.modes)[idx])
        keep = max(1, math.ceil(len(rivals) / self.eta))
        promoted = position < keep
        reason = (
            f"mo_asha: rung {self.rungs[r]:g}: setting ranked {position + 1} of {len(rivals)}"
            f" (front {front + 1}), keeps top {keep}"
        )
        # record first: stop_trial below calls back into on_trial_remove
        self._decisions[(r, setting)] = (promoted, reason)
        waiting = [t for t, at in self._waiting.items() if at == r and t != arriving]
        waiting = [t for t in waiting if self._setting_of[t] == setting]
        for tid in waiting:
            del self._waiting[tid]
        if promoted:
            return
        live = (Trial.PENDING, Trial.RUNNING, Trial.PAUSED)
        trials = {t.trial_id: t for t in tune_controller.get_trials()}
        for tid in waiting:
            if tid in trials and trials[tid].status in live and tid not in self._ended:
                self.stopped[tid] = (int(self._records[r][setting][tid][0]), reason)
                tune_controller.stop_trial(trials[tid])

    def debug_string(self) -> str:
        per_rung = ", ".join(
            f"{rung:g}: {len(self._records[r])} settings"
            f" ({sum(p for (i, _), (p, _) in self._decisions.items() if i == r)} promoted)"
            for r, rung in enumerate(self.rungs)
        )
        return f"MultiObjectiveASHA: {len(self.stopped)} stopped; rungs {per_rung or 'none'}"
