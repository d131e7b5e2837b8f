"""Progress bars: tqdm on a terminal, or any tqdm-like factory (Ray's `tqdm_ray` inside a
trial, so that the driver draws one bar per worker instead of relaying every redraw)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from tqdm.auto import tqdm

# bar(iterable, desc=..., unit=...) -> an iterable over the same items that shows progress
Bar = Callable[..., Iterable[Any]]


def bar_for(progress: bool | Bar) -> Bar:
    """A factory: `progress` itself if it is one, else tqdm (hidden when progress is False)."""
    if callable(progress):
        return progress
    return functools.partial(tqdm, disable=not progress, leave=False)
