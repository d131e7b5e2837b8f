"""DCI with the histogram GBT (`dci`, the default) vs disentanglement_lib's
GradientBoostingClassifier (`dci_exact`) on a few code tables over the full dSprites grid,
at the library's sample sizes (10,000 / 5,000): the four DCI figures of each, their
differences, and the seconds each took, in one run.

    python bench/dci_agreement.py                  # 4 tables, both estimators (~30 min, 2 cores)
    python bench/dci_agreement.py --tables true --num-train 2000 --num-test 1000   # quick
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from raywae.data.grid import FactorGrid
from raywae.metrics.dci import dci


def tables(grid: FactorGrid, seed: int = 0) -> dict[str, np.ndarray]:
    """Code tables of known structure: the true factor values (+ noise), an entangled
    mix of them, a partly disentangled one, and random codes."""
    values = grid.latent_values(grid.classes(np.arange(len(grid))))[:, list(grid.varying)]
    z = (values - values.mean(0)) / values.std(0)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((len(grid), 10))
    sh, sc, o, x, y = z.T
    return {
        "true": values.astype(np.float32),
        "true+noise": np.hstack([z + 0.3 * noise[:, :5], noise[:, 5:8]]).astype(np.float32),
        "mixed": np.stack([sh + sc, sh - sc, o + x, x + y, x - y, y + o], 1).astype(np.float32),
        "partial": np.stack([sh, sc, x + y, x - y, o, noise[:, 0]], 1).astype(np.float32),
        "random": noise[:, :6].astype(np.float32),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="*", default=["true+noise", "mixed", "partial", "random"])
    ap.add_argument("--num-train", type=int, default=10_000)
    ap.add_argument("--num-test", type=int, default=5000)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    grid = FactorGrid.dsprites()
    all_tables = tables(grid)
    rows = {}
    print(f"DCI, {args.num_train:,} train / {args.num_test:,} test samples, full dSprites grid")
    for name in args.tables:
        out = {}
        for label, exact in (("hist", False), ("exact", True)):
            start = time.perf_counter()
            out[label] = dci(all_tables[name], grid, 0, args.num_train, args.num_test, exact)
            out[f"{label}_s"] = time.perf_counter() - start
        rows[name] = out
        print(
            f"{name} (d={all_tables[name].shape[1]}): hist {out['hist_s']:.1f} s, "
            f"exact {out['exact_s']:.1f} s ({out['exact_s'] / out['hist_s']:.0f}x)"
        )
        for key in out["hist"]:
            h, e = out["hist"][key], out["exact"][key]
            print(f"  {key:22s} hist {h:.4f}  exact {e:.4f}  diff {h - e:+.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
