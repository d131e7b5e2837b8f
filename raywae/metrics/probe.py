"""The ACAI paper's representation check (Berthelot et al. 2019, Table 2): a single-layer
classifier on the codes, test accuracy (issue 19 item 5). A pure function of codes and
labels; which labels is the dataset's business (dSprites: shape, MNIST: the digit)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

PROBE_TRAIN, PROBE_TEST = 10_000, 5_000
PROBE_SEED = 0  # every run probes the same images: accuracies compare across runs


def probe_rows(n_train: int, n_test: int, seed: int = PROBE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Positions of at most PROBE_TRAIN of n_train train and PROBE_TEST of n_test test
    images, drawn without replacement with `seed`, each sorted."""
    rng = np.random.default_rng(seed)
    train = rng.choice(n_train, size=min(PROBE_TRAIN, n_train), replace=False)
    test = rng.choice(n_test, size=min(PROBE_TEST, n_test), replace=False)
    return np.sort(train), np.sort(test)


def probe_accuracy(
    train_codes: np.ndarray,
    train_labels: np.ndarray,
    test_codes: np.ndarray,
    test_labels: np.ndarray,
    seed: int = PROBE_SEED,
) -> float:
    """train_codes: (n, d) encoder means, train_labels: (n,) int; the test pair likewise ->
    the test accuracy of a multinomial logistic regression (scikit-learn's lbfgs, its
    defaults: C = 1, 100 iterations; codes standardised by the train codes' mean and std so
    the regularisation means the same for every code scale)."""
    mean, std = train_codes.mean(0), train_codes.std(0) + 1e-8
    model = LogisticRegression(random_state=seed)
    with warnings.catch_warnings():  # a non-converged fit is still a valid probe
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit((train_codes - mean) / std, train_labels)
    return float(model.score((test_codes - mean) / std, test_labels))
