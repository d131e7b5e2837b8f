"""MLflow: one run per model (a Tune trial, or each member of a packed trial), logged from
the driver by a Tune callback.

Params are the trial's flattened config; metrics keep their step history; tags say which
sweep, code and data produced the run; artifacts are the trial's images and final metrics.
Runs are keyed by Tune's trial id, so a resumed sweep continues its runs instead of
duplicating them. Tune saves its own state every ~10 s: a run whose trial started after the
last save of a driver that was then killed is an orphan (the resumed sweep runs a new trial
in its place); the resumed sweep deletes it (soft: `mlflow runs restore` brings it back).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

import raywae
from raywae.checkpoint import CONFIG_FILE, artifact_folder
from raywae.config import flatten, to_dict
from raywae.logkeys import DONE, EXPLOITED, FAILED, LOGGED, RESTORED_STEP, split_report
from raywae.search_space import SweepSpec
from raywae.tune.schedulers import stop_reason

TRIAL_TAG = "raywae.trial_id"
MEMBER_TAG = "raywae.pack_member"  # a packed trial's run: the member's index in its pack
PACK_TAG = "raywae.pack_size"
SWEEP_TAG = "raywae.tune_path"  # the Tune experiment a run belongs to (storage/name)
STOPPED_TAG = "raywae.stopped_early"  # "step N: the scheduler's reason"
EXPLOITS_TAG = "raywae.exploits"  # PBT: "step N from <trial id>; ..." (each exploit)
ORPHANED = (
    "its trial started after Tune last saved the sweep, and the driver was killed: "
    "the resumed sweep ran a new trial in its place"
)


def default_tracking_uri(root: Path | None = None) -> str:
    """An embedded sqlite store under ./mlruns (absolute, so trial folders don't matter);
    the sweep creates the folder when it checks that it can write there."""
    return f"sqlite:///{(root or Path.cwd()).resolve() / 'mlruns' / 'mlflow.db'}"


def prepare_store(tracking_uri: str) -> None:
    """Create or upgrade a sqlite store under a file lock, before any logging: two drivers
    starting at once on a new store would both run MLflow's schema migrations, and one fails
    ("Online migration expected to match one row")."""
    if tracking_uri.startswith("sqlite:///"):
        with FileLock(f"{tracking_uri.removeprefix('sqlite:///')}.lock"):
            MlflowClient(tracking_uri).search_experiments(max_results=1)


def logged_values(tracking_uri: str, experiment: str, tag: str) -> set[str]:
    """The values of `tag` over the runs of `experiment` (empty if it does not exist)."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return set()
    runs = client.search_runs([found.experiment_id], max_results=50_000)
    return {r.data.tags[tag] for r in runs if tag in r.data.tags}


def sweep_runs(tracking_uri: str, spec: SweepSpec, query: str = "") -> list[Any]:
    """The MLflow runs of `spec`'s sweep (its experiment, its Tune path) matching `query`."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(spec.name)
    if found is None:
        return []
    where = f"tags.`{SWEEP_TAG}` = '{spec.storage.rstrip('/')}/{spec.name}'"
    where += f" and {query}" if query else ""
    return client.search_runs([found.experiment_id], where, max_results=50_000)


def artifact_root(tracking_uri: str) -> str | None:
    """Artifacts of a sqlite store go in a folder beside the database; a server decides."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return None


def experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """Get or create the experiment (race-safe between two drivers)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(tracking_uri))
    except mlflow.exceptions.MlflowException:
        return client.get_experiment_by_name(name).experiment_id


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(raywae.__file__).parent,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_name(trial: dict[str, Any]) -> str:
    """A readable run name: arm, searched / grid values, seed (e.g. `beta_vae beta=8 seed=1`)."""
    values = [
        f"{k.rsplit('.', 1)[-1]}={v:.4g}" if isinstance(v, float) else f"{k.rsplit('.', 1)[-1]}={v}"
        for k, v in trial.items()
        if k not in ("arm", "seed")
    ]
    return " ".join([trial["arm"], *values, f"seed={trial['seed']}"])


class MLflowCallback(tune.Callback):
    """Driver-side logger: trials never touch the store, so sqlite is safe. scheduler: the
    sweep's (its stop reasons tag the runs it stopped early)."""

    def __init__(
        self, spec: SweepSpec, tracking_uri: str, tags: dict[str, str], scheduler: Any = None
    ) -> None:
        self.spec, self.tracking_uri, self.scheduler = spec, tracking_uri, scheduler
        self.tags = {
            "raywae.sweep": spec.source,
            "raywae.search": spec.algorithm,
            "raywae.version": raywae.__version__,
            SWEEP_TAG: f"{spec.storage.rstrip('/')}/{spec.name}",
            **tags,
        }
        if commit := git_commit():
            self.tags["raywae.git_commit"] = commit
        self._reset()

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}
        self._last_step: dict[str, int] = {}
        self._closed: set[str] = set()  # run keys whose run is FINISHED or FAILED
        self._reconciled = False

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
            self._experiment = experiment_id(self._client, self.spec.name, self.tracking_uri)
        return self._client

    def members(self, trial: Any) -> dict[str, dict[str, Any]]:
        """The trial's runs, key -> its model's trial dict: a trial of one model is keyed by
        its id; a packed trial has one run per model, `<trial id>/<model>`."""
        members = self.spec.members(trial.config)
        return {run_key(trial.trial_id, i, len(members)): m for i, m in enumerate(members)}

    def _found(self, trial_id: str, size: int) -> dict[str, Any]:
        """The runs of a trial of `size` models already in the store (a resumed sweep), run
        key -> run, from one search for the whole pack (not one per member)."""
        query = f"tags.`{TRIAL_TAG}` = '{trial_id}'"
        runs = self.client.search_runs([self._experiment], query, max_results=50_000)
        return {run_key(trial_id, int(r.data.tags.get(MEMBER_TAG, 0)), size): r for r in runs}

    def run_ids(self, trial: Any) -> dict[str, str]:
        """The trial's runs (key -> run id): cached, else found by tag (resume), else
        created; a run found FAILED or FINISHED stays closed."""
        members = self.members(trial)
        if missing := [key for key in members if key not in self._runs]:
            found = self._found(trial.trial_id, len(members))
            for key in missing:
                self._runs[key] = self._open(trial, key, members[key], found.get(key))
        return {key: self._runs[key] for key in members}

    def _open(self, trial: Any, key: str, member: dict[str, Any], found: Any) -> str:
        client = self.client
        if found is not None:
            run_id = found.info.run_id
            history = client.get_metric_history(run_id, "train/loss")
            self._last_step[key] = max((m.step for m in history), default=-1)
            if found.info.status in ("FINISHED", "FAILED"):
                self._closed.add(key)
            return run_id
        config, arm = self.spec.config(member), member["arm"]
        tags = {
            **self.tags,
            TRIAL_TAG: trial.trial_id,
            "raywae.arm": arm,
            "mlflow.runName": run_name(member),
        }
        if "/" in key:
            size = len(self.spec.members(trial.config))
            tags |= {MEMBER_TAG: key.partition("/")[2], PACK_TAG: str(size)}
        run_id = client.create_run(self._experiment, tags=tags).info.run_id
        params = {**flatten(config), "arm": arm}
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        # The config itself, not only its flattened strings: analysis rebuilds it from this.
        client.log_dict(run_id, to_dict(config), CONFIG_FILE)
        self._last_step[key] = -1
        return run_id

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._reconciled:  # once per (re)start
            self._reconciled = True
            self._close_open_runs(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._close_open_runs(trials)  # a resumed sweep with nothing left to run has no step

    def _close_open_runs(self, trials: list) -> None:
        """Runs left RUNNING by a driver that was killed: a trial that had finished (its final
        report says done) is closed with its artifacts; a run whose trial Tune does not know
        (it started after Tune last saved its state) is deleted, as Tune trains that trial
        again under a new id."""
        by_id = {t.trial_id: t for t in trials}
        running = self.client.search_runs(
            [self._experiment],
            f"tags.`{SWEEP_TAG}` = '{self.tags[SWEEP_TAG]}' and attributes.status = 'RUNNING'",
            max_results=50_000,
        )
        for run in running:
            trial = by_id.get(run.data.tags.get(TRIAL_TAG))
            if trial is None:
                self.client.set_tag(run.info.run_id, "raywae.error", ORPHANED)
                self.client.set_terminated(run.info.run_id, "KILLED")
                self.client.delete_run(run.info.run_id)
                print(f"MLflow: deleted run {run.info.run_name!r}: {ORPHANED}")
            elif trial.status == "TERMINATED" and (trial.last_result or {}).get(DONE):
                # (Tune also marks TERMINATED the trials it stops on Ctrl+C: without a final
                # "done" report they are unfinished and their runs stay RUNNING until resumed.)
                self.on_trial_complete(0, trials, trial)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for key, run_id in self.run_ids(trial).items():
            if key not in self._closed:
                self.client.update_run(run_id, "RUNNING")

    def member_results(self, trial: Any, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """A result per run key (logkeys.split_report: each model's, with the trial's node /
        device context)."""
        size = len(self.spec.members(trial.config))
        return {run_key(trial.trial_id, i, size): v for i, v in split_report(result).items()}

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        runs = self.run_ids(trial)
        for key, logs in self.member_results(trial, result).items():
            if key in self._closed:
                continue
            if failed := logs.get(FAILED):  # a model that diverged: closed at once
                self._failed(key, runs[key], failed)
                continue
            step = int(logs.get("step", 0))
            if step <= self._last_step[key]:
                continue  # already logged before a restart
            self._last_step[key] = step
            now = int(time.time() * 1000)
            metrics = [
                Metric(k, float(v), now, step)
                for k, v in logs.items()
                if k.startswith(LOGGED) and isinstance(v, int | float)
            ]
            context = ("node_ip", "node_id", "gpu_ids", "device")
            tags = [RunTag(f"raywae.{k}", str(logs[k])) for k in context if k in logs]
            if source := logs.get(EXPLOITED):  # PBT: this report's weights are source's
                before = self.client.get_run(runs[key]).data.tags.get(EXPLOITS_TAG)
                event = f"step {logs.get(RESTORED_STEP, step)} from {source}"
                tags.append(RunTag(EXPLOITS_TAG, f"{before}; {event}" if before else event))
            self.client.log_batch(runs[key], metrics=metrics, tags=tags)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        runs = self.run_ids(trial)
        last = self.member_results(trial, trial.last_result or {})
        for key, run_id in runs.items():
            if key in self._closed:
                continue
            if failed := last.get(key, {}).get(FAILED):  # ended on a deterministic error
                self._failed(key, run_id, failed)
                continue
            reason = stop_reason(self.scheduler, trial.trial_id)
            if reason is not None:  # stopped by the scheduler: a finished run, marked so
                self.client.set_tag(run_id, STOPPED_TAG, f"step {reason[0]}: {reason[1]}")
            elif trial.checkpoint is not None:
                with trial.checkpoint.as_directory() as path:
                    size = len(self.spec.members(trial.config))
                    artifacts = Path(path) / artifact_folder(member_of(key), size)
                    if artifacts.is_dir():
                        self.client.log_artifacts(run_id, str(artifacts))
            self.client.set_terminated(run_id, "FINISHED")
            self._closed.add(key)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = trial.error_file
        message = Path(error).read_text().strip() if error and os.path.exists(error) else ""
        for key, run_id in self.run_ids(trial).items():
            if key not in self._closed:
                self._failed(key, run_id, message)

    def _failed(self, key: str, run_id: str, message: str) -> None:
        """Tag the run with the last line of `message`, keep all of it as error.txt."""
        self._closed.add(key)
        last = message.splitlines()[-1] if message else "unknown error"
        self.client.set_tag(run_id, "raywae.error", last[:4000])
        if message:
            self.client.log_text(run_id, message, "error.txt")
        self.client.set_terminated(run_id, "FAILED")


def run_key(trial_id: str, model: int, size: int) -> str:
    """The key of a trial's model-th run: the trial id, `<trial id>/<model>` in a pack."""
    return trial_id if size == 1 else f"{trial_id}/{model}"


def member_of(key: str) -> int:
    """The model index of a run key."""
    return int(key.partition("/")[2] or 0)
