"""The ground-truth interpolation score on dSprites: decoded frames between two test images
that differ in one factor, each matched to its exact nearest grid image (issue 19 item 4).

Pure pieces: `choose_pairs` (which images to interpolate), `GridImages.nearest` (an exact
nearest-neighbour search over packed binary images, pruned by block-sum lower bounds) and
`score_paths` (distance and monotonicity). `gt_interpolation` joins them for one model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from raywae.data.grid import FactorGrid
from raywae.metrics.codes import sparse_images

FACTORS = ("shape", "scale", "orientation", "posX", "posY")  # the varied factor of a pair
PAIRS_PER_FACTOR = 8
FRAMES = 16  # raywae.images.interpolate's convention: endpoints included
PAIRS_SEED = 0  # every run interpolates the same pairs: scores compare across runs
HEART = 2  # the shape class whose pixels determine its orientation (no rotational symmetry)
SIDE = 64
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.uint8)


def choose_pairs(
    grid: FactorGrid,
    test: np.ndarray,
    per_factor: int = PAIRS_PER_FACTOR,
    seed: int = PAIRS_SEED,
) -> list[tuple[int, int, int]]:
    """Up to per_factor (factor, a, b) per factor of FACTORS that varies in `grid`: flat
    indices a, b of `grid` whose classes differ in that factor only, both test images
    (test: (len(grid),) bool) where such pairs exist, else any two grid images. Ordered
    pairs are drawn uniformly without replacement with `seed`.

    orientation: only hearts (squares repeat every 90°, ellipses every 180°, so their
    nearest grid image is ambiguous in orientation), and only angles < π apart along the
    shorter arc, the path a linear interpolation is expected to take (0 and 2π, the same
    image, are never paired). shape: any two shapes (categorical: see score_paths)."""
    rng = np.random.default_rng(seed)
    out = []
    for name in FACTORS:
        k = grid.factor(name)
        if grid.sizes[k] < 2:
            continue
        a, b = _pairs_of(grid, k, np.flatnonzero(test))
        both = test[b]
        if both.any():
            a, b = a[both], b[both]
        else:  # a small grid without such test pairs: any two grid images
            a, b = _pairs_of(grid, k, np.arange(len(grid)))
        pick = rng.choice(len(a), size=min(per_factor, len(a)), replace=False)
        out += [(k, int(a[i]), int(b[i])) for i in np.sort(pick)]
    return out


def _pairs_of(grid: FactorGrid, k: int, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (a, b), a in starts, b differing from a in factor k only (see choose_pairs)."""
    size, base, s = grid.sizes[k], grid.bases[k], grid.factor("shape")
    if grid.names[k] == "orientation" and HEART in grid.full_classes[s]:
        heart = int(np.flatnonzero(grid.full_classes[s] == HEART)[0])
        starts = starts[grid.classes(starts)[:, s] == heart]
    a = np.repeat(starts, size)
    ca, v = grid.classes(a)[:, k], np.tile(np.arange(size), len(starts))
    ok = v != ca
    if grid.names[k] == "orientation":
        gap = np.abs(_wrap(grid.values[k][v] - grid.values[k][ca]))
        ok &= (gap > 1e-9) & (gap < math.pi - 1e-9)
    return a[ok], (a + (v - ca) * base)[ok]


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angles in radians -> the same angles in (−π, π]."""
    return math.pi - np.mod(math.pi - angle, 2 * math.pi)


@dataclass(frozen=True)
class GridImages:
    """Binary images to search (a grid's images, row = flat index) with the block counts the
    lower bounds need. packed: (N, 512) uint8 np.packbits rows of 64×64 images."""

    packed: np.ndarray
    counts8: torch.Tensor  # (N, 64) uint8: lit pixels per 8×8 block
    nnz: torch.Tensor  # (N,) float64: lit pixels per image (= ||g||² for binary g)
    coarse: torch.Tensor  # (N, 34) float32: [−2·φ16(g), 1, ||φ16(g)||²] (see nearest)

    @classmethod
    def build(cls, packed: np.ndarray, chunk: int = 65536) -> GridImages:
        """Counts from the packed bits by byte popcount (a byte is 8 pixels of one row)."""
        packed = np.ascontiguousarray(packed)
        counts = np.empty((len(packed), 64), np.uint8)
        for s in range(0, len(packed), chunk):
            pop = _POPCOUNT[packed[s : s + chunk]].reshape(-1, 8, 8, 8)  # (n, R, row, byte)
            counts[s : s + chunk] = pop.sum(2, dtype=np.uint8).reshape(-1, 64)
        c = torch.from_numpy(counts)
        phi = _count_features(_pool16(c), 16)
        ones = torch.ones(len(c), 1)
        coarse = torch.cat([-2 * phi, ones, phi.square().sum(1, keepdim=True)], 1)
        return cls(packed, c, c.sum(1, dtype=torch.float64), coarse)

    def __len__(self) -> int:
        return len(self.packed)

    def nearest(
        self, frames: np.ndarray, group: int = FRAMES, top: int = 8
    ) -> tuple[np.ndarray, np.ndarray]:
        """frames: (M, 4096) float in [0, 1] -> (index (M,) int64, distance (M,) float64):
        the image g minimising ||f − g||² (summed squared pixel error; the lowest index
        among exact ties) and that squared distance. Exact, not approximate:

        lower bound: per b×b block B, with S the block sum and r = ||x_B − mean(x_B)||,
        ||f_B − g_B||² = (S_f − S_g)²/b² + ||f̃_B − g̃_B||² ≥ (S_f − S_g)²/b² + (r_f − r_g)²,
        and for binary g, r_g² = S_g − S_g²/b² comes from the count alone. So
        ||f − g||² ≥ ||φ_b(f) − φ_b(g)||², φ_b = [S/b, r] over the blocks: one GEMM against
        every image. Per `group` consecutive frames (one interpolation: similar frames
        share candidates): the `top` images of smallest 16×16 bound per frame, exact -> an
        upper bound U_f; then the images whose 16×16 bound, then 8×8 bound, is ≤ U_f (+ a
        float32 rounding margin) get exact distances (a sparse product over their lit
        pixels)."""
        f = torch.as_tensor(np.asarray(frames, dtype=np.float64).reshape(len(frames), -1))
        out = [self._nearest(f[s : s + group], top) for s in range(0, len(f), group)]
        return torch.cat([i for i, _ in out]).numpy(), torch.cat([d for _, d in out]).numpy()

    def _nearest(self, f: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
        phi16, phi8 = _frame_features(f, 16), _frame_features(f, 8)
        n16, n8 = phi16.square().sum(1), phi8.square().sum(1)
        coarse = torch.cat([phi16, n16[:, None], torch.ones(len(f), 1)], 1)  # (M, 34)
        sq = (f * f).sum(1)
        lb = coarse @ self.coarse.T  # (M, N) 16×16 bounds
        # an upper bound per frame from the best few by the coarse bound
        cand = torch.topk(lb, min(top, lb.shape[1]), dim=1, largest=False).indices
        cand = cand.sort(1).values  # lowest index first among ties
        g = torch.from_numpy(np.unpackbits(self.packed[cand.numpy()], axis=-1))
        d = sq[:, None] - 2 * torch.einsum("mkp,mp->mk", g.to(torch.float64), f)
        d += self.nnz[cand]
        j = torch.argmin(d, 1, keepdim=True)
        best_d, best_i = d.gather(1, j)[:, 0], cand.gather(1, j)[:, 0]
        # every image whose bounds do not exceed it; float32 rounding of a K-term bound is
        # < K·2⁻²⁴·2(||φ_f||² + ||φ_g||²): the margins
        margin = 1e-4 * (n16 + self.coarse[:, -1].max()) + 1e-3
        keep = lb <= (best_d + margin).float()[:, None]
        rows = keep.any(0).nonzero()[:, 0]
        keep = keep[:, rows]
        g8 = _count_features(self.counts8[rows], 8)
        margin = 1e-4 * (n8[:, None] + g8.square().sum(1)) + 1e-3
        keep &= _sqdist(phi8, g8) - margin <= best_d.float()[:, None]
        used = keep.any(0)
        rows, keep = rows[used], keep[:, used]
        d = torch.where(keep, self._exact(rows, f, sq).T, math.inf)  # (M, rows), rows sorted
        j = torch.argmin(d, 1)
        dj, ij = d.gather(1, j[:, None])[:, 0], rows[j]
        better = (dj < best_d) | ((dj == best_d) & (ij < best_i))
        best_d[better], best_i[better] = dj[better], ij[better]
        return best_i, best_d.clamp_min(0)

    def _exact(self, rows: torch.Tensor, f: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
        """(len(rows), M) float64 ||f_m − g_r||² = ||f||² − 2 Σ_{lit(g)} f + nnz(g)."""
        g = sparse_images(self.packed[rows.numpy()]).to(torch.float64)
        return sq[None] - 2 * (g @ f.T) + self.nnz[rows][:, None]


def _pool16(counts8: torch.Tensor) -> torch.Tensor:
    """(N, 64) counts of the 8×8 blocks -> (N, 16) counts of the 16×16 blocks."""
    return counts8.reshape(-1, 4, 2, 4, 2).to(torch.int32).sum((2, 4)).reshape(-1, 16)


def _sqdist(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(M, K), (N, K) float32 -> (M, N) float32 squared Euclidean distances."""
    return torch.addmm(a.square().sum(1, keepdim=True) + g.square().sum(1), a, g.T, alpha=-2.0)


def _frame_features(f: torch.Tensor, b: int) -> torch.Tensor:
    """(M, 4096) -> (M, 2·(64/b)²) float32 φ_b: block sums / b, then residual norms
    (numpy: small arrays, no thread start-up per call)."""
    x = f.numpy().reshape(len(f), SIDE // b, b, SIDE // b, b)
    s = x.sum((2, 4)).reshape(len(f), -1)
    r = (x - x.mean((2, 4), keepdims=True)) ** 2
    r = np.sqrt(r.sum((2, 4)).reshape(len(f), -1))
    return torch.from_numpy(np.concatenate([s / b, r], 1).astype(np.float32))


def _count_features(c: torch.Tensor, b: int) -> torch.Tensor:
    """(N, (64/b)²) lit counts -> (N, 2·(64/b)²) float32 φ_b of those binary images (a
    table lookup: a count takes b² + 1 values)."""
    k = torch.arange(b * b + 1, dtype=torch.float64)
    table = torch.stack([k / b, (k - k * k / (b * b)).clamp_min(0).sqrt()], 1).float()
    return table[c.long()].transpose(1, 2).reshape(len(c), -1)


def score_paths(
    grid: FactorGrid,
    pairs: list[tuple[int, int, int]],
    nearest: np.ndarray,
) -> np.ndarray:
    """pairs: (factor, a, b) of choose_pairs; nearest: (P, T) flat grid index of each frame's
    nearest image -> (P,) bool: the nearest images' varied factor runs from a's value (frame
    0) to b's (frame T−1) without stepping back, the other factors at a's = b's values.
    Ordinal factors (scale, posX, posY): class steps of one sign. orientation: the signed
    angle from a's, along the shorter arc towards b's (angles mod 2π: 0 and 2π are one
    orientation). shape (categorical): a's shape, then b's, one switch, no third shape."""
    classes = grid.classes(nearest.reshape(-1)).reshape(*nearest.shape, -1)  # (P, T, F)
    o = grid.factor("orientation")
    out = np.zeros(len(pairs), bool)
    for p, (k, a, b) in enumerate(pairs):
        ca, cb = grid.classes(np.array([a, b]))
        c = classes[p]
        same = np.ones(len(c), bool)
        for j in range(c.shape[1]):
            if j == k:
                continue
            if j == o:
                same &= np.abs(_wrap(grid.values[o][c[:, j]] - grid.values[o][ca[j]])) < 1e-9
            else:
                same &= c[:, j] == ca[j]
        if grid.names[k] == "shape":
            pos = np.where(c[:, k] == ca[k], 0.0, np.where(c[:, k] == cb[k], 1.0, np.nan))
            target = 1.0
        elif k == o:
            target = _wrap(grid.values[o][cb[k]] - grid.values[o][ca[k]])
            pos = _wrap(grid.values[o][c[:, k]] - grid.values[o][ca[k]]) * np.sign(target)
            target = abs(target)
        else:
            pos = (c[:, k] - ca[k]) * np.sign(cb[k] - ca[k]).astype(float)
            target = abs(cb[k] - ca[k])
        out[p] = bool(
            same.all()
            and not np.isnan(pos).any()
            and abs(pos[0]) < 1e-9
            and abs(pos[-1] - target) < 1e-9
            and (np.diff(pos) >= -1e-9).all()
        )
    return out


Decoder = Callable[[np.ndarray, np.ndarray], np.ndarray]


def gt_interpolation(
    interpolate: Decoder,
    images: GridImages,
    grid: FactorGrid,
    pairs: list[tuple[int, int, int]],
) -> dict[str, float]:
    """interpolate(start, end): (P, 64, 64) each -> (P, T, 64, 64) frames in [0, 1] (e.g.
    raywae.images.interpolate of a model); images: the grid's images (row = flat index).
    Returns gt_interp_distance (mean over all frames of the mean squared pixel error to the
    nearest grid image: 0 for a decoder that draws exact grid images) and
    gt_interp_monotone (the fraction of pairs that score_paths calls monotone)."""
    a = np.array([p[1] for p in pairs])
    b = np.array([p[2] for p in pairs])
    unpack = lambda i: np.unpackbits(images.packed[i], axis=1).reshape(-1, SIDE, SIDE)  # noqa: E731
    frames = interpolate(unpack(a).astype(np.float32), unpack(b).astype(np.float32))
    P, T = frames.shape[:2]
    index, dist = images.nearest(frames.reshape(P * T, -1))
    monotone = score_paths(grid, pairs, index.reshape(P, T))
    return {
        "gt_interp_distance": float(dist.mean() / (SIDE * SIDE)),
        "gt_interp_monotone": float(monotone.mean()),
    }
