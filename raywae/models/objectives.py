"""Training objectives of PROTOCOL §4, §9 and §10. An `Objective` is the Bernoulli
reconstruction loss + the regulariser of its objective.name + the λ_p log-scale penalty, and
with objective.acai > 0 the ACAI regulariser beside it. Each regulariser is a class here named
by its row in raywae.families (its keys, terms, side networks); it reads the step's forward
pass and draws (`Step`), the training step among them, so annealed and warm-up terms are
pure functions a pack can vmap. A regulariser's side networks (WAE-GAN's adversary, ACAI's
critic) each carry their own loss, random draws and Adam settings (`SideNetwork`); the
trainer steps them after the auto-encoder, on the detached tensors the regulariser handed
them.

Every loss sums over pixels / latent dims and averages over the batch, so β and λ mean what
they mean in the papers.
"""

from __future__ import annotations

import functools
import importlib
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from raywae.config import Config
from raywae.families import ACAI, REGULARISERS, Regulariser, SideNet
from raywae.models.networks import AutoEncoder, Critic, glorot_

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


Draws = dict[str, torch.Tensor]  # a step's random draws, and its training step ("step")
SideInputs = dict[str, dict[str, torch.Tensor]]  # side network name -> its detached inputs


class Step(NamedTuple):
    """One forward pass of the auto-encoder, what every regulariser reads: x (n, P) in
    [0, 1]; μ, s (n, d) (s the clipped log-scale); z (n, d) the codes; logits (n, P); draws:
    the step's random draws and "step", the 0-based training step as a float tensor."""

    model: AutoEncoder
    x: torch.Tensor
    mu: torch.Tensor
    s: torch.Tensor
    z: torch.Tensor
    logits: torch.Tensor
    draws: Draws


class Loss(NamedTuple):
    """total: () the auto-encoder loss; terms: unweighted named parts; z: (n, d) codes;
    side: each side network's inputs from this step (detached)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    z: torch.Tensor
    side: SideInputs


def frozen(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """module(*args) with its weights detached: the caller's loss puts no gradient on them
    (also under vmap, where a module's requires_grad cannot be switched)."""
    weights = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, weights, args)


class SideNetwork(nn.Module):
    """A network a regulariser trains by its own loss and Adam (`row`: name, term, Adam
    settings; `lr`: the step size its config key holds). The trainer calls `draws` then
    `loss` on the detached inputs its regulariser returned for it (Loss.side[row.name])."""

    def __init__(self, row: SideNet, net: nn.Module, lr: float) -> None:
        super().__init__()
        self.row, self.net, self.lr = row, net, lr

    def adam(self) -> dict[str, Any]:
        """Its optimizer's settings: torch.optim.Adam keyword arguments."""
        return {"lr": self.lr, "betas": self.row.adam.betas, "eps": self.row.adam.eps}

    def draws(self, inputs: dict[str, torch.Tensor], generator: torch.Generator) -> Draws:
        """The random draws of its step (after the auto-encoder's), from `generator`."""
        return {}

    def loss(self, inputs: dict[str, torch.Tensor], draws: Draws) -> torch.Tensor:
        """Its loss (); no randomness inside."""
        raise NotImplementedError


class Term(nn.Module):
    """One regulariser of an Objective: its row, keys (the row's dataclass from the config)
    and side networks. `forward(step)` -> (its weighted contribution to the loss, its
    unweighted terms, its side networks' inputs)."""

    def __init__(self, row: Regulariser, keys: Any, model: AutoEncoder, cfg: Config) -> None:
        super().__init__()
        self.row, self.keys = row, keys
        self.posterior, self.prior, self.latent_dim = model.posterior, model.prior, model.latent_dim

    def draws(self, n: int, generator: torch.Generator) -> Draws:
        """Its random draws for a step on n images (after the posterior's), from `generator`."""
        return {}

    def forward(self, step: Step) -> tuple[torch.Tensor, dict[str, torch.Tensor], SideInputs]:
        raise NotImplementedError

    def sides(self) -> tuple[SideNetwork, ...]:
        """Its side networks, in the order of its row's `sides`."""
        return tuple(m for m in self.children() if isinstance(m, SideNetwork))


class Objective(nn.Module):
    """recon + the regulariser of cfg.objective.name + λ_p·logscale penalty (always logged),
    and with objective.acai > 0 the ACAI regulariser. The regulariser classes come from
    their rows in raywae.families."""

    def __init__(self, cfg: Config, model: AutoEncoder) -> None:
        super().__init__()
        obj = cfg.objective
        self.cfg = obj
        self.posterior, self.latent_dim = model.posterior, model.latent_dim
        # ACAI's critic is built first: the order the weights have always been drawn in.
        self.acai = _term(ACAI, obj.acai_keys, model, cfg) if obj.acai > 0 else None
        self.own = _term(REGULARISERS[obj.name], obj.family, model, cfg)

    def terms(self) -> tuple[Term, ...]:
        """Its regularisers, in the order they add to the loss: its own, then ACAI's."""
        return (self.own, self.acai) if self.acai is not None else (self.own,)

    def draws(self, x: torch.Tensor, generator: torch.Generator) -> Draws:
        """Every random draw of one step on x: (n, P), from `generator`, in the order the
        step has always made them: "eps" (n, d), the posterior's, then each regulariser's
        (WAE-MMD's raw prior draws "prior", ACAI's mixing coefficients "alpha"). A pure
        `loss` of these (and of "step", which the trainer adds) is what a pack vmaps."""
        n = x.shape[0]
        out = {"eps": self.posterior.noise(x.new_empty(n, self.latent_dim), generator)}
        for term in self.terms():
            out |= term.draws(n, generator)
        return out

    def forward(
        self, model: AutoEncoder, x: torch.Tensor, generator: torch.Generator, step: int = 0
    ) -> Loss:
        """x: (n, P) in [0, 1]; draws from `generator`; `step`: the training step."""
        draws = self.draws(x, generator) | {"step": x.new_tensor(float(step))}
        return self.loss(model, x, draws)

    def loss(self, model: AutoEncoder, x: torch.Tensor, draws: Draws) -> Loss:
        """x: (n, P) in [0, 1]; draws: `self.draws(x, generator)` and "step". No randomness
        inside."""
        mu, s = model.encode(x)
        z = model.posterior.reparam(mu, s, draws["eps"])
        logits = model.decode(z)
        recon = recon_bce(logits, x)
        step = Step(model, x, mu, s, z, logits, draws)
        reg, terms, side = self.own(step)
        lp = self.cfg.lp_lambda
        # Without a weight the penalty is only logged: keep it out of the autograd graph.
        penalty = logscale_penalty(s if lp > 0 else s.detach(), self.cfg.p)
        total = recon + reg + lp * penalty if lp > 0 else recon + reg
        # One log key whatever p is (the exponent is a param of the run, not part of the name).
        terms = {"recon": recon, **terms, "logscale_lp": penalty}
        if self.acai is not None:
            reg, more, more_side = self.acai(step)
            total, terms, side = total + reg, {**terms, **more}, {**side, **more_side}
        return Loss(total, terms, z, side)

    def sides(self) -> tuple[SideNetwork, ...]:
        """The side networks, in the order the trainer steps them after the auto-encoder."""
        return tuple(side for term in self.terms() for side in term.sides())


def _term(row: Regulariser, keys: Any, model: AutoEncoder, cfg: Config) -> Term:
    """The regulariser of `row` (its class imported from row.impl)."""
    module, _, name = row.impl.partition(":")
    return getattr(importlib.import_module(module), name)(row, keys, model, cfg)


def build_objective(cfg: Config, model: AutoEncoder) -> Objective:
    """The objective cfg.objective names, for `model`'s posterior, prior and latent size."""
    return Objective(cfg, model)


# --- the regularisers -------------------------------------------------------------------------
class BetaVAE(Term):
    """β-VAE: β·KL(q(z|x) ‖ N(0, I)) (Higgins et al. 2017)."""

    def forward(self, step):
        kl = self.posterior.kl_std_normal(step.mu, step.s).mean()
        return self.keys.beta * kl, {"kl": kl}, {}


class WAEMMD(Term):
    """WAE-MMD: λ·MMD²_IMQ(Q_Z, P_Z), n fresh prior samples per step."""

    def draws(self, n, generator):
        return {"prior": self.prior.noise(n, self.latent_dim, generator)}

    def forward(self, step):
        zp = self.prior.transform(step.draws["prior"])
        mmd = mmd2_imq(step.z, zp)
        return self.keys.lam * mmd, {"mmd": mmd}, {}


class WWAE(Term):
    """WWAE: λ·W₂²(N(μ_q, Σ_q), N(0, I)) with μ_q, Σ_q fitted to the batch's codes."""

    def forward(self, step):
        w2 = w2_squared_to_std_normal(*batch_gaussian(step.z))
        return self.keys.lam * w2, {"w2": w2}, {}


class PlainAE(Term):
    """A plain auto-encoder: reconstruction only (with acai > 0: the ACAI paper's model)."""

    def forward(self, step):
        return step.z.new_zeros(()), {}, {}


class Adversary(SideNetwork):
    """WAE-GAN's discriminator on z (MLP 4 × 512 ReLU → 1 logit), trained on
    λ·[BCE(D(z_p), 1) + BCE(D(z_q), 0)] with z_p fresh prior samples (PROTOCOL §9). It keeps
    PyTorch's default init whatever model.init says (that covers encoder and decoder)."""

    def __init__(self, row: SideNet, lr: float, latent_dim: int, prior: Any, lam: float) -> None:
        dims = (latent_dim, 512, 512, 512, 512)
        layers = [m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
        super().__init__(row, nn.Sequential(*layers, nn.Linear(512, 1)), lr)
        self.prior, self.lam = prior, lam

    def draws(self, inputs, generator):
        z = inputs["z"]
        return {"prior": self.prior.sample(z.shape[0], z.shape[1], generator)}

    def loss(self, inputs, draws):
        lp, lq = self.net(draws["prior"]), self.net(inputs["z"])
        real = F.binary_cross_entropy_with_logits(lp, torch.ones_like(lp))
        fake = F.binary_cross_entropy_with_logits(lq, torch.zeros_like(lq))
        return self.lam * (real + fake)


class WAEGAN(Term):
    """WAE-GAN: λ·BCE(D(z_q), 1) against its adversary D (`Adversary`)."""

    def __init__(self, row, keys, model, cfg):
        super().__init__(row, keys, model, cfg)
        (side,) = row.sides
        self.adversary = Adversary(side, keys.adv_lr, model.latent_dim, model.prior, keys.lam)

    def forward(self, step):
        logits = frozen(self.adversary.net, step.z)  # the encoder's term puts no gradient on D
        adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        return self.keys.lam * adv, {"adv": adv}, {self.adversary.row.name: {"z": step.z.detach()}}


def acai_alpha(n: int, generator: torch.Generator) -> torch.Tensor:
    """α ~ U[0, ½] as ACAI draws it, the fold ½ − |u − ½| of u ~ U[0, 1): (n,)."""
    u = torch.rand(n, generator=generator, device=generator.device)
    return 0.5 - (u - 0.5).abs()


class AcaiCritic(SideNetwork):
    """ACAI's critic (the conv32 encoder's architecture, see networks.Critic), trained on
    mean (d(x̂_mix) − α)² + mean d(γ·x + (1−γ)·x̂)² (PROTOCOL §9): its targets are α for the
    mixes and 0 for the γ-blends of data and reconstructions."""

    def __init__(self, row: SideNet, lr: float, critic: Critic, gamma: float) -> None:
        super().__init__(row, critic, lr)
        self.gamma = gamma

    def loss(self, inputs, draws):
        mixes = (self.net(inputs["x_mix"]) - inputs["alpha"]).pow(2).mean()
        blend = self.gamma * inputs["x"] + (1.0 - self.gamma) * inputs["x_hat"]
        return mixes + self.net(blend).pow(2).mean()


class AcaiTerm(Term):
    """ACAI (Berthelot et al. 2019), beside any objective: λ·d(x̂_mix)², x̂_mix the decoded
    α·z₁ + (1−α)·z₂ with z₂ the batch reversed; the auto-encoder wants d(x̂_mix) = 0."""

    def __init__(self, row, keys, model, cfg):
        super().__init__(row, keys, model, cfg)
        (side,) = row.sides
        critic = Critic(model.latent_dim, cfg.model.depth)
        self.critic = AcaiCritic(side, keys.critic_lr, critic, keys.acai_gamma)
        self.weight = cfg.objective.acai

    def draws(self, n, generator):
        return {"alpha": acai_alpha(n, generator)}

    def forward(self, step):
        alpha, z = step.draws["alpha"][:, None], step.z
        x_mix = torch.sigmoid(step.model.decode(alpha * z + (1 - alpha) * z.flip(0)))
        acai = frozen(self.critic.net, x_mix).pow(2).mean()  # no gradient on the critic
        batch = {
            "x": step.x,
            "x_hat": torch.sigmoid(step.logits).detach(),
            "x_mix": x_mix.detach(),
            "alpha": step.draws["alpha"],
        }
        return self.weight * acai, {"acai": acai}, {self.critic.row.name: batch}


# --- the field's baselines (Locatello et al. 2019; disentanglement_lib's definitions) ---------
def capacity(step: torch.Tensor, c_max: float, threshold: float) -> torch.Tensor:
    """AnnealedVAE's C(t) = min(c_max, c_max·t / threshold) at training step t (a tensor)."""
    return (c_max * step / threshold).clamp(max=c_max)


class AnnealedVAE(Term):
    """AnnealedVAE: γ·|KL − C(t)|, the capacity C rising linearly from 0 to c_max over
    iteration_threshold steps (Burgess et al. 2018, eq. 8)."""

    def __init__(self, row, keys, model, cfg):
        super().__init__(row, keys, model, cfg)
        scale = cfg.train.steps / 300_000 if keys.scale_threshold else 1.0
        self.threshold = keys.iteration_threshold * scale

    def forward(self, step):
        kl = self.posterior.kl_std_normal(step.mu, step.s).mean()
        c = capacity(step.draws["step"], self.keys.c_max, self.threshold)
        return self.keys.gamma * (kl - c).abs(), {"kl": kl, "capacity": c}, {}


def shuffle_dims(z: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """z̃: every latent dim of z (n, d) permuted across the batch by its own column of perm
    (n, d), a permutation of 0..n−1 per column: a sample of the product of the marginals."""
    return z.gather(0, perm)


class Discriminator(SideNetwork):
    """FactorVAE's discriminator: 6 dense × 1000, leaky ReLU 0.2, 2 logits ("joint",
    "permuted"), TensorFlow's default init (Glorot-uniform, zero biases) as in
    disentanglement_lib; it maximises ½·mean log p(joint | z) + ½·mean log p(permuted | z̃)
    with the probabilities clipped to [1e-6, 1 − 1e-6]."""

    def __init__(self, row: SideNet, lr: float, latent_dim: int) -> None:
        dims = (latent_dim, *[1000] * 6)
        layers = [m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.LeakyReLU(0.2))]
        net = nn.Sequential(*layers, nn.Linear(1000, 2))
        glorot_(net)
        super().__init__(row, net, lr)

    def draws(self, inputs, generator):
        z = inputs["z"]
        u = torch.rand(z.shape, generator=generator, device=z.device)
        return {"perm": u.argsort(0)}

    def loss(self, inputs, draws):
        z = inputs["z"]
        joint = self.net(z).softmax(1).clamp(1e-6, 1 - 1e-6)[:, 0]
        permuted = self.net(shuffle_dims(z, draws["perm"])).softmax(1).clamp(1e-6, 1 - 1e-6)[:, 1]
        return -(0.5 * joint.log().mean() + 0.5 * permuted.log().mean())


class FactorVAE(Term):
    """FactorVAE: KL + γ·TC, TC = mean(D(z)_joint − D(z)_permuted) read off the discriminator's
    logits (Kim & Mnih 2018, eq. 2; its `Discriminator` trains beside)."""

    def __init__(self, row, keys, model, cfg):
        super().__init__(row, keys, model, cfg)
        (side,) = row.sides
        self.disc = Discriminator(side, keys.disc_lr, model.latent_dim)

    def forward(self, step):
        kl = self.posterior.kl_std_normal(step.mu, step.s).mean()
        logits = frozen(self.disc.net, step.z)  # the encoder's term puts no gradient on D
        tc = (logits[:, 0] - logits[:, 1]).mean()
        reg = kl + self.keys.gamma * tc
        return reg, {"kl": kl, "tc": tc}, {self.disc.row.name: {"z": step.z.detach()}}


def covariance(mu: torch.Tensor) -> torch.Tensor:
    """E[μμᵀ] − E[μ]E[μ]ᵀ over the batch (the biased estimate): (n, d) -> (d, d)."""
    mean = mu.mean(0)
    return (mu[:, :, None] * mu[:, None, :]).mean(0) - mean[:, None] * mean[None, :]


def dip_penalties(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DIP's two penalties on a covariance (d, d): Σ_{i≠j} C_ij² and Σ_i (C_ii − 1)²."""
    diag = cov.diagonal()
    return (cov - torch.diag_embed(diag)).pow(2).sum(), (diag - 1).pow(2).sum()


class DIPVAE(Term):
    """DIP-VAE: KL + λ_od·Σ_{i≠j} C_ij² + λ_d·Σ_i (C_ii − 1)², C = Cov[μ(x)] (type i) or
    Cov[μ(x)] + mean diag(e^s) (type ii) over the batch (Kumar et al. 2018, eqs. 6–7)."""

    def forward(self, step):
        kl = self.posterior.kl_std_normal(step.mu, step.s).mean()
        cov = covariance(step.mu)
        if self.keys.dip_type == "ii":
            cov = cov + torch.diag_embed(step.s.exp().mean(0))
        od, d = dip_penalties(cov)
        reg = kl + self.keys.lambda_od * od + self.keys.lambda_d * d
        return reg, {"kl": kl, "dip_od": od, "dip_d": d}, {}


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; μ, e^logvar) per element (broadcasting)."""
    return -0.5 * ((z - mu).pow(2) * (-logvar).exp() + logvar + math.log(2 * math.pi))


def total_correlation(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The minibatch-weighted estimate of TC(q(z)) on a batch (Chen et al. 2018, as
    disentanglement_lib computes it, constants dropped): mean_j [logsumexp_i Σ_l log
    q(z_jl | x_i) − Σ_l logsumexp_i log q(z_jl | x_i)]. Adding (d − 1)·log n gives the
    batch's own kernel estimate of TC. z, μ, logvar: (n, d) -> ()."""
    log_q = gaussian_log_density(z[:, None], mu[None], logvar[None])  # (j, i, l)
    joint = torch.logsumexp(log_q.sum(2), 1)
    product = torch.logsumexp(log_q, 1).sum(1)
    return (joint - product).mean()


class BetaTCVAE(Term):
    """β-TCVAE: KL + (β − 1)·TC, TC by minibatch-weighted sampling (Chen et al. 2018, eq. 4
    with α = γ = 1)."""

    def forward(self, step):
        kl = self.posterior.kl_std_normal(step.mu, step.s).mean()
        tc = total_correlation(step.z, step.mu, step.s)
        return (self.keys.beta - 1.0) * tc + kl, {"kl": kl, "tc": tc}, {}
