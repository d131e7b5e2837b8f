"""The Ray Tune trainable: Tune glue over raywae.experiment (report, checkpoint, resume).

A trial trains the R >= 1 models of its trial dict (SweepSpec.members: one, or the seeds of
one setting as a pack), resuming from Tune's checkpoint when Ray restarts it (or from another
trial's, when PBT exploits), reports every `train.report_every` steps with a checkpoint every
`train.checkpoint_every`, and at the end reports the final figures with a checkpoint whose
artifact folders (`checkpoint.artifact_folder`) MLflow logs. Every report has the shape of
raywae.logkeys.trial_report.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

import ray
import torch
from ray import tune
from ray.experimental.tqdm_ray import tqdm as ray_tqdm

from raywae.checkpoint import STATE_FILE, artifact_folder, weights_digest
from raywae.data import open_dataset
from raywae.experiment import Experiment
from raywae.logkeys import EXPLOITED, RESTORED_STEP, trial_report
from raywae.search_space import SweepSpec
from raywae.train import Logs, NonFiniteLossError

BARS_ENV = "RAYWAE_TRIAL_BARS"  # "1": evaluation bars through Ray's tqdm_ray (a terminal)
FINAL_FILE = "final.json"  # in a finished trial's checkpoint: its final report
DIGEST = "restored_digest"  # after an exploit: checkpoint.weights_digest of the copied weights


def train_trial(config: dict[str, Any], spec: SweepSpec) -> None:
    """Tune function trainable. config: the flat trial dict (see SweepSpec.planned)."""
    started = time.time()  # this attempt's start, before the data is opened (or built)
    models = spec.configs(config)  # built once: every model of this trial, typed
    torch.set_num_threads(max(1, int(spec.cpu)))
    bars = ray_tqdm if os.environ.get(BARS_ENV) == "1" else False
    exp = Experiment(models, open_dataset(models[0].data, quiet=True), bars)
    context: dict[str, Any] = {}
    if (restored := tune.get_checkpoint()) is not None:
        source = PurePosixPath(restored.path).parent.name  # the trial folder: its trial id
        own = source == tune.get_context().get_trial_id()
        with restored.as_directory() as folder:
            final = Path(folder) / FINAL_FILE
            if own and final.is_file():  # it had finished, but the driver died before
                tune.report(json.loads(final.read_text()))  # recording it: no retraining,
                return  # no second evaluation, the same final figures
            exp.restore(Path(folder) / STATE_FILE, f"{restored.path}/{STATE_FILE}")
        if not own:  # PBT's exploit: another trial's weights, this trial's hyperparameters
            digest = weights_digest(exp.trainer.state_dict())
            context |= {EXPLOITED: source, RESTORED_STEP: exp.trainer.step, DIGEST: digest}
    seeds = [cfg.seed for cfg in models]
    # PBT / PB2: each model's current values of the hyperparameters they vary, every report.
    varied = spec.members(config)[0]
    hparams = {f"hparam/{k}": varied[k] for k in spec.scheduler.mutations if k in varied}
    every = models[0].train.checkpoint_every or models[0].train.report_every
    # Where and when this attempt runs (a restarted trial reports a new node and start).
    context |= {
        "node_ip": ray.util.get_node_ip_address(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()) or "none",
        "device": str(exp.trainer.device),
        "started_at": started,
        "pack/active": len(exp.trainer.active),
    }

    def report(logs: Logs, done: bool = False, artifacts: Logs | None = None) -> None:
        context["pack/active"] = len(exp.trainer.active)
        members = {i: {**v, **hparams} for i, v in logs.items()} | exp.failures()
        out = trial_report(exp.trainer.step, members, seeds, **context, reported_at=time.time())
        out |= {"done": True} if done else {}
        for key in (EXPLOITED, RESTORED_STEP, DIGEST):  # once, with the first report after it
            context.pop(key, None)
        if not done and exp.trainer.step % every:  # a report without a checkpoint
            tune.report(out)
            return
        with tempfile.TemporaryDirectory() as folder:
            if exp.trainer.active:
                exp.save(Path(folder) / STATE_FILE)
            for i, figures in (artifacts or {}).items():
                where = Path(folder) / artifact_folder(i, len(models))
                exp.write_outputs(i, where, figures, spec.log_model)
            if done:
                (Path(folder) / FINAL_FILE).write_text(json.dumps(out))
            tune.report(out, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        last = exp.train(report)
    except NonFiniteLossError:
        # Deterministic: a retry from the last checkpoint would diverge the same way, so the
        # trial ends now with each model's reason (Tune would retry max_failures times).
        report({}, done=True)
        return
    results = {i: {**last.get(i, {}), **figures} for i, figures in exp.final().items()}
    report(results, done=True, artifacts=results)
