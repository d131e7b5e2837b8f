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
from raywae.models.objectives import Draws, SideNetwork


def adam_options(device: torch.device) -> dict[str, bool]:
    """Adam's implementation: one fused kernel over all tensors, on CUDA and CPU (on CPU
    3x faster than the for-each default over the paper network's 14 M weights)."""
    return {"fused": True}


class _Pair(nn.Module):
    """model + objective as one module, so functional_call can swap in one model's weights:
    forward(x, draws) is the auto-encoder's loss; forward(None, draws, side=k, inputs=...)
    the loss of side network k (Objective.sides()[k]) on its inputs from the step."""

    def __init__(self, model: AutoEncoder, objective: Objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x: Any, draws: Draws, side: int | None = None, inputs: Any = None) -> Any:
        if side is None:
            return tuple(self.objective.loss(self.model, x, draws))
        return self.objective.sides()[side].loss(inputs, draws)


class Solo:
    """R = 1: the run's own modules, plain autograd, one Adam for the auto-encoder and one per
    side network (a solo run's exact arithmetic)."""

    def __init__(self, model: AutoEncoder, objective: Objective, lr: float, device: Any) -> None:
        self.model, self.objective, adam = model, objective, adam_options(device)
        self.sides = objective.sides()
        self.optimizers = [torch.optim.Adam(model.parameters(), lr=lr, **adam)]
        self.optimizers += [
            torch.optim.Adam(s.parameters(), **s.adam(), **adam) for s in self.sides
        ]
        self.out: Loss | None = None

    def set_lr(self, lr: float) -> None:
        for group in self.optimizers[0].param_groups:
            group["lr"] = lr

    def forward(self, x: torch.Tensor, draws: Draws) -> tuple[list[str], torch.Tensor]:
        self.out = self.objective.loss(self.model, x[0], _first(draws))
        terms = {**self.out.terms, "loss": self.out.total}  # parts first: an error names them
        return list(terms), _row([t.detach() for t in terms.values()])[None]

    def side_inputs(self, k: int, r: int) -> dict[str, torch.Tensor]:
        """Side network k's inputs from the step (the run's one model: r = 0)."""
        return self.out.side[self.sides[k].row.name]

    def side_loss(self, k: int, draws: Draws) -> torch.Tensor:
        side = self.sides[k]
        return side.loss(self.out.side[side.row.name], _first(draws))[None]

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
            **{f"{s.row.name}_optimizer": o.state_dict() for s, o in self._side_optimizers()},
        }

    def load(self, states: list[dict[str, Any]], members: list[int]) -> None:
        (sd,) = states
        self.model.load_state_dict(sd["model"])
        self.objective.load_state_dict(sd["objective"])
        self.optimizers[0].load_state_dict(sd["optimizer"])
        for side, optimizer in self._side_optimizers():
            optimizer.load_state_dict(sd[f"{side.row.name}_optimizer"])

    def _side_optimizers(self) -> list[tuple[SideNetwork, torch.optim.Optimizer]]:
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


def _first(draws: Draws) -> Draws:
    return {k: v[0] for k, v in draws.items()}


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
        self.sides = runs[0][1].sides()
        prefix = {id(m): name for name, m in self.module.named_modules()}
        names = [n for n, _ in self.module.named_parameters()]
        side_names = [[n for n in names if n.startswith(prefix[id(s)] + ".")] for s in self.sides]
        taken = {n for group in side_names for n in group}
        self.groups = [[n for n in names if n not in taken], *side_names]
        self.adams = [{"lr": lr}, *(s.adam() for s in self.sides)]  # each group's settings
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
            torch.optim.Adam([self.params[n] for n in group], **settings, **adam)
            for group, settings in zip(self.groups, self.adams)
        ]
        for n, st in (state or {}).items():
            if st:
                self._optimizer_of(n).state[self.params[n]] = st

    def _optimizer_of(self, name: str) -> torch.optim.Optimizer:
        return next(o for o, group in zip(self.optimizers, self.groups) if name in group)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizers[0].param_groups:
            group["lr"] = lr
        self.adams[0]["lr"] = lr

    def forward(self, x: torch.Tensor, draws: Draws) -> tuple[list[str], torch.Tensor]:
        self.out = Loss(*self._main(self.params, x, draws))
        parts = {**self.out.terms, "loss": self.out.total}
        return list(parts), _row([t.detach() for t in parts.values()]).T

    def side_inputs(self, k: int, r: int) -> dict[str, torch.Tensor]:
        """Side network k's inputs from the step, of the r-th active model."""
        return {n: t[r] for n, t in self.out.side[self.sides[k].row.name].items()}

    def side_loss(self, k: int, draws: Draws) -> torch.Tensor:
        params = {n: self.params[n] for n in self.groups[k + 1]}

        def loss(p: dict, inputs: dict, d: Draws) -> torch.Tensor:
            return functional_call(self.module, p, (None, d), {"side": k, "inputs": inputs})

        return vmap(loss)(params, self.out.side[self.sides[k].row.name], draws)

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
        keys = ["optimizer", *(f"{s.row.name}_optimizer" for s in self.sides)]
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
        keys = ["optimizer", *(f"{s.row.name}_optimizer" for s in self.sides)]

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
