"""This CPU's physical limit for raywae's training step and how close the step gets, in one run:
the fp32 and bf16 GEMM rates at the step's own shapes, the memory bandwidth, the step's limit
derived from them, and the hand-written loop's and raywae R = 1's steps/s as a fraction of it
(fp32 and bf16 autocast; 1 and 2 threads); then where raywae's step time goes (torch.profiler).

The step: the paper's FC network (PROTOCOL §3: 4096-1200-1200-2x16 encoder, 16-1200-1200-1200-4096
decoder, 14.2 M weights), batch 100, beta-VAE, forward + backward + Adam. Its limit:
  its GEMMs at the measured GEMM rate: every Linear's forward (x W^T + b), input gradient (dY W;
    not the first layer's, whose input is the images) and weight gradient (dY^T x), timed as
    those very matmuls in that dtype (the rate used; a 2048^3 matmul is shown for reference),
  + Adam's bytes at the measured bandwidth: weights, gradients, exp_avg, exp_avg_sq, each read
    and written (32 bytes per weight; the weights' reads by the GEMMs are in the GEMM time);
    bandwidth: the faster of a copy and an in-place add (a += b) over Adam's working set (4 x
    the weights in float32).
Not in the limit, so what a step may spend above it: activations, loss, bias gradients, the
batch, autocast's weight casts, Python. Every item is timed in each of several rounds that
alternate the items; each figure is the best round (for the GEMMs the fastest of their
repetitions), the one least slowed by other users of shared cores.

    python bench/cpu_limit.py                      # threads 1 and 2, 3 rounds x 10 steps
    python bench/cpu_limit.py --threads 1 --rounds 5 --no-profile
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from device_speed import autocast_run, copy_bandwidth  # noqa: E402
from paper_speed import PAPER_BATCH, matmul_peak  # noqa: E402
from train_throughput import SUBGRID, fc_layers, minimal_loop  # noqa: E402

from raywae.config import from_dict  # noqa: E402
from raywae.data import FactorGrid, load_dsprites  # noqa: E402
from raywae.train import Trainer  # noqa: E402

CPU = torch.device("cpu")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
ADAM_BYTES_PER_WEIGHT = 4 * 2 * 4  # weight, grad, exp_avg, exp_avg_sq; read + write; float32


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def fastest(fn: Callable[[], object], reps: int) -> float:
    """Seconds of the fastest of `reps` calls of fn, after one untimed call."""
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def step_gemms(batch: int, hidden: int, d: int, dtype: torch.dtype) -> tuple[Callable, float]:
    """The matmuls of one training step in `dtype` (see the module docstring), their FLOPs."""
    ops, flops = [], 0.0
    for k, (i, o) in enumerate(fc_layers(hidden, d)):
        x, dy = torch.randn(batch, i, dtype=dtype), torch.randn(batch, o, dtype=dtype)
        w, b = torch.randn(o, i, dtype=dtype) * 0.01, torch.zeros(o, dtype=dtype)
        ops.append(lambda x=x, w=w, b=b: F.linear(x, w, b))  # forward (addmm)
        ops.append(lambda dy=dy, x=x: dy.t() @ x)  # weight gradient
        if k > 0:
            ops.append(lambda dy=dy, w=w: dy @ w)  # input gradient
        flops += 2 * batch * i * o * (3 if k > 0 else 2)

    def run() -> None:
        for op in ops:
            op()

    return run, flops


def inplace_add_bandwidth(weights: int, reps: int = 5) -> float:
    """Bytes/s of a += b over Adam's working set (a, b: two of its four float32 tensors each):
    read a and b, write a in place, as Adam updates its tensors (a copy also reads what it
    overwrites, unless the CPU streams the stores past the cache, so it counts low)."""
    a, b = torch.rand(2 * weights), torch.rand(2 * weights)
    return 3 * a.nbytes / fastest(lambda: a.add_(b), reps)


def trainer(ds, precision: str) -> Trainer:
    cfg = {
        "objective": {"name": "beta_vae", "beta": 1.0},
        # A budget far beyond the bench keeps the learning rate at 1e-3 as in the hand loop.
        "train": {"steps": 10**9, "report_every": 10**6, "device": "cpu", "precision": precision},
    }
    return Trainer(from_dict(cfg), ds)


def measure(threads: int, args, ds, images: torch.Tensor, weights: int) -> dict[str, list]:
    """One thread count: every item once per round, rounds alternating. Returns name -> its
    value per round (GEMM FLOP/s, bandwidth bytes/s, loops' steps/s)."""
    torch.set_num_threads(threads)
    gemms = {p: step_gemms(PAPER_BATCH, 1200, 16, dt) for p, dt in PRECISIONS.items()}
    mib = 8 * weights // 2**20  # a and b, two of Adam's four float32 tensors each
    loops = {}
    for p in PRECISIONS:
        hand = minimal_loop(images, PAPER_BATCH, 1200, 16, seed=0, fused=True)
        loops[f"hand {p}"] = autocast_run(hand, p, CPU)
        solo = trainer(ds, p)
        loops[f"raywae {p}"] = lambda n, solo=solo: solo.run(steps=n)
    for run in loops.values():
        run(args.warmup)
    out: dict[str, list] = {}
    for _ in range(args.rounds):
        row = {f"GEMM {p} step": flops / fastest(g, 3) for p, (g, flops) in gemms.items()}
        for p, dt in PRECISIONS.items():
            row[f"GEMM {p} 2048^3"] = matmul_peak(CPU, 2048, 3, dt)
        row["bandwidth copy"] = copy_bandwidth(CPU, mib, reps=5)
        row["bandwidth add"] = inplace_add_bandwidth(weights)
        row["bandwidth"] = max(row["bandwidth copy"], row["bandwidth add"])
        for name, run in loops.items():
            start = time.perf_counter()
            run(args.steps)
            row[name] = args.steps / (time.perf_counter() - start)
        for k, v in row.items():
            out.setdefault(k, []).append(v)
    return out


def limit_ms(best: dict[str, float], flops: float, precision: str, weights: int) -> tuple:
    """The limit's two parts, ms per step: GEMMs and Adam."""
    gemm = 1e3 * flops / best[f"GEMM {precision} step"]
    return gemm, 1e3 * ADAM_BYTES_PER_WEIGHT * weights / best["bandwidth"]


def profile_step(ds, precision: str, steps: int, parts: tuple[float, float], weights: int):
    """Where raywae R = 1's step time goes (ms per step, torch.profiler self times), beside the
    limit's two parts at this thread count."""
    t = trainer(ds, precision)
    t.run(steps=3)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t.run(steps=steps)
    wall = (time.perf_counter() - start) / steps * 1e3
    groups = {
        "GEMM (mm, addmm)": ("aten::mm", "aten::addmm", "aten::bmm"),
        "Adam (_fused_adam_)": ("aten::_fused_adam_",),
        "dtype casts and copies (copy_)": ("aten::copy_",),
        "batch (unpack, index, randint)": (
            "aten::bitwise_right_shift", "aten::bitwise_and_", "aten::index", "aten::randint",
        ),
    }  # fmt: skip
    spent = {g: 0.0 for g in groups} | {"every other op": 0.0}
    for ev in prof.key_averages():
        group = next((g for g, names in groups.items() if ev.key in names), "every other op")
        spent[group] += ev.self_cpu_time_total / 1e3 / steps
    spent["Python, dispatch, profiler (wall - ops)"] = wall - sum(spent.values())
    adam_gbs = ADAM_BYTES_PER_WEIGHT * weights / spent["Adam (_fused_adam_)"] / 1e6
    print(
        f"raywae R=1 {precision}, {torch.get_num_threads()} threads: {wall:.1f} ms/step under "
        f"the profiler (load {load()}); the limit's parts: GEMM {parts[0]:.1f} ms, Adam "
        f"{parts[1]:.1f} ms (the fused Adam itself streamed {adam_gbs:.1f} GB/s)"
    )
    for group, ms in spent.items():
        print(f"  {group:42s} {ms:7.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per loop and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    ds = load_dsprites("procedural", grid=FactorGrid.dsprites().subgrid(SUBGRID))
    train_idx, _ = ds.split(seed=0)
    images = torch.from_numpy(ds.images(train_idx).reshape(len(train_idx), 4096)).float()
    weights = sum(p.numel() for p in trainer(ds, "fp32").model.parameters())
    flops = {p: step_gemms(PAPER_BATCH, 1200, 16, dt)[1] for p, dt in PRECISIONS.items()}
    three_x = 3 * 2 * PAPER_BATCH * sum(i * o for i, o in fc_layers(1200))
    print(
        f"paper FC network, batch {PAPER_BATCH}, beta-VAE: {weights:,} weights; step GEMMs "
        f"{flops['fp32'] / 1e9:.2f} GFLOP (3x forward: {three_x / 1e9:.2f}); Adam "
        f"{ADAM_BYTES_PER_WEIGHT * weights / 1e6:.0f} MB per step; AMX "
        f"{torch.cpu._is_amx_tile_supported()}, AVX512-BF16 "
        f"{torch.cpu._is_avx512_bf16_supported()}; {args.rounds} rounds x {args.steps} steps"
    )
    best, loads = {}, {}
    for t in args.threads:
        best[t] = {k: max(v) for k, v in measure(t, args, ds, images, weights).items()}
        loads[t] = load()
        for p in PRECISIONS:  # the limit: the step's GEMMs and Adam's bytes at the best rates
            best[t][f"limit {p}"] = 1e3 / sum(limit_ms(best[t], flops[p], p, weights))
    print(f"\n{'threads':32s}" + "".join(f"{t:>16d}" for t in args.threads))
    print(
        f"{'load average (1, 5, 15 min)':32s}" + "".join(f"{loads[t]:>16s}" for t in args.threads)
    )
    rows = [(f"GEMM {p} {s} GFLOP/s", f"GEMM {p} {s}", 1e-9) for p in PRECISIONS
            for s in ("step", "2048^3")]  # fmt: skip
    rows += [(f"bandwidth ({k}) GB/s", f"bandwidth {k}", 1e-9) for k in ("copy", "add")]
    rows += [(f"limit {p} steps/s", f"limit {p}", 1) for p in PRECISIONS]
    for label, key, scale in rows:
        print(f"{label:32s}" + "".join(f"{best[t][key] * scale:16.2f}" for t in args.threads))
    for who in ("hand", "raywae"):
        for p in PRECISIONS:
            cells = []
            for t in args.threads:
                sps = best[t][f"{who} {p}"]
                cells.append(f"{sps:7.2f} ({sps / best[t][f'limit {p}']:4.2f})")
            label = f"{who} {p} steps/s (of limit)"
            print(f"{label:32s}" + "".join(f"{c:>16s}" for c in cells))
    print("(hand: train_throughput.minimal_loop, raywae's fused Adam; bf16: autocast_run's)")
    if not args.no_profile:
        for t in args.threads:
            torch.set_num_threads(t)
            for p in PRECISIONS:
                print()
                parts = limit_ms(best[t], flops[p], p, weights)
                profile_step(ds, p, args.profile_steps, parts, weights)


if __name__ == "__main__":
    main()
