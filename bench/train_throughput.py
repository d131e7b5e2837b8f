"""Images/s of raywae's Trainer step vs a minimal hand-written PyTorch loop (same FC network,
batch and β-VAE objective), measured in alternating rounds of the same process.

    python bench/train_throughput.py --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from raywae.config import from_dict
from raywae.data import FactorGrid, load_dsprites
from raywae.steps import adam_options
from raywae.train import Trainer, resolve_device

# 3 shapes x 6 scales x 10 orientations x 4 x 4 positions: small enough to hold as float32
# for the hand-written loop, and the batch cost does not depend on the table size.
SUBGRID = {"orientation": 4, "posX": 8, "posY": 8}


def fc_layers(hidden: int, d: int = 16) -> list[tuple[int, int]]:
    """(in, out) of every Linear of the Higgins FC auto-encoder (PROTOCOL §3), in order:
    encoder body, mean head, log-scale head, decoder. The first one's input is the image."""
    return [(4096, hidden), (hidden, hidden), (hidden, d), (hidden, d)] + [
        (d, hidden), (hidden, hidden), (hidden, hidden), (hidden, 4096)
    ]  # fmt: skip


def minimal_loop(
    images: torch.Tensor, batch: int, hidden: int, d: int, seed: int, fused: bool = False
) -> Callable[[int], None]:
    """The loop one would write by hand: float images on the device, Higgins FC net, β = 1.
    fused: raywae's Adam (one fused kernel over all tensors) instead of PyTorch's default."""
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Linear(4096, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
    mean, logvar = nn.Linear(hidden, d), nn.Linear(hidden, d)
    dec = nn.Sequential(
        nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
        nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 4096),
    )  # fmt: skip
    modules = nn.ModuleList([body, mean, logvar, dec]).to(images.device)
    adam = adam_options(images.device) if fused else {}
    opt = torch.optim.Adam(modules.parameters(), lr=1e-3, **adam)

    def run(steps: int) -> None:
        for _ in range(steps):
            x = images[torch.randint(images.shape[0], (batch,), device=images.device)]
            h = body(x)
            mu, lv = torch.tanh(mean(h)), logvar(h).clamp(-16, 10)
            z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
            recon = F.binary_cross_entropy_with_logits(dec(z), x, reduction="sum") / batch
            kl = 0.5 * (mu.pow(2) + lv.exp() - 1 - lv).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            (recon + kl).backward()
            opt.step()

    return run


def timed(run: Callable[[int], None], steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per loop first")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=1200, help="FC width (paper: 1200)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    ds = load_dsprites("procedural", grid=FactorGrid.dsprites().subgrid(SUBGRID))
    cfg = from_dict(
        {
            "model": {"hidden": args.hidden},
            "objective": {"name": "beta_vae", "beta": 1.0},
            # A budget far beyond the bench keeps the learning rate at 1e-3 as in the loop.
            "train": {
                "steps": 10**9,
                "batch_size": args.batch_size,
                "report_every": args.steps,
                "device": str(device),
            },
        }
    )
    trainer = Trainer(cfg, ds)
    train_idx, _ = ds.split(seed=0)
    images = torch.from_numpy(ds.images(train_idx).reshape(len(train_idx), 4096)).float()
    hand = minimal_loop(images.to(device), args.batch_size, args.hidden, 16, seed=0)
    ours: Callable[[int], None] = lambda n: trainer.run(steps=n)  # noqa: E731

    for run in (ours, hand):
        timed(run, args.warmup, device)
    rates: dict[str, list[float]] = {"raywae": [], "hand": []}
    for _ in range(args.rounds):
        for name, run in (("raywae", ours), ("hand", hand)):
            rates[name].append(args.steps * args.batch_size / timed(run, args.steps, device))

    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
        f"FC hidden {args.hidden}, beta-VAE, {args.rounds} rounds x {args.steps} steps"
    )
    for name, label in (("raywae", "raywae Trainer"), ("hand", "hand-written loop")):
        spread = ", ".join(f"{r:.0f}" for r in rates[name])
        print(f"{label:18s} {med[name]:10.1f} img/s  (rounds: {spread})")
    # Per-round ratios pair measurements taken seconds apart: robust to drifting machine load.
    paired = statistics.median(a / b for a, b in zip(rates["raywae"], rates["hand"]))
    print(
        f"{'ratio':18s} {med['raywae'] / med['hand']:10.3f}  (median per-round ratio {paired:.3f})"
    )


if __name__ == "__main__":
    main()
