"""Encoder / decoder networks and the AutoEncoder that ties them to a posterior and prior.

One name per network (`model.arch`, the `ARCHS` table):

- `fc`: Higgins et al. (2017) Table 1 row 1 (PROTOCOL §3).
- `conv64`: disentanglement_lib's `conv_encoder` / `deconv_decoder` exactly (Locatello et al.
  2019, PROTOCOL §10): 4×4, 4×4, 2×2, 2×2 convs (the library's code; PROTOCOL §10's
  "4×4" for all four is `conv`'s), a linear mean head.
- `conv`: a 64×64 conv variant of it with 4×4 kernels in every conv and a tanh mean head
  (PROTOCOL §3's bounded codes); not disentanglement_lib's network.
- `conv32`: the ACAI paper's 32×32 network (Berthelot et al. 2019) for lines and MNIST, and
  its critic.
"""

from __future__ import annotations

from typing import NamedTuple

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
    """`conv`: 4 × [conv 4×4 stride 2, ReLU] (32, 32, 64, 64 ch) → 256 ReLU → (mean tanh,
    log-scale). The tanh 4×4 variant of disentanglement_lib's encoder (`conv64`, whose third
    and fourth convs are 2×2 and whose mean head is linear)."""

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
    """`conv`: d → 256 ReLU → 1024 ReLU → 4 × [transposed conv 4×4 stride 2] (64, 32, 32,
    1 ch). The same layers as `conv64`'s decoder (disentanglement_lib's `deconv_decoder`)."""

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


class Conv64Encoder(nn.Module):
    """`conv64`: disentanglement_lib's `conv_encoder` (methods/shared/architectures.py), layer
    for layer: conv 32 4×4 /2, conv 32 4×4 /2, conv 64 2×2 /2, conv 64 2×2 /2 (ReLU each;
    64 → 32 → 16 → 8 → 4), flatten (1024), dense 256 ReLU, then two linear heads: μ (no
    tanh, whatever `mean_head` says) and the log-scale (disentanglement_lib's log-variance).

    TF's padding="same" is PyTorch's padding=1 for the 4×4 convs on even inputs (one pixel
    each side) and 0 for the 2×2 ones. PyTorch flattens (C, H, W) where TF flattens
    (H, W, C): the dense layer's inputs are a fixed permutation of TF's, so the network is
    functionally equivalent (permute its weight columns) and, under i.i.d. init (glorot),
    identically distributed."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 2, 2, 0), nn.ReLU(),
            nn.Conv2d(64, 64, 2, 2, 0), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 256), nn.ReLU(),
        )  # fmt: skip
        self.mean = nn.Linear(256, latent_dim)
        self.logscale = nn.Linear(256, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (n, 4096) in [0, 1] -> μ (n, d) (unbounded), raw log-scale (n, d)."""
        h = self.body(x.view(-1, 1, 64, 64))
        return self.mean(h), self.logscale(h)


class Conv64Decoder(nn.Module):
    """`conv64`: disentanglement_lib's `deconv_decoder`: d → dense 256 ReLU → dense 1024 ReLU
    → 4×4×64 → transposed convs 64, 32, 32 (4×4 /2, ReLU) and 1 (4×4 /2, logits): 4 → 8 →
    16 → 32 → 64. TF's padding="same" for a 4×4 stride-2 transposed conv is PyTorch's
    padding=1 (output twice the input). The 1024 units are read as (C, H, W) where TF reads
    (H, W, C): a fixed permutation of the dense layer's outputs, functionally equivalent and,
    under i.i.d. init, identically distributed."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, 64 * 4 * 4), nn.ReLU()
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, 2, 1),
        )  # fmt: skip

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


class Arch(NamedTuple):
    """An `arch`'s encoder and decoder, and the ModelConfig fields each takes as keyword
    arguments besides latent_dim (the others do not apply to it)."""

    encoder: type[nn.Module]
    decoder: type[nn.Module]
    encoder_options: tuple[str, ...] = ()
    decoder_options: tuple[str, ...] = ()


ARCHS: dict[str, Arch] = {
    "fc": Arch(FCEncoder, FCDecoder, ("hidden", "mean_head"), ("hidden",)),
    "conv": Arch(ConvEncoder, ConvDecoder),  # its own 256 units, always tanh
    "conv64": Arch(Conv64Encoder, Conv64Decoder),  # disentanglement_lib's, always linear
    "conv32": Arch(Conv32Encoder, Conv32Decoder, ("depth", "mean_head"), ("depth",)),
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

    The arch's row of `ARCHS` says which fields it reads: `hidden` sets the FC width; conv32
    takes `depth`; fc and conv32 take `mean_head`; conv and conv64 keep their own 256-unit
    layers and their own mean head (conv: tanh; conv64: linear, as disentanglement_lib).
    init="glorot" re-initialises encoder and decoder with `glorot_` (PROTOCOL §3; TF's
    default); "torch" keeps PyTorch's defaults. The box posterior is built with
    cfg.box_anchor.
    """
    arch = ARCHS[cfg.arch]
    encoder = arch.encoder(cfg.latent_dim, **{k: getattr(cfg, k) for k in arch.encoder_options})
    decoder = arch.decoder(cfg.latent_dim, **{k: getattr(cfg, k) for k in arch.decoder_options})
    if cfg.init == "glorot":
        glorot_(encoder)
        glorot_(decoder)
    elif cfg.init == "he":
        he_(encoder)
        he_(decoder)
    post_cls = POSTERIORS[cfg.posterior]
    posterior = post_cls(cfg.box_anchor) if post_cls is BoxPosterior else post_cls()
    return AutoEncoder(encoder, decoder, posterior, PRIORS[cfg.prior], cfg.latent_dim)
