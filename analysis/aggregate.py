"""The paper's aggregation (PROTOCOL §6), pure pandas: per setting, the (recon, score) pairs of
every finished seed × metric run; the bottom half by score discarded; means and spreads.

A *setting* is a model family's arm with every config value but the seed fixed; its label
names what varies within the arm (`beta_vae β=10`, `wae_box λ1=2`). With 10 seeds × 3 metric
runs a setting has 30 pairs and keeps 15.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

RECON = "test/recon"
SCORES = ("metric/beta_vae_4", "metric/beta_vae_5")
THRESHOLD = 0.98  # PROTOCOL §1's 4-factor bar: the headline table's and Figure 2's models
# Short names of the hyperparameters the paper varies, in the order labels list them.
KNOB_NAMES = {
    "objective.beta": "β",
    "objective.lp_lambda": "λ1",
    "objective.lam": "λ",
    "objective.p": "p",
}


def param_columns(runs: pd.DataFrame) -> list[str]:
    """The config columns of a tidy table: dotted names (`objective.beta`); metrics have '/'."""
    return [c for c in runs.columns if "." in c and "/" not in c]


def _fmt(value: object) -> str:
    """1.0 -> "1", 60000.0 -> "60000", 0.123456 -> "0.1235"."""
    if isinstance(value, float | np.floating):
        return str(int(value)) if value.is_integer() and abs(value) < 1e9 else f"{value:.4g}"
    return str(value)


def label_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """A copy of `runs` with `setting` ("<arm> <what varies>") and `knob` ("β=10"; the arm
    name when nothing varies within the arm). Only columns that vary within an arm are
    named, so labels stay short while still telling every setting apart."""
    out = runs.copy()
    params = param_columns(out)
    out["setting"], out["knob"] = "", ""
    for arm, rows in out.groupby("arm", sort=False, dropna=False):
        varying = [c for c in params if rows[c].astype(str).nunique() > 1]
        varying.sort(key=lambda c: (list(KNOB_NAMES).index(c) if c in KNOB_NAMES else 99, c))
        names = [(c, KNOB_NAMES.get(c, c.rsplit(".", 1)[-1])) for c in varying]
        knobs = pd.Series(
            [", ".join(f"{n}={_fmt(r[c])}" for c, n in names) for _, r in rows.iterrows()],
            index=rows.index,
            dtype=object,
        )
        knobs = knobs if varying else pd.Series(str(arm), index=rows.index)
        out.loc[rows.index, "knob"] = knobs
        out.loc[rows.index, "setting"] = (f"{arm} " + knobs) if varying else str(arm)
    return out


def run_columns(runs: pd.DataFrame, score: str) -> list[str]:
    """`score/run0`, `score/run1`, ... present in the table, in run order."""
    pattern = re.compile(re.escape(score) + r"/run(\d+)")
    found = [(int(m.group(1)), c) for c in runs.columns if (m := pattern.fullmatch(c))]
    return [c for _, c in sorted(found)]


def paper_pairs(runs: pd.DataFrame, score: str, recon: str = RECON) -> pd.DataFrame:
    """Every (recon, score) pair of the finished runs: one per model × metric run.

    runs: tidy table (one row per trial) with `setting` (see label_settings), `status`,
    `recon`, and `score/run<i>` columns (or only `score`: one pair per model).
    Returns columns setting, family, arm, run_id, seed, metric_run, recon, score, in table
    order then run order (the order ties are kept in). Rows with a NaN value are dropped, and
    so are models a scheduler stopped early (`stopped_early`): their scores, if any, are of a
    shorter training than the setting's budget.
    """
    done = runs[runs["status"] == "FINISHED"] if "status" in runs else runs
    if "stopped_early" in done:
        done = done[done["stopped_early"].isna()]
    cols = run_columns(done, score) or [score]
    values = done[cols].to_numpy(dtype=float, copy=True)
    if score in done and cols != [score]:  # a run with only the mean: one pair of the mean
        only_mean = np.isnan(values).all(axis=1)
        values[only_mean, 0] = done[score].to_numpy(dtype=float)[only_mean]
    keys = [c for c in ("setting", "family", "arm", "run_id", "seed") if c in done]
    n, k = values.shape
    pairs = done[keys].iloc[np.repeat(np.arange(n), k)].reset_index(drop=True)
    pairs["metric_run"] = np.tile(np.arange(k), n)
    pairs["recon"] = np.repeat(done[recon].to_numpy(dtype=float), k)
    pairs["score"] = values.reshape(-1)
    return pairs.dropna(subset=["recon", "score"]).reset_index(drop=True)


def keep_top(pairs: pd.DataFrame, keep: float = 0.5, by: str = "setting") -> pd.DataFrame:
    """Per `by` group the ceil(keep · n) pairs with the highest score (the paper: bottom 50 %
    discarded, 30 -> 15). Ties at the cut keep table order (a stable sort), never the
    better recon: choosing by recon would flatter the front.

    pairs: paper_pairs rows (any columns with `by` and `score`). Returns the kept rows,
    groups in order of first appearance, each by score descending. One stable sort for all
    groups, not one per group: the bootstrap of the fronts calls it on ~10⁶ pairs in ~10⁴
    groups.
    """
    group = pd.factorize(pairs[by], sort=False)[0]  # codes in order of first appearance
    order = np.lexsort((-pairs["score"].to_numpy(dtype=float), group))  # stable: ties in order
    sizes = np.bincount(group, minlength=group.max(initial=-1) + 1)
    starts = np.cumsum(sizes) - sizes
    g = group[order]
    rank = np.arange(len(order)) - starts[g]  # position within its group, best score first
    n_keep = np.ceil(sizes * keep - 1e-9).astype(int)
    return pairs.iloc[order[rank < n_keep[g]]]


def aggregate(
    runs: pd.DataFrame,
    score: str,
    recon: str = RECON,
    keep: float = 0.5,
    ddof: int = 0,
) -> pd.DataFrame:
    """PROTOCOL §6 per setting: one row with family, arm, setting, knob, the setting's
    config values, n_models (finished), n_failed, n_pairs, n_kept, and mean / std (ddof 0,
    numpy's np.std) of recon and score over the kept pairs. Settings with no finished run
    stay in the table with NaN figures so that failures are visible downstream."""
    if "setting" not in runs:
        runs = label_settings(runs)
    pairs = paper_pairs(runs, score, recon)
    kept = keep_top(pairs, keep)
    firsts = runs.groupby("setting", sort=False).first()
    fixed = [c for c in ("family", "arm", "knob", *param_columns(runs)) if c in firsts]
    out = firsts[fixed].copy()
    status = runs["status"] if "status" in runs else pd.Series("FINISHED", index=runs.index)
    out["n_models"] = runs[status == "FINISHED"].groupby("setting").size()
    out["n_failed"] = runs[status == "FAILED"].groupby("setting").size()
    out["n_pairs"] = pairs.groupby("setting").size()
    out["n_kept"] = kept.groupby("setting").size()
    out[["n_models", "n_failed", "n_pairs", "n_kept"]] = (
        out[["n_models", "n_failed", "n_pairs", "n_kept"]].fillna(0).astype(int)
    )
    stats = kept.groupby("setting")[["recon", "score"]].agg(["mean", lambda s: s.std(ddof=ddof)])
    for col in ("recon", "score"):
        out[f"{col}_mean"] = stats[(col, "mean")] if len(stats) else np.nan
        out[f"{col}_std"] = stats[(col, "<lambda_0>")] if len(stats) else np.nan
    out["score_key"], out["recon_key"] = score, recon
    order = [c for c in ("family", "arm", *KNOB_NAMES) if c in out]
    out = out.reset_index().sort_values(order, kind="stable").reset_index(drop=True)
    figures = ["n_models", "n_failed", "n_pairs", "n_kept", "recon_mean", "recon_std"]
    figures += ["score_mean", "score_std", "score_key", "recon_key"]
    return out[["setting", "family", "arm", "knob", *figures, *param_columns(out)]]


def _values(runs: pd.DataFrame, column: str) -> str:
    found = {_fmt(v) for v in runs[column].dropna().unique()} if column in runs else set()
    return " / ".join(sorted(found)) or "?"


def budget(runs: pd.DataFrame) -> str:
    """One line saying what the numbers are worth: data source (and fingerprint), grid,
    training steps and batch, metric preset and runs, finished trials, seeds per setting."""
    fingerprints = _values(runs, "data_fingerprint")
    data = f"{_values(runs, 'data_source')} dSprites"
    if fingerprints != "?":
        data += f" (bits {', '.join(f[:8] for f in fingerprints.split(' / '))})"
    grid = _values(runs, "data.subgrid")
    data += f", subgrid {grid}" if grid not in ("?", "", "nan") else ", full grid"
    done = runs[runs["status"] == "FINISHED"] if "status" in runs else runs
    seeds = done.groupby("setting")["seed"].nunique() if "setting" in done else pd.Series()
    seeds_text = f"{int(seeds.median())}" if len(seeds) else "0"
    return (
        f"data: {data} · training: {_values(runs, 'train.steps')} steps, batch "
        f"{_values(runs, 'train.batch_size')} · metric: {_values(runs, 'metrics.preset')} × "
        f"{_values(runs, 'metrics.runs')} runs · {len(done)}/{len(runs)} trials finished, "
        f"{seeds_text} seeds per setting (median)"
    )
