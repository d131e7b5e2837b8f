"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018), §8.

Gradient-boosted trees per factor give the importance matrix R, as in disentanglement_lib.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier

from raywae.data.grid import FactorGrid
from raywae.metrics.codes import check_table, sample_codes


def importance_gbt(
    mus: np.ndarray, ys: np.ndarray, mus_test: np.ndarray, ys_test: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, float, float]:
    """One GradientBoostingClassifier (scikit-learn defaults) per factor.

    mus: (n, d), ys: (n, K) classes. Returns R (d, K) with R[i, k] the importance of code i
    for factor k, and mean train / test accuracy over factors (the informativeness).
    """
    d, k = mus.shape[1], ys.shape[1]
    r = np.zeros((d, k))
    train, test = [], []
    for j in range(k):
        model = GradientBoostingClassifier(random_state=seed)  # seeded: ties between features
        model.fit(mus, ys[:, j])
        r[:, j] = np.abs(model.feature_importances_)
        train.append(np.mean(model.predict(mus) == ys[:, j]))
        test.append(np.mean(model.predict(mus_test) == ys_test[:, j]))
    return r, float(np.mean(train)), float(np.mean(test))


def disentanglement_from_importance(r: np.ndarray) -> float:
    """D = Σ_i ρ_i (1 − H_K(P_i·)),  P_ik = R_ik / Σ_k R_ik,  ρ_i = Σ_k R_ik / Σ R,
    H_K the entropy in base K (number of factors). r: (d, K) importance matrix."""
    per_code = 1.0 - scipy.stats.entropy(r.T + 1e-11, base=r.shape[1])
    weights = r if r.sum() > 0 else np.ones_like(r)
    # clip: the 1e-11 smoothing leaves ±1e-10 around the exact 0 and 1
    return float(np.clip(np.sum(per_code * weights.sum(axis=1) / weights.sum()), 0.0, 1.0))


def completeness_from_importance(r: np.ndarray) -> float:
    """C = Σ_k ρ_k (1 − H_d(P̃_·k)),  P̃_ik = R_ik / Σ_i R_ik,  ρ_k = Σ_i R_ik / Σ R,
    H_d the entropy in base d (number of codes). r: (d, K) importance matrix."""
    per_factor = 1.0 - scipy.stats.entropy(r + 1e-11, base=r.shape[0])
    weights = r if r.sum() > 0 else np.ones_like(r)
    return float(np.clip(np.sum(per_factor * weights.sum(axis=0) / weights.sum()), 0.0, 1.0))


def dci(
    codes: np.ndarray,
    grid: FactorGrid,
    seed: int = 0,
    num_train: int = 10_000,
    num_test: int = 5000,
) -> dict[str, float]:
    """DCI of a code table over the grid's varying factors.

    codes: (len(grid), d); 10,000 train / 5,000 test images uniform over the grid.
    Returns {"disentanglement", "completeness", "informativeness_train",
    "informativeness_test"}, the last two the mean GBT accuracy over factors (in [0, 1]).
    The slowest metric: orientation alone fits 40 × 100 trees.
    """
    rng = np.random.default_rng(seed)
    codes = check_table(codes, grid)
    mus, ys = sample_codes(codes, grid, num_train, rng)
    mus_test, ys_test = sample_codes(codes, grid, num_test, rng)
    r, train, test = importance_gbt(mus, ys, mus_test, ys_test, seed)
    return {
        "disentanglement": disentanglement_from_importance(r),
        "completeness": completeness_from_importance(r),
        "informativeness_train": train,
        "informativeness_test": test,
    }
