"""The model families, one row each: the objective a family trains, the train/ terms it
reports, the side networks it trains with their own optimizers, whether it packs, and the
settings an arm of that family starts from (PROTOCOL §3-§4, §9). Imports no torch.

Adding a family is one objective class (raywae.models.objectives) plus one row here; the
config check, the log keys, the search-space presets, the packing rule and analysis' family
order all read this table. The ACAI regulariser composes with every objective
(`objective.acai > 0`) and has a row of its own (`ACAI`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SideNet:
    """A network an objective trains with its own Adam at a constant step size: `name`
    (its optimizer's checkpoint key is `<name>_optimizer`), `term` (its loss, train/<term>),
    `lr_key` (the ObjectiveConfig field of its step size)."""

    name: str
    term: str
    lr_key: str


@dataclass(frozen=True)
class Family:
    """objective: objective.name; terms: its train/<term> beside loss, recon and logscale_lp
    (a side network's term included); sides: its side networks; packs: whether the seeds of
    one setting can train as one pack; preset: an arm's starting settings (dotted keys)."""

    objective: str
    terms: tuple[str, ...] = ()
    sides: tuple[SideNet, ...] = ()
    packs: bool = True
    preset: dict[str, Any] = field(default_factory=dict)


GAUSSIAN = {"model.posterior": "gaussian", "model.prior": "gaussian"}
ADVERSARY = SideNet("adv", "adv_d", "adv_lr")
CRITIC = SideNet("critic", "acai_critic", "critic_lr")

# In analysis' order (legends, tables).
FAMILIES: dict[str, Family] = {
    "beta_vae": Family("beta_vae", ("kl",), preset={"objective.name": "beta_vae", **GAUSSIAN}),
    "wae_gaussian": Family("wae_mmd", ("mmd",), preset={"objective.name": "wae_mmd", **GAUSSIAN}),
    "wae_box": Family(
        "wae_mmd",
        ("mmd",),
        preset={"objective.name": "wae_mmd", "model.posterior": "box", "model.prior": "uniform"},
    ),
    "wae_gan": Family(
        "wae_gan",
        ("adv", ADVERSARY.term),
        (ADVERSARY,),
        preset={"objective.name": "wae_gan", **GAUSSIAN},
    ),
    "wwae": Family("wwae", ("w2",), preset={"objective.name": "wwae", **GAUSSIAN}),
    "ae": Family("ae", preset={"objective.name": "ae"}),
}
# The ACAI regulariser (objective.acai > 0) on top of any family: its term and critic.
ACAI = Family("acai", ("acai", CRITIC.term), (CRITIC,))

BY_OBJECTIVE: dict[str, Family] = {}  # objective.name -> its (first) family row
for _family in FAMILIES.values():
    BY_OBJECTIVE.setdefault(_family.objective, _family)


def rows(objective: str, acai: float) -> tuple[Family, ...]:
    """The rows a run of objective `objective` with objective.acai = `acai` trains by."""
    return (BY_OBJECTIVE[objective], ACAI) if acai > 0 else (BY_OBJECTIVE[objective],)


def terms(objective: str, acai: float) -> tuple[str, ...]:
    """Every train/<term> such a run reports, train/lr aside."""
    return ("loss", "recon", "logscale_lp", *(t for r in rows(objective, acai) for t in r.terms))


def unpackable(objective: str, acai: float) -> str | None:
    """Why the seeds of such a setting cannot train as one pack, or None when they can."""
    for row in rows(objective, acai):
        if not row.packs:
            return f"{row.objective} does not pack"
    return None
