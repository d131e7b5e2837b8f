"""The tiny sweeps behind every CLI's `--smoke` (and the analysis tests): a real Ray Tune grid
(two β, two λ1, two seeds, one family that diverges) or a 3-trial Optuna search, trained for
a few steps on a 576-image procedural subgrid, logged to their own MLflow store.

`python -m analysis.smoke [--kind grid|optuna] [DIR]` runs one (or reports it is there).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

NAMES = {"grid": "analysis_smoke", "optuna": "analysis_smoke_optuna"}
SMOKE_DIR = Path(tempfile.gettempdir()) / "raywae-analysis-smoke"  # where --smoke runs them
# Seconds, not science: a narrow network, 30 steps, the fast metric preset but its 3 runs
# (the paper's aggregation needs the per-run scores).
BASE: dict[str, Any] = {
    "data": {
        "source": "procedural",
        "subgrid": {"scale": 3, "orientation": 10, "posX": 8, "posY": 8},
    },
    "model": {"hidden": 32, "latent_dim": 4},
    "train": {"steps": 30, "report_every": 10, "batch_size": 16},
    "metrics": {"preset": "disentanglement_lib", "runs": 3},
}
GRID_ARMS = {
    "beta_vae": {"grid": {"objective.beta": [1, 8]}},
    "wae_gaussian": {"grid": {"objective.lp_lambda": [0, 2]}},
    # Fails at its second step on any CPU (Adam's first step moves every weight by ±1e30, so
    # the next products overflow float32): the analysis must show failed trials.
    "diverges": {"family": "beta_vae", "set": {"train": {"lr": 1.0e30}}},
}
OPTUNA_ARMS = {
    "beta_vae": {"space": {"objective.beta": {"loguniform": [1, 50]}}},
    "wae_gaussian": {"space": {"objective.lp_lambda": {"uniform": [0, 5]}}},
}
OPTUNA_SEARCH = {
    "algorithm": "optuna",
    "sampler": "nsga2",
    "num_samples": 3,
    "metric": ["test/recon", "metric/beta_vae_5"],
    "mode": ["min", "max"],
}


@dataclass(frozen=True)
class Smoke:
    name: str
    tracking_uri: str
    storage: Path


def write_space(folder: Path, kind: str = "grid") -> Path:
    """The smoke sweep's search-space YAML in `folder` (kind: grid | optuna)."""
    name = NAMES[kind]
    doc: dict[str, Any] = {
        "name": name,
        "description": "analysis smoke sweep (seconds per trial)",
        "base": BASE,
        "arms": GRID_ARMS if kind == "grid" else OPTUNA_ARMS,
        "seeds": 2 if kind == "grid" else 1,
        "resources": {"cpu": 1, "gpu": 0},
        "concurrency": 2,
        "max_failures": 0,
        "storage": str(folder / "runs"),
        "tracking_uri": f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}",
    }
    if kind == "optuna":
        doc["search"] = OPTUNA_SEARCH
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mlruns").mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _marker(folder: Path, name: str) -> Path:
    """Written when the sweep has run to its end: a killed sweep is resumed, not reused."""
    return folder / f"{name}.done"


def ensure(folder: Path, kind: str = "grid") -> Smoke:
    """Run the smoke sweep into `folder` unless it is there; start (and stop) a 2-CPU local
    Ray if none is running. The grid's diverging family makes the sweep exit with 1."""
    folder = folder.resolve()
    name = NAMES[kind]
    smoke = Smoke(name, f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}", folder / "runs")
    if _marker(folder, name).is_file() and (folder / "mlruns" / "mlflow.db").is_file():
        return smoke
    import ray

    from raywae.sweep import main as sweep

    path = write_space(folder, kind)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False)
    try:
        resume = ["--resume"] if (folder / "runs" / name).exists() else []
        code = sweep([str(path), *resume])
    finally:
        if started:
            ray.shutdown()
    if code not in (0, 1):  # 1: the failures the grid asks for
        raise RuntimeError(f"smoke sweep {path} exited with {code}")
    _marker(folder, name).write_text(f"exit status {code}\n")
    return smoke


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.smoke", description=__doc__)
    p.add_argument("folder", nargs="?", type=Path, default=None, help="where (default: temp)")
    p.add_argument("--kind", choices=sorted(NAMES), default="grid")
    args = p.parse_args(argv)
    smoke = ensure(args.folder or SMOKE_DIR, args.kind)
    print(f"smoke sweep {smoke.name!r}: MLflow {smoke.tracking_uri}, Tune {smoke.storage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
