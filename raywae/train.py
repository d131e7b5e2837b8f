"""The training loop for R >= 1 models of one setting (plain PyTorch: no Ray, no MLflow).

`Trainer(cfgs, ds).run(callback=...)` trains R = len(cfgs) runs that differ only in their
seed, each with what a run of its seed has: its init, batches and noise (its own generators,
drawn in the same order), Adam state for the auto-encoder and for every side network of its
objective (WAE-GAN's adversary, ACAI's critic), NaN check, logs and checkpoint
(`member_state(i)`). A model whose loss goes non-finite leaves; the others train on. Two step
strategies compute the same thing: R = 1 steps the modules with plain autograd (a solo run),
R > 1 stacks the weights (R, ...) and runs each loss once under `torch.func.vmap` over
`functional_call` (one set of batched kernels instead of R). Batches are unpacked on the
device. A state_dict resumes bit-identically on the same machine; `evaluate` gives the
PROTOCOL §6 test reconstruction error.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from raywae.config import Config, ConfigError, TrainConfig, to_dict
from raywae.data import Dataset, FactorGrid
from raywae.families import unpackable
from raywae.metrics import encode_grid
from raywae.models import AutoEncoder, Objective, build_model, build_objective
from raywae.models.objectives import Draws
from raywae.progress import Bar, bar_for
from raywae.steps import Solo, Stacked, adam_step

Logs = dict[int, dict[str, float]]  # model index -> its window's logs
Callback = Callable[["Trainer", Logs], None]


ENCODE_BATCH = 8192  # images per encoding pass over a grid (encode_grid's default)
ENCODE_FLOATS = 2**27  # 512 MiB of fp32: the widest activation of all R models in one batch


def widest_activation(encoder: torch.nn.Module, x: torch.Tensor) -> int:
    """Floats per image of the encoder's widest layer output (FC: its hidden width; conv64:
    its first conv's 32 × 32 × 32), from one forward pass of the images x."""
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda m, i, out: sizes.append(out[0].numel()))
        for m in encoder.modules()
        if not list(m.children())
    ]
    try:
        with torch.inference_mode():
            encoder(x)
    finally:
        for hook in hooks:
            hook.remove()
    return max(sizes)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf; `term` and `step` (1-based) say where."""

    def __init__(self, term: str, step: int) -> None:
        self.term, self.step = term, step
        super().__init__(f"loss term {term!r} is not finite at step {step}")

    def __reduce__(self) -> tuple[type, tuple[str, int]]:  # Ray pickles errors across processes
        return type(self), (self.term, self.step)


def unpack_bits(packed: torch.Tensor) -> torch.Tensor:
    """packed: (B, 512) uint8 (np.packbits rows) -> (B, 4096) float32 in {0, 1}, same device."""
    # np.packbits is big-endian: the first pixel is the most significant bit.
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    bits = packed.unsqueeze(-1).bitwise_right_shift(shifts).bitwise_and_(1)
    return bits.view(packed.shape[0], -1).float()


def resolve_device(name: str) -> torch.device:
    """Device name -> torch.device; "auto" is cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Adam step size for 0-based `step`: lr, then lr·lr_decay[i] from lr_milestones[i]·steps."""
    lr = cfg.lr
    for frac, factor in zip(cfg.lr_milestones, cfg.lr_decay):
        if step >= round(frac * cfg.steps):
            lr = cfg.lr * factor
    return lr


def _seeds(seed: int, n: int) -> list[int]:
    """n independent 63-bit seeds derived from the config seed."""
    return [
        int(s.generate_state(1, np.uint64)[0] >> 1) for s in np.random.SeedSequence(seed).spawn(n)
    ]


def check_precision(precision: str, device: torch.device) -> None:
    """A clear error where `precision` (train.precision) has no arithmetic on `device`."""
    if precision == "fp32":
        return
    ok = {
        "cuda": lambda: torch.cuda.is_bf16_supported(including_emulation=False),
        "cpu": lambda: torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported(),
    }.get(device.type, lambda: False)()
    if not ok:
        raise ConfigError(
            "train.precision",
            f"bf16 needs bf16 arithmetic, which {device} lacks here (CPUs: AVX512-BF16 or AMX; "
            "CUDA: compute capability 8.0+); use fp32",
        )


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The context the training losses run in: bf16 autocast, or none for fp32."""
    return torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16")


class RunSeeds(NamedTuple):
    """The four seeds a run derives from cfg.seed (model init, batches, noise, evaluation)."""

    init: int
    data: int
    noise: int
    eval: int


def init_run(cfg: Config, device: torch.device) -> tuple[AutoEncoder, Objective, RunSeeds]:
    """A run's model and objective on `device`, initialised as every run of cfg.seed is: on
    the CPU from a private RNG (the same weights on every device; the caller's global torch
    RNG is left untouched); and its seeds."""
    seeds = RunSeeds(*_seeds(cfg.seed, 4))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.init)
        model = build_model(cfg.model)
        objective = build_objective(cfg, model)
    return model.to(device), objective.to(device), seeds


class DeviceData(NamedTuple):
    """A dataset's image table on one device (raywae.data.Table there)."""

    table: torch.Tensor
    train_index: torch.Tensor
    test_index: torch.Tensor
    packed: bool
    fresh: Callable[[np.ndarray], np.ndarray] | None

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Table rows -> (k, pixels) float32 images in [0, 1] on the device."""
        rows = self.table[index]
        return unpack_bits(rows) if self.packed else rows

    def batch(self, size: int, gen: torch.Generator) -> torch.Tensor:
        """One training batch (size, pixels) drawn with `gen`: rows of the train split,
        uniformly with replacement, or fresh images from U[0, 1) draws (Table.fresh)."""
        device = self.table.device
        if self.fresh is None:
            pick = torch.randint(len(self.train_index), (size,), generator=gen, device=device)
            return self.rows(self.train_index[pick])
        u = torch.rand(size, generator=gen, device=device, dtype=torch.float64)
        return torch.from_numpy(self.fresh(u.cpu().numpy())).to(device)


def device_data(ds: Dataset, device: torch.device) -> DeviceData:
    """ds.training_table() on `device` (on CPU a memory-mapped table stays shared through
    the page cache; on CUDA it lives on the GPU, once per process)."""
    table = ds.training_table()
    with warnings.catch_warnings():  # a memory map is read-only; we never write to it
        warnings.simplefilter("ignore", UserWarning)
        rows = torch.from_numpy(np.asarray(table.rows))
    return DeviceData(
        rows.to(device),
        torch.as_tensor(table.train, dtype=torch.int64, device=device),
        torch.as_tensor(table.test, dtype=torch.int64, device=device),
        table.packed,
        table.fresh,
    )


@torch.no_grad()
def recon_error(
    model: AutoEncoder,
    rows: Callable[[torch.Tensor], torch.Tensor],
    index: torch.Tensor,
    batch_size: int,
    gen: torch.Generator,
    progress: bool | Bar | None = None,
) -> dict[str, float]:
    """PROTOCOL §6 over the test images `index`: mean summed BCE with z sampled from q(z|x)
    by `gen` (`test/recon`) and with z = μ (`test/recon_mean`). rows: DeviceData.rows.
    progress: see Trainer.evaluate."""
    totals = torch.zeros(2, dtype=torch.float64, device=index.device)
    n = index.shape[0]
    was_training = model.training
    model.eval()
    starts = range(0, n, batch_size)
    bar = bar_for(len(starts) > 20 if progress is None else progress, starts)
    for start in bar(starts, desc="test recon", unit="batch"):
        x = rows(index[start : start + batch_size])
        mu, s = model.encode(x)
        for k, z in enumerate((model.posterior.sample(mu, s, gen), mu)):
            logits = model.decode(z)
            totals[k] += F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    model.train(was_training)
    recon, recon_mean = (totals / max(n, 1)).tolist()
    return {"test/recon": recon, "test/recon_mean": recon_mean}


def check_packable(cfgs: Sequence[Config]) -> None:
    """Models train together when they are the seeds of one setting (equal configs but for
    the seed) of a family that packs (raywae.families)."""
    if not cfgs:
        raise ValueError("a trainer needs at least one config")
    first = {k: v for k, v in to_dict(cfgs[0]).items() if k != "seed"}
    for i, cfg in enumerate(cfgs[1:], 1):
        other = {k: v for k, v in to_dict(cfg).items() if k != "seed"}
        if other != first:
            diff = sorted(k for k in first if first[k] != other[k])
            raise ValueError(f"pack member {i} differs from member 0 in {diff}, not only seed")
    why = unpackable(cfgs[0].objective.name, cfgs[0].objective.acai)
    if len(cfgs) > 1 and why:
        raise ValueError(f"cannot pack: {why}")


class Trainer:
    """R = len(cfgs) runs of one setting on one device (cfgs: equal but for the seed; one
    Config is a solo run); model i is cfgs[i]'s run.

    ds: a raywae.data.Dataset (its training_table()). Batches are drawn uniformly with
    replacement from the train split, or fresh from a procedural distribution (lines), with
    each model's own data generator (in its checkpoint: a resumed run draws what it would
    have). `active`: the models still training; `failed`: model ->
    its NonFiniteLossError (term and 1-based step). On CPU a model is checked every step,
    before its loss touches the weights; on CUDA once per report window (no host sync per
    step)."""

    def __init__(self, cfgs: Config | Sequence[Config], ds: Dataset) -> None:
        cfgs = [cfgs] if isinstance(cfgs, Config) else list(cfgs)
        check_packable(cfgs)
        self.cfgs, self.cfg, self.ds = cfgs, cfgs[0], ds
        self.device = resolve_device(self.cfg.train.device)
        check_precision(self.cfg.train.precision, self.device)
        self._amp = lambda: autocast(self.cfg.train.precision, self.device)
        runs = [init_run(cfg, self.device) for cfg in cfgs]
        self.models = [m for m, _, _ in runs]
        self.objectives = [o for _, o, _ in runs]
        self.data_gens = [torch.Generator(self.device).manual_seed(s.data) for *_, s in runs]
        self.noise_gens = [torch.Generator(self.device).manual_seed(s.noise) for *_, s in runs]
        self._eval_seeds = [s.eval for *_, s in runs]
        self.data = device_data(ds, self.device)
        self.table, self.train_index, self.test_index = self.data[:3]
        self.rows = self.data.rows  # table rows -> (k, pixels) float32 images in [0, 1]
        lr = learning_rate(0, self.cfg.train)
        pairs = [(m, o) for m, o, _ in runs]
        self._steps = Solo(*pairs[0], lr, self.device) if len(cfgs) == 1 else None
        self._steps = self._steps or Stacked(pairs, lr, self.device)
        self.active = list(range(len(cfgs)))
        self.failed: dict[int, NonFiniteLossError] = {}
        self.step = 0
        self._names: list[str] | None = None
        self._rows: list[torch.Tensor] = []
        self._window_start = time.perf_counter()

    @property
    def model(self) -> AutoEncoder:
        """Model 0 (a solo run's model), its weights current."""
        return self.member_model(0)

    @property
    def objective(self) -> Objective:
        """Model 0's objective (with its side networks, current)."""
        self._sync()
        return self.objectives[0]

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """R > 1: the stacked weights (R_active, ...), by model./objective. parameter name."""
        return self._steps.params

    def _sync(self) -> None:
        """The models' own modules hold their current weights."""
        self._steps.sync((self.step, tuple(self.active)))

    def member_model(self, i: int) -> AutoEncoder:
        """Model i with its current weights."""
        self._sync()
        return self.models[i]

    # --- one step -----------------------------------------------------------------------------
    def _inputs(self) -> tuple[torch.Tensor, Draws]:
        """Each active model's batch and draws from its own generators, in a solo run's order,
        and the step: x (R_active, B, pixels); draws {name: (R_active, ...)}, "step" among
        them (R_active,)."""
        bs = self.cfg.train.batch_size
        x = torch.stack([self.data.batch(bs, self.data_gens[i]) for i in self.active])
        objective = self.objectives[0]
        draws = [objective.draws(x[r], self.noise_gens[i]) for r, i in enumerate(self.active)]
        out = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
        return x, out | {"step": x.new_full((len(self.active),), float(self.step))}

    def _train_step(self) -> None:
        steps, cpu = self._steps, self.device.type == "cpu"
        steps.set_lr(learning_rate(self.step, self.cfg.train))
        x, draws = self._inputs()
        while True:
            with self._amp():
                names, rows = steps.forward(x, draws)
            if self._names is None:
                self._names = names + [s.row.term for s in steps.sides]
            if not (bad := self._check(rows[None], self.step + 1) if cpu else []):
                break
            keep = self._drop(bad)  # redo the step for the others, on the same inputs
            x, draws = x[keep], {k: v[keep] for k, v in draws.items()}
        adam_step(steps.optimizers[0], steps.out.total)
        for k, side in enumerate(steps.sides):
            per = [
                side.draws(steps.side_inputs(k, r), self.noise_gens[i])
                for r, i in enumerate(self.active)
            ]
            side_draws = {key: torch.stack([d[key] for d in per]) for key in per[0]}
            with self._amp():
                loss = steps.side_loss(k, side_draws)  # (R_active,)
            adam_step(steps.optimizers[k + 1], loss)
            rows = torch.cat([rows, loss.detach().float()[:, None]], 1)
        if cpu and (bad := self._check(rows[None], self.step + 1)):
            rows = rows[self._drop(bad)]
        self._rows.append(rows)

    def _check(self, rows: torch.Tensor, first_step: int) -> list[int]:
        """rows: (k, R_active, terms) of steps first_step, ...: record each model with a
        non-finite entry (its first bad step and term) in `failed`; return their rows."""
        bad = ~torch.isfinite(rows)
        if not bad.any():
            return []
        out = []
        for r in bad.any(2).any(0).nonzero()[:, 0].tolist():
            step, term = (int(v) for v in bad[:, r].nonzero()[0])
            self.failed[self.active[r]] = NonFiniteLossError(self._names[term], first_step + step)
            out.append(r)
        return out

    def _drop(self, bad: list[int]) -> list[int]:
        """Drop the rows `bad` of the active models (their window rows too); return the rows
        kept. Raises the last failure when no model is left."""
        keep = [r for r in range(len(self.active)) if r not in bad]
        if not keep:
            self.active = []
            raise max(self.failed.values(), key=lambda e: e.step)
        self._rows = [w[keep] for w in self._rows]
        self._steps.keep(keep)
        self.active = [self.active[r] for r in keep]
        return keep

    def _flush(self) -> Logs:
        rows = torch.stack(self._rows)  # (k, R_active, terms)
        if self.device.type != "cpu":  # CPU checked every step; CUDA checks the window once
            if bad := self._check(rows, self.step - len(self._rows) + 1):
                rows = rows[:, self._drop(bad)]
        means = rows.mean(0).tolist()  # the one sync of the window
        elapsed = time.perf_counter() - self._window_start
        shared = {
            "train/lr": learning_rate(self.step - 1, self.cfg.train),
            "time/imgs_per_s": len(self._rows) * self.cfg.train.batch_size / elapsed,
            "step": self.step,
        }
        self._rows = []
        return {
            i: {**{f"train/{k}": v for k, v in zip(self._names, row)}, **shared}
            for i, row in zip(self.active, means)
        }

    # --- public -------------------------------------------------------------------------------
    def run(
        self, steps: int | None = None, callback: Callback | None = None, progress: bool = False
    ) -> Logs:
        """Train every active model up to cfg.train.steps, or `steps` more. callback(trainer,
        logs) every cfg.train.report_every steps and at the last step of this call: logs maps
        each active model to its window's logs (`step`, `train/<term>` means, `train/lr`,
        `time/imgs_per_s`). progress: a tqdm bar over the steps. Diverged models are in
        `failed`; when none is left, raises NonFiniteLossError (the last failure). Returns
        the last logs ({} if no step ran)."""
        end = self.cfg.train.steps if steps is None else self.step + steps
        for model in self.models:
            model.train()
        self._rows, self._window_start, logs = [], time.perf_counter(), {}
        bar = tqdm(total=end, initial=self.step, desc="train", unit="step", disable=not progress)
        with bar:
            while self.step < end:
                self._train_step()
                self.step += 1
                bar.update()
                if self.step % self.cfg.train.report_every == 0 or self.step == end:
                    logs = self._flush()
                    loss = np.mean([v["train/loss"] for v in logs.values()])
                    bar.set_postfix(loss=f"{loss:.1f}", refresh=False)
                    if callback is not None:
                        callback(self, logs)
                    self._window_start = time.perf_counter()  # callback time is not training
        return logs

    def evaluate(
        self, max_images: int | None = None, progress: bool | Bar | None = None, member: int = 0
    ) -> dict[str, float]:
        """PROTOCOL §6 for model `member` over the test split (or its first max_images): mean
        summed BCE with z sampled from q(z|x) (`test/recon`) and with z = μ
        (`test/recon_mean`). Uses the model's own generator seeded from its cfg.seed:
        repeatable, and it leaves the training RNGs alone. progress: a bar (True / False / a
        tqdm-like factory; default: a tqdm bar when there are more than 20 batches)."""
        gen = torch.Generator(self.device).manual_seed(self._eval_seeds[member])
        index, bs = self.test_index[:max_images], self.cfg.train.eval_batch_size
        return recon_error(self.member_model(member), self.rows, index, bs, gen, progress)

    @functools.cached_property
    def _widest_activation(self) -> int:
        """One model's widest encoder activation per image (its arch and data: fixed)."""
        encoder = self.member_model(self.active[0]).encoder
        return widest_activation(encoder, self.rows(self.test_index[:2]))

    def code_tables(self, grid: FactorGrid, progress: bool | Bar = False) -> np.ndarray:
        """Encoder means of the active models over `grid` (ds.grid or a subgrid of it), from
        one encoding pass: (R_active, len(grid), d) float32, row r for model active[r]. A
        batch holds at most ENCODE_FLOATS floats of the encoder's widest activation over all
        R models (a 50-model conv64 pack: 81 images at a time, not 8192: 54 GB)."""
        widest = len(self.active) * self._widest_activation
        batch = max(1, min(ENCODE_BATCH, ENCODE_FLOATS // widest))
        encoder = self._steps.encoder()
        tables = encode_grid(encoder, self.ds, batch, progress=progress, grid=grid)
        return tables if len(self.cfgs) > 1 else tables[None]

    def member_state(self, i: int) -> dict[str, Any]:
        """Model i's checkpoint, a solo run's state_dict: weights, the auto-encoder's and
        every side network's Adam state (`<side>_optimizer`), step, RNG states, config."""
        self._sync()
        state = self._steps.member_state(self.active.index(i))
        rng = {"data": self.data_gens[i].get_state(), "noise": self.noise_gens[i].get_state()}
        return {**state, "step": self.step, "rng": rng, "config": to_dict(self.cfgs[i])}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs. R = 1: member_state(0) (tensors are live
        references, as nn.Module.state_dict: save before training on); R > 1: every active
        model's member_state, every failure, the step."""
        if len(self.cfgs) == 1:
            return self.member_state(0)
        return {
            "members": {i: self.member_state(i) for i in self.active},
            "failed": {i: (e.term, e.step) for i, e in self.failed.items()},
            "step": self.step,
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore a state_dict of a Trainer built from the same configs."""
        if "members" not in sd:  # a solo run's checkpoint
            sd = {"members": {0: sd}, "failed": {}, "step": sd["step"]}
        self.step = int(sd["step"])
        self.failed = {int(i): NonFiniteLossError(t, int(s)) for i, (t, s) in sd["failed"].items()}
        self.active = sorted(int(i) for i in sd["members"])
        states = [sd["members"][i] for i in self.active]
        for i, st in zip(self.active, states):
            self.data_gens[i].set_state(st["rng"]["data"].cpu())
            self.noise_gens[i].set_state(st["rng"]["noise"].cpu())
        self._steps.load(states, self.active)
