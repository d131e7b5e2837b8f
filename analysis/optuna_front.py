"""For Optuna sweeps: the Pareto-optimal trials of the persisted study, matched to their MLflow
runs, and Optuna's own Pareto-front plot (optimisation history for one objective).

    python -m analysis.optuna_front -e NAME [--storage runs] [--target KEY ...]

The study is `<storage>/<NAME>/optuna.db`, study name NAME (what raywae.sweep writes).
Writes optuna_trials.csv (every finished trial; `pareto` marks the front, `run_id` its MLflow
run) and optuna_pareto.png; logs them under `optuna/` of the analysis run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import cli
from analysis.figures import DPI, pyplot, save
from analysis.store import AnalysisError

PLOT_INCHES = (8.0, 6.0)


def load_study(storage: Path, name: str) -> Any:
    """The persisted study of sweep `name` under the Tune storage folder."""
    import optuna

    db = storage / name / "optuna.db"
    if not db.is_file():
        raise AnalysisError(f"no Optuna study at {db} (an Optuna sweep? pass --storage)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def trials_table(study: Any, targets: list[str]) -> pd.DataFrame:
    """Complete trials: number, one column per objective (named by `targets`), the
    searched params, and `pareto` (in study.best_trials: Optuna's non-dominated set)."""
    import optuna

    front = {t.number for t in study.best_trials}
    rows = [
        {
            "number": t.number,
            **dict(zip(targets, t.values)),
            **t.params,
            "pareto": t.number in front,
        }
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    ]
    return pd.DataFrame(rows)


def target_names(study: Any, given: list[str] | None) -> list[str]:
    """Names of the objectives: given, else the study's metric names, else the objectives
    of raywae's shipped multi-objective search (Ray's OptunaSearch does not name them)."""
    n = len(study.directions)
    if given:
        return given
    if study.metric_names and len(study.metric_names) == n:
        return list(study.metric_names)
    default = ["test/recon", "metric/beta_vae_5"] if n == 2 else ["metric/beta_vae_5"]
    return default if len(default) == n else [f"objective {i}" for i in range(n)]


def match_runs(table: pd.DataFrame, runs: pd.DataFrame, targets: list[str]) -> pd.Series:
    """The MLflow run of each trial: the run whose final metrics equal the trial's values
    (the same floats Tune reported to both); None when no run matches."""
    keys = [t for t in targets if t in runs]
    if not keys or table.empty:
        return pd.Series([None] * len(table), index=table.index, dtype=object)
    lookup = {tuple(r[keys]): r["run_id"] for _, r in runs.dropna(subset=keys).iterrows()}
    return table[keys].apply(lambda r: lookup.get(tuple(r)), axis=1)


def plot(study: Any, targets: list[str]) -> Any:
    """Optuna's matplotlib Pareto front (history for one objective) at PLOT_INCHES."""
    import warnings

    pyplot()  # the Agg backend, before Optuna's module imports pyplot
    import matplotlib
    from optuna.visualization import matplotlib as ovm

    # Optuna's plots switch the global style to ggplot: keep that inside this figure.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
        if len(study.directions) > 1:
            ax = ovm.plot_pareto_front(study, target_names=targets)
        else:
            ax = ovm.plot_optimization_history(study, target_name=targets[0])
    fig = ax.figure
    fig.set_size_inches(*PLOT_INCHES)
    fig.set_dpi(DPI)
    fig.subplots_adjust(left=0.12, right=0.95, top=0.9, bottom=0.1)
    return fig


@cli.command
def main(argv: list[str] | None = None) -> int:
    from analysis.collect import load_runs

    p = cli.parser("python -m analysis.optuna_front", __doc__, storage=True)
    p.add_argument("--target", action="append", help="objective names, in the study's order")
    args, target = cli.parse(p, argv, smoke_kind="optuna")
    study = load_study(target.storage, target.experiments[0])
    try:
        runs = load_runs(target)
    except AnalysisError as err:  # the study alone still has its front
        print(f"no MLflow runs to match: {err}")
        runs = None
    targets = target_names(study, args.target)
    table = trials_table(study, targets)
    if runs is not None:
        table["run_id"] = match_runs(table, runs, targets)
    out = target.out
    files = [out / "optuna_trials.csv", out / "optuna_pareto.png"]
    table.to_csv(files[0], index=False)
    save(plot(study, targets), files[1:])
    front = table[table["pareto"]] if len(table) else table
    print(f"{len(table)} complete trials, {len(front)} on the front ({', '.join(targets)}):")
    print(front.to_string(index=False))
    tags = {"raywae.analysis.optuna.front": ",".join(str(n) for n in front.get("number", []))}
    cli.wrote(target, files, "optuna", tags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
