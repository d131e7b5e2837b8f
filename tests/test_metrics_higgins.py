"""The Higgins (β-VAE) metric on hand-built code tables over the full dSprites grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raywae.data.grid import FactorGrid
from raywae.metrics import beta_vae_score, higgins_many, higgins_runs
from raywae.metrics.beta_vae import (
    PRESETS,
    HigginsPreset,
    Problem,
    accuracy,
    factor_ids,
    fit_softmax_adagrad,
    fit_softmax_adagrad_many,
    higgins_points,
)

FAST = 10_000  # Adagrad steps for the quick tests; the paper's 100,000 run below


@pytest.fixture(scope="module")
def grid() -> FactorGrid:
    return FactorGrid.dsprites()


@pytest.fixture(scope="module")
def classes(grid: FactorGrid) -> np.ndarray:
    return grid.classes(np.arange(len(grid)))


@pytest.fixture(scope="module")
def values(grid: FactorGrid, classes: np.ndarray) -> np.ndarray:
    """The true latent values as a code table (737,280 x 6; color is a constant column)."""
    return grid.latent_values(classes).astype(np.float32)


def standardised(values: np.ndarray, grid: FactorGrid, *names: str) -> list[np.ndarray]:
    cols = [values[:, grid.factor(n)] for n in names]
    return [(c - c.mean()) / c.std() for c in cols]


def test_paper_preset_codes_without_shape_score_100_on_5_factors(grid, values):
    """The real preset (100,000 Adagrad steps, 3 restarts): a single factor missing from the
    codes is still identified, by elimination (no feature near 0 means 'shape')."""
    out = higgins_runs(np.delete(values, grid.factor("shape"), 1), grid, factors=5, runs=3)
    assert out["score"] >= 0.99 and out["eval_accuracy"] >= 0.99
    runs = [out[f"score/run{i}"] for i in range(3)]
    assert out["score"] == pytest.approx(np.mean(runs))


@pytest.mark.parametrize("factors", [4, 5])
@pytest.mark.parametrize("kind", ["values", "classes"])
def test_true_factors_score_at_least_99(grid, values, classes, factors, kind):
    codes = values if kind == "values" else classes.astype(np.float32)
    out = beta_vae_score(codes, grid, factors=factors, steps=FAST)
    assert out["train_accuracy"] >= 0.99 and out["eval_accuracy"] >= 0.99
    assert out["score"] == out["train_accuracy"]  # rubenstein2018 scores the training points


@pytest.mark.parametrize("factors, chance", [(4, 0.25), (5, 0.20)])
def test_constant_codes_score_chance(grid, factors, chance):
    out = beta_vae_score(np.zeros((len(grid), 3), np.float32), grid, factors, steps=2000)
    assert abs(out["train_accuracy"] - chance) < 0.03
    assert abs(out["eval_accuracy"] - chance) < 0.03


@pytest.mark.parametrize("factors, chance", [(4, 0.25), (5, 0.20)])
def test_random_codes_score_near_chance(grid, factors, chance):
    codes = np.random.default_rng(1).standard_normal((len(grid), 10)).astype(np.float32)
    out = beta_vae_score(codes, grid, factors, steps=FAST)
    assert abs(out["eval_accuracy"] - chance) < 0.03
    assert out["train_accuracy"] < chance + 0.05  # 55 parameters barely overfit 5,000 points


def test_codes_missing_shape_and_scale_score_80_on_5_factors(grid, values):
    codes = np.delete(values, [grid.factor("shape"), grid.factor("scale")], 1)
    out = beta_vae_score(codes, grid, factors=5, steps=FAST)
    assert out["train_accuracy"] == pytest.approx(0.8, abs=0.03)
    assert out["eval_accuracy"] == pytest.approx(0.8, abs=0.03)


def test_codes_mixing_two_factors_per_dim_score_clearly_lower(grid, values):
    """(s+o, s−o, x+y, x−y) of standardised factors: fixing s or o shrinks both mixed dims
    alike, so the pair is confused; the clean table scores ≈ 100 % on the same points."""
    s, o, x, y = standardised(values, grid, "scale", "orientation", "posX", "posY")
    mixed = np.stack([s + o, s - o, x + y, x - y], 1).astype(np.float32)
    clean = np.stack([s, o, x, y], 1).astype(np.float32)
    mixed_score = beta_vae_score(mixed, grid, factors=4, steps=FAST)["eval_accuracy"]
    clean_score = beta_vae_score(clean, grid, factors=4, steps=FAST)["eval_accuracy"]
    assert clean_score >= 0.99 and mixed_score < 0.75


def test_tiny_code_scale_needs_standardising(grid, values):
    """Adagrad moves each weight by ~lr per step, so codes at 1/1000 scale (an untrained
    encoder's means are ~0.01) score at chance with all their information; z-scoring the
    features (standardise=True, off in the presets) recovers the true-factor score."""
    tiny = values * 1e-3
    assert beta_vae_score(tiny, grid, 5, steps=FAST)["score"] < 0.3
    assert beta_vae_score(tiny, grid, 5, steps=FAST, standardise=True)["score"] >= 0.99


def test_points_have_a_zero_feature_at_the_fixed_factor(grid, classes):
    ids = factor_ids(grid, 5)
    x, y = higgins_points(classes.astype(np.float32), grid, ids, 500, 30, np.random.default_rng(0))
    assert x.shape == (500, 6) and set(np.unique(y)) == set(range(5))
    assert np.all(x[np.arange(500), np.asarray(ids)[y]] == 0)
    others = np.delete(np.asarray(grid.varying), 0)  # position and orientation always differ
    assert np.all(x[:, others].sum(1) > 0)


def test_adagrad_loop_matches_torch_optim(grid):
    """The hand-written full-batch loop equals torch.optim.Adagrad on the mean cross-entropy."""
    rng = np.random.default_rng(0)
    x = rng.random((200, 4)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    w = fit_softmax_adagrad(x, y, 3, restarts=1, steps=50, seed=3)[0]
    w0 = torch.from_numpy(fit_softmax_adagrad(x, y, 3, restarts=1, steps=0, seed=3)[0].copy())
    w0.requires_grad_(True)
    opt = torch.optim.Adagrad([w0], lr=1e-2, initial_accumulator_value=0.1)
    xa = torch.cat([torch.from_numpy(x), torch.ones(200, 1)], 1)
    for _ in range(50):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(xa @ w0.t(), torch.from_numpy(y)).backward()
        opt.step()
    np.testing.assert_allclose(w, w0.detach().numpy(), rtol=1e-4, atol=1e-6)
    assert accuracy(w[None], x, y).shape == (1,)


def test_restarts_differ_only_by_init_and_seed_reproduces(grid, classes):
    codes = classes.astype(np.float32)
    a = higgins_runs(codes, grid, 4, runs=2, seed=5, steps=300)
    assert a == higgins_runs(codes, grid, 4, runs=2, seed=5, steps=300)
    assert a != higgins_runs(codes, grid, 4, runs=2, seed=6, steps=300)
    assert set(a) == {
        f"{k}{r}"
        for k in ("score", "train_accuracy", "eval_accuracy")
        for r in ("", "/run0", "/run1")
    }


def test_disentanglement_lib_preset(grid, values):
    good = beta_vae_score(values, grid, 4, preset="disentanglement_lib")
    flat = beta_vae_score(np.zeros((len(grid), 2), np.float32), grid, 4, "disentanglement_lib")
    assert good["score"] == good["eval_accuracy"] >= 0.99
    assert abs(flat["eval_accuracy"] - 0.25) < 0.03


def test_bad_arguments(grid, values):
    with pytest.raises(ValueError, match="len"):
        beta_vae_score(values[:100], grid, 5, steps=1)
    with pytest.raises(ValueError, match="factors"):
        beta_vae_score(values, grid, 3, steps=1)
    with pytest.raises(KeyError, match="unknown preset"):
        beta_vae_score(values, grid, 5, preset="higgins2017")
    broken = values.copy()
    broken[7, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        beta_vae_score(broken, grid, 5, steps=1)
    with pytest.raises(KeyError, match="unknown factor"):
        beta_vae_score(values, grid, ["shape", "size"], steps=1)


@pytest.mark.parametrize("preset", ["rubenstein2018", "disentanglement_lib"])
def test_batched_higgins_equals_one_table_at_a_time(grid, values, preset):
    """higgins_many (a pack's tables x both factor sets, one batched Adagrad fit) gives each
    table what higgins_runs gives it alone, with the same seed."""
    rng = np.random.default_rng(0)
    noisy = values + rng.normal(0, 0.5, values.shape).astype(np.float32)
    without_shape = np.delete(values, grid.factor("shape"), 1)
    tables, seeds = [noisy, without_shape[:, :3]], [3, 8]
    kw = {"steps": 300} if preset == "rubenstein2018" else {}
    batched = higgins_many(tables, grid, (4, 5), preset, 2, seeds, **kw)
    for table, seed, per_set in zip(tables, seeds, batched, strict=True):
        for factors, got in zip((4, 5), per_set, strict=True):
            alone = higgins_runs(table, grid, factors, preset, 2, seed, **kw)
            assert got.keys() == alone.keys()
            for key, value in alone.items():  # accuracies on 5,000 points: 1 point is 2e-4
                assert got[key] == pytest.approx(value, abs=4e-4), (factors, key)
    with pytest.raises(ValueError, match="one shape"):
        fit_softmax_adagrad_many(
            [Problem(noisy[:10], np.zeros(10), 4, 0), Problem(noisy[:20], np.zeros(20), 4, 0)]
        )


def test_a_preset_object_stands_for_its_name_and_sets_l_points_and_steps(grid, values):
    """higgins_many takes a HigginsPreset as well as a PRESETS key: the named preset's
    object scores exactly as its name; an own one draws its own number of points."""
    by_name = higgins_many([values], grid, (5,), "rubenstein2018", 1, [2], steps=200)
    by_object = higgins_many([values], grid, (5,), PRESETS["rubenstein2018"], 1, [2], steps=200)
    assert by_object == by_name
    own = HigginsPreset(5, 800, 400, "softmax_adagrad", "train_accuracy", steps=FAST)
    out = higgins_many([values], grid, (4,), own, 2, [2])[0][0]
    assert out["score"] >= 0.95
    for run in range(2):  # accuracies on 800 training and 400 evaluation points
        assert (out[f"train_accuracy/run{run}"] * 800) % 1 == pytest.approx(0, abs=1e-6)
        assert (out[f"eval_accuracy/run{run}"] * 400) % 1 == pytest.approx(0, abs=1e-6)


def test_fits_in_worker_threads_equal_one_worker(grid, values):
    """workers=2 fits the 5- and 4-factor problems side by side (neither padded): each
    problem's weights are those of the one batched fit, up to float rounding."""
    rng = np.random.default_rng(0)
    noisy = values + rng.normal(0, 0.5, values.shape).astype(np.float32)
    problems = []
    for k, seed in ((4, 1), (5, 2), (5, 3)):
        x, y = higgins_points(noisy, grid, factor_ids(grid, k), 1000, 30, rng)
        problems.append(Problem(x, y, k, seed))
    one = fit_softmax_adagrad_many(problems, 2, steps=300, workers=1)
    two = fit_softmax_adagrad_many(problems, 2, steps=300, workers=2)
    for a, b, pr in zip(one, two, problems, strict=True):
        assert a.shape == b.shape == (2, pr.n_classes, values.shape[1] + 1)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
