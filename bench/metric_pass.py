"""The final evaluation of one model on CPU (Experiment.final: test recon, one encoding pass of
the 737,280-image grid, Higgins on 4 + 5 factors x 3 runs at the paper's 100,000 Adagrad
steps), before / after issue 18's metric-pass work, in one run; and whether the fast code
table scores what the fp32 reference table scores (Higgins, MIG, DCI), against the metric's
own run-to-run spread over metric seeds.

before: encode_grid(batch_size=2048, sparse=False) (the old settings: dense float batches of
2048) and the Higgins fits on one core (workers=1, as the fit always ran); both a little
faster than the old code itself (inference_mode, a reused batch buffer, no mask pass in the
fit), so the speed-up shown is a lower bound. after: the defaults (batch 8192, sparse CSR
batches of the lit pixels for the FC encoder, the fits in torch.get_num_threads() worker
threads). bf16: the dense encoding under bf16 autocast.

    python bench/metric_pass.py --threads 2                    # trains a beta-VAE 500 steps
    python bench/metric_pass.py --threads 2 --final            # + Experiment.final() itself
    python bench/metric_pass.py --threads 2 --run DIR          # a trained run (config + model.pt)
    python bench/metric_pass.py --threads 2 --seeds 2 --no-bf16 --train-steps 200   # quicker
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from metrics_speed import timed  # noqa: E402

from raywae.checkpoint import load_run  # noqa: E402
from raywae.config import from_dict, override  # noqa: E402
from raywae.data import open_dataset  # noqa: E402
from raywae.experiment import Experiment  # noqa: E402
from raywae.metrics import dci, encode_grid, higgins_many, mig  # noqa: E402

METRICS = ("beta_vae_4", "beta_vae_5", "mig", "dci")


def load() -> str:
    return open("/proc/loadavg").read().split(" ")[0]


def higgins_seconds(table: np.ndarray, grid, threads: int) -> float:
    """One model's Higgins fits at the paper's settings (2 factor sets x 3 runs, 100,000 steps)
    with `threads` torch threads (the fit's workers default to that)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return timed(lambda: higgins_many([table], grid, (4, 5), "rubenstein2018", 3, [0]))[1]
    finally:
        torch.set_num_threads(before)


def scores(table: np.ndarray, grid, seed: int) -> dict[str, float]:
    """One table's scores at one metric seed, as Experiment.final computes them (Higgins 4 / 5:
    the mean of 3 runs, both factor sets in one fit), with MIG and DCI disentanglement."""
    h4, h5 = higgins_many([table], grid, (4, 5), "rubenstein2018", 3, [seed])[0]
    return {
        "beta_vae_4": h4["score"],
        "beta_vae_5": h5["score"],
        "mig": mig(table, grid, seed=seed)["mig"],
        "dci": dci(table, grid, seed=seed)["disentanglement"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--run", help="a trained run's folder (config.json + model.pt)")
    ap.add_argument("--train-steps", type=int, default=500, help="without --run: beta-VAE steps")
    ap.add_argument("--beta", type=float, default=4.0)
    ap.add_argument("--seeds", type=int, default=3, help="metric seeds for the spread")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 table")
    ap.add_argument("--final", action="store_true", help="also time Experiment.final() itself")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.run:
        model, cfg = load_run(args.run)
        exp = Experiment(override(cfg, {"train.device": "cpu"}), progress=False)
        exp.trainer.model.load_state_dict(model.state_dict())
        what = f"run {args.run}"
    else:
        cfg = from_dict(
            {
                "objective": {"name": "beta_vae", "beta": args.beta},
                "train": {"steps": args.train_steps, "device": "cpu"},
            }
        )
        exp = Experiment(cfg, open_dataset(cfg.data, quiet=True), progress=False)
        _, t = timed(lambda: exp.trainer.run())
        what = f"beta-VAE (beta {args.beta}) trained {args.train_steps} steps in {t:.0f} s"
    ds, model, grid = exp.ds, exp.trainer.model, exp.metric_grid()
    print(f"{what}; data {ds.source}; torch threads {args.threads}; load {load()}")

    figures: dict[str, float] = {}
    tables: dict[str, np.ndarray] = {}
    _, figures["recon"] = timed(lambda: exp.trainer.evaluate(progress=False))
    print(f"test recon ({len(exp.trainer.test_index):,} images): {figures['recon']:.1f} s")
    passes = {
        "fp32 before": lambda: encode_grid(
            model, ds, 2048, progress=False, grid=grid, sparse=False
        ),
        "fp32 after": lambda: encode_grid(model, ds, progress=False, grid=grid),
    }
    if not args.no_bf16:

        def bf16() -> np.ndarray:
            with torch.autocast("cpu", torch.bfloat16):
                return encode_grid(model, ds, progress=False, grid=grid, sparse=False)

        passes["bf16 dense"] = bf16
    for name, encode in passes.items():
        tables[name], figures[f"encode {name}"] = timed(encode)
        err = np.abs(tables[name] - tables["fp32 before"]).max()
        print(
            f"encode {name:12s} {figures[f'encode {name}']:6.1f} s  "
            f"(max |codes - fp32 before| {err:.1e}; load {load()})"
        )
    for tag, threads in (("before", 1), ("after", args.threads)):
        figures[f"higgins {tag}"] = higgins_seconds(tables["fp32 after"], grid, threads)
        print(f"higgins {tag:6s} {figures[f'higgins {tag}']:6.1f} s  (load {load()})")
    if args.final:
        _, final_s = timed(exp.final)
        print(f"Experiment.final() as a run calls it: {final_s:.1f} s (load {load()})")

    before = figures["recon"] + figures["encode fp32 before"] + figures["higgins before"]
    after = figures["recon"] + figures["encode fp32 after"] + figures["higgins after"]
    print(f"\n{'metric pass per model':24s} {'before':>8s} {'after':>8s}")
    for label, a, b in (
        ("test recon s", figures["recon"], figures["recon"]),
        ("encode grid s", figures["encode fp32 before"], figures["encode fp32 after"]),
        ("Higgins 2 x 3 fits s", figures["higgins before"], figures["higgins after"]),
        ("total s", before, after),
    ):
        print(f"{label:24s} {a:8.1f} {b:8.1f}")

    seeds = list(range(args.seeds))
    print(f"\nscore agreement over metric seeds {seeds}:")
    print(f"{'table':12s} {'seed':>4s} " + " ".join(f"{m:>10s}" for m in METRICS))
    got: dict[str, list[dict[str, float]]] = {name: [] for name in tables}
    for seed in seeds:
        for name, table in tables.items():
            got[name].append(scores(table, grid, seed))
            row = " ".join(f"{got[name][-1][m]:10.4f}" for m in METRICS)
            print(f"{name:12s} {seed:4d} {row}   (load {load()})")
    others = [n for n in tables if n != "fp32 before"]
    head = " ".join(f"{'|d| ' + n:>16s}" for n in others)
    print(f"\n{'metric':12s} {'fp32 mean':>9s} {'spread sd':>9s} {head}")
    for metric in METRICS:
        values = [s[metric] for s in got["fp32 before"]]
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        cells = []
        for name in others:
            d = max(abs(s[metric] - v) for s, v in zip(got[name], values))
            cells.append(f"{d:11.4f} {'ok' if d <= sd else 'OUT':>4s}")
        print(f"{metric:12s} {np.mean(values):9.4f} {sd:9.4f} " + " ".join(cells))
    print("(|d|: the largest difference to the fp32-before table at the same metric seed; ok:")
    print(" within the spread sd, the standard deviation of the fp32 scores over the seeds)")


if __name__ == "__main__":
    main()
