"""Does adaptive search pay? Grid, random, NSGA-II, ASHA, PBT and mo_asha over the same space
(λ1 of a Gaussian WAE, the paper's range), each repeated with other seeds, at a CPU budget:
the hypervolume
of the (test recon, 5-factor score) front of the models each method finished (final scores,
not proxies), against the training steps it spent, and each method's best model's λ1 (PBT's:
the λ1 it ended on; search_spaces/wae_pbt.yaml at a CPU size, against the grid at equal
compute). Every method is a real sweep (`raywae.sweep`) on one local Ray, logged to one
MLflow store.

    python bench/search_vs_grid.py --out bench/results/search_vs_grid     # 6 methods × 3
    python bench/search_vs_grid.py --out DIR --table-only                 # reprint, replot

Writes DIR/models.csv (every finished model: method, repetition, its steps and scores),
DIR/search_vs_grid.md (the table) and DIR/search_vs_grid.png (hypervolume against steps).
A rerun skips the sweeps already in DIR's MLflow store.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

STEPS = 300  # a full trial
# wae_pbt.yaml's WAE on a small network and an 11,520-image subgrid; proxies every 50 steps
# on that whole grid; the final Higgins score by the disentanglement_lib preset (seconds per
# model, not the paper's preset's 25 s).
BASE = {
    "data": {"source": "auto", "subgrid": {"orientation": 4, "posX": 4, "posY": 4}},
    "model": {"hidden": 128},
    "objective": {"name": "wae_mmd", "lam": 400, "p": 1},
    "train": {"steps": STEPS, "report_every": 50},
    "metrics": {"preset": "disentanglement_lib", "runs": 1, "every": 50,
                "proxy": {"grid_subsample": {}, "points": 500, "steps": 1000}},
}  # fmt: skip
SPACE = {"objective.lp_lambda": {"uniform": [0.0, 12.0]}}  # the paper's λ1 range
GRID = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]  # the grid: 12 values over the range
FULL = 12  # trials of a full budget: 12 grid values, random / NSGA-II samples, PBT members
OBJECTIVES = {"metric": ["test/recon", "metric/beta_vae_5"], "mode": ["min", "max"]}


def methods(rep: int) -> dict[str, dict[str, Any]]:
    """Each method's sweep document (name, arms, search, seeds) for repetition `rep`."""
    arm = {"wae_gaussian": {"space": SPACE}}
    search = {"seed": rep, **OBJECTIVES}
    random = {"algorithm": "random", "num_samples": FULL, **search}
    # ASHA at η = 3 with one rung at 100 steps: a trial costs 100 + 200/3 steps on average,
    # so 22 samples spend about the 12 full trials' budget.
    stopping = {"algorithm": "random", "num_samples": 22, **search}
    rung = {"grace_period": 100, "reduction_factor": 3}
    return {
        "grid": {
            "arms": {"wae_gaussian": {"grid": {"objective.lp_lambda": GRID}}},
            "search": {"algorithm": "grid", **OBJECTIVES},
        },
        "random": {"arms": arm, "search": random},
        "nsga2": {"arms": arm, "search": {**random, "algorithm": "optuna", "sampler": "nsga2"}},
        "asha": {
            "arms": arm,
            "search": {
                **stopping,
                "scheduler": {"name": "asha", "metric": "proxy/beta_vae_5", "mode": "max", **rung},
            },
        },  # fmt: skip
        "mo_asha": {
            "arms": arm,
            "search": {
                **stopping,
                "scheduler": {
                    "name": "mo_asha",
                    "metric": ["proxy/recon", "proxy/beta_vae_5"],
                    "mode": ["min", "max"],
                    **rung,
                },
            },
        },  # fmt: skip
        # The whole population trains at once (a sixth of a core each: PBT needs its members
        # side by side; the comparison is in steps, not seconds).
        "pbt": {
            "arms": {"wae_gaussian": {}},
            "seeds": FULL,
            "resources": {"cpu": 0.16},
            "concurrency": FULL,
            "search": {
                "algorithm": "grid",
                **OBJECTIVES,
                "scheduler": {
                    "name": "pbt",
                    "metric": "proxy/beta_vae_5",
                    "mode": "max",
                    "perturbation_interval": 100,
                    "quantile_fraction": 0.25,
                    "mutations": SPACE,
                },
            },
        },  # fmt: skip
    }


def hypervolume(recon: np.ndarray, score: np.ndarray, ref: tuple[float, float]) -> float:
    """Area dominated by the points (min recon, max score) inside the reference box
    (recon ≤ ref[0], score ≥ ref[1]); points outside it add nothing."""
    keep = (recon < ref[0]) & (score > ref[1])
    order = np.argsort(recon[keep], kind="stable")
    area, best = 0.0, ref[1]
    xs, ys = recon[keep][order], score[keep][order]
    for i, (x, y) in enumerate(zip(xs, ys)):
        best = max(best, y)
        right = xs[i + 1] if i + 1 < len(xs) else ref[0]
        area += (right - x) * (best - ref[1])
    return area


def models(tracking_uri: str, name: str) -> pd.DataFrame:
    """Every run of sweep `name`: its steps trained, final scores (NaN when stopped early)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    rows = []
    for run in client.search_runs([experiment.experiment_id], max_results=10_000):
        steps = max((m.step for m in client.get_metric_history(run.info.run_id, "train/loss")),
                    default=0)  # fmt: skip
        rows.append({
            "steps": steps,
            "recon": run.data.metrics.get("test/recon", np.nan),
            "score": run.data.metrics.get("metric/beta_vae_5", np.nan),
            "lp_lambda": run.data.metrics.get("hparam/objective.lp_lambda",
                                              float(run.data.params["objective.lp_lambda"])),
            "stopped": "raywae.stopped_early" in run.data.tags,
            "status": run.info.status,
        })  # fmt: skip
    return pd.DataFrame(rows)


def table(df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Per method: hypervolume (mean ± std over repetitions), steps spent, models finished."""
    done = df[np.isfinite(df["recon"]) & np.isfinite(df["score"])]
    ref = (float(done["recon"].max()) * 1.05, 0.2)  # worst finished recon; 5-factor chance
    per_rep = []
    for (method, rep), rows in df.groupby(["method", "rep"]):
        fin = rows[np.isfinite(rows["recon"]) & np.isfinite(rows["score"])]
        best = fin.loc[fin["score"].idxmax()] if len(fin) else None
        per_rep.append({
            "method": method, "rep": rep, "steps": int(rows["steps"].sum()),
            "finished": len(fin), "stopped": int(rows["stopped"].sum()),
            "hv": hypervolume(fin["recon"].to_numpy(), fin["score"].to_numpy(), ref),
            "best_score": np.nan if best is None else best["score"],
            "best_lp_lambda": np.nan if best is None else best["lp_lambda"],
        })  # fmt: skip
    reps = pd.DataFrame(per_rep)
    out = [
        f"hypervolume of the (test/recon ↓, metric/beta_vae_5 ↑) front of each method's "
        f"finished models, reference point (recon {ref[0]:.1f}, score {ref[1]}); "
        f"{reps['rep'].nunique()} repetitions; mean ± std",
        "",
        "| method | hypervolume | steps spent | models finished (stopped) | best 5-factor score "
        "| its λ1 |",
        "|---|---|---|---|---|---|",
    ]
    order = ["grid", "random", "nsga2", "asha", "mo_asha", "pbt"]
    for method in [m for m in order if m in set(reps["method"])]:
        r = reps[reps["method"] == method]
        cells = [_ms(r, c, f) for c, f in (("hv", ".1f"), ("steps", ".0f"), ("finished", ".1f"))]
        best = [_ms(r, c, f) for c, f in (("best_score", ".3f"), ("best_lp_lambda", ".2f"))]
        out.append(
            f"| {method} | {cells[0]} | {cells[1]} | {cells[2]} ({r['stopped'].mean():.1f}) | "
            f"{best[0]} | {best[1]} |"
        )
    return "\n".join(out), reps


def _ms(r: pd.DataFrame, col: str, fmt: str) -> str:
    return f"{r[col].mean():{fmt}} ± {r[col].std(ddof=0):{fmt}}"


def plot(reps: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for method, r in reps.groupby("method"):
        ax.scatter(r["steps"], r["hv"], label=method, alpha=0.7)
        ax.errorbar(r["steps"].mean(), r["hv"].mean(), yerr=r["hv"].std(ddof=0), fmt="k+")
    ax.set_xlabel("training steps spent (all trials)")
    ax.set_ylabel("hypervolume of the final-score front")
    ax.set_title("search vs grid at a CPU budget (each point a repetition; + mean ± std)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/search_vs_grid"))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=list(methods(0)))
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args()
    out = args.out.resolve()
    (out / "mlruns").mkdir(parents=True, exist_ok=True)
    tracking = f"sqlite:///{out / 'mlruns' / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    from raywae.sweep import main as sweep

    client = MlflowClient(tracking)
    frames = []
    for rep in range(args.reps):
        for method in args.methods:
            name = f"{method}-{rep}"
            doc = {"name": name, "base": BASE, "seeds": [rep], "resources": {"cpu": 1},
                   "concurrency": 2, "storage": str(out / "runs"), "tracking_uri": tracking,
                   "tracking": {"log_model": False}, **methods(rep)[method]}  # fmt: skip
            if method == "pbt":
                doc["seeds"] = [rep * 100 + k for k in range(FULL)]  # the population
            marker = out / f"{name}.done"
            if not marker.exists() and not args.table_only:
                if found := client.get_experiment_by_name(name):  # an interrupted one: aside
                    client.rename_experiment(
                        found.experiment_id, f"{name}-aborted-{time.time():.0f}"
                    )
                    shutil.rmtree(out / "runs" / name, ignore_errors=True)
                path = out / f"{name}.yaml"
                path.write_text(yaml.safe_dump(doc, sort_keys=False))
                print(f"=== {name}", flush=True)
                code = sweep([str(path)])
                if code not in (0, 1):
                    return code
                marker.write_text(f"exit {code}\n")
            if marker.exists():
                frames.append(models(tracking, name).assign(method=method, rep=rep))
    df = pd.concat(frames, ignore_index=True)
    df.to_csv(out / "models.csv", index=False)
    text, reps = table(df)
    (out / "search_vs_grid.md").write_text(text + "\n")
    plot(reps, out / "search_vs_grid.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
