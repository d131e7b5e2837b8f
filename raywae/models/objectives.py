"""Training objectives of PROTOCOL §4 and §9: β-VAE, WAE-MMD (IMQ), WAE-GAN, WWAE.

Every loss sums over pixels / latent dims and averages over the batch, so β and λ mean what
they mean in the papers. `OBJECTIVES` maps config names to classes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from raywae.config import ObjectiveConfig
from raywae.models.networks import AutoEncoder

# IMQ kernel scales C / d (PROTOCOL §4).
IMQ_SCALES = (0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 0.8, 1.0, 2.0)


def recon_bce(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli cross-entropy summed over pixels, mean over the batch: (n, 4096) -> ()."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


def logscale_penalty(s: torch.Tensor, p: float) -> torch.Tensor:
    """mean_n Σ_i |s_i(x_n)|^p (the L_p log-scale penalty, p = 1 in the paper): (n, d) -> ()."""
    a = s.abs()
    return (a if p == 1 else a.pow(p)).sum(1).mean()


def mmd2_imq(zq: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD²_k(Q, P) with k(x, y) = Σ_C C / (C + ‖x − y‖²), C ∈ IMQ_SCALES × d.

    zq, zp: (n, d) -> (). Same-sample sums over i ≠ j / n(n−1), cross sum / n² (PROTOCOL §4).
    """
    n, d = zq.shape
    z = torch.cat([zq, zp])
    sq = z.pow(2).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * z @ z.T).clamp_min(0.0)  # (2n, 2n)
    c = torch.tensor(IMQ_SCALES, device=z.device, dtype=z.dtype).mul_(d)[:, None, None]
    k = (c / (c + dist)).sum(0)
    kqq, kpp, kqp = k[:n, :n], k[n:, n:], k[:n, n:]
    same = kqq.sum() - kqq.diagonal().sum() + kpp.sum() - kpp.diagonal().sum()
    return same / (n * (n - 1)) - 2.0 * kqp.sum() / (n * n)


def w2_squared_to_std_normal(mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """W₂²(N(m, Σ), N(0, I)) = ‖m‖² + tr Σ + d − 2 tr Σ^½: (d,), (d, d) -> ().

    tr Σ^½ = Σ √max(eig Σ, 0) from a symmetric eigendecomposition (not an element-wise root).
    The floor 1e-12 keeps the gradient of √· finite at a zero eigenvalue.
    """
    eig = torch.linalg.eigvalsh(cov)
    root_trace = eig.clamp_min(1e-12).sqrt().sum()
    return mean.pow(2).sum() + cov.diagonal().sum() + cov.shape[0] - 2.0 * root_trace


def batch_gaussian(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and unbiased covariance (d, d) of the codes z: (n, d)."""
    mean = z.mean(0)
    c = z - mean
    return mean, c.T @ c / (z.shape[0] - 1)


Noise = dict[str, torch.Tensor]  # a step's random draws (Objective.noise)


class Loss(NamedTuple):
    """total: () the auto-encoder loss; terms: unweighted named parts; z: (n, d) codes."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    z: torch.Tensor


class Objective(nn.Module):
    """recon + the regulariser of a subclass + λ_p·logscale penalty (always logged)."""

    def __init__(self, cfg: ObjectiveConfig, model: AutoEncoder) -> None:
        super().__init__()
        self.cfg = cfg
        self.posterior, self.prior, self.latent_dim = model.posterior, model.prior, model.latent_dim

    draws_prior = False  # the regulariser needs n prior samples per step

    def regulariser(
        self, mu: torch.Tensor, s: torch.Tensor, z: torch.Tensor, noise: Noise
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def noise(self, x: torch.Tensor, generator: torch.Generator) -> Noise:
        """Every random draw of one step on x: (n, 4096), from `generator`, in the order the
        step has always made them: "eps" (n, d), the posterior's, then "prior" (n, d), raw
        prior draws (WAE-MMD). A pure `loss` of these is what a packed trainer vmaps."""
        eps = self.posterior.noise(x.new_empty(x.shape[0], self.latent_dim), generator)
        if not self.draws_prior:
            return {"eps": eps}
        return {"eps": eps, "prior": self.prior.noise(x.shape[0], self.latent_dim, generator)}

    def forward(self, model: AutoEncoder, x: torch.Tensor, generator: torch.Generator) -> Loss:
        """x: (n, 4096) in [0, 1]; noise (posterior, prior samples) from `generator`."""
        return self.loss(model, x, self.noise(x, generator))

    def loss(self, model: AutoEncoder, x: torch.Tensor, noise: Noise) -> Loss:
        """x: (n, 4096) in [0, 1]; noise: `self.noise(x, generator)`. No randomness inside."""
        mu, s = model.encode(x)
        z = model.posterior.reparam(mu, s, noise["eps"])
        recon = recon_bce(model.decode(z), x)
        reg, terms = self.regulariser(mu, s, z, noise)
        lp = self.cfg.lp_lambda
        # Without a weight the penalty is only logged: keep it out of the autograd graph.
        penalty = logscale_penalty(s if lp > 0 else s.detach(), self.cfg.p)
        total = recon + reg + lp * penalty if lp > 0 else recon + reg
        # One log key whatever p is (the exponent is a param of the run, not part of the name).
        return Loss(total, {"recon": recon, **terms, "logscale_lp": penalty}, z)

    def adversary_loss(self, zq: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """Loss of the objective's own adversary on detached codes; None when it has none."""
        return None


class BetaVAE(Objective):
    """β-VAE: recon + β·KL(q(z|x) ‖ N(0, I)) (Higgins et al. 2017)."""

    def regulariser(self, mu, s, z, noise):
        kl = self.posterior.kl_std_normal(mu, s).mean()
        return self.cfg.beta * kl, {"kl": kl}


class WAEMMD(Objective):
    """WAE-MMD: recon + λ·MMD²_IMQ(Q_Z, P_Z), n fresh prior samples per step."""

    draws_prior = True

    def regulariser(self, mu, s, z, noise):
        zp = self.prior.transform(noise["prior"])
        mmd = mmd2_imq(z, zp)
        return self.cfg.lam * mmd, {"mmd": mmd}


class WWAE(Objective):
    """WWAE: recon + λ·W₂²(N(μ_q, Σ_q), N(0, I)) with μ_q, Σ_q fitted to the batch's codes."""

    def regulariser(self, mu, s, z, noise):
        w2 = w2_squared_to_std_normal(*batch_gaussian(z))
        return self.cfg.lam * w2, {"w2": w2}


class WAEGAN(Objective):
    """WAE-GAN: recon + λ·BCE(D(z_q), 1); the adversary D (MLP 4 × 512 ReLU → 1 logit on z)
    is trained by its own optimizer on λ·[BCE(D(z_p), 1) + BCE(D(z_q), 0)] (PROTOCOL §9).
    D keeps PyTorch's default init whatever model.init says: ModelConfig.init covers the
    encoder and decoder only."""

    def __init__(self, cfg: ObjectiveConfig, model: AutoEncoder) -> None:
        super().__init__(cfg, model)
        dims = (model.latent_dim, 512, 512, 512, 512)
        layers = [m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
        self.adversary = nn.Sequential(*layers, nn.Linear(512, 1))

    def regulariser(self, mu, s, z, noise):
        # Frozen for this pass: the encoder term must not put gradients on D's weights.
        self.adversary.requires_grad_(False)
        logits = self.adversary(z)
        self.adversary.requires_grad_(True)
        adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        return self.cfg.lam * adv, {"adv": adv}

    def adversary_loss(self, zq, generator):
        zp = self.prior.sample(zq.shape[0], self.latent_dim, generator)
        lp, lq = self.adversary(zp), self.adversary(zq)
        real = F.binary_cross_entropy_with_logits(lp, torch.ones_like(lp))
        fake = F.binary_cross_entropy_with_logits(lq, torch.zeros_like(lq))
        return self.cfg.lam * (real + fake)


OBJECTIVES: dict[str, type[Objective]] = {
    "beta_vae": BetaVAE,
    "wae_mmd": WAEMMD,
    "wae_gan": WAEGAN,
    "wwae": WWAE,
}


def build_objective(cfg: ObjectiveConfig, model: AutoEncoder) -> Objective:
    """The objective a config names, for `model`'s posterior, prior and latent size."""
    return OBJECTIVES[cfg.name](cfg, model)
