"""The data sets a run trains on (the `Dataset` protocol): dSprites (factor grid, real and
procedural images, the shared packed-bit cache), lines and MNIST; `open_dataset` opens the
one a config names."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from raywae.data.dataset import Dataset, Table
from raywae.data.dsprites import (
    ChecksumError,
    DataError,
    DSprites,
    ProceduralDataWarning,
    data_dir,
    load_dsprites,
)
from raywae.data.grid import FactorGrid
from raywae.data.imageset import ImageSet, lines_set, mnist_set

if TYPE_CHECKING:
    from raywae.config import DataConfig  # config imports raywae.data.grid

__all__ = [
    "ChecksumError",
    "DSprites",
    "DataError",
    "Dataset",
    "FactorGrid",
    "ImageSet",
    "ProceduralDataWarning",
    "Table",
    "data_dir",
    "load_dsprites",
    "open_dataset",
]


def open_dataset(data: DataConfig, quiet: bool = False) -> Dataset:
    """The dSprites table a config trains on (opened from the shared per-node cache), or the
    lines / MNIST ImageSet. quiet: no ProceduralDataWarning (a sweep's driver has already
    warned, once)."""
    if data.dataset == "lines":
        return lines_set(fresh=data.lines_train == "fresh")
    if data.dataset == "mnist":
        return mnist_set(Path(data.path) if data.path else None)
    grid = FactorGrid.dsprites()
    if data.subgrid:
        grid = grid.subgrid(data.subgrid)
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore", ProceduralDataWarning)
        return load_dsprites(data.source, data.path, grid)
