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

    def sample(
        self, mu: torch.Tensor, s: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """z = μ + exp(½s)·ε, ε ~ N(0, I): (n, d) -> (n, d) (reparameterised)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * s) * eps

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

    def sample(
        self, mu: torch.Tensor, s: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """z = μ + e^ℓ ⊙ (u − ½) (centre) or μ + e^ℓ ⊙ u (corner), u ~ U[0, 1)^d.

        (n, d) -> (n, d), reparameterised."""
        u = torch.rand(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(s) * (u - 0.5 if self.anchor == "centre" else u)

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

    def sample(
        self, mu: torch.Tensor, s: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """z = μ: (n, d) -> (n, d)."""
        return mu


class GaussianPrior:
    """p(z) = N(0, I). span: latent traversals sweep each code over [−span, span] (±2 σ)."""

    name = "gaussian"
    span = 2.0

    def sample(self, n: int, d: int, generator: torch.Generator) -> torch.Tensor:
        """(n, d) float32 on the generator's device."""
        return torch.randn(n, d, generator=generator, device=generator.device)


class UniformPrior:
    """p(z) = U[−1, 1]^d. span: latent traversals sweep each code over its support."""

    name = "uniform"
    span = 1.0

    def sample(self, n: int, d: int, generator: torch.Generator) -> torch.Tensor:
        """(n, d) float32 on the generator's device."""
        return 2.0 * torch.rand(n, d, generator=generator, device=generator.device) - 1.0


Posterior = GaussianPosterior | BoxPosterior | DeterministicPosterior
Prior = GaussianPrior | UniformPrior
POSTERIORS: dict[str, type[Posterior]] = {
    "gaussian": GaussianPosterior,
    "box": BoxPosterior,
    "deterministic": DeterministicPosterior,
}
PRIORS: dict[str, Prior] = {"gaussian": GaussianPrior(), "uniform": UniformPrior()}
