"""The Ray Tune trainable: the only module that reports to Tune or writes Tune checkpoints.

A trial builds its config from the sweep spec, trains (resuming from Tune's checkpoint when
Ray restarts it), reports every `train.report_every` steps with a checkpoint, and at the end
encodes the grid once and reports test reconstruction and every disentanglement score.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from raywae.config import Config
from raywae.data import FactorGrid, ProceduralDataWarning, load_dsprites
from raywae.images import write_pictures
from raywae.metrics import encode_grid, report
from raywae.search_space import SweepSpec
from raywae.train import Trainer

STATE_FILE = "state.pt"
PROGRESS_EVAL_IMAGES = 5000  # test/recon during training: the first 5,000 test images


def dataset(cfg: Config) -> Any:
    """The dSprites table a config trains on (opened from the shared per-node cache)."""
    grid = FactorGrid.dsprites()
    if cfg.data.subgrid:
        grid = grid.subgrid(cfg.data.subgrid)
    return load_dsprites(cfg.data.source, cfg.data.path, grid)


def final_metrics(trainer: Trainer, ds: Any) -> dict[str, float]:
    """PROTOCOL §6-§8 from one code table of the whole grid: Higgins on 4 and 5 factors
    (each run and the mean) and the extra metrics the config asks for (`metric/...`)."""
    cfg = trainer.cfg.metrics
    codes = encode_grid(trainer.model, ds)
    return report(codes, ds.grid, trainer.cfg.seed, cfg.extra, cfg.runs, cfg.preset)


def _checkpoint(trainer: Trainer, folder: Path) -> tune.Checkpoint:
    torch.save(trainer.state_dict(), folder / STATE_FILE)
    return tune.Checkpoint.from_directory(str(folder))


def train_trial(config: dict[str, Any], spec: SweepSpec) -> None:
    """Tune function trainable. config: {"arm", "seed", dotted overrides...}."""
    cfg = spec.config(config)
    torch.set_num_threads(max(1, int(spec.cpu)))
    with warnings.catch_warnings():  # the driver has already warned, once, before any trial
        warnings.simplefilter("ignore", ProceduralDataWarning)
        ds = dataset(cfg)
    trainer = Trainer(cfg, ds)
    if (restored := tune.get_checkpoint()) is not None:
        with restored.as_directory() as folder:
            trainer.load_state_dict(torch.load(Path(folder) / STATE_FILE, weights_only=False))
    context = {
        "node_ip": ray.util.get_node_ip_address(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()) or "none",
    }

    def report_progress(trainer: Trainer, logs: dict[str, float]) -> None:
        if trainer.step >= cfg.train.steps:
            return  # the last window is reported with the final metrics below
        logs = {**logs, **trainer.evaluate(PROGRESS_EVAL_IMAGES), **context}
        with tempfile.TemporaryDirectory() as folder:
            tune.report(logs, checkpoint=_checkpoint(trainer, Path(folder)))

    logs = trainer.run(callback=report_progress) or {"step": trainer.step}
    start = time.perf_counter()
    results = {**logs, **trainer.evaluate(), **context, **final_metrics(trainer, ds)}
    results["time/final_eval_s"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        artifacts = Path(folder) / "artifacts"
        _, test = ds.split(seed=0)
        span = 1.0 if cfg.model.prior == "uniform" else 2.0
        write_pictures(trainer.model, ds.images(np.sort(test[:8])), artifacts, span)
        (artifacts / "metrics.json").write_text(
            json.dumps({k: v for k, v in results.items() if isinstance(v, int | float)}, indent=1)
        )
        tune.report({**results, "done": True}, checkpoint=_checkpoint(trainer, Path(folder)))
