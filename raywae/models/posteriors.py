"""Posteriors q(z|x) and priors p(z) of PROTOCOL §3: sampling, clipping, KL to N(0, I).

A posterior is parameterised by the encoder's mean μ and a log-scale head s: the log-variance
for the Gaussian, the log side-length ℓ for the uniform box. Objects are immutable; the box
is built with its anchor (centre or corner), so POSTERIORS maps names to classes.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

LOGVAR_MIN, LOGVAR_MAX = -16.0, 10.0


class GaussianPosterior:
    """q(z|x) = N(μ, diag(exp(s))), s = log-variance clipped to [−16, 10]."""

    name = "gaussian"

    def clip(self, s: torch.Tensor) -> torch.Tensor:
        """Raw head (n, d) -> log-variance (n, d); the clip keeps exp(s) finite early on."""
        return s.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def noise(self, mu: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """ε ~ N(0, I) shaped like μ: the one random draw of `sample`."""
        return torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)

    def reparam(self, mu: torch.Tensor, s: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z = μ + exp(½s)·ε: (n, d) -> (n, d) (reparameterised)."""
        return mu + torch.exp(0.5 * s) * eps

    def sample(
        self, mu: torch.Tensor, s: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """z = μ + exp(½s)·ε, ε ~ N(0, I): (n, d) -> (n, d) (reparameterised)."""
        return self.reparam(mu, s, self.noise(mu, generator))

    def kl_std_normal(self, mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """KL(N(μ, e^s) ‖ N(0, I)) = ½ Σ_i (μ_i² + e^{s_i} − 1 − s_i): (n, d) -> (n,)."""
        return 0.5 * (mu.pow(2) + s.exp() - 1.0 - s).sum(1)


class BoxPosterior:
    """q(z|x) = a uniform box with side lengths e^ℓ, anchored at μ (PROTOCOL §3).

    anchor "centre" (default): U[μ − e^ℓ/2, μ + e^ℓ/2], so μ is the box's mean, as for the
    Gaussian, and the metrics' "mean code" is the posterior mean. anchor "corner" (the
    authors' code): U[μ, μ + e^ℓ], μ the lower corner (their metric read μ all the same).
    """

    name = "box"

    def __init__(self, anchor: Literal["centre", "corner"] = "centre") -> None:
        if anchor not in ("centre", "corner"):
            raise ValueError(f"anchor must be 'centre' or 'corner', got {anchor!r}")
        self.anchor = anchor

    def clip(self, s: torch.Tensor) -> torch.Tensor:
        """The log side-length ℓ is used as is (PROTOCOL §3 clips only the Gaussian)."""
        return s

    def noise(self, mu: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """u ~ U[0, 1)^d shaped like μ: the one random draw of `sample`."""
        return torch.rand(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)

    def reparam(self, mu: torch.Tensor, s: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """z = μ + e^ℓ ⊙ (u − ½) (centre) or μ + e^ℓ ⊙ u (corner): (n, d) -> (n, d)."""
        return mu + torch.exp(s) * (u - 0.5 if self.anchor == "centre" else u)

    def sample(
        self, mu: torch.Tensor, s: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """z = μ + e^ℓ ⊙ (u − ½) (centre) or μ + e^ℓ ⊙ u (corner), u ~ U[0, 1)^d.

        (n, d) -> (n, d), reparameterised."""
        return self.reparam(mu, s, self.noise(mu, generator))

    def kl_std_normal(self, mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """KL(U(box) ‖ N(0, I)) = Σ_i [−ℓ_i + ½ log 2π + ½(m_i² + e^{2ℓ_i}/12)]: (n, d) -> (n,).

        −H(q) = −Σ ℓ_i and E_q[z_i²] = m_i² + side_i²/12, with m the box's mean: μ for the
        centred box, μ + side/2 for the corner one.
        """
        m = mu if self.anchor == "centre" else mu + 0.5 * s.exp()
        return (-s + 0.5 * math.log(2 * math.pi) + 0.5 * (m.pow(2) + (2 * s).exp() / 12)).sum(1)


class DeterministicPosterior:
    """q(z|x) = δ(μ): a deterministic encoder (the WAE and ACAI papers' choice); the log-scale
    head is computed but unused (its penalty is only logged)."""

    name = "deterministic"

    def clip(self, s: torch.Tensor) -> torch.Tensor:
        return s

    def noise(self, mu: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """No draw (the generator is left alone): zeros shaped like μ."""
        return torch.zeros_like(mu)

    def reparam(self, mu: torch.Tensor, s: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z = μ: (n, d) -> (n, d)."""
        return mu

    def sample(
        self, mu: torch.Tensor, s: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """z = μ: (n, d) -> (n, d)."""
        return mu


class GaussianPrior:
    """p(z) = N(0, I). span: latent traversals sweep each code over [−span, span] (±2 σ)."""

    name = "gaussian"
    span = 2.0

    def noise(self, n: int, d: int, generator: torch.Generator) -> torch.Tensor:
        """The raw draw of `sample`: (n, d) float32 N(0, 1) on the generator's device."""
        return torch.randn(n, d, generator=generator, device=generator.device)

    def transform(self, noise: torch.Tensor) -> torch.Tensor:
        return noise

    def sample(self, n: int, d: int, generator: torch.Generator) -> torch.Tensor:
        """(n, d) float32 on the generator's device."""
        return self.transform(self.noise(n, d, generator))


class UniformPrior:
    """p(z) = U[−1, 1]^d. span: latent traversals sweep each code over its support."""

    name = "uniform"
    span = 1.0

    def noise(self, n: int, d: int, generator: torch.Generator) -> torch.Tensor:
        """The raw draw of `sample`: (n, d) float32 U[0, 1) on the generator's device."""
        return torch.rand(n, d, generator=generator, device=generator.device)

    def transform(self, noise: torch.Tensor) -> torch.Tensor:
        return 2.0 * noise - 1.0

    def sample(self, n: int, d: int, generator: torch.Generator) -> torch.Tensor:
        """(n, d) float32 on the generator's device."""
        return self.transform(self.noise(n, d, generator))


Posterior = GaussianPosterior | BoxPosterior | DeterministicPosterior
Prior = GaussianPrior | UniformPrior
POSTERIORS: dict[str, type[Posterior]] = {
    "gaussian": GaussianPosterior,
    "box": BoxPosterior,
    "deterministic": DeterministicPosterior,
}
PRIORS: dict[str, Prior] = {"gaussian": GaussianPrior(), "uniform": UniformPrior()}
