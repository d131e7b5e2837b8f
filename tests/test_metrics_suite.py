"""MIG, DCI, SAP and FactorVAE score on hand-built code tables (PROTOCOL §8)."""

from __future__ import annotations

import numpy as np
import pytest

from raywae.data.grid import FactorGrid
from raywae.metrics import EXTRA_METRICS, dci, factor_vae_score, mig, report, sap
from raywae.metrics.dci import completeness_from_importance, disentanglement_from_importance
from raywae.metrics.mig import mig_from_samples
from raywae.metrics.sap import sap_score_matrix


@pytest.fixture(scope="module")
def grid() -> FactorGrid:
    return FactorGrid.dsprites()


@pytest.fixture(scope="module")
def tables(grid: FactorGrid) -> dict[str, np.ndarray]:
    """Code tables over the full grid: true values (5 varying factors), constant, random,
    and each dim mixing two standardised factors."""
    values = grid.latent_values(grid.classes(np.arange(len(grid))))[:, list(grid.varying)]
    z = (values - values.mean(0)) / values.std(0)
    sh, sc, o, x, y = z.T
    mixed = np.stack([sh + sc, sh - sc, o + x, x + y, x - y, y + o], 1)
    rng = np.random.default_rng(1)
    return {
        "true": values.astype(np.float32),
        "constant": np.zeros((len(grid), 4), np.float32),
        "random": rng.standard_normal((len(grid), 6)).astype(np.float32),
        "mixed": mixed.astype(np.float32),
    }


# --- MIG ----------------------------------------------------------------------------------
def test_mig(grid, tables):
    scores = {k: mig(t, grid)["mig"] for k, t in tables.items()}
    # 20 bins cap factors with > 20 values (orientation 40, position 32): ≈ 0.9 is the top
    assert scores["true"] > 0.85
    assert scores["constant"] == 0.0
    assert scores["random"] < 0.02 and scores["mixed"] < 0.3


def test_mig_closed_forms():
    ys = np.stack(np.meshgrid(np.arange(5), np.arange(7)), -1).reshape(-1, 2)  # exactly
    ys = np.tile(ys, (20, 1))  # independent factors: their empirical MI is 0, not ≈ 0
    assert mig_from_samples(ys.astype(float), ys)["mig"] == pytest.approx(1.0)
    assert mig_from_samples(np.hstack([ys, ys]).astype(float), ys)["mig"] == pytest.approx(0.0)


# --- FactorVAE ------------------------------------------------------------------------------
def test_factor_vae(grid, tables):
    out = {k: factor_vae_score(t, grid) for k, t in tables.items()}
    assert out["true"]["train_accuracy"] == out["true"]["eval_accuracy"] == 1.0
    assert out["constant"] == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    assert abs(out["random"]["eval_accuracy"] - 0.2) < 0.05
    assert out["mixed"]["eval_accuracy"] < 0.8


# --- DCI ----------------------------------------------------------------------------------
def test_dci_closed_forms():
    d = disentanglement_from_importance
    c = completeness_from_importance
    assert d(np.eye(5)) == pytest.approx(1) and c(np.eye(5)) == pytest.approx(1)
    assert d(np.ones((5, 5))) == pytest.approx(0) and c(np.ones((5, 5))) == pytest.approx(0)
    one_code = np.zeros((4, 3))
    one_code[0] = 1.0  # code 0 explains every factor: not disentangled, but complete
    assert d(one_code) == pytest.approx(0, abs=1e-6) and c(one_code) == pytest.approx(1)
    two_each = np.kron(np.eye(3), np.ones((2, 1)))  # 6 codes, 2 equal codes per factor
    assert d(two_each) == pytest.approx(1)
    assert c(two_each) == pytest.approx(1 - np.log(2) / np.log(6))
    r = np.array([[3.0, 1.0], [0.0, 2.0]])  # general case, by hand
    h_row0 = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)) / np.log(2)
    assert d(r) == pytest.approx(4 / 6 * (1 - h_row0) + 2 / 6 * 1)
    h_col1 = -(1 / 3 * np.log(1 / 3) + 2 / 3 * np.log(2 / 3)) / np.log(2)
    assert c(r) == pytest.approx(3 / 6 * 1 + 3 / 6 * (1 - h_col1))
    assert d(np.zeros((3, 3))) == pytest.approx(0) and c(np.zeros((3, 3))) == pytest.approx(0)


def test_dci_on_tables():
    """A coarser grid and 2,000 samples keep the 5 x 100-tree fits to seconds."""
    small = FactorGrid.dsprites().subgrid(orientation=8, posX=8, posY=8)
    values = small.latent_values(small.classes(np.arange(len(small))))[:, list(small.varying)]
    good = dci(values.astype(np.float32), small, num_train=2000, num_test=1000)
    assert good["disentanglement"] > 0.95 and good["completeness"] > 0.95
    assert good["informativeness_test"] > 0.95
    z = (values - values.mean(0)) / values.std(0)
    mixed = np.stack(
        [
            z[:, 0] + z[:, 1],
            z[:, 0] - z[:, 1],
            z[:, 2] + z[:, 3],
            z[:, 3] + z[:, 4],
            z[:, 4] - z[:, 2],
        ],
        1,
    )
    bad = dci(mixed.astype(np.float32), small, num_train=2000, num_test=1000)
    assert bad["disentanglement"] < good["disentanglement"] - 0.3
    flat = dci(np.zeros((len(small), 3), np.float32), small, num_train=500, num_test=200)
    assert flat["disentanglement"] == pytest.approx(0, abs=1e-9)
    assert flat["completeness"] == pytest.approx(0, abs=1e-9)


# --- SAP ----------------------------------------------------------------------------------
def test_sap(grid, tables):
    scores = {k: sap(t, grid, num_train=3000, num_test=2000)["sap"] for k, t in tables.items()}
    # discrete SAP: a 1-D one-vs-rest SVM resolves few of 32-40 classes, so the true factors'
    # ceiling is ≈ 0.2 (shape and scale carry it); everything else is ≈ 0
    assert scores["true"] > 0.15
    assert scores["constant"] == 0.0
    assert scores["random"] < 0.02 and scores["mixed"] < 0.05
    continuous = sap(tables["true"], grid, num_train=3000, continuous_factors=True)["sap"]
    assert continuous > 0.95


def test_sap_matrix_puts_each_factor_on_its_own_code(grid, tables):
    rng = np.random.default_rng(0)
    idx, idx_test = rng.integers(0, len(grid), 3000), rng.integers(0, len(grid), 2000)
    ys = grid.classes(idx)[:, list(grid.varying)]
    ys_test = grid.classes(idx_test)[:, list(grid.varying)]
    m = sap_score_matrix(tables["true"][idx], ys, tables["true"][idx_test], ys_test)
    assert m.shape == (5, 5) and np.all(m.argmax(0) == np.arange(5))


# --- registry and report -------------------------------------------------------------------
def test_registry_and_report(grid, tables):
    assert set(EXTRA_METRICS) == {"mig", "dci", "dci_exact", "factor_vae", "sap"}
    out = report(tables["true"][:, :3], grid, seed=0, extra=("mig", "factor_vae"), steps=200)
    for k in (4, 5):
        assert {f"metric/beta_vae_{k}", f"metric/beta_vae_{k}/eval"} <= set(out)
        assert {f"metric/beta_vae_{k}/run{i}" for i in range(3)} <= set(out)
    assert {"metric/mig", "metric/factor_vae/eval_accuracy"} <= set(out)
    assert all(isinstance(v, float) for v in out.values())
    with pytest.raises(KeyError, match="unknown metric"):
        report(tables["true"], grid, extra=("nope",), runs=1, steps=1)


def test_seeded(grid, tables):
    t = tables["random"]
    assert mig(t, grid, seed=3) == mig(t, grid, seed=3)
    assert factor_vae_score(t, grid, seed=3) == factor_vae_score(t, grid, seed=3)
    assert mig(t, grid, seed=3) != mig(t, grid, seed=4)


@pytest.mark.slow
def test_library_defaults_on_true_factors(grid, tables):
    """DCI and SAP at disentanglement_lib's full sample sizes (minutes: 113 x 100 trees)."""
    out = dci(tables["true"], grid)
    assert out["disentanglement"] > 0.99 and out["completeness"] > 0.99
    assert sap(tables["true"], grid)["sap"] > 0.15
