"""FactorGrid: the factor bookkeeping of dSprites (PROTOCOL §2).

Names, sizes and latent values of the factors, flat index <-> class vectors (posY fastest),
and the samplers the metrics need. A subgrid keeps every k-th value of some factors and
remembers, for each of its classes, the class it has in the full grid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files

import numpy as np

DSPRITES_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")


@dataclass(frozen=True, eq=False)
class FactorGrid:
    """Full cartesian grid of factors; the flat index varies the last factor fastest.

    values[k]: (sizes[k],) float64 latent values of factor k.
    full_classes[k]: (sizes[k],) int64 class of each value in the full dSprites grid
    (identity for the full grid), so a subgrid can pick rows of the real file.
    """

    names: tuple[str, ...]
    values: tuple[np.ndarray, ...]
    full_classes: tuple[np.ndarray, ...]

    @classmethod
    def dsprites(cls) -> FactorGrid:
        """The real dSprites grid: 737,280 images, exact latent values of the dataset
        (copied from the file's `latents_values`; orientation includes both 0 and 2π)."""
        spec = json.loads((files("raywae.data") / "dsprites_latents.json").read_text())
        values = tuple(np.array(spec["values"][name], dtype=np.float64) for name in DSPRITES_NAMES)
        full = tuple(np.arange(len(v), dtype=np.int64) for v in values)
        return cls(DSPRITES_NAMES, values, full)

    # --- shape of the grid -------------------------------------------------------------
    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.values)

    @property
    def bases(self) -> tuple[int, ...]:
        """Flat-index weight of each factor: (737280, 245760, 40960, 1024, 32, 1) for dSprites."""
        out, acc = [], 1
        for size in reversed(self.sizes):
            out.append(acc)
            acc *= size
        return tuple(reversed(out))

    def __len__(self) -> int:
        return int(np.prod(self.sizes))

    def factor(self, name: str) -> int:
        """Position of a factor by name; a clear error for an unknown one."""
        if name not in self.names:
            raise KeyError(f"unknown factor {name!r}; factors are {list(self.names)}")
        return self.names.index(name)

    @property
    def varying(self) -> tuple[int, ...]:
        """Factors with more than one value (dSprites: all but color)."""
        return tuple(k for k, s in enumerate(self.sizes) if s > 1)

    # --- index <-> classes ---------------------------------------------------------------
    def index(self, classes: np.ndarray) -> np.ndarray:
        """classes: (n, F) int -> (n,) int64 flat index."""
        classes = np.asarray(classes, dtype=np.int64)
        if classes.ndim != 2 or classes.shape[1] != len(self.names):
            raise ValueError(f"classes must be (n, {len(self.names)}), got {classes.shape}")
        if (classes < 0).any() or (classes >= np.array(self.sizes)).any():
            raise ValueError("a class is outside its factor's range")
        return classes @ np.array(self.bases, dtype=np.int64)

    def classes(self, index: np.ndarray) -> np.ndarray:
        """index: (n,) int -> (n, F) int64 class vectors."""
        index = np.asarray(index, dtype=np.int64)
        if (index < 0).any() or (index >= len(self)).any():
            raise IndexError(f"flat index outside [0, {len(self)})")
        sizes = np.array(self.sizes, dtype=np.int64)
        bases = np.array(self.bases, dtype=np.int64)
        return (index[:, None] // bases) % sizes

    def latent_values(self, classes: np.ndarray) -> np.ndarray:
        """classes: (n, F) int -> (n, F) float64 latent values."""
        return np.stack([self.values[k][classes[:, k]] for k in range(len(self.names))], axis=1)

    def to_full_classes(self, classes: np.ndarray) -> np.ndarray:
        """classes in this grid: (n, F) -> the same images' classes in the full dSprites grid."""
        return np.stack([self.full_classes[k][classes[:, k]] for k in range(len(self.names))], 1)

    # --- samplers (the metrics draw from these) ------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, F) int64 class vectors, every factor uniform over its values."""
        return np.stack([rng.integers(0, s, size=n) for s in self.sizes], axis=1)

    def sample_pairs(
        self, n: int, factor: int | np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """n pairs of class vectors (each (n, F)) that share `factor` (one per pair or one for all).

        The shared value is drawn afresh for each pair (Higgins et al. 2017); every other
        factor is uniform and independent between the two members.
        """
        first, second = self.sample(n, rng), self.sample(n, rng)
        factor = np.broadcast_to(np.asarray(factor, dtype=np.int64), (n,))
        rows = np.arange(n)
        second[rows, factor] = first[rows, factor]
        return first, second

    # --- smaller grids for tests ------------------------------------------------------------
    def subgrid(self, step: Mapping[str, int] | None = None, **steps: int) -> FactorGrid:
        """Every k-th value of the named factors, e.g. `grid.subgrid(orientation=4, posX=4)`."""
        steps = {**(step or {}), **steps}
        for name in steps:
            self.factor(name)
        keep = [np.arange(0, s, steps.get(n, 1)) for n, s in zip(self.names, self.sizes)]
        return FactorGrid(
            self.names,
            tuple(v[k] for v, k in zip(self.values, keep)),
            tuple(f[k] for f, k in zip(self.full_classes, keep)),
        )

    def factors_named(self, names: Sequence[str]) -> tuple[int, ...]:
        return tuple(self.factor(n) for n in names)

    def describe(self) -> str:
        return " x ".join(f"{n}={s}" for n, s in zip(self.names, self.sizes))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FactorGrid):
            return NotImplemented
        return self.names == other.names and all(
            np.array_equal(a, b) for a, b in zip(self.full_classes, other.full_classes)
        )

    def __hash__(self) -> int:
        return hash((self.names, tuple(tuple(f.tolist()) for f in self.full_classes)))
