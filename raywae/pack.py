"""Packed replicates: R models of one config (only the seed differs) trained at once.

Parameters are stacked (R, ...) and one step runs the objective's pure loss under
`torch.func.vmap` over `functional_call`: one set of batched kernels instead of R. Each
model keeps what a solo `Trainer` of its seed has: its init, batches, noise (its own
generators, drawn in the same order), Adam state (Adam is element-wise, so one Adam over
the stacks is R Adams), NaN check, logs and checkpoint slice (a solo Trainer's state_dict).
A model whose loss goes non-finite leaves the pack; the others train on.

`PackExperiment` is a pack end to end without Ray (what `Experiment` is for one run): each
member is an `Experiment` over a `Member` view of the pack, so its progress figures, final
metrics and files are computed as a solo run's, from one encoding pass for all members.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from raywae.config import Config, to_dict
from raywae.data import DSprites, FactorGrid
from raywae.data.imageset import ImageSet
from raywae.experiment import FAILED, Experiment, load_checkpoint, open_dataset, save_atomic
from raywae.metrics import encode_grid, report_many
from raywae.models import AutoEncoder, Objective
from raywae.progress import Bar
from raywae.train import (
    NonFiniteLossError,
    adam_options,
    device_data,
    init_run,
    learning_rate,
    recon_error,
    resolve_device,
    window_logs,
)

PackCallback = Callable[["PackedTrainer", dict[int, dict[str, float]]], None]


class _Encoder(nn.Module):
    def __init__(self, model: AutoEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x)[0]


class PackEncoder:
    """The active members' encoders as one: encode(x (n, 4096)) -> (μ (R, n, d), None), one
    batched pass for all R models (what `encode_grid` needs for R code tables at once)."""

    training = False

    def __init__(self, pack: PackedTrainer) -> None:
        self.pack = pack
        self.module = _Encoder(pack._step_module.model)
        self._run = vmap(lambda p, x: functional_call(self.module, p, (x,)), in_dims=(0, None))

    def parameters(self) -> Any:
        return iter(self.pack.params.values())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        params = {n: p.detach() for n, p in self.pack.params.items() if ".encoder." in n}
        return self._run(params, x), None


class _Step(nn.Module):
    """model + objective as one module, so functional_call can swap in one model's weights."""

    def __init__(self, model: AutoEncoder, objective: Objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x: torch.Tensor, noise: dict[str, torch.Tensor]) -> tuple[Any, Any]:
        out = self.objective.loss(self.model, x, noise)
        return out.total, out.terms


def check_packable(cfgs: list[Config]) -> None:
    """A pack is the seeds of one setting: equal configs but for the seed, no adversary."""
    if not cfgs:
        raise ValueError("a pack needs at least one config")
    first = {k: v for k, v in to_dict(cfgs[0]).items() if k != "seed"}
    for i, cfg in enumerate(cfgs[1:], 1):
        other = {k: v for k, v in to_dict(cfg).items() if k != "seed"}
        if other != first:
            diff = sorted(k for k in first if first[k] != other[k])
            raise ValueError(f"pack member {i} differs from member 0 in {diff}, not only seed")
    if cfgs[0].objective.name == "wae_gan":
        raise ValueError("objective wae_gan (its own adversary and optimizer) cannot be packed")
    if cfgs[0].objective.acai > 0:
        raise ValueError("objective.acai (a critic with its own optimizer) cannot be packed")


class PackedTrainer:
    """R = len(cfgs) runs of one setting on one device; member i is cfgs[i]'s run.

    `active`: member ids still training; `failed`: id -> its NonFiniteLossError (the term and
    1-based step, as a solo run raises it). On CPU a model is checked every step, before its
    loss touches the weights; on CUDA once per report window (no host sync per step)."""

    def __init__(self, cfgs: list[Config], ds: DSprites | ImageSet) -> None:
        check_packable(cfgs)
        self.cfgs, self.cfg, self.ds = list(cfgs), cfgs[0], ds
        self.device = resolve_device(self.cfg.train.device)
        runs = [init_run(cfg, self.device) for cfg in cfgs]
        self.models = [m for m, _, _ in runs]  # per-member modules: evaluation and metrics
        self._step_module = _Step(*runs[0][:2])  # the structure functional_call runs
        self.data_gens = [torch.Generator(self.device).manual_seed(s.data) for *_, s in runs]
        self.noise_gens = [torch.Generator(self.device).manual_seed(s.noise) for *_, s in runs]
        self._eval_seeds = [s.eval for *_, s in runs]
        data = device_data(ds, self.device)
        self.table, self.train_index, self.test_index, _ = data
        self.rows = data.rows
        self.active = list(range(len(cfgs)))
        self.failed: dict[int, NonFiniteLossError] = {}
        names = [n for n, _ in self._step_module.named_parameters()]
        stacks = {
            n: torch.stack([dict(_Step(m, o).named_parameters())[n].detach() for m, o, _ in runs])
            for n in names
        }
        self.step = 0
        self._set_params(stacks, None)
        self._loss = vmap(self._member_loss, in_dims=(0, 0, 0))
        self._names: list[str] | None = None
        self._rows: list[torch.Tensor] = []
        self._window_start = time.perf_counter()

    # --- stacked parameters and their optimizer ---------------------------------------------
    def _set_params(self, stacks: dict[str, torch.Tensor], state: list[dict] | None) -> None:
        """New leaf stacks (R_active, ...) and an Adam over them; `state`: per-stack Adam
        state ({"step", "exp_avg", "exp_avg_sq"}) for the same rows, or None (fresh)."""
        self.params = {n: t.detach().clone().requires_grad_() for n, t in stacks.items()}
        self._synced: tuple[int, tuple[int, ...]] | None = None  # models hold no stack yet
        lr = learning_rate(self.step, self.cfg.train)
        self.optimizer = torch.optim.Adam(
            list(self.params.values()), lr=lr, **adam_options(self.device)
        )
        for p, st in zip(self.params.values(), state or []):
            if st:
                self.optimizer.state[p] = st

    def _keep(self, rows: list[int]) -> None:
        """Keep only the stack rows `rows` (positions in self.active), with their Adam state."""
        keep = torch.as_tensor(rows, device=self.device)
        state = []
        for p in self.params.values():
            st = self.optimizer.state.get(p, {})
            state.append({k: v if k == "step" else v[keep].clone() for k, v in st.items()})
        self._set_params({n: p.detach()[keep] for n, p in self.params.items()}, state)
        self.active = [self.active[r] for r in rows]

    def _member_loss(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, noise: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return functional_call(self._step_module, params, (x, noise))

    # --- one step -----------------------------------------------------------------------------
    def _inputs(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Each active member's batch and noise from its own generators, in a solo run's order:
        x (R, B, 4096); noise {name: (R, B, d)}."""
        n, bs = self.train_index.shape[0], self.cfg.train.batch_size
        picks = [
            torch.randint(n, (bs,), generator=self.data_gens[i], device=self.device)
            for i in self.active
        ]
        x = self.rows(self.train_index[torch.cat(picks)]).view(len(picks), bs, -1)
        objective = self._step_module.objective
        draws = [objective.noise(x[0], self.noise_gens[i]) for i in self.active]
        return x, {k: torch.stack([d[k] for d in draws]) for k in draws[0]}

    def _train_step(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.cfg.train)
        x, noise = self._inputs()
        while True:
            total, terms = self._loss(self.params, x, noise)
            rows = torch.stack([t.detach() for t in {**terms, "loss": total}.values()], 1)
            if self._names is None:
                self._names = [*terms, "loss"]
            bad = self._check(rows[None], self.step + 1) if self.device.type == "cpu" else []
            if not bad:
                break
            # Leave the diverged models out and redo the step for the others (same inputs).
            keep = self._drop_rows(bad)
            if not keep:
                return
            x, noise = x[keep], {k: v[keep] for k, v in noise.items()}
        self.optimizer.zero_grad(set_to_none=True)
        total.sum().backward()  # the models share no weights: the sum's gradient is each one's
        self.optimizer.step()
        self._rows.append(rows)

    def _check(self, rows: torch.Tensor, first_step: int) -> list[int]:
        """rows: (k, R_active, terms) of steps first_step, ...: record each member with a
        non-finite entry (its first bad step and term) in `failed`; return their stack rows."""
        bad = ~torch.isfinite(rows)
        if not bad.any():
            return []
        out = []
        for r in bad.any(2).any(0).nonzero()[:, 0].tolist():
            step, term = (int(v) for v in bad[:, r].nonzero()[0])
            self.failed[self.active[r]] = NonFiniteLossError(self._names[term], first_step + step)
            out.append(r)
        return out

    def _drop_rows(self, bad: list[int]) -> list[int]:
        """Drop the stack rows `bad` (their window rows too); return the rows kept."""
        keep = [r for r in range(len(self.active)) if r not in bad]
        self._rows = [w[keep] for w in self._rows]
        self._keep(keep)
        return keep

    def _flush(self) -> dict[int, dict[str, float]]:
        if not self._rows:
            return {}
        rows = torch.stack(self._rows)  # (k, R_active, terms)
        if self.device.type != "cpu":  # CPU checked every step; CUDA checks the window once
            if bad := self._check(rows, self.step - len(self._rows) + 1):
                rows = rows[:, self._drop_rows(bad)]
        means = rows.mean(0).tolist()  # the one sync of the window
        out = dict(zip(self.active, window_logs(self._names, means, len(self._rows), self)))
        self._rows = []
        return out

    # --- public -------------------------------------------------------------------------------
    def run(
        self, steps: int | None = None, callback: PackCallback | None = None
    ) -> dict[int, dict[str, float]]:
        """Train every active member up to cfg.train.steps, or `steps` more. callback(pack,
        logs) every cfg.train.report_every steps and at the last step: logs maps each active
        member to its solo-style logs (train/<term>, train/lr, time/imgs_per_s, step).
        Diverged members are in `failed`; the run stops early only when none is left.
        Returns the last logs."""
        end = self.cfg.train.steps if steps is None else self.step + steps
        self._rows, self._window_start, last = [], time.perf_counter(), {}
        while self.step < end and self.active:
            self._train_step()
            self.step += 1
            if self.step % self.cfg.train.report_every == 0 or self.step == end:
                last = self._flush()
                if callback is not None:
                    callback(self, last)
                self._window_start = time.perf_counter()
        if self._rows:  # every member failed mid-window: nothing more to report
            self._rows = []
        return last

    def sync_models(self) -> None:
        """Copy the active members' stacked weights into their own modules (self.models)."""
        if self._synced == (self.step, tuple(self.active)):
            return  # already copied since the last step
        self._synced = (self.step, tuple(self.active))
        with torch.no_grad():
            for r, member in enumerate(self.active):
                module = _Step(self.models[member], self._step_module.objective)
                for name, p in module.named_parameters():
                    p.copy_(self.params[name][r])

    def evaluate(self, member: int, max_images: int | None = None, progress: Any = None) -> dict:
        """A solo Trainer's `evaluate` for one member (its own evaluation seed)."""
        self.sync_models()
        gen = torch.Generator(self.device).manual_seed(self._eval_seeds[member])
        index, bs = self.test_index[:max_images], self.cfg.train.eval_batch_size
        return recon_error(self.models[member], self.rows, index, bs, gen, progress)

    def code_tables(self, grid: FactorGrid | None = None, progress: Any = False) -> Any:
        """Encoder means of the active members over ds.grid (or its subgrid `grid`), from one
        encoding pass: (R_active, len(grid), d) float32, row r for member self.active[r]."""
        return encode_grid(PackEncoder(self), self.ds, progress=progress, grid=grid)

    def member_state(self, member: int) -> dict[str, Any]:
        """Member `member`'s checkpoint: exactly a solo Trainer's state_dict (weights, Adam
        state, step, RNG states, config), which a solo Trainer can load and continue."""
        r = self.active.index(member)
        self.sync_models()
        opt = self.optimizer.state_dict()
        state = {}
        for j, p in enumerate(self.params.values()):
            st = self.optimizer.state.get(p)
            if st:
                state[j] = {k: v if k == "step" else v[r].clone() for k, v in st.items()}
        return {
            "model": {k: v.clone() for k, v in self.models[member].state_dict().items()},
            "objective": self._step_module.objective.state_dict(),
            "optimizer": {"state": state, "param_groups": opt["param_groups"]},
            "adv_optimizer": None,
            "critic_optimizer": None,
            "step": self.step,
            "rng": {
                "data": self.data_gens[member].get_state(),
                "noise": self.noise_gens[member].get_state(),
            },
            "config": to_dict(self.cfgs[member]),
        }

    def state_dict(self) -> dict[str, Any]:
        """The pack's checkpoint: every active member's solo state_dict and every failure."""
        return {
            "members": {m: self.member_state(m) for m in self.active},
            "failed": {m: (e.term, e.step) for m, e in self.failed.items()},
            "step": self.step,
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore a state_dict of a PackedTrainer built from the same configs."""
        self.step = int(sd["step"])
        self.failed = {int(m): NonFiniteLossError(t, int(s)) for m, (t, s) in sd["failed"].items()}
        self.active = sorted(int(m) for m in sd["members"])
        members = [sd["members"][m] for m in self.active]
        names = list(self.params)
        for m, st in zip(self.active, members):
            self.data_gens[m].set_state(st["rng"]["data"].cpu())
            self.noise_gens[m].set_state(st["rng"]["noise"].cpu())
        stacks = {
            n: torch.stack([st["model"][n.removeprefix("model.")] for st in members]).to(
                self.device
            )
            for n in names
        }
        state = []
        for j in range(len(names)):
            per = [st["optimizer"]["state"].get(j) for st in members]
            if per[0] is None:
                state.append({})
                continue
            step = per[0]["step"].clone()  # fused Adam keeps its step on the device
            state.append(
                {
                    "step": step.to(self.device) if self.device.type == "cuda" else step,
                    **{
                        k: torch.stack([p[k] for p in per]).to(self.device)
                        for k in ("exp_avg", "exp_avg_sq")
                    },
                }
            )
        self._set_params(stacks, state)


class Member:
    """One member of a pack, seen as its solo Trainer is by an Experiment: model (synced from
    the stacks), step, device, evaluate (the member's own evaluation seed)."""

    def __init__(self, pack: PackedTrainer, member: int) -> None:
        self.pack, self.member = pack, member

    @property
    def model(self) -> AutoEncoder:
        self.pack.sync_models()
        return self.pack.models[self.member]

    @property
    def step(self) -> int:
        return self.pack.step

    @property
    def device(self) -> torch.device:
        return self.pack.device

    def evaluate(self, max_images: int | None = None, progress: Any = None) -> dict:
        return self.pack.evaluate(self.member, max_images, progress)


class PackExperiment:
    """R runs of one setting (cfgs: equal but for the seed) trained as one pack; member i is
    an Experiment of cfgs[i], whose figures and files equal its solo run's (float tolerance)."""

    def __init__(
        self,
        cfgs: list[Config],
        ds: DSprites | ImageSet | None = None,
        progress: bool | Bar = False,
    ) -> None:
        ds = ds if ds is not None else open_dataset(cfgs[0].data)
        self.pack = PackedTrainer(cfgs, ds)
        self.members = [
            Experiment(cfg, ds, progress, trainer=Member(self.pack, i))
            for i, cfg in enumerate(cfgs)
        ]

    @property
    def done(self) -> bool:
        return self.pack.step >= self.pack.cfg.train.steps or not self.pack.active

    def train(self, report: Callable[[dict[int, dict[str, Any]]], None]) -> dict[int, dict]:
        """Train every member to train.steps. Every train.report_every steps but the last,
        report(logs) gets each active member's solo-style window logs (Experiment.train's,
        test/recon_5k included). Returns each active member's last window logs."""

        def window(pack: PackedTrainer, logs: dict[int, dict[str, float]]) -> None:
            if not self.done:
                report({m: {**v, **self.members[m].progress_figures()} for m, v in logs.items()})

        return self.pack.run(callback=window)

    def failures(self) -> dict[int, dict[str, Any]]:
        """Each diverged member's final report: its step and the FAILED reason."""
        return {
            m: {"step": e.step, FAILED: f"{type(e).__name__}: {e}"}
            for m, e in self.pack.failed.items()
        }

    def final(self) -> dict[int, dict[str, float]]:
        """Each active member's Experiment.final, its metrics from one encoding pass and one
        batched Higgins fit for all members (report_many); time/final_eval_s includes the
        member's share of those."""
        active = self.pack.active
        if not active:
            return {}
        start, first, m = time.perf_counter(), self.members[active[0]], self.pack.cfg.metrics
        scores: list[Any] = [None] * len(active)
        if not isinstance(first.ds, ImageSet):
            grid = first.metric_grid()
            codes = self.pack.code_tables(grid, progress=first.progress)
            seeds = [self.members[i].cfg.seed for i in active]
            scores = report_many(
                list(codes), grid, seeds, m.extra, m.runs, m.preset, device=self.pack.device
            )
        shared = (time.perf_counter() - start) / len(active)
        out = {}
        for i, figures in zip(active, scores):
            out[i] = self.members[i].final(figures)
            out[i]["time/final_eval_s"] += shared
        return out

    def save(self, path: Path) -> None:
        """The pack's checkpoint (PackedTrainer.state_dict) at `path`, written atomically."""
        save_atomic(self.pack.state_dict(), path)

    def restore(self, path: Path, name: str | None = None) -> None:
        """Continue from save()'s checkpoint; an unreadable one is a CheckpointError."""
        load_checkpoint(self.pack, path, name)

    def write_outputs(
        self, folder: Path, results: dict[int, dict[str, Any]], weights: bool = True
    ) -> None:
        """Each finished member's files (Experiment.write_outputs) in folder/<member>/."""
        for m, figures in results.items():
            self.members[m].write_outputs(folder / str(m), figures, weights)
