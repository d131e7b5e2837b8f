"""metric/probe_accuracy (raywae.metrics.probe): codes that hold the label linearly score
~1, random codes score ~chance."""

from __future__ import annotations

import numpy as np

from raywae.metrics.probe import PROBE_TEST, PROBE_TRAIN, probe_accuracy, probe_rows


def labelled(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 3, n)
    codes = rng.normal(0, 1, (n, 16))
    return codes, labels


def test_codes_holding_the_label_score_one():
    rng = np.random.default_rng(0)
    (tr, ytr), (te, yte) = labelled(3000, rng), labelled(1000, rng)
    direction = rng.normal(0, 1, 16)
    tr, te = tr + 4 * ytr[:, None] * direction, te + 4 * yte[:, None] * direction
    assert probe_accuracy(tr, ytr, te, yte) > 0.98


def test_random_codes_score_chance():
    rng = np.random.default_rng(1)
    (tr, ytr), (te, yte) = labelled(3000, rng), labelled(3000, rng)
    assert abs(probe_accuracy(tr, ytr, te, yte) - 1 / 3) < 0.05


def test_rows_are_reproducible_and_capped():
    a, b = probe_rows(663_552, 73_728), probe_rows(663_552, 73_728)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert (len(a[0]), len(a[1])) == (PROBE_TRAIN, PROBE_TEST)
    small = probe_rows(300, 40)
    assert sorted(small[0].tolist()) == list(range(300)) and len(small[1]) == 40
