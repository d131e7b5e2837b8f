"""The code table: encoder means of every image of the grid, computed once (PROTOCOL §7).

Every metric reads rows of this table by flat grid index; none touches a model or an image.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from raywae.data.grid import FactorGrid
from raywae.progress import Bar, bar_for


def _flat_images(ds: Any, index: np.ndarray) -> np.ndarray:
    """(n,) flat indices -> (n, 4096) uint8 in {0, 1}; the packed rows are 8x less to read."""
    if hasattr(ds, "packed"):
        return np.unpackbits(ds.packed(index), axis=1)
    return np.asarray(ds.images(index), dtype=np.uint8).reshape(len(index), -1)


# Row b: the 8 pixels of byte value b, most significant bit first (np.packbits' order).
_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(bool)


def sparse_images(packed: np.ndarray) -> torch.Tensor:
    """packed: (n, P / 8) uint8 (np.packbits rows) -> (n, P) float32 sparse CSR tensor of the
    lit pixels (value 1). dSprites lights ~4 % of the pixels: a Linear over this batch sums
    the weight columns of those pixels, ~20x fewer multiply-adds than the dense batch."""
    n, width = packed.shape
    nonzero = np.flatnonzero(packed)  # the lit bytes, in row-major order
    lit = _BITS[packed.reshape(-1)[nonzero]]  # (bytes, 8) which of their bits are set
    flat = ((nonzero * 8)[:, None] + np.arange(8))[lit]  # flat pixel indices, increasing
    pixels = width * 8
    crow = np.searchsorted(flat, np.arange(0, n * pixels + 1, pixels))
    return csr(torch.from_numpy(crow), torch.from_numpy(flat % pixels), torch.ones(len(flat)),
               (n, pixels))  # fmt: skip


def csr(
    crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """torch.sparse_csr_tensor without its "beta" warning (matmul is all raywae uses)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape)


def rows_in(grid: FactorGrid, parent: FactorGrid) -> np.ndarray:
    """(len(grid),) flat indices in `parent` of the images of `grid`, a subgrid of it."""
    if grid.names != parent.names:
        raise ValueError(f"grid factors {grid.names} differ from ds.grid's {parent.names}")
    classes = grid.classes(np.arange(len(grid)))
    for k, (own, full) in enumerate(zip(grid.full_classes, parent.full_classes)):
        pos = np.searchsorted(full, own)  # full_classes are increasing
        if np.any(pos >= len(full)) or np.any(full[np.minimum(pos, len(full) - 1)] != own):
            raise ValueError(f"factor {grid.names[k]!r}: grid is not a subgrid of ds.grid")
        classes[:, k] = pos[classes[:, k]]
    return parent.index(classes)


def encode_grid(
    model: nn.Module,
    ds: Any,
    batch_size: int = 8192,
    device: str | torch.device | None = None,
    progress: bool | Bar = True,
    grid: FactorGrid | None = None,
    sparse: bool | None = None,
) -> np.ndarray:
    """Encoder means of every image of `ds.grid` (or of `grid`), in flat-index order.

    model: a module with `encode(x)`, x (n, 4096) float32 in {0, 1} -> `(mu, log_scale)`;
        mu (n, d), or (R, n, d) for R models encoded at once (Trainer.code_tables).
    ds: has `.grid` and `.packed(index) -> (n, 512) uint8` (np.packbits rows) or
        `.images(index) -> (n, 64, 64) uint8`.
    progress: show a bar (True / False) or a tqdm-like factory (see raywae.progress).
    grid: a subgrid of ds.grid (e.g. `ds.grid.subgrid(orientation=2)`) for a cheaper table;
        the metrics then take that grid with the codes.
    sparse: feed x as a sparse CSR tensor (`sparse_images`; the same codes up to float
        rounding; the FC encoder's grid pass 2.5x faster on one CPU core, 1.6x on two, where
        the dense 1200 x 1200 layer is left as most of it); default: on CPU when the model
        says its encoder takes one (`model.sparse_input`) and ds has packed rows.
    batch_size: images per forward pass (8192: 134 MB of float32 pixels when dense).
    Returns codes: (len(grid), d) float32 ((R, len(grid), d)); row i is mu(x_i) for flat
    index i of the grid. The model runs in eval mode under inference_mode; its previous
    train/eval mode is restored. device: default the model's.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if sparse is None:
        sparse = device.type == "cpu" and getattr(model, "sparse_input", False)
    sparse = sparse and hasattr(ds, "packed")
    rows = None if grid is None else rows_in(grid, ds.grid)
    n = len(ds.grid) if rows is None else len(rows)
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    buffer: torch.Tensor | None = None  # one float batch, reused: no page faults per batch
    try:
        with torch.inference_mode():
            starts = range(0, n, batch_size)
            for start in bar_for(progress, starts)(starts, desc="encode grid", unit="batch"):
                index = np.arange(start, min(start + batch_size, n))
                flat = index if rows is None else rows[index]
                if sparse:
                    x = sparse_images(ds.packed(flat)).to(device)
                else:  # uint8 to the device, float there
                    pixels = torch.from_numpy(_flat_images(ds, flat)).to(device)
                    if buffer is None:
                        buffer = torch.empty(len(index), pixels.shape[1], device=device)
                    x = buffer[: len(index)].copy_(pixels)
                mu = model.encode(x)[0]
                if out is None:  # d is known only after the first batch
                    out = np.empty((*mu.shape[:-2], n, mu.shape[-1]), dtype=np.float32)
                out[..., index, :] = mu.float().cpu().numpy()
    finally:
        model.train(was_training)
    if out is None:
        raise ValueError("the grid is empty: nothing to encode")
    return out


def check_table(codes: np.ndarray, grid: FactorGrid) -> np.ndarray:
    """codes: (len(grid), d) -> the same as a 2-D float array, or a clear error (a wrong
    shape, or NaN / inf from a diverged model: a metric of those would be meaningless)."""
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes[:, None]
    if codes.ndim != 2 or codes.shape[0] != len(grid):
        raise ValueError(f"codes must be (len(grid)={len(grid)}, d), got {codes.shape}")
    if not np.issubdtype(codes.dtype, np.floating):
        codes = codes.astype(np.float32)
    if not np.isfinite(codes).all():
        raise ValueError("codes contain NaN or inf")
    return codes


def sample_codes(
    codes: np.ndarray, grid: FactorGrid, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n images uniform over the grid (disentanglement_lib's `generate_batch_factor_code`).

    Returns (mus (n, d), ys (n, K) int64), ys the classes of the K varying factors
    (dSprites: shape, scale, orientation, posX, posY; color is constant and dropped).
    """
    classes = grid.sample(n, rng)
    return codes[grid.index(classes)], classes[:, list(grid.varying)]
