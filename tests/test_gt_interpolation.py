"""The ground-truth interpolation score (raywae.metrics.gt_interpolation) on a small
procedural subgrid: the run-length distances and the nearest search equal brute force, a
decoder that draws the true factor path scores 0 / 1, a cross-fade scores worse, and
detours are not monotone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raywae.metrics.gt_interpolation import (
    FACTORS,
    FRAMES,
    GridImages,
    _wrap,
    choose_pairs,
    gt_interpolation,
    score_paths,
    true_path,
)


@pytest.fixture(scope="module")
def images(small_ds: object) -> GridImages:
    return GridImages.build(small_ds.packed_all())


@pytest.fixture(scope="module")
def pairs(small_ds: object) -> list[tuple[int, int, int]]:
    test = np.zeros(len(small_ds.grid), bool)
    test[small_ds.split()[1]] = True
    return choose_pairs(small_ds.grid, test)


def brute_force(frames: np.ndarray, packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's nearest image by a float64 GEMM: the lowest index among the images
    within 1e-9 of its minimum (exact ties: a GEMM rounds them apart differently on other
    CPUs; distinct images differ by far more here) and that minimum."""
    g = np.unpackbits(packed, axis=1).astype(np.float64)
    f = frames.reshape(len(frames), -1).astype(np.float64)
    d = (f * f).sum(1)[:, None] - 2 * f @ g.T + g.sum(1)[None]
    best = d.min(1)
    return (d <= best[:, None] + 1e-9).argmax(1), best


def unpack(images: GridImages, index: np.ndarray) -> np.ndarray:
    return np.unpackbits(images.packed[index], axis=-1).reshape(*np.shape(index), 64, 64)


def test_pairs_differ_in_one_factor_and_are_reproducible(small_ds, pairs):
    grid = small_ds.grid
    assert pairs == choose_pairs(grid, np.isin(np.arange(len(grid)), small_ds.split()[1]))
    assert {grid.names[k] for k, _, _ in pairs} == set(FACTORS)
    test = set(small_ds.split()[1].tolist())
    o = grid.factor("orientation")
    for k, a, b in pairs:
        ca, cb = grid.classes(np.array([a, b]))
        assert np.flatnonzero(ca != cb).tolist() == [k]
        assert a in test and b in test
        if k == o:  # hearts only, the shorter arc under π
            assert grid.full_classes[grid.factor("shape")][ca[1]] == 2
            assert 0 < abs(_wrap(grid.values[o][cb[o]] - grid.values[o][ca[o]])) < math.pi


def test_nearest_equals_brute_force(images):
    rng = np.random.default_rng(0)
    n = len(images)
    exact = unpack(images, rng.choice(n, 6)).astype(np.float64)
    noisy = np.clip(exact + rng.normal(0, 0.2, exact.shape), 0, 1)
    a, b = unpack(images, rng.choice(n, 4)), unpack(images, rng.choice(n, 4))
    fade = 0.5 * a + 0.5 * b
    blurry = np.full((2, 64, 64), 0.05)
    noise = rng.uniform(0, 1, (2, 64, 64))  # every image nearly as far
    grey = 0.5 + rng.normal(0, 0.01, (2, 64, 64))  # an untrained decoder's: near-ties
    frames = np.concatenate([exact, noisy, fade, blurry, noise, grey])
    index, dist = images.nearest(frames.reshape(len(frames), -1), chunk=1000)
    want_index, want_dist = brute_force(frames, images.packed)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-9, atol=1e-6)
    np.testing.assert_array_equal(index, want_index)
    assert (dist[:6] == 0).all()


def test_run_length_product_equals_brute_force(images):
    rng = np.random.default_rng(1)
    n = len(images)
    g = np.unpackbits(images.packed, axis=1).astype(np.float64)  # (n, 4096)
    steps = np.diff(g.reshape(n, 64, 64), axis=2, prepend=0, append=0)  # run ends
    assert images.most == np.abs(steps).sum((1, 2)).max()
    exact = g[rng.choice(n, 3)]
    noisy = np.clip(exact + rng.normal(0, 0.2, exact.shape), 0, 1)
    fade = 0.5 * g[rng.choice(n, 3)] + 0.5 * g[rng.choice(n, 3)]
    half = np.full((1, 4096), 0.5)
    frames = np.concatenate([exact, noisy, fade, half])
    dist = images.distances(frames).numpy()  # (n, M)
    want = (frames**2).sum(1)[None] - 2 * g @ frames.T + g.sum(1)[:, None]
    np.testing.assert_allclose(dist, want, rtol=1e-12, atol=1e-9)
    binary = [0, 1, 2, 6, 7, 8, 9]  # pixels of 0, 0.5 and 1: exact in float64
    np.testing.assert_array_equal(dist[:, binary], want[:, binary])
    part = images.distances(frames, 100, 2100).numpy()  # another product shape: rounding
    np.testing.assert_allclose(part, dist[100:2100], rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(part[:, binary], want[100:2100, binary])
    # constant 0.5: every image at the same distance, the lowest index wins
    index, dist = images.nearest(half, chunk=777)
    assert index.tolist() == [0] and dist.tolist() == [1024.0]


def test_exact_decoder_on_the_true_path_scores_zero_and_monotone(small_ds, images, pairs):
    grid = small_ds.grid
    paths = np.stack([true_path(grid, p) for p in pairs])  # (P, T)

    def decoder(start: np.ndarray, end: np.ndarray) -> np.ndarray:
        return unpack(images, paths).astype(np.float32)

    out = gt_interpolation(decoder, images, grid, pairs)
    assert out == {"gt_interp_distance": 0.0, "gt_interp_monotone": 1.0}


def test_cross_fade_scores_a_larger_distance(small_ds, images, pairs):
    def fade(start: np.ndarray, end: np.ndarray) -> np.ndarray:
        t = np.linspace(0, 1, FRAMES)[None, :, None, None]
        return (1 - t) * start[:, None] + t * end[:, None]

    out = gt_interpolation(fade, images, small_ds.grid, pairs)
    assert out["gt_interp_distance"] > 1e-3


def test_detours_are_not_monotone(small_ds, pairs):
    grid = small_ds.grid
    scale = grid.factor("scale")
    for pair in pairs:
        k, a, b = pair
        path = true_path(grid, pair)
        assert score_paths(grid, [pair], path[None])[0]
        # back and forth: the end image in the middle of the path, then the start again
        back = path.copy()
        back[FRAMES // 2 - 1], back[FRAMES // 2] = b, a
        assert not score_paths(grid, [pair], back[None])[0]
        # leaves a fixed factor for one frame
        other = scale if grid.names[k] != "scale" else grid.factor("posX")
        c = grid.classes(path)
        c[FRAMES // 2, other] = (c[FRAMES // 2, other] + 1) % grid.sizes[other]
        assert not score_paths(grid, [pair], grid.index(c)[None])[0]
    # a third shape on the way from one shape to another is not monotone either
    (shape_pair,) = [p for p in pairs if grid.names[p[0]] == "shape"][:1]
    _, a, b = shape_pair
    c = grid.classes(true_path(grid, shape_pair))
    third = ({0, 1, 2} - {c[0, 1], c[-1, 1]}).pop()
    c[FRAMES // 2, 1] = third
    assert not score_paths(grid, [shape_pair], grid.index(c)[None])[0]
