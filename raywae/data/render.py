"""Procedural dSprites renderer: the real grid, in the real order (PROTOCOL §2).

Shapes are point-sampled at pixel centres; the geometry was measured on real frames
(`bench/render_fidelity.py` checks it) and pixels depend only on the latent values.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from raywae.data.grid import FactorGrid

# Bump whenever any pixel changes: it is part of the dataset cache key.
RENDER_VERSION = "1"

IMAGE_SIZE = 64
# Pixel i has its centre at coordinate i. posX = 0 puts the shape's reference point at
# column 15.5 and posX = 1 at 47.5: 32 px over 31 steps, so positions are sub-pixel and
# every image is sampled afresh (no sprite shifting). posX moves along columns, posY along
# rows (downward).
POSITION_ORIGIN = 15.5
POSITION_SPAN = 32.0

# Geometry in pixels at scale 1 (a scale multiplies every length). Fitted to the real
# frames: the square matches 62 of 64 frames pixel for pixel, the ellipse 60 of 64.
SQUARE_HALF_SIDE = 9.6  # 0.15 of the frame: a 20x20 px square at orientation 0
ELLIPSE_SEMI_AXES = (12.77, 7.21)  # horizontal, vertical at orientation 0
# Heart: a polygon, star-shaped about the rotation centre and mirror-symmetric. Radii of
# the right half's vertices at 3-degree steps, from straight up (the notch between the
# lobes) to straight down (the tip); traced from the real frames.
HEART_STEP_DEG = 3.0
HEART_RADII = np.array(
    [5.17, 6.08, 6.98, 7.66, 8.32, 8.89, 9.40, 9.81, 10.18, 10.46, 10.71, 10.91, 11.06]
    + [11.16, 11.22, 11.24, 11.26, 11.20, 11.12, 11.02, 10.88, 10.71, 10.49, 10.24, 9.99]
    + [9.73, 9.37, 9.07, 8.75, 8.45, 8.14, 7.84, 7.54, 7.30, 7.08, 6.87, 6.69, 6.53, 6.39]
    + [6.27, 6.15, 6.07, 6.01, 5.96, 5.91, 5.89, 5.91, 5.93, 5.95, 6.00, 6.08, 6.19, 6.31]
    + [6.44, 6.59, 6.84, 7.14, 7.49, 7.84, 8.55, 9.62]
)


def _heart_vertices() -> np.ndarray:
    """The heart polygon at scale 1: (120, 2) float64 (a, b) pixels, in order from the notch."""
    angles = np.radians(-90.0 + HEART_STEP_DEG * np.arange(len(HEART_RADII)))
    right = HEART_RADII[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    left = right[-2:0:-1] * np.array([-1.0, 1.0])
    return np.concatenate([right, left])


def _heart_edges() -> tuple[np.ndarray, np.ndarray]:
    """Half-planes of the heart's right-half edges: inside edge k iff normal[k] . p <= offset[k].

    normal: (60, 2) float64, offset: (60,) float64, for p = (|a|, b) in sector k.
    """
    vertices = _heart_vertices()[: len(HEART_RADII)]
    edge = vertices[1:] - vertices[:-1]
    normal = np.stack([edge[:, 1], -edge[:, 0]], axis=1)
    offset = np.einsum("kd,kd->k", normal, vertices[:-1])
    flip = np.where(offset < 0, -1.0, 1.0)  # orient each normal away from the centre
    return normal * flip[:, None], offset * flip


_HEART_NORMAL, _HEART_OFFSET = _heart_edges()


def inside_shape(shape: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact membership test in the shape's own frame at scale 1.

    shape: latent value (1 square, 2 ellipse, 3 heart); a, b: any equal shapes, float64
    pixels (a to the right, b downward at orientation 0) -> bool of the same shape.
    """
    if shape == 1:
        return np.maximum(np.abs(a), np.abs(b)) <= SQUARE_HALF_SIDE
    if shape == 2:
        ra, rb = ELLIPSE_SEMI_AXES
        return (a / ra) ** 2 + (b / rb) ** 2 <= 1.0
    if shape == 3:
        a = np.abs(a)  # mirror symmetry: only the right half is stored
        sector = np.floor((np.arctan2(b, a) + np.pi / 2) / math.radians(HEART_STEP_DEG))
        sector = np.clip(sector.astype(np.int64), 0, len(_HEART_OFFSET) - 1)
        normal = _HEART_NORMAL[sector]
        return normal[..., 0] * a + normal[..., 1] * b <= _HEART_OFFSET[sector]
    raise ValueError(f"unknown dSprites shape value {shape!r}; expected 1, 2 or 3")


# The heart's exact test is costly (arctan2, gathers); a table of 1/8-px cells answers it for
# every cell the outline does not touch, and only the rest go to the exact test.
_CELLS_PER_PX = 8
_TABLE_REACH = 11.5  # px; every heart radius is below it


@functools.cache
def _heart_table() -> np.ndarray:
    """(2n + 2, n + 1) uint8 over |a| in [0, reach), b in [-reach, reach), one cell of zeros
    as border: 0 outside, 1 inside, 2 the outline passes within the cell (test exactly)."""
    n = int(_TABLE_REACH * _CELLS_PER_PX)
    centre_a = (np.arange(n) + 0.5) / _CELLS_PER_PX
    centre_b = (np.arange(2 * n) + 0.5) / _CELLS_PER_PX - _TABLE_REACH
    pa, pb = np.meshgrid(centre_a, centre_b)  # (2n, n)
    start = _heart_vertices()
    edge = np.roll(start, -1, axis=0) - start
    da, db = pa[..., None] - start[:, 0], pb[..., None] - start[:, 1]  # (2n, n, 120)
    t = np.clip((da * edge[:, 0] + db * edge[:, 1]) / (edge**2).sum(1), 0.0, 1.0)
    dist = np.hypot(da - t * edge[:, 0], db - t * edge[:, 1]).min(axis=-1)
    state = inside_shape(3, pa, pb).astype(np.uint8)
    state[dist <= math.sqrt(0.5) / _CELLS_PER_PX + 1e-6] = 2
    table = np.zeros((2 * n + 2, n + 1), dtype=np.uint8)
    table[1:-1, :-1] = state
    return table


def _inside_fast(shape: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Same answer as `inside_shape`, faster for the heart."""
    if shape != 3:
        return inside_shape(shape, a, b)
    table = _heart_table()
    n = table.shape[1] - 1
    col = np.minimum(np.abs(a) * _CELLS_PER_PX, n).astype(np.int64)
    row = np.clip(np.floor((b + _TABLE_REACH) * _CELLS_PER_PX) + 1, 0, 2 * n + 1).astype(np.int64)
    state = table[row, col]
    near = state == 2
    inside = state == 1
    inside[near] = inside_shape(3, a[near], b[near])
    return inside


def _outline(shape: int) -> np.ndarray:
    """Points whose convex hull contains the shape at scale 1: (k, 2) float64 (a, b) pixels."""
    if shape == 1:
        return SQUARE_HALF_SIDE * np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    if shape == 2:  # a polygon circumscribing the ellipse
        t = np.linspace(0, 2 * np.pi, 256, endpoint=False)
        grow = 1.0 / math.cos(np.pi / 256)
        return grow * np.stack(
            [ELLIPSE_SEMI_AXES[0] * np.cos(t), ELLIPSE_SEMI_AXES[1] * np.sin(t)], 1
        )
    return _heart_vertices()


def _render_group(
    shape: int, scale: float, orientation: float, pos_x: np.ndarray, pos_y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (shape, scale, orientation) at many positions, drawn in a window around each.

    pos_x, pos_y: (m,) latent values -> masks (m, h, w) bool and the top-left pixel of each
    window, rows (m,) and cols (m,) int64.
    """
    # The sprite turns counter-clockwise on screen as the orientation grows: screen offsets
    # (u, v) = (column, row) - centre map to the shape frame by (a, b) = (cu - sv, su + cv).
    c, s = math.cos(orientation), math.sin(orientation)
    outline = _outline(shape)
    extent_u = scale * (c * outline[:, 0] + s * outline[:, 1])
    extent_v = scale * (-s * outline[:, 0] + c * outline[:, 1])
    cx = POSITION_ORIGIN + POSITION_SPAN * pos_x
    cy = POSITION_ORIGIN + POSITION_SPAN * pos_y
    windows = []
    for centre, ext in ((cx, extent_u), (cy, extent_v)):
        size = int(math.ceil(ext.max() - ext.min())) + 2
        first = np.clip(np.floor(centre + ext.min()).astype(np.int64), 0, IMAGE_SIZE - size)
        offset = (first[:, None] + np.arange(size) - centre[:, None]) / scale  # (m, size)
        windows.append((first, offset))
    (col0, u), (row0, v) = windows
    # Outer sums over (m, 1, w) and (m, h, 1): one pass over the window per coordinate.
    a = (c * u)[:, None, :] - (s * v)[:, :, None]
    b = (s * u)[:, None, :] + (c * v)[:, :, None]
    return _inside_fast(shape, a, b), row0, col0


def render_images(grid: FactorGrid, index: np.ndarray) -> np.ndarray:
    """index: (n,) flat indices into `grid` -> (n, 64, 64) uint8 in {0, 1}, real dSprites order.

    Only the latent values matter, so a subgrid renders the same pixels as the full grid.
    """
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    out = np.zeros((len(index), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    if len(index) == 0:
        return out
    f_shape, f_scale, f_orient, f_x, f_y = grid.factors_named(
        ("shape", "scale", "orientation", "posX", "posY")
    )
    values = grid.latent_values(grid.classes(index))
    keys, group = np.unique(values[:, [f_shape, f_scale, f_orient]], axis=0, return_inverse=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(len(keys) + 1))
    for g, (shape, scale, orientation) in enumerate(keys):
        members = order[bounds[g] : bounds[g + 1]]
        pos_x, pos_y = values[members, f_x], values[members, f_y]
        masks, row0, col0 = _render_group(
            int(round(shape)), float(scale), float(orientation), pos_x, pos_y
        )
        # A writeable window view lets one fancy assignment paste every mask in place.
        windows = np.lib.stride_tricks.sliding_window_view(
            out, masks.shape[1:], axis=(1, 2), writeable=True
        )
        windows[members, row0, col0] = masks
    return out
