"""analysis.schedules on a real MLflow sqlite store written by hand (no Ray, no training): four
runs of a PBT sweep over λ1 with their `hparam/objective.lp_lambda` histories, three with a
final score, one stopped early, one that exploited twice; and a sweep without schedules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from analysis import schedules as sch
from analysis.collect import runs_for
from analysis.store import ANALYSIS_TAG, AnalysisError, Target

NAME, PLAIN = "pbt_sweep", "grid_sweep"
KEY = "hparam/objective.lp_lambda"
SCORE = "metric/beta_vae_5"
# trial id -> (λ1 at steps 100, 200, ... (the run's reports), final score or None, tags)
RUNS = {
    "t_00000": ([1.0, 1.0, 1.2, 1.2], 0.80, {}),
    "t_00001": (
        [50.0, 1.2, 1.2, 1.44],
        0.85,
        {sch.EXPLOITS_TAG: "step 200 from t_00000; step 350 from t_00002"},
    ),
    "t_00002": ([0.1, 0.1, 0.08, 0.08], 0.95, {}),
    "t_00003": ([20.0, 24.0], None, {"raywae.stopped_early": "true"}),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tracking URI of a store with NAME (the PBT sweep) and PLAIN (one run, no hparam/)."""
    folder = tmp_path_factory.mktemp("schedules")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    eid = client.create_experiment(NAME, artifact_location=str(folder / "artifacts"))
    for trial, (values, score, tags) in RUNS.items():
        run_tags = {"raywae.trial_id": trial, "raywae.arm": "wae_l1", **tags}
        run_id = client.create_run(eid, tags=run_tags).info.run_id
        params = {"arm": "wae_l1", "seed": trial[-1], "objective.lp_lambda": str(values[0])}
        for key, value in params.items():
            client.log_param(run_id, key, value)
        for i, value in enumerate(values):
            client.log_metric(run_id, KEY, value, step=100 * (i + 1))
        if score is not None:
            client.log_metric(run_id, SCORE, score, step=400)
        client.set_terminated(run_id, "FINISHED")
    plain = client.create_experiment(PLAIN, artifact_location=str(folder / "plain"))
    run_id = client.create_run(plain, tags={"raywae.trial_id": "g_0", "raywae.arm": "a"})
    client.log_metric(run_id.info.run_id, SCORE, 0.5, step=0)
    return uri


def argv(uri: str, out: Path, name: str = NAME, *extra: str) -> list[str]:
    return ["-e", name, "--tracking-uri", uri, "--out", str(out), *extra]


def by_trial(runs: pd.DataFrame) -> dict[str, str]:
    return dict(zip(runs["trial_id"], runs["run_id"]))


def test_exploit_tags_parse() -> None:
    tag = "step 400 from 3f2a1_00002; step 800 from 3f2a1_00005"
    assert sch.parse_exploits(tag) == [(400, "3f2a1_00002"), (800, "3f2a1_00005")]
    assert sch.parse_exploits(None) == [] and sch.parse_exploits("") == []
    assert sch.parse_exploits("garbled; step 5 from a_1") == [(5, "a_1")]


def test_table_rows_values_and_exploits(store: str, tmp_path: Path) -> None:
    runs = runs_for(Target(store, (NAME,), tmp_path, tmp_path, log=False), None)
    client = MlflowClient(store)
    assert sch.keys_of(runs) == [KEY]  # collect keeps the last value as a column
    assert sch.keys_of(runs.drop(columns=[KEY]), client) == [KEY]  # an older table: the store
    history = sch.store_schedules(runs, client, [KEY])
    ids = by_trial(runs)
    # One row per (run, report step), plus the exploit at step 350, between two reports.
    assert len(history) == 4 + 4 + 4 + 2 + 1
    table = sch.schedules(history, runs, SCORE)
    assert len(table) == len(history) and set(table["key"]) == {"objective.lp_lambda"}
    b = table[table["run_id"] == ids["t_00001"]].set_index("step")
    assert b["value"].to_dict() == {100: 50.0, 200: 1.2, 300: 1.2, 350: 1.2, 400: 1.44}
    assert b["exploited_from"].dropna().to_dict() == {200: "t_00000", 350: "t_00002"}
    assert (b[SCORE] == 0.85).all() and (b["arm"] == "wae_l1").all()
    stopped = table[table["trial_id"] == "t_00003"]
    assert stopped["step"].tolist() == [100, 200] and stopped[SCORE].isna().all()
    assert table.loc[table["trial_id"] != "t_00001", "exploited_from"].isna().all()

    final = sch.finals(table, SCORE)
    assert final["trial_id"].tolist() == ["t_00002", "t_00001", "t_00000", "t_00003"]
    assert final["final_value"].tolist() == [0.08, 1.44, 1.2, 24.0]
    assert sch.summary(final, SCORE) == (0.08, 0.08, 1)  # 3 scored runs: a quartile of 1
    # Lower is better for a loss: the order turns round.
    recon = sch.finals(table.assign(**{"test/recon": table[SCORE]}), "test/recon")
    assert recon["trial_id"].tolist()[:3] == ["t_00000", "t_00001", "t_00002"]


def test_summary_takes_the_median_of_the_top_quartile() -> None:
    final = pd.DataFrame(
        {
            "final_value": [5.0, 1.0, 3.0, 9.0, 9.0, 9.0, 9.0, 9.0, 7.0],
            SCORE: [*range(8, 0, -1), None],
        }
    )
    assert sch.summary(final, SCORE) == (5.0, 3.0, 2)  # 8 scored runs: the top 2 are 5 and 1
    assert np.isnan(sch.summary(final.assign(**{SCORE: None}), SCORE)[0])


def test_cli_writes_the_figure_csv_and_the_top_runs(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert sch.main(argv(store, tmp_path, NAME, "--key", "objective.lp_lambda")) == 0
    printed = capsys.readouterr().out
    assert "best run's final objective.lp_lambda = 0.08; median over the top quartile" in printed
    top = printed.split("by metric/beta_vae_5")[1].split("\n")[2]  # the first row under the header
    assert top.split()[0] == "t_00002", printed
    image = Image.open(tmp_path / "schedules.png")
    assert image.size == sch.size(1) == (900, 390)
    assert np.asarray(image.convert("L"), dtype=float).std() > 5, "blank figure"
    assert (tmp_path / "schedules.svg").read_text().lstrip().startswith("<?xml")
    csv = pd.read_csv(tmp_path / "schedules.csv")
    assert {"run_id", "arm", "step", "key", "value", SCORE} <= set(csv.columns)
    assert len(csv) == 15
    client = MlflowClient(store)
    eid = client.get_experiment_by_name(NAME).experiment_id
    (analysis,) = client.search_runs([eid], f"tags.`{ANALYSIS_TAG}` = 'true'")
    logged = {a.path for a in client.list_artifacts(analysis.info.run_id, "schedules")}
    assert logged == {f"schedules/schedules.{x}" for x in ("png", "svg", "csv")}


def test_log_axis_only_for_positive_values_over_a_wide_span() -> None:
    assert sch.log_axis(pd.Series([0.08, 50.0]))
    assert not sch.log_axis(pd.Series([1.0, 10.0]))
    assert not sch.log_axis(pd.Series([0.0, 50.0]))


def test_a_sweep_without_schedules_is_exit_2(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert sch.main(argv(store, tmp_path, PLAIN, "--no-log")) == 2
    out = capsys.readouterr()
    assert out.err == f"error: {sch.NOT_FOUND}\n" and out.out == ""
    assert sch.main(argv(store, tmp_path, NAME, "--no-log", "--key", "train.lr")) == 2
    assert "no schedule of ['hparam/train.lr']" in capsys.readouterr().err
    with pytest.raises(AnalysisError):
        sch.main.__wrapped__(argv(store, tmp_path, PLAIN, "--no-log"))
