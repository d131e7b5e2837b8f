"""The Ray Tune trainable: Tune glue over raywae.experiment and raywae.pack (report,
checkpoint, resume).

A trial builds its config from the sweep spec, trains (resuming from Tune's checkpoint when
Ray restarts it), reports every `train.report_every` steps with a checkpoint, and at the end
reports the final figures with a checkpoint whose `artifacts/` folder MLflow logs. A packed
trial (its dict has `seeds`) trains the seeds of one setting at once and reports each
member's logs under `members` (member index -> a solo trial's logs); its artifacts are
`artifacts/<member>/`.
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

from raywae.experiment import FAILED, STATE_FILE, Experiment, open_dataset
from raywae.pack import PackExperiment
from raywae.search_space import SweepSpec
from raywae.train import NonFiniteLossError

BARS_ENV = "RAYWAE_TRIAL_BARS"  # "1": evaluation bars through Ray's tqdm_ray (a terminal)
FINAL_FILE = "final.json"  # in a finished trial's checkpoint: its final report


def train_trial(config: dict[str, Any], spec: SweepSpec) -> None:
    """Tune function trainable. config: the flat trial dict (see SweepSpec.planned)."""
    started = time.time()  # this attempt's start, before the data is opened (or built)
    cfgs = [spec.config(member) for member in spec.members(config)]
    torch.set_num_threads(max(1, int(spec.cpu)))
    bars = ray_tqdm if os.environ.get(BARS_ENV) == "1" else False
    ds = open_dataset(cfgs[0].data, quiet=True)
    packed = "seeds" in config
    exp = PackExperiment(cfgs, ds, bars) if packed else Experiment(cfgs[0], ds, bars)
    if (restored := tune.get_checkpoint()) is not None:
        with restored.as_directory() as folder:
            final = Path(folder) / FINAL_FILE
            if final.is_file():  # it had finished, but the driver died before recording it
                tune.report(json.loads(final.read_text()))
                return  # no retraining, no second evaluation: the same final figures
            exp.restore(Path(folder) / STATE_FILE, f"{restored.path}/{STATE_FILE}")
    # Where and when this attempt runs (a restarted trial reports a new node and start).
    context = {
        "node_ip": ray.util.get_node_ip_address(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()) or "none",
        "device": str(exp.trainer.device if not packed else exp.pack.device),
        "started_at": started,
    }

    def report(logs: dict[str, Any], artifacts: dict[Any, Any] | None = None) -> None:
        logs = {**logs, **context, "reported_at": time.time()}
        with tempfile.TemporaryDirectory() as folder:
            exp.save(Path(folder) / STATE_FILE)
            if artifacts is not None:
                exp.write_outputs(Path(folder) / "artifacts", artifacts, spec.log_model)
            if logs.get("done"):
                (Path(folder) / FINAL_FILE).write_text(json.dumps(logs))
            tune.report(logs, checkpoint=tune.Checkpoint.from_directory(folder))

    if packed:
        _train_pack(exp, report)
        return
    try:
        logs = exp.train(report)
    except NonFiniteLossError as err:
        # Deterministic: a retry from the last checkpoint would diverge the same way, so the
        # trial ends now with its reason (Tune would retry max_failures times if it raised).
        tune.report({"step": err.step, FAILED: f"{type(err).__name__}: {err}", "done": True})
        return
    results = {**logs, **exp.final()}
    report({**results, "done": True}, artifacts=results)


def _train_pack(exp: PackExperiment, report: Any) -> None:
    """A packed trial: each report holds every member's logs under `members` (str(member) ->
    a solo trial's report, with its `seed`; a diverged member's is its FAILED reason)."""
    seeds = [m.cfg.seed for m in exp.members]

    def pack_logs(logs: dict[int, dict[str, Any]], **extra: Any) -> dict[str, Any]:
        members = {**logs, **exp.failures()}
        return {
            "step": exp.pack.step,
            "pack/active": len(exp.pack.active),
            "members": {str(m): {**v, "seed": seeds[m]} for m, v in sorted(members.items())},
            **extra,
        }

    last = exp.train(lambda logs: report(pack_logs(logs)))
    if not exp.pack.active:  # every member diverged: nothing to evaluate or write
        report(pack_logs({}, done=True))
        return
    results = {m: {**last.get(m, {}), **figures} for m, figures in exp.final().items()}
    report(pack_logs(results, done=True), artifacts=results)
