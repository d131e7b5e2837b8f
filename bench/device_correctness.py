"""The device check's correctness sections: a solo run on the device vs the CPU run of its
seed (on the same inputs), a pack vs its solo runs, the NaN check per report window, and the
checkpoint round trip. Each takes the check's Context and returns its checks and figures."""

from __future__ import annotations

import statistics
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from device_report import Check, at_most, equal

from raywae.checkpoint import load_checkpoint, save_atomic
from raywae.config import Config, from_dict, override
from raywae.families import FAMILIES
from raywae.train import NonFiniteLossError, Trainer

if TYPE_CHECKING:
    from device_check import Context

Weights = dict[str, torch.Tensor]

# Tolerances. The reference: on the CPU, vmap pack members vs the solo runs of their seeds (the
# same inputs; batched and plain kernels round differently, as CUDA's and the CPU's do), paper
# network, batch 100, packs of 2 and 4. Step 1's loss: <= 2e-7 apart (same weights, same
# inputs: the forward pass's rounding only); then the gap grows about 10x per 10 steps: <= 4e-6
# by step 10 (worst of 4 members), 2e-5 by step 20, 1 % by step 50. Weights after 10 steps:
# ||w_a - w_b|| / ||w_b - w_0|| = 2.7e-3 to 8e-3, yet max |w_a - w_b| = 5e-3 to 7e-3: Adam
# divides each gradient by its own running scale, so a few of the 14 M weights whose gradients
# are ~rounding move by up to lr = 1e-3 per step either way (tests/test_pack.py's 1e-4 holds at
# hidden 32 only). Later the runs are as far apart as two seeds: training is chaotic on the
# plateau before the positions are learnt, and one run leaves it a hundred steps before the
# other. test/recon_mean: 20 % apart at step 300, 26 % at 400 (seeds 0-2: up to 39 %); the mean
# loss over steps 1-300, where both sat on the plateau: 0.15 % (seeds: up to 4.2 %). So: tight
# limits for the first steps (>= 12x the reference), loose ones a few hundred steps on.
STEP1_RTOL = 1e-5  # train/loss of step 1: same weights, same inputs
EARLY_RTOL = 1e-4  # train/loss of each of the first steps
DRIFT_RTOL = 0.1  # ||w_a - w_b|| / ||w_b - w_0|| after the first steps
RECON_RTOL = 1e-3  # test/recon after the first steps, same evaluation noise (ref: 2e-7)
MEAN_LOSS_RTOL = 0.1  # the mean train/loss over a few hundred steps
GROSS_RTOL = 0.5  # test/recon_mean a few hundred steps on: only a broken run is further off
TEST_PACK_TOL = 1e-4  # tests/test_pack.py's rtol = atol on weights, its own small setting
TEST_PACK = {  # tests/test_pack.py's beta_vae setting: 12 steps
    "model": {"hidden": 32, "latent_dim": 4},
    "objective": {"name": "beta_vae", "beta": 4.0, "lp_lambda": 0.1},
    "train": {"batch_size": 16, "report_every": 1},
}


# --- helpers ----------------------------------------------------------------------------------
class CpuDrawn(Trainer):
    """A Trainer whose batches and noise come from CPU generators seeded as its own: on any
    device it sees the very inputs of the CPU run of its seeds (a CUDA generator draws another
    stream), so the two runs differ by their kernels only. Mirrors Trainer._inputs (β-VAE: no
    side networks); on the CPU it equals a Trainer bit for bit (the smoke test checks that)."""

    def __init__(self, cfgs: Config | list[Config], ds: Any) -> None:
        super().__init__(cfgs, ds)
        self.data_gens = [torch.Generator().manual_seed(g.initial_seed()) for g in self.data_gens]
        self.noise_gens = [torch.Generator().manual_seed(g.initial_seed()) for g in self.noise_gens]

    def _inputs(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n, bs = self.train_index.shape[0], self.cfg.train.batch_size
        picks = torch.cat(
            [torch.randint(n, (bs,), generator=self.data_gens[i]) for i in self.active]
        )
        x = self.rows(self.train_index[picks.to(self.device)]).view(len(self.active), bs, -1)
        shape = torch.empty(bs, 1)  # draws() reads the batch size, dtype and device from x
        draws = [self.objectives[0].draws(shape, self.noise_gens[i]) for i in self.active]
        out = {k: torch.stack([d[k] for d in draws]).to(self.device) for k in draws[0]}
        return x, out | {"step": x.new_full((len(self.active),), float(self.step))}


def weights(trainer: Trainer, member: int = 0) -> Weights:
    """Model `member`'s weights, copied to the CPU."""
    return {n: t.detach().cpu().clone() for n, t in trainer.member_state(member)["model"].items()}


def drift(a: Weights, b: Weights, w0: Weights) -> dict[str, float]:
    """How far apart two runs from the same init w0 are: ||a - b|| / ||b - w0|| (relative to
    how far training moved), max |a - b|, and the fraction of weights more than 1e-4 apart."""
    diff = sum(float(((a[n] - b[n]).double() ** 2).sum()) for n in a) ** 0.5
    moved = sum(float(((b[n] - w0[n]).double() ** 2).sum()) for n in a) ** 0.5
    far = sum(int(((a[n] - b[n]).abs() > 1e-4).sum()) for n in a)
    return {
        "rel_l2": diff / max(moved, 1e-30),
        "max_abs": max(float((a[n] - b[n]).abs().max()) for n in a),
        "frac_over_1e-4": far / sum(t.numel() for t in a.values()),
    }


def losses(trainer: Trainer, steps: int) -> dict[int, list[float]]:
    """Train `steps` more; model -> its train/loss per report window."""
    out: dict[int, list[float]] = defaultdict(list)

    def keep(_: Trainer, logs: dict) -> None:
        for i, log in logs.items():
            out[i].append(log["train/loss"])

    trainer.run(steps=steps, callback=keep)
    return out


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def worst_rel(a: list[float], b: list[float]) -> float:
    return max(rel(x, y) for x, y in zip(a, b, strict=True))


def nan_noise(trainer: Trainer, member: int, step: int) -> None:
    """Model `member`'s posterior noise of 1-based training step `step` is NaN: z = μ + σ·NaN,
    so its recon term goes NaN while the KL stays finite (tests/faults.py's fault)."""
    objective, gen = trainer.objectives[0], trainer.noise_gens[member]
    original = objective.draws

    def noise(x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        out = original(x, generator)
        if generator is gen and trainer.step + 1 == step:
            out = {**out, "eps": torch.full_like(out["eps"], float("nan"))}
        return out

    objective.draws = noise


def count_syncs(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Host-device synchronisations while fn() runs (CUDA's sync debug mode), or None where
    they cannot be counted (CPU, or the mode's warnings did not show on a known sync)."""
    if device.type != "cuda":
        fn()
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            torch.zeros(1, device=device).item()  # a known sync: the count works
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    n = sum("synchroniz" in str(w.message) for w in caught)
    return n - 1 if n else None


def cuda_vs_cpu(ctx: Context) -> dict[str, Any]:
    """A solo run on this device vs the CPU run of its seed, on the same inputs (CpuDrawn)."""
    k, n = ctx.s.early_steps, ctx.s.compare_steps
    cfg = ctx.config(report_every=1)
    with ctx.precision("fp32"):
        cpu = Trainer(override(cfg, {"train.device": "cpu"}), ctx.ds)
        dev = CpuDrawn(cfg, ctx.ds)
        w0 = weights(cpu)
        a, b = losses(cpu, k)[0], losses(dev, k)[0]
        early = drift(weights(dev), weights(cpu), w0)
        a += losses(cpu, n - k)[0]
        b += losses(dev, n - k)[0]
        ra, rb = cpu.evaluate(), dev.evaluate()
    mean_rel = rel(statistics.mean(b), statistics.mean(a))
    figures = {
        f"loss rel diff at step {i}": rel(b[i - 1], a[i - 1]) for i in sorted({1, k, n // 2, n})
    }
    figures |= {f"weights after {k} steps: {key}": v for key, v in early.items()}
    figures |= {f"{key} cpu / {ctx.device.type}": (ra[key], rb[key]) for key in ra}
    checks = [
        at_most("loss rel diff at step 1", rel(b[0], a[0]), STEP1_RTOL),
        at_most(f"max per-step loss rel diff, steps 1-{k}", worst_rel(b[:k], a[:k]), EARLY_RTOL),
        at_most(f"weights ||diff|| / ||moved|| after {k} steps", early["rel_l2"], DRIFT_RTOL),
        at_most(f"mean train/loss of steps 1-{n}, rel diff", mean_rel, MEAN_LOSS_RTOL),
        at_most(
            f"test/recon_mean after {n} steps, rel diff",
            rel(rb["test/recon_mean"], ra["test/recon_mean"]),
            GROSS_RTOL,
        ),
    ]
    if not ctx.cuda:  # the same kernels: CpuDrawn must replay the Trainer's own stream exactly
        checks.append(equal("same device: max |weight diff|", early["max_abs"], 0.0))
    notes = [
        "CUDA's generator draws another stream than the CPU's for the same seed: the device run "
        "gets the CPU run's batches and noise, so only the kernels differ (TF32 off)",
        "test/recon samples z with each device's own evaluation generator; test/recon_mean "
        "(z = mean) is the like-for-like figure",
    ]
    return {"checks": checks, "figures": figures, "notes": notes}


def pack_vs_solo(ctx: Context) -> dict[str, Any]:
    """A pack of R vs the R solo runs of its seeds on this device (the same generators)."""
    r, k = ctx.s.check_pack, ctx.s.early_steps
    small = from_dict(TEST_PACK | {"train": TEST_PACK["train"] | {"device": str(ctx.device)}})
    small = override(small, {"train.steps": 12})
    checks: list[Check] = []
    figures: dict[str, Any] = {}
    with ctx.precision("fp32"):
        for label, cfg, steps in (
            ("paper network", ctx.config(report_every=1), k),
            ("test_pack setting", small, 12),
        ):
            cfgs = [override(cfg, {"seed": s}) for s in range(r)]
            pack = Trainer(cfgs, ctx.ds)
            pack_losses = losses(pack, steps)
            first = loss_rel = recon_rel = l2 = max_abs = 0.0
            close = True
            for m, c in enumerate(cfgs):
                solo = Trainer(c, ctx.ds)
                w0 = weights(solo)
                solo_losses = losses(solo, steps)[0]
                first = max(first, rel(pack_losses[m][0], solo_losses[0]))
                loss_rel = max(loss_rel, worst_rel(pack_losses[m], solo_losses))
                ours, theirs = weights(pack, m), weights(solo)
                d = drift(ours, theirs, w0)
                l2, max_abs = max(l2, d["rel_l2"]), max(max_abs, d["max_abs"])
                close &= all(
                    torch.allclose(ours[n], theirs[n], rtol=TEST_PACK_TOL, atol=TEST_PACK_TOL)
                    for n in ours
                )
                rec = rel(pack.evaluate(member=m)["test/recon"], solo.evaluate()["test/recon"])
                recon_rel = max(recon_rel, rec)
            figures |= {
                f"{label}: step 1 loss rel diff": first,
                f"{label}: max per-step loss rel diff": loss_rel,
                f"{label}: weights ||diff|| / ||moved||": l2,
                f"{label}: max |weight diff|": max_abs,
                f"{label}: test/recon rel diff": recon_rel,
            }
            a, b = weights(pack, 0), weights(pack, 1)
            checks.append(
                equal(f"{label}: members differ", any(not torch.equal(a[n], b[n]) for n in a), True)
            )
            if label == "paper network":
                checks += [
                    at_most(f"{label}: step 1 loss rel diff", first, STEP1_RTOL),
                    at_most(f"{label}: per-step loss rel diff, {k} steps", loss_rel, EARLY_RTOL),
                    at_most(f"{label}: weights ||diff|| / ||moved||", l2, DRIFT_RTOL),
                    at_most(f"{label}: test/recon rel diff", recon_rel, RECON_RTOL),
                ]
            else:
                checks += [
                    equal(f"{label}: weights allclose(rtol=atol={TEST_PACK_TOL:g})", close, True),
                    at_most(f"{label}: per-step loss rel diff", loss_rel, TEST_PACK_TOL),
                    at_most(f"{label}: test/recon rel diff", recon_rel, TEST_PACK_TOL),
                ]
    return {"checks": checks, "figures": figures | {"R": r}}


def nan_window(ctx: Context) -> dict[str, Any]:
    """A NaN at step 13, mid-window (report_every 10): on CUDA it is found at the window's end,
    yet recorded at step 13; the pack mate trains on as a solo run. And the host syncs of clean
    runs (CUDA: the NaN check must not sync per step; WAE-MMD's step included)."""
    window, bad, total = 10, 13, 20
    cfg = ctx.config(report_every=window)
    cfgs = [override(cfg, {"seed": s}) for s in (0, 1)]
    with ctx.precision("fp32"):
        pack = Trainer(cfgs, ctx.ds)
        nan_noise(pack, member=1, step=bad)
        pack.run(steps=total)
        solo, clean = Trainer(cfgs[0], ctx.ds), Trainer(cfgs, ctx.ds)
        wae = Trainer(override(cfgs[0], FAMILIES["wae_gaussian"].preset), ctx.ds)
        w0 = weights(solo)
        syncs = {
            "solo": count_syncs(lambda: solo.run(steps=total), ctx.device),
            "pack R=2": count_syncs(lambda: clean.run(steps=total), ctx.device),
            "WAE-MMD solo": count_syncs(lambda: wae.run(steps=total), ctx.device),
        }
        mate = drift(weights(pack, 0), weights(solo), w0)
        alone = Trainer(cfgs[1], ctx.ds)
        nan_noise(alone, member=0, step=bad)
        try:
            alone.run(steps=total)
            err = None
        except NonFiniteLossError as e:
            err = e
    failed = pack.failed.get(1)
    checks = [
        equal("pack: failed models", sorted(pack.failed), [1]),
        equal(
            "pack: failed (term, step)",
            (failed.term, failed.step) if failed else None,
            ("recon", bad),
        ),
        equal("pack: active after", pack.active, [0]),
        equal("pack: steps done", pack.step, total),
        at_most("pack mate vs its solo run: ||diff|| / ||moved||", mate["rel_l2"], DRIFT_RTOL),
        equal(
            "solo: NonFiniteLossError (term, step)",
            (err.term, err.step) if err else None,
            ("recon", bad),
        ),
    ]
    figures = {
        "report_every": window,
        "NaN injected at step": bad,
        "solo raised at trainer step": alone.step,
        "pack mate max |weight diff|": mate["max_abs"],
    }
    for label, n in syncs.items():
        if n is None:
            figures[f"{label}: host syncs"] = f"not counted on {ctx.device.type}"
            continue
        figures[f"{label}: host syncs in {total} steps ({total // window} windows)"] = n
        checks.append(at_most(f"{label}: host syncs per step", n / total, 0.5))
    return {"checks": checks, "figures": figures}


def checkpoint(ctx: Context) -> dict[str, Any]:
    """state_dict -> save_atomic -> load_checkpoint (read to the CPU, moved to the device) ->
    train on: equals the run that never stopped; a member's slice is a solo checkpoint."""
    k = ctx.s.early_steps // 2 or 1
    cfg = ctx.config(report_every=k)
    checks: list[Check] = []
    figures: dict[str, Any] = {}
    with ctx.precision("fp32"):
        for label, cfgs in (
            ("solo", cfg),
            (
                f"pack R={ctx.s.check_pack}",
                [override(cfg, {"seed": s}) for s in range(ctx.s.check_pack)],
            ),
        ):
            whole = Trainer(cfgs, ctx.ds)
            whole.run(steps=2 * k)
            first = Trainer(cfgs, ctx.ds)
            first.run(steps=k)
            with tempfile.TemporaryDirectory(prefix="raywae-device-check-") as tmp:
                path = Path(tmp) / "state.pt"
                save_atomic(first.state_dict(), path)
                resumed = Trainer(cfgs, ctx.ds)
                load_checkpoint(resumed, path)
                figures[f"{label}: checkpoint MiB"] = path.stat().st_size / 2**20
                saved = torch.load(path, map_location="cpu", weights_only=True)
            resumed.run(steps=k)
            members = range(len(whole.cfgs))
            exact = all(
                torch.equal(a, b)
                for m in members
                for a, b in zip(weights(whole, m).values(), weights(resumed, m).values())
            )
            checks += [equal(f"{label}: step", resumed.step, whole.step)]
            checks += [equal(f"{label}: weights bit-exact after resuming", exact, True)]
            if label != "solo":  # the last member's slice, resumed by a solo Trainer
                last = len(cfgs) - 1
                alone = Trainer(cfgs[last], ctx.ds)
                alone.load_state_dict(saved["members"][last])
                alone.run(steps=k)
                w0 = {n: t.cpu() for n, t in saved["members"][last]["model"].items()}
                d = drift(weights(alone), weights(whole, last), w0)
                checks.append(
                    at_most(f"{label}: last member's slice resumed solo", d["rel_l2"], DRIFT_RTOL)
                )
    return {"checks": checks, "figures": figures}
