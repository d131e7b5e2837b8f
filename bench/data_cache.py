"""Data-layer figures: full-grid render + cache build time, cache open time, and the resident
memory a second process adds when it opens the shared cache and reads batches from it.

    python bench/data_cache.py            # full grid (737,280 images; ~377 MB cache)
    python bench/data_cache.py --small    # a subgrid, for a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raywae.data import FactorGrid, load_dsprites

# A fresh interpreter that imports everything first (baseline), then opens the cache and
# reads 100 random batches of 100 images: the difference is what opening the cache costs.
CHILD = """
import json, os, sys, time
import numpy as np
from raywae.data import FactorGrid, load_dsprites

def rss():
    fields = dict(l.split(":", 1) for l in open("/proc/self/status") if l.startswith("Rss"))
    return {k: int(v.split()[0]) / 1024 for k, v in fields.items()}

grid = FactorGrid.dsprites() if sys.argv[1] == "full" else FactorGrid.dsprites().subgrid(
    orientation=4, posX=4, posY=4)
before = rss()
t = time.perf_counter()
ds = load_dsprites("procedural", grid=grid)
opened = time.perf_counter() - t
at_open = rss()
rng = np.random.default_rng(0)
for _ in range(100):
    ds.images(rng.integers(0, len(ds), 100))
after = rss()
print(json.dumps({"open_s": opened, "before": before, "at_open": at_open, "after": after}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a subgrid instead of the full grid")
    parser.add_argument("--data-dir", type=Path, help="default: a fresh temporary directory")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="raywae-bench-"))
    os.environ["RAYWAE_DATA_DIR"] = str(data_dir)
    grid = FactorGrid.dsprites()
    if args.small:
        grid = grid.subgrid(orientation=4, posX=4, posY=4)
    print(f"grid {grid.describe()} ({len(grid)} images), cache in {data_dir}")

    start = time.perf_counter()
    ds = load_dsprites("procedural", grid=grid)
    build = time.perf_counter() - start
    size_mb = ds.bits.nbytes / 2**20
    print(
        f"render + pack + write cache: {build:.1f} s ({len(grid) / build:,.0f} img/s), "
        f"{size_mb:.0f} MiB, fingerprint {ds.fingerprint[:16]}"
    )

    child = subprocess.run(
        [sys.executable, "-c", CHILD, "small" if args.small else "full"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ,
    )
    out = json.loads(child.stdout)
    print(f"second process: cache open {out['open_s'] * 1000:.1f} ms")
    for label in ("at_open", "after"):
        anon = out[label]["RssAnon"] - out["before"]["RssAnon"]
        file = out[label]["RssFile"] - out["before"]["RssFile"]
        when = "after opening" if label == "at_open" else "after 100 random batches of 100"
        print(
            f"  {when}: resident memory +{anon:.1f} MiB private, +{file:.1f} MiB mapped "
            "file pages (the page cache: one copy per node, shared by every process)"
        )


if __name__ == "__main__":
    main()
