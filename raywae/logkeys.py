"""The log keys a run reports (README "What a trial reports") and when: during training (every
report window) and / or at the end, from its config alone (a sweep's `search.metric` is
checked against them before anything starts, a scheduler's against those reported during
training); and the one shape of a trial's report (`trial_report`, `split_report`).

A trial trains R >= 1 models; every report is {"step", "members": {"<i>": model i's logs,
with its "seed"}, "done"?, context...}. A model that diverged has FAILED (its reason) in its
logs. At the top level, where Optuna and the schedulers read them: with R = 1 the model's
logs, with R > 1 the setting's aggregate over its models (`setting_aggregate`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from raywae import families
from raywae.config import Config

STEP, DONE, MEMBERS = "step", "done", "members"
# After a PBT exploit, the first report's: the trial whose checkpoint this trial continued
# from, and that checkpoint's step.
EXPLOITED, RESTORED_STEP = "exploited_from", "restored_step"
DURING, END = "during", "end"  # when a key is reported: every report window, the final report
LOGGED = ("train/", "test/", "metric/", "proxy/", "time/", "hparam/")  # the figures of a run
# The score a setting's models are ranked by in its aggregate (the paper's: the 5-factor
# Higgins score), the final one when there, else its proxy.
RANK_BY = ("metric/beta_vae_5", "proxy/beta_vae_5")
FAILED = "raywae_failed"  # a model's report key: it ended on a deterministic failure
# metric/<key> on lines (raywae.metrics.interpolation)
INTERPOLATION = ("interp_mean_distance", "interp_smoothness", "interp_smoothness_strict")
GT_INTERPOLATION = ("gt_interp_distance", "gt_interp_monotone")  # metric/<key> on dSprites
PROBE = "metric/probe_accuracy"
LABELLED = ("dsprites", "mnist", "lines")  # datasets with class labels (the probe)
# metric/<key> of each extra metric (raywae.metrics.report: a key named as its metric stands
# alone, the others under the metric's name).
EXTRA = {
    "mig": ("mig",),
    "sap": ("sap",),
    **{
        name: tuple(
            f"{name}/{k}"
            for k in (
                "disentanglement",
                "completeness",
                "informativeness_train",
                "informativeness_test",
            )
        )
        for name in ("dci", "dci_exact")
    },
    "factor_vae": tuple(
        f"factor_vae/{k}" for k in ("train_accuracy", "eval_accuracy", "num_active_dims")
    ),
}


def reported(cfg: Config) -> set[str]:
    """Every train/, test/, proxy/, metric/ and time/ key a run of `cfg` reports."""
    return set(schedule(cfg))


def schedule(cfg: Config) -> dict[str, frozenset[str]]:
    """Every key of reported(cfg) -> when it is reported
    (DURING: at every report window before the end; END: in the final report)."""
    both, during, end = frozenset((DURING, END)), frozenset((DURING,)), frozenset((END,))
    proxies = cfg.metrics.every > 0
    terms = (*families.terms(cfg.objective.name, cfg.objective.acai), "lr")
    keys = {f"train/{t}": both for t in terms} | {"time/imgs_per_s": both}
    keys |= {f"test/{k}": end for k in ("recon", "recon_mean")} | {"time/final_eval_s": end}
    keys |= {f"proxy/{k}": both if proxies else during for k in ("recon", "recon_mean")}
    keys |= {PROBE: end} if cfg.data.dataset in LABELLED else {}
    if cfg.data.dataset != "dsprites":  # no factor grid: no disentanglement metrics
        lines = cfg.data.dataset == "lines"  # (its interpolation metrics at every window)
        return keys | ({f"metric/{k}": both for k in INTERPOLATION} if lines else {})
    if proxies:
        keys |= {f"proxy/beta_vae_{k}": both for k in (4, 5)} | {"time/proxy_s": during}
    for factors in (4, 5):
        base = f"metric/beta_vae_{factors}"
        keys |= {base: end, f"{base}/eval": end}
        keys |= {f"{base}{e}/run{i}": end for e in ("", "/eval") for i in range(cfg.metrics.runs)}
    keys |= {f"metric/{k}": end for k in GT_INTERPOLATION}
    return keys | {f"metric/{k}": end for name in cfg.metrics.extra for k in EXTRA[name]}


def during_training(cfg: Config) -> set[str]:
    """The keys a run of `cfg` reports before its end (what a scheduler can act on)."""
    return {k for k, when in schedule(cfg).items() if DURING in when}


def trial_report(
    step: int, members: dict[int, dict[str, Any]], seeds: list[int], **extra: Any
) -> dict[str, Any]:
    """A trial's report: `members` (model index -> its logs) under MEMBERS with each model's
    seed (seeds: every model's, by index), `extra` (done, context) at the top level; at the
    top level too, one model's logs, or a pack's setting_aggregate."""
    out = {STEP: step, MEMBERS: {str(i): {**v, "seed": seeds[i]} for i, v in members.items()}}
    if len(seeds) == 1:
        out |= members.get(0, {})
    else:
        out |= setting_aggregate([v for v in members.values() if FAILED not in v])
    return out | extra


def top_half_mean(
    values: Sequence[Sequence[float]], by: int | None, higher: bool = True
) -> list[float]:
    """The paper's aggregation of one setting's models: values (n, m), one row per model; the
    bottom half by column `by` (higher is better, or lower with higher=False; NaN worst)
    discarded, ceil(n / 2) rows kept (ties: earlier rows), the mean of each column over
    them. by None: the mean over every row."""
    rows = [list(map(float, r)) for r in values]
    if by is not None:
        sign = -1.0 if higher else 1.0
        rows = sorted(rows, key=lambda r: sign * r[by] if math.isfinite(r[by]) else math.inf)
        rows = rows[: math.ceil(len(rows) / 2)]
    return [math.fsum(col) / len(col) for col in zip(*rows)] if rows else []


def setting_aggregate(models: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """One setting's figures from its models' logs (a pack's members), for a scheduler or a
    searcher to read at the trial level: every run figure (LOGGED keys) all of them report,
    aggregated by top_half_mean ranked by RANK_BY (the models' means: the paper ranks its
    seed × metric-run pairs, a finer grain the report does not carry)."""
    if not models:
        return {}
    keys = [
        k
        for k, v in models[0].items()
        if k.startswith(LOGGED) and isinstance(v, int | float) and all(k in m for m in models)
    ]
    by = next((keys.index(k) for k in RANK_BY if k in keys), None)
    return dict(zip(keys, top_half_mean([[m[k] for k in keys] for m in models], by)))


def split_report(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """A trial report -> model index -> that model's logs with the trial's context (the
    top-level keys)."""
    context = {k: v for k, v in report.items() if k != MEMBERS}
    return {int(i): {**context, **v} for i, v in (report.get(MEMBERS) or {}).items()}
