"""Small image datasets held in memory (lines, MNIST): float pixels in [0, 1], flattened.

The Trainer reads them like the dSprites table: one (N, P) table, train rows first. They
have no factor grid (no disentanglement metrics).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raywae.data.dataset import Table
from raywae.data.lines import (
    LINE_SIDE,
    LINES_TEST,
    LINES_TRAIN,
    draw_angles,
    line_labels,
    lines_split,
    render_lines,
)
from raywae.data.mnist import load_mnist

MNIST_PAD = 2  # 28×28 digits centred on a 32×32 canvas, as the ACAI paper's mnist32


@dataclass(frozen=True)
class ImageSet:
    """train: (n_train, side²) float32, test: (n_test, side²) float32, pixels in [0, 1].

    test_angles: the lines benchmark's test angles (None for other datasets).
    fresh: U[0, 1) draws (k,) -> (k, side²) float32 training images: a procedural training
    distribution, each batch drawn fresh (the lines benchmark's default) instead of rows of
    `train`.
    train_labels, test_labels: (n_train,), (n_test,) int class labels (MNIST: the digit;
    lines: the paper's 10 angle classes of the fixed train and the test lines), or None:
    what metric/probe_accuracy classifies."""

    name: str
    side: int
    train: np.ndarray
    test: np.ndarray
    test_angles: np.ndarray | None = None
    fresh: Callable[[np.ndarray], np.ndarray] | None = None
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    grid = None  # no ground-truth factor grid

    def table(self) -> np.ndarray:
        """(n_train + n_test, side²): train rows, then test rows."""
        return np.concatenate([self.train, self.test])

    def training_table(self) -> Table:
        """table(), its train rows then its test rows."""
        n = len(self.train)
        test = np.arange(n, n + len(self.test))
        return Table(self.table(), np.arange(n), test, packed=False, fresh=self.fresh)

    def shown_images(self, k: int) -> np.ndarray:
        """The first k test images: (k, side, side) float32."""
        return self.images(np.arange(k))

    def interpolation_pairs(self, k: int) -> np.ndarray:
        """(2, k, side, side): test images 0..k−1 paired with k..2k−1 (fixed for every run; k
        shrinks to half the test split when that is smaller)."""
        k = min(k, len(self.test) // 2)
        return self.images(np.arange(2 * k)).reshape(2, k, self.side, self.side)

    def images(self, index: np.ndarray) -> np.ndarray:
        """Test images by index: (k, side, side) float32 in [0, 1]."""
        return self.test[np.asarray(index)].reshape(-1, self.side, self.side)

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of the float32 pixels, train then test (a resumed sweep checks it)."""
        h = hashlib.sha256(np.ascontiguousarray(self.train).data)
        h.update(np.ascontiguousarray(self.test).data)
        return h.hexdigest()

    def provenance(self) -> dict[str, str]:
        """What a run logs about its data (the keys of DSprites.provenance)."""
        return {
            "data/source": self.name,
            "data/fingerprint": self.fingerprint,
            "data/origin": self.name,
            "data/grid": f"{self.described_train} train, {len(self.test)} test, "
            f"{self.side}x{self.side}",
        }

    @property
    def described_train(self) -> str:
        return "fresh per batch" if self.fresh else str(len(self.train))


def line_pixels(angles: np.ndarray) -> np.ndarray:
    """(k,) angles -> (k, 1024) float32 in [0, 1]: the lines' [−1, 1] pixels as (v + 1) / 2
    (rendered in chunks: the float64 temporaries stay small)."""
    chunks = [render_lines(angles[i : i + 4096]) for i in range(0, len(angles), 4096)]
    images = np.concatenate(chunks) if chunks else render_lines(angles)
    return ((images + 1.0) / 2.0).reshape(len(angles), -1).astype(np.float32)


def fresh_lines(u: np.ndarray) -> np.ndarray:
    """U[0, 1) draws (k,) -> k fresh training lines at θ = 2π·u, (k, 1024) in [0, 1]."""
    return line_pixels(draw_angles(u))


@functools.cache
def lines_set(n_train: int = LINES_TRAIN, n_test: int = LINES_TEST, fresh: bool = True) -> ImageSet:
    """The lines benchmark (PROTOCOL §9), its [−1, 1] pixels mapped to [0, 1]: the seeded
    test lines, the fixed train set and (fresh) each training batch drawn anew, as the
    paper trains (smaller sizes for tests); labels: the paper's angle classes (the probe
    trains on the fixed set's codes)."""
    train, test = lines_split(n_train, n_test)
    return ImageSet(
        "lines", LINE_SIDE, line_pixels(train), line_pixels(test), test,
        fresh_lines if fresh else None, line_labels(train), line_labels(test),
    )  # fmt: skip


def mnist_set(directory: Path | None = None) -> ImageSet:
    """MNIST, 28×28 padded to 32×32, pixels /255 (the IDX files under `directory`)."""
    arrays = load_mnist(directory)

    def flat(images: np.ndarray) -> np.ndarray:
        x = np.pad(images, ((0, 0), (MNIST_PAD,) * 2, (MNIST_PAD,) * 2)).astype(np.float32)
        return (x / 255.0).reshape(len(images), -1)

    side = 28 + 2 * MNIST_PAD
    train, test = flat(arrays["train_images"]), flat(arrays["test_images"])
    labels = {k: arrays[k].astype(np.int64) for k in ("train_labels", "test_labels")}
    return ImageSet("mnist", side, train, test, **labels)
