"""How well do the scores during training predict the final ones? Trains models of different
settings and seeds with the proxies on (`metrics.every`), and prints, for each proxy at 10 %,
25 %, 50 % and 100 % of training, Kendall τ and Spearman ρ against the final score it
estimates over all models (and over the settings' seed means); the proxies' cost as a fraction
of the training they monitor; and, on the trained models' final codes, the agreement and cost
of other proxy settings (grid subsample, points, Adagrad steps), which is how the defaults of
`metrics.proxy` were chosen.

    python bench/proxy_quality.py --out bench/results/proxy_quality.jsonl      # 24 models
    python bench/proxy_quality.py --out FILE --table-only                      # reprint
    python bench/proxy_quality.py --cost       # the defaults' cost on the paper's network

Each finished model is appended to --out (JSON lines): a rerun skips the models it has.
Models train two at a time in worker processes of one torch thread each.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

# The quickstart's data (a 46,080-image subgrid) and the paper's FC network at a third of its
# width (400), a CPU budget of 1,200 steps, a report and the proxies every 60 steps (5 %).
BASE = {
    "data": {"source": "auto", "subgrid": {"orientation": 2, "posX": 2, "posY": 2}},
    "model": {"hidden": 400},
    "objective": {"lam": 400},
    "train": {"steps": 1200, "report_every": 60},
    "metrics": {"preset": "rubenstein2018", "runs": 3, "every": 60},
}
SETTINGS = [
    *({"objective.name": "beta_vae", "objective.beta": b} for b in (1, 4, 16, 64)),
    *({"objective.name": "wae_mmd", "objective.lp_lambda": v} for v in (0, 2, 8)),
    {
        "objective.name": "wae_mmd",
        "objective.lp_lambda": 2,
        "model.posterior": "box",
        "model.prior": "uniform",
    },
]
PAIRS = [  # (proxy, the final score it estimates)
    ("proxy/recon", "test/recon"),
    ("proxy/beta_vae_4", "metric/beta_vae_4"),
    ("proxy/beta_vae_5", "metric/beta_vae_5"),
]
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
# Other proxy settings scored on each final model: grid subsample (on top of the data's),
# labelled points, Adagrad steps.
VARIANTS = list(
    itertools.product(
        ({"orientation": 4, "posX": 4, "posY": 4}, {}), (500, 2000, 5000), (1000, 5000, 20000)
    )
)


def train_one(job: tuple[dict, int]) -> dict:
    import torch

    from raywae.config import from_dict, override
    from raywae.experiment import Experiment
    from raywae.metrics.proxy import higgins_proxy, proxy_grid

    torch.set_num_threads(1)
    setting, seed = job
    cfg = override(from_dict(BASE), {**setting, "seed": seed})
    exp = Experiment(cfg, progress=False)
    curve: list[dict] = []
    start = time.perf_counter()
    exp.train(lambda logs: curve.append(logs[0]))
    train_s = time.perf_counter() - start
    final = exp.final()[0]
    curve.append({**final, "step": cfg.train.steps})  # the proxies' last point
    variants = []
    for sub, points, steps in VARIANTS:
        m = override(cfg, {"metrics.proxy.grid_subsample": sub, "metrics.proxy.points": points,
                           "metrics.proxy.steps": steps}).metrics  # fmt: skip
        t = time.perf_counter()
        grid = proxy_grid(exp.metric_grid(), m)
        codes = exp.trainer.code_tables(grid)
        scores = higgins_proxy(list(codes), grid, [seed], m)[0]
        variants.append({"grid_subsample": sub, "points": points, "steps": steps,
                         "seconds": time.perf_counter() - t, **scores})  # fmt: skip
    keep = ("step", "time/imgs_per_s", "time/proxy_s", *(p for p, _ in PAIRS))
    return {
        "setting": setting,
        "seed": seed,
        "train_s": train_s,
        "curve": [{k: c[k] for k in keep if k in c} for c in curve],
        "final": {k: final[k] for _, k in PAIRS},
        "variants": variants,
    }


def _corr(x: list[float], y: list[float]) -> str:
    tau, rho = kendalltau(x, y).statistic, spearmanr(x, y).statistic
    return f"{tau:.2f} / {rho:.2f}"


def table(rows: list[dict]) -> str:
    """The proxy-vs-final table (markdown) and the cost and variant figures."""
    steps = BASE["train"]["steps"]
    name = [json.dumps(r["setting"], sort_keys=True) for r in rows]
    settings = sorted(set(name))
    out = [
        f"{len(rows)} models, {len(settings)} settings; cells: Kendall τ / Spearman ρ of the "
        "proxy at a fraction of training against the final score, over models (and over "
        "settings' seed means)",
        "",
        "| proxy → final | " + " | ".join(f"{f:.0%}" for f in FRACTIONS) + " |",
        "|---" * (len(FRACTIONS) + 1) + "|",
    ]
    for proxy, final in PAIRS:
        cells = []
        for f in FRACTIONS:
            at = round(f * steps)
            x = [next(c[proxy] for c in r["curve"] if c["step"] == at) for r in rows]
            y = [r["final"][final] for r in rows]
            xs = [np.mean([a for a, n in zip(x, name) if n == s]) for s in settings]
            ys = [np.mean([b for b, n in zip(y, name) if n == s]) for s in settings]
            cells.append(f"{_corr(x, y)} ({_corr(xs, ys)})")
        out.append(f"| {proxy} → {final} | " + " | ".join(cells) + " |")
    ratios = [
        c["time/proxy_s"] / (BASE["metrics"]["every"] * 100 / c["time/imgs_per_s"])
        for r in rows
        for c in r["curve"]
        if "time/proxy_s" in c
    ]
    cost = np.mean([c["time/proxy_s"] for r in rows for c in r["curve"] if "time/proxy_s" in c])
    out += [
        "",
        f"proxy cost: {cost:.2f} s per evaluation (encoding + both classifiers), "
        f"{np.median(ratios):.1%} of the {BASE['metrics']['every']} training steps it "
        f"monitors (median; training at {np.median([r['train_s'] for r in rows]):.0f} s per "
        f"{steps} steps, 1 thread)",
        "",
        "proxy settings on the final codes: τ against the final score over models, seconds",
        "",
        "| grid_subsample | points | steps | τ 4 factors | τ 5 factors | mean |Δ| 5 | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, (sub, points, steps_) in enumerate(VARIANTS):
        v = [r["variants"][k] for r in rows]
        taus = [
            kendalltau([a[f"proxy/beta_vae_{f}"] for a in v],
                       [r["final"][f"metric/beta_vae_{f}"] for r in rows]).statistic
            for f in (4, 5)
        ]  # fmt: skip
        gap = np.mean(
            [abs(a["proxy/beta_vae_5"] - r["final"]["metric/beta_vae_5"]) for a, r in zip(v, rows)]
        )
        secs = np.mean([a["seconds"] for a in v])
        sub_s = ",".join(f"{a}={b}" for a, b in sub.items()) or "(metric grid)"
        out.append(
            f"| {sub_s} | {points} | {steps_} | {taus[0]:.2f} | {taus[1]:.2f} | {gap:.3f} | "
            f"{secs:.2f} |"
        )
    return "\n".join(out)


def paper_cost(threads: int = 1, steps: int = 50) -> str:
    """The default proxies' cost where the paper trains: its FC network on the whole dSprites
    grid, whose proxy grid is every 4th orientation, x and y (11,520 images), against the
    training step's time measured in the same run, both on `threads` torch threads."""
    import torch

    from raywae.config import Config, override
    from raywae.data import FactorGrid, load_dsprites
    from raywae.experiment import Experiment
    from raywae.metrics.proxy import higgins_proxy, proxy_grid

    torch.set_num_threads(threads)
    cfg = override(Config(), {"data.source": "procedural"})
    grid = proxy_grid(FactorGrid.dsprites(), cfg.metrics)
    ds = load_dsprites("procedural", grid=grid)  # the proxy grid's images only
    exp = Experiment(cfg, ds, progress=False)
    exp.trainer.run(steps=5)  # warm-up
    start = time.perf_counter()
    exp.trainer.run(steps=steps)
    step_s = (time.perf_counter() - start) / steps
    costs = []
    for _ in range(3):
        start = time.perf_counter()
        codes = exp.trainer.code_tables(grid)
        higgins_proxy(list(codes), grid, [0], cfg.metrics)
        costs.append(time.perf_counter() - start)
    proxy_s = min(costs)
    lines = [
        f"paper network, {threads} thread(s): a training step {step_s * 1e3:.0f} ms; the "
        f"default proxies (encode {len(grid)} images, 2 classifiers of "
        f"{cfg.metrics.proxy.points} points × {cfg.metrics.proxy.steps} steps) {proxy_s:.2f} s",
    ]
    for every in (250, 500, 1000, 2000, 3000):
        lines.append(f"  metrics.every {every}: {proxy_s / (every * step_s):.1%} of the training")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/proxy_quality.jsonl"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--cost", action="store_true", help="only the defaults' cost (paper_cost)")
    args = p.parse_args()
    if args.cost:
        print(paper_cost())
        return
    rows = (
        [json.loads(line) for line in args.out.read_text().splitlines()]
        if args.out.exists()
        else []
    )
    done = {(json.dumps(r["setting"], sort_keys=True), r["seed"]) for r in rows}
    jobs = [
        (s, seed)
        for s in SETTINGS
        for seed in args.seeds
        if (json.dumps(s, sort_keys=True), seed) not in done
    ]
    if jobs and not args.table_only:
        print(f"training {len(jobs)} models ({len(rows)} already in {args.out})", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with mp.get_context("spawn").Pool(args.workers) as pool:
            for row in pool.imap_unordered(train_one, jobs):
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                rows.append(row)
                print(f"{len(rows)}: {row['setting']} seed {row['seed']}: {row['final']} "
                      f"({row['train_s']:.0f} s training)", flush=True)  # fmt: skip
    print(table(rows))


if __name__ == "__main__":
    main()
