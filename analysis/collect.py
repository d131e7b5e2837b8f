"""The runs of one or more sweeps -> one tidy table, one row per model (a trial's, or each
member's of a packed trial): experiment, run and trial ids, `member` (the model's index in
its trial: 0, or its place in a pack), status, arm, family, seed, data provenance, every
config value (dotted names, numbers as numbers) and every final metric (`test/recon`,
`metric/beta_vae_5/run0`, ...; `hparam/<key>`, a hyperparameter Population Based Training
varied, at its last value).

    python -m analysis.collect -e NAME [-e NAME ...] [--tracking-uri URI] [--from-tune]

Writes runs.csv (+ runs.parquet) and the paper aggregation of each score,
settings_beta_vae_4.csv / settings_beta_vae_5.csv; logs them under `collect/` of the
analysis run. `--from-tune` reads the Tune folders `<storage>/<NAME>` instead of MLflow.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import cli
from analysis.aggregate import SCORES, aggregate, label_settings, param_columns
from analysis.store import ANALYSIS_TAG, AnalysisError, Target, log_outputs

FIXED = (
    "experiment", "run_id", "trial_id", "member", "run_name", "status", "arm", "family", "seed",
    "data_source", "data_fingerprint", "error", "stopped_early",
)  # fmt: skip
METRIC_PREFIXES = ("train/", "test/", "metric/", "time/", "hparam/")  # hparam/: last value


def family_of(params: Mapping[str, Any]) -> str | None:
    """The family (raywae.families) whose preset a config has, e.g. a custom arm `diverges`
    with family beta_vae -> beta_vae; None if none matches."""
    from raywae.families import FAMILIES

    for family, row in FAMILIES.items():
        if all(str(params.get(k)) == str(v) for k, v in row.preset.items()):
            return family
    return None


def _typed(column: pd.Series) -> pd.Series:
    """MLflow params are strings: numbers become numbers when every value is one."""
    column = column.replace({"None": None})
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers if numbers.notna().sum() == column.notna().sum() else column


def tidy(records: list[dict[str, Any]]) -> pd.DataFrame:
    """records: dicts with FIXED keys (any may be missing) plus `params` (name -> str) and
    `metrics` (name -> float) -> the tidy table (FIXED, sorted params, sorted metrics)."""
    rows = []
    for r in records:
        params, metrics = dict(r.get("params", {})), dict(r.get("metrics", {}))
        row = {k: r.get(k) for k in FIXED}
        row["arm"] = row["arm"] or params.get("arm")
        row["seed"] = params.pop("seed", row["seed"])
        params.pop("arm", None)
        row["family"] = row["family"] or family_of(params) or row["arm"]
        rows.append({**row, **params, **metrics})
    df = pd.DataFrame(rows, columns=None if rows else list(FIXED))
    params = sorted(param_columns(df))
    metrics = sorted(c for c in df.columns if c.startswith(METRIC_PREFIXES))
    df = df[[*FIXED, *params, *metrics]].copy()
    for c in ["seed", *params]:
        df[c] = _typed(df[c])
    return df


def mlflow_records(client: Any, experiment_id: str, name: str) -> list[dict[str, Any]]:
    """The raywae trial runs of one experiment (runs without a trial id are not sweep
    trials; the analysis run is skipped)."""
    out, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        for run in page:
            tags = run.data.tags
            if tags.get(ANALYSIS_TAG) == "true" or "raywae.trial_id" not in tags:
                continue
            out.append(
                {
                    "experiment": name,
                    "run_id": run.info.run_id,
                    "trial_id": tags["raywae.trial_id"],
                    "member": int(tags.get("raywae.pack_member", 0)),
                    "run_name": run.info.run_name,
                    "status": run.info.status,
                    "arm": tags.get("raywae.arm"),
                    "data_source": tags.get("raywae.data/source"),
                    "data_fingerprint": tags.get("raywae.data/fingerprint"),
                    "error": tags.get("raywae.error"),
                    "stopped_early": tags.get("raywae.stopped_early"),
                    "params": run.data.params,
                    "metrics": run.data.metrics,
                }
            )
        token = page.token
        if not token:
            return out


def tune_records(folder: Path, name: str) -> list[dict[str, Any]]:
    """The models of a Tune experiment folder's trials (one, or each member of a pack): the
    trial's params.json, its model's part of the final line of result.json, error.txt, and
    the model's full config from the newest checkpoint's state.pt (a pack's member that
    failed has none there: its trial dict)."""
    import torch

    from raywae.checkpoint import member_states, newest_state
    from raywae.config import compose, flatten
    from raywae.logkeys import FAILED, split_report
    from raywae.search_space import SweepSpec

    out = []
    for trial in sorted(p.parent for p in folder.glob("*/params.json")):
        members = SweepSpec.members(json.loads((trial / "params.json").read_text()))
        results = [json.loads(x) for x in (trial / "result.json").read_text().splitlines() if x]
        logs = split_report(results[-1]) if results else {}
        path = newest_state(trial)
        state = torch.load(path, map_location="cpu", weights_only=True) if path else None
        states = member_states(state) if state else {}
        error = trial / "error.txt"  # Tune's, for a trial that raised
        raised = error.read_text().strip().splitlines()[-1] if error.is_file() else None
        for i, member in enumerate(members):
            params = {k: str(v) for k, v in member.items()}
            if i in states:
                config = flatten(compose(states[i]["config"], {}))
                params = {k: str(v) for k, v in config.items()} | {"arm": str(member["arm"])}
            final = logs.get(i, {})
            reason = raised or final.get(FAILED)  # or a model ended by a deterministic failure
            status = "FAILED" if reason else "FINISHED" if final.get("done") else "RUNNING"
            out.append(
                {
                    "experiment": name,
                    "trial_id": trial.name,
                    "member": i,
                    "status": status,
                    "data_source": params.get("data.source"),
                    "error": reason,
                    "params": params,
                    "metrics": {
                        k: float(v)
                        for k, v in final.items()
                        if k.startswith(METRIC_PREFIXES) and isinstance(v, int | float)
                    },
                }
            )
    return out


def load_runs(target: Target, from_tune: bool = False) -> pd.DataFrame:
    """The tidy table of every experiment of the target (MLflow, or the Tune folders)."""
    records: list[dict[str, Any]] = []
    if from_tune:
        for name in target.experiments:
            folder = target.storage / name
            if not folder.is_dir():
                raise AnalysisError(f"no Tune experiment folder {folder} (pass --storage)")
            records += tune_records(folder, name)
    else:
        from analysis.store import client, experiment_ids

        mlflow_client = client(target.tracking_uri)
        for name, eid in experiment_ids(mlflow_client, target.experiments).items():
            records += mlflow_records(mlflow_client, eid, name)
    return tidy(records)


def read_table(path: Path) -> pd.DataFrame:
    """A table written by this CLI (runs.csv or runs.parquet)."""
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def runs_for(target: Target, table: Path | None) -> pd.DataFrame:
    """What every other CLI analyses: a saved table, else the store; settings labelled."""
    return label_settings(read_table(table) if table else load_runs(target))


def write(runs: pd.DataFrame, out: Path) -> list[Path]:
    """runs.csv (+ runs.parquet when pyarrow is there) and one settings table per score."""
    paths = [out / "runs.csv"]
    runs.to_csv(paths[0], index=False)
    try:
        runs.to_parquet(out / "runs.parquet", index=False)
        paths.append(out / "runs.parquet")
    except ImportError:  # parquet is a convenience; the CSV is the record
        pass
    labelled = label_settings(runs)
    for score in SCORES:
        if score in runs:
            path = out / f"settings_{score.rsplit('/', 1)[-1]}.csv"
            aggregate(labelled, score).to_csv(path, index=False)
            paths.append(path)
    return paths


@cli.command
def main(argv: list[str] | None = None) -> int:
    p = cli.parser("python -m analysis.collect", __doc__, storage=True)
    p.add_argument("--from-tune", action="store_true", help="read <storage>/<NAME>, not MLflow")
    args, target = cli.parse(p, argv)
    runs = load_runs(target, args.from_tune)
    paths = write(runs, target.out)
    counts = runs.groupby(["experiment", "arm", "status"], dropna=False).size()
    print(counts.to_string())
    print(f"{len(runs)} trials -> {', '.join(str(p) for p in paths)}")
    log_outputs(target, paths, "collect", {"raywae.analysis.collect.rows": str(len(runs))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
