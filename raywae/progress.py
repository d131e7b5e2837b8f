"""Progress bars: tqdm on a terminal, or any tqdm-like factory (Ray's `tqdm_ray` inside a
trial, so that the driver draws one bar per worker instead of relaying every redraw)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sized
from typing import Any

from tqdm.auto import tqdm

# bar(iterable, desc=..., unit=...) -> an iterable over the same items that shows progress
Bar = Callable[..., Iterable[Any]]
# A factory's bar (one more line in a cluster's log) only for loops at least this long.
FACTORY_MIN_STEPS = 20


def _silent(iterable: Iterable[Any], **_: Any) -> Iterable[Any]:
    return iterable


def bar_for(progress: bool | Bar, steps: Sized) -> Bar:
    """The bar for a loop over `steps`: `progress` itself if it is a factory (for loops of
    FACTORY_MIN_STEPS or more), else tqdm, hidden when progress is False."""
    if callable(progress):
        return progress if len(steps) >= FACTORY_MIN_STEPS else _silent
    return functools.partial(tqdm, disable=not progress, leave=False)
