"""How fast the paper's study runs on this device, in one run: training images/s and steps/s
of a hand-written single-model loop, raywae R = 1 (Trainer) and packs of R models
(Trainer of R configs: vmap over stacked weights; also a hand-written pack of explicit batched
matmuls, to say which is faster), per model and in total; the metric pass per model; the
projected wall time of the full sweep (270 models x 60,000 steps x batch 100); the fraction
of the device's measured matmul peak it reaches and what bounds it.

    python bench/paper_speed.py                                   # cuda if available
    python bench/paper_speed.py --device cpu --threads 2 --packs 2 4 --steps 5 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import SUBGRID, fc_layers, minimal_loop  # noqa: E402

from raywae.config import from_dict, override  # noqa: E402
from raywae.data import FactorGrid, load_dsprites  # noqa: E402
from raywae.metrics import encode_grid, higgins_many  # noqa: E402
from raywae.metrics.dci import dci  # noqa: E402
from raywae.train import Trainer, resolve_device  # noqa: E402

PAPER_MODELS, PAPER_STEPS, PAPER_BATCH = 270, 60_000, 100
GRID_IMAGES = 737_280

Run = Callable[[int], None]


def fc_flops_per_image(hidden: int, d: int = 16) -> float:
    """Forward + backward FLOPs of the Higgins FC auto-encoder per image (3x the forward's
    2·MACs; activations, loss and Adam are not counted)."""
    return 3 * 2 * sum(i * o for i, o in fc_layers(hidden, d))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Run, steps: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    run(steps)
    sync(device)
    return time.perf_counter() - start


def matmul_peak(
    device: torch.device, n: int = 2048, reps: int = 10, dtype: torch.dtype = torch.float32
) -> float:
    """Measured FLOP/s of an n x n matmul in `dtype` (the device's practical compute ceiling;
    fp32 runs on TF32 tensor cores where the caller allows TF32)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def bmm_pack_loop(images: torch.Tensor, r: int, batch: int, hidden: int, d: int) -> Run:
    """A hand-written pack: R β-VAEs as explicit batched matmuls (HFTA's way)."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(4096, hidden), (hidden, hidden), (hidden, 2 * d)]
    shapes += [(d, hidden), (hidden, hidden), (hidden, hidden), (hidden, 4096)]
    ws = [
        ((torch.rand(r, i, o, generator=gen) * 2 - 1) * (6 / (i + o)) ** 0.5).to(images.device)
        for i, o in shapes
    ]
    bs = [torch.zeros(r, 1, o, device=images.device) for _, o in shapes]
    params = [p.requires_grad_() for p in ws + bs]
    opt = torch.optim.Adam(params, lr=1e-3, **({"fused": True} if images.is_cuda else {}))

    def layer(h: torch.Tensor, k: int) -> torch.Tensor:
        return torch.baddbmm(bs[k], h, ws[k])

    def run(steps: int) -> None:
        for _ in range(steps):
            pick = torch.randint(images.shape[0], (r * batch,), device=images.device)
            x = images[pick].view(r, batch, 4096)
            h = F.relu(layer(F.relu(layer(x, 0)), 1))
            mu, lv = layer(h, 2).chunk(2, -1)
            mu, lv = torch.tanh(mu), lv.clamp(-16, 10)
            z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
            h = torch.tanh(layer(torch.tanh(layer(torch.tanh(layer(z, 3)), 4)), 5))
            recon = F.binary_cross_entropy_with_logits(layer(h, 6), x, reduction="sum") / batch
            kl = 0.5 * (mu.pow(2) + lv.exp() - 1 - lv).sum(-1).mean(-1).sum()
            opt.zero_grad(set_to_none=True)
            (recon + kl).backward()
            opt.step()

    return run


def measure(
    runs: dict[str, tuple[Run, int]], steps: int, rounds: int, warmup: int, device
) -> dict[str, list[float]]:
    """Alternating rounds: name -> steps/s per round (each run: (fn, models per step))."""
    for run, _ in runs.values():
        timed(run, warmup, device)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (run, _) in runs.items():
            rates[name].append(steps / timed(run, steps, device))
    return rates


def metric_pass(
    encode: Callable[[], np.ndarray],
    grid: FactorGrid,
    device: torch.device,
    higgins_steps: int,
    with_dci: bool = True,
) -> dict:
    """Seconds per model of the final metrics of R models at once: encode() gives their code
    tables (R, len(grid), d) (timed, scaled to the 737,280 images of the full grid); Higgins
    on 4 + 5 factors x 3 runs for all R in one batched fit (paper preset; timed at
    higgins_steps and 2 x higgins_steps Adagrad steps, extrapolated to 100,000: the points'
    drawing is paid once, not per step); DCI (histogram GBT, one model; with_dci)."""
    encode()  # warm-up
    start = time.perf_counter()
    codes = encode()
    r = len(codes)
    encode_s = (time.perf_counter() - start) * GRID_IMAGES / len(grid) / r
    fits = []
    for steps in (higgins_steps, 2 * higgins_steps):
        start = time.perf_counter()
        higgins_many(list(codes), grid, (4, 5), "rubenstein2018", 3, range(r), steps, device=device)
        sync(device)
        fits.append(time.perf_counter() - start)
    per_step = max(fits[1] - fits[0], 0.0) / higgins_steps
    out = {"encode": encode_s, "higgins": (fits[0] + per_step * (100_000 - higgins_steps)) / r}
    if with_dci:
        start = time.perf_counter()
        dci(codes[0], grid)
        out["dci"] = time.perf_counter() - start
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--packs", type=int, nargs="*", default=[4, 10, 30], help="pack sizes R")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=1200)
    ap.add_argument("--no-bmm", action="store_true", help="skip the hand-written bmm packs")
    ap.add_argument("--no-metrics", action="store_true", help="skip the metric pass")
    ap.add_argument(
        "--higgins-steps",
        type=int,
        default=2000,
        help="timed, and twice that; extrapolated to 100k",
    )
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (CUDA)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device = resolve_device(args.device)
    ds = load_dsprites("procedural", grid=FactorGrid.dsprites().subgrid(SUBGRID))
    base = from_dict(
        {
            "model": {"hidden": args.hidden},
            "objective": {"name": "beta_vae", "beta": 1.0},
            "train": {"steps": 10**9, "report_every": 10**6, "device": str(device)},
        }
    )
    train_idx, _ = ds.split(seed=0)
    images = torch.from_numpy(ds.images(train_idx).reshape(len(train_idx), 4096)).float()
    images = images.to(device)
    runs: dict[str, tuple[Run, int]] = {
        "hand-written loop": (minimal_loop(images, PAPER_BATCH, args.hidden, 16, seed=0), 1)
    }
    solo = Trainer(base, ds)
    runs["raywae R=1"] = (lambda n: solo.run(steps=n), 1)
    packs = {}
    for r in args.packs:
        pack = packs[r] = Trainer([override(base, {"seed": s}) for s in range(r)], ds)
        runs[f"raywae pack R={r}"] = (lambda n, p=pack: p.run(steps=n), r)
        if not args.no_bmm:
            runs[f"hand bmm pack R={r}"] = (
                bmm_pack_loop(images, r, PAPER_BATCH, args.hidden, 16),
                r,
            )
    rates = measure(runs, args.steps, args.rounds, args.warmup, device)
    peak = matmul_peak(device)
    flops = fc_flops_per_image(args.hidden)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {device} ({name}), "
        f"threads {torch.get_num_threads()}, FC hidden {args.hidden}, batch {PAPER_BATCH}, "
        f"beta-VAE, {args.rounds} rounds x {args.steps} steps; tf32 {args.tf32}"
    )
    print(f"measured fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    hand = statistics.median(rates["hand-written loop"])
    print(
        f"{'':22s} {'steps/s':>8s} {'img/s/model':>12s} {'img/s total':>12s} "
        f"{'x hand':>7s} {'% peak':>7s}"
    )
    best_name, best_total = "", 0.0
    for name, (_, r) in runs.items():
        sps = statistics.median(rates[name])
        total = sps * r * PAPER_BATCH
        ratio = statistics.median(
            a * r / b for a, b in zip(rates[name], rates["hand-written loop"])
        )
        print(
            f"{name:22s} {sps:8.2f} {sps * PAPER_BATCH:12.0f} {total:12.0f} "
            f"{ratio:7.2f} {100 * total * flops / peak:6.1f}%"
        )
        if name.startswith("raywae") and total > best_total:
            best_name, best_total = name, total
    print(f"raywae R=1 / hand-written loop: {statistics.median(rates['raywae R=1']) / hand:.3f}")

    # What bounds the step: the same step at batch 2 costs the fixed per-step overhead.
    tiny = override(base, {"train.batch_size": 2})
    tiny_trainer = Trainer(tiny, ds)
    tiny_sps = statistics.median(
        measure({"t": (lambda n: tiny_trainer.run(steps=n), 1)}, args.steps, 3, 2, device)["t"]
    )
    solo_sps = statistics.median(rates["raywae R=1"])
    print(
        f"R=1 overhead floor: {tiny_sps:.1f} steps/s at batch 2 vs {solo_sps:.1f} at batch 100: "
        f"fixed per-step cost (weight update, launches, Python) is "
        f"{100 * solo_sps / tiny_sps:.0f}% of a step"
    )
    best_frac = best_total * flops / peak
    bound = (
        "compute (near the matmul peak)"
        if best_frac > 0.5
        else "fixed per-step cost: the weight update, launches, Python (not the batch)"
        if solo_sps / tiny_sps > 0.5 and best_name == "raywae R=1"
        else "memory / small-kernel efficiency (below the matmul peak, not overhead-bound)"
    )
    per_model = {}
    if not args.no_metrics:
        passes = {"R=1": lambda: encode_grid(solo.model, ds, progress=False)[None]}
        passes |= {f"R={r}": lambda p=p: p.code_tables(ds.grid) for r, p in packs.items()}
        for name, encode in passes.items():
            figures = metric_pass(encode, ds.grid, device, args.higgins_steps)
            print(
                f"metric pass per model, {name} at once: "
                + ", ".join(f"{k} {v:.1f} s" for k, v in figures.items())
                + " (encode over the full grid; Higgins extrapolated to 100,000 Adagrad steps)"
            )
            per_model = min(per_model, figures, key=lambda f: sum(f.values()) if f else 1e99)
    train_s = PAPER_MODELS * PAPER_STEPS * PAPER_BATCH / best_total
    metric_s = PAPER_MODELS * sum(per_model.values())
    print(
        f"projected paper sweep ({PAPER_MODELS} x {PAPER_STEPS:,} steps) with {best_name}: "
        f"training {train_s / 3600:.2f} h + metrics {metric_s / 3600:.2f} h "
        f"= {(train_s + metric_s) / 3600:.2f} h on this device; "
        f"{100 * best_frac:.1f}% of the measured matmul peak; bound: {bound}"
    )


if __name__ == "__main__":
    main()
