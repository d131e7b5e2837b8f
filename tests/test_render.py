"""The procedural dSprites renderer: shapes, sizes, positions, orientation, subgrids, and a
spot check against real frames when the shared reference folder is present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raywae.data.grid import FactorGrid
from raywae.data.render import RENDER_VERSION, render_images

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared/reference/dsprites"
SQUARE, ELLIPSE, HEART = 0, 1, 2  # shape classes


@pytest.fixture(scope="module")
def grid() -> FactorGrid:
    return FactorGrid.dsprites()


def render(grid: FactorGrid, *rows: tuple[int, ...]) -> np.ndarray:
    """rows of (shape, scale, orientation, posX, posY) classes -> (n, 64, 64) images."""
    classes = np.array([(0, *r) for r in rows], dtype=np.int64)
    return render_images(grid, grid.index(classes))


def centroid(image: np.ndarray) -> np.ndarray:
    """(64, 64) -> (row, col) float64."""
    return np.argwhere(image).mean(0)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a: (n, 64, 64), b: (64, 64) -> (n,) intersection over union."""
    inter = (a & b).sum((1, 2))
    return inter / ((a | b).sum((1, 2)))


def test_shape_dtype_binary(grid: FactorGrid) -> None:
    index = np.random.default_rng(0).integers(0, len(grid), 300)
    images = render_images(grid, index)
    assert images.shape == (300, 64, 64) and images.dtype == np.uint8
    assert set(np.unique(images)) <= {0, 1}
    assert (images.sum((1, 2)) > 40).all()  # every image shows a shape
    assert render_images(grid, np.array([], dtype=np.int64)).shape == (0, 64, 64)
    assert isinstance(RENDER_VERSION, str) and RENDER_VERSION


def test_square_sizes(grid: FactorGrid) -> None:
    big, small = render(grid, (SQUARE, 5, 0, 0, 0), (SQUARE, 0, 0, 0, 0))
    assert big.sum() == 400 and small.sum() == 100  # 20x20 and 10x10, as in the real frames
    assert big.sum() / small.sum() == pytest.approx(4.0)
    # Positions are sub-pixel (32 px over 31 steps), so a side covers 19 or 20 pixel centres.
    areas = render(grid, *[(SQUARE, 5, 0, x, y) for x in range(0, 32, 3) for y in (0, 7, 31)])
    assert set(areas.sum((1, 2))) <= {361, 380, 400}


def test_scale_area_ratio_all_shapes(grid: FactorGrid) -> None:
    for shape in (SQUARE, ELLIPSE, HEART):
        rows = [(shape, s, o, x, 5) for s in (0, 5) for o in (0, 7, 13) for x in (3, 17)]
        areas = render(grid, *rows).sum((1, 2)).reshape(2, -1)
        assert areas[1].mean() / areas[0].mean() == pytest.approx(4.0, rel=0.08)


def test_position_moves_centroid(grid: FactorGrid) -> None:
    # posX moves the shape along columns (rightward), posY along rows (downward), about
    # 32/31 px per step: posX = posY = 0 puts the centre at pixel 15.5, 1 at 47.5.
    images = render(grid, (SQUARE, 5, 0, 0, 0), (SQUARE, 5, 0, 31, 0), (SQUARE, 5, 0, 0, 31))
    origin, right, down = (centroid(im) for im in images)
    assert origin == pytest.approx([15.5, 15.5])
    assert right == pytest.approx([15.5, 47.5]) and down == pytest.approx([47.5, 15.5])
    line = render(grid, *[(ELLIPSE, 3, 9, x, 12) for x in range(32)])
    cols = np.array([centroid(im)[1] for im in line])
    assert (np.diff(cols) > 0).all() and cols[-1] - cols[0] == pytest.approx(32, abs=0.5)


def test_orientation_turns_counter_clockwise(grid: FactorGrid) -> None:
    # Real frames: the heart's lobes start above the centre and, as orientation grows, move
    # to the left of it at about a quarter turn (class 10 = 92 degrees).
    up, quarter = render(grid, (HEART, 5, 0, 15, 15), (HEART, 5, 10, 15, 15))
    centre = 15.5 + 32 * 15 / 31
    assert centroid(up)[0] < centre - 1.5 and abs(centroid(up)[1] - centre) < 0.1
    assert centroid(quarter)[1] < centre - 1.5
    full_turn = render(grid, (HEART, 5, 39, 15, 15))[0]  # orientation 2 pi
    assert np.array_equal(full_turn, up)


def test_fast_membership_equals_exact() -> None:
    # The heart answers from a table of cells away from its outline: it must agree exactly.
    from raywae.data.render import _inside_fast, inside_shape

    ab = np.random.default_rng(3).uniform(-14, 14, size=(2, 200_000))
    for shape in (1, 2, 3):
        assert np.array_equal(_inside_fast(shape, *ab), inside_shape(shape, *ab))


def test_subgrid_renders_full_grid_pixels(grid: FactorGrid) -> None:
    sub = grid.subgrid(scale=5, orientation=7, posX=9, posY=10)
    index = np.arange(len(sub))
    full_index = grid.index(sub.to_full_classes(sub.classes(index)))
    assert np.array_equal(render_images(sub, index), render_images(grid, full_index))


def test_deterministic_and_order_independent(grid: FactorGrid) -> None:
    index = np.random.default_rng(1).integers(0, len(grid), 500)
    first = render_images(grid, index)
    assert np.array_equal(first, render_images(grid, index))
    perm = np.random.default_rng(2).permutation(len(index))
    assert np.array_equal(first[perm], render_images(grid, index[perm]))
    assert np.array_equal(first[:7], render_images(grid, index[:7]))


def test_matches_real_frames(grid: FactorGrid) -> None:
    path = REFERENCE / "real_hearts_320_frames.gif"
    if not path.is_file():
        pytest.skip(f"real reference frames not found at {path} (shared tree absent)")
    from PIL import Image, ImageSequence

    with Image.open(path) as gif:
        frames = np.stack([np.asarray(f.convert("L")) > 127 for f in ImageSequence.Iterator(gif)])
    # Frames at posX = posY = 0 (see the reference README): search every scale and
    # orientation of the frame's shape there. 105 sits on the bottom edge: search posX there.
    for frame, shape in ((3, HEART), (23, HEART), (47, HEART), (214, ELLIPSE), (277, SQUARE)):
        cands = render(grid, *[(shape, s, o, 0, 0) for s in range(6) for o in range(40)])
        assert iou(cands.astype(bool), frames[frame]).max() >= 0.85, frame
    cands = render(grid, *[(HEART, 5, o, x, 31) for o in (0, 39) for x in range(32)])
    assert iou(cands.astype(bool), frames[105]).max() >= 0.85
