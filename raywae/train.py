"""The training loop: plain PyTorch (no Ray, no MLflow), batches unpacked from packed bits.

`Trainer(cfg, ds).run(callback=...)` trains with Adam on the PROTOCOL §5 schedule; its
state_dict resumes bit-identically on the same machine; `evaluate` gives the §6 test
reconstruction error.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from raywae.config import Config, TrainConfig, to_dict
from raywae.data import DSprites
from raywae.data.imageset import ImageSet
from raywae.models import AutoEncoder, Objective, build_model, build_objective
from raywae.progress import Bar, bar_for

Callback = Callable[["Trainer", dict[str, float]], None]


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


def adam_options(device: torch.device) -> dict[str, bool]:
    """Adam's implementation per device: one fused kernel on CUDA (no per-tensor launches);
    on CPU torch's default (the for-loop one: the figures of every CPU run so far)."""
    return {"fused": True} if device.type == "cuda" else {}


def window_logs(
    names: list[str], means: list[list[float]], steps: int, trainer: Any
) -> list[dict[str, float]]:
    """The reports of a window of `steps` steps ending at trainer.step, one per model (means:
    each model's term means): train/<term>, train/lr, time/imgs_per_s (per model, since
    trainer._window_start) and step."""
    elapsed = time.perf_counter() - trainer._window_start
    shared = {
        "train/lr": learning_rate(trainer.step - 1, trainer.cfg.train),
        "time/imgs_per_s": steps * trainer.cfg.train.batch_size / elapsed,
        "step": trainer.step,
    }
    return [{**{f"train/{k}": v for k, v in zip(names, row)}, **shared} for row in means]


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
        objective = build_objective(cfg.objective, model, cfg.model.depth)
    return model.to(device), objective.to(device), seeds


class DeviceData(NamedTuple):
    """A dataset's image table on one device, and its split's flat indices. table: dSprites'
    packed bits (N, 512) uint8 (packed) or an ImageSet's float pixels (N, P)."""

    table: torch.Tensor
    train_index: torch.Tensor
    test_index: torch.Tensor
    packed: bool

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Table rows -> (k, pixels) float32 images in [0, 1] on the device."""
        rows = self.table[index]
        return unpack_bits(rows) if self.packed else rows


def device_data(ds: DSprites | ImageSet, device: torch.device) -> DeviceData:
    """The table and split on `device`: dSprites' packed_all() and split(seed=0) (PROTOCOL
    §2; on CPU the memory map is shared through the page cache), or an ImageSet's table, its
    train rows then its test rows. On CUDA the table lives on the GPU, once per process."""
    packed = isinstance(ds, DSprites)
    if packed:
        with warnings.catch_warnings():  # the memory map is read-only; we never write to it
            warnings.simplefilter("ignore", UserWarning)
            table = torch.from_numpy(np.asarray(ds.packed_all()))
        train_idx, test_idx = ds.split(seed=0)
    else:
        table = torch.from_numpy(ds.table())
        n_train = len(ds.train)
        train_idx, test_idx = np.arange(n_train), np.arange(n_train, len(table))
    return DeviceData(
        table.to(device),
        torch.as_tensor(train_idx, dtype=torch.int64, device=device),
        torch.as_tensor(test_idx, dtype=torch.int64, device=device),
        packed,
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


class Trainer:
    """Model, objective, optimizers, data and RNGs of one run, all derived from cfg.seed.

    ds: dSprites (its packed_all() table and split(seed=0); PROTOCOL §2) or an ImageSet (its
    float table, train rows then test rows). Batches are drawn uniformly with replacement
    from the train split and unpacked on the device. Optimizers: Adam on the auto-encoder,
    and, when the objective has them, one for WAE-GAN's adversary and one for ACAI's critic.
    """

    def __init__(self, cfg: Config, ds: DSprites | ImageSet) -> None:
        self.cfg, self.ds = cfg, ds
        self.device = resolve_device(cfg.train.device)
        self.model, self.objective, seeds = init_run(cfg, self.device)
        self._eval_seed = seeds.eval
        adam = adam_options(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr, **adam)
        adv, critic, obj = self.objective.adversary, self.objective.critic, cfg.objective
        self.adv_optimizer = (
            torch.optim.Adam(adv.parameters(), lr=obj.adv_lr, **adam) if adv else None
        )
        self.critic_optimizer = (
            torch.optim.Adam(critic.parameters(), lr=obj.critic_lr, **adam) if critic else None
        )
        self.data_gen = torch.Generator(self.device).manual_seed(seeds.data)
        self.noise_gen = torch.Generator(self.device).manual_seed(seeds.noise)
        data = device_data(ds, self.device)
        self.table, self.train_index, self.test_index, _ = data
        self.rows = data.rows  # table rows -> (k, pixels) float32 images in [0, 1]
        self.step = 0
        self._names: list[str] | None = None
        self._rows: list[torch.Tensor] = []
        self._window_start = time.perf_counter()

    # --- one step ---------------------------------------------------------------------------
    def _batch(self) -> torch.Tensor:
        """(B, pixels) float32 train images."""
        n = self.train_index.shape[0]
        pick = torch.randint(
            n, (self.cfg.train.batch_size,), generator=self.data_gen, device=self.device
        )
        return self.rows(self.train_index[pick])

    def _train_step(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.cfg.train)
        out = self.objective(self.model, self._batch(), self.noise_gen)
        terms = {**out.terms, "loss": out.total}  # parts first: an error names the culprit
        row = torch.stack([t.detach() for t in terms.values()])
        if self._names is None:
            self._names = list(terms) + (["adv_d"] if self.adv_optimizer else [])
            self._names += ["acai_critic"] if self.critic_optimizer else []
        # On CPU the check is free: stop before a non-finite loss touches the weights. On CUDA
        # it would sync every step, so the rows are checked when the window is reported.
        if self.device.type == "cpu":
            self._check(row[None], self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        self.optimizer.step()
        if self.adv_optimizer is not None:
            adv = self.objective.adversary_loss(out.z.detach(), self.noise_gen)
            row = self._side_step(self.adv_optimizer, adv, row)
        if self.critic_optimizer is not None:
            critic = self.objective.critic_loss(out.acai)
            row = self._side_step(self.critic_optimizer, critic, row)
        self._rows.append(row)

    def _side_step(
        self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, row: torch.Tensor
    ) -> torch.Tensor:
        """One step of a network the objective trains on its own loss (WAE-GAN's adversary,
        ACAI's critic); returns the step's row with that loss appended (checked on CPU)."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        row = torch.cat([row, loss.detach()[None]])
        if self.device.type == "cpu":
            self._check(row[None], self.step + 1)
        return row

    def _check(self, rows: torch.Tensor, first_step: int) -> None:
        """rows: (k, terms) of steps first_step, first_step+1, ...; raise at the first bad one."""
        bad = ~torch.isfinite(rows)
        if bad.any():
            i, j = (int(v) for v in bad.nonzero()[0])
            raise NonFiniteLossError(self._names[j], first_step + i)

    def _flush(self) -> dict[str, float]:
        rows = torch.stack(self._rows)
        first_step = self.step - len(self._rows) + 1
        self._check(rows, first_step)
        means = rows.mean(0).tolist()  # the one sync of the window
        (logs,) = window_logs(self._names, [means], len(self._rows), self)
        self._rows = []
        return logs

    # --- public -----------------------------------------------------------------------------
    def run(
        self, steps: int | None = None, callback: Callback | None = None, progress: bool = False
    ) -> dict | None:
        """Train up to cfg.train.steps, or `steps` more. callback(trainer, logs) runs every
        cfg.train.report_every steps and at the last step of this call; logs hold `step`,
        `train/<term>` means over the window, `train/lr` and `time/imgs_per_s`.
        progress: a tqdm bar over the steps (the loss of the last window beside it).
        Returns the last logs (None if no step ran). Raises NonFiniteLossError."""
        end = self.cfg.train.steps if steps is None else self.step + steps
        self.model.train()
        self._rows, self._window_start, logs = [], time.perf_counter(), None
        bar = tqdm(total=end, initial=self.step, desc="train", unit="step", disable=not progress)
        with bar:
            while self.step < end:
                self._train_step()
                self.step += 1
                bar.update()
                if self.step % self.cfg.train.report_every == 0 or self.step == end:
                    logs = self._flush()
                    bar.set_postfix(loss=f"{logs['train/loss']:.1f}", refresh=False)
                    if callback is not None:
                        callback(self, logs)
                    self._window_start = time.perf_counter()  # callback time is not training
        return logs

    def evaluate(self, max_images: int | None = None, progress: bool | Bar | None = None) -> dict:
        """PROTOCOL §6 over the test split (or its first max_images): mean summed BCE with z
        sampled from q(z|x) (`test/recon`) and with z = μ (`test/recon_mean`).

        Uses its own generator seeded from cfg.seed: repeatable, and it leaves the training
        RNGs alone. progress: a bar (True / False / a tqdm-like factory; default: a tqdm bar
        when there are more than 20 batches)."""
        gen = torch.Generator(self.device).manual_seed(self._eval_seed)
        index, bs = self.test_index[:max_images], self.cfg.train.eval_batch_size
        return recon_error(self.model, self.rows, index, bs, gen, progress)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: weights, optimizers, step and every RNG state.
        Tensors are live references (as nn.Module.state_dict): save before training on."""
        return {
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "adv_optimizer": self.adv_optimizer.state_dict() if self.adv_optimizer else None,
            "critic_optimizer": (
                self.critic_optimizer.state_dict() if self.critic_optimizer else None
            ),
            "step": self.step,
            "rng": {"data": self.data_gen.get_state(), "noise": self.noise_gen.get_state()},
            "config": to_dict(self.cfg),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore a state_dict of a Trainer built from the same config."""
        self.model.load_state_dict(sd["model"])
        self.objective.load_state_dict(sd["objective"])
        self.optimizer.load_state_dict(sd["optimizer"])
        if self.adv_optimizer is not None:
            self.adv_optimizer.load_state_dict(sd["adv_optimizer"])
        if self.critic_optimizer is not None:
            self.critic_optimizer.load_state_dict(sd["critic_optimizer"])
        self.step = int(sd["step"])
        self.data_gen.set_state(sd["rng"]["data"].cpu())
        self.noise_gen.set_state(sd["rng"]["noise"].cpu())
