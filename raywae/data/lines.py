"""The ACAI lines benchmark (Berthelot et al. 2019; PROTOCOL §9): procedural, no download.

A 32×32 image in [−1, 1]: background −1, a line of width 2 from the centre (16, 16) to the
point 15 px away at angle θ, scan-converted pixel for pixel as the paper's own renderer
(brain-research/acai `lib/data.py` `draw_line`) does it. Its conventions, kept here:
- θ is counter-clockwise from the +x axis (column) with rows growing downwards: the tip is
  at (row, column) = (16 − 15·sin θ, 16 + 15·cos θ); θ = 0 points right, π/2 up.
- The line is scanned along its major axis (rows if |Δrow| ≥ |Δcol|, else columns) from its
  lower to its higher end. Major pixel k ∈ [⌊a₀⌋, ⌈a₁⌉) has weight ⌈a₀⌉ − a₀ if it is the
  partial first one, else 1 (the far end is never partial). Across it, the band
  [s, s + 2) with s = b₀ − 1 + (k − a₀ − ½)·Δb/Δa covers its pixels: fully the ones inside,
  by the covered fraction the two it cuts.
- A pixel covered with weight·fraction c is 2c − 1, clipped to [−1, 1].
"""

from __future__ import annotations

import math

import numpy as np

LINE_SIDE = 32
LINE_WIDTH = 2.0
LINES_TRAIN, LINES_TEST = 32_768, 5_000  # the fixed train set (an option); the paper's test set
LINES_SEED = 0  # the benchmark's own seed: every run sees the same test lines (and fixed set)
# the paper's class of a line, int(10·θ / (2π − 1e-6)): what its latent-space probe predicts
LINE_CLASSES = 10


def line_labels(angles: np.ndarray) -> np.ndarray:
    """(n,) angles in [0, 2π) -> (n,) int64 classes 0..9, the paper's labels."""
    return (LINE_CLASSES * np.asarray(angles) / (2 * math.pi - 1e-6)).astype(np.int64)


def _ends(angle: float, side: int) -> tuple[float, float, float, float, bool]:
    """One line's scan: (a0, a1, b0, b1, flip). a: the major coordinate, a0 ≤ a1; b: the
    minor one, shifted by −w/2; flip: the major axis is the column axis."""
    row0 = col0 = side * 0.5
    col1 = col0 + (col0 - 1) * math.cos(-angle)
    row1 = row0 + (row0 - 1) * math.sin(-angle)
    flip = abs(row0 - row1) < abs(col0 - col1)
    (a0, b0), (a1, b1) = ((col0, row0), (col1, row1)) if flip else ((row0, col0), (row1, col1))
    if a1 < a0:
        (a0, b0), (a1, b1) = (a1, b1), (a0, b0)
    return a0, a1, b0 - LINE_WIDTH / 2, b1 - LINE_WIDTH / 2, flip


def render_lines(angles: np.ndarray, side: int = LINE_SIDE) -> np.ndarray:
    """angles: (n,) radians -> (n, side, side) float64 in [−1, 1], the paper's pixels.

    Vectorised over lines and their ≤ side/2 + 1 major pixels; the cos / sin of each angle
    come from `math`, as in the paper, and every other step is the same IEEE operation in
    the same order, so the pixels are the paper's to the bit on the same machine."""
    angles = np.asarray(angles, dtype=np.float64).reshape(-1)
    n = len(angles)
    if n == 0:
        return np.zeros((0, side, side))
    a0, a1, b0, b1, flip = (np.array(v) for v in zip(*(_ends(t, side) for t in angles)))
    slope = (b1 - b0) / (a1 - a0)  # a1 > a0: the major axis spans ≥ 15/√2 px
    first = np.floor(a0)
    k = first[:, None] + np.arange(side // 2 + 2)[None, :]  # (n, K) major pixels
    inside = k < np.ceil(a1)[:, None]
    head = np.ceil(a0)[:, None]
    weight = np.where(k < head, head - a0[:, None], 1.0)
    start = b0[:, None] + (k - a0[:, None] - 0.5) * slope[:, None]
    end = start + LINE_WIDTH
    lo, hi = np.ceil(start), np.floor(end)  # the band's fully covered pixels: [lo, hi)
    # 3 minor pixels per major pixel from ⌊start⌋: cut + full + cut, or full + full
    j = np.floor(start)[..., None] + np.arange(3)
    cover = np.where((j >= lo[..., None]) & (j < hi[..., None]), 1.0, 0.0)
    cover = np.where((j == np.floor(start)[..., None]) & (lo != start)[..., None],
                     (lo - start)[..., None], cover)  # fmt: skip
    cover = np.where((j == hi[..., None]) & (hi != end)[..., None], (end - hi)[..., None], cover)
    lit = inside[..., None] & (cover > 0)
    value = 2 * (weight[..., None] * cover) - 1
    line, kk, jj = np.nonzero(lit)
    major, minor = k[line, kk].astype(np.int64), j[line, kk, jj].astype(np.int64)
    rows = np.where(flip[line], minor, major)
    cols = np.where(flip[line], major, minor)
    out = np.full((n, side, side), -1.0)
    out[line, rows, cols] = value[line, kk, jj]
    return np.clip(out, -1.0, 1.0)


def draw_angles(u: np.ndarray) -> np.ndarray:
    """U[0, 1) draws -> angles θ = 2π·u, the paper's θ ~ U[0, 2π)."""
    return 2 * math.pi * np.asarray(u, dtype=np.float64)


def lines_split(
    n_train: int = LINES_TRAIN, n_test: int = LINES_TEST, seed: int = LINES_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Test and fixed-train angles, (n_train,) and (n_test,) float64 in [0, 2π), drawn with
    `seed` (the test lines first, so they stay the same whatever n_train is)."""
    angles = draw_angles(np.random.default_rng(seed).random(n_test + n_train))
    return angles[n_test:], angles[:n_test]
