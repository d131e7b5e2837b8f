"""Sweep overhead: wall time of a 4-trial sweep (2 at a time, real local Ray + MLflow) against
the same 4 trainings run as 2 plain Python processes side by side on the same cores, 2 each
(same config, steps, final evaluation and metrics, one torch thread each as in a 1-CPU
trial): the baseline shares the cores exactly as the sweep's trials do, so the cores' own
contention is not counted as overhead. Also times the 4 back to back in this process
(serial / 2 is the older, optimistic ideal).

    python bench/sweep_overhead.py [--steps 1200]

Prints the three times and the ratios sweep / parallel plain (the overhead) and sweep /
(serial / 2).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

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


def train(spec: SweepSpec, trials: list[dict[str, Any]]) -> None:
    """The trainings of `trials`, one after another, no Ray, no MLflow, one torch thread."""
    torch.set_num_threads(1)
    for trial in trials:
        exp = Experiment(spec.config(trial), progress=False)
        exp.train(report=lambda logs: None)  # progress evaluation included, as in a trial
        exp.final()


def serial(spec: SweepSpec) -> float:
    start = time.perf_counter()
    train(spec, [t.as_config() for t in spec.trials()])
    return time.perf_counter() - start


def _worker(args: tuple[str, list[dict[str, Any]]]) -> None:
    train(load(args[0]), args[1])


def parallel(path: Path, spec: SweepSpec) -> float:
    """CONCURRENCY fresh processes (their imports timed, as a Ray worker's are), the trials
    dealt out in turn."""
    trials = [t.as_config() for t in spec.trials()]
    shares = [(str(path), trials[k::CONCURRENCY]) for k in range(CONCURRENCY)]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(CONCURRENCY) as pool:
        pool.map(_worker, shares)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1200, help="training steps per trial")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = space(Path(tmp), args.steps)
        spec = load(path)
        open_dataset(spec.config(spec.example()).data)  # cache built once, outside timing
        side_by_side = parallel(path, spec)
        plain = serial(spec)
        start = time.perf_counter()
        code = sweep_main([str(path)])
        swept = time.perf_counter() - start
    ideal = plain / CONCURRENCY
    print(
        f"\n4 trials x {args.steps} steps: {CONCURRENCY} plain processes side by side "
        f"{side_by_side:.1f} s; serial plain Python {plain:.1f} s; sweep ({CONCURRENCY} at a "
        f"time, incl. Ray start) {swept:.1f} s (exit {code})\n"
        f"overhead: sweep / side-by-side plain = {swept / side_by_side:.2f}; "
        f"sweep / (serial / {CONCURRENCY}) = {swept / ideal:.2f}"
    )


if __name__ == "__main__":
    main()
