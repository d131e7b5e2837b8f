"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018), §8.

Gradient-boosted trees per factor give the importance matrix R. `dci` fits scikit-learn's
histogram GBT (HistGradientBoostingClassifier, same depth / trees / step as the library
default; importance = the trees' summed split gains); `dci_exact` fits disentanglement_lib's
GradientBoostingClassifier (minutes per model on a CPU). Agreement: bench/dci_agreement.py.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from raywae.data.grid import FactorGrid
from raywae.metrics.codes import check_table, sample_codes


def hist_gbt(seed: int) -> HistGradientBoostingClassifier:
    """The histogram GBT with GradientBoostingClassifier's defaults where both have them:
    100 boosting rounds, step 0.1, depth 3 (8 leaves), leaves of any size; no early stopping."""
    return HistGradientBoostingClassifier(
        max_iter=100,
        learning_rate=0.1,
        max_depth=3,
        max_leaf_nodes=None,
        min_samples_leaf=1,
        early_stopping=False,
        random_state=seed,
    )


def hist_gbt_importance(model: HistGradientBoostingClassifier, d: int) -> np.ndarray:
    """(d,) split-gain importance of a fitted HistGradientBoostingClassifier, summing to 1
    (0 everywhere if no split): the analogue of GradientBoostingClassifier's impurity
    importance, which scikit-learn does not expose for the histogram trees. Reads the
    fitted trees (`_predictors`, private): tests pin it against the exact GBT."""
    r = np.zeros(d)
    for trees in model._predictors:  # one list of (1 or n_classes) trees per round
        for tree in trees:
            split = tree.nodes[tree.nodes["is_leaf"] == 0]
            np.add.at(r, split["feature_idx"], split["gain"])
    return r / r.sum() if r.sum() > 0 else r


def importance_gbt(
    mus: np.ndarray,
    ys: np.ndarray,
    mus_test: np.ndarray,
    ys_test: np.ndarray,
    seed: int = 0,
    exact: bool = True,
) -> tuple[np.ndarray, float, float]:
    """One gradient-boosted classifier per factor: GradientBoostingClassifier (scikit-learn
    defaults, exact) or the histogram one (`hist_gbt`, exact=False).

    mus: (n, d), ys: (n, K) classes. Returns R (d, K) with R[i, k] the importance of code i
    for factor k, and mean train / test accuracy over factors (the informativeness).
    """
    d, k = mus.shape[1], ys.shape[1]
    r = np.zeros((d, k))
    train, test = [], []
    for j in range(k):
        if exact:
            model = GradientBoostingClassifier(random_state=seed)  # seeded: feature ties
            model.fit(mus, ys[:, j])
            r[:, j] = np.abs(model.feature_importances_)
        else:
            # One OpenMP thread, for fit and predict: on shared cores (several trials per
            # node) the histogram GBT's spin-waiting threads took >15x longer
            # (bench/dci_agreement.py's note).
            with threadpool_limits(1):
                model = hist_gbt(seed).fit(mus, ys[:, j])
            r[:, j] = hist_gbt_importance(model, d)
        with threadpool_limits(1):
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
    exact: bool = False,
) -> dict[str, float]:
    """DCI of a code table over the grid's varying factors.

    codes: (len(grid), d); 10,000 train / 5,000 test images uniform over the grid.
    exact: disentanglement_lib's GradientBoostingClassifier (orientation alone fits
    40 × 100 trees: minutes per table) instead of the histogram GBT (seconds).
    Returns {"disentanglement", "completeness", "informativeness_train",
    "informativeness_test"}, the last two the mean GBT accuracy over factors (in [0, 1]).
    """
    rng = np.random.default_rng(seed)
    codes = check_table(codes, grid)
    mus, ys = sample_codes(codes, grid, num_train, rng)
    mus_test, ys_test = sample_codes(codes, grid, num_test, rng)
    r, train, test = importance_gbt(mus, ys, mus_test, ys_test, seed, exact)
    return {
        "disentanglement": disentanglement_from_importance(r),
        "completeness": completeness_from_importance(r),
        "informativeness_train": train,
        "informativeness_test": test,
    }


def dci_exact(
    codes: np.ndarray,
    grid: FactorGrid,
    seed: int = 0,
    num_train: int = 10_000,
    num_test: int = 5000,
) -> dict[str, float]:
    """`dci` with disentanglement_lib's GradientBoostingClassifier (the slow reference)."""
    return dci(codes, grid, seed, num_train, num_test, exact=True)
