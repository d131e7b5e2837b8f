"""Cheap estimates of the final scores during training (`proxy/...` keys): the Higgins score on
a subgrid with fewer points, one classifier and fewer steps. Test reconstruction's estimate
(`proxy/recon`: the first 5,000 test images) is the Trainer's own evaluation."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from raywae.config import MetricsConfig
from raywae.data.grid import FactorGrid
from raywae.metrics.beta_vae import PRESETS, HigginsPreset, higgins_many

FACTOR_SETS = (4, 5)


def proxy_preset(metrics: MetricsConfig) -> HigginsPreset:
    """The run's Higgins preset (its classifier, which accuracy is the score) at the proxy's
    points, pairs and Adagrad steps."""
    p = metrics.proxy
    return dataclasses.replace(
        PRESETS[metrics.preset], pairs=p.pairs, num_train=p.points, num_eval=p.points, steps=p.steps
    )


def proxy_grid(grid: FactorGrid, metrics: MetricsConfig) -> FactorGrid:
    """The proxy's subgrid of the metric grid `grid`."""
    return grid.subgrid(metrics.proxy.grid_subsample)


def higgins_proxy(
    tables: Sequence[np.ndarray],
    grid: FactorGrid,
    seeds: Sequence[int],
    metrics: MetricsConfig,
    device: str | torch.device = "cpu",
) -> list[dict[str, float]]:
    """proxy/beta_vae_4 and proxy/beta_vae_5 of each code table (tables[i]: (len(grid), d)
    over the proxy grid, model seeds[i]): one classifier per factor set, all fitted at once."""
    scores = higgins_many(tables, grid, FACTOR_SETS, proxy_preset(metrics), 1, seeds, device=device)
    return [
        {f"proxy/beta_vae_{k}": res["score"] for k, res in zip(FACTOR_SETS, per_set)}
        for per_set in scores
    ]
