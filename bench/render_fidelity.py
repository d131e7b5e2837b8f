"""Procedural vs real dSprites: best-match IoU of each real reference frame, full-grid render
time, and the mean image of the full grid against the real density plot.

    python bench/render_fidelity.py                     # reference in ../shared/reference/dsprites
    python bench/render_fidelity.py --reference DIR     # a folder with real_hearts_320_frames.gif

Each real frame is compared with every rendered image of its shape whose centroid lies within
--radius pixels of the frame's and whose area is within 25 % of it (any image with IoU >= 0.75
meets the area limit; a wider radius changes no figure), by a matrix product of pixel vectors.
Writes bench/out/render_density.png (the mean image) and bench/out/render_worst_matches.png
(per shape, its four worst frames: real on top, the best rendered match below).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from raywae.data.grid import FactorGrid
from raywae.data.render import RENDER_VERSION, render_images

REPO = Path(__file__).resolve().parents[1]
FRAMES_FILE = "real_hearts_320_frames.gif"
# Which frames show which shape (value 1 square, 2 ellipse, 3 heart): see the reference README.
FRAME_SHAPES = {
    "heart": (3, range(0, 192)),
    "ellipse": (2, range(192, 256)),
    "square": (1, range(256, 320)),
}


def load_frames(reference: Path) -> np.ndarray:
    """The real reference frames: (320, 64, 64) uint8 in {0, 1}."""
    path = reference / FRAMES_FILE
    if not path.is_file():
        sys.exit(
            f"error: real reference frames not found at {path}; pass --reference DIR, the folder "
            f"holding {FRAMES_FILE} (in the shared tree: shared/reference/dsprites)"
        )
    with Image.open(path) as gif:
        frames = [np.asarray(f.convert("L")) for f in ImageSequence.Iterator(gif)]
    return (np.stack(frames) > 127).astype(np.uint8)


def centroids(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """images: (n, 64, 64) {0, 1} -> area (n,) int64 and centroid (n, 2) float32 (row, col)."""
    rows, cols = images.sum(2, dtype=np.int64), images.sum(1, dtype=np.int64)  # (n, 64) each
    area = rows.sum(1)
    ramp = np.arange(images.shape[1])
    centre = np.stack([rows @ ramp, cols @ ramp], axis=1) / np.maximum(area, 1)[:, None]
    return area, centre.astype(np.float32)


def render_full_grid(
    grid: FactorGrid, chunk: int
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Render every image in chunks of consecutive indices, as the dataset cache does.

    -> seconds spent in render_images, mean image (64, 64) float64, area (N,), centroid (N, 2).
    """
    seconds, total = 0.0, np.zeros((64, 64), dtype=np.int64)
    area, centre = np.zeros(len(grid), np.int64), np.zeros((len(grid), 2), np.float32)
    for start in range(0, len(grid), chunk):
        index = np.arange(start, min(start + chunk, len(grid)))
        t = time.perf_counter()
        images = render_images(grid, index)
        seconds += time.perf_counter() - t
        total += images.sum(0, dtype=np.int64)
        area[index], centre[index] = centroids(images)
    return seconds, total / len(grid), area, centre


def best_matches(
    grid: FactorGrid,
    frames: np.ndarray,
    shape_value: int,
    area: np.ndarray,
    centre: np.ndarray,
    radius: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU over the pruned candidates of one shape: iou (f,) float64, index (f,) int64."""
    shape_class = int(np.flatnonzero(grid.values[grid.factor("shape")] == shape_value)[0])
    pool = np.flatnonzero(
        grid.classes(np.arange(len(grid)))[:, grid.factor("shape")] == shape_class
    )
    f_area, f_centre = centroids(frames)
    wanted = []
    for a, c in zip(f_area, f_centre):
        near = np.abs(centre[pool] - c).max(1) <= radius
        sized = (area[pool] >= 0.75 * a) & (area[pool] <= a / 0.75)
        wanted.append(pool[near & sized])
    union = np.unique(np.concatenate(wanted))
    rendered = render_images(grid, union).reshape(len(union), -1).astype(np.float32)
    best_iou, best_index = np.zeros(len(frames)), np.full(len(frames), -1, np.int64)
    for f, (frame, cand) in enumerate(zip(frames, wanted)):
        if len(cand) == 0:
            continue
        rows = np.searchsorted(union, cand)
        inter = rendered[rows] @ frame.reshape(-1).astype(np.float32)
        iou = inter / (area[cand] + f_area[f] - inter)
        best_iou[f], best_index[f] = iou.max(), cand[iou.argmax()]
    return best_iou, best_index


def density_agreement(reference: Path, mean: np.ndarray) -> str:
    """Compare the mean image with the real density plot (its image area resampled to 64x64,
    both scaled to peak 1): correlation and mean absolute difference, as a printable line."""
    path = reference / "real_density_all.png"
    if not path.is_file():
        return f"(no {path.name} in the reference folder: density not compared)"
    with Image.open(path) as png:
        plot = np.asarray(png.convert("L"), dtype=np.float64)
    rows, cols = np.flatnonzero((plot < 255).any(1)), np.flatnonzero((plot < 255).any(0))
    at = (np.arange(64) + 0.5) / 64  # sample the centre of each plotted pixel
    r = (rows[0] + at * (rows[-1] + 1 - rows[0])).astype(int)
    c = (cols[0] + at * (cols[-1] + 1 - cols[0])).astype(int)
    real, ours = plot[np.ix_(r, c)], mean
    real, ours = real / real.max(), ours / ours.max()
    corr, diff = np.corrcoef(real.ravel(), ours.ravel())[0, 1], np.abs(real - ours).mean()
    return f"density vs {path.name}: correlation {corr:.4f}, mean |diff| {diff:.4f}"


def save_png(path: Path, image: np.ndarray, zoom: int) -> None:
    """image: (h, w) float in [0, 1] -> an upscaled 8-bit grey PNG."""
    pixels = np.kron(np.clip(image, 0, 1), np.ones((zoom, zoom)))
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=REPO.parent / "shared/reference/dsprites")
    parser.add_argument("--out", type=Path, default=REPO / "bench/out")
    parser.add_argument("--chunk", type=int, default=32768, help="images per render call")
    parser.add_argument("--radius", type=float, default=3.0, help="centroid window, pixels")
    args = parser.parse_args()
    frames = load_frames(args.reference)
    grid = FactorGrid.dsprites()

    seconds, mean, area, centre = render_full_grid(grid, args.chunk)
    print(
        f"render v{RENDER_VERSION}: {len(grid):,} images in {seconds:.1f} s "
        f"({len(grid) / seconds:,.0f} images/s, chunks of {args.chunk})"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    save_png(args.out / "render_density.png", mean / mean.max(), zoom=6)
    print(density_agreement(args.reference, mean))
    strips, everything = [], []
    print(f"{'shape':8} {'frames':>6} {'median IoU':>10} {'min IoU':>8} {'exact':>6}")
    for name, (value, frame_ids) in FRAME_SHAPES.items():
        real = frames[list(frame_ids)]
        iou, index = best_matches(grid, real, value, area, centre, args.radius)
        everything.append(iou)
        print(
            f"{name:8} {len(iou):6d} {np.median(iou):10.4f} {iou.min():8.4f} {(iou == 1).sum():6d}"
        )
        worst = np.argsort(iou)[:4]  # real frame above its best rendered match
        pairs = [np.concatenate([real[w], render_images(grid, index[w : w + 1])[0]]) for w in worst]
        strips.append(np.concatenate(pairs, axis=1))
    iou = np.concatenate(everything)
    print(
        f"{'overall':8} {len(iou):6d} {np.median(iou):10.4f} {iou.min():8.4f} {(iou == 1).sum():6d}"
    )
    save_png(args.out / "render_worst_matches.png", np.concatenate(strips).astype(float), zoom=3)
    print(f"wrote {args.out / 'render_density.png'} and {args.out / 'render_worst_matches.png'}")


if __name__ == "__main__":
    main()
