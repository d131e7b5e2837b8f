"""Schedulers from YAML in real small Tune runs (a local Ray, a real MLflow sqlite store): ASHA
stops trials at its rungs and their runs are FINISHED and tagged; PBT continues a trial from
another's copied checkpoint (solo and packed); a scheduler on a metric never reported during
training is exit 2 before Ray; a killed scheduled sweep resumes with the scheduler's state."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from raywae.checkpoint import STATE_FILE, weights_digest
from raywae.sweep import main
from raywae.tracking import EXPLOITS_TAG, STOPPED_TAG
from raywae.tune.stopped import FINAL_EVAL_TAG
from tests.test_sweep import TINY, resume, runs_of, start_driver, wait_for, write_space

# A proxy every report (the whole tiny grid, a short classifier fit): schedulers act on it.
PROXY = {"grid_subsample": {}, "steps": 200, "points": 300}
PROXIED = {**TINY, "metrics": {**TINY["metrics"], "every": 10, "proxy": PROXY}}


def test_scheduler_on_a_metric_not_reported_during_training_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    search = {"scheduler": "asha", "metric": "metric/beta_vae_5"}
    path = write_space(tmp_path, "bad_sched", arms={"beta_vae": {}}, search=search)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "search.metric" in err and "metric/beta_vae_5" in err and "only at the end" in err
    # The proxies exist only with metrics.every: the message says so.
    search = {"scheduler": {"name": "asha", "metric": "proxy/beta_vae_5"}}
    path = write_space(tmp_path, "bad_proxy", arms={"beta_vae": {}}, search=search)
    assert main([str(path)]) == 2
    assert "metrics.every" in capsys.readouterr().err
    # A setting of another scheduler is refused, naming it and what asha reads.
    search = {"scheduler": {"name": "asha", "metric": "proxy/recon", "quantile_fraction": 0.5}}
    path = write_space(tmp_path, "bad_key", arms={"beta_vae": {}}, search=search)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "search.scheduler.quantile_fraction" in err and "grace_period" in err
    # PBT cannot follow an Optuna search.
    search = {"algorithm": "optuna", "scheduler": {"name": "pbt", "metric": "proxy/recon",
              "mode": "min", "perturbation_interval": 10,
              "mutations": {"objective.beta": {"uniform": [1, 4]}}}}  # fmt: skip
    arms = {"beta_vae": {"space": {"objective.lp_lambda": {"uniform": [0, 1]}}}}
    path = write_space(tmp_path, "bad_pbt", arms=arms, search=search, base=PROXIED)
    assert main([str(path)]) == 2
    assert "search.algorithm grid" in capsys.readouterr().err


def test_dry_run_names_the_scheduler_and_its_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    search = {"metric": "proxy/recon", "mode": "min",
              "scheduler": {"name": "asha", "grace_period": 10, "reduction_factor": 2}}  # fmt: skip
    path = write_space(tmp_path, "asha_plan", arms={"beta_vae": {}}, search=search, base=PROXIED)
    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "scheduler asha on proxy/recon (min), in steps: max_t=30, grace_period=10, " in out


def test_asha_stops_trials_at_its_rungs(tmp_path: Path, local_ray: None) -> None:
    """Trials run one at a time in plan order, best first (a tiny learning rate trains
    slower): each later trial is below its rung's cutoff at step 10 and is stopped there.
    With final_eval the stopped ones are then evaluated from their step-10 checkpoints."""
    scheduler = {"name": "asha", "grace_period": 10, "reduction_factor": 2, "final_eval": True}
    search = {"metric": "proxy/recon", "mode": "min", "scheduler": scheduler}
    arms = {"beta_vae": {"grid": {"train.lr": [1e-2, 1e-6, 1e-7]}}}
    path = write_space(tmp_path, "asha", arms=arms, search=search, base=PROXIED, concurrency=1)
    assert main([str(path)]) == 0  # stopped early is not failed
    client, runs = runs_of(tmp_path, "asha")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    by_lr = {float(r.data.params["train.lr"]): r for r in runs}
    assert STOPPED_TAG not in by_lr[1e-2].data.tags
    assert "metric/beta_vae_5" in by_lr[1e-2].data.metrics  # the survivor's final scores
    for lr in (1e-6, 1e-7):
        run = by_lr[lr]
        assert run.data.tags[STOPPED_TAG].startswith("step 10: asha"), run.data.tags
        history = client.get_metric_history(run.info.run_id, "proxy/recon")
        assert [m.step for m in history] == [10]  # it keeps the proxies it reported
        assert run.data.tags[FINAL_EVAL_TAG] == "at step 10 (stopped early)"
        final = client.get_metric_history(run.info.run_id, "metric/beta_vae_5")
        assert [m.step for m in final] == [10] and 0 <= final[0].value <= 1
    # The analysis puts none of the stopped models on a front.
    from analysis.aggregate import paper_pairs
    from analysis.collect import mlflow_records, tidy

    records = mlflow_records(client, runs[0].info.experiment_id, "asha")
    table = tidy(records).assign(setting=lambda t: t["run_id"])
    pairs = paper_pairs(table, "metric/beta_vae_5")
    assert set(pairs["run_id"]) == {by_lr[1e-2].info.run_id}


def _exploits(experiment: Path) -> list[tuple[Path, dict]]:
    """(trial folder, result) of every report that followed a PBT exploit."""
    return [
        (result.parent, line)
        for result in experiment.glob("*/result.json")
        for line in map(json.loads, result.read_text().splitlines())
        if line.get("exploited_from")
    ]


# ~1 min each on 2 idle cores: the pack variant runs with the slow tests.
@pytest.mark.parametrize("pack", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["solo", "pack"])
def test_pbt_continues_from_the_copied_checkpoint(
    tmp_path: Path, local_ray: None, pack: int
) -> None:
    """Two trials (their λ1 drawn by PBT from the bounds), synchronous PBT every 10 steps, the worse
    half exploits the better: it continues from the other trial's checkpoint (step > 0, the
    same weights as the copied checkpoint) with a new λ1, logged as hparam/ per step."""
    base = {**PROXIED, "train": {**PROXIED["train"], "steps": 40}}
    mutations = {"objective.lp_lambda": {"uniform": [0.1, 10]}}
    search = {"metric": "proxy/recon", "mode": "min",
              "scheduler": {"name": "pbt", "perturbation_interval": 10, "synch": True,
                            "quantile_fraction": 0.5, "resample_probability": 1.0,
                            "mutations": mutations}}  # fmt: skip
    arms = {"wae_gaussian": {"grid": {"objective.lam": [1, 1000]}}}
    path = write_space(tmp_path, "pbt", arms=arms, search=search, base=base, concurrency=2,
                       seeds=pack, pack=pack)  # fmt: skip
    assert main([str(path)]) == 0
    exploits = _exploits(tmp_path / "runs" / "pbt")
    assert exploits, "no trial exploited another"
    checked = 0
    for folder, line in exploits:
        assert line["restored_step"] > 0 and line["step"] > line["restored_step"]
        source = folder.parent / line["exploited_from"]
        assert source.is_dir() and source != folder
        for state in source.glob(f"checkpoint_*/{STATE_FILE}"):  # (older ones are deleted)
            saved = torch.load(state, weights_only=True)
            if saved["step"] == line["restored_step"]:
                assert weights_digest(saved) == line["restored_digest"]
                checked += 1
    assert checked, "every copied checkpoint was deleted before the check"
    client, runs = runs_of(tmp_path, "pbt")
    assert len(runs) == 2 * pack and all(r.info.status == "FINISHED" for r in runs)
    exploited = [r for r in runs if EXPLOITS_TAG in r.data.tags]
    assert exploited and all(" from " in r.data.tags[EXPLOITS_TAG] for r in exploited)
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "hparam/objective.lp_lambda")
        assert history and all(0.1 <= m.value <= 10 for m in history)
    values = {m.value for r in exploited for m in
              client.get_metric_history(r.info.run_id, "hparam/objective.lp_lambda")}  # fmt: skip
    assert len(values) > 1  # its λ1 changed mid-trial


@pytest.mark.slow  # two sweep drivers in subprocesses: minutes
def test_killed_scheduled_sweep_resumes_with_its_scheduler(tmp_path: Path) -> None:
    """mo_asha over two objectives; Ctrl+C mid-sweep, then --resume: every planned trial has
    one MLflow run, each FINISHED (trained to the end, or stopped early and tagged)."""
    base = {**PROXIED, "train": {**PROXIED["train"], "steps": 120, "report_every": 10}}
    scheduler = {"name": "mo_asha", "grace_period": 30, "reduction_factor": 2}
    search = {"metric": ["proxy/recon", "proxy/beta_vae_5"], "mode": ["min", "max"],
              "scheduler": scheduler}  # fmt: skip
    arms = {"beta_vae": {"grid": {"objective.beta": [1, 4, 16]}}}
    path = write_space(tmp_path, "mo_resume", arms=arms, search=search, base=base,
                       concurrency=1, seeds=2)  # fmt: skip
    experiment = tmp_path / "runs" / "mo_resume"
    driver = start_driver(path)
    wait_for(driver, lambda: len(list(experiment.glob("*/checkpoint_000002"))) >= 2, 600)
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, out[-3000:]
    resumed = resume(path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    client, runs = runs_of(tmp_path, "mo_resume")
    planned = sorted((b, s) for b in (1.0, 4.0, 16.0) for s in (0, 1))
    got = sorted((float(r.data.params["objective.beta"]), int(r.data.params["seed"])) for r in runs)
    assert got == planned
    assert all(r.info.status == "FINISHED" for r in runs)
    stopped = [r for r in runs if STOPPED_TAG in r.data.tags]
    assert all("mo_asha" in r.data.tags[STOPPED_TAG] for r in stopped)
    assert all("metric/beta_vae_5" in r.data.metrics for r in runs if r not in stopped)
    assert not any("metric/beta_vae_5" in r.data.metrics for r in stopped)  # final_eval: false


@pytest.mark.slow  # a minute each: Tune's other schedulers, built from YAML, run to the end
@pytest.mark.parametrize("name", ["hyperband", "median", "pb2"])
def test_every_scheduler_runs_a_sweep(tmp_path: Path, local_ray: None, name: str) -> None:
    scheduler: dict = {"name": name}
    if name == "pb2":
        scheduler |= {"perturbation_interval": 10,
                      "mutations": {"objective.lp_lambda": {"uniform": [0.1, 10]}}}  # fmt: skip
    elif name == "median":
        scheduler |= {"grace_period": 10, "min_samples_required": 1}
    search = {"metric": "proxy/recon", "mode": "min", "scheduler": scheduler}
    grid = {} if name == "pb2" else {"grid": {"objective.lp_lambda": [0.1, 5]}}
    path = write_space(tmp_path, name, arms={"wae_gaussian": grid}, search=search,
                       base=PROXIED, seeds=2 if name == "pb2" else 1)  # fmt: skip
    assert main([str(path)]) == 0
    client, runs = runs_of(tmp_path, name)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:  # trained to its end, or stopped early and tagged so
        assert "metric/beta_vae_5" in run.data.metrics or STOPPED_TAG in run.data.tags
    if name == "pb2":
        assert all("hparam/objective.lp_lambda" in r.data.metrics for r in runs)


def test_scheduler_state_survives_a_resumed_driver() -> None:
    """SchedulerState saves a scheduler's state with Tune's and puts it back into the
    scheduler a resumed sweep unpickles fresh: ASHA keeps its rungs, so a trial that was
    below the cutoff before the kill is still judged against the same records after it."""
    from types import SimpleNamespace

    from raywae.scheduling import SchedulerDoc, resolve
    from raywae.tune.schedulers import SchedulerState, build

    doc = SchedulerDoc(name="asha", grace_period=10, reduction_factor=2)
    spec = resolve(doc, ("grid", ("proxy/recon",), ("min",)), {}, 40)
    before, after = build(spec), build(spec)
    trials = [SimpleNamespace(trial_id=f"t{k}", config={}) for k in range(3)]
    for k, trial in enumerate(trials[:2]):
        before.on_trial_add(None, trial)
        assert before.on_trial_result(None, trial, {"step": 10, "proxy/recon": 1.0 + k}) == (
            "CONTINUE" if k == 0 else "STOP"
        )
    saved = SchedulerState(before).get_state()
    state = SchedulerState(after)
    state.set_state(saved)
    state.on_step_begin(0, trials)  # the first step of the resumed sweep
    after.on_trial_add(None, trials[2])
    # the third trial meets the two recorded values (1.0, 2.0): 1.6 is above their cutoff
    assert after.on_trial_result(None, trials[2], {"step": 10, "proxy/recon": 1.6}) == "STOP"
    assert after.stop_reason("t1")[0] == 10 and after.stop_reason("t2")[0] == 10
    fresh = build(spec)
    fresh.on_trial_add(None, trials[2])  # without the state it would have continued
    assert fresh.on_trial_result(None, trials[2], {"step": 10, "proxy/recon": 1.6}) == "CONTINUE"


@pytest.mark.parametrize("name", ["asha", "hyperband", "median", "pbt", "pb2", "mo_asha"])
def test_every_schedulers_state_can_be_saved(name: str) -> None:
    """Tune saves the callback's state with its own: every scheduler's must pickle (median
    stopping keeps a defaultdict with a lambda factory, HyperBand lambdas)."""
    from raywae.scheduling import SchedulerDoc, resolve
    from raywae.tune.schedulers import SchedulerState, build

    mutations = {"objective.lp_lambda": {"uniform": [0.1, 10]}}
    population = {"mutations": mutations, "perturbation_interval": 10}
    doc = SchedulerDoc(name=name, **(population if name in ("pbt", "pb2") else {}))
    metric = ("proxy/recon", "proxy/beta_vae_5") if name == "mo_asha" else ("proxy/recon",)
    mode = ("min", "max")[: len(metric)]
    spec = resolve(doc, ("grid", metric, mode), {}, 40)
    fresh = build(spec)
    state = SchedulerState(build(spec))
    restored = SchedulerState(fresh)
    restored.set_state(state.get_state())
    restored.on_step_begin(0, [])
    if name == "median":  # restored into the fresh defaultdict, which keeps its factory
        assert fresh._last_pause["unseen"] == float("-inf")
