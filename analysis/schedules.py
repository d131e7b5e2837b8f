"""Hyperparameter schedules of a Population Based Training sweep (pbt / pb2): each run's value of
every varied hyperparameter over its training steps, coloured by the run's final score.

    python -m analysis.schedules -e NAME [--key objective.lp_lambda] [--score metric/beta_vae_5]

A run of such a sweep logs `hparam/<key>` (a dotted config key) at every report: the value
it trained with at that step. An exploit (the trial continued from a better trial's
checkpoint) is in the run's `raywae.exploits` tag, "step 400 from <trial>; ...". One panel
per key: a step line per run (the value holds until the next report) coloured by its final
--score (viridis), grey and dashed for runs without one (stopped early, failed), a marker
at each exploit; a log axis when every value is > 0 and they span more than 20x.
Prints per key the final value of the top 5 runs by score, the best run's final value and
the median over the top quartile. Writes schedules.png/.svg and schedules.csv (run_id,
trial_id, arm, status, step, key, value, exploited_from, the score); logs them under
`schedules/` of the analysis run.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

import numpy as np
import pandas as pd

from analysis import cli
from analysis.store import AnalysisError

PREFIX = "hparam/"  # the metric of a varied hyperparameter: hparam/<dotted config key>
EXPLOITS_TAG = "raywae.exploits"
EXPLOIT = re.compile(r"step\s+(\d+)\s+from\s+([^\s;]+)")  # parts split by "; "
SCORE = "metric/beta_vae_5"  # the paper's ranking score
LOG_SPAN = 20.0  # max / min above which a panel gets a log axis (λ1, lr: orders of magnitude)
TOP = 5
WIDTH, PANEL, MARGIN = 9.0, 3.0, 0.9  # inches: figure width, height per panel, title + x label
NO_SCORE = {"color": "0.6", "ls": "--", "lw": 1.0}  # runs without a final score
NOT_FOUND = "no hyperparameter schedules: this sweep ran no pbt / pb2 scheduler"


def parse_exploits(tag: str | None) -> list[tuple[int, str]]:
    """A `raywae.exploits` tag -> [(step, trial id it continued from)] in tag order;
    "step 400 from 3f2a1_00002; step 800 from 3f2a1_00005" -> [(400, "3f2a1_00002"),
    (800, "3f2a1_00005")]. None or "" -> []; parts in another form are skipped (a figure
    should not die of a tag)."""
    return [(int(m[1]), m[2]) for m in EXPLOIT.finditer(tag or "")]


def lower_is_better(score: str) -> bool:
    """Losses and reconstruction errors rank low first; scores (metric/...) high first."""
    return score.startswith(("train/", "test/"))


def keys_of(runs: pd.DataFrame, mlflow_client: Any | None = None) -> list[str]:
    """Every `hparam/<key>` of the runs: the table's columns (collect keeps their last
    values), else (a table from before they were collected) the runs' metric keys in the
    store. Sorted; [] when the sweep varied nothing during training."""
    found = {c for c in runs.columns if c.startswith(PREFIX)}
    if not found and mlflow_client is not None:
        for run_id in runs["run_id"]:
            found |= {k for k in mlflow_client.get_run(run_id).data.metrics if k.startswith(PREFIX)}
    return sorted(found)


def store_schedules(runs: pd.DataFrame, mlflow_client: Any, keys: list[str]) -> pd.DataFrame:
    """MLflow's metric history of each `hparam/<key>` in `keys` for every run of `runs`
    (column run_id) -> one row per (run_id, step): run_id, step, one column per key (NaN
    where the run did not report it at that step) and exploited_from (the trial whose
    checkpoint the run continued from at that step, from its raywae.exploits tag; None
    elsewhere). An exploit between two reports adds a row with NaN values."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for run_id in runs["run_id"]:
        for key in keys:
            for m in mlflow_client.get_metric_history(run_id, key):
                first = {"run_id": run_id, "step": int(m.step)}
                rows.setdefault((run_id, int(m.step)), first)[key] = m.value
        tag = mlflow_client.get_run(run_id).data.tags.get(EXPLOITS_TAG)
        for step, donor in parse_exploits(tag):
            rows.setdefault((run_id, step), {"run_id": run_id, "step": step})
            rows[(run_id, step)]["exploited_from"] = donor
    columns = ["run_id", "step", *keys, "exploited_from"]
    history = pd.DataFrame(list(rows.values()), columns=columns)
    return history.sort_values(["run_id", "step"], ignore_index=True)


def schedules(history: pd.DataFrame, runs: pd.DataFrame, score: str) -> pd.DataFrame:
    """The long table of the schedules.

    history: store_schedules' table, one row per (run_id, step) with `hparam/<key>` columns
    and exploited_from; runs: the tidy runs table (run_id, trial_id, arm, status, `score`).
    Returns one row per (key, run, step): run_id, trial_id, arm, status, step, key (the
    dotted config key), value, exploited_from and `score` (the run's final score; NaN when
    it has none), sorted by key, run, step. A value holds until the run's next report, so an
    exploit between reports carries the value held there; steps before a run's first report
    of a key are dropped.
    """
    keys = [c for c in history.columns if c.startswith(PREFIX)]
    if "exploited_from" not in history:
        history = history.assign(exploited_from=None)
    long = history.melt(
        id_vars=["run_id", "step", "exploited_from"], value_vars=keys, var_name="key"
    )
    long = long.sort_values(["key", "run_id", "step"], ignore_index=True)
    long["value"] = long.groupby(["key", "run_id"])["value"].ffill()
    long = long.dropna(subset=["value"])
    long["key"] = long["key"].str.removeprefix(PREFIX)
    info = [c for c in ("run_id", "trial_id", "arm", "status") if c in runs]
    scores = runs[info].copy()
    scores[score] = runs[score].astype(float) if score in runs else np.nan
    out = long.merge(scores, on="run_id", how="left")
    columns = ["run_id", "trial_id", "arm", "status", "step", "key", "value", "exploited_from"]
    return out.reindex(columns=[*columns, score]).reset_index(drop=True)


def finals(table: pd.DataFrame, score: str) -> pd.DataFrame:
    """schedules' table -> one row per (key, run): its last value (final_value) and `score`,
    per key best score first (lower first for a loss; runs without a score last)."""
    last = table.sort_values("step").groupby(["key", "run_id"], sort=False).tail(1)
    last = last.rename(columns={"value": "final_value"}).drop(columns=["step", "exploited_from"])
    ascending = lower_is_better(score)
    last = last.sort_values(["key", score], ascending=[True, ascending], na_position="last")
    return last.reset_index(drop=True)


def summary(final: pd.DataFrame, score: str) -> tuple[float, float, int]:
    """One key's finals (best first) -> (the best run's final value, the median final value
    over the top quartile of the runs with a score (at least one run), that quartile's
    size). NaNs when no run has a score."""
    scored = final.dropna(subset=[score])
    if scored.empty:
        return math.nan, math.nan, 0
    top = max(1, math.ceil(len(scored) / 4))
    return float(scored["final_value"].iloc[0]), float(scored["final_value"][:top].median()), top


def log_axis(values: pd.Series) -> bool:
    """A log y-axis when every value is > 0 and they span more than LOG_SPAN."""
    return bool(len(values)) and values.min() > 0 and values.max() / values.min() > LOG_SPAN


def size(n_keys: int) -> tuple[int, int]:
    """The figure's (width, height) in pixels for `n_keys` panels."""
    from analysis.figures import pixels

    return pixels(WIDTH, MARGIN + PANEL * n_keys)


def figure(table: pd.DataFrame, score: str, title: str) -> Any:
    """schedules' table -> a Figure of size(number of keys): one panel per key, a step line
    per run coloured by `score` (colorbar), grey dashed without one, exploits marked."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    from analysis.figures import blank

    keys = sorted(table["key"].unique())
    fig = blank(size(len(keys)))
    axes = np.atleast_1d(fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0])
    scored = table[score].dropna()
    norm = Normalize(scored.min(), scored.max()) if len(scored) else Normalize(0, 1)
    if norm.vmin == norm.vmax:  # one score: any finite range draws it mid-colour
        norm = Normalize(norm.vmin - 0.5, norm.vmax + 0.5)
    cmap = colormaps["viridis"]
    for ax, key in zip(axes, keys):
        rows = table[table["key"] == key]
        for _, run in rows.groupby("run_id", sort=False):
            final = run[score].iloc[0]
            style = NO_SCORE if pd.isna(final) else {"color": cmap(norm(final)), "lw": 1.4}
            ax.step(run["step"], run["value"], where="post", alpha=0.9, **style)
            # A step line ends on a jump: the dot shows the last report's value.
            ax.plot(run["step"].iloc[-1:], run["value"].iloc[-1:], "o", ms=3, color=style["color"])
            jumps = run[run["exploited_from"].notna()]
            ax.plot(jumps["step"], jumps["value"], ls="none", marker="v", ms=6, mec="black",
                    mew=0.6, color=style["color"], zorder=3)  # fmt: skip
        if log_axis(rows["value"]):
            ax.set_yscale("log")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("training step")
    fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes), label=f"final {score}", pad=0.02)
    handles = [
        Line2D([], [], **NO_SCORE),
        Line2D([], [], ls="none", marker="v", ms=6, mec="black", mew=0.6, color="0.6"),
    ]
    labels = ["no final score (stopped early / failed)", "exploit: continued from a better trial"]
    axes[0].legend(handles, labels, fontsize=7, loc="best")
    fig.suptitle(title)
    return fig


def report(final: pd.DataFrame, score: str) -> str:
    """Per key: the top runs' final values by score and the summary line."""
    lines = []
    for key, rows in final.groupby("key", sort=True):
        best, median, top = summary(rows, score)
        shown = rows.head(TOP)[["trial_id", "arm", "run_id", "final_value", score]]
        lines += [f"{key}: final value of the top {len(shown)} runs by {score}"]
        lines += [shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"), ""]
        lines += [
            f"best run's final {key} = {best:.4g}; "
            f"median over the top quartile (n = {top}) = {median:.4g}",
            "",
        ]
    return "\n".join(lines)


@cli.command
def main(argv: list[str] | None = None) -> int:
    from analysis.collect import runs_for
    from analysis.figures import save
    from analysis.store import client

    p = cli.parser("python -m analysis.schedules", __doc__, table=True)
    p.add_argument(
        "--key",
        action="append",
        help="hyperparameter, repeatable, e.g. objective.lp_lambda (default: every hparam/ one)",
    )
    p.add_argument(
        "--score", default=SCORE, help=f"final score the lines are coloured by ({SCORE})"
    )
    args, target = cli.parse(p, argv)
    runs = runs_for(target, args.table)
    mlflow_client = client(target.tracking_uri)
    found = keys_of(runs, mlflow_client)
    if not found:
        raise AnalysisError(NOT_FOUND)
    keys = found
    if args.key:
        keys = [k if k.startswith(PREFIX) else PREFIX + k for k in args.key]
        if missing := [k for k in keys if k not in found]:
            names = [k.removeprefix(PREFIX) for k in found]
            raise AnalysisError(f"no schedule of {missing} in the sweep; it varies {names}")
    table = schedules(store_schedules(runs, mlflow_client, keys), runs, args.score)
    if table.empty:
        raise AnalysisError(NOT_FOUND)
    final = finals(table, args.score)
    n = table["run_id"].nunique()
    title = f"{', '.join(target.experiments)}: hyperparameter schedules of {n} runs"
    out = target.out
    paths = [out / "schedules.png", out / "schedules.svg", out / "schedules.csv"]
    save(figure(table, args.score, title), paths[:2])
    table.to_csv(paths[2], index=False)
    print(report(final, args.score))
    cli.wrote(target, paths, "schedules", {"raywae.analysis.schedules.score": args.score})
    return 0


if __name__ == "__main__":
    sys.exit(main())
