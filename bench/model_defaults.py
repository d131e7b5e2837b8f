"""What "the authors' model, exactly" changes in a short run (PROTOCOL §3): (a) a β-VAE
(β = 4) with PyTorch's default init vs the authors' Glorot init; (b) a WAE-MMD with the box
posterior (uniform prior, λ_p = 1, Glorot init) anchored at the box's centre vs its corner.
Every model: the paper network, the same seed, procedural dSprites on a subgrid, the paper's
learning rate (the first, constant quarter of its schedule) for --steps steps. Reported: test
recon over the whole test split (Trainer.evaluate) and the Higgins 4- and 5-factor scores
(metrics.report on the subgrid's code table, one run per preset).

    python bench/model_defaults.py                          # 500 steps per model
    python bench/model_defaults.py --steps 2000 --presets rubenstein2018 --subgrid ""
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from raywae.config import from_dict
from raywae.data import FactorGrid, load_dsprites
from raywae.metrics import encode_grid, report
from raywae.train import Trainer

BETA_VAE = {"name": "beta_vae", "beta": 4.0}
WAE_BOX = {"name": "wae_mmd", "lam": 400.0, "lp_lambda": 1.0}
BOX = {"posterior": "box", "prior": "uniform", "init": "glorot"}
# name -> (objective, model) settings; the pairs differ in one key only.
MODELS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "beta_vae/init=torch": (BETA_VAE, {"init": "torch"}),
    "beta_vae/init=glorot": (BETA_VAE, {"init": "glorot"}),
    "wae_box/anchor=centre": (WAE_BOX, {**BOX, "box_anchor": "centre"}),
    "wae_box/anchor=corner": (WAE_BOX, {**BOX, "box_anchor": "corner"}),
}


def parse_steps(text: str) -> dict[str, int]:
    """'orientation=2,posX=2' -> {'orientation': 2, 'posX': 2}; '' -> {} (the whole grid)."""
    return {k: int(v) for k, v in (p.split("=") for p in text.split(",") if p)}


def run_one(name: str, ds: Any, args: argparse.Namespace) -> dict[str, float]:
    objective, model = MODELS[name]
    cfg = from_dict(
        {
            "model": {"hidden": args.hidden, "latent_dim": 16, **model},
            "objective": objective,
            "train": {"batch_size": args.batch, "report_every": args.log_every, "device": "cpu"},
            "seed": args.seed,
        }
    )
    trainer = Trainer(cfg, ds)
    curve: list[str] = []
    start = time.perf_counter()
    trainer.run(
        steps=args.steps,
        callback=lambda t, logs: curve.append(f"{logs[0]['step']}:{logs[0]['train/loss']:.0f}"),
    )
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    out: dict[str, float] = {"steps": trainer.step, "train_s": train_s}
    out.update(trainer.evaluate(progress=False))
    codes = encode_grid(trainer.model, ds, progress=False)
    out["code_std"] = float(codes.std(0).mean())
    for preset in args.presets:
        res = report(codes, ds.grid, args.seed, preset=preset, runs=1)
        out.update({f"{preset}/beta_vae_{k}": res[f"metric/beta_vae_{k}"] for k in (4, 5)})
    out["eval_s"] = time.perf_counter() - start
    print(f"{name}: {trainer.step} steps in {train_s:.0f} s, eval {out['eval_s']:.0f} s;")
    print(f"  train/loss by step: {' '.join(curve)}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500, help="training steps per model")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=1200)
    ap.add_argument("--subgrid", default="orientation=2", help="data subgrid ('' = all)")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--presets", nargs="*", default=["rubenstein2018", "disentanglement_lib"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    ds = load_dsprites("procedural", grid=FactorGrid.dsprites().subgrid(parse_steps(args.subgrid)))
    print(
        f"data: {ds.source}, {ds.grid.describe()}, {len(ds.grid):,} images "
        f"(loaded in {time.perf_counter() - start:.0f} s); seed {args.seed}, "
        f"{args.steps} steps x batch {args.batch}, hidden {args.hidden}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    results = {name: run_one(name, ds, args) for name in args.models}

    cols = ["test/recon", "test/recon_mean", "code_std"] + [
        f"{p}/beta_vae_{k}" for p in args.presets for k in (4, 5)
    ]
    short = {"rubenstein2018": "rub", "disentanglement_lib": "dlib"}
    heads = [c.replace("test/", "").replace("/beta_vae_", " H") for c in cols]
    heads = [next((h.replace(p, s) for p, s in short.items() if h.startswith(p)), h) for h in heads]
    print(f"\n{'model':24s}" + "".join(f"{h:>13s}" for h in heads))
    for name, res in results.items():
        print(f"{name:24s}" + "".join(f"{res[c]:13.3f}" for c in cols))
    print("(H4 / H5: Higgins 4- / 5-factor score, 1 run; recon: nats per image, test split)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
