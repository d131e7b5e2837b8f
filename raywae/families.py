"""The one registry of objectives and model families (PROTOCOL §3-§4, §9-§10). Imports no
torch.

A `Regulariser` row is what an objective adds to the reconstruction loss: the class that
computes it (raywae.models.objectives, named by path and imported when a model is built), the
`objective.*` keys it reads (its own dataclass: a run validates and logs only those), the
train/<term> it reports, the side networks it trains with their own optimizers, what posterior
and prior it needs, and whether it packs. `REGULARISERS` holds one row per `objective.name`,
and `ACAI`, the regulariser that composes with any of them (`objective.acai > 0`).

A `Family` row is an arm preset: a regulariser and the settings an arm of that family starts
from (dotted keys). Adding a family is one regulariser class plus one row of each; the config
check, the log keys, the search-space presets, the packing rule and analysis' family order
all read these tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from raywae.errors import check


@dataclass(frozen=True)
class Adam:
    """A side network's optimizer: Adam with these betas and eps at a constant step size,
    read from the `objective.<lr_key>` setting of its regulariser."""

    lr_key: str
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass(frozen=True)
class SideNet:
    """A network a regulariser trains beside the auto-encoder, by its own loss and optimizer:
    `name` (its optimizer's checkpoint key is `<name>_optimizer`), `term` (its loss,
    train/<term>), `adam` (its optimizer's settings)."""

    name: str
    term: str
    adam: Adam


def _nonnegative(keys: Any, *names: str) -> None:
    for name in names:
        value = getattr(keys, name)
        check(value >= 0, name, f"must be >= 0, got {value}")


def _positive(keys: Any, *names: str) -> None:
    for name in names:
        value = getattr(keys, name)
        check(value > 0, name, f"must be > 0, got {value}")


# --- each regulariser's own objective.* keys --------------------------------------------------
@dataclass(frozen=True)
class NoKeys:
    """A regulariser without settings (the plain auto-encoder)."""


@dataclass(frozen=True)
class BetaKeys:
    """beta: the weight β of the KL term (β-VAE)."""

    beta: float = 1.0

    def __post_init__(self) -> None:
        _nonnegative(self, "beta")


@dataclass(frozen=True)
class LamKeys:
    """lam: the weight λ of the divergence (400 is the paper's WAE-MMD value; set it for
    wwae)."""

    lam: float = 400.0

    def __post_init__(self) -> None:
        _nonnegative(self, "lam")


@dataclass(frozen=True)
class GanKeys:
    """lam: the weight λ of the adversarial term; adv_lr: the adversary's Adam step size."""

    lam: float = 400.0
    adv_lr: float = 5e-4

    def __post_init__(self) -> None:
        _nonnegative(self, "lam")
        _positive(self, "adv_lr")


@dataclass(frozen=True)
class AcaiKeys:
    """Read when objective.acai > 0: the critic's Adam step size (critic_lr) and the blend
    γ·x + (1−γ)·x̂ it scores 0 (acai_gamma)."""

    acai_gamma: float = 0.2
    critic_lr: float = 1e-4

    def __post_init__(self) -> None:
        _positive(self, "critic_lr")
        check(0 <= self.acai_gamma <= 1, "acai_gamma", f"must lie in [0, 1], got {self.acai_gamma}")


@dataclass(frozen=True)
class FactorKeys:
    """gamma: the weight γ of the discriminator's TC estimate; disc_lr: its Adam step size."""

    gamma: float = 10.0
    disc_lr: float = 1e-4

    def __post_init__(self) -> None:
        _nonnegative(self, "gamma")
        _positive(self, "disc_lr")


@dataclass(frozen=True)
class DipKeys:
    """dip_type: "i" (the covariance of the encoder means) or "ii" (plus the mean encoder
    variance); lambda_od: the weight of its off-diagonal entries; lambda_d_factor: the
    diagonal's weight over lambda_od (None: 10 for type i, 1 for ii, the study's values)."""

    dip_type: Literal["i", "ii"] = "i"
    lambda_od: float = 1.0
    lambda_d_factor: float | None = None

    def __post_init__(self) -> None:
        _nonnegative(self, "lambda_od")
        factor = self.lambda_d_factor
        check(factor is None or factor >= 0, "lambda_d_factor", f"must be >= 0, got {factor}")

    @property
    def lambda_d(self) -> float:
        """The diagonal entries' weight λ_d = lambda_d_factor · λ_od."""
        factor = self.lambda_d_factor
        if factor is None:
            factor = 10.0 if self.dip_type == "i" else 1.0
        return factor * self.lambda_od


@dataclass(frozen=True)
class AnnealKeys:
    """gamma: the weight γ of |KL − C(t)|; c_max: the capacity C reached, linearly, at step
    iteration_threshold; scale_threshold: reach it at iteration_threshold · train.steps /
    300,000 instead (the study's schedule on a shorter budget)."""

    gamma: float = 1000.0
    c_max: float = 25.0
    iteration_threshold: int = 100_000
    scale_threshold: bool = False

    def __post_init__(self) -> None:
        _nonnegative(self, "gamma", "c_max")
        _positive(self, "iteration_threshold")


GAUSSIAN = ("gaussian",)


@dataclass(frozen=True)
class Regulariser:
    """One objective.name: `impl` "module:Class" computes it; `keys` its settings; `terms`
    its train/<term> beside loss, recon and logscale_lp (a side network's term included);
    `sides` its side networks; `posteriors` / `priors` the ones it is defined for (None:
    any); `arch` the network it needs (None: any); `packs` whether the seeds of one setting
    can train as one pack; `source` the paper it implements."""

    name: str
    impl: str
    keys: type = NoKeys
    terms: tuple[str, ...] = ()
    sides: tuple[SideNet, ...] = ()
    posteriors: tuple[str, ...] | None = None
    priors: tuple[str, ...] | None = None
    arch: str | None = None
    packs: bool = True
    source: str = ""

    def key_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.keys))


OBJECTIVES = "raywae.models.objectives"
ADVERSARY = SideNet("adv", "adv_d", Adam("adv_lr"))
CRITIC = SideNet("critic", "acai_critic", Adam("critic_lr"))
DISCRIMINATOR = SideNet("disc", "disc_d", Adam("disc_lr", betas=(0.5, 0.9)))

REGULARISERS: dict[str, Regulariser] = {
    r.name: r
    for r in (
        Regulariser(
            "beta_vae",
            f"{OBJECTIVES}:BetaVAE",
            BetaKeys,
            ("kl",),
            posteriors=("gaussian", "box"),  # KL to a point mass is infinite
            priors=GAUSSIAN,  # KL(q || U[-1,1]^d) is infinite for a Gaussian q
            source="Higgins et al. 2017",
        ),
        Regulariser(
            "wae_mmd", f"{OBJECTIVES}:WAEMMD", LamKeys, ("mmd",), source="Tolstikhin et al. 2018"
        ),
        Regulariser(
            "wae_gan",
            f"{OBJECTIVES}:WAEGAN",
            GanKeys,
            ("adv", ADVERSARY.term),
            (ADVERSARY,),
            source="Tolstikhin et al. 2018",
        ),
        Regulariser(
            "wwae",
            f"{OBJECTIVES}:WWAE",
            LamKeys,
            ("w2",),
            priors=GAUSSIAN,  # W2 here is the closed form to N(0, I)
            source="Rubenstein et al. 2018",
        ),
        Regulariser("ae", f"{OBJECTIVES}:PlainAE", source="(reconstruction only)"),
        # The field's baselines (Locatello et al. 2019), disentanglement_lib's definitions.
        Regulariser(
            "annealed_vae",
            f"{OBJECTIVES}:AnnealedVAE",
            AnnealKeys,
            ("kl", "capacity"),
            posteriors=GAUSSIAN,
            priors=GAUSSIAN,
            source="Burgess et al. 2018",
        ),
        Regulariser(
            "factor_vae",
            f"{OBJECTIVES}:FactorVAE",
            FactorKeys,
            ("kl", "tc", DISCRIMINATOR.term),
            (DISCRIMINATOR,),
            posteriors=GAUSSIAN,
            priors=GAUSSIAN,
            source="Kim & Mnih 2018",
        ),
        Regulariser(
            "dip_vae",
            f"{OBJECTIVES}:DIPVAE",
            DipKeys,
            ("kl", "dip_od", "dip_d"),
            posteriors=GAUSSIAN,
            priors=GAUSSIAN,
            source="Kumar et al. 2018",
        ),
        Regulariser(
            "beta_tc_vae",
            f"{OBJECTIVES}:BetaTCVAE",
            BetaKeys,
            ("kl", "tc"),
            posteriors=GAUSSIAN,
            priors=GAUSSIAN,
            source="Chen et al. 2018",
        ),
    )
}
# The ACAI regulariser (objective.acai > 0) on top of any objective: its term and critic.
ACAI = Regulariser(
    "acai",
    f"{OBJECTIVES}:AcaiTerm",
    AcaiKeys,
    ("acai", CRITIC.term),
    (CRITIC,),
    arch="conv32",
    source="Berthelot et al. 2019",
)


@dataclass(frozen=True)
class Family:
    """An arm preset: `regulariser` (its objective.name) and `preset`, an arm's starting
    settings (dotted keys)."""

    regulariser: str
    preset: dict[str, Any] = field(default_factory=dict)

    @property
    def row(self) -> Regulariser:
        return REGULARISERS[self.regulariser]


GAUSSIAN_MODEL = {"model.posterior": "gaussian", "model.prior": "gaussian"}


def _family(regulariser: str, **preset: Any) -> Family:
    return Family(regulariser, {"objective.name": regulariser, **preset})


# In analysis' order (legends, tables).
FAMILIES: dict[str, Family] = {
    "beta_vae": _family("beta_vae", **GAUSSIAN_MODEL),
    "wae_gaussian": _family("wae_mmd", **GAUSSIAN_MODEL),
    "wae_box": _family("wae_mmd", **{"model.posterior": "box", "model.prior": "uniform"}),
    "wae_gan": _family("wae_gan", **GAUSSIAN_MODEL),
    "wwae": _family("wwae", **GAUSSIAN_MODEL),
    "ae": _family("ae"),
    "annealed_vae": _family("annealed_vae", **GAUSSIAN_MODEL),
    "factor_vae": _family("factor_vae", **GAUSSIAN_MODEL),
    "dip_vae_i": _family("dip_vae", **GAUSSIAN_MODEL, **{"objective.dip_type": "i"}),
    "dip_vae_ii": _family("dip_vae", **GAUSSIAN_MODEL, **{"objective.dip_type": "ii"}),
    "beta_tc_vae": _family("beta_tc_vae", **GAUSSIAN_MODEL),
}


def rows(objective: str, acai: float) -> tuple[Regulariser, ...]:
    """The rows a run of objective `objective` with objective.acai = `acai` trains by."""
    return (REGULARISERS[objective], ACAI) if acai > 0 else (REGULARISERS[objective],)


def terms(objective: str, acai: float) -> tuple[str, ...]:
    """Every train/<term> such a run reports, train/lr aside."""
    return ("loss", "recon", "logscale_lp", *(t for r in rows(objective, acai) for t in r.terms))


def unpackable(objective: str, acai: float) -> str | None:
    """Why the seeds of such a setting cannot train as one pack, or None when they can."""
    for row in rows(objective, acai):
        if not row.packs:
            return f"{row.name} does not pack"
    return None


def readers(key: str) -> list[str]:
    """The objective names whose regulariser reads objective.`key` (ACAI's keys: "acai")."""
    return [r.name for r in (*REGULARISERS.values(), ACAI) if key in r.key_names()]
