"""One run without Ray (`raywae.experiment`): the CLI, its equality with a one-trial sweep,
resume, trained models reloaded from MLflow, grid_subsample, and the README's log keys."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from analysis.smoke import BASE
from raywae.checkpoint import STATE_FILE, CheckpointError, load_run
from raywae.config import from_dict, override
from raywae.data import open_dataset
from raywae.experiment import Experiment, main
from raywae.logkeys import reported
from raywae.metrics import encode_grid
from raywae.models import build_model

ROOT = Path(__file__).resolve().parents[1]
TINY = BASE  # analysis.smoke's tiny trial: seconds on a CPU
SEED = 3


def write_sweep(folder: Path) -> Path:
    doc = {
        "name": "one_trial",
        "description": None,  # README shows `null`: accepted
        "base": TINY,
        "arms": {"wae_gaussian": {"set": {"objective": {"lp_lambda": 1}}}},
        "seeds": [SEED],
        "resources": {"cpu": 1},
        "storage": str(folder / "runs"),
        "tracking_uri": f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}",
    }
    (folder / "mlruns").mkdir(parents=True, exist_ok=True)
    path = folder / "one_trial.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(sweep YAML, its folder, the standalone run's --out) of the same trial."""
    import ray

    from raywae.sweep import main as sweep

    folder = tmp_path_factory.mktemp("one_trial")
    path = write_sweep(folder)
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        assert sweep([str(path)]) == 0
    finally:
        ray.shutdown()
    out = folder / "single"
    before = torch.get_num_threads()
    try:  # the trial ran with one torch thread (resources.cpu: 1): the same here
        assert main([str(path), "--out", str(out), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(before)
    return path, folder, out


def mlflow_run(folder: Path) -> tuple[MlflowClient, object]:
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("one_trial")
    (run,) = client.search_runs([experiment.experiment_id])
    return client, run


def test_standalone_run_equals_the_one_trial_sweep(swept: tuple[Path, Path, Path]) -> None:
    _, folder, out = swept
    _, run = mlflow_run(folder)
    standalone = json.loads((out / "metrics.json").read_text())
    finals = [k for k in standalone if k.startswith(("test/", "metric/"))]
    assert {"test/recon", "test/recon_mean", "metric/beta_vae_4", "metric/beta_vae_5"} <= set(
        finals
    )
    for key in finals:
        assert standalone[key] == run.data.metrics[key], key  # same seed, same code: equal
    assert standalone["step"] == 30
    saved = json.loads((out / "config.json").read_text())
    assert from_dict(saved).seed == SEED and saved["objective"]["lp_lambda"] == 1
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [10, 20, 30] and lines[-1]["done"]


def test_mlflow_model_reloads_to_identical_codes(swept: tuple[Path, Path, Path]) -> None:
    _, folder, _ = swept
    client, run = mlflow_run(folder)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.pt", "config.json", "metrics.json", "reconstructions.png"} <= artifacts
    model, cfg = load_run(run.info.run_id, client.tracking_uri)
    # The trial's own weights, from its last Tune checkpoint (not through MLflow).
    trial = folder / "runs" / "one_trial" / run.data.tags["raywae.trial_id"]
    state = torch.load(sorted(trial.glob(f"checkpoint_*/{STATE_FILE}"))[-1], weights_only=True)
    reference = build_model(cfg.model)
    reference.load_state_dict(state["model"])
    ds = open_dataset(cfg.data)
    codes = encode_grid(model, ds, progress=False)
    # Exact: equal weights through the same encoding pass (same batches, same kernels).
    assert np.array_equal(codes, encode_grid(reference, ds, progress=False))
    assert codes.std() > 0  # a real trained encoder, not a constant


def test_resume_continues_to_the_same_result(
    swept: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    path, _, out = swept
    from raywae.search_space import load

    spec = load(path)
    cfg = spec.config(spec.example())
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        part = Experiment(cfg, progress=False)
        part.trainer.run(steps=20)  # a run killed after its second report
        part.save(tmp_path / STATE_FILE)
        assert main([str(path), "--out", str(tmp_path), "--resume"]) == 0
    finally:
        torch.set_num_threads(before)
    resumed = json.loads((tmp_path / "metrics.json").read_text())
    full = json.loads((out / "metrics.json").read_text())
    assert resumed["test/recon"] == full["test/recon"]
    assert resumed["metric/beta_vae_5"] == full["metric/beta_vae_5"]


def test_truncated_checkpoint_is_named_not_restarted(
    swept: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, _, out = swept
    state = (out / STATE_FILE).read_bytes()
    (tmp_path / STATE_FILE).write_bytes(state[: len(state) // 2])  # killed mid-copy
    assert main([str(path), "--out", str(tmp_path), "--resume"]) == 2
    assert f"{tmp_path / STATE_FILE}: unreadable checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()  # nothing trained from step 0


class Payload:
    """Stands for any pickled object that is not tensors, numbers and strings."""


def test_checkpoints_load_weights_only(swept: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """state.pt is read with weights_only=True: a checkpoint carrying an arbitrary pickled
    object (code could run on unpickling) is refused, naming the file."""
    path, _, out = swept
    state = torch.load(out / STATE_FILE, weights_only=True)  # the real one loads so
    torch.save({**state, "extra": Payload()}, tmp_path / STATE_FILE)
    exp = Experiment(load_run(out)[1], progress=False)
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        exp.restore(tmp_path / STATE_FILE)


def test_resume_refuses_changed_data(
    swept: tuple[Path, Path, Path], capsys: pytest.CaptureFixture
) -> None:
    """A resumed sweep whose data fingerprint differs from its runs' tag stops before Ray."""
    import ray

    from raywae.sweep import main as sweep

    path, folder, _ = swept
    client, run = mlflow_run(folder)
    key = "raywae.data/fingerprint"
    now = run.data.tags[key]
    client.set_tag(run.info.run_id, key, "0123456789abcdef")  # as if trained on other data
    try:
        assert sweep([str(path), "--resume"]) == 2
    finally:
        client.set_tag(run.info.run_id, key, now)
    err = capsys.readouterr().err
    assert "the data changed under sweep 'one_trial'" in err
    assert "0123456789abcdef" in err and now in err
    assert not ray.is_initialized()


def test_cli_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(TINY))
    assert main([str(config), "--set", "objective.bta=1", "--out", str(tmp_path / "a")]) == 2
    assert "objective.bta: unknown key" in capsys.readouterr().err
    assert main([str(config), "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main([str(config), "--arm", "beta_vae"]) == 2
    assert "not a sweep" in capsys.readouterr().err
    sweep = write_sweep(tmp_path)
    assert main([str(sweep), "--arm", "nope"]) == 2
    assert "no arm 'nope'" in capsys.readouterr().err


def test_grid_subsample_changes_the_code_table(small_ds: object, one_thread: None) -> None:
    """metrics.grid_subsample is honoured: the table covers every k-th value of a factor."""
    cfg = from_dict({**TINY, "data": {"source": "procedural"}, "train": {"steps": 1}})
    full = len(small_ds.grid)
    for steps, rows in (({}, full), ({"posX": 2}, full // 2), ({"posX": 2, "posY": 4}, full // 8)):
        exp = Experiment(override(cfg, {"metrics.grid_subsample": steps}), small_ds, False)
        codes, grid = exp.code_table(), exp.metric_grid()
        assert codes.shape == (rows, 4) and len(grid) == rows
        assert np.isfinite(codes).all()


def test_dry_run_imports_no_ray() -> None:
    code = (
        "import sys\n"
        "from raywae.sweep import main\n"
        f"assert main([{str(ROOT / 'search_spaces' / 'paper.yaml')!r}, '--dry-run']) == 0\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
        "assert 'mlflow' not in sys.modules, 'mlflow imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "270 trials" in done.stdout


def test_readme_lists_every_reported_key(swept: tuple[Path, Path, Path]) -> None:
    """Every metric key a trial logs (progress and final) is named in the README."""
    _, folder, out = swept
    client, run = mlflow_run(folder)
    keys = set(run.data.metrics)
    for line in (out / "progress.jsonl").read_text().splitlines():
        keys |= {k for k in json.loads(line) if "/" in k}
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`([a-z_]+/[a-z0-9_/{},.]+)`", readme))

    def listed(key: str) -> bool:  # `metric/beta_vae_{4,5}/run{i}` style patterns count
        return any(re.fullmatch(_pattern(n), key) for n in named)

    missing = sorted(k for k in keys if not listed(k))
    assert not missing, f"README does not name {missing}"
    assert "train/logscale_lp" in keys and "proxy/recon" in keys
    # The scheme search.metric is checked against is exactly what the run reported.
    assert reported(load_run(out)[1]) == keys


def _pattern(name: str) -> str:
    """README key -> regex: `{i}` any number, `{4,5}` one of the listed values."""
    parts = re.split(r"(\{[^}]*\})", name)
    out = ""
    for part in parts:
        if part == "{i}":
            out += r"\d+"
        elif part.startswith("{"):
            out += "(" + "|".join(re.escape(v) for v in part[1:-1].split(",")) + ")"
        else:
            out += re.escape(part)
    return out
