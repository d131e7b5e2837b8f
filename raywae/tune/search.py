"""The searchers of a sweep: a grid's planned trials in order (`planned_search`), or Optuna
(TPE, NSGA-II, random) over the arms' define-by-run space with a persisted study (`searcher`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raywae.logkeys import FAILED
from raywae.search_space import SweepSpec


class DefineByRun:
    """Optuna define-by-run space: the arm first (if several), then that arm's distributions.
    A name means the same distribution in every arm (checked when the YAML is loaded)."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec

    def __call__(self, trial: Any) -> dict[str, Any]:
        arms = list(self.spec.arms)
        arm = trial.suggest_categorical("arm", arms) if len(arms) > 1 else arms[0]
        for key, d in self.spec.arms[arm].space.items():
            if d.kind == "choice":
                trial.suggest_categorical(key, list(d.args))
            elif d.kind == "int":
                trial.suggest_int(key, *d.args)
            else:
                trial.suggest_float(key, *d.args, log=d.kind == "loguniform")
        return {"seed": self.spec.seeds[0]} | ({} if len(arms) > 1 else {"arm": arm})


def planned_search(spec: SweepSpec) -> Any:
    """A Tune searcher that hands out a grid sweep's planned trials in order, each as the flat
    trial dict Optuna's trials have too; its position is saved with the experiment, so a
    resumed sweep neither repeats nor skips a trial."""
    from ray.tune.search import Searcher

    class PlannedSearch(Searcher):
        def __init__(self, trials: list[dict[str, Any]]) -> None:
            super().__init__()
            self.trials, self.next = trials, 0

        def suggest(self, trial_id: str) -> dict[str, Any] | str:
            if self.next >= len(self.trials):
                return Searcher.FINISHED
            self.next += 1
            return dict(self.trials[self.next - 1])

        def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False):
            pass  # nothing to learn: the plan is fixed

        def save(self, checkpoint_path: str) -> None:
            Path(checkpoint_path).write_text(json.dumps({"next": self.next}))

        def restore(self, checkpoint_path: str) -> None:
            self.next = json.loads(Path(checkpoint_path).read_text())["next"]

    return PlannedSearch(spec.planned())


def searcher(spec: SweepSpec, experiment: Path) -> Any:
    """OptunaSearch with a persisted study (optuna.db in the experiment folder)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class FinalOnlyOptunaSearch(OptunaSearch):
        """Objectives arrive with the final result only; skip intermediate reports."""

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if isinstance(self.metric, str) and self.metric in result:
                super().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False):
            """A trial that ended on a deterministic failure is FAIL, not PRUNED."""
            error = error or bool(result and result.get(FAILED))
            super().on_trial_complete(trial_id, None if error else result, error)

    samplers = {
        "tpe": optuna.samplers.TPESampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "random": optuna.samplers.RandomSampler,
    }
    sampler = "random" if spec.algorithm == "random" else spec.sampler
    experiment.mkdir(parents=True, exist_ok=True)
    single = len(spec.metric) == 1
    return FinalOnlyOptunaSearch(
        space=DefineByRun(spec),
        metric=spec.metric[0] if single else list(spec.metric),
        mode=spec.mode[0] if single else list(spec.mode),
        sampler=samplers[sampler](seed=spec.search_seed),
        study_name=spec.name,
        storage=optuna.storages.RDBStorage(f"sqlite:///{experiment / 'optuna.db'}"),
    )
