"""The field's six baselines and one WAE on disentanglement_lib's network, at a CPU budget:
each family at one mid setting of Locatello et al. (2019)'s study grid, 3 seeds, 1,000
steps (of the study's 300,000) of `preset: locatello2019` (conv64, latent 10, batch 64, Adam
1e-4; ~0.2 s per step on one core here), on procedural dSprites; test recon and the metric
suite (disentanglement_lib's Higgins preset, MIG, DCI, FactorVAE score, SAP) as mean ± std
over seeds, and each metric's cost per model.

    python bench/baselines_cpu.py --out bench/results/baselines_cpu.jsonl   # 21 models
    python bench/baselines_cpu.py --out FILE --table-only                   # reprint

Each finished model is appended to --out (JSON lines): a rerun skips the models it has.
Models train two at a time in worker processes of one torch thread each.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

STEPS = 1000
# The study's settings (preset locatello2019) on the quickstart's 46,080-image subgrid of
# procedural dSprites, STEPS steps instead of 300,000; AnnealedVAE's capacity schedule shrunk
# with them (scale_threshold: C reaches c_max at 333 steps, as at 100,000 of 300,000).
BASE = {
    "preset": "locatello2019",
    "data": {"source": "procedural", "subgrid": {"orientation": 2, "posX": 2, "posY": 2}},
    "objective": {"lam": 400, "scale_threshold": True},
    "train": {"steps": STEPS, "report_every": 500},
    "metrics": {"preset": "disentanglement_lib", "runs": 1,
                "extra": ["mig", "dci", "factor_vae", "sap"]},
}  # fmt: skip
# One mid setting of each family's study grid (and the paper's Gaussian WAE at λ1 = 1).
SETTINGS = {
    "beta_vae": {"objective.name": "beta_vae", "objective.beta": 6},
    "annealed_vae": {"objective.name": "annealed_vae", "objective.c_max": 25},
    "factor_vae": {"objective.name": "factor_vae", "objective.gamma": 30},
    "dip_vae_i": {"objective.name": "dip_vae", "objective.dip_type": "i",
                  "objective.lambda_od": 5},
    "dip_vae_ii": {"objective.name": "dip_vae", "objective.dip_type": "ii",
                   "objective.lambda_od": 5},
    "beta_tc_vae": {"objective.name": "beta_tc_vae", "objective.beta": 6},
    "wae_gaussian": {"objective.name": "wae_mmd", "objective.lp_lambda": 1},
}  # fmt: skip
SEEDS = (0, 1, 2)
SHOWN = {
    "test/recon": "test recon ↓",
    "metric/beta_vae_5": "BetaVAE score",
    "metric/factor_vae/eval_accuracy": "FactorVAE score",
    "metric/mig": "MIG",
    "metric/dci/disentanglement": "DCI disent.",
    "metric/sap": "SAP",
}


def train_one(job: tuple[str, int]) -> dict:
    import torch

    from raywae.config import compose
    from raywae.experiment import Experiment
    from raywae.metrics import EXTRA_METRICS, higgins_many

    torch.set_num_threads(1)
    family, seed = job
    cfg = compose(BASE, {**SETTINGS[family], "seed": seed})
    exp = Experiment(cfg, progress=False)
    start = time.perf_counter()
    exp.train(lambda logs: None)
    train_s = time.perf_counter() - start
    final = exp.final()[0]
    # each metric's cost per model on the same code table
    grid = exp.metric_grid()
    start = time.perf_counter()
    codes = exp.trainer.code_tables(grid)[0]
    cost = {"encode": time.perf_counter() - start}
    start = time.perf_counter()
    higgins_many([codes], grid, preset=cfg.metrics.preset, runs=cfg.metrics.runs, seeds=[seed])
    cost["beta_vae (4 and 5 factors)"] = time.perf_counter() - start
    for name in cfg.metrics.extra:
        start = time.perf_counter()
        EXTRA_METRICS[name](codes, grid, seed)
        cost[name] = time.perf_counter() - start
    return {"family": family, "seed": seed, "train_s": train_s, "final": final, "cost_s": cost}


def table(rows: list[dict]) -> str:
    """Mean ± std over seeds per family (markdown), then the metrics' cost per model."""
    out = [
        "| family (setting) | " + " | ".join(SHOWN.values()) + " |",
        "|---" * (len(SHOWN) + 1) + "|",
    ]
    for family, setting in SETTINGS.items():
        mine = [r for r in rows if r["family"] == family]
        if not mine:
            continue
        knob = ", ".join(
            f"{k.split('.')[-1]}={v}" for k, v in setting.items() if k != "objective.name"
        )
        cells = []
        for key in SHOWN:
            values = [r["final"][key] for r in mine if key in r["final"]]
            cells.append(
                f"{np.mean(values):.3g} ± {np.std(values, ddof=1):.2g}" if len(values) > 1 else "–"
            )
        out.append(f"| {family} ({knob}; n={len(mine)}) | " + " | ".join(cells) + " |")
    names = list(rows[0]["cost_s"]) if rows else []
    out += ["", "seconds per model: " + ", ".join(
        f"{n} {np.mean([r['cost_s'][n] for r in rows]):.2f}" for n in names
    ) + f"; training {np.mean([r['train_s'] for r in rows]):.0f} s for {STEPS} steps"]  # fmt: skip
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench/results/baselines_cpu.jsonl"))
    p.add_argument("--table-only", action="store_true", help="print the table of --out")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in args.out.read_text().splitlines()] if args.out.is_file() else []
    if not args.table_only:
        done = {(r["family"], r["seed"]) for r in rows}
        # seed-major: every family's first seed before any family's second
        jobs = [(f, s) for s in SEEDS for f in SETTINGS if (f, s) not in done]
        print(f"{len(jobs)} models to train ({len(done)} in {args.out}), {STEPS} steps each")
        with mp.get_context("spawn").Pool(args.workers) as pool:
            for row in pool.imap_unordered(train_one, jobs):
                rows.append(row)
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                recon, score = row["final"]["test/recon"], row["final"].get("metric/beta_vae_5")
                print(f"  {row['family']} seed {row['seed']}: test/recon {recon:.1f}, "
                      f"beta_vae_5 {score:.3f}, {row['train_s']:.0f} s", flush=True)  # fmt: skip
    print(table(rows))


if __name__ == "__main__":
    main()
