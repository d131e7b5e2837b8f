"""The log keys a run reports (README "What a trial reports"), from its config alone: a
sweep's `search.metric` is checked against them before anything starts."""

from __future__ import annotations

from raywae.config import Config

# train/<term> of each objective, beside train/loss, train/recon and train/logscale_lp.
TERMS = {
    "beta_vae": ("kl",),
    "wae_mmd": ("mmd",),
    "wae_gan": ("adv", "adv_d"),
    "wwae": ("w2",),
    "ae": (),
}
ACAI_TERMS = ("acai", "acai_critic")  # with objective.acai > 0, whatever the objective
INTERPOLATION = ("interp_mean_distance", "interp_smoothness")  # metric/<key> on lines
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
    terms = ("loss", "recon", "logscale_lp", "lr", *TERMS[cfg.objective.name])
    terms += ACAI_TERMS if cfg.objective.acai > 0 else ()
    keys = {f"train/{t}" for t in terms} | {"time/imgs_per_s", "time/final_eval_s"}
    keys |= {f"test/{k}{s}" for k in ("recon", "recon_mean") for s in ("", "_5k")}
    if cfg.data.dataset != "dsprites":  # no factor grid: no disentanglement metrics
        return keys | (
            {f"metric/{k}" for k in INTERPOLATION} if cfg.data.dataset == "lines" else set()
        )
    for factors in (4, 5):
        base = f"metric/beta_vae_{factors}"
        keys |= {base, f"{base}/eval"}
        keys |= {f"{base}{e}/run{i}" for e in ("", "/eval") for i in range(cfg.metrics.runs)}
    return keys | {f"metric/{k}" for name in cfg.metrics.extra for k in EXTRA[name]}
