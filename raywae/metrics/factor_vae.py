"""FactorVAE score (Kim & Mnih 2018), disentanglement_lib defaults (PROTOCOL §8)."""

from __future__ import annotations

import numpy as np

from raywae.data.grid import FactorGrid
from raywae.metrics.codes import check_table


def factor_votes(
    codes: np.ndarray,
    grid: FactorGrid,
    n: int,
    batch: int,
    scale: np.ndarray,
    active: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """(K, d) vote counts: each vote fixes a random varying factor k at one value across
    `batch` images (others uniform) and votes for argmin_i Var(z_i) / Var_global(z_i)
    over the active dims. codes: (len(grid), d); scale: (d,) global variances."""
    varying = np.array(grid.varying)
    k = rng.integers(0, len(varying), size=n)
    classes = grid.sample(n * batch, rng).reshape(n, batch, -1)
    fixed = varying[k]
    classes[np.arange(n), :, fixed] = classes[np.arange(n), 0, fixed][:, None]
    z = codes[grid.index(classes.reshape(n * batch, -1))].reshape(n, batch, -1)
    local = z.var(axis=1, ddof=1)[:, active] / scale[active]
    votes = np.zeros((len(varying), codes.shape[1]), dtype=np.int64)
    np.add.at(votes, (k, np.flatnonzero(active)[local.argmin(axis=1)]), 1)
    return votes


def factor_vae_score(
    codes: np.ndarray,
    grid: FactorGrid,
    seed: int = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10_000,
    prune_threshold: float = 0.05,
) -> dict[str, float]:
    """FactorVAE score: accuracy of the majority-vote classifier dim -> factor.

    codes: (len(grid), d). Global variances from `num_variance_estimate` images (ddof 1);
    dims with std < prune_threshold are ignored (collapsed to the prior); a training vote
    per `factor_votes`; classifier c(i) = argmax_k votes[k, i]; accuracy = Σ_i votes[c(i), i]
    / Σ votes on 10,000 train and 5,000 fresh eval votes. No active dim -> 0 (as the
    library). Returns {"train_accuracy", "eval_accuracy", "num_active_dims"}.
    """
    codes = check_table(codes, grid)
    rng = np.random.default_rng(seed)
    variances = codes[grid.index(grid.sample(num_variance_estimate, rng))].var(axis=0, ddof=1)
    active = np.sqrt(variances) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0.0}
    train = factor_votes(codes, grid, num_train, batch_size, variances, active, rng)
    classifier = train.argmax(axis=0)
    cols = np.arange(train.shape[1])
    evals = factor_votes(codes, grid, num_eval, batch_size, variances, active, rng)
    return {
        "train_accuracy": float(train[classifier, cols].sum() / train.sum()),
        "eval_accuracy": float(evals[classifier, cols].sum() / evals.sum()),
        "num_active_dims": float(active.sum()),
    }
