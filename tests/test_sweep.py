"""The sweep engine on a real local Ray, a real MLflow sqlite store and real Optuna."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from analysis.smoke import BASE, OPTUNA_ARMS, OPTUNA_SEARCH
from raywae.config import ConfigError
from raywae.experiment import STATE_FILE
from raywae.search_space import load
from raywae.sweep import main

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
PAPER_BETAS = [1, 3, 10, 20, 30, 40, 50, 75, 100]
PAPER_L1 = [0, 0.1, 0.5, 1, 2, 3, 5, 8, 12]
# Tiny trials (analysis.smoke's: a 576-image grid, a narrow network, a few steps, the fast
# metric preset), one metric run each.
TINY = {**BASE, "metrics": {**BASE["metrics"], "runs": 1}}


def write_space(folder: Path, name: str, **entries: object) -> Path:
    doc = {
        "name": name,
        "base": TINY,
        "seeds": 1,
        "resources": {"cpu": 1},
        "storage": str(folder / "runs"),
        "tracking_uri": f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}",
        **entries,
    }
    (folder / "mlruns").mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def runs_of(folder: Path, name: str) -> list:
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


# --- planning (no Ray) ------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "count"), [("beta_vae", 90), ("wae_l1", 180), ("paper", 270)])
def test_dry_run_counts(name: str, count: int, capsys: pytest.CaptureFixture) -> None:
    assert main([str(SPACES / f"{name}.yaml"), "--dry-run"]) == 0
    assert f"{count} trials" in capsys.readouterr().out
    trials = load(SPACES / f"{name}.yaml").trials()
    assert (
        len(trials) == count
        and len({(t.arm, tuple(t.params.items()), t.seed) for t in trials}) == count
    )
    for arm in {t.arm for t in trials}:
        values = sorted({v for t in trials if t.arm == arm for v in t.params.values()})
        assert values == (PAPER_BETAS if arm == "beta_vae" else PAPER_L1)
        assert sorted({t.seed for t in trials if t.arm == arm}) == list(range(10))


def test_packing_plan(capsys: pytest.CaptureFixture) -> None:
    paper = SPACES / "paper.yaml"
    assert load(paper).pack == 1  # the default: one model per trial, as before packs
    assert load(paper, {"pack": "auto", "resources.gpu": 0}).pack == 1  # CPU: no packing
    spec = load(paper, {"pack": "auto"})  # paper.yaml asks for a GPU share per trial
    trials, packs = spec.trials(), spec.packs()
    assert spec.pack == 10 and len(packs) == 27
    spec4 = load(paper, {"pack": 4, "resources.gpu": 0})
    for plan, size in ((packs, 10), (spec4.packs(), 4)):
        assert sorted(i for p in plan for i in p) == list(range(len(trials)))
        for members in plan:
            assert len({(trials[i].arm, tuple(trials[i].params.items())) for i in members}) == 1
            assert 1 <= len(members) <= size
    assert [len(p) for p in spec4.packs()[:3]] == [4, 4, 2]  # 10 seeds of one setting
    assert main([str(paper), "--dry-run", "--set", "pack=4"]) == 0
    out = capsys.readouterr().out
    assert "pack 4 -> 81 Tune trials" in out and "pack 2: trials 8, 9" in out
    with pytest.raises(ConfigError, match="optuna / random searches need pack: 1"):
        load(SPACES / "wae_optuna.yaml", {"pack": 2})
    with pytest.raises(ConfigError, match="pack: models per trial"):
        load(paper, {"pack": 0})


def test_shipped_spaces_all_load() -> None:
    for path in SPACES.glob("*.yaml"):
        spec = load(path)
        assert spec.arms, path
    optuna_spec = load(SPACES / "wae_optuna.yaml")
    assert optuna_spec.metric == ("test/recon", "metric/beta_vae_5")
    assert optuna_spec.mode == ("min", "max")


def test_the_studys_yaml_plans_the_study() -> None:
    """locatello.yaml: unsupervised_study_v1's 36 settings × 50 seeds on dSprites (1,800
    baseline models) + the WAE arms (2 × 9 λ1 × 50), packed by setting, on conv64 with the
    study's training settings; paper_plus.yaml: the paper's 270 + 5 × 6 × 10 baselines."""
    from collections import Counter

    spec = load(SPACES / "locatello.yaml")
    trials = spec.trials()
    per_family = Counter(t.arm for t in trials)
    baselines = ("beta_vae", "annealed_vae", "factor_vae", "dip_vae_i", "dip_vae_ii", "beta_tc_vae")
    assert {f: per_family[f] for f in baselines} == dict.fromkeys(baselines, 300)
    assert sum(per_family[f] for f in baselines) == 1800
    assert per_family["wae_gaussian"] == per_family["wae_box"] == 450
    assert len(spec.packs()) == 36 + 18 and {len(p) for p in spec.packs()} == {50}
    settings = {(t.arm, tuple(t.params.values())) for t in trials}
    assert len(settings) == 54 and len({t.seed for t in trials}) == 50
    grids = {
        ("beta_vae", "objective.beta"): [1, 2, 4, 6, 8, 16],
        ("annealed_vae", "objective.c_max"): [5, 10, 25, 50, 75, 100],
        ("factor_vae", "objective.gamma"): [10, 20, 30, 40, 50, 100],
        ("dip_vae_i", "objective.lambda_od"): [1, 2, 5, 10, 20, 50],
        ("dip_vae_ii", "objective.lambda_od"): [1, 2, 5, 10, 20, 50],
        ("beta_tc_vae", "objective.beta"): [1, 2, 4, 6, 8, 10],
    }
    for (arm, key), values in grids.items():
        assert list(spec.arms[arm].grid[key]) == values
    cfg = spec.config({"arm": "annealed_vae", "seed": 0, "objective.c_max": 5})
    assert (cfg.model.arch, cfg.model.latent_dim, cfg.train.batch_size) == ("conv64", 10, 64)
    assert (cfg.train.lr, cfg.train.lr_milestones, cfg.train.steps) == (1e-4, (), 300_000)
    assert (cfg.objective.family.gamma, cfg.objective.family.iteration_threshold) == (1000, 100_000)
    assert (
        spec.config(
            {"arm": "dip_vae_ii", "seed": 0, "objective.lambda_od": 1}
        ).objective.family.lambda_d
        == 1
    )
    assert cfg.metrics.preset == "disentanglement_lib"
    plus = Counter(t.arm for t in load(SPACES / "paper_plus.yaml").trials())
    assert sum(plus.values()) == 270 + 5 * 6 * 10 and plus["dip_vae_ii"] == 60


BAD = [
    ("unknown key", {"base": {"train": {"stepz": 3}}}, "base.train.stepz", "unknown key"),
    (
        "string for float",
        {"arms": {"beta_vae": {"grid": {"objective.beta": ["big"]}}}},
        "arms.beta_vae.grid.objective.beta",
        "expected float",
    ),
    (
        "empty grid",
        {"arms": {"beta_vae": {"grid": {"objective.beta": []}}}},
        "arms.beta_vae.grid.objective.beta",
        "empty grid axis",
    ),
    (
        "unknown family",
        {"arms": {"mine": {"family": "diffusion"}}},
        "arms.mine.family",
        "unknown family 'diffusion'",
    ),
    (
        "negative lambda",
        {"arms": {"wae_gaussian": {"grid": {"objective.lp_lambda": [1, -2]}}}},
        "arms.wae_gaussian.grid.objective.lp_lambda",
        ">= 0",
    ),
    ("gpu fraction", {"resources": {"gpu": 1.5}}, "resources.gpu", "1.5"),
    (
        "bad distribution",
        {"search": {"algorithm": "optuna"}, "space": {"objective.beta": {"loguniform": [0, 10]}}},
        "space.objective.beta.loguniform",
        "0 < low < high",
    ),
    ("unknown top key", {"trails": 3}, "trails", "unknown key"),
    ("negative concurrency", {"concurrency": -1}, "concurrency", "must be >= 0"),
    (
        "bad middle choice",  # every choice value is checked, not only the first and last
        {"search": {"algorithm": "optuna"}, "space": {"model.latent_dim": {"choice": [4, 0, 8]}}},
        "space.model.latent_dim",
        "must be >= 1, got 0",
    ),
    ("name escapes the storage folder", {"name": "../x"}, "name", "no '/', no '..'"),
    ("wrong type of seeds", {"seeds": [0, "one"]}, "seeds[1]", "expected int"),
    (
        "misspelt family",  # would have trained the base settings, a beta-VAE
        {"arms": {"wae_gaussain": {"grid": {"objective.lp_lambda": [1]}}}},
        "arms.wae_gaussain",
        "did you mean 'wae_gaussian'?",
    ),
    ("metric nobody reports", {"search": {"metric": "metric/beta_vae_7"}}, "search.metric", "7"),
    (
        "term of another objective",
        {"arms": {"wae_gaussian": {}}, "search": {"metric": "train/kl", "mode": "min"}},
        "search.metric",
        "never reports ['train/kl']",
    ),
]


def test_duplicate_yaml_key_names_both_lines(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: dup\nbase:\n  train: {steps: 10}\nseeds: 2\nseeds: 3\n")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:5: seeds: duplicate key (also at line 4)" in err, err


@pytest.mark.parametrize(("case", "entries", "key", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_yaml_exits_2_naming_file_key_and_line(
    tmp_path: Path, case: str, entries: dict, key: str, message: str, capsys: pytest.CaptureFixture
) -> None:
    import ray

    doc = {"name": "bad", "base": {"train": {"steps": 10}}, **entries}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and key in err and message in err, err
    assert f"{path}:" in err and err.split(f"{path}:")[1][0].isdigit(), "no line number"
    assert not ray.is_initialized()


def test_nulls_shown_in_the_readme_are_accepted(tmp_path: Path) -> None:
    doc = {"name": "nulls", "description": None, "tracking_uri": None, "base": TINY}
    path = tmp_path / "nulls.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec = load(path)
    assert spec.tracking_uri is None and spec.description == "" and spec.log_model


@pytest.mark.parametrize("entry", ["storage", "tracking_uri"])
def test_unwritable_storage_exits_2_before_ray(
    tmp_path: Path, entry: str, capsys: pytest.CaptureFixture
) -> None:
    """/proc refuses new files even to root (file modes do not: the tests may run as root)."""
    import ray

    place = {"storage": "/proc/raywae-runs", "tracking_uri": "sqlite:////proc/raywae/mlflow.db"}
    path = write_space(tmp_path, "unwritable", arms={"beta_vae": {}})
    assert main([str(path), "--set", f"{entry}={place[entry]}"]) == 2
    err = capsys.readouterr().err
    assert "is not writable" in err and "/proc/raywae" in err, err
    assert not ray.is_initialized()


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        from raywae.config import parse_sets

        parse_sets(["base.train.steps"])


# --- running (real Ray, MLflow, Optuna) -----------------------------------------------------------
def test_grid_sweep_end_to_end_with_a_failing_trial(tmp_path: Path, local_ray: None) -> None:
    arms = {
        "beta_vae": {"set": {"objective": {"beta": 4}}},
        "wae_gaussian": {},
        # Overflows on any CPU: Adam's first step moves every weight by ±1e30, so step 2's
        # products (1e30 · 1e30) are inf in float32 whatever the kernels' rounding.
        "diverges": {"family": "beta_vae", "set": {"train": {"lr": 1e30}}},
    }
    # max_failures 3: other errors would be retried 3 times, a NaN loss must not be.
    path = write_space(tmp_path, "smoke_grid", arms=arms, max_failures=3, concurrency=2)
    assert main([str(path)]) == 1  # one trial failed; the others finished
    client, runs = runs_of(tmp_path, "smoke_grid")
    by_arm = {r.data.tags["raywae.arm"]: r for r in runs}
    assert sorted(by_arm) == ["beta_vae", "diverges", "wae_gaussian"]
    for arm in ("beta_vae", "wae_gaussian"):
        run = by_arm[arm]
        assert run.info.status == "FINISHED"
        assert run.data.params["objective.name"] == ("beta_vae" if arm == "beta_vae" else "wae_mmd")
        assert 0 <= run.data.metrics["metric/beta_vae_4"] <= 1
        assert 0 <= run.data.metrics["metric/beta_vae_5"] <= 1
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 3
        assert run.data.tags["raywae.data/source"] == "procedural"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"reconstructions.png", "traversal.png", "metrics.json"} <= artifacts
    failed = by_arm["diverges"]
    assert failed.info.status == "FAILED"
    assert "NonFiniteLossError: loss term" in failed.data.tags["raywae.error"]
    assert "is not finite at step" in failed.data.tags["raywae.error"]
    # One attempt: Tune saw no exception (so no retry), just the trial's one final report.
    trial = tmp_path / "runs" / "smoke_grid" / failed.data.tags["raywae.trial_id"]
    lines = (trial / "result.json").read_text().splitlines()
    assert len(lines) == 1 and "NonFiniteLossError" in json.loads(lines[0])["raywae_failed"]
    assert not (trial / "error.txt").exists()


def test_optuna_multi_objective_sweep(tmp_path: Path, local_ray: None) -> None:
    path = write_space(
        tmp_path, "smoke_optuna", arms=OPTUNA_ARMS, search=OPTUNA_SEARCH, concurrency=2
    )
    assert main([str(path)]) == 0
    client, runs = runs_of(tmp_path, "smoke_optuna")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert "metric/beta_vae_5" in run.data.metrics and "test/recon" in run.data.metrics
    study = optuna.load_study(
        study_name="smoke_optuna",
        storage=f"sqlite:///{tmp_path / 'runs' / 'smoke_optuna' / 'optuna.db'}",
    )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3 and len(study.directions) == 2
    assert 1 <= len(study.best_trials) <= 3  # the Pareto front
    # A run left RUNNING by a trial that Tune never saved (its driver was SIGKILLed within
    # Tune's ~10 s state-saving period) is deleted on resume; the sweep's own runs stay.
    orphan = client.create_run(
        runs[0].info.experiment_id, tags={**runs[0].data.tags, "raywae.trial_id": "lost"}
    ).info.run_id
    assert main([str(path), "--resume"]) == 0
    _, after = runs_of(tmp_path, "smoke_optuna")
    assert sorted(r.info.run_id for r in after) == sorted(r.info.run_id for r in runs)
    assert client.get_run(orphan).info.lifecycle_stage == "deleted"


LONG = {**TINY, "train": {**TINY["train"], "steps": 1500, "report_every": 300}}  # seconds
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def start_driver(path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "raywae.sweep", str(path), *extra],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def resume(path: Path) -> subprocess.CompletedProcess:
    """`python -m raywae.sweep PATH --resume` in a fresh process (10 minutes at most)."""
    return subprocess.run(
        [sys.executable, "-m", "raywae.sweep", str(path), "--resume"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def wait_for(driver: subprocess.Popen, ready: object, limit: float = 300) -> None:
    """Poll until ready() (Tune's files, not MLflow: the driver may be creating the database);
    the driver must still be running then."""
    deadline = time.time() + limit
    while time.time() < deadline and driver.poll() is None and not ready():
        time.sleep(0.2)
    assert driver.poll() is None, driver.stdout.read()


# ~70 s each on 2 idle cores: SIGINT stays in the default run (as before), SIGKILL is `slow`.
@pytest.mark.parametrize(
    "sig",
    [signal.SIGINT, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],
    ids=["SIGINT", "SIGKILL"],
)
def test_killed_sweep_resumes_without_duplicates(tmp_path: Path, sig: signal.Signals) -> None:
    """Ctrl+C lets Tune save; SIGKILL (OOM killer, lost login node) does not. Either way the
    resumed sweep finishes every planned trial once, none is left RUNNING in MLflow, and a
    trial that had finished is not trained again."""
    arms = {"beta_vae": {"grid": {"objective.beta": [1, 4, 8]}}}
    path = write_space(tmp_path, "smoke_resume", arms=arms, base=LONG, concurrency=1)
    experiment = tmp_path / "runs" / "smoke_resume"
    driver = start_driver(path)
    wait_for(driver, lambda: sum(finals_per_trial(experiment)) >= 1)
    time.sleep(2)  # the next trial is training when the driver dies
    driver.send_signal(sig)
    out, _ = driver.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert "--resume" in out, out[-3000:]
    resumed = resume(path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    client, runs = runs_of(tmp_path, "smoke_resume")
    betas = sorted(float(r.data.params["objective.beta"]) for r in runs)
    assert betas == [1.0, 4.0, 8.0]  # the planned set, one MLflow run each
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:  # the trial stopped mid-training was not closed without its results
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"metrics.json", "model.pt"} <= artifacts, (run.info.run_name, artifacts)
    assert not retrained_after_done(experiment)
    finals = sorted(finals_per_trial(experiment))
    # After SIGKILL, a trial that finished less than Tune's state-saving period (10 s)
    # before the kill reports its saved final figures once more (without training).
    assert finals == [1, 1, 1] if sig == signal.SIGINT else min(finals) >= 1, finals


def test_resume_when_the_named_checkpoint_is_gone(tmp_path: Path) -> None:
    """Issue 17: Tune's saved state names a trial's latest checkpoint, but the trial went on
    reporting after that save and `CheckpointConfig(num_to_keep=2)` deleted it. Deleting the
    checkpoint that the state names makes that deterministic. `--resume` must continue the
    trial from the newest checkpoint that is left (not fail with Ray's "Could not recover from
    checkpoint as it does not exist on storage anymore", not restart from step 0), and its
    MLflow run must not get a step twice (that checkpoint may be older than the run's last)."""
    from ray.tune import ExperimentAnalysis

    base = {**TINY, "train": {**TINY["train"], "steps": 2000, "report_every": 100}}
    path = write_space(tmp_path, "smoke_gone", arms={"beta_vae": {}}, base=base)
    experiment = tmp_path / "runs" / "smoke_gone"
    driver = start_driver(path)
    # The trial writes its checkpoint folders itself (result.json comes with Tune's state).
    wait_for(driver, lambda: max(checkpoint_numbers(experiment), default=-1) >= 2)
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, out[-3000:]
    [trial] = ExperimentAnalysis(str(experiment)).trials
    named = Path(trial.checkpoint.path)  # what Tune would restore the trial from
    shutil.rmtree(named)
    left = sorted(named.parent.glob(f"checkpoint_*/{STATE_FILE}"))
    assert left, "no checkpoint left to continue from"
    step = torch.load(left[-1], weights_only=True)["step"]  # the newest one left
    before = {line["pid"] for line in results_of(named.parent)}
    resumed = resume(path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"{named.name}, its checkpoint in Tune's state, is gone" in resumed.stdout
    assert f"continuing from {left[-1].parent.name}" in resumed.stdout
    after = [line for line in results_of(named.parent) if line["pid"] not in before]
    assert step > 0 and after[0]["step"] == step + 100, (step, after[0]["step"])
    assert after[-1]["done"] and after[-1]["step"] == 2000
    client, runs = runs_of(tmp_path, "smoke_gone")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")]
    assert sorted(steps) == sorted(set(steps)) and max(steps) == 2000, steps


def checkpoint_numbers(experiment: Path) -> list[int]:
    """N of each checkpoint_N folder in the trial folders of `experiment`."""
    return [int(p.name.removeprefix("checkpoint_")) for p in experiment.glob("*/checkpoint_*")]


def results_of(trial: Path) -> list[dict]:
    """The results in a trial folder's result.json."""
    return [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]


def retrained_after_done(experiment: Path) -> list[str]:
    """Trial folders in which a training window was reported after a final result."""
    out = []
    for result in experiment.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines()]
        first = next((i for i, line in enumerate(lines) if line.get("done")), len(lines))
        if any(not line.get("done") for line in lines[first:]):
            out.append(result.parent.name)
    return out


def first_result(experiment: Path) -> dict | None:
    """The first result a trial of `experiment` (a Tune folder) reported, or None yet."""
    found = [p for p in experiment.glob("*/result.json") if p.read_text().strip()]
    return json.loads(found[0].read_text().splitlines()[0]) if found else None


def test_killed_trial_worker_restarts_from_its_checkpoint(tmp_path: Path) -> None:
    """SIGKILL of a trial's process (as the OOM killer does): the trial is retried from its
    last checkpoint (max_failures) and finishes; its MLflow run continues, one run, its
    metric history without duplicate steps."""
    path = write_space(tmp_path, "smoke_worker", arms={"beta_vae": {}}, base=LONG)
    results = tmp_path / "runs" / "smoke_worker"
    driver = start_driver(path, "--set", "max_failures=2")

    wait_for(driver, lambda: first_result(results))
    os.kill(first_result(results)["pid"], signal.SIGKILL)
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, out[-3000:]
    client, runs = runs_of(tmp_path, "smoke_worker")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")]
    assert sorted(steps) == sorted(set(steps)) and max(steps) == 1500, steps
    lines = [json.loads(x) for x in next(results.glob("*/result.json")).read_text().splitlines()]
    assert len({line["pid"] for line in lines}) == 2  # a second process took over
    assert lines[-1]["done"]


def test_a_new_store_is_created_once_by_concurrent_drivers(tmp_path: Path) -> None:
    """Without the lock in tracking.prepare_store, 3-4 of 4 processes opening a new sqlite
    store at once fail in MLflow's schema migration ("Online migration expected ...")."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = f"from raywae.tracking import prepare_store; prepare_store({uri!r})"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert MlflowClient(uri).get_experiment_by_name("Default") is not None


def test_two_sweeps_share_one_sqlite_store(tmp_path: Path) -> None:
    """Two drivers (two experiments) logging to one MLflow sqlite file at the same time."""
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    arms = {"beta_vae": {"grid": {"objective.beta": [1, 4]}}}
    paths = [
        write_space(tmp_path, name, arms=arms, concurrency=1, tracking_uri=store)
        for name in ("first", "second")
    ]
    drivers = [start_driver(p) for p in paths]
    outs = [d.communicate(timeout=600)[0] for d in drivers]
    for driver, out in zip(drivers, outs):
        assert driver.returncode == 0, out[-3000:]
        assert "database is locked" not in out
    for name in ("first", "second"):
        _, runs = runs_of(tmp_path, name)
        assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)


def finals_per_trial(experiment: Path) -> list[int]:
    """How many final ("done") results each trial folder holds."""
    out = []
    for result in experiment.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines()]
        out.append(sum(1 for line in lines if line.get("done")))
    return out
