"""The ground-truth interpolation score's cost on the full 737,280-image procedural grid:
setup once per pack (GridImages.build: the run table from the packed bits; choose_pairs),
then per model (interpolate + the exact nearest search of its 640 frames + score_paths) for
(a) an untrained FC model (frames ≈ 0.5: every image nearly equidistant), (b) frames that
are exact grid images (the true factor path), (c) those frames + Gaussian pixel noise
σ = 0.1, clipped to [0, 1]. Prints wall seconds and the load average before and after.

    RAYWAE_DATA_DIR=... python bench/gt_interp_speed.py [--cases a b c]
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import numpy as np
import torch

from raywae.config import ModelConfig
from raywae.data import load_dsprites
from raywae.images import interpolate
from raywae.metrics.gt_interpolation import GridImages, choose_pairs, gt_interpolation, true_path
from raywae.models.networks import build_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", nargs="+", default=["a", "b", "c"])
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    ds = load_dsprites("procedural")
    grid = ds.grid
    start = time.perf_counter()
    images = GridImages.build(ds.packed_all())
    built = time.perf_counter()
    test = np.zeros(len(grid), bool)
    test[ds.split()[1]] = True
    pairs = choose_pairs(grid, test)
    done = time.perf_counter()
    print(
        f"setup: build {built - start:.2f} s ({len(images.val):,} run-table nonzeros), "
        f"choose_pairs {done - built:.2f} s ({len(pairs)} pairs)"
    )
    paths = np.stack([true_path(grid, p) for p in pairs])  # (P, T)
    exact = np.unpackbits(images.packed[paths], axis=-1).reshape(*paths.shape, 64, 64)
    rng = np.random.default_rng(0)
    noisy = np.clip(exact + rng.normal(0, 0.1, exact.shape), 0, 1).astype(np.float32)
    torch.manual_seed(0)
    model = build_model(ModelConfig())
    decoders = {
        "a": ("untrained FC model", functools.partial(interpolate, model, frames=16)),
        "b": ("exact grid images", lambda s, e: exact.astype(np.float32)),
        "c": ("noisy frames, sigma 0.1", lambda s, e: noisy),
    }
    for case in args.cases:
        name, decode = decoders[case]
        start = time.perf_counter()
        out = gt_interpolation(decode, images, grid, pairs)
        print(
            f"({case}) {name}: {time.perf_counter() - start:.2f} s per model, {out}, "
            f"load average {os.getloadavg()}"
        )


if __name__ == "__main__":
    main()
