"""Interpolation metrics of the lines benchmark (Berthelot et al. 2019; PROTOCOL §9): pure
functions of decoded frames, compared with reference lines from the same renderer.

The paper's protocol (brain-research/acai `lib/train.py` `eval_custom_lines32`, `lib/eval.py`):
512 test lines, line k interpolated to line 256 + k in 16 frames (endpoints included,
linear in z), each frame matched to the nearest of 10,000 reference lines by cosine
distance on its [−1, 1] pixels.
"""

from __future__ import annotations

import functools

import numpy as np

from raywae.data.lines import render_lines

REFERENCE_LINES = 10_000
LINES_INTERPOLATIONS, LINES_FRAMES = 256, 16  # the paper's 256 interpolations × 16 frames
COLLAPSED = 1e-4  # the paper's threshold: an interpolation that turns less has no score


@functools.cache
def reference_lines(n: int = REFERENCE_LINES) -> tuple[np.ndarray, np.ndarray]:
    """n lines at the paper's angles linspace(0, 2π − 2π/n, n): angles (n,) and unit-norm
    flattened images (n, 1024) float64 (cached: rendering 10,000 lines takes ~1 s)."""
    angles = np.linspace(0, 2 * np.pi - 2 * np.pi / n, n)
    refs = render_lines(angles).reshape(n, -1)
    refs = refs / np.linalg.norm(refs, axis=1, keepdims=True)
    refs.flags.writeable = False
    return angles, refs


def nearest_lines(
    frames: np.ndarray, references: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """frames: (..., 32, 32) in [−1, 1] -> (angle of the nearest reference line, its cosine
    distance 1 − cos(frame, line)), each of shape frames.shape[:-2]; ties go to the first
    reference line, as the paper's argmin."""
    angles, refs = references if references is not None else reference_lines()
    flat = frames.reshape(-1, refs.shape[1]).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    cos = (flat / np.maximum(norms, 1e-12)) @ refs.T  # (frames, n)
    best = cos.argmax(1)
    shape = frames.shape[:-2]
    return angles[best].reshape(shape), (1.0 - cos[np.arange(len(best)), best]).reshape(shape)


def smoothness_scores(theta: np.ndarray) -> np.ndarray:
    """theta: (I, N) nearest-line angles of I interpolations -> (I,) per-interpolation
    smoothness: the largest step of the unwrapped angle over its total change, minus
    1/(N − 1) (0 for evenly spaced angles, 1 − 1/(N − 1) for a single jump); NaN where the
    total change is below COLLAPSED (the ends map to the same line)."""
    unwrapped = np.unwrap(theta, axis=1)
    steps = np.abs(np.diff(unwrapped, axis=1))
    total = np.abs(unwrapped[:, -1] - unwrapped[:, 0])
    moved = total >= COLLAPSED
    ratio = steps.max(1) / np.where(moved, total, 1.0)
    return np.where(moved, ratio - 1.0 / (theta.shape[1] - 1), np.nan)


def interpolation_metrics(
    frames: np.ndarray, references: tuple[np.ndarray, np.ndarray] | None = None
) -> dict[str, float]:
    """frames: (I, N, 32, 32) in [−1, 1], I interpolations of N frames each (256 × 16 in the
    paper), endpoints included ->
    - interp_mean_distance: mean over all frames of the minimum cosine distance to the
      reference lines;
    - interp_smoothness: the paper's mean smoothness: the scores of the interpolations that
      turn summed, divided by the number of all of them (a collapsed interpolation adds 0,
      so a decoder that maps every code to one line scores a perfect 0; NaN when all are
      collapsed);
    - interp_smoothness_strict: the mean with a collapsed interpolation counted as the
      worst case, 1 − 1/(N − 1)."""
    theta, dist = nearest_lines(frames, references)
    scores = smoothness_scores(theta)
    collapsed = np.isnan(scores)
    worst = 1.0 - 1.0 / (frames.shape[1] - 1)
    paper = np.nan if collapsed.all() else float(np.nansum(scores) / len(scores))
    return {
        "interp_mean_distance": float(dist.mean()),
        "interp_smoothness": paper,
        "interp_smoothness_strict": float(np.where(collapsed, worst, scores).mean()),
    }
