"""Disentanglement metrics: pure functions of a code table (len(grid), d) and its FactorGrid.

`encode_grid` makes the table once; `report` turns it into the run's `metric/...` log keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from raywae.data.grid import FactorGrid
from raywae.metrics.beta_vae import PRESETS, beta_vae_score, higgins_many, higgins_runs
from raywae.metrics.codes import encode_grid
from raywae.metrics.dci import dci, dci_exact
from raywae.metrics.factor_vae import factor_vae_score
from raywae.metrics.mig import mig
from raywae.metrics.sap import sap

Metric = Callable[..., dict[str, float]]

# disentanglement_lib's suite (PROTOCOL §8), each `f(codes, grid, seed=0) -> dict[str, float]`
EXTRA_METRICS: dict[str, Metric] = {
    "mig": mig,
    "dci": dci,  # histogram GBT (seconds)
    "dci_exact": dci_exact,  # disentanglement_lib's GradientBoostingClassifier (minutes)
    "factor_vae": factor_vae_score,
    "sap": sap,
}


def report(
    codes: np.ndarray,
    grid: FactorGrid,
    seed: int = 0,
    extra: Sequence[str] = (),
    runs: int = 3,
    preset: str = "rubenstein2018",
    steps: int | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Every metric of a run from one code table, under the project's log keys.

    codes: (len(grid), d). Higgins on 4 and 5 factors (PROTOCOL §6): "metric/beta_vae_{K}"
    (mean score of `runs`), "metric/beta_vae_{K}/run{i}", "metric/beta_vae_{K}/eval"
    (+ "/eval/run{i}"), the accuracy on fresh points. Each name in `extra` (keys of
    EXTRA_METRICS) adds "metric/{name}/{key}" per result key, "metric/{name}" where the
    key is the name itself (mig, sap). device: where the Higgins classifiers train.
    """
    return report_many([codes], grid, [seed], extra, runs, preset, steps, device)[0]


def report_many(
    tables: Sequence[np.ndarray],
    grid: FactorGrid,
    seeds: Sequence[int],
    extra: Sequence[str] = (),
    runs: int = 3,
    preset: str = "rubenstein2018",
    steps: int | None = None,
    device: str | torch.device = "cpu",
) -> list[dict[str, float]]:
    """`report` of several runs' code tables (a pack's members; seeds[i]: run i's seed): the
    Higgins classifiers of all of them, both factor sets and every run, train at once."""
    for name in extra:
        if name not in EXTRA_METRICS:
            raise KeyError(f"unknown metric {name!r}; known: {sorted(EXTRA_METRICS)}")
    higgins = higgins_many(tables, grid, (4, 5), preset, runs, seeds, steps, device=device)
    outs = []
    for codes, seed, per_set in zip(tables, seeds, higgins, strict=True):
        out: dict[str, float] = {}
        for k, res in zip((4, 5), per_set):
            base = f"metric/beta_vae_{k}"
            out[base] = res["score"]
            out[f"{base}/eval"] = res["eval_accuracy"]
            for i in range(runs):
                out[f"{base}/run{i}"] = res[f"score/run{i}"]
                out[f"{base}/eval/run{i}"] = res[f"eval_accuracy/run{i}"]
        for name in extra:
            for key, v in EXTRA_METRICS[name](codes, grid, seed=seed).items():
                out[f"metric/{name}" if key == name else f"metric/{name}/{key}"] = float(v)
        outs.append(out)
    return outs


__all__ = [
    "EXTRA_METRICS",
    "PRESETS",
    "beta_vae_score",
    "dci",
    "dci_exact",
    "encode_grid",
    "factor_vae_score",
    "higgins_many",
    "higgins_runs",
    "mig",
    "report",
    "report_many",
    "sap",
]
