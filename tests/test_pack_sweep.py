"""Packed trials in a real sweep: a real local Ray, a real MLflow sqlite store. One Tune trial
trains the seeds of one setting; each model has its own MLflow run; a diverging member fails
alone; the analysis reads each run's model from its pack's checkpoint; a killed pack worker
resumes from the pack's checkpoint."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import collect, reconstructions
from analysis.store import Target
from raywae.data import open_dataset
from raywae.experiment import SHOWN_IMAGES, Experiment
from raywae.images import reconstruct
from raywae.search_space import load
from raywae.sweep import main
from tests.faults import nan_noise_env
from tests.test_sweep import LONG, first_result, runs_of, start_driver, wait_for, write_space

# The `diverges` arm's seed-0 model draws NaN noise at step 7 (tests/faults.py), so its recon
# term is NaN there on every machine; its pack mates (seeds 2, 4) and the other arm are sane.
DIVERGES = {"family": "beta_vae", "set": {"objective": {"beta": 3}}}


@pytest.fixture
def faulty_ray() -> object:
    """A real local Ray whose workers poison the `diverges` arm's seed-0 noise at step 7."""
    import ray

    root = str(Path(__file__).resolve().parents[1])  # workers import tests.faults from here
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, **nan_noise_env(3, 0, 7)}
    hook = "tests.faults.install"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"worker_process_setup_hook": hook, "env_vars": env},
    )
    yield
    ray.shutdown()


def test_packed_sweep_logs_one_run_per_model(tmp_path: Path, faulty_ray: None) -> None:
    """Logged without weights (tracking.log_model false), so the analysis reads each run's
    model from its pack's checkpoint: Figure 2, and the runs table from the Tune folders."""
    arms = {"beta_vae": {"set": {"objective": {"beta": 4}}}, "diverges": DIVERGES}
    path = write_space(
        tmp_path, "packed", arms=arms, seeds=[0, 2, 4], pack=3, max_failures=3,
        tracking={"log_model": False},
    )  # fmt: skip
    spec = load(path)
    assert spec.planned() == [
        {"arm": "beta_vae", "seeds": [0, 2, 4]},
        {"arm": "diverges", "seeds": [0, 2, 4]},
    ]
    assert main([str(path)]) == 1  # one model failed; the five others finished
    client, runs = runs_of(tmp_path, "packed")
    by = {(r.data.tags["raywae.arm"], int(r.data.params["seed"])): r for r in runs}
    assert sorted(by) == [(a, s) for a in ("beta_vae", "diverges") for s in (0, 2, 4)]
    failed = by.pop(("diverges", 0))
    assert failed.info.status == "FAILED"
    assert "'recon' is not finite at step 7" in failed.data.tags["raywae.error"]
    trials = {r.data.tags["raywae.trial_id"] for r in runs}
    assert len(trials) == 2  # two Tune trials, six runs
    ds = open_dataset(spec.config(spec.example()).data, quiet=True)
    for (arm, seed), run in by.items():
        assert run.info.status == "FINISHED", (arm, seed)
        assert run.data.tags["raywae.pack_size"] == "3"
        assert run.data.tags["raywae.pack_member"] == str([0, 2, 4].index(seed))
        assert run.info.run_name.endswith(f"seed={seed}")
        assert 0 <= run.data.metrics["metric/beta_vae_5"] <= 1
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == [10, 20, 30]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"metrics.json", "config.json", "reconstructions.png"} <= artifacts
        assert "model.pt" not in artifacts
        config = client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))
        assert json.loads(Path(config).read_text())["seed"] == seed
    # The packed model's figures are its solo run's (float tolerance), on a sane setting.
    torch.set_num_threads(1)
    for seed in (0, 4):
        alone = Experiment(spec.config({"arm": "beta_vae", "seed": seed}), ds, progress=False)
        alone.train(lambda logs: None)
        (figures,) = alone.final().values()
        logged = by[("beta_vae", seed)].data.metrics
        assert logged["test/recon"] == pytest.approx(figures["test/recon"], rel=1e-3)
        assert logged["metric/beta_vae_4"] == pytest.approx(figures["metric/beta_vae_4"], abs=0.02)

    # Figure 2 from the packs' checkpoints; each run's model is its own member's: its
    # reconstructions are those its trial logged to that run (reconstructions.png), which
    # differ between the members.
    uri, storage = client.tracking_uri, tmp_path / "runs"
    fig = ["-e", "packed", "--tracking-uri", uri, "--storage", str(storage), "--no-log"]
    assert reconstructions.main([*fig, "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "figure2.png").is_file()
    chosen = collect.read_table(tmp_path / "fig" / "figure2_models.csv")
    assert len(chosen) and chosen["weights"].str.contains("state.pt").all()
    target = Target(uri, ("packed",), tmp_path, storage, False)
    table = collect.load_runs(target)
    images = ds.shown_images(SHOWN_IMAGES)
    logged_rows = {}
    for row in table[table["status"] == "FINISHED"].to_dict("records"):
        assert row["member"] == [0, 2, 4].index(row["seed"])
        model, source = reconstructions.trained_model(target, row)
        assert source.endswith("state.pt" if row["member"] == 0 else f"model {row['member']}")
        logged = logged_rows[row["arm"], row["seed"]] = reconstructions.from_artifact(
            client, row["run_id"]
        )
        assert np.abs(reconstruct(model, images) - logged).max() <= 1 / 255 + 1e-6, source
    for seed in (2, 4):
        assert np.abs(logged_rows["beta_vae", seed] - logged_rows["beta_vae", 0]).max() > 0.05
    # The same table from the Tune folders: one row per model, its own figures.
    tune = collect.load_runs(target, from_tune=True).set_index(["trial_id", "member"])
    mlflow = table.set_index(["trial_id", "member"]).loc[tune.index]
    assert len(tune) == 6 and (tune[["status", "seed"]] == mlflow[["status", "seed"]]).all().all()
    ok = mlflow["status"] == "FINISHED"
    assert np.allclose(tune.loc[ok, "test/recon"], mlflow.loc[ok, "test/recon"])
    assert tune.loc[~ok, "error"].str.contains("not finite at step 7").all()


def test_killed_pack_worker_resumes_every_member(tmp_path: Path) -> None:
    """SIGKILL of a packed trial's process: Tune retries it from the pack's checkpoint; each
    member's MLflow run continues (one run each, no repeated steps) and finishes."""
    arms = {"beta_vae": {}}
    path = write_space(tmp_path, "pack_worker", arms=arms, base=LONG, seeds=2, pack=2)
    results = tmp_path / "runs" / "pack_worker"
    driver = start_driver(path, "--set", "max_failures=2")

    wait_for(driver, lambda: first_result(results))
    assert sorted(first_result(results)["members"]) == ["0", "1"]
    os.kill(first_result(results)["pid"], signal.SIGKILL)
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, out[-3000:]
    client, runs = runs_of(tmp_path, "pack_worker")
    assert sorted(int(r.data.params["seed"]) for r in runs) == [0, 1]
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == sorted(set(steps)) and max(steps) == 1500, steps
    lines = [json.loads(x) for x in next(results.glob("*/result.json")).read_text().splitlines()]
    assert len({line["pid"] for line in lines}) == 2  # a second process took over
    restarted = next(line for line in lines if line["pid"] != lines[0]["pid"])
    assert restarted["step"] > 300  # from the checkpoint, not from step 0
    assert lines[-1]["done"]
