"""Build and run a sweep's Tuner (new or resumed) with raywae's callbacks, and summarise its
results per model (`summarize`: best model per arm, failures, where everything is).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from raywae.data.dsprites import DATA_ENV
from raywae.logkeys import DONE, FAILED, split_report
from raywae.scheduling import POPULATION
from raywae.search_space import PLANNED, SweepSpec
from raywae.tune.connect import connect
from raywae.tune.preflight import (
    SweepError,
    check_cluster,
    check_same_data,
    check_tracking_server,
    check_writable,
)
from raywae.tune.search import planned_search, searcher

# A trial's worker process ends with it. Reused, a worker kept what its trials had allocated
# (2-3 GB per 50-model FactorVAE pack: the study's smoke run was OOM-killed at its 15th
# trial); a new one costs an import of torch and raywae (a few seconds) per trial.
REUSE_ACTORS = False
SUMMARY_COLUMNS = ("test/recon", "metric/beta_vae_4", "metric/beta_vae_5")


def run(
    spec: SweepSpec,
    tags: dict[str, str],
    tracking_uri: str | None,
    address: str | None,
    resume: bool,
) -> int:
    """Start (or resume) the Tuner; print a summary; 0 if every trial finished."""
    import ray
    from ray import tune

    from raywae.data import data_dir
    from raywae.resume import ResumeFromNewestCheckpoint
    from raywae.tracking import MLflowCallback, default_tracking_uri, prepare_store
    from raywae.trainable import BARS_ENV, train_trial
    from raywae.tune.schedulers import SchedulerState, build

    # Objectives are reported with a trial's final result only, not with every update.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    if spec.algorithm == "grid":
        # With a searcher Tune keeps 1 trial pending: trials would start one by one, and an
        # autoscaling cluster would see demand for one more trial at a time. A grid is fixed,
        # so let 16 wait for resources at once (Optuna keeps 1: it learns from each result).
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "16")
    # Trials draw bars (through the driver) only on a terminal: in a log file each redraw
    # would be one more line.
    env = {BARS_ENV: "1" if sys.stdout.isatty() else "0"}
    if DATA_ENV in os.environ:  # a data directory chosen for this sweep goes to every trial;
        env[DATA_ENV] = str(data_dir())  # else each node keeps its own (its env, its cache)
    # A cluster that refuses us is found out before any store is touched; a local Ray starts
    # only once the stores are known to be good.
    joining = bool(address or os.environ.get("RAY_ADDRESS"))
    if joining:
        connect(address, env)
    experiment = Path(spec.storage) / spec.name if "://" not in spec.storage else None
    if experiment is not None:
        check_writable(experiment.parent, "storage")
    tracking_uri = tracking_uri or spec.tracking_uri or default_tracking_uri()
    check_tracking_server(tracking_uri)
    if tracking_uri.startswith("sqlite:///"):
        check_writable(Path(tracking_uri.removeprefix("sqlite:///")).parent, "tracking_uri")
    prepare_store(tracking_uri)
    if resume:
        check_same_data(spec.name, tracking_uri, tags)
    if not joining:
        connect(None, env)
    check_cluster(spec, ray.nodes())
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, spec=spec), {"cpu": spec.cpu, "gpu": spec.gpu}
    )
    path = f"{spec.storage.rstrip('/')}/{spec.name}"
    exists = tune.Tuner.can_restore(path)
    if resume and not exists:
        raise SweepError(f"nothing to resume at {path}")
    if exists and not resume:
        raise SweepError(
            f"a sweep already exists at {path}: pass --resume to continue it, or "
            "--storage DIR for a new one"
        )
    if resume:  # the scheduler and callbacks as saved, their states restored by Tune
        if experiment is not None:
            set_reuse_actors(experiment)
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True)
    else:
        space: dict[str, Any] = {}
        if spec.scheduler.name in POPULATION:  # PBT takes no searcher: Tune's own grid
            search, samples = None, 1
            space = {PLANNED: tune.grid_search(spec.planned())}
        elif spec.algorithm == "grid":
            search, samples = planned_search(spec), len(spec.planned())
        else:
            search, samples = searcher(spec, experiment or Path(".")), spec.num_samples
        # mo_asha decides per setting: a grid's seeds of one setting are separate trials
        # unless packed (a pack reports its setting's aggregate itself).
        replicates = len(spec.seeds) if spec.algorithm == "grid" and spec.pack == 1 else 1
        scheduler = build(spec.scheduler, replicates)
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                num_samples=samples,
                search_alg=search,
                scheduler=scheduler,
                max_concurrent_trials=spec.concurrency or None,
                reuse_actors=REUSE_ACTORS,
                trial_dirname_creator=lambda t: f"{t.trial_id}",
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=spec.storage,
                verbose=1,
                callbacks=[
                    MLflowCallback(spec, tracking_uri, tags, scheduler),
                    ResumeFromNewestCheckpoint(),  # when a resumed trial's checkpoint is gone
                    SchedulerState(scheduler),
                ],
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                # PBT continues a trial from another's checkpoint some time after it chose
                # it: with only the newest two kept, the donor had often deleted it by then
                # (Ray: "Could not recover from checkpoint ... does not exist"). Population
                # schedulers keep every checkpoint (train.checkpoint_every sets how many).
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=None if spec.scheduler.name in POPULATION else 2
                ),
            ),
        )
    try:
        results = tuner.fit()
    except RuntimeError as err:  # Tune 2.60 stops the sweep when Ray's memory monitor kills a
        if not isinstance(err.__cause__, ray.exceptions.OutOfMemoryError):  # trial's worker
            raise
        reason = str(err.__cause__).splitlines()[0]
        print(
            f"error: Ray's memory monitor killed a trial's worker ({reason}), and Ray Tune "
            "stops the sweep on that. Finished trials are kept: lower `pack` or the trials "
            f"per node, then resume: python -m raywae.sweep {spec.source} --resume "
            "(with the same --set and --storage)",
            file=sys.stderr,
        )
        return 1
    if spec.scheduler.settings.get("final_eval"):
        from raywae.tune.stopped import evaluate_stopped

        evaluate_stopped(spec, results, tracking_uri)
    return summarize(spec, results, path, tracking_uri)


def set_reuse_actors(experiment: Path) -> None:
    """REUSE_ACTORS in a saved sweep's Tune state: Tune restores its controller's settings
    from its experiment state files (Ray 2.60), so a sweep saved with reused workers would
    go on reusing them after a resume."""
    for state in experiment.glob("experiment_state-*.json"):
        saved = json.loads(state.read_text())
        if saved.get("runner_data", {}).get("_reuse_actors", REUSE_ACTORS) != REUSE_ACTORS:
            saved["runner_data"]["_reuse_actors"] = REUSE_ACTORS
            state.write_text(json.dumps(saved))


def model_results(results: Any) -> list[tuple[str, Any, dict[str, Any]]]:
    """One (name, Tune result, logs) per model: a trial's last result, or each member's of a
    packed trial (name: the trial's folder, plus the member's seed)."""
    out = []
    for r in results:
        models = split_report(r.metrics or {}) or {0: r.metrics or {}}  # {}: an error, no report
        for logs in models.values():
            name = r.path if len(models) == 1 else f"{r.path} seed {logs.get('seed')}"
            out.append((name, r, {**logs, "arm": (r.config or {}).get("arm")}))
    return out


def summarize(spec: SweepSpec, results: Any, path: str, tracking_uri: str) -> int:
    """Best model per arm, failures, and where everything is."""
    import pandas as pd

    models = model_results(results)
    failures = {
        name: str(r.error).strip().splitlines()[-1] if r.error else logs[FAILED]
        for name, r, logs in models
        if r.error is not None or logs.get(FAILED)
    }
    df = pd.DataFrame([{"name": name, **logs} for name, r, logs in models if r.error is None])
    metric, mode = spec.metric[0], spec.mode[0]
    packs = f" ({len(models)} models)" if len(models) != len(results) else ""
    print(f"\n=== {spec.name}: {len(results)} trials{packs}, {len(failures)} failed ===")
    if "arm" in df.columns and metric in df.columns:
        cols = [c for c in dict.fromkeys((metric, *SUMMARY_COLUMNS)) if c in df.columns]
        for name, rows in df.groupby("arm"):
            rows = rows.dropna(subset=[metric])
            if len(rows):
                best = rows.loc[rows[metric].idxmax() if mode == "max" else rows[metric].idxmin()]
                figures = ", ".join(f"{c} {best[c]:.4g}" for c in cols)
                print(f"best {name} ({mode} {metric}): {Path(best['name']).name}: {figures}")
    for name, reason in failures.items():
        print(f"failed: {name}: {reason}")
    stopped = stopped_early(tracking_uri, spec)
    if stopped:
        print(f"stopped early by the {spec.scheduler.name} scheduler: {len(stopped)} trials "
              "(their runs: tag raywae.stopped_early)")  # fmt: skip
    unfinished = [
        r
        for r in results
        if r.error is None and not r.metrics.get(DONE) and r.metrics.get("trial_id") not in stopped
    ]
    print(f"Tune results: {path}")
    print(f"MLflow: experiment {spec.name!r} at {tracking_uri}")
    if tracking_uri.startswith("sqlite:"):
        print(f"  browse: mlflow ui --backend-store-uri {tracking_uri}")
        print("  (MLflow 3 opens on its GenAI view: pick 'Model training' to see the runs)")
    if unfinished:
        print(
            f"interrupted: {len(unfinished)} trials unfinished; continue with "
            f"python -m raywae.sweep {spec.source} --resume --storage {spec.storage}"
        )
        return 130
    return 1 if failures else 0


def stopped_early(tracking_uri: str, spec: SweepSpec) -> set[str]:
    """The trial ids of the sweep's runs a scheduler stopped early (their MLflow tag)."""
    from raywae.tracking import STOPPED_TAG, TRIAL_TAG, sweep_runs

    runs = sweep_runs(tracking_uri, spec, f"tags.`{STOPPED_TAG}` LIKE 'step %'")
    return {r.data.tags[TRIAL_TAG] for r in runs if TRIAL_TAG in r.data.tags}
