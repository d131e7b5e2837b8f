"""The two step strategies behind raywae.train.Trainer, which compute the same thing: `Solo`
(R = 1: the run's own modules, plain autograd, a solo run's exact arithmetic) and `Stacked`
(R > 1: every weight stacked (R, ...) as one leaf, each loss run once under
`torch.func.vmap` over `functional_call`, one set of batched kernels instead of R). Both
keep one Adam for the auto-encoder and one per side network of the objective.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from raywae.models import AutoEncoder, Loss, Objective
from raywae.models.objectives import Noise, Side


def adam_options(device: torch.device) -> dict[str, bool]:
    """Adam's implementation: one fused kernel over all tensors, on CUDA and CPU (on CPU
    3x faster than the for-each default over the paper network's 14 M weights)."""
    return {"fused": True}


def _side_loss(out: Loss) -> Loss:
    """A step's Loss as the side networks see it: codes detached (no gradient to the AE)."""
    return out._replace(z=out.z.detach())


class _Pair(nn.Module):
    """model + objective as one module, so functional_call can swap in one model's weights:
    forward(x, noise) is the auto-encoder's loss; forward(None, noise, side=k, out=...) the
    loss of side network k (Objective.side()[k])."""

    def __init__(self, model: AutoEncoder, objective: Objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(
        self, x: Any, noise: Noise, side: int | None = None, out: Loss | None = None
    ) -> Any:
        if side is None:
            loss = self.objective.loss(self.model, x, noise)
            return loss.total, loss.terms, loss.z, loss.acai if loss.acai is not None else ()
        return self.objective.side_loss(self.objective.side()[side].net, out, noise)


class Solo:
    """R = 1: the run's own modules, plain autograd, one Adam for the auto-encoder and one per
    side network (a solo run's exact arithmetic)."""

    def __init__(self, model: AutoEncoder, objective: Objective, lr: float, device: Any) -> None:
        self.model, self.objective, adam = model, objective, adam_options(device)
        self.sides = objective.side()
        self.optimizers = [torch.optim.Adam(model.parameters(), lr=lr, **adam)]
        self.optimizers += [
            torch.optim.Adam(s.module.parameters(), lr=s.lr, **adam) for s in self.sides
        ]
        self.out: Loss | None = None

    def set_lr(self, lr: float) -> None:
        for group in self.optimizers[0].param_groups:
            group["lr"] = lr

    def forward(self, x: torch.Tensor, noise: Noise) -> tuple[list[str], torch.Tensor]:
        self.out = self.objective.loss(self.model, x[0], {k: v[0] for k, v in noise.items()})
        terms = {**self.out.terms, "loss": self.out.total}  # parts first: an error names them
        return list(terms), _row([t.detach() for t in terms.values()])[None]

    def member_out(self, r: int) -> Loss:
        return _side_loss(self.out)

    def side_loss(self, k: int, noise: Noise) -> torch.Tensor:
        side = self.sides[k]
        return self.objective.side_loss(side.net, _side_loss(self.out), _first(noise))[None]

    def keep(self, rows: list[int]) -> None:
        """Nothing to slice: with its one model gone the run has ended."""

    def sync(self, key: tuple) -> None:
        """The modules are the weights."""

    def encoder(self) -> nn.Module:
        return _Encoders(self.model, None)

    def member_state(self, r: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizers[0].state_dict(),
            **{f"{s.net.name}_optimizer": o.state_dict() for s, o in self._side_optimizers()},
        }

    def load(self, states: list[dict[str, Any]], members: list[int]) -> None:
        (sd,) = states
        self.model.load_state_dict(sd["model"])
        self.objective.load_state_dict(sd["objective"])
        self.optimizers[0].load_state_dict(sd["optimizer"])
        for side, optimizer in self._side_optimizers():
            optimizer.load_state_dict(sd[f"{side.net.name}_optimizer"])

    def _side_optimizers(self) -> list[tuple[Side, torch.optim.Optimizer]]:
        return list(zip(self.sides, self.optimizers[1:]))


def adam_step(optimizer: torch.optim.Optimizer, losses: torch.Tensor) -> None:
    """One Adam step on the sum of the models' losses: the models share no weights, so the
    sum's gradient is each model's own."""
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    optimizer.step()


def _row(terms: list[torch.Tensor]) -> torch.Tensor:
    """Terms -> one float32 row (under bf16 autocast some terms are bf16)."""
    return torch.stack([t.float() for t in terms])


def _first(noise: Noise) -> Noise:
    return {k: v[0] for k, v in noise.items()}


class _Encoders(nn.Module):
    """encode(x (n, P)) -> (μ, None): one model's μ (n, d), or with stacked encoder weights
    every model's at once (R, n, d): what encode_grid needs for R code tables in one pass."""

    def __init__(self, model: AutoEncoder, params: dict[str, torch.Tensor] | None) -> None:
        super().__init__()
        self.model, self.params = model, params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x)[0]

    @property
    def sparse_input(self) -> bool:
        """One model's own modules take a sparse batch where its encoder does (not vmap)."""
        return self.params is None and self.model.sparse_input

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        if self.params is None:
            return self(x), None
        return vmap(lambda p, x: functional_call(self, p, (x,)), in_dims=(0, None))(
            self.params, x
        ), None


class Stacked:
    """R > 1: every weight stacked (R_active, ...) as one leaf, each loss run once under
    vmap(functional_call), one Adam over the auto-encoder's stacks and one per side network
    (Adam is element-wise: one Adam over the stacks is R Adams)."""

    def __init__(self, runs: list[tuple[AutoEncoder, Objective]], lr: float, device: Any) -> None:
        self.all_runs, self.runs, self.device = runs, runs, device
        self.module = _Pair(*runs[0])  # the structure functional_call runs
        self.sides = runs[0][1].side()
        prefix = {id(m): name for name, m in self.module.named_modules()}
        names = [n for n, _ in self.module.named_parameters()]
        side_names = [
            [n for n in names if n.startswith(prefix[id(s.module)] + ".")] for s in self.sides
        ]
        taken = {n for group in side_names for n in group}
        self.groups = [[n for n in names if n not in taken], *side_names]
        self.lrs = [lr, *(s.lr for s in self.sides)]
        pairs = [dict(_Pair(m, o).named_parameters()) for m, o in runs]
        self._set({n: torch.stack([p[n].detach() for p in pairs]) for n in names}, None)
        self._main = vmap(lambda p, x, n: functional_call(self.module, p, (x, n)))
        self.out: Loss | None = None

    def _set(self, stacks: dict[str, torch.Tensor], state: dict[str, dict] | None) -> None:
        """New leaf stacks (R_active, ...) and one Adam per group over them; `state`: each
        stack's Adam state ({"step", "exp_avg", "exp_avg_sq"}) for the same rows, or None."""
        self.params = {n: t.detach().clone().requires_grad_() for n, t in stacks.items()}
        self._synced: tuple | None = None  # the modules hold no stack yet
        adam = adam_options(self.device)
        self.optimizers = [
            torch.optim.Adam([self.params[n] for n in group], lr=lr, **adam)
            for group, lr in zip(self.groups, self.lrs)
        ]
        for n, st in (state or {}).items():
            if st:
                self._optimizer_of(n).state[self.params[n]] = st

    def _optimizer_of(self, name: str) -> torch.optim.Optimizer:
        return next(o for o, group in zip(self.optimizers, self.groups) if name in group)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizers[0].param_groups:
            group["lr"] = lr
        self.lrs[0] = lr

    def forward(self, x: torch.Tensor, noise: Noise) -> tuple[list[str], torch.Tensor]:
        total, terms, z, acai = self._main(self.params, x, noise)
        self.out = Loss(total, terms, z, acai or None)
        parts = {**terms, "loss": total}
        return list(parts), _row([t.detach() for t in parts.values()]).T

    def member_out(self, r: int) -> Loss:
        out = self.out
        acai = None if out.acai is None else type(out.acai)(*(t[r] for t in out.acai))
        return Loss(out.total[r], {}, out.z[r].detach(), acai)

    def side_loss(self, k: int, noise: Noise) -> torch.Tensor:
        params = {n: self.params[n] for n in self.groups[k + 1]}
        out = _side_loss(self.out)

        def loss(p: dict, z: torch.Tensor, acai: Any, n: Noise) -> torch.Tensor:
            member = Loss(z.new_zeros(()), {}, z, acai)
            return functional_call(self.module, p, (None, n), {"side": k, "out": member})

        acai_dim = None if out.acai is None else 0  # vmap maps no None
        return vmap(loss, in_dims=(0, 0, acai_dim, 0))(params, out.z, out.acai, noise)

    def keep(self, rows: list[int]) -> None:
        """Keep only the stack rows `rows`, with their Adam state; forget the step's graph."""
        index = torch.as_tensor(rows, device=self.device)
        state = {}
        for n, p in self.params.items():
            st = self._optimizer_of(n).state.get(p, {})
            state[n] = {k: v if k == "step" else v[index].clone() for k, v in st.items()}
        self._set({n: p.detach()[index] for n, p in self.params.items()}, state)
        self.runs = [self.runs[r] for r in rows]
        self.out = None

    def sync(self, key: tuple) -> None:
        """Copy the stacks into the models' own modules (evaluation, pictures, checkpoints),
        unless they hold them already: key is (trainer step, active models) of the copy."""
        if self._synced == key:
            return
        with torch.no_grad():
            for r, run in enumerate(self.runs):
                for name, p in _Pair(*run).named_parameters():
                    p.copy_(self.params[name][r])
        self._synced = key

    def encoder(self) -> nn.Module:
        weights = {n: p.detach() for n, p in self.params.items() if n.startswith("model.")}
        return _Encoders(self.module.model, weights)  # the same "model." names

    def member_state(self, r: int) -> dict[str, Any]:
        """Model r's weights (synced by the Trainer) and Adam states, in a solo run's format."""
        model, objective = self.runs[r]
        out = {
            "model": {k: v.clone() for k, v in model.state_dict().items()},
            "objective": {k: v.clone() for k, v in objective.state_dict().items()},
        }
        keys = ["optimizer", *(f"{s.net.name}_optimizer" for s in self.sides)]
        for key, optimizer, group in zip(keys, self.optimizers, self.groups):
            state = {}
            for j, name in enumerate(group):
                if st := optimizer.state.get(self.params[name]):
                    state[j] = {k: v if k == "step" else v[r].clone() for k, v in st.items()}
            out[key] = {"state": state, "param_groups": optimizer.state_dict()["param_groups"]}
        return out

    def load(self, states: list[dict[str, Any]], members: list[int]) -> None:
        """states: the solo state_dicts of models `members` (indices into the runs)."""
        self.runs = [self.all_runs[i] for i in members]
        keys = ["optimizer", *(f"{s.net.name}_optimizer" for s in self.sides)]

        def weight(st: dict, name: str) -> torch.Tensor:
            part, _, rest = name.partition(".")
            return st[part][rest]

        stacks = {
            n: torch.stack([weight(st, n) for st in states]).to(self.device) for n in self.params
        }
        adam: dict[str, dict] = {}
        for key, group in zip(keys, self.groups):
            for j, name in enumerate(group):
                per = [st[key]["state"].get(j) for st in states]
                if per[0] is None:
                    continue
                step = per[0]["step"].clone()  # fused Adam keeps its step on the device
                adam[name] = {
                    "step": step.to(self.device) if self.device.type == "cuda" else step,
                    **{
                        k: torch.stack([p[k] for p in per]).to(self.device)
                        for k in ("exp_avg", "exp_avg_sq")
                    },
                }
        self._set(stacks, adam)
