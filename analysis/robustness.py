"""How fragile is the ranking of a sweep's settings to the Higgins metric's own settings? Every
finished model is re-scored under a grid of (L pairs, classifier training points, classifier
steps); per combination the settings are ranked by their mean score over seeds and compared
with the ranking under the runs' own preset by Kendall τ and Spearman ρ.

    python -m analysis.robustness -e NAME [--pairs 10 30 64] [--points 1000 5000]
                                  [--steps 2000 20000 100000] [--factors 5] [--limit N]

Each model's code table is encoded once; each combination is one batched Higgins call for
all models. `steps` applies to the softmax-Adagrad classifier (rubenstein2018) only; with
the logistic one (disentanglement_lib) the steps axis collapses. Writes robustness.csv (one
row per combination: pairs, points, steps, reference, n_settings, kendall_tau, spearman_rho,
top_setting, top_score) and robustness_scores.csv (run_id, setting, one column per
combination); logs them under `robustness/` of the analysis run.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis import cli
from analysis.store import AnalysisError

if TYPE_CHECKING:  # torch and scikit-learn behind them: imported only where a model is scored
    from raywae.config import MetricsConfig
    from raywae.data.grid import FactorGrid
    from raywae.metrics.beta_vae import HigginsPreset

    Groups = dict[str, tuple[FactorGrid, MetricsConfig]]

FACTORS = 5


@dataclass(frozen=True)
class Combo:
    """One setting of the Higgins metric: L pairs per point, the classifier's training points
    (num_train; the evaluation points stay the preset's) and Adagrad steps (None: a
    classifier without steps)."""

    pairs: int
    points: int
    steps: int | None

    @property
    def label(self) -> str:
        steps = "-" if self.steps is None else f"{self.steps}"
        return f"L={self.pairs} n={self.points} steps={steps}"

    def preset(self, base: HigginsPreset) -> HigginsPreset:
        """`base` with this combination's L, training points and steps."""
        steps = base.steps if self.steps is None else self.steps
        return dataclasses.replace(base, pairs=self.pairs, num_train=self.points, steps=steps)


def combos(
    reference: Combo, pairs: Sequence[int], points: Sequence[int], steps: Sequence[int] | None
) -> list[Combo]:
    """The reference first, then every other combination of the grid (steps None: the
    classifier has no steps, the axis collapses)."""
    grid = itertools.product(pairs, points, [None] if steps is None else steps)
    return [reference, *dict.fromkeys(c for c in itertools.starmap(Combo, grid) if c != reference)]


def rank_stability(
    scores: np.ndarray, settings: Sequence[str], columns: Sequence[Combo], reference: int = 0
) -> pd.DataFrame:
    """scores: (models, combinations) one score per model under each combination; settings:
    (models,) each model's setting; columns: (combinations,) their Combos.

    Per combination: the settings' mean score over their models, ranked against the
    reference column's: Kendall τ (τ-b, ties counted) and Spearman ρ (1: the same order,
    −1: reversed; NaN with fewer than two settings or a constant column), and the top setting.
    Returns one row per combination: pairs, points, steps, reference, n_settings,
    kendall_tau, spearman_rho, top_setting, top_score.
    """
    from scipy.stats import kendalltau, spearmanr

    scores = np.asarray(scores, dtype=float)
    if scores.shape != (len(settings), len(columns)):
        raise ValueError(f"scores {scores.shape} != ({len(settings)} models, {len(columns)})")
    means = pd.DataFrame(scores).groupby(np.asarray(settings), sort=False).mean()
    ref = means[reference].to_numpy()
    rows = []
    for j, combo in enumerate(columns):
        col = means[j].to_numpy()
        ok = np.isfinite(col) & np.isfinite(ref)
        with warnings.catch_warnings():  # a constant column: NaN is the answer, not a warning
            warnings.simplefilter("ignore")
            tau = kendalltau(ref[ok], col[ok]).statistic if ok.sum() > 1 else np.nan
            rho = spearmanr(ref[ok], col[ok]).statistic if ok.sum() > 1 else np.nan
        top = means[j].idxmax() if ok.any() else None
        rows.append(
            {**dataclasses.asdict(combo), "reference": j == reference, "n_settings": int(ok.sum()),
             "kendall_tau": float(tau), "spearman_rho": float(rho), "top_setting": top,
             "top_score": means[j].max()}
        )  # fmt: skip
    out = pd.DataFrame(rows)
    out["steps"] = out["steps"].astype("Int64")  # None -> <NA>, not a float column
    return out


def code_tables(
    runs: pd.DataFrame, tracking_uri: str, limit: int | None = None
) -> tuple[pd.DataFrame, list[np.ndarray], Groups]:
    """The finished runs with a saved model, each loaded and encoded once over its metric
    grid (the data's grid, or its metrics.grid_subsample subgrid), up to `limit` models.
    Returns (their rows of `runs` with `group`, codes (len(grid), d) each, group -> (grid,
    metrics config)); a group = the models sharing a grid and metric settings."""
    from raywae.checkpoint import load_run
    from raywae.data import open_dataset
    from raywae.metrics.codes import encode_grid

    done = runs[runs["status"] == "FINISHED"] if "status" in runs else runs
    kept: list[dict] = []
    tables: list[np.ndarray] = []
    groups: Groups = {}
    datasets: dict[str, Any] = {}  # opened once per data config
    for _, row in done.iterrows():
        if limit is not None and len(kept) >= limit:
            break
        try:
            model, cfg = load_run(str(row["run_id"]), tracking_uri)
        except FileNotFoundError as err:  # logged without weights: nothing to re-score
            print(f"skipped {row['run_id']}: {err}", file=sys.stderr)
            continue
        data = repr(cfg.data)  # a config with dict fields: its repr is the key
        if data not in datasets:
            datasets[data] = open_dataset(cfg.data, quiet=True)
        ds = datasets[data]
        if ds.grid is None:
            continue  # no factor grid, no Higgins metric
        sub = cfg.metrics.grid_subsample
        grid = ds.grid.subgrid(sub) if sub else ds.grid
        group = repr((data, sub, cfg.metrics.preset, cfg.metrics.runs))
        groups.setdefault(group, (grid, cfg.metrics))
        tables.append(encode_grid(model, ds, progress=False, grid=grid if sub else None))
        kept.append(row.to_dict() | {"group": group, "seed": cfg.seed})
    if not kept:
        raise AnalysisError("no finished run with a saved model and a factor grid to re-score")
    return pd.DataFrame(kept), tables, groups


def rescore(
    models: pd.DataFrame,
    tables: list[np.ndarray],
    groups: Groups,
    columns: Sequence[Combo],
    factors: int = FACTORS,
    device: str = "cpu",
) -> np.ndarray:
    """(models, combinations) Higgins score (mean over the runs' metric runs) of every code
    table under every combination: one batched higgins_many call per combination and group."""
    from raywae.metrics.beta_vae import PRESETS, higgins_many

    out = np.full((len(models), len(columns)), np.nan)
    for group, (grid, metrics) in groups.items():
        at = np.flatnonzero(models["group"].to_numpy() == group)
        seeds = [int(s) for s in models["seed"].to_numpy()[at]]
        for j, combo in enumerate(columns):
            preset = combo.preset(PRESETS[metrics.preset])
            batch = [tables[i] for i in at]
            scored = higgins_many(
                batch, grid, (factors,), preset, metrics.runs, seeds, device=device
            )
            out[at, j] = [per_set[0]["score"] for per_set in scored]
    return out


@cli.command
def main(argv: list[str] | None = None) -> int:
    from analysis.collect import runs_for
    from raywae.metrics.beta_vae import PRESETS
    from raywae.train import resolve_device

    p = cli.parser("python -m analysis.robustness", __doc__, table=True)
    p.add_argument("--pairs", type=int, nargs="+", default=[10, 30, 64], help="L (10 30 64)")
    p.add_argument(
        "--points", type=int, nargs="+", default=[1000, 5000], help="training points (1000 5000)"
    )
    p.add_argument(
        "--steps", type=int, nargs="+", default=[2000, 20_000, 100_000], help="Adagrad steps"
    )
    p.add_argument("--factors", type=int, choices=(4, 5), default=FACTORS, help="factor set (5)")
    p.add_argument("--limit", type=int, help="re-score at most this many models")
    p.add_argument("--device", default="auto", help="classifier device (auto: cuda if there)")
    args, target = cli.parse(p, argv)
    # One line per model is enough; MLflow's download bars would bury the table.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    runs = runs_for(target, args.table)
    models, tables, groups = code_tables(runs, target.tracking_uri, args.limit)
    presets = {metrics.preset for _, metrics in groups.values()}
    if len(presets) > 1:
        raise AnalysisError(f"the runs use several metric presets {sorted(presets)}: one sweep")
    base = PRESETS[presets.pop()]
    steps = args.steps if base.classifier == "softmax_adagrad" else None
    reference = Combo(base.pairs, base.num_train, base.steps if steps else None)
    columns = combos(reference, args.pairs, args.points, steps)
    device = str(resolve_device(args.device))
    scores = rescore(models, tables, groups, columns, args.factors, device)
    table = rank_stability(scores, models["setting"].tolist(), columns)
    per_model = models[["run_id", "setting", "seed"]].copy()
    per_model[[c.label for c in columns]] = scores
    out = target.out
    paths = [out / "robustness.csv", out / "robustness_scores.csv"]
    table.to_csv(paths[0], index=False)
    per_model.to_csv(paths[1], index=False)
    print(
        f"{len(models)} models, {table['n_settings'].max()} settings: metric/beta_vae_"
        f"{args.factors} re-scored under {len(columns)} combinations (reference first)"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    tags = {"raywae.analysis.robustness.reference": reference.label}
    cli.wrote(target, paths, "robustness", tags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
