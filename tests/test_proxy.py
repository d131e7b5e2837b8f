"""Scores during training: the Higgins proxies (raywae.metrics.proxy) score the true factors
near 100 % and constant codes near chance, and a run reports exactly the keys its schedule
(raywae.logkeys.schedule) says, during training and at the end."""

from __future__ import annotations

import numpy as np

from analysis.smoke import BASE
from raywae.config import MetricsConfig, from_dict, override
from raywae.data import FactorGrid
from raywae.experiment import Experiment
from raywae.logkeys import DURING, END, schedule
from raywae.metrics.proxy import higgins_proxy, proxy_grid


def test_proxy_scores_true_factors_high_and_constant_codes_at_chance(small_grid: FactorGrid):
    metrics = MetricsConfig(every=1)
    grid = proxy_grid(small_grid, metrics)
    assert len(grid) < len(small_grid)
    classes = grid.classes(np.arange(len(grid))).astype(np.float32)
    true = classes / np.maximum(classes.max(0), 1)  # each factor in [0, 1]
    constant = np.zeros((len(grid), 6), np.float32)
    good, flat = higgins_proxy([true, constant], grid, [0, 0], metrics)
    assert good["proxy/beta_vae_4"] > 0.95 and good["proxy/beta_vae_5"] > 0.95
    assert flat["proxy/beta_vae_4"] < 0.25 + 0.06
    assert flat["proxy/beta_vae_5"] < 0.20 + 0.06


def test_run_reports_its_schedule(one_thread: object):
    cfg = override(
        from_dict(BASE),
        {"metrics.every": 10, "metrics.proxy.grid_subsample": {}, "metrics.proxy.steps": 50},
    )
    exp = Experiment(cfg, progress=False)
    windows: list[dict] = []
    last = exp.train(lambda logs: windows.append(logs[0]))
    final = {**last[0], **exp.final()[0]}
    when = schedule(cfg)
    assert len(windows) == 2  # steps 10 and 20; the last window is the final report's
    for logs in windows:
        assert {k for k in logs if "/" in k} == {k for k, w in when.items() if DURING in w}
        assert 0 <= logs["proxy/beta_vae_5"] <= 1 and logs["time/proxy_s"] > 0
    assert {k for k in final if "/" in k} == {k for k, w in when.items() if END in w}
    # The proxies off: none during training, none at the end.
    plain = override(cfg, {"metrics.every": 0})
    assert not any(k.startswith("proxy/beta_vae") for k in schedule(plain))
