"""encode_grid: one batched pass over the grid, rows in flat-index order, encoder means."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raywae.data.grid import FactorGrid
from raywae.metrics import encode_grid
from raywae.metrics.codes import sample_codes, sparse_images


class PackedTable:
    """The dataset contract encode_grid relies on: .grid and .packed(index) (n, 512)."""

    def __init__(self, grid: FactorGrid, seed: int = 0) -> None:
        self.grid = grid
        self.bits = np.random.default_rng(seed).integers(0, 256, (len(grid), 512), np.uint8)

    def packed(self, index: np.ndarray) -> np.ndarray:
        return self.bits[index]


class ImagesOnly:
    def __init__(self, table: PackedTable) -> None:
        self.grid, self._t = table.grid, table

    def images(self, index: np.ndarray) -> np.ndarray:
        return np.unpackbits(self._t.packed(index), axis=1).reshape(-1, 64, 64)


class LinearEncoder(torch.nn.Module):
    """mu = W x (+ dropout, to show eval mode is used); log-scale = a constant."""

    def __init__(self, d: int = 3) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4096, d)
        self.drop = torch.nn.Dropout(0.5)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert x.dtype == torch.float32 and x.shape[1] == 4096 and not torch.is_grad_enabled()
        mu = self.lin(self.drop(x))
        return mu, torch.full_like(mu, 7.0)


@pytest.fixture(scope="module")
def table() -> PackedTable:
    return PackedTable(FactorGrid.dsprites().subgrid(orientation=8, posX=8, posY=8))


def test_rows_are_encoder_means_in_flat_order(table):
    torch.manual_seed(0)
    model = LinearEncoder()
    model.train()
    codes = encode_grid(model, table, batch_size=1000, progress=False)  # 1,440 rows: 2 batches
    assert codes.shape == (len(table.grid), 3) and codes.dtype == np.float32
    assert model.training  # the caller's mode is restored
    x = torch.from_numpy(np.unpackbits(table.bits[[0, 999, 1000, 1439]], axis=1)).float()
    with torch.no_grad():
        expected = model.lin(x).numpy()
    np.testing.assert_allclose(codes[[0, 999, 1000, 1439]], expected, rtol=1e-5, atol=1e-5)


def test_images_fallback_matches_packed(table):
    torch.manual_seed(0)
    model = LinearEncoder()
    a = encode_grid(model, table, batch_size=512, progress=False)
    b = encode_grid(model, ImagesOnly(table), batch_size=700, progress=False)
    # The same dot products, but oneDNN picks its GEMM kernel (and so the summation order)
    # by batch shape: on some CPUs the two differ in the last bits. Each table must be the
    # exact codes up to float32's dot-product rounding bound γ_n·Σ|w_j·x_j|, γ_n = n·u /
    # (1 - n·u), n = 4096 + 1 terms (Higham, Accuracy and Stability, §3.1).
    x = np.unpackbits(table.bits, axis=1).astype(np.float64)
    w, bias = (p.detach().double().numpy() for p in (model.lin.weight, model.lin.bias))
    exact = x @ w.T + bias
    n, u = 4097, 2.0**-24
    bound = n * u / (1 - n * u) * (x @ np.abs(w).T + np.abs(bias))
    for codes in (a, b):
        assert np.all(np.abs(codes - exact) <= bound)


def test_subgrid_table_reads_the_subgrid_rows(table):
    """A code table on a subgrid of ds.grid (itself a subgrid here): row i is the image of the
    subgrid's flat index i, found through full-grid classes."""
    torch.manual_seed(0)
    model = LinearEncoder()
    full = encode_grid(model, table, progress=False)
    sub = table.grid.subgrid(shape=2, posX=2)
    codes = encode_grid(model, table, progress=False, grid=sub)
    assert codes.shape == (len(sub), 3)
    own = sub.to_full_classes(sub.classes(np.arange(len(sub))))
    parent = table.grid.to_full_classes(table.grid.classes(np.arange(len(table.grid))))
    lookup = {tuple(c): i for i, c in enumerate(parent)}
    rows = [lookup[tuple(c)] for c in own]
    np.testing.assert_allclose(codes, full[rows], rtol=1e-6)
    other = FactorGrid.dsprites().subgrid(posX=3)
    with pytest.raises(ValueError, match="not a subgrid"):
        encode_grid(model, table, progress=False, grid=other)


def test_project_autoencoder_if_present(table):
    models = pytest.importorskip("raywae.models")
    config = pytest.importorskip("raywae.config")
    torch.manual_seed(0)
    model = models.build_model(config.ModelConfig(hidden=32, latent_dim=4))
    codes = encode_grid(model, table, progress=False)
    assert codes.shape == (len(table.grid), 4) and np.all(np.abs(codes) <= 1)  # tanh means


def test_sparse_images_are_the_unpacked_pixels(table):
    packed = table.bits[:300].copy()
    packed[7] = 0  # an image with no lit pixel: an empty CSR row
    x = sparse_images(packed)
    assert x.layout == torch.sparse_csr and x.shape == (300, 4096)
    np.testing.assert_array_equal(x.to_dense().numpy(), np.unpackbits(packed, axis=1))


def test_sparse_batches_give_the_dense_codes(table):
    """The FC encoder takes the grid as sparse CSR batches (the default on CPU): the same
    codes as dense batches, up to the order of the first layer's sums."""
    models = pytest.importorskip("raywae.models")
    config = pytest.importorskip("raywae.config")
    torch.manual_seed(0)
    model = models.build_model(config.ModelConfig(hidden=32, latent_dim=4))
    assert model.sparse_input
    dense = encode_grid(model, table, batch_size=500, progress=False, sparse=False)
    sparse = encode_grid(model, table, batch_size=700, progress=False, sparse=True)
    # Half of these random pixels are lit: ~2,000-term sums in another order, through
    # three layers, differ by ~1e-6 (codes of scale ~0.05).
    np.testing.assert_allclose(sparse, dense, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(encode_grid(model, table, batch_size=700, progress=False), sparse)
    np.testing.assert_array_equal(  # a dataset without packed rows goes dense
        encode_grid(model, ImagesOnly(table), batch_size=500, progress=False, sparse=True), dense
    )


def test_sample_codes_reads_rows_by_flat_index():
    grid = FactorGrid.dsprites().subgrid(orientation=10, posX=8, posY=8)
    codes = grid.classes(np.arange(len(grid))).astype(np.float32)
    mus, ys = sample_codes(codes, grid, 100, np.random.default_rng(0))
    assert ys.shape == (100, 5)
    np.testing.assert_array_equal(mus[:, list(grid.varying)], ys)
