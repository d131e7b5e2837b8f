"""Sweep overhead: wall time of a 4-trial sweep (2 at a time, real local Ray + MLflow) against
the same 4 trainings run back to back in plain Python (same config, same steps, same final
evaluation and metrics, one torch thread each as in a 1-CPU trial).

    python bench/sweep_overhead.py [--steps 300]

Prints both times, the ideal (serial / concurrency) and the ratio sweep / ideal (aim <= 1.25).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml

from raywae.data import open_dataset
from raywae.experiment import Experiment
from raywae.search_space import SweepSpec, load
from raywae.sweep import main as sweep_main

CONCURRENCY = 2


def space(folder: Path, steps: int) -> Path:
    doc = {
        "name": "overhead",
        "base": {
            "data": {"source": "procedural", "subgrid": {"orientation": 4, "posX": 2, "posY": 2}},
            "model": {"hidden": 256},
            "train": {"steps": steps, "report_every": max(1, steps // 3)},
            "metrics": {"preset": "disentanglement_lib", "runs": 1},
        },
        "arms": {"beta_vae": {"grid": {"objective.beta": [1, 2, 4, 8]}}},
        "resources": {"cpu": 1},
        "concurrency": CONCURRENCY,
        "storage": str(folder / "runs"),
        "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
    }
    path = folder / "overhead.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def serial(spec: SweepSpec) -> float:
    """The same trainings, one after another, no Ray, no MLflow."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    for trial in spec.trials():
        exp = Experiment(spec.config(trial.as_config()), progress=False)
        exp.train(report=lambda logs: None)  # progress evaluation included, as in a trial
        exp.final()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per trial")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = space(Path(tmp), args.steps)
        spec = load(path)
        open_dataset(spec.config(spec.example()).data)  # cache built once, outside timing
        plain = serial(spec)
        start = time.perf_counter()
        code = sweep_main([str(path)])
        swept = time.perf_counter() - start
    ideal = plain / CONCURRENCY
    print(
        f"\n4 trials x {args.steps} steps: serial plain Python {plain:.1f} s; "
        f"sweep ({CONCURRENCY} at a time, incl. Ray start) {swept:.1f} s (exit {code}); "
        f"ideal serial/{CONCURRENCY} = {ideal:.1f} s; ratio sweep/ideal = {swept / ideal:.2f}"
    )


if __name__ == "__main__":
    main()
