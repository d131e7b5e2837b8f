"""The Ray Tune trainable: Tune glue over raywae.experiment (report, checkpoint, resume).

A trial builds its config from the sweep spec, trains (resuming from Tune's checkpoint when
Ray restarts it), reports every `train.report_every` steps with a checkpoint, and at the end
reports the final figures with a checkpoint whose `artifacts/` folder MLflow logs.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.experimental.tqdm_ray import tqdm as ray_tqdm

from raywae.experiment import FAILED, METRICS_FILE, STATE_FILE, Experiment, open_dataset
from raywae.search_space import SweepSpec
from raywae.train import NonFiniteLossError

BARS_ENV = "RAYWAE_TRIAL_BARS"  # "1": evaluation bars through Ray's tqdm_ray (a terminal)


def train_trial(config: dict[str, Any], spec: SweepSpec) -> None:
    """Tune function trainable. config: the flat trial dict (see search_space.Trial)."""
    started = time.time()  # this attempt's start, before the data is opened (or built)
    cfg = spec.config(config)
    torch.set_num_threads(max(1, int(spec.cpu)))
    bars = ray_tqdm if os.environ.get(BARS_ENV) == "1" else False
    exp = Experiment(cfg, open_dataset(cfg.data, quiet=True), progress=bars)
    if (restored := tune.get_checkpoint()) is not None:
        with restored.as_directory() as folder:
            final = Path(folder) / "artifacts" / METRICS_FILE
            if final.is_file():  # it had finished, but the driver died before recording it
                tune.report({**json.loads(final.read_text()), "done": True})
                return  # no retraining, no second evaluation: the same final figures
            exp.restore(Path(folder) / STATE_FILE, f"{restored.path}/{STATE_FILE}")
    # Where and when this attempt runs (a restarted trial reports a new node and start).
    context = {
        "node_ip": ray.util.get_node_ip_address(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()) or "none",
        "device": str(exp.trainer.device),  # cpu where the node declares GPUs CUDA cannot see
        "started_at": started,
    }

    def report(logs: dict[str, Any], artifacts: dict[str, Any] | None = None) -> None:
        with tempfile.TemporaryDirectory() as folder:
            exp.save(Path(folder) / STATE_FILE)
            if artifacts is not None:
                exp.write_outputs(Path(folder) / "artifacts", artifacts, spec.log_model)
            stamp = {**context, "reported_at": time.time()}
            tune.report({**logs, **stamp}, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        logs = exp.train(report)
    except NonFiniteLossError as err:
        # Deterministic: a retry from the last checkpoint would diverge the same way, so the
        # trial ends now with its reason (Tune would retry max_failures times if it raised).
        tune.report({"step": err.step, FAILED: f"{type(err).__name__}: {err}", "done": True})
        return
    results = {**logs, **exp.final()}
    report({**results, "done": True}, artifacts=results)
