"""One smoke test per row of raywae.families: every family trains solo for a few steps, and as
a pack of two seeds where it packs, and reports exactly the keys raywae.logkeys says a run of
that config reports (progress and final). The ACAI regulariser is tried on top of two
objectives, on the lines benchmark its critic is built for."""

from __future__ import annotations

from typing import Any

import pytest

from raywae.config import Config, compose, override
from raywae.data import Dataset
from raywae.data.imageset import lines_set
from raywae.experiment import Experiment
from raywae.families import FAMILIES, REGULARISERS, unpackable
from raywae.logkeys import reported

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = {"steps": 4, "batch_size": 16, "report_every": 2, "device": "cpu"}
METRICS = {"preset": "disentanglement_lib", "runs": 1, "grid_subsample": {"posX": 2, "posY": 2}}
LINES_MODEL = {
    "arch": "conv32",
    "depth": 4,
    "latent_dim": 16,
    "posterior": "deterministic",
    "mean_head": "linear",
    "init": "he",
}


def family_config(name: str) -> Config:
    """A tiny dSprites run of family `name`: its preset over a narrow network."""
    base = {
        "data": {"source": "procedural", "subgrid": {"orientation": 4, "posX": 4, "posY": 4}},
        "model": {"hidden": 32, "latent_dim": 4},
        "objective": {"lam": 10.0, "lp_lambda": 1.0},  # lam where the family reads it
        "train": TRAIN,
        "metrics": METRICS,
    }
    return compose(base, FAMILIES[name].preset)


def acai_config(objective: str) -> Config:
    """A tiny ACAI run (conv32 critic) of `objective` on the lines benchmark."""
    return compose(
        {
            "data": {"dataset": "lines"},
            "model": LINES_MODEL,
            "objective": {"name": objective, "lam": 1.0, "acai": 10.0},
            "train": {**TRAIN, "batch_size": 8},
        },
        {},
    )


def logged_keys(cfgs: list[Config], ds: Dataset | None) -> list[set[str]]:
    """Every key each model's reports carry: its progress reports, then last logs + final."""
    exp = Experiment(cfgs, ds, progress=False)
    keys: list[set[str]] = [set() for _ in cfgs]
    progress: list[Any] = []
    last = exp.train(progress.append)
    assert progress and not exp.trainer.failed  # a progress report came; nothing diverged
    for i, figures in exp.final().items():
        for logs in progress:
            keys[i] |= {k for k in logs[i] if "/" in k}
        keys[i] |= {k for k in {**last[i], **figures} if "/" in k}
    return keys


CASES = [pytest.param(family_config, name, id=name) for name in FAMILIES] + [
    pytest.param(acai_config, objective, id=f"{objective}+acai") for objective in ("ae", "wae_gan")
]


def test_every_regulariser_has_a_family():
    assert {family.regulariser for family in FAMILIES.values()} == set(REGULARISERS)


@pytest.mark.parametrize(("make", "name"), CASES)
def test_family_trains_solo_and_packed_and_reports_its_keys(make, name, small_ds):
    cfg = make(name)
    ds = lines_set(256, 32) if cfg.data.dataset == "lines" else small_ds  # = cfg's subgrid
    (solo,) = logged_keys([cfg], ds)
    assert solo == reported(cfg)
    if unpackable(cfg.objective.name, cfg.objective.acai) is None:
        packed = logged_keys([cfg, override(cfg, {"seed": 1})], ds)
        assert packed == [reported(cfg)] * 2
