"""The log keys a run reports (README "What a trial reports"), from its config alone (a
sweep's `search.metric` is checked against them before anything starts), and the one shape
of a trial's report (`trial_report`, `split_report`).

A trial trains R >= 1 models; every report is {"step", "members": {"<i>": model i's logs,
with its "seed"}, "done"?, context...}. A model that diverged has FAILED (its reason) in its
logs. With R = 1 the model's logs are also at the top level, where Optuna reads them.
"""

from __future__ import annotations

from typing import Any

from raywae import families
from raywae.config import Config

STEP, DONE, MEMBERS = "step", "done", "members"
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
    """Every train/, test/, metric/ and time/ key a run of `cfg` reports."""
    terms = (*families.terms(cfg.objective.name, cfg.objective.acai), "lr")
    keys = {f"train/{t}" for t in terms} | {"time/imgs_per_s", "time/final_eval_s"}
    keys |= {f"test/{k}{s}" for k in ("recon", "recon_mean") for s in ("", "_5k")}
    keys |= {PROBE} if cfg.data.dataset in LABELLED else set()
    if cfg.data.dataset != "dsprites":  # no factor grid: no disentanglement metrics
        return keys | (
            {f"metric/{k}" for k in INTERPOLATION} if cfg.data.dataset == "lines" else set()
        )
    for factors in (4, 5):
        base = f"metric/beta_vae_{factors}"
        keys |= {base, f"{base}/eval"}
        keys |= {f"{base}{e}/run{i}" for e in ("", "/eval") for i in range(cfg.metrics.runs)}
    keys |= {f"metric/{k}" for k in GT_INTERPOLATION}
    return keys | {f"metric/{k}" for name in cfg.metrics.extra for k in EXTRA[name]}


def trial_report(
    step: int, members: dict[int, dict[str, Any]], seeds: list[int], **extra: Any
) -> dict[str, Any]:
    """A trial's report: `members` (model index -> its logs) under MEMBERS with each model's
    seed (seeds: every model's, by index), `extra` (done, context) at the top level; one
    model's logs also at the top level."""
    out = {STEP: step, MEMBERS: {str(i): {**v, "seed": seeds[i]} for i, v in members.items()}}
    if len(seeds) == 1:
        out |= members.get(0, {})
    return out | extra


def split_report(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """A trial report -> model index -> that model's logs with the trial's context (the
    top-level keys)."""
    context = {k: v for k, v in report.items() if k != MEMBERS}
    return {int(i): {**context, **v} for i, v in (report.get(MEMBERS) or {}).items()}
