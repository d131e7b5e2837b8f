"""`python -m raywae.sweep FILE`: run a search-space YAML as a Ray Tune experiment logged to
MLflow. `--dry-run` prints the planned trials without starting Ray; `--resume` continues a
killed sweep (finished trials are kept, interrupted ones continue from their checkpoints).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

from raywae.config import EXIT_BAD_INPUT, ConfigError, parse_sets
from raywae.data import DataError
from raywae.data.dsprites import DATA_ENV
from raywae.logkeys import DONE, FAILED, split_report
from raywae.search_space import SweepSpec, load

SUMMARY_COLUMNS = ("test/recon", "metric/beta_vae_4", "metric/beta_vae_5")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m raywae.sweep", description=__doc__)
    p.add_argument("file", type=Path, help="search-space YAML (see search_spaces/)")
    p.add_argument("--dry-run", action="store_true", help="print the trial table and exit")
    p.add_argument("--resume", action="store_true", help="continue the sweep in --storage")
    p.add_argument("--storage", help="Tune storage folder or URI (default: the YAML's, ./runs)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite in ./mlruns)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a YAML entry, e.g. --set base.train.steps=200 (repeatable)",
    )
    return p.parse_args(argv)


def trial_table(spec: SweepSpec) -> str:
    """The planned trials (grid) or the searched space (optuna / random), as text."""
    lines = [f"sweep {spec.name!r} from {spec.source}: {spec.algorithm} search"]
    for arm in spec.arms.values():
        settings = ", ".join(f"{k}={v}" for k, v in arm.settings.items())
        lines.append(f"  arm {arm.name}: {settings or '(base settings)'}")
    if spec.algorithm == "grid":
        trials = spec.trials()
        keys = sorted({k for t in trials for k in t.params})
        lines.append(f"{len(trials)} trials")
        lines.append("  ".join(["#".rjust(4), "arm".ljust(14), *keys, "seed"]))
        for i, t in enumerate(trials):
            cells = [str(t.params.get(k, "-")).ljust(len(k)) for k in keys]
            lines.append("  ".join([str(i).rjust(4), t.arm.ljust(14), *cells, str(t.seed)]))
    else:
        lines.append(
            f"{spec.num_samples} trials, sampler {spec.sampler}, "
            f"objectives {list(zip(spec.metric, spec.mode))}, seed {spec.seeds[0]}"
        )
        for arm in spec.arms.values():
            space = ", ".join(f"{k} ~ {d.kind}{list(d.args)}" for k, d in arm.space.items())
            lines.append(f"  {arm.name}: {space or '(fixed)'}")
    if spec.algorithm == "grid" and spec.pack > 1:
        packs = spec.packs()
        lines.append(
            f"packing: pack {spec.pack} -> {len(packs)} Tune trials of up to {spec.pack} "
            "models (the seeds of one setting; resources below are per pack)"
        )
        for k, members in enumerate(packs):
            lines.append(f"  pack {k}: trials {', '.join(str(i) for i in members)}")
    else:
        lines.append("packing: one model per Tune trial (pack 1)")
    lines.append(
        f"resources per trial: {spec.cpu} CPU, {spec.gpu} GPU; "
        f"steps per trial: {spec.config(spec.example()).train.steps}"
    )
    pick = "--trial N" if spec.algorithm == "grid" else "--arm NAME --set key=value ..."
    lines.append(f"one trial alone: python -m raywae.experiment {spec.source} {pick}")
    return "\n".join(lines)


def resolve_paths(spec: SweepSpec, storage: str | None) -> SweepSpec:
    """Absolute storage and data paths: trials run inside their own folders."""
    storage = storage or spec.storage
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    base = dict(spec.base)
    data = dict(base.get("data", {}))
    if data.get("path"):
        data["path"] = str(Path(data["path"]).expanduser().resolve())
        base["data"] = data
    return dataclasses.replace(spec, storage=storage, base=base)


class SweepError(RuntimeError):
    """A sweep that cannot start (no GPU, nothing to resume, an existing sweep in the way,
    storage it cannot write, data that changed under a resumed sweep)."""


PROBE_BYTES = 1 << 20  # a sweep writes checkpoints of tens of MB: a full disk fails here first


def check_writable(folder: Path, what: str) -> None:
    """Create `folder` and write (then remove) a 1 MiB probe in it, before any training: an
    unwritable or full place is a SweepError naming it, not a failure hours later."""
    probe = folder / f".raywae-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"\0" * PROBE_BYTES)
        probe.unlink()
    except OSError as err:
        raise SweepError(f"{what} {folder} is not writable: {err.strerror or err}") from None


def check_tracking_server(tracking_uri: str, timeout: float = 10) -> None:
    """An http(s) tracking URI must answer (MLflow's /health) before any trial trains: a
    closed tunnel or a stopped server is a SweepError, not hours of runs that never log."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = f"{tracking_uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            if answer.status == 200:
                return
            problem = f"HTTP {answer.status}"
    except (OSError, ValueError) as err:  # URLError, HTTPError, timeouts are OSErrors
        problem = str(getattr(err, "reason", None) or err)
    raise SweepError(
        f"the MLflow tracking server {tracking_uri} does not answer ({url}: {problem}); "
        "start it (mlflow server ...) or open the tunnel to it (cluster/README.md)"
    )


def check_cluster(spec: SweepSpec, nodes: list[dict[str, Any]]) -> None:
    """Before any trial: some node can hold one trial (its CPUs and GPU fraction), and a sweep
    over more than one host writes to shared storage. nodes: `ray.nodes()`; hosts are told
    apart by address, so a local test cluster (many nodes, one host) may use a folder."""
    alive = [n for n in nodes if n.get("Alive")]
    fits = [
        n
        for n in alive
        if n["Resources"].get("CPU", 0) >= spec.cpu and n["Resources"].get("GPU", 0) >= spec.gpu
    ]
    if not fits:
        gpus = sum(n["Resources"].get("GPU", 0) for n in alive)
        raise SweepError(
            f"{spec.source}: resources ask for {spec.cpu} CPU and {spec.gpu} GPU per trial, but "
            f"no node of the Ray cluster has that ({len(alive)} nodes, {gpus:g} GPUs in all); "
            + (
                "run with --set resources.gpu=0 to train on CPUs"
                if spec.gpu > 0 and not gpus
                else "lower resources.cpu / resources.gpu or add a bigger node"
            )
            + (
                " (an autoscaling cluster must keep one GPU node up: min_workers: 1)"
                if spec.gpu > 0
                else ""
            )
        )
    hosts = sorted({n["NodeManagerAddress"] for n in alive})
    if len(hosts) > 1 and "://" not in spec.storage:
        raise SweepError(
            f"storage {spec.storage} is a folder on this machine, but the Ray cluster spans "
            f"{len(hosts)} hosts ({', '.join(hosts)}): trials elsewhere could not write their "
            "checkpoints there; pass --storage s3://BUCKET/PREFIX (or gs://...), or a folder "
            "that every node mounts (NFS) as file:///PATH"
        )


GCS_TRIES = "RAY_gcs_server_port_wait_time_s"  # ray.init's tries at a cluster's GCS, 1 s apart
JOIN_TRIES = "3"  # (Ray's default: 20, read at each call): a refused token stays refused
TOKEN_FIX = (
    "export RAY_AUTH_MODE=token and the cluster's token: RAY_AUTH_TOKEN=... (`ray "
    "get-auth-token` on the head prints it) or a copy of the head's ~/.ray/auth_token "
    "(cluster/README.md, step 1)"
)


def connect(address: str | None, env: dict[str, str]) -> None:
    """ray.init with `env` for every trial: start a local Ray, or join the cluster at `address`
    (else RAY_ADDRESS; `auto`: the one `ray start` ran on this machine). A cluster it cannot
    join is a SweepError naming the address, within seconds: nothing listening there (a TCP
    probe first; Ray would try 20 times, ~40 s each), or a token it refuses (Ray: a
    ConnectionError from an AuthenticationError after 20 tries; no token: that error)."""
    import ray
    from ray._common.network_utils import parse_address
    from ray._private.services import canonicalize_bootstrap_address
    from ray.exceptions import AuthenticationError

    runtime_env = {"env_vars": env}
    from_env = os.environ.get("RAY_ADDRESS")
    by_env = bool(from_env) and address in (None, "auto")  # as ray.init decides
    chosen = from_env if by_env else address
    if not chosen:  # a local Ray (or, as Ray does, the one `ray start` last ran here)
        ray.init(ignore_reinit_error=True, runtime_env=runtime_env)
        return
    where = f"RAY_ADDRESS={chosen}" if by_env else f"--address {chosen}"
    target = None  # Ray Client (ray://): nothing to probe
    if "://" not in chosen:
        try:  # Ray's own resolution: RAY_ADDRESS, `auto`, the last `ray start`, localhost
            target = canonicalize_bootstrap_address(address)
        except (ConnectionError, ValueError) as err:  # `auto` with no cluster, a bad address
            raise SweepError(f"{where}: {err}") from None
    if target is not None:
        where += f", that is {target}" if target != chosen else ""
        host, port = parse_address(target)
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError) as err:
            raise SweepError(
                f"cannot join the Ray cluster ({where}): nothing is listening there "
                f"({getattr(err, 'strerror', None) or err}); start its head there (`ray start "
                f"--head --port {port}`), or pass the address the head printed (its GCS port, "
                "6379 by default, not the dashboard's 8265) as --address HOST:PORT or RAY_ADDRESS"
            ) from None
    scoped = target is not None and GCS_TRIES not in os.environ  # a user's setting stands
    if scoped:
        os.environ[GCS_TRIES] = JOIN_TRIES
    try:
        ray.init(address=address, ignore_reinit_error=True, runtime_env=runtime_env)
    except (ConnectionError, AuthenticationError) as err:
        missing = isinstance(err, AuthenticationError)  # token mode, but no token here
        if not missing and "AuthenticationError" not in str(err.__cause__):
            why = (str(err.__cause__ or "").strip().splitlines() or [""])[-1]  # Ray's reason
            raise SweepError(f"cannot join the Ray cluster ({where}): {err}; {why}") from None
        mode = os.environ.get("RAY_AUTH_MODE", "unset")
        problem = (
            f"RAY_AUTH_MODE is {mode} here, so none was sent (a driver joining by address "
            "sends one only with RAY_AUTH_MODE=token)"
            if mode.lower() != "token"
            else ("none was found here" if missing else "it is not the cluster's")
            + " (Ray reads RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH, else "
            "~/.ray/auth_token)"
        )
        raise SweepError(
            f"the Ray cluster ({where}) refused this driver's auth token: {problem}; {TOKEN_FIX}"
        ) from None
    finally:
        if scoped:
            del os.environ[GCS_TRIES]


def check_same_data(name: str, tracking_uri: str, tags: dict[str, str]) -> None:
    """A resumed sweep must train on the data its runs were tagged with: a different image
    fingerprint (the real file replaced, a renderer change) is a SweepError naming both."""
    from raywae.tracking import logged_values

    key = "raywae.data/fingerprint"
    before = logged_values(tracking_uri, name, key) - {tags.get(key)}
    if before:
        raise SweepError(
            f"the data changed under sweep {name!r}: its runs were trained on fingerprint "
            f"{', '.join(sorted(before))}, the data now has {tags.get(key)}; restore that "
            "data, or start a new sweep (another name or --storage)"
        )


def prepare_data(spec: SweepSpec) -> dict[str, str]:
    """Open (building once, under a lock) every dataset the sweep's arms use, before any
    trial starts; returns their provenance as MLflow tags."""
    from raywae.data import open_dataset

    tags: dict[str, str] = {}
    for arm in spec.arms:
        ds = open_dataset(spec.config(spec.example(arm)).data)
        for key, value in ds.provenance().items():
            tags.setdefault(f"raywae.{key}", value)
    return tags


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
    if resume:
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True)
    else:
        if spec.algorithm == "grid":
            search, samples = planned_search(spec), len(spec.planned())
        else:
            search, samples = searcher(spec, experiment or Path(".")), spec.num_samples
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                num_samples=samples,
                search_alg=search,
                max_concurrent_trials=spec.concurrency or None,
                reuse_actors=True,  # a worker imports torch / Ray / raywae once, not per trial
                trial_dirname_creator=lambda t: f"{t.trial_id}",
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=spec.storage,
                verbose=1,
                callbacks=[
                    MLflowCallback(spec, tracking_uri, tags),
                    ResumeFromNewestCheckpoint(),  # when a resumed trial's checkpoint is gone
                ],
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            ),
        )
    results = tuner.fit()
    return summarize(spec, results, path, tracking_uri)


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
    unfinished = [r for r in results if r.error is None and not r.metrics.get(DONE)]
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = load(args.file, parse_sets(args.set))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.dry_run:
        print(trial_table(spec))
        return 0
    spec = resolve_paths(spec, args.storage)
    try:
        data = prepare_data(spec)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # Ray, MLflow and torch load only past this point, when a sweep really runs.
    # SIGTERM (a scheduler's kill) stops the sweep like Ctrl+C: Tune saves its state first.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    from raywae.resume import ResumeError

    try:
        return run(spec, data, args.tracking_uri, args.address, args.resume)
    except (SweepError, ResumeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
