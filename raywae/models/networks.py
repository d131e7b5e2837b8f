"""Encoder / decoder networks and the AutoEncoder that ties them to a posterior and prior.

`fc`: Higgins et al. (2017) Table 1 row 1 (PROTOCOL §3). `conv`: the 4-conv 64×64 network
of Burgess et al. (2018) / disentanglement_lib, offered as an option. `conv32`: the ACAI
paper's 32×32 network (Berthelot et al. 2019) for lines and MNIST, and its critic.
"""

from __future__ import annotations

import torch
from torch import nn

from raywae.config import ModelConfig
from raywae.models.posteriors import POSTERIORS, PRIORS, BoxPosterior, Posterior, Prior

PIXELS = 64 * 64


class FCEncoder(nn.Module):
    """4096 → h ReLU → h ReLU → (mean: d, tanh; log-scale: d, linear); h = 1200 in the paper.
    x may be a sparse CSR batch (its first Linear is torch's sparse @ dense): encode_grid
    feeds binary images that way."""

    sparse_input = True

    def __init__(self, latent_dim: int, hidden: int = 1200, mean_head: str = "tanh") -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(PIXELS, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.mean = nn.Linear(hidden, latent_dim)
        self.logscale = nn.Linear(hidden, latent_dim)
        self.squash = mean_head == "tanh"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (n, 4096) in [0, 1] -> μ (n, d) (in (−1, 1) with tanh), raw log-scale (n, d)."""
        h = self.body(x)
        mu = self.mean(h)
        return (torch.tanh(mu) if self.squash else mu), self.logscale(h)


class FCDecoder(nn.Module):
    """d → h tanh → h tanh → h tanh → 4096 logits."""

    def __init__(self, latent_dim: int, hidden: int = 1200) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.Tanh(),
            nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, PIXELS),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (n, d) -> logits (n, 4096)."""
        return self.net(z)


class ConvEncoder(nn.Module):
    """4 × [conv 4×4 stride 2, ReLU] (32, 32, 64, 64 ch) → 256 ReLU → (mean tanh, log-scale)."""

    def __init__(self, latent_dim: int, hidden: int = 256) -> None:
        super().__init__()
        chans = (1, 32, 32, 64, 64)
        convs = [m for a, b in zip(chans, chans[1:]) for m in (nn.Conv2d(a, b, 4, 2, 1), nn.ReLU())]
        self.body = nn.Sequential(*convs, nn.Flatten(), nn.Linear(64 * 4 * 4, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, latent_dim)
        self.logscale = nn.Linear(hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (n, 4096) -> μ (n, d) in (−1, 1), raw log-scale (n, d)."""
        h = self.body(x.view(-1, 1, 64, 64))
        return torch.tanh(self.mean(h)), self.logscale(h)


class ConvDecoder(nn.Module):
    """d → 256 ReLU → 1024 ReLU → 4 × [transposed conv 4×4 stride 2] (64, 32, 32, 1 ch)."""

    def __init__(self, latent_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 64 * 4 * 4), nn.ReLU()
        )
        chans = (64, 64, 32, 32, 1)
        layers: list[nn.Module] = []
        for a, b in zip(chans, chans[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.ReLU()]
        self.deconv = nn.Sequential(*layers[:-1])  # no ReLU on the logits

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (n, d) -> logits (n, 4096)."""
        return self.deconv(self.fc(z).view(-1, 64, 4, 4)).flatten(1)


SIDE32, LATENT_WIDTH = 32, 2  # conv32: 32×32 inputs, a 2×2 code grid (ACAI's lines setting)


def conv32_body(depth: int) -> tuple[nn.Sequential, int]:
    """ACAI's encoder trunk: 1×1 conv to `depth`, then per scale two 3×3 convs (depth·2^k
    channels, leaky ReLU 0.2) and 2×2 average pooling, down to 2×2; then a 3×3 conv to
    depth·2^scales. Returns the trunk and its output channels."""
    scales = (SIDE32 // LATENT_WIDTH).bit_length() - 1
    act = nn.LeakyReLU(0.2)
    layers: list[nn.Module] = [nn.Conv2d(1, depth, 1)]
    ch = depth
    for k in range(scales):
        out = depth << k
        layers += [nn.Conv2d(ch, out, 3, padding=1), act, nn.Conv2d(out, out, 3, padding=1), act]
        layers.append(nn.AvgPool2d(2))
        ch = out
    layers += [nn.Conv2d(ch, depth << scales, 3, padding=1), act]
    return nn.Sequential(*layers), depth << scales


class Conv32Encoder(nn.Module):
    """x: (n, 1024) in [0, 1] (centred to [−1, 1]) -> trunk -> 3×3 convs to the code grid:
    μ (2×2×c, tanh or linear) and log-scale (2×2×c); c = latent_dim / 4."""

    def __init__(self, latent_dim: int, depth: int = 16, mean_head: str = "tanh") -> None:
        super().__init__()
        self.body, ch = conv32_body(depth)
        c = latent_dim // (LATENT_WIDTH * LATENT_WIDTH)
        self.mean = nn.Conv2d(ch, c, 3, padding=1)
        self.logscale = nn.Conv2d(ch, c, 3, padding=1)
        self.squash = mean_head == "tanh"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(2.0 * x.view(-1, 1, SIDE32, SIDE32) - 1.0)
        mu = self.mean(h).flatten(1)
        return (torch.tanh(mu) if self.squash else mu), self.logscale(h).flatten(1)


class Conv32Decoder(nn.Module):
    """z: (n, latent_dim) as a 2×2×c grid -> per scale two 3×3 convs (leaky ReLU) and 2×
    nearest upsampling, then a 3×3 conv to `depth` and one to 1 channel: logits (n, 1024)."""

    def __init__(self, latent_dim: int, depth: int = 16) -> None:
        super().__init__()
        scales = (SIDE32 // LATENT_WIDTH).bit_length() - 1
        act = nn.LeakyReLU(0.2)
        self.grid = ch = latent_dim // (LATENT_WIDTH * LATENT_WIDTH)
        layers: list[nn.Module] = []
        for k in range(scales - 1, -1, -1):
            out = depth << k
            layers += [nn.Conv2d(ch, out, 3, padding=1), act, nn.Conv2d(out, out, 3, padding=1)]
            layers += [act, nn.Upsample(scale_factor=2, mode="nearest")]
            ch = out
        layers += [nn.Conv2d(ch, depth, 3, padding=1), act, nn.Conv2d(depth, 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(-1, self.grid, LATENT_WIDTH, LATENT_WIDTH)).flatten(1)


class Critic(nn.Module):
    """The ACAI critic: the conv32 encoder's architecture (trunk + a 3×3 conv to c channels),
    its output averaged to one scalar per image. x: (n, 1024) in [0, 1] -> (n,)."""

    def __init__(self, latent_dim: int, depth: int = 16) -> None:
        super().__init__()
        self.body, ch = conv32_body(depth)
        self.head = nn.Conv2d(ch, latent_dim // (LATENT_WIDTH * LATENT_WIDTH), 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(2.0 * x.view(-1, 1, SIDE32, SIDE32) - 1.0)
        return self.head(h).mean((1, 2, 3))


class AutoEncoder(nn.Module):
    """Encoder + decoder + the posterior family and prior they are trained with."""

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, posterior: Posterior, prior: Prior, d: int
    ) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.posterior, self.prior, self.latent_dim = posterior, prior, d

    @property
    def sparse_input(self) -> bool:
        """Whether encode takes x as a sparse CSR tensor (the encoder says so)."""
        return getattr(self.encoder, "sparse_input", False)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (n, 4096) float32 in [0, 1] -> (μ, s), each (n, d); s is the posterior's
        log-scale after its clip (log-variance or log side-length). Metrics use μ."""
        mu, s = self.encoder(x)
        return mu, self.posterior.clip(s)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (n, d) -> Bernoulli logits (n, 4096)."""
        return self.decoder(z)


ARCHS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "fc": (FCEncoder, FCDecoder),
    "conv": (ConvEncoder, ConvDecoder),
    "conv32": (Conv32Encoder, Conv32Decoder),
}


def glorot_(module: nn.Module) -> None:
    """The authors' TensorFlow default on every Linear / Conv2d / ConvTranspose2d of `module`:
    Glorot-uniform weights U(±√(6 / (fan_in + fan_out))), zero biases. Draws from torch's
    global RNG. (For a transposed conv torch swaps fan_in and fan_out; their sum is the same.)"""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def he_(module: nn.Module, slope: float = 0.2) -> None:
    """Kaiming-normal weights for leaky ReLU(slope) on every Linear / Conv2d of `module`,
    zero biases (variance-preserving through conv32's deep stack). Draws from torch's RNG."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=slope, nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)


def build_model(cfg: ModelConfig) -> AutoEncoder:
    """The AutoEncoder a ModelConfig names (initialised from torch's global RNG).

    `hidden` sets the FC width; the conv arch keeps its own 256-unit layers; conv32 takes
    `depth`; fc and conv32 take `mean_head` (conv always squashes μ with tanh). init="glorot"
    re-initialises encoder and decoder with `glorot_` (PROTOCOL §3); "torch" keeps PyTorch's
    defaults. The box posterior is built with cfg.box_anchor.
    """
    enc_cls, dec_cls = ARCHS[cfg.arch]
    width = {"fc": {"hidden": cfg.hidden}, "conv32": {"depth": cfg.depth}}.get(cfg.arch, {})
    head = {"mean_head": cfg.mean_head} if cfg.arch != "conv" else {}
    encoder = enc_cls(cfg.latent_dim, **width, **head)
    decoder = dec_cls(cfg.latent_dim, **width)
    if cfg.init == "glorot":
        glorot_(encoder)
        glorot_(decoder)
    elif cfg.init == "he":
        he_(encoder)
        he_(decoder)
    post_cls = POSTERIORS[cfg.posterior]
    posterior = post_cls(cfg.box_anchor) if post_cls is BoxPosterior else post_cls()
    return AutoEncoder(encoder, decoder, posterior, PRIORS[cfg.prior], cfg.latent_dim)
