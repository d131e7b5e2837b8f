"""The YAML's distributions of a searched hyperparameter (`{loguniform: [1, 100]}`,
`{uniform: [lo, hi]}`, `{int: [lo, hi]}`, `{choice: [...]}`): an Optuna search's space and a
population scheduler's mutation bounds. Imports neither Ray nor Optuna."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raywae import config as cfgmod
from raywae.config import check

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
Space = dict[str, dict[str, tuple[Any, ...]]]


@dataclass(frozen=True)
class Distribution:
    """One searched hyperparameter: kind in DISTRIBUTIONS; args (low, high) or the choices."""

    kind: str
    args: tuple[Any, ...]


def parse(space: Space, key: str) -> dict[str, Distribution]:
    out = {}
    for k, spec in space.items():
        sub = f"{key}.{k}"
        check(
            len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS,
            sub,
            f"a distribution is one of {list(DISTRIBUTIONS)}: e.g. {{loguniform: [1, 100]}}; "
            f"got {spec!r}",
        )
        kind, args = next(iter(spec.items()))
        check(bool(args), f"{sub}.{kind}", "expected a non-empty list")
        if kind != "choice":
            check(len(args) == 2, f"{sub}.{kind}", f"expected [low, high], got {list(args)}")
            low, high = (cfgmod.coerce(a, float, f"{sub}.{kind}") for a in args)
            check(
                low < high and (kind != "loguniform" or low > 0),
                f"{sub}.{kind}",
                f"need {'0 < ' * (kind == 'loguniform')}low < high, got [{low}, {high}]",
            )
            args = (int(low), int(high)) if kind == "int" else (low, high)
        out[k] = Distribution(kind, tuple(args))
    return out
