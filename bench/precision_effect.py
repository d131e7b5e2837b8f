"""Does bf16 training change the science? Trains the arms of a sweep YAML (default: the
quickstart's β-VAE and WAE) for several seeds in fp32 and under bf16 autocast
(`train.precision`), and prints test recon and both Higgins scores as mean ± std per arm and
precision, the difference of the means against the seeds' spread, and the training speed.

    python bench/precision_effect.py                               # quickstart, seeds 0 1 2
    python bench/precision_effect.py --seeds 0 1 2 3 --threads 2 --out /tmp/precision.json

Each finished run is appended to --out (JSON lines), so an interrupted bench keeps its runs
and a rerun with the same --out skips them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from raywae.config import override
from raywae.data import open_dataset
from raywae.experiment import Experiment
from raywae.search_space import load

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("test/recon", "metric/beta_vae_4", "metric/beta_vae_5")


def run_one(spec, arm: str, seed: int, precision: str, ds) -> dict:
    cfg = override(spec.config({"arm": arm, "seed": seed}), {"train.precision": precision})
    exp = Experiment(cfg, ds, progress=False)
    start = time.perf_counter()
    exp.train(lambda logs: None)
    train_s = time.perf_counter() - start
    (final,) = exp.final().values()
    figures = {k: final[k] for k in KEYS}
    return {"arm": arm, "seed": seed, "precision": precision, **figures,
            "train_s": train_s, "steps_per_s": cfg.train.steps / train_s}  # fmt: skip


def table(rows: list[dict]) -> str:
    """mean ± std per (arm, precision); per arm and key: |Δmean| / pooled std of the seeds."""
    out = ["| arm | precision | seeds | " + " | ".join(KEYS) + " | steps/s |", "|---" * 7 + "|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["precision"]), []).append(r)

    def ms(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{statistics.mean(values):.4g} ± {sd:.2g}"

    for (arm, precision), rs in sorted(groups.items()):
        cells = [ms([r[k] for r in rs]) for k in (*KEYS, "steps_per_s")]
        out.append(f"| {arm} | {precision} | {len(rs)} | " + " | ".join(cells) + " |")
    for arm in sorted({a for a, _ in groups}):
        a, b = groups.get((arm, "fp32"), []), groups.get((arm, "bf16"), [])
        if len(a) > 1 and len(b) > 1:
            parts = []
            for k in KEYS:
                x, y = [r[k] for r in a], [r[k] for r in b]
                pooled = ((statistics.variance(x) + statistics.variance(y)) / 2) ** 0.5
                diff = statistics.mean(y) - statistics.mean(x)
                parts.append(f"{k} Δ {diff:+.3g} = {diff / pooled:+.2f} σ" if pooled else k)
            out.append(f"{arm}: bf16 − fp32: " + "; ".join(parts))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", type=Path, default=ROOT / "search_spaces" / "quickstart.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the sweep's base, e.g. --set base.train.steps=400")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("/tmp/raywae-precision.jsonl"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from raywae.config import parse_sets

    spec = load(args.spec, parse_sets(args.set))
    done = [json.loads(x) for x in args.out.read_text().splitlines()] if args.out.exists() else []
    seen = {(r["arm"], r["seed"], r["precision"]) for r in done}
    ds = open_dataset(spec.config(spec.example()).data, quiet=True)
    for seed in args.seeds:
        for arm in spec.arms:
            for precision in args.precisions:
                if (arm, seed, precision) in seen:
                    continue
                row = run_one(spec, arm, seed, precision, ds)
                print(json.dumps(row), flush=True)
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done.append(row)
    print(table(done))


if __name__ == "__main__":
    main()
