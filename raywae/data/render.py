"""Procedural dSprites renderer: the same grid and order as the real file (PROTOCOL §2).

Each image is a shape point-sampled at pixel centres; pixels depend only on latent values.
"""

from __future__ import annotations

import numpy as np

from raywae.data.grid import FactorGrid

RENDER_VERSION = "v0-draft"

IMAGE_SIZE = 64
SQUARE_HALF = 10.0  # half side in pixels at scale 1 (the real square is 20x20)
ELLIPSE_AXES = (10.0, 5.0)  # semi-axes at scale 1
HEART_SIZE = 10.0


def _inside(shape: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a, b: shape-frame coordinates at scale 1 (pixels) -> bool mask of the same shape."""
    if shape == 1:
        return np.maximum(np.abs(a), np.abs(b)) <= SQUARE_HALF
    if shape == 2:
        return (a / ELLIPSE_AXES[0]) ** 2 + (b / ELLIPSE_AXES[1]) ** 2 <= 1.0
    # heart: a square turned 45 degrees plus two discs on its upper sides (b grows downward)
    h = HEART_SIZE
    p, q = (a + b) / np.sqrt(2), (b - a) / np.sqrt(2)
    r = h * 0.5
    body = np.maximum(np.abs(p + 0.2 * h), np.abs(q + 0.2 * h)) <= r
    lobe1 = (p + 0.2 * h) ** 2 + (q + 0.2 * h + r) ** 2 <= r * r
    lobe2 = (p + 0.2 * h + r) ** 2 + (q + 0.2 * h) ** 2 <= r * r
    return body | lobe1 | lobe2


def render_images(grid: FactorGrid, index: np.ndarray) -> np.ndarray:
    """index: (n,) flat indices into `grid` -> (n, 64, 64) uint8 in {0, 1}, real dSprites order."""
    index = np.asarray(index, dtype=np.int64)
    out = np.zeros((len(index), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    if len(index) == 0:
        return out
    vals = grid.latent_values(grid.classes(index))
    keys, inverse = np.unique(vals[:, 1:4], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for g, (shape, scale, theta) in enumerate(keys):
        members = np.flatnonzero(inverse == g)
        width = int(np.ceil(2 * 1.5 * HEART_SIZE * scale)) + 4
        cx = 16.0 + 32.0 * vals[members, 4]
        cy = 16.0 + 32.0 * vals[members, 5]
        x0 = np.clip(np.floor(cx).astype(np.int64) - width // 2, 0, IMAGE_SIZE - width)
        y0 = np.clip(np.floor(cy).astype(np.int64) - width // 2, 0, IMAGE_SIZE - width)
        xs = x0[:, None] + np.arange(width)
        ys = y0[:, None] + np.arange(width)
        u = (xs + 0.5 - cx[:, None])[:, None, :]
        v = (ys + 0.5 - cy[:, None])[:, :, None]
        c, s = np.cos(theta), np.sin(theta)
        a = (c * u + s * v) / scale
        b = (-s * u + c * v) / scale
        mask = _inside(int(shape), a, b)
        out[members[:, None, None], ys[:, :, None], xs[:, None, :]] = mask
    return out
