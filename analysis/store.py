"""MLflow I/O shared by the analysis CLIs: which store and experiments to read, where to
write, and the one "analysis" run per experiment that every script logs its outputs to.

Only the MLflow client API is used: `mlflow.set_experiment` would redirect a running sweep's
logger (see ARCHITECTURE.md), and analysis scripts may run beside a live sweep.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.smoke import SMOKE_DIR, ensure

ANALYSIS_TAG = "raywae.analysis"  # marks the analysis run; collect skips it
ANALYSIS_RUN_NAME = "analysis"


class AnalysisError(RuntimeError):
    """Something the user can fix (a missing store, experiment, study or checkpoint): every
    CLI prints it as `error: <message>` and exits with status 2 (analysis.cli.command)."""


def default_tracking_uri() -> str:
    """raywae.tracking.default_tracking_uri without importing Ray, and without creating
    ./mlruns: a script that only reads must not leave an empty store behind."""
    return f"sqlite:///{Path.cwd().resolve() / 'mlruns' / 'mlflow.db'}"


def add_common_args(p: argparse.ArgumentParser, storage: bool = False) -> None:
    """--tracking-uri, --experiment, --out, --no-log, --smoke (and --storage if asked)."""
    p.add_argument(
        "-e",
        "--experiment",
        action="append",
        default=[],
        metavar="NAME",
        help="MLflow experiment = sweep name, repeatable; the analysis run goes to the first "
        "(default: the store's only experiment, else `paper`)",
    )
    p.add_argument("--tracking-uri", help="MLflow store (default: sqlite:///$PWD/mlruns/mlflow.db)")
    p.add_argument(
        "--out", type=Path, help="output folder (default: mlruns/analysis/<first experiment>)"
    )
    if storage:
        p.add_argument(
            "--storage",
            type=Path,
            default=Path("runs"),
            help="Tune storage folder of the sweep (default: ./runs)",
        )
    p.add_argument("--no-log", action="store_true", help="write files only; no analysis run")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="analyse a tiny sweep (run once, about 2 minutes on 2 cores, then reused) "
        "in --smoke-dir instead of the given store",
    )
    p.add_argument("--smoke-dir", type=Path, default=SMOKE_DIR, help=f"(default: {SMOKE_DIR})")


@dataclass(frozen=True)
class Target:
    """What a CLI reads and where it writes."""

    tracking_uri: str
    experiments: tuple[str, ...]
    out: Path
    storage: Path  # the Tune storage folder (checkpoints, optuna.db)
    log: bool


def resolve(args: argparse.Namespace, smoke_kind: str = "grid") -> Target:
    """The CLI's Target; --smoke runs (or reuses) the smoke sweep of `smoke_kind` first."""
    storage = Path(getattr(args, "storage", None) or "runs")
    if args.smoke:
        smoke = ensure(args.smoke_dir, smoke_kind)
        uri, names, storage = smoke.tracking_uri, (smoke.name,), smoke.storage
        out = args.out or args.smoke_dir / "analysis" / smoke.name
    else:
        uri = args.tracking_uri or default_tracking_uri()
        names = tuple(args.experiment) or (default_experiment(client(uri)),)
        out = args.out or Path("mlruns") / "analysis" / names[0]
    out.mkdir(parents=True, exist_ok=True)
    return Target(uri, names, out.resolve(), storage.resolve(), not args.no_log)


def client(tracking_uri: str) -> Any:
    """An MlflowClient; a missing sqlite file is an error (not a new, empty store)."""
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise AnalysisError(f"no MLflow store at {db} (pass --tracking-uri)")
    return MlflowClient(tracking_uri)


def experiment_ids(mlflow_client: Any, names: tuple[str, ...]) -> dict[str, str]:
    """name -> experiment id; an unknown name is an error listing the known ones."""
    out = {}
    for name in names:
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            known = sorted(e.name for e in mlflow_client.search_experiments())
            raise AnalysisError(f"no experiment {name!r} in the store; it has {known}")
        out[name] = found.experiment_id
    return out


def default_experiment(mlflow_client: Any) -> str:
    """The store's only sweep, else `paper` (the full reproduction) if there; else an error
    listing the experiments (merging unrelated sweeps silently would mislead)."""
    names = sorted(e.name for e in mlflow_client.search_experiments() if e.name != "Default")
    if len(names) == 1 or "paper" in names:
        return names[0] if len(names) == 1 else "paper"
    raise AnalysisError(f"name the sweep with --experiment NAME; the store has {names}")


def analysis_run(mlflow_client: Any, experiment_id: str) -> str:
    """The experiment's analysis run (found by tag, else created): every script of this
    package logs into the same run, each under its own artifact folder."""
    found = mlflow_client.search_runs(
        [experiment_id], f"tags.`{ANALYSIS_TAG}` = 'true'", max_results=1
    )
    if found:
        return found[0].info.run_id
    tags = {ANALYSIS_TAG: "true", "mlflow.runName": ANALYSIS_RUN_NAME}
    return mlflow_client.create_run(experiment_id, tags=tags).info.run_id


def log_outputs(
    target: Target,
    files: list[Path],
    folder: str,
    tags: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
) -> str | None:
    """Log `files` under artifact folder `folder` of the first experiment's analysis run,
    with tags (overwritable, unlike params: scripts are re-run) and step-0 metrics.
    Returns the run id (None with --no-log)."""
    if not target.log:
        return None
    import math

    mlflow_client = client(target.tracking_uri)
    eid = experiment_ids(mlflow_client, target.experiments[:1])[target.experiments[0]]
    run_id = analysis_run(mlflow_client, eid)
    for path in files:
        mlflow_client.log_artifact(run_id, str(path), folder)
    all_tags = {f"{ANALYSIS_TAG}.{folder}.experiments": ",".join(target.experiments)}
    for key, value in {**all_tags, **(tags or {})}.items():
        mlflow_client.set_tag(run_id, key, str(value)[:5000])
    for key, value in (metrics or {}).items():
        if math.isfinite(value):
            mlflow_client.log_metric(run_id, key, float(value), step=0)
    mlflow_client.set_terminated(run_id, "FINISHED")
    print(f"logged {len(files)} files to run {run_id} ({ANALYSIS_RUN_NAME}) / {folder}/")
    return run_id
