"""Training objectives of PROTOCOL §4 and §9: β-VAE, WAE-MMD (IMQ), WAE-GAN, WWAE, a plain
auto-encoder, and the ACAI regulariser, which composes with any of them (`objective.acai`).
An objective names the side networks it trains with their own optimizers (`Objective.side`:
WAE-GAN's adversary, ACAI's critic); the trainer steps them after the auto-encoder.

Every loss sums over pixels / latent dims and averages over the batch, so β and λ mean what
they mean in the papers. `OBJECTIVES` maps config names to classes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from raywae.config import ObjectiveConfig
from raywae.families import ADVERSARY, CRITIC, SideNet
from raywae.models.networks import AutoEncoder, Critic

# IMQ kernel scales C / d (PROTOCOL §4).
IMQ_SCALES = (0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 0.8, 1.0, 2.0)


def recon_bce(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli cross-entropy summed over pixels, mean over the batch: (n, 4096) -> ()."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


def logscale_penalty(s: torch.Tensor, p: float) -> torch.Tensor:
    """mean_n Σ_i |s_i(x_n)|^p (the L_p log-scale penalty, p = 1 in the paper): (n, d) -> ()."""
    a = s.abs()
    return (a if p == 1 else a.pow(p)).sum(1).mean()


@functools.cache
def _imq_scales(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """IMQ_SCALES as a (k, 1, 1) tensor, made once per device: building it every step is a
    blocking host-to-device copy on CUDA."""
    return torch.tensor(IMQ_SCALES, device=device, dtype=dtype)[:, None, None]


def mmd2_imq(zq: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD²_k(Q, P) with k(x, y) = Σ_C C / (C + ‖x − y‖²), C ∈ IMQ_SCALES × d.

    zq, zp: (n, d) -> (). Same-sample sums over i ≠ j / n(n−1), cross sum / n² (PROTOCOL §4).
    """
    n, d = zq.shape
    z = torch.cat([zq, zp])
    sq = z.pow(2).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * z @ z.T).clamp_min(0.0)  # (2n, 2n)
    c = _imq_scales(z.device, z.dtype) * d
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


class AcaiBatch(NamedTuple):
    """What the ACAI critic trains on, all detached: x, x̂ (n, P) in [0, 1]; x̂_mix (n, P), the
    decoded mixes; alpha (n,), their mixing coefficients."""

    x: torch.Tensor
    x_hat: torch.Tensor
    x_mix: torch.Tensor
    alpha: torch.Tensor


class Loss(NamedTuple):
    """total: () the auto-encoder loss; terms: unweighted named parts; z: (n, d) codes;
    acai: the critic's batch when ACAI is on."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    z: torch.Tensor
    acai: AcaiBatch | None = None


class Side(NamedTuple):
    """A side network as the trainer steps it: its row (name, term, lr key), the module (a
    submodule of the objective) and its Adam step size."""

    net: SideNet
    module: nn.Module
    lr: float


def frozen(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """module(*args) with its weights detached: the caller's loss puts no gradient on them
    (also under vmap, where a module's requires_grad cannot be switched)."""
    weights = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, weights, args)


def acai_alpha(n: int, generator: torch.Generator) -> torch.Tensor:
    """α ~ U[0, ½] as ACAI draws it, the fold ½ − |u − ½| of u ~ U[0, 1): (n,)."""
    u = torch.rand(n, generator=generator, device=generator.device)
    return 0.5 - (u - 0.5).abs()


def critic_loss(critic: Critic, batch: AcaiBatch, gamma: float) -> torch.Tensor:
    """ACAI's critic loss (PROTOCOL §9): mean (d(x̂_mix) − α)² + mean d(γ·x + (1−γ)·x̂)².
    Its targets: α for the mixes, 0 for the γ-blends of data and reconstructions."""
    mixes = (critic(batch.x_mix) - batch.alpha).pow(2).mean()
    blends = critic(gamma * batch.x + (1.0 - gamma) * batch.x_hat).pow(2).mean()
    return mixes + blends


class Objective(nn.Module):
    """recon + the regulariser of a subclass + λ_p·logscale penalty (always logged), and with
    cfg.acai > 0 the ACAI term λ·d(x̂_mix)² against a critic trained by its own optimizer."""

    def __init__(self, cfg: ObjectiveConfig, model: AutoEncoder, critic_depth: int = 16) -> None:
        super().__init__()
        self.cfg = cfg
        self.posterior, self.prior, self.latent_dim = model.posterior, model.prior, model.latent_dim
        self.adversary: nn.Module | None = None  # WAE-GAN's discriminator on z
        self.critic = Critic(model.latent_dim, critic_depth) if cfg.acai > 0 else None

    draws_prior = False  # the regulariser needs n prior samples per step

    def regulariser(
        self, mu: torch.Tensor, s: torch.Tensor, z: torch.Tensor, noise: Noise
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def noise(self, x: torch.Tensor, generator: torch.Generator) -> Noise:
        """Every random draw of one step on x: (n, 4096), from `generator`, in the order the
        step has always made them: "eps" (n, d), the posterior's, then "prior" (n, d), raw
        prior draws (WAE-MMD), then "alpha" (n,), ACAI's mixing coefficients. A pure `loss`
        of these is what a packed trainer vmaps."""
        n = x.shape[0]
        noise = {"eps": self.posterior.noise(x.new_empty(n, self.latent_dim), generator)}
        if self.draws_prior:
            noise["prior"] = self.prior.noise(n, self.latent_dim, generator)
        if self.critic is not None:
            noise["alpha"] = acai_alpha(n, generator)
        return noise

    def forward(self, model: AutoEncoder, x: torch.Tensor, generator: torch.Generator) -> Loss:
        """x: (n, 4096) in [0, 1]; noise (posterior, prior samples) from `generator`."""
        return self.loss(model, x, self.noise(x, generator))

    def loss(self, model: AutoEncoder, x: torch.Tensor, noise: Noise) -> Loss:
        """x: (n, 4096) in [0, 1]; noise: `self.noise(x, generator)`. No randomness inside."""
        mu, s = model.encode(x)
        z = model.posterior.reparam(mu, s, noise["eps"])
        logits = model.decode(z)
        recon = recon_bce(logits, x)
        reg, terms = self.regulariser(mu, s, z, noise)
        lp = self.cfg.lp_lambda
        # Without a weight the penalty is only logged: keep it out of the autograd graph.
        penalty = logscale_penalty(s if lp > 0 else s.detach(), self.cfg.p)
        total = recon + reg + lp * penalty if lp > 0 else recon + reg
        # One log key whatever p is (the exponent is a param of the run, not part of the name).
        terms = {"recon": recon, **terms, "logscale_lp": penalty}
        if self.critic is None:
            return Loss(total, terms, z)
        # ACAI: decode α·z₁ + (1−α)·z₂ with z₂ the batch reversed; the AE wants d(x̂_mix) = 0.
        alpha = noise["alpha"]
        x_mix = torch.sigmoid(model.decode(alpha[:, None] * z + (1 - alpha[:, None]) * z.flip(0)))
        acai = frozen(self.critic, x_mix).pow(2).mean()  # no gradient on the critic
        batch = AcaiBatch(x, torch.sigmoid(logits).detach(), x_mix.detach(), alpha)
        return Loss(total + self.cfg.acai * acai, {**terms, "acai": acai}, z, batch)

    def side(self) -> tuple[Side, ...]:
        """The side networks, in the order the trainer steps them after the auto-encoder."""
        if self.critic is None:
            return ()
        return (Side(CRITIC, self.critic, getattr(self.cfg, CRITIC.lr_key)),)

    def side_noise(self, net: SideNet, out: Loss, generator: torch.Generator) -> Noise:
        """The random draws of side network `net`'s step (after the auto-encoder's draws)."""
        return {}

    def side_loss(self, net: SideNet, out: Loss, noise: Noise) -> torch.Tensor:
        """Side network `net`'s loss on the step's detached Loss `out`; no randomness inside."""
        if net is CRITIC:  # ACAI (PROTOCOL §9), see `critic_loss`
            return critic_loss(self.critic, out.acai, self.cfg.acai_gamma)
        raise KeyError(f"{type(self).__name__} has no side network {net.name!r}")


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


class PlainAE(Objective):
    """A plain auto-encoder: reconstruction only (with acai > 0: the ACAI paper's model)."""

    def regulariser(self, mu, s, z, noise):
        return z.new_zeros(()), {}


class WAEGAN(Objective):
    """WAE-GAN: recon + λ·BCE(D(z_q), 1); the adversary D (MLP 4 × 512 ReLU → 1 logit on z)
    is trained by its own optimizer on λ·[BCE(D(z_p), 1) + BCE(D(z_q), 0)] (PROTOCOL §9).
    D keeps PyTorch's default init whatever model.init says: ModelConfig.init covers the
    encoder and decoder only."""

    def __init__(self, cfg: ObjectiveConfig, model: AutoEncoder, critic_depth: int = 16) -> None:
        super().__init__(cfg, model, critic_depth)
        dims = (model.latent_dim, 512, 512, 512, 512)
        layers = [m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
        self.adversary = nn.Sequential(*layers, nn.Linear(512, 1))

    def regulariser(self, mu, s, z, noise):
        logits = frozen(self.adversary, z)  # the encoder's term puts no gradient on D
        adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        return self.cfg.lam * adv, {"adv": adv}

    def side(self):
        adversary = Side(ADVERSARY, self.adversary, getattr(self.cfg, ADVERSARY.lr_key))
        return (adversary, *super().side())

    def side_noise(self, net, out, generator):
        if net is not ADVERSARY:
            return super().side_noise(net, out, generator)
        return {"prior": self.prior.sample(out.z.shape[0], self.latent_dim, generator)}

    def side_loss(self, net, out, noise):
        if net is not ADVERSARY:
            return super().side_loss(net, out, noise)
        lp, lq = self.adversary(noise["prior"]), self.adversary(out.z)
        real = F.binary_cross_entropy_with_logits(lp, torch.ones_like(lp))
        fake = F.binary_cross_entropy_with_logits(lq, torch.zeros_like(lq))
        return self.cfg.lam * (real + fake)


OBJECTIVES: dict[str, type[Objective]] = {
    "beta_vae": BetaVAE,
    "wae_mmd": WAEMMD,
    "wae_gan": WAEGAN,
    "wwae": WWAE,
    "ae": PlainAE,
}


def build_objective(cfg: ObjectiveConfig, model: AutoEncoder, critic_depth: int = 16) -> Objective:
    """The objective a config names, for `model`'s posterior, prior and latent size; an ACAI
    critic (when cfg.acai > 0) of conv32 width `critic_depth`."""
    return OBJECTIVES[cfg.name](cfg, model, critic_depth)
