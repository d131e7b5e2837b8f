"""The final evaluation of trials a scheduler stopped early, when the YAML asks for it
(`search.scheduler.final_eval: true`): after the Tuner, each such trial's newest checkpoint is
evaluated like a finished model (Experiment.final, in a Ray task with a trial's resources)
and its figures logged to its MLflow runs at the step it stopped, tagged `raywae.final_eval`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from raywae.checkpoint import STATE_FILE
from raywae.search_space import SweepSpec
from raywae.tracking import MEMBER_TAG, STOPPED_TAG, TRIAL_TAG, sweep_runs

FINAL_EVAL_TAG = "raywae.final_eval"


@ray.remote
def _final(spec: SweepSpec, config: dict[str, Any], checkpoint: Any) -> tuple[int, dict]:
    """(step, model index -> final figures) of a trial's checkpoint."""
    import torch

    from raywae.data import open_dataset
    from raywae.experiment import Experiment

    torch.set_num_threads(max(1, int(spec.cpu)))
    models = spec.configs(config)
    exp = Experiment(models, open_dataset(models[0].data, quiet=True), progress=False)
    with checkpoint.as_directory() as folder:
        exp.restore(Path(folder) / STATE_FILE)
    return exp.trainer.step, exp.final()


def evaluate_stopped(spec: SweepSpec, results: Any, tracking_uri: str) -> int:
    """Evaluate every stopped trial of `results` (a ResultGrid) whose runs lack final figures
    (a resumed sweep does not evaluate twice); returns how many trials it evaluated."""
    client = MlflowClient(tracking_uri)
    runs: dict[str, dict[int, Any]] = {}
    for run in sweep_runs(tracking_uri, spec, f"tags.`{STOPPED_TAG}` LIKE 'step %'"):
        if FINAL_EVAL_TAG not in run.data.tags:
            member = int(run.data.tags.get(MEMBER_TAG, 0))
            runs.setdefault(run.data.tags[TRIAL_TAG], {})[member] = run
    todo = [r for r in results if r.metrics.get("trial_id") in runs and r.checkpoint is not None]
    if not todo:
        return 0
    print(f"final evaluation of {len(todo)} trials stopped early (search.scheduler.final_eval)")
    tasks = [
        _final.options(num_cpus=spec.cpu, num_gpus=spec.gpu).remote(spec, r.config, r.checkpoint)
        for r in todo
    ]
    for r, (step, figures) in zip(todo, ray.get(tasks)):
        for i, values in figures.items():
            run = runs[r.metrics["trial_id"]].get(i)
            if run is None:
                continue
            now = int(time.time() * 1000)
            metrics = [  # (its proxies at that step are logged already: the trial's own)
                Metric(k, float(v), now, step)
                for k, v in values.items()
                if not k.startswith("proxy/")
            ]
            client.log_batch(run.info.run_id, metrics=metrics)
            client.set_tag(run.info.run_id, FINAL_EVAL_TAG, f"at step {step} (stopped early)")
    return len(todo)
