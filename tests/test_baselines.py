"""The field's baselines' terms (PROTOCOL §10, disentanglement_lib's definitions) against
closed forms and independent computations on fixed tensors: β-TCVAE's total correlation,
DIP-VAE's covariance penalties, AnnealedVAE's capacity, FactorVAE's shuffle, TC estimate and
discriminator loss. (Every family also trains solo and packed in tests/test_families.py and
keeps the objective contract in tests/test_objectives.py.)"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from raywae.config import ConfigError, compose, from_dict
from raywae.families import DISCRIMINATOR, FAMILIES
from raywae.models import build_model, build_objective
from raywae.models.objectives import (
    Discriminator,
    Step,
    capacity,
    covariance,
    dip_penalties,
    shuffle_dims,
    total_correlation,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- β-TCVAE ----------------------------------------------------------------------------------
def test_total_correlation_is_the_definition():
    """The vectorised estimate equals the definition written as loops, in float64."""
    n, d = 6, 3
    z, mu = torch.randn(n, d, generator=gen(0)), torch.randn(n, d, generator=gen(1))
    logvar = torch.randn(n, d, generator=gen(2)) * 0.5

    def log_q(j: int, i: int, k: int) -> float:  # log N(z_jk; μ_ik, e^logvar_ik)
        var = math.exp(float(logvar[i, k]))
        return -0.5 * ((float(z[j, k]) - float(mu[i, k])) ** 2 / var + math.log(2 * math.pi * var))

    def lse(xs: list[float]) -> float:
        top = max(xs)
        return top + math.log(sum(math.exp(x - top) for x in xs))

    loops = np.mean(
        [
            lse([sum(log_q(j, i, k) for k in range(d)) for i in range(n)])
            - sum(lse([log_q(j, i, k) for i in range(n)]) for k in range(d))
            for j in range(n)
        ]
    )
    assert float(total_correlation(z, mu, logvar)) == pytest.approx(loops, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_total_correlation_of_independent_and_duplicated_codes(seed):
    """Plus (d − 1)·log n the estimate is the batch's kernel estimate of TC(q(z)): ≈ 0 for
    independent dims, and for a duplicated dim the closed form of the aggregate posterior,
    z_l = m + σ·ε_l with m ~ N(0, 1): TC = −½ log(1 − ρ²), ρ = 1 / (1 + σ²)."""
    n, sigma = 2000, 0.3
    logvar = torch.full((n, 2), math.log(sigma**2))
    mu = torch.randn(n, 2, generator=gen(seed))
    z = mu + sigma * torch.randn(n, 2, generator=gen(seed + 10))
    assert abs(float(total_correlation(z, mu, logvar)) + math.log(n)) < 0.05
    dup = mu[:, :1].expand(n, 2)
    z = dup + sigma * torch.randn(n, 2, generator=gen(seed + 20))
    rho = 1 / (1 + sigma**2)
    expected = -0.5 * math.log(1 - rho**2)  # 0.92
    assert float(total_correlation(z, dup, logvar)) + math.log(n) == pytest.approx(
        expected, abs=0.06
    )


# --- DIP-VAE ----------------------------------------------------------------------------------
def test_covariance_and_dip_penalties():
    mu = torch.randn(50, 4, generator=gen(3), dtype=torch.float64)
    cov = covariance(mu)
    assert torch.allclose(cov, torch.from_numpy(np.cov(mu.numpy().T, bias=True)))
    od, d = dip_penalties(cov)
    c = cov.numpy()
    assert float(od) == pytest.approx(
        sum(c[i, j] ** 2 for i, j in itertools.permutations(range(4), 2))
    )
    assert float(d) == pytest.approx(sum((c[i, i] - 1) ** 2 for i in range(4)))
    # codes whose covariance is the identity: both penalties vanish
    q, _ = torch.linalg.qr(torch.randn(64, 3, generator=gen(4), dtype=torch.float64))
    q, _ = torch.linalg.qr(q - q.mean(0))  # orthonormal, centred columns
    assert torch.allclose(covariance(q * 8.0), torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert all(float(p) < 1e-20 for p in dip_penalties(covariance(q * 8.0)))


def dip_config(dip_type: str, **keys: float) -> object:
    objective = {"name": "dip_vae", "dip_type": dip_type, "lambda_od": 2.0, **keys}
    return from_dict({"model": {"hidden": 16, "latent_dim": 3}, "objective": objective})


@pytest.mark.parametrize(("dip_type", "factor"), [("i", 10.0), ("ii", 1.0)])
def test_dip_regulariser_weights_and_type(dip_type, factor):
    """KL + λ_od·Σ off² + λ_d·Σ (diag − 1)², λ_d = lambda_d_factor·λ_od (10 for i, 1 for ii
    by default); type ii adds the mean encoder variance to the diagonal: a covariance of the
    means of ½·I and variances ½ is the identity, no penalty."""
    cfg = dip_config(dip_type)
    assert cfg.objective.family.lambda_d == factor * 2.0
    assert dip_config(dip_type, lambda_d_factor=3.0).objective.family.lambda_d == 6.0
    model = build_model(cfg.model)
    term = build_objective(cfg, model).own
    q, _ = torch.linalg.qr(torch.randn(64, 3, generator=gen(5), dtype=torch.float64))
    q, _ = torch.linalg.qr(q - q.mean(0))
    mu = (q * 8.0 * math.sqrt(0.5)).float()  # covariance ½·I
    s = torch.full_like(mu, math.log(0.5))
    step = Step(model, None, mu, s, mu, None, {})
    reg, terms, _ = term(step)
    kl = model.posterior.kl_std_normal(mu, s).mean()
    if dip_type == "ii":
        assert float(terms["dip_od"]) < 1e-10 and float(terms["dip_d"]) < 1e-10
    else:  # C = ½·I: Σ (½ − 1)² = 3/4 on the diagonal
        assert float(terms["dip_d"]) == pytest.approx(0.75, rel=1e-5)
    expected = kl + 2.0 * terms["dip_od"] + factor * 2.0 * terms["dip_d"]
    assert float(reg) == pytest.approx(float(expected), rel=1e-6)


# --- AnnealedVAE ------------------------------------------------------------------------------
def test_capacity_rises_linearly_then_holds():
    steps = torch.tensor([0.0, 50_000.0, 100_000.0, 250_000.0])
    assert capacity(steps, 25.0, 100_000).tolist() == [0.0, 12.5, 25.0, 25.0]


@pytest.mark.parametrize(("scale", "threshold"), [(False, 100_000), (True, 1_000)])
def test_annealed_objective_reads_the_training_step(scale, threshold):
    """γ·|KL − C(t)| with t the step the trainer hands over; scale_threshold shrinks the
    threshold with train.steps (3,000 of the study's 300,000 here)."""
    cfg = from_dict(
        {
            "model": {"hidden": 16, "latent_dim": 3},
            "objective": {"name": "annealed_vae", "c_max": 10.0, "scale_threshold": scale},
            "train": {"steps": 3000},
        }
    )
    model = build_model(cfg.model)
    objective = build_objective(cfg, model)
    x = (torch.rand(8, 4096, generator=gen(6)) < 0.2).float()
    draws = objective.draws(x, gen(7))
    for t in (0, 500, 5000):
        out = objective.loss(model, x, draws | {"step": torch.tensor(float(t))})
        c = min(10.0, 10.0 * t / threshold)
        assert float(out.terms["capacity"]) == pytest.approx(c)
        reg = (out.total - out.terms["recon"]).detach()
        assert float(reg) == pytest.approx(1000 * abs(float(out.terms["kl"]) - c), rel=1e-5)


# --- FactorVAE --------------------------------------------------------------------------------
def test_shuffle_permutes_each_dim_on_its_own():
    z = torch.arange(40.0).view(10, 4)  # column l holds 4k + l
    side = Discriminator(DISCRIMINATOR, 1e-4, 4)
    perm = side.draws({"z": z}, gen(8))["perm"]
    shuffled = shuffle_dims(z, perm)
    for col in range(4):  # each column keeps its values, reordered
        assert sorted(shuffled[:, col].tolist()) == z[:, col].tolist()
    assert len({tuple(perm[:, col].tolist()) for col in range(4)}) == 4  # independently


def test_discriminator_loss_tc_term_and_init():
    cfg = from_dict(
        {
            "model": {"hidden": 16, "latent_dim": 4},
            "objective": {"name": "factor_vae", "gamma": 7.0},
        }
    )
    model = build_model(cfg.model)
    objective = build_objective(cfg, model)
    disc = objective.own.disc
    assert disc.adam() == {"lr": 1e-4, "betas": (0.5, 0.9), "eps": 1e-8}
    linears = [m for m in disc.net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [1000] * 6 + [2]
    for m in linears:  # TensorFlow's default: Glorot-uniform, zero biases
        bound = math.sqrt(6 / (m.in_features + m.out_features))
        assert m.weight.abs().max() <= bound and not m.bias.any()
    x = (torch.rand(16, 4096, generator=gen(9)) < 0.2).float()
    out = objective(model, x, gen(10))
    z = out.side["disc"]["z"]
    with torch.no_grad():
        logits = disc.net(z)
        assert float(out.terms["tc"]) == pytest.approx(
            float((logits[:, 0] - logits[:, 1]).mean()), rel=1e-5
        )
        kl = float(out.terms["kl"])
        reg = float(out.total - out.terms["recon"])
        assert reg == pytest.approx(
            kl + 7.0 * float(out.terms["tc"]), abs=1e-3
        )  # f32 total − recon
        draws = disc.draws({"z": z}, gen(11))
        p = logits.softmax(1).clamp(1e-6, 1 - 1e-6)
        q = disc.net(shuffle_dims(z, draws["perm"])).softmax(1).clamp(1e-6, 1 - 1e-6)
        expected = -(0.5 * p[:, 0].log().mean() + 0.5 * q[:, 1].log().mean())
        assert float(disc.loss({"z": z}, draws)) == pytest.approx(float(expected), rel=1e-6)


# --- the rows ---------------------------------------------------------------------------------
def test_study_families_and_their_keys():
    assert FAMILIES["dip_vae_i"].preset["objective.dip_type"] == "i"
    assert FAMILIES["dip_vae_ii"].preset["objective.dip_type"] == "ii"
    base = {"model": {"hidden": 16, "latent_dim": 3}}
    for name in ("annealed_vae", "factor_vae", "dip_vae_i", "dip_vae_ii", "beta_tc_vae"):
        cfg = compose(base, FAMILIES[name].preset)
        assert cfg.objective.name == FAMILIES[name].regulariser
    with pytest.raises(ConfigError, match="objective.dip_type: must be one of"):
        from_dict({"objective": {"name": "dip_vae", "dip_type": "iii"}})
    with pytest.raises(
        ConfigError, match=r"model.posterior: factor_vae needs model.posterior in \['gaussian'\]"
    ):
        from_dict({"objective": {"name": "factor_vae"}, "model": {"posterior": "box"}})
    with pytest.raises(ConfigError, match="objective.gamma: beta_vae does not read it"):
        from_dict({"objective": {"name": "beta_vae", "gamma": 10}})
