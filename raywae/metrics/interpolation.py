"""Interpolation metrics of the lines benchmark (Berthelot et al. 2019; PROTOCOL §9): pure
functions of decoded frames, compared with reference lines at evenly spaced angles."""

from __future__ import annotations

import numpy as np

from raywae.data.lines import render_lines

REFERENCE_LINES = 10_000


def reference_lines(n: int = REFERENCE_LINES) -> tuple[np.ndarray, np.ndarray]:
    """n lines at angles 2πk/n: angles (n,) and unit-norm flattened images (n, 1024)."""
    angles = 2 * np.pi * np.arange(n) / n
    refs = render_lines(angles).reshape(n, -1).astype(np.float64)
    return angles, refs / np.linalg.norm(refs, axis=1, keepdims=True)


def nearest_lines(
    frames: np.ndarray, references: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """frames: (..., 32, 32) in [−1, 1] -> (angle of the nearest reference line, its cosine
    distance 1 − cos(frame, line)), each of shape frames.shape[:-2]."""
    angles, refs = references if references is not None else reference_lines()
    flat = frames.reshape(-1, refs.shape[1]).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    cos = (flat / np.maximum(norms, 1e-12)) @ refs.T  # (frames, n)
    best = cos.argmax(1)
    shape = frames.shape[:-2]
    return angles[best].reshape(shape), (1.0 - cos[np.arange(len(best)), best]).reshape(shape)


def interpolation_metrics(
    frames: np.ndarray, references: tuple[np.ndarray, np.ndarray] | None = None
) -> dict[str, float]:
    """frames: (I, N, 32, 32) in [−1, 1], I interpolations of N frames each (16 × 16 in the
    paper), endpoints included. Mean Distance: mean over all frames of the minimum cosine
    distance to the reference lines. Smoothness: per interpolation, the largest step of the
    unwrapped nearest-line angle over the total change, minus 1/(N − 1) (0 for evenly
    spaced angles, 1 − 1/(N − 1) for a single jump); averaged over interpolations. An
    interpolation whose ends map to the same line (no total change, e.g. a collapsed
    decoder) counts as the worst case, ratio 1."""
    theta, dist = nearest_lines(frames, references)
    unwrapped = np.unwrap(theta, axis=1)
    steps = np.abs(np.diff(unwrapped, axis=1))
    total = np.abs(unwrapped[:, -1] - unwrapped[:, 0])
    n = frames.shape[1]
    moved = total > 1e-9
    ratio = np.where(moved, steps.max(1) / np.where(moved, total, 1.0), 1.0)
    smooth = ratio - 1.0 / (n - 1)
    return {"interp_mean_distance": float(dist.mean()), "interp_smoothness": float(smooth.mean())}
