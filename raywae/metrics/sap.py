"""Separated Attribute Predictability (Kumar et al. 2018), disentanglement_lib defaults (§8)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from raywae.data.grid import FactorGrid
from raywae.metrics.codes import check_table, sample_codes


def continuous_score_matrix(mus: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(d, K) R² = Cov(z_i, y_k)² / (Var z_i · Var y_k), 0 for a constant code
    (disentanglement_lib's `continuous_factors=True` branch; Kumar et al. 2018 §3)."""
    mus, ys = mus - mus.mean(0), ys - ys.mean(0)
    cov = mus.T @ ys / (len(mus) - 1)
    var_z, var_y = mus.var(0, ddof=1), ys.var(0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = cov**2 / (var_z[:, None] * var_y[None, :])
    return np.where(var_z[:, None] > 1e-12, r2, 0.0)


def sap_score_matrix(
    mus: np.ndarray, ys: np.ndarray, mus_test: np.ndarray, ys_test: np.ndarray, seed: int = 0
) -> np.ndarray:
    """(d, K) test accuracy of a LinearSVC(C=0.01, class_weight="balanced") predicting factor
    k from the single code dim i (disentanglement_lib, discrete factors).

    mus: (n, d), ys: (n, K) classes; *_test likewise. A factor with one class in the training
    sample (a tiny grid) is predicted as that class: LinearSVC refuses a single class.
    """
    d, k = mus.shape[1], ys.shape[1]
    scores = np.zeros((d, k))
    for i in range(d):
        for j in range(k):
            if len(np.unique(ys[:, j])) < 2:
                scores[i, j] = np.mean(ys_test[:, j] == ys[0, j])
                continue
            clf = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
            with warnings.catch_warnings():  # the library's defaults, convergence or not
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(mus[:, i : i + 1], ys[:, j])
            scores[i, j] = np.mean(clf.predict(mus_test[:, i : i + 1]) == ys_test[:, j])
    return scores


def avg_diff_top_two(scores: np.ndarray) -> float:
    """SAP = (1/K) Σ_k (S_(1)k − S_(2)k), the gap between the best and second-best code."""
    ordered = np.sort(scores, axis=0)
    if len(ordered) < 2:
        return float(np.mean(ordered[-1]))
    return float(np.mean(ordered[-1] - ordered[-2]))


def sap(
    codes: np.ndarray,
    grid: FactorGrid,
    seed: int = 0,
    num_train: int = 10_000,
    num_test: int = 5000,
    continuous_factors: bool = False,
) -> dict[str, float]:
    """SAP of a code table over the grid's varying factors: {"sap": float in [0, 1]}.

    codes: (len(grid), d); 10,000 train / 5,000 test images uniform over the grid.
    Each score is a 1-D linear one-vs-rest classifier's accuracy: it can carve an ordered
    code into few classes, so a factor with many values (orientation 40, position 32) is
    predicted poorly even from a perfect code and SAP stays well below 1 for true factors
    (dSprites: ≈ 0.2 for codes equal to the factor values or classes). continuous_factors
    scores R² instead (`continuous_score_matrix`): the true factors then score ≈ 1.
    """
    rng = np.random.default_rng(seed)
    codes = check_table(codes, grid)
    mus, ys = sample_codes(codes, grid, num_train, rng)
    mus_test, ys_test = sample_codes(codes, grid, num_test, rng)
    if continuous_factors:
        return {"sap": avg_diff_top_two(continuous_score_matrix(mus, ys.astype(np.float64)))}
    return {"sap": avg_diff_top_two(sap_score_matrix(mus, ys, mus_test, ys_test, seed))}
