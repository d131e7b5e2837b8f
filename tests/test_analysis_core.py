"""The pure core of analysis/: Pareto fronts on hand-made points, the paper's aggregation on a
synthetic table whose kept pairs are worked out by hand, model choice for Figure 2 and the
headline table. No MLflow, no Ray: seconds."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# analysis/ holds scripts run from the repository root (`python -m analysis.X`), outside the
# installed package: make the root importable here as it is for those commands.
from analysis import collect  # noqa: E402
from analysis.aggregate import (  # noqa: E402
    aggregate,
    budget,
    keep_top,
    label_settings,
    paper_pairs,
)
from analysis.cli import command  # noqa: E402
from analysis.collect import tidy  # noqa: E402
from analysis.paper_table import headline  # noqa: E402
from analysis.pareto import BLOCK, front_probability, fronts, pareto_mask  # noqa: E402
from analysis.reconstructions import choose  # noqa: E402
from analysis.robustness import Combo, combos, rank_stability  # noqa: E402
from analysis.store import AnalysisError, Target, default_experiment  # noqa: E402

NAN = math.nan


# --- Pareto -----------------------------------------------------------------------------------
def naive_mask(points: np.ndarray, maximize: list[bool]) -> np.ndarray:
    """The definition, one pair at a time."""
    sign = np.where(maximize, -1.0, 1.0)
    cost = points * sign
    out = []
    for i, p in enumerate(cost):
        if not np.isfinite(p).all():
            out.append(False)
            continue
        dominated = any(
            np.isfinite(q).all() and (q <= p).all() and (q < p).any()
            for j, q in enumerate(cost)
            if j != i
        )
        out.append(not dominated)
    return np.array(out)


def test_pareto_min_recon_max_score_by_hand() -> None:
    points = np.array(
        [
            [100, 0.50],  # 0 on: lowest recon
            [100, 0.50],  # 1 duplicate of 0: neither dominates the other, both on
            [150, 0.90],  # 2 on
            [150, 0.70],  # 3 same recon as 2, worse score: dominated by 2
            [180, 0.90],  # 4 same score as 2, worse recon: dominated by 2
            [NAN, 1.00],  # 5 NaN recon (failed): never on, dominates nothing
            [90, NAN],  # 6 NaN score: never on (else it would beat 0)
            [200, 0.95],  # 7 on: best score
            [120, 0.40],  # 8 dominated by 0
        ]
    )
    mask = pareto_mask(points, [False, True])
    assert mask.tolist() == [True, True, True, False, False, False, False, True, False]


def test_pareto_mixed_directions_and_three_objectives() -> None:
    points = np.array([[1.0, 1.0], [2.0, 2.0], [0.0, 3.0]])
    assert pareto_mask(points, [False, False]).tolist() == [True, False, True]
    assert pareto_mask(points, [True, True]).tolist() == [False, True, True]
    assert pareto_mask(points, [True, False]).tolist() == [True, True, False]
    three = np.array([[1, 1, 1], [1, 1, 1], [0, 2, 2], [2, 2, 0], [2, 2, 2]], dtype=float)
    assert pareto_mask(three, [False] * 3).tolist() == [True, True, True, True, False]


def test_pareto_edge_cases() -> None:
    assert pareto_mask(np.zeros((0, 2)), [False, True]).tolist() == []
    assert pareto_mask(np.full((3, 2), NAN), [False, True]).tolist() == [False] * 3
    assert pareto_mask(np.array([[5.0, 5.0]]), [False, True]).tolist() == [True]
    with pytest.raises(ValueError, match="objectives"):
        pareto_mask(np.zeros((3, 2)), [True])


def test_pareto_matches_the_definition_on_ties_and_across_blocks() -> None:
    rng = np.random.default_rng(0)
    points = rng.integers(0, 6, size=(BLOCK + 57, 2)).astype(float)  # many ties and duplicates
    points[rng.random(len(points)) < 0.05, 1] = NAN
    for maximize in itertools.product([False, True], repeat=2):
        assert (pareto_mask(points, list(maximize)) == naive_mask(points, list(maximize))).all()


def test_fronts_per_family_and_overall() -> None:
    table = pd.DataFrame(
        {
            "family": ["a", "a", "a", "b", "b"],
            "setting": ["a1", "a2", "a3", "b1", "b2"],
            "recon_mean": [10.0, 20.0, 30.0, 5.0, 25.0],
            "score_mean": [0.5, 0.4, 0.9, 0.3, NAN],
        }
    )
    out = fronts(table, "recon_mean", "score_mean")
    members = {f: sorted(g["setting"]) for f, g in out.groupby("front")}
    assert members == {"a": ["a1", "a3"], "all": ["a1", "a3", "b1"], "b": ["b1"]}


# --- fronts with their uncertainty ------------------------------------------------------------
def quality_runs(settings: dict[str, tuple[str, list[float]]]) -> pd.DataFrame:
    """setting -> (family, one quality q per seed), 3 metric runs per seed. A model of
    quality q has recon 100 - 10 q and scores 0.5 + q / 10 (+ a run offset): recon and
    score move together, so of two settings the one with the better kept mean dominates."""
    rows = []
    for name, (family, qualities) in settings.items():
        for seed, q in enumerate(qualities):
            runs = {f"metric/beta_vae_5/run{r}": 0.5 + q / 10 + r / 1000 for r in range(3)}
            rows.append(
                {"setting": name, "family": family, "arm": family, "status": "FINISHED",
                 "seed": seed, "run_id": f"{name}-{seed}", "test/recon": 100 - 10 * q,
                 "metric/beta_vae_5": np.mean(list(runs.values())), **runs}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_front_probability_certain_winner_and_loser() -> None:
    rng = np.random.default_rng(0)
    runs = quality_runs(
        {
            "best": ("a", list(5 + rng.random(6))),  # better than any other model, any draw
            "mid": ("a", list(rng.random(6))),
            "worst": ("b", list(-5 + rng.random(6))),
        }
    )
    p = front_probability(runs, "metric/beta_vae_5", draws=200, by="family").set_index("setting")
    assert p["p_front"].to_dict() == {"best": 1.0, "mid": 0.0, "worst": 0.0}
    # Each family's own front: "worst" is alone in b, "mid" always behind "best" in a.
    assert p["p_front_family"].to_dict() == {"best": 1.0, "mid": 0.0, "worst": 1.0}
    assert p["family"].tolist() == ["a", "a", "b"]


def test_front_probability_settings_that_swap_with_the_seeds() -> None:
    rng = np.random.default_rng(1)
    runs = quality_runs(
        {
            "x": ("a", list(rng.normal(0, 1, 4))),  # same spread: either can come out ahead
            "y": ("a", list(rng.normal(0, 1, 4))),
            "far": ("a", list(-10 + rng.normal(0, 1, 4))),
            "failed": ("a", [0.0]),
        }
    )
    runs.loc[runs["setting"] == "failed", "status"] = "FAILED"
    p = front_probability(runs, "metric/beta_vae_5", draws=500, seed=3).set_index("setting")
    assert 0.05 < p.loc["x", "p_front"] < 0.95 and 0.05 < p.loc["y", "p_front"] < 0.95
    assert p.loc["x", "p_front"] + p.loc["y", "p_front"] >= 1.0  # one of them is always on
    assert p.loc["far", "p_front"] == 0.0 and p.loc["failed", "p_front"] == 0.0
    again = front_probability(runs, "metric/beta_vae_5", draws=500, seed=3)
    pd.testing.assert_frame_equal(again.set_index("setting"), p)  # a seed fixes the draws
    with pytest.raises(ValueError, match="draws"):
        front_probability(runs, "metric/beta_vae_5", draws=0)


def test_front_probability_of_one_model_per_setting_is_the_front() -> None:
    """One model with one pair per setting: every draw is the table itself."""
    table = synthetic_runs()
    table = table[table["seed"] == 0].drop(columns=[f"metric/beta_vae_5/run{r}" for r in range(3)])
    p = front_probability(label_settings(table), "metric/beta_vae_5", draws=20)
    agg = aggregate(table, "metric/beta_vae_5").set_index("setting").loc[p["setting"]]
    on = pareto_mask(agg[["recon_mean", "score_mean"]].to_numpy(), [False, True])
    assert p["p_front"].tolist() == on.astype(float).tolist()


# --- the paper's aggregation --------------------------------------------------------------------
def synthetic_runs() -> pd.DataFrame:
    """Three settings, worked by hand in test_aggregation_by_hand."""
    rows = []
    for s in range(10):  # beta_vae β=1: seed s, recon 100 + s, runs (50 + 5s + r) / 100
        scores = [(50 + 5 * s + r) / 100 for r in range(3)]
        rows.append(("beta_vae", 1.0, 0.0, s, "FINISHED", 100.0 + s, scores))
    for s in range(10):  # beta_vae β=8: every seed scores (0.8, 0.8, 0.6); seed 9 failed
        if s == 9:
            rows.append(("beta_vae", 8.0, 0.0, s, "FAILED", NAN, [NAN] * 3))
        else:
            rows.append(("beta_vae", 8.0, 0.0, s, "FINISHED", 200.0 - s, [0.8, 0.8, 0.6]))
    for s, (recon, score) in enumerate([(10, 0.5), (20, 0.6), (30, 0.7), (40, 0.8)]):
        rows.append(("wae_gaussian", 1.0, 2.0, s, "FINISHED", recon, score))  # mean only
    out = []
    for arm, beta, l1, seed, status, recon, scores in rows:
        runs = scores if isinstance(scores, list) else [NAN] * 3
        mean = np.mean(scores) if isinstance(scores, list) else scores
        out.append(
            {
                "run_id": f"{arm}-{beta}-{l1}-{seed}", "status": status, "arm": arm,
                "family": arm, "seed": seed, "objective.beta": beta,
                "objective.lp_lambda": l1, "objective.name": "beta_vae" if arm == "beta_vae"
                else "wae_mmd", "test/recon": recon, "metric/beta_vae_5": mean,
                **{f"metric/beta_vae_5/run{r}": v for r, v in enumerate(runs)},
            }
        )  # fmt: skip
    return pd.DataFrame(out)


def test_settings_are_labelled_by_what_varies_within_the_arm() -> None:
    runs = label_settings(synthetic_runs())
    assert sorted(runs["setting"].unique()) == ["beta_vae β=1", "beta_vae β=8", "wae_gaussian"]
    assert set(runs.loc[runs["arm"] == "beta_vae", "knob"]) == {"β=1", "β=8"}


def test_aggregation_by_hand() -> None:
    agg = aggregate(synthetic_runs(), "metric/beta_vae_5").set_index("setting")
    # β=1: 30 pairs; scores 50+5s+r (r = 0, 1, 2) are distinct, so the top 15 are exactly
    # seeds 5..9 with all three runs. recon = 105..109, three times each: mean 107,
    # variance (4+1+0+1+4)/5 = 2. score = (50 + 5s + r)/100: mean (50 + 35 + 1)/100 = 0.86,
    # variance (25·2 + 2/3)/100² (seed and run spread add).
    a = agg.loc["beta_vae β=1"]
    assert (a.n_models, a.n_failed, a.n_pairs, a.n_kept) == (10, 0, 30, 15)
    assert a.recon_mean == pytest.approx(107.0)
    assert a.recon_std == pytest.approx(math.sqrt(2.0))
    assert a.score_mean == pytest.approx(0.86)
    assert a.score_std == pytest.approx(math.sqrt(50 + 2 / 3) / 100)
    # β=8: seed 9 failed -> 9 models, 27 pairs, keep ceil(27/2) = 14. The 18 pairs scoring
    # 0.8 tie: the stable order keeps table order, runs 0 and 1 of seeds 0..6. recon = 200-s
    # for s = 0..6, twice each: mean 197, variance 4. Score 0.8 exactly.
    b = agg.loc["beta_vae β=8"]
    assert (b.n_models, b.n_failed, b.n_pairs, b.n_kept) == (9, 1, 27, 14)
    assert b.recon_mean == pytest.approx(197.0)
    assert b.recon_std == pytest.approx(2.0)
    assert (b.score_mean, b.score_std) == (pytest.approx(0.8), pytest.approx(0.0))
    # wae_gaussian: no per-run scores, one pair per model (4) -> keep 2: scores 0.8, 0.7
    # with recon 40, 30: mean 35 ± 5, score 0.75 ± 0.05.
    c = agg.loc["wae_gaussian"]
    assert (c.n_pairs, c.n_kept) == (4, 2)
    assert (c.recon_mean, c.recon_std) == (pytest.approx(35.0), pytest.approx(5.0))
    assert (c.score_mean, c.score_std) == (pytest.approx(0.75), pytest.approx(0.05))


def test_aggregation_options() -> None:
    runs = synthetic_runs()
    sample = aggregate(runs, "metric/beta_vae_5", ddof=1).set_index("setting")
    # β=1 recon deviations -2..2 three times: sum of squares 30 over 14 degrees of freedom.
    assert sample.loc["beta_vae β=1", "recon_std"] == pytest.approx(math.sqrt(30 / 14))
    every = aggregate(runs, "metric/beta_vae_5", keep=1.0).set_index("setting")
    assert every.loc["beta_vae β=1", "n_kept"] == 30
    assert every.loc["beta_vae β=1", "recon_mean"] == pytest.approx(104.5)
    pairs = paper_pairs(label_settings(runs), "metric/beta_vae_5")
    assert len(pairs) == 30 + 27 + 4 and not pairs[["recon", "score"]].isna().any().any()
    assert len(keep_top(pairs.iloc[:0])) == 0


def test_every_failed_setting_stays_visible() -> None:
    runs = synthetic_runs()
    runs.loc[runs["arm"] == "wae_gaussian", "status"] = "FAILED"
    agg = aggregate(runs, "metric/beta_vae_5").set_index("setting")
    assert agg.loc["wae_gaussian", "n_kept"] == 0
    assert np.isnan(agg.loc["wae_gaussian", "recon_mean"])
    assert agg.loc["wae_gaussian", "n_failed"] == 4


# --- the tidy table, Figure 2's models, the headline table ----------------------------------
def test_tidy_types_params_and_finds_the_family() -> None:
    params = {
        "objective.name": "beta_vae", "model.posterior": "gaussian", "model.prior": "gaussian",
        "objective.beta": "4.0", "data.path": "None", "train.device": "auto", "seed": "3",
        "arm": "diverges",
    }  # fmt: skip
    df = tidy([{"run_id": "r", "status": "FAILED", "params": params, "metrics": {}}])
    row = df.iloc[0]
    assert (row["arm"], row["family"], row["seed"]) == ("diverges", "beta_vae", 3)
    assert row["objective.beta"] == 4.0 and pd.isna(row["data.path"])
    assert row["train.device"] == "auto"
    assert list(tidy([]).columns)[:3] == ["experiment", "run_id", "trial_id"]


def figure2_runs() -> pd.DataFrame:
    rows = [
        ("beta_vae", "FINISHED", 150.0, 0.99, 0.70),
        ("beta_vae", "FINISHED", 120.0, 0.985, 0.80),  # best recon above 98 %
        ("beta_vae", "FINISHED", 80.0, 0.97, 0.90),  # best recon overall, but below 98 %
        ("beta_vae", "FAILED", 10.0, NAN, NAN),
        ("wae_box", "FINISHED", 60.0, 0.95, 0.60),  # no WAE above 98 %: best 4-factor
        ("wae_box", "FINISHED", 40.0, 0.90, 0.95),
    ]
    return pd.DataFrame(
        [
            {"run_id": f"r{i}", "family": f, "status": st, "test/recon": rc, "setting": f,
             "seed": i, "metric/beta_vae_4": s4, "metric/beta_vae_5": s5}
            for i, (f, st, rc, s4, s5) in enumerate(rows)
        ]
    )  # fmt: skip


def test_figure2_chooses_the_captions_models() -> None:
    chosen = choose(figure2_runs())
    got = list(zip(chosen["family"], chosen["run_id"], chosen["fallback"]))
    assert got == [
        ("beta_vae", "r1", False),
        ("beta_vae", "r2", False),
        ("wae_box", "r4", True),
        ("wae_box", "r5", False),
    ]
    assert "none > 98 %" in chosen.iloc[2]["criterion"]


def test_headline_table() -> None:
    runs = synthetic_runs()
    runs["metric/beta_vae_4"] = runs["metric/beta_vae_5"] + 0.15  # β=1 setting: 101 %
    for r in range(3):
        runs[f"metric/beta_vae_4/run{r}"] = runs[f"metric/beta_vae_5/run{r}"] + 0.15
    table = headline(label_settings(runs)).set_index(["key", "group"])
    assert table.loc[("best_5", "β-VAE"), "setting"] == "beta_vae β=1"
    assert table.loc[("best_5", "β-VAE"), "score_mean"] == pytest.approx(0.86)
    assert "85.4 %" in table.loc[("best_5", "β-VAE"), "paper"]
    # 4-factor: β=1 at 1.01 and β=8 at 0.95 -> only β=1 passes 98 %: recon 107 ± 1.4.
    assert table.loc[("recon_at_98", "β-VAE"), "ours"].startswith("107.0 ± 1.4")
    assert table.loc[("recon_at_98", "WAE"), "ours"].startswith("none > 98 %")
    assert table.loc[("best_5_model", "β-VAE"), "recon_mean"] == 109.0
    line = budget(label_settings(runs).assign(data_source="procedural"))
    assert "procedural dSprites" in line and "23/24 trials finished" in line


def test_headline_groups_every_family() -> None:
    """The paper's groups by objective (WAE: Gaussian and box together), every other family
    its own group, DIP-VAE-I and -II apart though they share an objective."""
    runs = synthetic_runs()
    extra = runs[runs["arm"] == "wae_gaussian"].copy()
    frames = [runs]
    for family, objective in (("wae_box", "wae_mmd"), ("dip_vae_i", "dip_vae"),
                              ("dip_vae_ii", "dip_vae"), ("factor_vae", "factor_vae")):  # fmt: skip
        frames.append(extra.assign(arm=family, family=family, **{"objective.name": objective},
                                   run_id=extra["run_id"] + family))  # fmt: skip
    runs = pd.concat(frames, ignore_index=True)
    runs["metric/beta_vae_4"] = runs["metric/beta_vae_5"]
    table = headline(label_settings(runs))
    assert list(dict.fromkeys(table["group"])) == ["β-VAE", "WAE", "factor_vae", "dip_vae_i",
                                                   "dip_vae_ii"]  # fmt: skip
    wae = table[(table["group"] == "WAE") & (table["key"] == "best_5")]
    assert wae["setting"].iloc[0] in ("wae_gaussian", "wae_box")


def test_default_experiment() -> None:
    class Store:  # the one MlflowClient method default_experiment uses
        def __init__(self, *names: str) -> None:
            self.names = names

        def search_experiments(self) -> list:
            return [type("Experiment", (), {"name": n}) for n in ("Default", *self.names)]

    assert default_experiment(Store("quickstart")) == "quickstart"
    assert default_experiment(Store("beta_vae", "paper")) == "paper"
    with pytest.raises(AnalysisError, match=r"--experiment NAME.*\['beta_vae', 'wae_l1'\]"):
        default_experiment(Store("beta_vae", "wae_l1"))


# --- robustness of the ranking to the metric's settings ---------------------------------------
def test_rank_stability_on_a_synthetic_score_matrix() -> None:
    settings = ["a", "a", "b", "b", "c", "c"]  # two seeds each: the setting's mean ranks it
    ref = np.array([0.9, 0.7, 0.5, 0.6, 0.2, 0.1])  # means a 0.8 > b 0.55 > c 0.15
    swap = np.array([0.5, 0.6, 0.9, 0.7, 0.2, 0.1])  # a and b trade places
    scores = np.stack([ref, ref, 1 - ref, swap, np.full(6, 0.3)], axis=1)
    columns = [Combo(30, 5000, 100_000), Combo(10, 5000, 100_000), Combo(64, 1000, 2000),
               Combo(30, 1000, 2000), Combo(10, 1000, None)]  # fmt: skip
    table = rank_stability(scores, settings, columns)
    assert table["reference"].tolist() == [True, False, False, False, False]
    assert table["kendall_tau"].iloc[:4].tolist() == pytest.approx([1, 1, -1, 1 / 3])
    assert table["spearman_rho"].iloc[:4].tolist() == pytest.approx([1, 1, -1, 0.5])
    assert np.isnan(table["kendall_tau"].iloc[4])  # a constant column has no order
    assert table["top_setting"].iloc[:4].tolist() == ["a", "a", "c", "b"]
    assert table["top_score"].iloc[0] == pytest.approx(0.8)
    assert table["steps"].iloc[4] is pd.NA and table["n_settings"].tolist() == [3] * 5
    with pytest.raises(ValueError, match="models"):
        rank_stability(scores[:5], settings, columns)


def test_combos_put_the_reference_first_and_collapse_missing_steps() -> None:
    ref = Combo(30, 5000, 100_000)
    grid = combos(ref, [10, 30], [5000], [2000, 100_000])
    assert grid == [ref, Combo(10, 5000, 2000), Combo(10, 5000, 100_000), Combo(30, 5000, 2000)]
    logistic = combos(Combo(64, 10_000, None), [10, 64], [1000], None)
    assert logistic == [Combo(64, 10_000, None), Combo(10, 1000, None), Combo(64, 1000, None)]
    assert Combo(64, 10_000, None).label == "L=64 n=10000 steps=-"


# --- errors: the library raises, the CLI says `error: ...` and exits with 2 --------------------
def test_a_library_error_is_one_line_and_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # A sweep name with no Tune folder: collect.load_runs raises, collect.main reports it.
    runs = tmp_path / "runs"
    argv = ["-e", "nope", "--from-tune", "--storage", str(runs), "--out", str(tmp_path), "--no-log"]
    assert collect.main(argv) == 2
    out = capsys.readouterr()
    assert out.err == f"error: no Tune experiment folder {runs / 'nope'} (pass --storage)\n"
    assert out.out == ""
    with pytest.raises(AnalysisError, match="no Tune experiment folder"):
        collect.load_runs(Target("unused", ("nope",), tmp_path, runs, False), from_tune=True)


def test_command_passes_other_exits_and_errors_through() -> None:
    @command
    def main(argv: list[str] | None = None) -> int:
        if argv == ["fail"]:
            raise ValueError("a bug, not a user error")
        return 0 if argv is None else len(argv)

    assert main() == 0 and main(["a", "b", "c"]) == 3
    assert main.__name__ == "main"
    with pytest.raises(ValueError, match="a bug"):  # a traceback, as it should be
        main(["fail"])
