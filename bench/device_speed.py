"""The device check's speed sections: matmul and copy peaks; steps/s and img/s of a hand loop,
raywae R = 1 and packs (vmap, and hand-written batched matmuls) in fp32 / TF32 / bf16 with
their peak memory; what bounds a step; the metric pass per model; the projected paper sweep.
Each takes the check's Context, reads the figures earlier ones left on it and adds its own."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from paper_speed import (
    PAPER_BATCH,
    PAPER_MODELS,
    PAPER_STEPS,
    bmm_pack_loop,
    fc_flops_per_image,
    matmul_peak,
    measure,
    metric_pass,
    sync,
)
from train_throughput import minimal_loop

from raywae.config import override
from raywae.data import FactorGrid, load_dsprites
from raywae.families import FAMILIES
from raywae.train import Trainer, recon_error

if TYPE_CHECKING:
    from device_check import Context

Run = Callable[[int], None]
TEST_IMAGES = 73_728  # the full test split (PROTOCOL §2)
GOAL_S = 20 * 60  # the paper sweep in <= 20 minutes on one H100 / H200
PRECISIONS = ("fp32", "tf32", "bf16")
# search_spaces/paper.yaml's arms, 90 models each (9 grid points x 10 seeds); one point each
PAPER_ARMS = {
    "beta_vae": {"objective.beta": 10.0},
    "wae_gaussian": {"objective.lp_lambda": 1.0},
    "wae_box": {"objective.lp_lambda": 1.0},
}
# Bytes a step moves per weight: fp32 weights read in the forward and the backward pass, the
# gradient written, fused Adam reading weight, gradient and both moments and writing three.
BYTES_PER_WEIGHT = 10 * 4


def autocast_run(run: Run, name: str, device: torch.device) -> Run:
    """A hand-written loop in `name` precision: bf16 is autocast around its whole step."""
    if name != "bf16":
        return run

    def in_bf16(steps: int) -> None:
        with torch.autocast(device.type, torch.bfloat16):
            run(steps)

    return in_bf16


def copy_bandwidth(device: torch.device, mib: int = 1024, reps: int = 10) -> float:
    """Bytes read + written per second by a device-to-device copy (the memory roofline)."""
    a = torch.empty(mib * 2**18, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        b.copy_(a)
    sync(device)
    return 2 * a.nbytes * reps / (time.perf_counter() - start)


def train_images(ctx: Context) -> torch.Tensor:
    """The train split as float images on the device (what the hand-written loops index)."""
    train, _ = ctx.ds.split(seed=0)
    return torch.from_numpy(ctx.ds.images(train).reshape(len(train), 4096)).float().to(ctx.device)


def peaks(ctx: Context) -> dict[str, Any]:
    n = ctx.s.matmul_n if ctx.cuda else min(ctx.s.matmul_n, 2048)  # a CPU takes minutes at 8192
    for name in PRECISIONS:
        with ctx.precision(name):
            dtype = torch.bfloat16 if name == "bf16" else torch.float32
            ctx.peaks[name] = matmul_peak(ctx.device, n, dtype=dtype)
    ctx.peaks["bandwidth"] = copy_bandwidth(ctx.device, mib=1024 if ctx.cuda else 64)
    figures = {f"{p} matmul {n}^3 TFLOP/s": ctx.peaks[p] / 1e12 for p in PRECISIONS}
    return {"figures": figures | {"device copy GB/s (read + write)": ctx.peaks["bandwidth"] / 1e9}}


@dataclass
class Timed:
    """One speed run: its step function, models per step, peak memory, its trainer."""

    run: Run
    r: int
    kind: str  # hand / raywae / bmm
    memory_mib: float | None
    last: dict[int, dict[str, float]] = field(default_factory=dict)


def build(ctx: Context, make: Callable[[], Timed]) -> Timed:
    """make() and its warm-up steps, with the peak device memory they took (CUDA)."""
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
        before = torch.cuda.memory_allocated(ctx.device)
    timed = make()
    timed.run(ctx.s.warmup)
    sync(ctx.device)
    if ctx.cuda:
        timed.memory_mib = (torch.cuda.max_memory_allocated(ctx.device) - before) / 2**20
    return timed


def speed_group(ctx: Context, name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Every run of one precision, timed in alternating rounds: table rows, and the runs that
    could not be built (why)."""
    s, images, errors = ctx.s, train_images(ctx), []

    def raywae(r: int) -> Timed:
        cfg = ctx.config(precision="bf16" if name == "bf16" else "fp32")
        trainer = Trainer([override(cfg, {"seed": i}) for i in range(r)], ctx.ds)
        timed = Timed(lambda n: None, r, "raywae", None)
        timed.run = lambda n: timed.last.update(trainer.run(steps=n))
        return timed

    def hand(r: int) -> Timed:
        if r == 1:
            loop = minimal_loop(images, PAPER_BATCH, s.hidden, 16, seed=0)
        else:
            loop = bmm_pack_loop(images, r, PAPER_BATCH, s.hidden, 16)
        return Timed(autocast_run(loop, name, ctx.device), r, "hand" if r == 1 else "bmm", None)

    makers = {"hand loop": lambda: hand(1), "raywae R=1": lambda: raywae(1)}
    for r in s.packs:
        makers |= {
            f"raywae vmap R={r}": lambda r=r: raywae(r),
            f"hand bmm R={r}": lambda r=r: hand(r),
        }
    runs: dict[str, Timed] = {}
    with ctx.precision(name):
        for run_name, make in makers.items():
            try:
                runs[run_name] = build(ctx, make)
            except Exception as err:  # e.g. bf16 where the device has no bf16 arithmetic
                errors.append(f"{name} {run_name}: {type(err).__name__}: {err}")
        rates = measure(
            {n: (t.run, t.r) for n, t in runs.items()}, s.speed_steps, s.rounds, 0, ctx.device
        )
    hand_rates = rates.get("hand loop")
    flops, peak = fc_flops_per_image(s.hidden), ctx.peaks.get(name)
    rows = []
    for run_name, t in runs.items():
        sps = statistics.median(rates[run_name])
        total = sps * t.r * PAPER_BATCH
        paired = hand_rates and statistics.median(
            a * t.r / b for a, b in zip(rates[run_name], hand_rates)
        )
        loss = statistics.mean(v["train/loss"] for v in t.last.values()) if t.last else None
        rows.append(
            {
                "precision": name,
                "run": run_name,
                "kind": t.kind,
                "R": t.r,
                "steps/s": sps,
                "img/s/model": sps * PAPER_BATCH,
                "img/s total": total,
                "x hand": paired or None,
                "% peak": 100 * total * flops / peak if peak else None,
                "peak MiB": t.memory_mib,
                "train/loss": loss,
            }
        )
    return rows, errors


def speed(ctx: Context) -> dict[str, Any]:
    """fp32, TF32 and bf16 groups; a group that the budget's remainder cannot hold (judged by
    the last group's time, keeping reserve_s for the metric pass) is skipped and said so."""
    notes, errors, last_s = [], [], 0.0
    for name in PRECISIONS:
        left = ctx.report.left() - ctx.s.reserve_s
        if ctx.speed_rows and left < 1.2 * last_s:
            notes.append(
                f"{name} skipped: {left:.0f} s of the budget left, a group takes {last_s:.0f} s"
            )
            continue
        start = time.perf_counter()
        try:
            rows, errs = speed_group(ctx, name)
        except Exception as err:  # e.g. out of memory while timing: the other groups still run
            rows, errs = [], [f"{name}: {type(err).__name__}: {err}"]
        ctx.speed_rows += rows
        errors += errs
        if ctx.cuda:
            torch.cuda.empty_cache()
        last_s = time.perf_counter() - start
        print_rows(rows, f"{name} ({last_s:.0f} s)")
    if not ctx.cuda:
        notes.append("the TF32 flags have no effect on the CPU: its tf32 rows are fp32")
    notes += [f"failed: {e}" for e in errors]
    return {"rows": ctx.speed_rows, "notes": notes}


def print_rows(rows: list[dict[str, Any]], title: str) -> None:
    print(f"  {title}")
    heads = ("steps/s", "img/s/model", "img/s total", "x hand", "% peak", "MiB")
    print(f"  {'':20s} " + " ".join(f"{h:>11s}" for h in heads))
    for r in rows:
        cells = [r[k] for k in ("steps/s", "img/s/model", "img/s total", "x hand", "% peak")]
        cells.append(r["peak MiB"])
        line = " ".join(f"{v:11.4g}" if v is not None else f"{'-':>11s}" for v in cells)
        print(f"  {r['run']:20s} {line}", flush=True)


def best_rows(ctx: Context) -> dict[str, dict[str, Any]]:
    """The fastest raywae setting overall and in fp32 (the paper's arithmetic)."""
    ours = [r for r in ctx.speed_rows if r["kind"] == "raywae"]
    if not ours:
        raise RuntimeError("no raywae speed figures (the speed section did not run or failed)")
    best = {"best": max(ours, key=lambda r: r["img/s total"])}
    fp32 = [r for r in ours if r["precision"] == "fp32"]
    return best | ({"best fp32": max(fp32, key=lambda r: r["img/s total"])} if fp32 else {})


def paper_mix(ctx: Context) -> dict[str, Any]:
    """The best setting's pack for each arm of search_spaces/paper.yaml (90 models each: β-VAE,
    WAE-MMD Gaussian, WAE-MMD box), timed in alternating rounds: MMD adds kernels per step."""
    best = best_rows(ctx)["best"]
    p, r = best["precision"], best["R"]
    base = ctx.config(precision="bf16" if p == "bf16" else "fp32")
    runs = {}
    with ctx.precision(p):
        for arm, settings in PAPER_ARMS.items():
            cfg = override(base, FAMILIES[arm].preset | settings)
            trainer = Trainer([override(cfg, {"seed": i}) for i in range(r)], ctx.ds)
            runs[arm] = (lambda n, t=trainer: t.run(steps=n), r)
        rates = measure(runs, ctx.s.speed_steps, ctx.s.rounds, ctx.s.warmup, ctx.device)
    beta = statistics.median(rates["beta_vae"])
    for arm, rate in rates.items():
        sps = statistics.median(rate)
        ctx.mix_rows.append(
            {"arm": arm, "setting": f"{best['run']}, {p}", "steps/s": sps}
            | {"img/s total": sps * r * PAPER_BATCH, "x beta_vae": sps / beta}
        )
    notes = [f"one grid point per arm: {PAPER_ARMS}; the paper's lam 400, p 1"]
    return {"rows": ctx.mix_rows, "notes": notes}


def bound(ctx: Context) -> dict[str, Any]:
    """What bounds the best setting's step (and R = 1's): its compute at the measured matmul
    peak, its weight traffic at the measured copy bandwidth, or the fixed per-step cost (the
    same step at batch 2, less its weight traffic: launches, Python)."""
    best = best_rows(ctx)["best"]
    targets = [best] + [
        r
        for r in ctx.speed_rows
        if r["kind"] == "raywae" and r["R"] == 1 and r["precision"] == best["precision"]
    ]
    for row in targets[: 2 if best["R"] > 1 else 1]:
        p, r = row["precision"], row["R"]
        cfg = ctx.config(batch_size=2, precision="bf16" if p == "bf16" else "fp32")
        with ctx.precision(p):
            tiny = Trainer([override(cfg, {"seed": i}) for i in range(r)], ctx.ds)
            rate = measure(
                {"t": (lambda n, t=tiny: t.run(steps=n), r)},
                ctx.s.speed_steps,
                ctx.s.rounds,
                ctx.s.warmup,
                ctx.device,
            )["t"]
        weights_n = sum(t.numel() for t in tiny.models[0].parameters()) * r
        step_ms = 1e3 / row["steps/s"]
        parts = {
            "compute": 1e3 * fc_flops_per_image(ctx.s.hidden) * PAPER_BATCH * r / ctx.peaks[p],
            "memory": 1e3 * BYTES_PER_WEIGHT * weights_n / ctx.peaks["bandwidth"],
        }
        floor_ms = 1e3 / statistics.median(rate)
        parts["launches"] = max(floor_ms - parts["memory"], 0.0)
        what = max(parts, key=parts.get)
        if parts[what] < step_ms / 2:  # no floor explains the step: its kernels run below them
            what = f"kernel efficiency (no floor is half the step; the largest: {what})"
        ctx.bounds.append(
            {
                "precision": p,
                "run": row["run"],
                "step ms": step_ms,
                "compute floor ms": parts["compute"],
                "memory floor ms": parts["memory"],
                "batch-2 step ms": floor_ms,
                "launch/Python ms": parts["launches"],
                "bound": what,
                "floor share of step": max(parts.values()) / step_ms,
            }
        )
    notes = [
        "compute floor: FC FLOPs (3 x 2 x MACs per image) at the measured matmul peak of the "
        "precision; memory floor: 40 bytes per weight per step (weights read twice, gradient "
        "written, fused Adam 4 reads + 3 writes) at the measured copy bandwidth; launch/Python: "
        "the same step at batch 2, less its memory floor"
    ]
    return {"rows": ctx.bounds, "notes": notes}


def metrics(ctx: Context) -> dict[str, Any]:
    """The final metric pass per model, at R = 1 and at the largest pack (one encoding pass and
    one batched Higgins fit for all R), and the test recon over the full test split."""
    start = time.perf_counter()
    ds = load_dsprites("procedural", grid=FactorGrid.dsprites().subgrid(ctx.s.metric_grid))
    render_s = time.perf_counter() - start
    cfg = ctx.config()
    recon_s = None
    with ctx.precision("fp32"):
        for r in sorted({1, max(ctx.s.packs)}):
            trainer = Trainer([override(cfg, {"seed": i}) for i in range(r)], ds)
            trainer.run(steps=2)
            figs = metric_pass(
                lambda t=trainer: t.code_tables(ds.grid),
                ds.grid,
                ctx.device,
                ctx.s.higgins_steps,
                ctx.s.with_dci,
            )
            if recon_s is None:  # per model whatever R: evaluation runs model by model
                gen = torch.Generator(ctx.device).manual_seed(0)
                pick = torch.randint(
                    len(trainer.test_index), (ctx.s.eval_images,), generator=gen, device=ctx.device
                )
                sync(ctx.device)
                t0 = time.perf_counter()
                bs = cfg.train.eval_batch_size
                recon_error(trainer.model, trainer.rows, trainer.test_index[pick], bs, gen, False)
                recon_s = (time.perf_counter() - t0) * TEST_IMAGES / ctx.s.eval_images
            paper = figs["encode"] + figs["higgins"] + recon_s
            ctx.metric_rows.append(
                {"R": r, "encode s": figs["encode"], "higgins s": figs["higgins"]}
                | {"test recon s": recon_s, "dci s (beyond the paper)": figs.get("dci")}
                | {"paper metrics s/model": paper}
            )
            del trainer
    notes = [
        f"encode timed on {len(ds.grid):,} images, scaled to the full grid (737,280); Higgins: "
        "4 + 5 factors x 3 runs, every model's fits in one batched fit, timed at "
        f"{ctx.s.higgins_steps} and {2 * ctx.s.higgins_steps} Adagrad steps, extrapolated to "
        f"100,000; test recon: {ctx.s.eval_images:,} test images (z sampled and z = mean), "
        "scaled to the 73,728 of the test split"
    ]
    return {"rows": ctx.metric_rows, "figures": {"render s": render_s}, "notes": notes}


def projection(ctx: Context) -> dict[str, Any]:
    """search_spaces/paper.yaml (270 models x 60,000 steps x batch 100, then their metrics) on
    this device at the best setting, against the goal of 20 minutes."""
    figures: dict[str, Any] = {}
    # WAE steps cost what the paper mix measured (relative to β-VAE at the best setting)
    mix = {m["arm"]: m["x beta_vae"] for m in ctx.mix_rows} or {"beta_vae": 1.0}
    slowdown = statistics.mean(1 / mix.get(arm, mix["beta_vae"]) for arm in PAPER_ARMS)
    for label, row in best_rows(ctx).items():
        train_s = PAPER_MODELS * PAPER_STEPS * PAPER_BATCH / row["img/s total"] * slowdown
        near = min(ctx.metric_rows, key=lambda m: abs(m["R"] - row["R"]), default=None)
        metric_s = PAPER_MODELS * near["paper metrics s/model"] if near else float("nan")
        figures |= {
            f"{label}: setting": f"{row['run']}, {row['precision']}",
            f"{label}: training min": train_s / 60,
            f"{label}: metrics min": metric_s / 60,
            f"{label}: total min": (train_s + metric_s) / 60,
            f"{label}: meets {GOAL_S // 60} min": train_s + metric_s <= GOAL_S,
            f"{label}: total / goal": (train_s + metric_s) / GOAL_S,
            f"{label}: % of measured matmul peak": row["% peak"],
        }
    if ctx.bounds:
        b = ctx.bounds[0]
        figures["bound (best setting)"] = (
            f"{b['bound']} (the largest floor is {100 * b['floor share of step']:.0f}% of a step)"
        )
    notes = [
        "training: 270 x 60,000 steps x batch 100 at the setting's β-VAE img/s, times the paper "
        f"mix's mean step cost relative to β-VAE ({slowdown:.3g}: "
        + ("measured at the best setting" if ctx.mix_rows else "not measured, taken as 1")
        + "); metrics per model from the measured R nearest the setting's"
    ]
    if ctx.device.type != "cuda":
        notes.append("not a GPU: these figures test the code only")
    return {"figures": figures, "notes": notes}
