"""Metric timings: full-grid encoding with an untrained Higgins FC auto-encoder, then every
metric on that one code table (PROTOCOL §7-§8). Prints seconds per step and the scores.

    python bench/metrics_speed.py                 # dSprites from the cache (real, else procedural)
    python bench/metrics_speed.py --synthetic     # random bits: same encoding cost, no render
    python bench/metrics_speed.py --skip dci      # leave out the slowest metric
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from raywae.data.grid import FactorGrid
from raywae.metrics import EXTRA_METRICS, encode_grid, higgins_runs


class RandomBits:
    """A stand-in dataset: random packed images over the grid (encoding cost is the same)."""

    def __init__(self, grid: FactorGrid, seed: int = 0) -> None:
        self.grid = grid
        self.bits = np.random.default_rng(seed).integers(0, 256, (len(grid), 512), np.uint8)

    def packed(self, index: np.ndarray) -> np.ndarray:
        return self.bits[index]


class HigginsMLP(torch.nn.Module):
    """4096-1200-1200-(2 x d): the FC encoder, used when raywae.models is not importable."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(4096, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, 2 * d),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, s = self.body(x).chunk(2, dim=1)
        return torch.tanh(mu), s


def build(d: int, hidden: int) -> tuple[Any, str]:
    try:
        from raywae.config import ModelConfig
        from raywae.models import build_model
    except ImportError:
        return HigginsMLP(d, hidden), "HigginsMLP (raywae.models not importable)"
    return build_model(ModelConfig(latent_dim=d, hidden=hidden)), "raywae.models FC AutoEncoder"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", action="store_true", help="random bits instead of dSprites")
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--skip", nargs="*", default=[], help="metrics to leave out")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    grid = FactorGrid.dsprites()
    if args.synthetic:
        ds, source = RandomBits(grid), "synthetic random bits"
    else:
        from raywae.data import load_dsprites

        ds, t_load = timed(lambda: load_dsprites("auto"))
        source = f"{ds.source} (opened in {t_load:.1f} s)"
    model, what = build(args.latent, args.hidden)
    print(f"model: {what}; data: {source}; torch threads: {torch.get_num_threads()}")

    figures: dict[str, float] = {}
    codes, t = timed(lambda: encode_grid(model, ds, batch_size=args.batch))
    figures["encode_grid"] = t
    print(f"encode_grid: {len(grid):,} images in {t:.1f} s ({len(grid) / t:,.0f} img/s)")

    jobs: dict[str, Callable[[], dict[str, float]]] = {}
    for preset in ("rubenstein2018", "disentanglement_lib"):
        for k in (4, 5):
            jobs[f"higgins_{k}/{preset} (3 runs)"] = lambda k=k, p=preset: higgins_runs(
                codes, grid, k, p, runs=3, seed=0
            )
    for name, fn in EXTRA_METRICS.items():
        if name not in args.skip:
            jobs[name] = lambda fn=fn: fn(codes, grid, seed=0)
    for name, job in jobs.items():
        out, t = timed(job)
        figures[name] = t
        shown = {k: round(v, 4) for k, v in out.items() if "/run" not in k}
        print(f"{name:42s} {t:7.1f} s   {shown}", flush=True)
    paper = sum(v for k, v in figures.items() if "rubenstein2018" in k)
    print(f"Higgins paper preset, both tasks x 3 runs, after encoding: {paper:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
