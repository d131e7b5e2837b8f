"""Every analysis CLI on the MLflow store of a real smoke sweep (Ray Tune, 10 tiny trials, two
of them failing), and the MLflow UI over that store in headless Chromium."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
from analysis import (  # noqa: E402
    collect,
    optuna_front,
    paper_table,
    pareto,
    reconstructions,
    robustness,
)
from analysis.smoke import NAMES, ensure  # noqa: E402
from analysis.store import ANALYSIS_TAG, AnalysisError, Target  # noqa: E402
from bench import mlflow_ui  # noqa: E402

NAME = NAMES["grid"]
CLIS = (
    "collect",
    "pareto",
    "reconstructions",
    "paper_table",
    "optuna_front",
    "robustness",
    "schedules",
    "smoke",
)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid smoke sweep (β 1, 8 and λ1 0, 2, two seeds each, plus a diverging arm), run
    once through raywae.sweep.main on a 2-CPU local Ray."""
    import ray

    folder = tmp_path_factory.mktemp("analysis-smoke")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False)
    try:
        ensure(folder, "grid")
    finally:
        if started:
            ray.shutdown()
    return folder


def args(folder: Path, out: Path, *extra: str) -> list[str]:
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    return ["-e", NAME, "--tracking-uri", uri, "--out", str(out), *extra]


def store(folder: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")


def analysis_artifacts(folder: Path, sub: str) -> set[str]:
    """Artifact paths under `sub` of the experiment's one analysis run."""
    client = store(folder)
    eid = client.get_experiment_by_name(NAME).experiment_id
    found = client.search_runs([eid], f"tags.`{ANALYSIS_TAG}` = 'true'")
    assert len(found) == 1, "every script logs into the same analysis run"
    return {a.path for a in client.list_artifacts(found[0].info.run_id, sub)}


def assert_image(path: Path, size: tuple[int, int]) -> None:
    """A PNG of exactly `size` pixels that is not blank."""
    image = Image.open(path)
    assert image.size == size, (path.name, image.size, size)
    assert np.asarray(image.convert("L"), dtype=float).std() > 5, f"{path.name} is blank"


def test_collect_mlflow_and_tune_agree(smoke: Path, tmp_path: Path) -> None:
    assert collect.main(args(smoke, tmp_path)) == 0
    runs = collect.read_table(tmp_path / "runs.csv")
    assert len(runs) == 10 and runs["status"].value_counts().to_dict() == {
        "FINISHED": 8,
        "FAILED": 2,
    }
    assert set(runs["family"]) == {"beta_vae", "wae_gaussian"}  # `diverges` is a beta_vae
    assert runs.loc[runs["arm"] == "diverges", "error"].notna().all()
    done = runs[runs["status"] == "FINISHED"]
    for key in (
        "test/recon",
        "metric/beta_vae_5",
        *(f"metric/beta_vae_5/run{i}" for i in range(3)),
    ):
        assert done[key].between(0, 1e5).all(), key
    settings = collect.read_table(tmp_path / "settings_beta_vae_5.csv").set_index("setting")
    assert settings.loc["beta_vae β=8", ["n_models", "n_pairs", "n_kept"]].tolist() == [2, 6, 3]
    assert settings.loc["diverges", ["n_failed", "n_kept"]].tolist() == [2, 0]
    assert {"collect/runs.csv", "collect/settings_beta_vae_5.csv"} <= analysis_artifacts(
        smoke, "collect"
    )
    tune_out = tmp_path / "tune"
    assert (
        collect.main(
            [*args(smoke, tune_out), "--from-tune", "--storage", str(smoke / "runs"), "--no-log"]
        )
        == 0
    )
    tune = collect.read_table(tune_out / "runs.csv").set_index("trial_id").sort_index()
    mlflow = runs.set_index("trial_id").sort_index()
    assert (tune["status"] == mlflow["status"]).all()
    ok = mlflow["status"] == "FINISHED"
    for key in ("test/recon", "metric/beta_vae_4", "objective.beta", "objective.lp_lambda"):
        # a key the run's family does not read is in neither table (NaN in both)
        assert np.allclose(tune.loc[ok, key], mlflow.loc[ok, key], equal_nan=True), key
    assert mlflow.loc[ok & (mlflow["objective.name"] != "beta_vae"), "objective.beta"].isna().all()


def test_figure1(smoke: Path, tmp_path: Path) -> None:
    assert pareto.main(args(smoke, tmp_path)) == 0
    size = tuple(round(v * pareto.DPI) for v in pareto.FIG1_INCHES)
    assert_image(tmp_path / "figure1.png", size)
    assert (tmp_path / "figure1.svg").read_text().lstrip().startswith("<?xml")
    fronts = collect.read_table(tmp_path / "figure1_fronts.csv")
    assert set(fronts["panel"]) == {"(a) 4-factor score", "(b) 5-factor score"}
    assert {"all", "beta_vae", "wae_gaussian"} <= set(fronts["front"])
    assert "diverges" not in set(fronts["setting"])  # failed: no point, no front
    expected = {f"figure1/figure1.{x}" for x in ("png", "svg")} | {
        "figure1/figure1_fronts.csv",
        "figure1/figure1_points.csv",
    }
    assert expected <= analysis_artifacts(smoke, "figure1")
    points = collect.read_table(tmp_path / "figure1_points.csv").set_index(["panel", "setting"])
    p = points["p_front"]  # bootstrap probability, 1000 draws by default
    assert p.between(0, 1).all() and (p > 0).any()
    assert (p.xs("diverges", level="setting") == 0).all()  # no finished run: never on a front
    assert points["p_front_family"].ge(p).all()  # a family's front is easier to reach


def test_robustness(smoke: Path, tmp_path: Path) -> None:
    """The smoke sweep's 8 finished models re-scored under one other Higgins setting: the
    reference (the runs' own disentanglement_lib preset) gives back the logged scores."""
    argv = args(smoke, tmp_path, "--pairs", "10", "--points", "500")
    assert robustness.main(argv) == 0
    table = collect.read_table(tmp_path / "robustness.csv")
    assert table[["pairs", "points"]].values.tolist() == [[64, 10_000], [10, 500]]
    assert table["reference"].tolist() == [True, False] and table["steps"].isna().all()
    assert table["n_settings"].tolist() == [4, 4]  # `diverges` has no finished model
    assert table["kendall_tau"].iloc[0] == 1.0 and table["kendall_tau"].between(-1, 1).all()
    scores = collect.read_table(tmp_path / "robustness_scores.csv").set_index("run_id")
    reference = scores[robustness.Combo(64, 10_000, None).label]
    logged = {r: store(smoke).get_run(r).data.metrics["metric/beta_vae_5"] for r in scores.index}
    assert np.allclose(reference, pd.Series(logged)[reference.index], atol=1e-3)
    assert {"robustness/robustness.csv"} <= analysis_artifacts(smoke, "robustness")


def test_figure2(smoke: Path, tmp_path: Path) -> None:
    assert reconstructions.main(args(smoke, tmp_path, "--storage", str(smoke / "runs"))) == 0
    models = collect.read_table(tmp_path / "figure2_models.csv")
    assert list(models["family"]) == ["beta_vae", "beta_vae", "wae_gaussian", "wae_gaussian"]
    assert (models["weights"] == "MLflow model.pt").all()  # logged with each finished run
    assert_image(tmp_path / "figure2.png", reconstructions.figure2_pixels(1 + len(models), 8))
    assert {"figure2/figure2.png", "figure2/figure2_models.csv"} <= analysis_artifacts(
        smoke, "figure2"
    )


def test_figure2_weights_without_a_logged_model(smoke: Path, tmp_path: Path) -> None:
    """A run without model.pt (tracking.log_model false) falls back to its Tune checkpoint,
    then to its reconstructions.png artifact, whose row equals the model's reconstructions."""
    from raywae.checkpoint import load_run
    from raywae.data import open_dataset
    from raywae.experiment import SHOWN_IMAGES
    from raywae.images import reconstruct

    client = store(smoke)
    eid = client.get_experiment_by_name(NAME).experiment_id
    finished = "attributes.status = 'FINISHED' and tags.`raywae.arm` = 'beta_vae'"
    run = client.search_runs([eid], finished, max_results=1)[0]
    bare_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a run that logged no weights
    bare = MlflowClient(bare_uri)
    bare_id = bare.create_run(bare.create_experiment("bare")).info.run_id
    row = {"run_id": bare_id, "experiment": NAME, "trial_id": run.data.tags["raywae.trial_id"]}
    target = Target(bare_uri, (NAME,), tmp_path, smoke / "runs", False)
    model, source = reconstructions.trained_model(target, row)
    assert model is not None and source.endswith("state.pt")
    target = Target(bare_uri, (NAME,), tmp_path, tmp_path, False)  # no checkpoints there
    assert reconstructions.trained_model(target, row) == (None, "artifact reconstructions.png")

    logged, cfg = load_run(run.info.run_id, client.tracking_uri)
    expected = reconstruct(logged, open_dataset(cfg.data).shown_images(SHOWN_IMAGES))
    row_pixels = reconstructions.from_artifact(client, run.info.run_id)
    assert row_pixels.shape == expected.shape == (8, 64, 64)
    assert np.abs(row_pixels - expected).max() <= 1 / 255 + 1e-6  # 8-bit PNG quantisation


def test_paper_table(smoke: Path, tmp_path: Path) -> None:
    assert paper_table.main(args(smoke, tmp_path)) == 0
    text = (tmp_path / "paper_table.md").read_text()
    assert "85.4 %" in text and "40.8 ± 1.5" in text  # the paper's column
    assert "procedural dSprites" in text and "30 steps" in text  # data and budget stated
    table = collect.read_table(tmp_path / "paper_table.csv")
    assert set(table["group"]) == {"β-VAE", "WAE"}
    assert_image(tmp_path / "paper_table.png", paper_table.table_pixels(len(table)))
    assert "table/paper_table.png" in analysis_artifacts(smoke, "table")


def test_smoke_flag_reuses_the_finished_sweep(smoke: Path) -> None:
    start = time.perf_counter()
    assert paper_table.main(["--smoke", "--smoke-dir", str(smoke), "--no-log"]) == 0
    assert (smoke / "analysis" / NAME / "paper_table.png").is_file()
    assert time.perf_counter() - start < 60, "the smoke sweep ran again"


def test_unknown_experiment_is_a_clear_error(
    smoke: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    uri = f"sqlite:///{smoke / 'mlruns' / 'mlflow.db'}"
    with pytest.raises(AnalysisError, match="no experiment 'nope'.*analysis_smoke"):
        collect.load_runs(Target(uri, ("nope",), tmp_path, tmp_path, log=False))
    argv = ["-e", "nope", *args(smoke, tmp_path)[2:]]
    assert pareto.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no experiment 'nope' in the store; it has [")
    assert "'analysis_smoke'" in err and "Traceback" not in err
    # The same through `python -m`: the exit status the shell sees, nothing on stdout.
    out = subprocess.run(
        [sys.executable, "-m", "analysis.paper_table", *argv, "--no-log"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (out.returncode, out.stdout) == (2, ""), out.stderr
    assert out.stderr.startswith("error: no experiment 'nope'"), out.stderr


def test_cli_help(capsys: pytest.CaptureFixture) -> None:
    # One real `python -m` run from the repository root; the rest in-process (seconds saved).
    out = subprocess.run(
        [sys.executable, "-m", "analysis.pareto", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "--smoke" in out.stdout, out.stderr
    for module in CLIS:
        with pytest.raises(SystemExit) as exit_:
            importlib.import_module(f"analysis.{module}").main(["--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert f"python -m analysis.{module}" in text, module
        assert "--kind" in text if module == "smoke" else "--smoke" in text, module


def test_optuna_front(smoke: Path, tmp_path: Path) -> None:
    """On a hand-made study (Optuna's own storage format) and matching MLflow runs, logged
    to an experiment of its own in the smoke store (a fresh store costs seconds to create)."""
    import optuna

    name = "optuna_front_test"
    (tmp_path / "runs" / name).mkdir(parents=True)
    study = optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{tmp_path / 'runs' / name / 'optuna.db'}",
        directions=["minimize", "maximize"],
    )
    dist = {"objective.beta": optuna.distributions.FloatDistribution(1, 50, log=True)}
    points = [(100.0, 0.5), (120.0, 0.9), (130.0, 0.6), (100.0, 0.5)]  # 2 dominated; 3 = 0
    for i, values in enumerate(points):
        study.add_trial(
            optuna.trial.create_trial(
                params={"objective.beta": 1.0 + i}, distributions=dist, values=list(values)
            )
        )
    uri = f"sqlite:///{smoke / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(uri)
    eid = client.create_experiment(name, artifact_location=(tmp_path / "art").as_uri())
    for i, (recon, score) in enumerate(points[:2]):
        run = client.create_run(eid, tags={"raywae.trial_id": f"t{i}", "raywae.arm": "beta_vae"})
        client.log_metric(run.info.run_id, "test/recon", recon)
        client.log_metric(run.info.run_id, "metric/beta_vae_5", score)
        client.set_terminated(run.info.run_id)
    out = tmp_path / "out"
    argv = [
        "-e",
        name,
        "--tracking-uri",
        uri,
        "--storage",
        str(tmp_path / "runs"),
        "--out",
        str(out),
    ]
    assert optuna_front.main(argv) == 0
    table = collect.read_table(out / "optuna_trials.csv").set_index("number")
    assert table["pareto"].tolist() == [True, True, False, True]
    assert (
        table.loc[1, "run_id"]
        == client.search_runs([eid], "tags.`raywae.trial_id` = 't1'")[0].info.run_id
    )
    assert_image(out / "optuna_pareto.png", tuple(round(v * 100) for v in optuna_front.PLOT_INCHES))
    run = client.search_runs([eid], f"tags.`{ANALYSIS_TAG}` = 'true'")[0]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "optuna")} == {
        "optuna/optuna_trials.csv",
        "optuna/optuna_pareto.png",
    }


# --- the MLflow UI as users see it -----------------------------------------------------------
@pytest.fixture
def mlflow_server(smoke: Path, tmp_path: Path):
    """`mlflow server` over the smoke store on a free localhost port."""
    uri = f"sqlite:///{smoke / 'mlruns' / 'mlflow.db'}"
    with mlflow_ui.mlflow_server(uri, tmp_path / "server.log") as url:
        yield url


def test_mlflow_ui_shows_the_trials_and_the_score_column(
    smoke: Path, mlflow_server: str, tmp_path: Path
) -> None:
    if why := mlflow_ui.have_chromium():
        pytest.skip(why)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    client = store(smoke)
    eid = client.get_experiment_by_name(NAME).experiment_id
    trials = [
        r.info.run_name for r in client.search_runs([eid]) if "raywae.trial_id" in r.data.tags
    ]
    with mlflow_ui.chromium(tmp_path / "chromium") as driver:
        wait = WebDriverWait(driver, 90)

        def visible(xpath: str) -> list:
            return mlflow_ui.visible(driver, xpath)

        def click(element: object) -> None:
            mlflow_ui.click(driver, element)

        mlflow_ui.open_runs_table(driver, mlflow_server, eid, wait)
        wait.until(lambda d: all(t in d.find_element(By.TAG_NAME, "body").text for t in trials))
        # Metric columns are not shown by default: pick metric/beta_vae_5 under "Columns".
        click(wait.until(lambda d: visible("//button[normalize-space(.)='Columns']"))[0])
        search = wait.until(lambda d: visible("//input[@placeholder='Search columns']"))[0]
        search.send_keys("metric/beta_vae_5")
        click(wait.until(lambda d: visible("//*[normalize-space(text())='metric/beta_vae_5']"))[0])
        search.send_keys(Keys.ESCAPE)
        column = "metrics.`metric/beta_vae_5`"
        header = f"//*[@role='columnheader' and @col-id='{column}']"
        wait.until(lambda d: visible(header))
        cells = f"//*[@role='gridcell' and @col-id='{column}']"
        values = wait.until(lambda d: [c.text for c in visible(cells) if c.text not in ("", "-")])
        assert len(values) == 8 and all(0 <= float(v) <= 1 for v in values)  # 8 finished
        for close in visible("//button[@aria-label='Close']"):  # the assistant panel
            click(close)
        time.sleep(1)
        shot = tmp_path / "mlflow_ui.png"
        assert driver.save_screenshot(str(shot))
    keep = ROOT / "bench" / "out"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "mlflow_ui.png")
    assert Image.open(shot).size[0] >= 1200
