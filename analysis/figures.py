"""What every analysis figure shares: one DPI (a size in inches fixes the PNG's pixels), the
order and markers of the model families, matplotlib on its file-only Agg backend, and saving
one figure as .png / .svg.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from raywae.families import FAMILIES

DPI = 100  # fixed, so every PNG has the pixel size its tests (and the README) state
FAMILY_ORDER = tuple(FAMILIES)  # raywae.families' order
MARKERS = "osD^vP*Xh<>p8"


def family_key(family: str) -> tuple[int, str]:
    """Sort key of a family: FAMILY_ORDER's first, in that order, then the rest by name."""
    return (FAMILY_ORDER.index(family) if family in FAMILY_ORDER else 99, family)


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend: the scripts write files and never open a window
    (and must run on a headless node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pixels(width: float, height: float) -> tuple[int, int]:
    """A size in inches -> (width, height) in pixels at DPI."""
    return round(width * DPI), round(height * DPI)


def blank(size: tuple[int, int]) -> Any:
    """An empty Figure of exactly `size` = (width, height) pixels at DPI; its
    get_size_inches() gives the inches to lay it out in."""
    return pyplot().figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)


def save(fig: Any, paths: Sequence[Path]) -> None:
    """Write `fig` to every path at DPI; each suffix picks the format (.png, .svg)."""
    for path in paths:
        fig.savefig(path, dpi=DPI)
