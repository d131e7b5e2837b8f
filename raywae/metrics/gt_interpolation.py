"""The ground-truth interpolation score on dSprites: decoded frames between two test images
that differ in one factor, each matched to its exact nearest grid image (issue 19 item 4).

Pure pieces: `choose_pairs` (which images to interpolate), `GridImages.nearest` (an exact
nearest-neighbour search over binary images stored as row runs) and
`score_paths` (distance and monotonicity). `gt_interpolation` joins them for one model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from raywae.data.grid import FactorGrid
from raywae.metrics.codes import csr

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


def true_path(grid: FactorGrid, pair: tuple[int, int, int], frames: int = FRAMES) -> np.ndarray:
    """(frames,) flat indices of the grid images along a pair's ground-truth factor path from
    image a to image b (pair: (factor k, a, b)): the varied factor's value at t = 0 … 1 (shape
    switching at t = ½; orientation along the shorter arc), the other factors a's. What a
    perfect interpolation decodes (tests, bench/gt_interp_speed.py)."""
    k, a, b = pair
    ca, cb = grid.classes(np.array([a, b]))
    t = np.linspace(0, 1, frames)
    classes = np.repeat(ca[None], frames, 0)
    if grid.names[k] == "shape":
        classes[:, k] = np.where(t < 0.5, ca[k], cb[k])
    elif grid.names[k] == "orientation":
        theta = grid.values[k]
        want = theta[ca[k]] + t * _wrap(theta[cb[k]] - theta[ca[k]])
        classes[:, k] = np.abs(_wrap(want[:, None] - theta[None])).argmin(1)
    else:
        classes[:, k] = np.rint(ca[k] + t * (cb[k] - ca[k])).astype(int)
    return grid.index(classes)


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angles in radians -> the same angles in (−π, π]."""
    return math.pi - np.mod(math.pi - angle, 2 * math.pi)


# A byte of 8 pixels (MSB first) and the pixel before it, key = prev·256 + byte ->
# _STEP[key, k] = pixel k − pixel k−1 ∈ {−1, 0, 1} (pixel −1 = prev): its run transitions.
_KEY = np.arange(512)
_PIX = (_KEY[:, None] >> (7 - np.arange(8))) & 1
_STEP = (_PIX - np.concatenate([_KEY[:, None] >> 8, _PIX[:, :-1]], 1)).astype(np.int8)
EDGES = SIDE + 1  # row prefix-sum positions 0..64
SHIFT = SIDE * EDGES  # the run table's extra column
U32 = 2.0**-24  # float32 unit roundoff


@dataclass(frozen=True)
class GridImages:
    """Binary images to search (a grid's images, row = flat index) as row runs of lit pixels.
    packed: (N, 512) uint8 np.packbits rows of 64×64 images. The run table is the CSR matrix
    D (N, 64·65 + 1): D[g, 65·r + c] = g[r, c] − g[r, c−1] (pixels outside unlit; +1 where
    a run starts, −1 one past its end) and D[g, SHIFT] = 1. For a frame f, with the row
    prefix sums P[65·r + c] = Σ_{x<c} (f[r, x] − ½) (centred: near-grey frames give small
    P, so small float32 errors) and P[SHIFT] = −t, a run [a, e) sums to P[e] − P[a], so
    (D @ P)[g] = Σ_{p lit in g} (½ − f_p) − t = h_g − t, where ||f − g||² = ||f||² + 2h_g
    (binary g: ||g||² = |g|): ~33 terms per dSprites image (~16 runs) instead of its ~174
    lit pixels. crow: (N + 1,) int32, col: (nnz,) int32, val: (nnz,) int8 (±1);
    most: the most run terms of an image."""

    packed: np.ndarray
    crow: np.ndarray
    col: np.ndarray
    val: np.ndarray
    most: int

    @classmethod
    def build(cls, packed: np.ndarray, chunk: int = 131072) -> GridImages:
        """The run table from the packed bits: only rows with a lit pixel, byte by byte (a
        byte and the pixel before it -> its transitions, a 512-entry table); a 9th, unlit
        byte per row closes a run that reaches the right edge."""
        packed = np.ascontiguousarray(packed)
        crows, cols, vals, total = [np.zeros(1, np.int64)], [], [], 0
        for s in range(0, len(packed), chunk):
            rows = packed[s : s + chunk].reshape(-1, 8)
            n, at = len(rows) // SIDE, np.flatnonzero(rows.view(np.uint64)[:, 0])  # lit rows
            b = rows[at].astype(np.uint16)
            key = np.zeros((len(at), 9), np.uint16)
            key[:, :8] = b
            key[:, 1:] |= (b & 1) << 8  # the previous byte's last pixel
            key = key.reshape(-1)
            hit = np.flatnonzero((key != 0) & (key != 511))  # (row, byte)s with a transition
            key, row = key[hit], at[hit // 9]
            first = ((row % SIDE) * EDGES + 8 * (hit % 9)).astype(np.int32)
            h, k = np.nonzero(_STEP[key])  # row-major: increasing column within an image
            image = row[h] // SIDE  # (nnz,) increasing
            col = np.full(len(h) + n, SHIFT, np.int32)  # each image: its runs, then SHIFT
            val = np.ones(len(h) + n, np.int8)
            at = np.arange(len(h)) + image
            col[at], val[at] = first[h] + k.astype(np.int32), _STEP[key[h], k]
            crows.append(total + np.searchsorted(image, np.arange(1, n + 1)) + np.arange(1, n + 1))
            cols.append(col)
            vals.append(val)
            total += len(col)
        crow = np.concatenate(crows).astype(np.int32)
        most = int(np.diff(crow).max(initial=1)) - 1
        return cls(packed, crow, np.concatenate(cols), np.concatenate(vals), most)

    def __len__(self) -> int:
        return len(self.packed)

    def distances(
        self, frames: np.ndarray, start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        """frames: (M, 4096) float in [0, 1] -> (stop − start, M) float64 ||f − g||² of the
        images start..stop from the run table: ||f||² + 2h_g (see the class)."""
        f = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1)
        h = self._products(_prefix(f), start, len(self) if stop is None else stop)
        return h.mul_(2).add_(torch.from_numpy((f * f).sum(1)))

    def _products(
        self, prefix: torch.Tensor, start: int, stop: int, rows: np.ndarray | None = None
    ) -> torch.Tensor:
        """prefix: (64·65 + 1, M) -> (stop − start, M) D[start:stop] @ prefix (or
        (len(rows), M) D[rows] @ prefix) in prefix's dtype (one sparse × dense product,
        multithreaded)."""
        if rows is None:
            crow = self.crow[start : stop + 1] - self.crow[start]
            at = slice(self.crow[start], self.crow[stop])
        else:
            crow, at = self._gather(rows)
        d = csr(
            torch.from_numpy(crow.astype(np.int32)),
            torch.from_numpy(self.col[at]),
            torch.from_numpy(self.val[at]).to(prefix.dtype),
            (len(crow) - 1, SHIFT + 1),
        )
        return d @ prefix

    def _gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n,) image indices -> (crow (n + 1,) int64, positions in col / val) of D[rows]."""
        start, size = self.crow[rows].astype(np.int64), np.diff(self.crow)[rows]
        crow = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(size, out=crow[1:])
        return crow, np.repeat(start - crow[:-1], size) + np.arange(crow[-1])

    def nearest(
        self, frames: np.ndarray, chunk: int = 65536, cap: int = 1024
    ) -> tuple[np.ndarray, np.ndarray]:
        """frames: (M, 4096) float in [0, 1] -> (index (M,) int64, distance (M,) float64):
        the image g minimising ||f − g||² (summed squared pixel error; the lowest index
        among exact ties) and that squared distance. Exact, not approximate: the argmin of
        h_g = (D @ P)[g] (the class; t = 0) over every image, all frames at once, `chunk`
        images at a time:

        screen: h − t in float32 (half float64's cost) with t = the float32 minimum of h so
        far + δ_f, a proven bound on the float32 error (see _slack), so that h* ≤ t; every
        image whose float32 h − t ≤ δ_f is a candidate (the minimiser always is); then h in
        float64 of the candidates within 2δ_f of the float32 minimum, the lowest (h, index)
        wins. A frame with more than `cap` candidates (ties by the thousand, e.g. a constant
        0.5 frame: every image at the same distance) gets h in float64 of every image
        instead. Distances of the winners: summed pixel by pixel."""
        f = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1)
        prefix = _prefix(f)
        p32, slack = prefix.float(), self._slack(prefix)
        delta = _up(slack)  # (M,) float32
        # t from a spread sample of the images first (every k-th: all shapes, scales, ...)
        p32[SHIFT] = 0.0
        sample = np.arange(0, len(self), max(1, len(self) // chunk))
        low = self._products(p32, 0, 0, rows=sample).amin(0).double()  # an image's float32 h
        dense = torch.zeros(len(f), dtype=torch.bool)
        g = m = torch.zeros(0, dtype=torch.int64)
        h = torch.zeros(0, dtype=torch.float64)
        for s in range(0, len(self), chunk):
            t = _up(low + slack)  # ≥ h* (low is some image's h within δ)
            p32[SHIFT] = torch.where(dense, 1e30, -t)  # a dense frame: no candidates (finite)
            z = self._products(p32, s, min(s + chunk, len(self)))  # (n, M) float32 h − t
            rows = torch.nonzero(z.amin(1) <= delta.max())[:, 0]
            keep = z[rows] <= delta
            if len(rows) > cap and keep.sum() > cap * len(f):  # ties by the thousand: dense
                dense |= torch.bincount(m, minlength=len(f)) + keep.sum(0) > cap
                keep[:, dense] = False
            i, mi = keep.nonzero().T
            hi = z[rows[i], mi].double() + t[mi].double()  # float32 h, within δ of h
            low = low.scatter_reduce(0, mi, hi, "amin")
            g, m, h = torch.cat([g, rows[i] + s]), torch.cat([m, mi]), torch.cat([h, hi])
            ok = h <= low[m] + 2 * slack[m]  # the candidates as t tightens
            g, m, h = g[ok], m[ok], h[ok]
            dense |= torch.bincount(m, minlength=len(f)) > cap
        ok = ~dense[m]
        g, m = g[ok].numpy(), m[ok].numpy()
        h = self._pair_products(g, m, prefix)
        order = np.lexsort((g, h, m))  # by frame, then h, then index
        first = order[np.diff(m[order], prepend=-1) != 0]  # each frame's best
        index = torch.zeros(len(f), dtype=torch.int64)
        index[m[first]] = torch.from_numpy(g[first])
        if dense.any():
            index[dense] = self._dense_nearest(prefix[:, dense], chunk)
        g = np.unpackbits(self.packed[index.numpy()], axis=1)
        return index.numpy(), ((f - g) ** 2).sum(1)

    def _slack(self, prefix: torch.Tensor) -> torch.Tensor:
        """prefix: (64·65 + 1, M) float64 -> (M,) float64 δ_f ≥ |float32 (D @ P)[g] − exact|
        for every image g and every float32 t with |t| ≤ K·R_f(1 + 10⁻⁴), u = 2⁻²⁴, K =
        self.most, R_f = max |P| of f: then |h| ≤ K·R_f, and t = low + δ stays in range.
        Rounding P to float32 moves each run term by ≤ u·R_f; the K + 1 terms (±1 · P, t
        exact) sum in any order within γ_K·Σ|terms| (γ_n = nu/(1 − nu)), Σ|terms| ≤
        K·R_f(1 + u) + |t|; padded by 1 % (also for float64's own rounding)."""
        k = self.most
        r = prefix[:SHIFT].abs().amax(0)
        gamma = k * U32 / (1 - k * U32)
        return 1.01 * (k * U32 * r + gamma * k * r * (2 + U32 + 1e-4))

    def _pair_products(self, g: np.ndarray, m: np.ndarray, prefix: torch.Tensor) -> np.ndarray:
        """(n,) images g, frames m -> (n,) float64 (D @ prefix)[g, m], pair by pair."""
        p = prefix.numpy()
        out = np.zeros(len(g))
        for s in range(0, len(g), 65536):
            gs, ms = g[s : s + 65536], m[s : s + 65536]
            crow, at = self._gather(gs)
            pair = np.repeat(np.arange(len(gs)), np.diff(crow))
            terms = self.val[at] * p[self.col[at], ms[pair]]
            out[s : s + 65536] = np.bincount(pair, terms, len(gs))
        return out

    def _dense_nearest(self, prefix: torch.Tensor, chunk: int) -> torch.Tensor:
        """prefix: (64·65 + 1, M') float64 -> (M',) int64 argmin of h in float64 over every
        image (the lowest index among ties)."""
        best = torch.full((prefix.shape[1],), math.inf, dtype=torch.float64)
        index = torch.zeros(prefix.shape[1], dtype=torch.int64)
        for s in range(0, len(self), chunk):
            value, at = self._products(prefix, s, min(s + chunk, len(self))).min(0)
            better = value < best  # strictly: an earlier chunk keeps its ties (min: the first)
            best[better], index[better] = value[better], at[better] + s
        return index


def _prefix(f: np.ndarray) -> torch.Tensor:
    """(M, 4096) float64 frames -> (64·65 + 1, M) float64 P of GridImages (t = 0)."""
    p = np.zeros((SHIFT + 1, len(f)))
    rows = p[:SHIFT].reshape(SIDE, EDGES, len(f))
    c = f.reshape(len(f), SIDE, SIDE).transpose(1, 2, 0) - 0.5
    np.cumsum(c, axis=1, out=rows[:, 1:])
    return torch.from_numpy(p)


def _up(x: torch.Tensor) -> torch.Tensor:
    """float64 -> the smallest float32 ≥ each value."""
    y = x.float()
    return torch.where(y.double() < x, torch.nextafter(y, torch.tensor(math.inf)), y)


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
