"""A sweep's trial scheduler from its SchedulerSpec: Tune's FIFO, ASHA, HyperBand, median
stopping, PBT and PB2, or raywae's mo_asha; each keeps why it stopped a trial (`stop_reason`,
tagged in MLflow), and `SchedulerState` carries its state across a resumed sweep."""

from __future__ import annotations

import io
import pickle
from collections import defaultdict
from typing import Any

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
    TrialScheduler,
)

from raywae.distributions import Distribution
from raywae.logkeys import DONE, STEP
from raywae.scheduling import SchedulerSpec

STOP = TrialScheduler.STOP


class _Watched:
    """A Tune controller as a scheduler sees it, with every stop_trial call recorded."""

    def __init__(self, controller: Any, scheduler: StopReasons) -> None:
        self._controller, self._scheduler = controller, scheduler

    def stop_trial(self, trial: Trial) -> None:
        self._scheduler.record_stop(trial, (trial.last_result or {}).get(STEP, 0))
        self._controller.stop_trial(trial)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)


class StopReasons:
    """Mixin over a Tune scheduler: every trial it stops before the trial's end, with the step
    and why (`stopped`, `stop_reason`), whether it answers STOP to the trial's result or
    stops the trial through the controller (HyperBand ends a bracket's losers that way)."""

    why = "stopped by the scheduler"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopped: dict[str, tuple[int, str]] = getattr(self, "stopped", {})

    def record_stop(self, trial: Trial, step: int) -> None:
        self.stopped.setdefault(trial.trial_id, (int(step), f"{self.why} at step {step}"))

    def stop_reason(self, trial_id: str) -> tuple[int, str] | None:
        """(step, reason) of a trial this scheduler stopped early, else None."""
        return self.stopped.get(trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        decision = super().on_trial_result(_Watched(tune_controller, self), trial, result)
        if decision == STOP and not result.get(DONE):
            self.record_stop(trial, result.get(STEP, 0))
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        super().on_trial_complete(_Watched(tune_controller, self), trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        super().on_trial_error(_Watched(tune_controller, self), trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        super().on_trial_remove(_Watched(tune_controller, self), trial)


class Fifo(StopReasons, FIFOScheduler):
    why = "fifo"


class Asha(StopReasons, AsyncHyperBandScheduler):
    why = "asha: below its rung's cutoff (the top 1/reduction_factor continue)"


class HyperBand(StopReasons, HyperBandScheduler):
    why = "hyperband: not among its bracket's best at the end of a round"


class Median(StopReasons, MedianStoppingRule):
    why = "median stopping rule: its best result below the median of the others' running means"


def _domain(d: Distribution) -> Any:
    """A YAML distribution as PBT's mutation space."""
    if d.kind == "choice":
        return list(d.args)
    if d.kind == "int":
        return tune.randint(d.args[0], d.args[1] + 1)
    return (tune.loguniform if d.kind == "loguniform" else tune.uniform)(*d.args)


class Clip:
    """PBT's explore step kept inside the YAML's bounds: a perturbed value (×1.2, ×0.8)
    past an interval's end is set to that end."""

    def __init__(self, mutations: dict[str, Distribution]) -> None:
        self.bounds = {k: d.args for k, d in mutations.items() if d.kind != "choice"}

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for key, (low, high) in self.bounds.items():
            if key in config:
                config[key] = type(config[key])(min(max(config[key], low), high))
        return config


def build(spec: SchedulerSpec, replicates: int = 1) -> TrialScheduler:
    """The Tune scheduler of `spec` (time in training steps: the reports' `step`);
    replicates: trials per setting (mo_asha decides per setting)."""
    s, metric, mode = spec.settings, spec.metric, spec.mode
    one = {"time_attr": STEP, "metric": metric[0], "mode": mode[0]} if metric else {}
    if spec.name == "fifo":
        return Fifo()
    if spec.name == "asha":
        return Asha(**one, max_t=s["max_t"], grace_period=s["grace_period"],
                    reduction_factor=s["reduction_factor"], brackets=s["brackets"])  # fmt: skip
    if spec.name == "hyperband":
        return HyperBand(**one, max_t=s["max_t"], reduction_factor=s["reduction_factor"])
    if spec.name == "median":
        return Median(**one, grace_period=s["grace_period"],
                      min_samples_required=s["min_samples_required"])  # fmt: skip
    if spec.name == "mo_asha":
        from raywae.tune.mo_asha import MultiObjectiveASHA

        return MultiObjectiveASHA(metrics=metric, modes=mode, time_attr=STEP, max_t=s["max_t"],
                                  grace_period=s["grace_period"],
                                  reduction_factor=s["reduction_factor"],
                                  replicates=replicates)  # fmt: skip
    common = {
        **one,
        "perturbation_interval": s["perturbation_interval"],
        "quantile_fraction": s["quantile_fraction"],
        "synch": s["synch"],
    }
    if spec.name == "pb2":  # Tune's PB2 takes no burn-in period
        from ray.tune.schedulers.pb2 import PB2

        bounds = {k: list(d.args) for k, d in spec.mutations.items()}
        return PB2(**common, hyperparam_bounds=bounds)
    return PopulationBasedTraining(
        **common,
        burn_in_period=s["burn_in_period"],
        resample_probability=s["resample_probability"],
        hyperparam_mutations={k: _domain(d) for k, d in spec.mutations.items()},
        custom_explore_fn=Clip(spec.mutations),
    )


def stop_reason(scheduler: TrialScheduler, trial_id: str) -> tuple[int, str] | None:
    """Why `scheduler` stopped a trial early, or None (it did not, or it keeps no reasons)."""
    reason = getattr(scheduler, "stop_reason", None)
    return reason(trial_id) if reason is not None else None


class _TrialsById(pickle.Pickler):
    def persistent_id(self, obj: Any) -> str | None:
        return obj.trial_id if isinstance(obj, Trial) else None


class _TrialsFrom(pickle.Unpickler):
    def __init__(self, data: bytes, trials: dict[str, Trial]) -> None:
        super().__init__(io.BytesIO(data))
        self.trials = trials

    def persistent_load(self, pid: str) -> Any:
        return self.trials.get(pid, f"gone:{pid}")  # a trial Tune no longer knows


class SchedulerState(tune.Callback):
    """Saves the scheduler's state with Tune's experiment state and restores it into a resumed
    sweep's scheduler (Tune 2.60 saves neither; a resumed ASHA would forget its rungs, a PBT
    its population's scores). Trial objects in the state are saved by id and mapped onto the
    resumed sweep's trials at its first step, after Tune has re-added them."""

    def __init__(self, scheduler: TrialScheduler) -> None:
        self.scheduler = scheduler
        self._pending: bytes | None = None

    def get_state(self) -> dict | None:
        """The scheduler's attributes but its functions (HyperBand's metric lambdas: made by
        its constructor, as in the resumed sweep's fresh one), defaultdicts as dicts (median
        stopping's have lambda factories; restored into the fresh one's, they keep theirs)."""
        state = {
            k: dict(v) if isinstance(v, defaultdict) else v
            for k, v in vars(self.scheduler).items()
            if not callable(v)
        }
        out = io.BytesIO()
        _TrialsById(out).dump(state)
        return {"scheduler": out.getvalue()}

    def set_state(self, state: dict) -> None:
        self._pending = state["scheduler"]

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._pending is None:
            return
        saved = _TrialsFrom(self._pending, {t.trial_id: t for t in trials}).load()
        self._pending = None
        for key, value in saved.items():  # entries Tune re-added since stay, saved ones win
            now = self.scheduler.__dict__.get(key)
            if isinstance(value, dict) and isinstance(now, dict):
                now.update(value)  # in place: a defaultdict keeps its factory
            else:
                self.scheduler.__dict__[key] = value
