"""What every dataset gives the trainer and the experiment (the `Dataset` protocol), and the
image table it trains on."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

if TYPE_CHECKING:
    from raywae.data.grid import FactorGrid


class Table(NamedTuple):
    """rows: dSprites' packed bits (N, 512) uint8 (packed) or float pixels (N, P) in [0, 1];
    train, test: the split's row indices. fresh: U[0, 1) draws (k,) -> (k, P) float32
    training images, when training batches are drawn fresh from a procedural distribution
    (lines) instead of from the train rows."""

    rows: np.ndarray
    train: np.ndarray
    test: np.ndarray
    packed: bool
    fresh: Callable[[np.ndarray], np.ndarray] | None = None


class Dataset(Protocol):
    """A data set a run trains on: DSprites (raywae.data.dsprites) or ImageSet (imageset)."""

    name: str  # "dsprites", "lines", "mnist"
    grid: FactorGrid | None  # the ground-truth factor grid; None: no disentanglement metrics
    # class labels of the train / test rows of training_table() (MNIST's digits, the lines'
    # angle classes), or None
    train_labels: np.ndarray | None
    test_labels: np.ndarray | None

    def training_table(self) -> Table: ...

    def shown_images(self, k: int) -> np.ndarray:
        """The k test images every run shows (reconstructions.png, Figure 2)."""
        ...

    def interpolation_pairs(self, k: int) -> np.ndarray | None:
        """(2, k, side, side) test images to interpolate between, or None."""
        ...

    def provenance(self) -> dict[str, str]: ...
