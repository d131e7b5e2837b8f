"""The ACAI lines benchmark (Berthelot et al. 2019; PROTOCOL §9): procedural, no download.

A 32×32 image in [−1, 1]: background −1, an anti-aliased line of width 2 and length 15 from
the image centre at an angle θ ~ U[0, 2π).
"""

from __future__ import annotations

import numpy as np

LINE_SIDE = 32
LINE_LENGTH = 15.0
LINE_WIDTH = 2.0
LINES_TRAIN, LINES_TEST = 32_768, 1_024
LINES_SEED = 0  # the benchmark's own seed: every run sees the same train / test lines


def render_lines(angles: np.ndarray) -> np.ndarray:
    """angles: (n,) radians -> (n, 32, 32) float32 in [−1, 1].

    Pixel coverage is approximated separably: across the line a 1-px ramp of the distance to
    the axis (|perp| ≤ w/2 − ½ full, ≥ w/2 + ½ empty), along it a 1-px ramp at both ends of
    the segment [0, L]; so each image's ink Σ(v + 1)/2 is close to L·w = 30. y grows upwards
    (row 0 is the top); the centre is the corner shared by the 4 middle pixels."""
    angles = np.asarray(angles, dtype=np.float64)
    c = (np.arange(LINE_SIDE) + 0.5) - LINE_SIDE / 2  # pixel centres relative to the centre
    px, py = c[None, None, :], -c[None, :, None]  # (1, 1, 32) columns, (1, 32, 1) rows
    dx, dy = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    along = px * dx + py * dy
    perp = np.abs(px * dy - py * dx)
    across = np.clip(LINE_WIDTH / 2 + 0.5 - perp, 0.0, 1.0)
    lengthwise = np.clip(np.minimum(along + 0.5, LINE_LENGTH + 0.5 - along), 0.0, 1.0)
    return (2.0 * across * lengthwise - 1.0).astype(np.float32)


def lines_split(
    n_train: int = LINES_TRAIN, n_test: int = LINES_TEST, seed: int = LINES_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test angles, (n_train,) and (n_test,) float64 in [0, 2π), drawn with `seed`."""
    angles = np.random.default_rng(seed).uniform(0.0, 2 * np.pi, n_train + n_test)
    return angles[:n_train], angles[n_train:]
