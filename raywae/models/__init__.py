"""Networks, posteriors / priors and objectives (PROTOCOL §3, §4, §9)."""

from raywae.models.networks import ARCHS, AutoEncoder, build_model
from raywae.models.objectives import (
    Loss,
    Objective,
    build_objective,
    mmd2_imq,
    recon_bce,
    w2_squared_to_std_normal,
)
from raywae.models.posteriors import POSTERIORS, PRIORS

__all__ = [
    "ARCHS",
    "POSTERIORS",
    "PRIORS",
    "AutoEncoder",
    "Loss",
    "Objective",
    "build_model",
    "build_objective",
    "mmd2_imq",
    "recon_bce",
    "w2_squared_to_std_normal",
]
